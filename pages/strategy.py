"""Strategy: could you act on the forecasts? Each model's forecasts traded after costs."""

import streamlit as st

from forecasting.bundle import experiment_bundle
from forecasting.errors import ForecastingError
from forecasting.strategy import BUY_AND_HOLD
from forecasting.strategy_charts import equity_chart, positions_chart
from ui import settings, state, text
from ui import strategy as trading

selection = state.page_setup()

st.title("Strategy")
shown, elsewhere = trading.latest_comparison(selection)
if shown is None:
    if elsewhere is not None:
        text.info(
            "The last comparison ran on other data ({described}): run one on the current "
            "data on the Compare page first.",
            described=state.describe(elsewhere.dataset),
        )
    else:
        st.info("Run a comparison on the Compare page first: its forecasts are traded here.")
    st.page_link("pages/compare.py", label="Compare", icon=":material/leaderboard:")
    st.stop()

comparison, dataset = shown.result, shown.dataset
text.caption(
    "{label} · each model's walk-forward forecasts from the Compare page (the same folds, no "
    "refits) turned into positions and traded after costs, beside buy-and-hold",
    label=dataset.label,
)

fee = trading.default_fee(dataset)
trading.offer_fee(fee)
FORM = trading.FORM
with st.form(FORM):
    pick = settings.picker
    columns = st.columns([1, 1, 1, 1])
    pick(
        columns[0].number_input,
        "Threshold",
        "strategy.threshold",
        form=FORM,
        step=0.5,
        help="Long when the forecast return over the signal's horizon is above it (short "
        "when below minus it, if shorts are allowed), else flat.",
    )
    pick(
        columns[1].radio,
        "Threshold unit",
        "strategy.threshold_unit",
        form=FORM,
        format_func={"fees": "round-trip costs", "bps": "basis points"}.get,
        help="Round-trip costs: multiples of 2 × (fee + slippage), so a trade must at least "
        "pay for itself.",
    )
    pick(columns[2].number_input, "Fee (bp per side)", "strategy.fee_bps", form=FORM, step=1.0)
    pick(
        columns[3].number_input,
        "Slippage (bp per side)",
        "strategy.slippage_bps",
        form=FORM,
        step=1.0,
    )
    columns = st.columns([1, 1, 1, 1, 1])
    pick(
        columns[0].radio,
        "Entry",
        "strategy.entry",
        form=FORM,
        format_func={"close": "at the origin's close", "next_open": "at the next open"}.get,
    )
    pick(
        columns[1].radio,
        "Sizing",
        "strategy.sizing",
        form=FORM,
        format_func={"fixed": "fixed fraction", "vol_target": "volatility target"}.get,
    )
    pick(
        columns[2].number_input,
        "Fraction of equity",
        "strategy.fraction",
        form=FORM,
        step=0.1,
        help="The largest position (1 is all the equity; never leveraged).",
    )
    pick(
        columns[3].number_input,
        "Volatility target (annualised)",
        "strategy.vol_target",
        form=FORM,
        step=0.05,
        help="With volatility-target sizing: the fraction scaled down to this annualised "
        "volatility, measured over the lookback below.",
    )
    pick(
        columns[4].number_input,
        "Volatility lookback (candles)",
        "strategy.vol_lookback",
        form=FORM,
    )
    pick(st.toggle, "Allow short", "strategy.allow_short", form=FORM)
    st.form_submit_button(
        "Run the strategy",
        type="primary",
        icon=":material/play_arrow:",
        on_click=settings.keep_form,
        args=(FORM,),
    )
text.caption("{note}", note=fee.note)
text.caption(
    "Timing: the signal at origin t uses candles up to t's close; the position is entered at "
    "t's close (or t+1's open) and earns from candle t+1 on; fees and slippage per side on "
    "every change of position."
)

try:
    chosen = trading.current_settings(fee)
    tried = trading.settings_tried(shown, chosen)
    result = trading.backtest(shown, chosen, tried)
except ForecastingError as exc:
    text.error("{problem}", problem=exc)
    st.stop()

st.subheader("Verdict")
text.markdown("{sentence}", sentence=result.verdict.sentence)
text.caption(
    "Significance: the deflated Sharpe ratio (Bailey and López de Prado 2014) of each "
    "strategy's returns in excess of buy-and-hold's, one-sided, at the {alpha:.0%} level, "
    "over {trials} trials: the model strategies times the {tried} setting(s) tried on these "
    "forecasts in this session.",
    alpha=result.verdict.alpha,
    trials=result.trials,
    tried=tried,
)
for note in result.notes:
    text.info("{note}", note=note, icon=":material/info:")

st.subheader("Metrics")
text.caption(
    "Annualised over {periods:,.0f} candles a year; {horizon}-candle forecasts make the "
    "signal. The break-even fee is the cost per side at which a strategy falls back to "
    "buy-and-hold.",
    periods=result.periods_per_year,
    horizon=result.horizon,
)
columns = trading.metrics_columns()
st.dataframe(trading.metrics_table(result, key_only=True), column_config=columns)
with st.expander("All metrics"):
    st.dataframe(trading.metrics_table(result, key_only=False), column_config=columns)

st.subheader("Equity")
log_scale = st.toggle("Log scale", key="strategy_log_scale")
state.chart(equity_chart(result, log_scale=log_scale), key="strategy_equity")

st.subheader("Positions")
traded = [name for name in result.strategies if name != BUY_AND_HOLD]
model = st.selectbox("Model", traded, key="strategy_model")
if model is not None:
    state.chart(positions_chart(comparison.candles, result, model), key="strategy_positions")

st.caption("Link that reproduces this comparison and these strategy settings:")
st.code(settings.share_link(dataset.selection), language=None)
downloads = st.columns(3)
downloads[0].download_button(
    "Positions CSV",
    lambda: trading.positions_csv(result),
    "positions.csv",
    "text/csv",
    icon=":material/download:",
)
downloads[1].download_button(
    "Equity CSV",
    lambda: trading.equity_csv(result),
    "equity.csv",
    "text/csv",
    icon=":material/download:",
)
# The settings are read now, in the page's run (the bundle is made when it is downloaded,
# outside any run): the comparison's bundle with these strategy settings and results.
strategy_files = {
    **settings.bundle_files(dataset.selection),
    **trading.bundle_files(result),
}
strategy_selection = state.bundle_selection(dataset)
downloads[2].download_button(
    "Experiment bundle (zip)",
    lambda: experiment_bundle(comparison, extra_files=strategy_files, selection=strategy_selection),
    "experiment.zip",
    "application/zip",
    icon=":material/download:",
    help="The comparison's bundle (settings, candles, forecasts) with these strategy "
    "settings, the strategy metrics, positions and equity: restoring it on the Compare page "
    "brings back the strategy settings too.",
)
