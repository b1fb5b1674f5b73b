"""Live: forecasts written down as each candle closes, scored once their candle closes."""

import streamlit as st

from forecasting.errors import ForecastingError
from forecasting.ledger import timing_note
from ui import live, runs, settings, state, text

selection = state.page_setup()

st.title("Live")
text.caption(
    "Forecasts written down as each candle closes, before the candle they forecast exists, "
    "kept in the ledger ({path}) and scored once that candle closes: a prospective track "
    "record, which no backtest on the past can give.",
    path=str(live.ledger_path()),
)

if selection.source != "exchange":
    st.info(
        "Only an exchange's candles can be tracked live: choose **Exchange** as the source in "
        "the sidebar. The ledger holds:"
    )
    try:
        state.table(
            live.ledger_series(), none="The ledger holds no forecasts yet.", hide_index=True
        )
    except ForecastingError as exc:
        text.error("{problem}", problem=exc)
    st.stop()

text.markdown(
    "**{exchange} · {symbol} · {timeframe}**",
    exchange=selection.exchange,
    symbol=selection.symbol,
    timeframe=selection.timeframe,
)

st.subheader("Start tracking")
refused = live.start_refused()
FORM = "live_settings"
with st.form(FORM):
    settings.picker(
        st.multiselect,
        "Models",
        "compare.models",
        form=FORM,
        help="Naive is always tracked: it is what every model has to beat. LSTM and Prophet "
        "use the settings of the Models page, as on Compare.",
    )
    columns = st.columns(2)
    settings.horizon_input(columns[0], FORM)
    settings.seed_input(columns[1], FORM)
    start = st.form_submit_button(
        "Start tracking",
        type="primary",
        icon=":material/play_arrow:",
        on_click=settings.keep_form,
        args=(FORM,),
        disabled=refused is not None,
        help="Starts `python -m forecasting live` as a process of its own: it forecasts as "
        "each candle closes and keeps running when this page or the browser is closed.",
    )
if refused is not None:
    text.caption("{why}", why=refused)
experiment = runs.compare_settings()
with st.expander("The command line (to run in a terminal, or from cron with --once)"):
    st.code(live.command_text(selection, experiment), language="bash")

if start:
    try:
        started = live.start_tracker(selection, experiment)
    except ForecastingError as exc:
        text.error("{problem}", problem=exc)
    else:
        if started.exit_code is None:
            text.success(
                "Started a tracker (process {pid}): it is listed below once it has registered, "
                "and writes its first forecasts when the next candle closes. Its output goes "
                "to {log}.",
                pid=started.pid,
                log=str(started.log),
            )
        else:
            text.error(
                "The tracker stopped at once (exit code {code}): {output} (log: {log})",
                code=started.exit_code,
                output=started.last_lines or "no output",
                log=str(started.log),
            )

loss = settings.setting("compare.loss")
STOPPED = "_live_stopped"


def stop(tracker: dict) -> None:
    st.session_state[STOPPED] = live.stop_tracker(tracker)


@st.fragment(run_every=live.refresh_seconds(selection.timeframe))
def record() -> None:
    try:
        view = live.read(selection, loss=loss)
    except ForecastingError as exc:
        text.error("{problem}", problem=exc)
        return
    text.caption(
        "Read from the ledger at {now}; read again every {every} s, so the page follows each "
        "candle as it closes.",
        now=live.format_time(live.now()),
        every=live.refresh_seconds(selection.timeframe),
    )

    st.subheader("Trackers")
    if view is None or view.trackers.empty:
        st.caption("No tracker has written into this ledger for this series.")
    else:
        st.dataframe(view.trackers, hide_index=True)
        for tracker in view.trackers.to_dict(orient="records"):
            if live.stoppable(tracker):
                st.button(
                    text.markup("Stop the tracker of {models}", models=tracker["models"]),
                    key=f"stop_{tracker['id']}",
                    icon=":material/stop_circle:",
                    on_click=stop,
                    args=(tracker,),
                    disabled=refused is not None,
                )
    if st.session_state.get(STOPPED):
        text.info("{message}", message=st.session_state.pop(STOPPED))

    if view is None or view.forecasts == 0:
        st.info(
            "No forecasts for this series in the ledger yet. Press **Start tracking** (or run "
            "the command line above): the first forecasts are written when the next candle "
            "closes, and scored as their candles close."
        )
        return

    st.subheader("Waiting for their candle")
    if view.next_target is None:
        st.caption("No forecast is waiting: every one has been scored or marked missing.")
    else:
        text.caption(
            "The next forecasts are scored when the candle opening at {target} closes, at {close}.",
            target=live.format_time(view.next_target),
            close=live.format_time(view.next_close),
        )
    st.dataframe(view.counts)

    st.subheader("Track record")
    if view.scored == 0:
        st.info("No forecast has been scored yet: the first is scored once its candle closes.")
    else:
        text.caption(
            "Each model against naive on the same (origin, target) pairs, by the code of "
            "Compare: the ratio of mean {loss} errors and one Diebold-Mariano test over all "
            "steps at once (two-sided, 5 % level), on forecasts written before their candles "
            "existed.",
            loss=loss,
        )
        for line in runs.verdict_lines(view.verdict):
            text.markdown("- {line}", line=line)
        for note in view.notes:
            text.info("{note}", note=note, icon=":material/info:")
        st.table(runs.metrics_view(view.metrics, view.verdict, columns=runs.KEY_METRICS))
        with st.expander("All metrics"):
            st.table(runs.metrics_view(view.metrics, view.verdict))

    missing = len(view.missing)
    if missing:
        text.caption(
            "{missing:,} forecasts were marked missing, not scored: their candle never arrived "
            "(a gap in the exchange's candles, or a pair that stopped trading).",
            missing=missing,
        )
    else:
        st.caption("No forecast was marked missing: every target candle arrived.")

    note = timing_note(len(view.late), selection.timeframe)
    if view.late.empty:
        text.success("{note}", note=note, icon=":material/verified:")
    else:
        text.warning("{note} They are listed below.", note=note)
        st.dataframe(view.late, hide_index=True)


record()
