"""Sharing's edge cases on the Compare page.

* A bundle written from the command line may carry settings beyond this server's
  limits (horizon 70, 12 folds, seeds 42 and 7): the restore warns, naming each with
  its value and the limit, and points to the command line that reruns it exactly; it
  never reports success.
* Stale results are offered a rerun only when the sidebar's selection loaded.
* A link with many bad settings names each (up to a count), however long one is.
* The copy check's column does not tick a baseline for being what it is.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from factories import random_walk_candles
from streamlit.testing.v1 import AppTest

from forecasting.bundle import experiment_bundle
from forecasting.evaluation.walkforward import BacktestSettings
from forecasting.experiment import ExperimentSettings, run_experiment
from ui import settings, sharing

APP = str(Path(__file__).resolve().parents[2] / "app.py")
FORM = "compare_settings"


def unescaped(value: str) -> str:
    """Markdown text as the reader sees it (the escapes and invisible breaks dropped)."""
    return value.replace("\\", "").replace("\u200b", "")


def open_compare(params: dict[str, str] | None = None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=300)
    app.query_params = params or {}
    app.run()
    return app.switch_page("pages/compare.py").run()


@pytest.fixture(scope="module")
def wide_bundle() -> bytes:
    """A bundle as ``compare --horizon 70 --folds 12 --seeds 42,7 --bundle-out`` writes it."""
    candles = random_walk_candles(400, seed=9)
    experiment = ExperimentSettings(
        models=("naive", "drift"),
        backtest=BacktestSettings(horizon=70, folds=12, test_size=150, stride=5),
        seed=42,
        seeds=(42, 7),
    )
    result = run_experiment(candles, experiment)
    selection = {
        "source": "csv",
        "file": "walk.csv",
        "start": candles.index[0].date(),
        "end": candles.index[-1].date(),
        "timeframe": "1d",
    }
    return experiment_bundle(result, selection=selection)


def test_a_bundle_beyond_the_limits_warns_and_names_each_setting(app_env, wide_bundle):
    app = open_compare({"source": "sample"})
    app.file_uploader(key="bundle_upload").upload("wide.zip", wide_bundle).run()
    assert not app.exception
    assert not app.success  # nothing claims the experiment was restored
    (warning,) = [unescaped(w.value) for w in app.warning if "Not restored" in w.value]
    limits = {name: sharing.SPECS[name].describe() for name in ("horizon", "compare.folds")}
    assert f"horizon = 70 (this server takes {limits['horizon']}; the form kept 7)" in warning
    assert f"compare.folds = 12 (this server takes {limits['compare.folds']}; the form kept 3)" in (
        warning
    )
    assert "compare.seeds = 42,7 (this server takes a whole number from 1 to 20" in warning
    assert "3 of the bundle's settings" in warning
    assert "python -m forecasting compare --from-bundle FILE --json" in warning
    assert "(wide.zip) as FILE" in warning
    # The data selection is restored all the same: the bundle's 400 candles.
    assert "400 candles from 2022-01-03" in warning
    assert "restored from the bundle wide.zip" in unescaped(app.caption[0].value)
    assert app.radio(key="source").value == "csv"
    assert app.number_input(key=f"w:horizon@{FORM}").value == 7

    # A run with the form's values keeps the warning above its results.
    app.get("form_submit_button")[0].click().run()
    assert not app.exception
    assert app.table
    assert [w for w in app.warning if "Not restored" in w.value]
    # Once the sidebar selects other data, the notice goes with the bundle's data.
    app.radio(key="source").set_value("sample").run()
    assert not [w for w in app.warning if "Not restored" in w.value]


def run_on_sample() -> AppTest:
    app = open_compare(
        {
            "source": "sample",
            "start": "2017-06-01",
            "end": "2018-12-31",
            "compare.models": "naive,drift",
            "compare.test_size": "30",
            "compare.folds": "2",
            "horizon": "2",
        }
    )
    app.get("form_submit_button")[0].click().run()
    assert not app.exception
    return app


def test_stale_results_offer_no_rerun_while_the_selection_does_not_load(app_env):
    app = run_on_sample()
    metrics, link = app.table[0].value, app.get("code")[0].value

    # Another range that loads: the results are stale, and a rerun is offered.
    app.date_input(key="date_range").set_value((dt.date(2016, 1, 1), dt.date(2018, 12, 31))).run()
    (stale,) = [w.value for w in app.warning if "stale" in w.value]
    assert "did not load" not in stale
    assert [b for b in app.button if b.key == "rerun_compare"]

    # The sample ends in 2018: nothing in 2022, and the sample's other range stands in.
    app.date_input(key="date_range").set_value((dt.date(2022, 1, 1), dt.date(2022, 12, 31))).run()
    assert not app.exception
    assert app.error  # the sidebar's selection did not load
    (stale,) = [unescaped(w.value) for w in app.warning if "stale" in w.value]
    assert "did not load" in stale
    assert "399 candles from 2017-06-01 to 2018-12-31" in stale
    assert not [b for b in app.button if b.key == "rerun_compare"]
    assert app.table[0].value.equals(metrics)
    assert app.get("code")[0].value == link


BAD_LINK = {
    "horizon": "abc",
    "compare.folds": "1e3",
    "compare.models": "naive,foo",
    "start": "2018-13-45",
    "end": "yesterday",
    "lstm.epochs": "-3",
    "lstm.dropout": "2",
    "compare.loss": "cubic",
    "fill_gaps": "maybe",
    "features.rsi.window": "1",
    "seed": "1.5",
    "level": "2",
    "compare.test_start": "garbage",
    "lstm.target": "price2",
    "prophet.changepoint_prior_scale": "nan",
    "bogus": "1",
    "features.kinds": "rsi,evil",
    "lstm.units": "99999999999999999999",
}


def test_a_link_notice_names_every_bad_setting_up_to_a_count(app_env):
    app = AppTest.from_file(APP, default_timeout=300)
    app.query_params = {"source": "sample", **BAD_LINK}
    app.run()
    assert not app.exception
    (notice,) = [unescaped(w.value) for w in app.warning if "not valid" in w.value]
    _, refused = sharing.parse_all(BAD_LINK)
    assert len(refused) == len(BAD_LINK)
    for note in refused[: settings.NAMED]:
        assert note in notice
    more = len(refused) - settings.NAMED
    assert notice.endswith(f"and {more} more settings")


@pytest.mark.parametrize(
    ("count", "ending"),
    [
        (settings.NAMED, "(must be a whole number from 1 to 60)"),  # all named, no count
        (settings.NAMED + 1, "and 1 more setting"),
        (settings.NAMED + 5, "and 5 more settings"),
    ],
)
def test_a_long_value_cannot_push_the_others_out(count, ending):
    params = {"compare.loss": "x" * 5000, "bogus": "y" * 5000}
    params.update({f"unknown{k}": "1" for k in range(count - 3)})
    params["horizon"] = "abc"
    _, refused = sharing.parse_all(params)
    shown = unescaped(settings.named(refused))
    assert len(shown) < 300 * settings.NAMED
    names = [re.match(r"[^=]+", note).group() for note in refused]
    assert all(name + "=" in shown for name in names[: settings.NAMED])
    assert shown.endswith(ending)
    assert f"compare.loss={'x' * 40} (must be one of absolute, squared)" in shown


def test_the_copy_column_does_not_tick_the_baselines(app_env):
    app = run_on_sample()
    (copies,) = [d.value for d in app.dataframe if "copies_last" in d.value.columns]
    column = copies["copies_last"]
    assert column["drift"] == "by definition"
    assert column["naive"] == "by definition"
    assert set(column) <= {"by definition", "yes", "no"}
