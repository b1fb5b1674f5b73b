"""Models: settings in forms, train with live progress, every model's forecast on one chart."""

import streamlit as st

from forecasting.charts import forecast_chart, loss_chart
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
with st.form(FORM):
    top = st.columns(3)
    settings.horizon_input(top[0], FORM)
    settings.seed_input(top[1], FORM)
    top[2].select_slider(
        "Interval level", [0.5, 0.8, 0.9, 0.95], key=settings.remember("level", form=FORM)
    )
    lstm_column, prophet_column = st.columns(2)
    with lstm_column:
        st.subheader("LSTM")
        st.toggle("Train the LSTM", key=settings.remember("lstm.enabled", form=FORM))
        a, b = st.columns(2)
        a.number_input(
            "Lookback (candles)", 5, 365, key=settings.remember("lstm.lookback", form=FORM)
        )
        b.number_input("Layers", 1, 3, key=settings.remember("lstm.layers", form=FORM))
        a.number_input("Units per layer", 4, 256, key=settings.remember("lstm.units", form=FORM))
        b.slider("Dropout", 0.0, 0.5, step=0.05, key=settings.remember("lstm.dropout", form=FORM))
        a.number_input("Epochs (most)", 1, 500, key=settings.remember("lstm.epochs", form=FORM))
        b.number_input("Batch size", 8, 1024, key=settings.remember("lstm.batch_size", form=FORM))
        a.select_slider(
            "Learning rate",
            [1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
            key=settings.remember("lstm.learning_rate", form=FORM),
        )
        b.number_input(
            "Early-stop patience", 1, 50, key=settings.remember("lstm.patience", form=FORM)
        )
        a.radio(
            "Target",
            ["log_return", "price"],
            key=settings.remember("lstm.target", form=FORM),
            help="Log returns by default: a price target mostly learns to copy the last price.",
        )
        b.radio(
            "Interval",
            ["conformal", "mc_dropout"],
            key=settings.remember("lstm.interval", form=FORM),
            help="Conformal: the split-conformal quantile of the errors on the validation "
            "tail. MC dropout: the spread of 50 passes with dropout on, scaled by a "
            "conformal quantile from the same tail so that it covers its level.",
        )
        st.toggle(
            "Use the Features page's indicators as inputs",
            key=settings.remember("lstm.use_features", form=FORM),
        )
        a.selectbox(
            "Noise reduction of inputs",
            ["none", "hampel", "median"],
            key=settings.remember("lstm.denoise", form=FORM),
            help="Trailing Hampel filter (outliers to the median) or rolling median, on the "
            "inputs only: the returns it is trained on and scored against stay real.",
        )
        b.number_input(
            "Noise window", 2, 100, key=settings.remember("lstm.denoise_window", form=FORM)
        )
    with prophet_column:
        st.subheader("Prophet")
        st.toggle("Train Prophet", key=settings.remember("prophet.enabled", form=FORM))
        st.select_slider(
            "Changepoint prior scale",
            [0.001, 0.01, 0.05, 0.1, 0.5],
            key=settings.remember("prophet.changepoint_prior_scale", form=FORM),
        )
        c, d = st.columns(2)
        c.selectbox(
            "Weekly seasonality",
            ["auto", True, False],
            key=settings.remember("prophet.weekly", form=FORM),
        )
        d.selectbox(
            "Yearly seasonality",
            ["auto", True, False],
            key=settings.remember("prophet.yearly", form=FORM),
        )
        c.radio(
            "Seasonality mode",
            ["additive", "multiplicative"],
            key=settings.remember("prophet.seasonality_mode", form=FORM),
        )
        d.number_input(
            "Training window (candles)",
            100,
            20_000,
            step=100,
            key=settings.remember("prophet.max_train_candles", form=FORM),
            help="Prophet slows down on long intraday histories, so it is fitted on the most "
            "recent candles only.",
        )
        st.toggle(
            "Features as extra regressors (lagged by the horizon)",
            key=settings.remember("prophet.regressors", form=FORM),
        )
        c.selectbox(
            "Noise reduction of training prices",
            ["none", "hampel", "median"],
            key=settings.remember("prophet.denoise", form=FORM),
            help="Trailing filter on the prices Prophet is fitted on; forecasts are scored "
            "against the real closes.",
        )
        d.number_input(
            "Noise window ", 2, 100, key=settings.remember("prophet.denoise_window", form=FORM)
        )
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
if "lstm" in models and models["lstm"].epochs_trained_:  # no network on flat closes
    state.chart(loss_chart(models["lstm"].loss_history_), key="loss_chart")
    text.caption(
        "LSTM trained for {epochs} epochs (early stopping).", epochs=models["lstm"].epochs_trained_
    )
if "prophet" in models and models["prophet"].train_candles_ < len(dataset.candles):
    text.caption(
        "Prophet was fitted on the last {fitted:,} candles of {count:,} (its training window "
        "setting).",
        fitted=models["prophet"].train_candles_,
        count=len(dataset.candles),
    )
