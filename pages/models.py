"""Models: settings in forms, train with live progress, every model's forecast on one chart."""

import streamlit as st

from forecasting.charts import forecast_chart, loss_chart
from forecasting.models import MODELS, NETWORKS
from ui import runs, settings, state, text

dataset = state.current_dataset(state.page_setup())

st.title("Models")
text.caption(
    "{label} · {count:,} candles · the naive baselines are always trained beside the LSTM "
    "and Prophet",
    label=dataset.label,
    count=len(dataset.candles),
)

FORM = "model_settings"
pick = settings.picker
with st.form(FORM):
    top = st.columns(3)
    settings.horizon_input(top[0], FORM)
    settings.seed_input(top[1], FORM)
    pick(top[2].select_slider, "Interval level", "level", form=FORM)
    lstm_column, prophet_column = st.columns(2)
    with lstm_column:
        st.subheader("LSTM")
        pick(st.toggle, "Train the LSTM", "lstm.enabled", form=FORM)
        pick(
            st.multiselect,
            "Networks",
            "lstm.networks",
            form=FORM,
            format_func=lambda alias: MODELS[alias].title,
            help="The LSTM, a GRU, convolutions before the LSTM (causal: a step never reads a "
            "later candle), or an LSTM with attention over its outputs: each trained with the "
            "settings below.",
        )
        a, b = st.columns(2)
        pick(a.number_input, "Lookback (candles)", "lstm.lookback", form=FORM)
        pick(b.number_input, "Layers", "lstm.layers", form=FORM)
        pick(a.number_input, "Units per layer", "lstm.units", form=FORM)
        pick(b.slider, "Dropout", "lstm.dropout", form=FORM, step=0.05)
        pick(a.number_input, "Epochs (most)", "lstm.epochs", form=FORM)
        pick(b.number_input, "Batch size", "lstm.batch_size", form=FORM)
        pick(a.select_slider, "Learning rate", "lstm.learning_rate", form=FORM)
        pick(b.number_input, "Early-stop patience", "lstm.patience", form=FORM)
        pick(
            a.radio,
            "Target",
            "lstm.target",
            form=FORM,
            help="Log returns by default: a price target mostly learns to copy the last price.",
        )
        pick(
            b.radio,
            "Interval",
            "lstm.interval",
            form=FORM,
            help="Conformal: the split-conformal quantile of the errors on the validation "
            "tail. MC dropout: the spread of 50 passes with dropout on, scaled by a "
            "conformal quantile from the same tail so that it covers its level.",
        )
        pick(
            st.toggle,
            "Use the Features page's indicators as inputs",
            "lstm.use_features",
            form=FORM,
        )
        pick(
            a.selectbox,
            "Noise reduction of inputs",
            "lstm.denoise",
            form=FORM,
            help="Trailing Hampel filter (outliers to the median) or rolling median, on the "
            "inputs only: the returns it is trained on and scored against stay real.",
        )
        pick(b.number_input, "Noise window", "lstm.denoise_window", form=FORM)
    with prophet_column:
        st.subheader("Prophet")
        pick(st.toggle, "Train Prophet", "prophet.enabled", form=FORM)
        pick(
            st.select_slider,
            "Changepoint prior scale",
            "prophet.changepoint_prior_scale",
            form=FORM,
        )
        c, d = st.columns(2)
        pick(c.selectbox, "Weekly seasonality", "prophet.weekly", form=FORM)
        pick(d.selectbox, "Yearly seasonality", "prophet.yearly", form=FORM)
        pick(c.radio, "Seasonality mode", "prophet.seasonality_mode", form=FORM)
        pick(
            d.number_input,
            "Training window (candles)",
            "prophet.max_train_candles",
            form=FORM,
            step=100,
            help="Prophet slows down on long intraday histories, so it is fitted on the most "
            "recent candles only.",
        )
        pick(
            st.toggle,
            "Features as extra regressors (lagged by the horizon)",
            "prophet.regressors",
            form=FORM,
        )
        pick(
            c.selectbox,
            "Noise reduction of training prices",
            "prophet.denoise",
            form=FORM,
            help="Trailing filter on the prices Prophet is fitted on; forecasts are scored "
            "against the real closes.",
        )
        pick(d.number_input, "Noise window ", "prophet.denoise_window", form=FORM)
    train = st.form_submit_button(
        "Train",
        type="primary",
        icon=":material/model_training:",
        on_click=settings.keep_form,
        args=(FORM,),
    )

chosen = runs.model_settings()
status = st.empty()
if train:
    cancel = st.empty()
    cancel.button("Cancel", icon=":material/stop_circle:", key="cancel_training")
    models = runs.train_all(dataset.candles, chosen, runs.TrainingDisplay())
    cancel.empty()
    text.success("Trained {count} models.", count=len(models), into=status)
else:
    models = runs.train_all(dataset.candles, chosen, None, train=False)
    if st.session_state.pop("cancel_training", False):
        status.warning("Training was cancelled. Press Train to start again.")
    elif len(models) < len(runs.model_aliases(chosen)):
        status.info("Press **Train** to fit the LSTM and Prophet with these settings.")

forecasts = runs.forecasts(models, chosen["horizon"])
state.chart(forecast_chart(dataset.candles, forecasts), key="forecast_chart")
if forecasts:
    st.dataframe(runs.forecast_table(forecasts), hide_index=False)
for forecast in forecasts:
    for note in forecast.notes:
        text.info("**{model}**: {note}", model=forecast.model, note=note, icon=":material/info:")
for alias in [a for a in NETWORKS if a in models and models[a].epochs_trained_]:
    # No loss curve for a network that never trained (flat closes).
    key = "loss_chart" if alias == "lstm" else f"loss_chart_{alias}"
    state.chart(loss_chart(models[alias].loss_history_), key=key)
    text.caption(
        "{title} trained for {epochs} epochs (early stopping).",
        title=MODELS[alias].title,
        epochs=models[alias].epochs_trained_,
    )
if "prophet" in models and models["prophet"].train_candles_ < len(dataset.candles):
    text.caption(
        "Prophet was fitted on the last {fitted:,} candles of {count:,} (its training window "
        "setting).",
        fitted=models["prophet"].train_candles_,
        count=len(dataset.candles),
    )
