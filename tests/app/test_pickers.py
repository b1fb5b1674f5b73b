"""Every setting widget offers its declared range and falls back to the kept value.

A browser draws a widget from its own state, and from the widget's default when it has
none (it missed an update because a click interrupted a run on a busy server). Each
setting widget's default is therefore the setting's current value: were it the widget's
own default (a number input's minimum), a form submitted then would silently run with
a setting nobody chose. Checked on every page, over every widget whose key is a kept
setting, with non-default values from a link.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ui import sharing

APP = str(Path(__file__).resolve().parents[2] / "app.py")

LINK = {
    "horizon": "5",
    "seed": "7",
    "level": "0.8",
    "lstm.units": "16",
    "lstm.dropout": "0.2",
    "lstm.learning_rate": "0.003",
    "lstm.target": "price",
    "lstm.use_features": "false",
    "prophet.weekly": "false",
    "prophet.changepoint_prior_scale": "0.1",
    "compare.models": "naive,drift",
    "compare.folds": "2",
    "compare.loss": "squared",
    "compare.test_start": "2025-01-01",
    "features.kinds": "rsi,sma,bollinger",
    "features.sma.window": "50",
    "features.bollinger.std": "2.5",
    "strategy.threshold": "0.5",
    "strategy.threshold_unit": "bps",
    "strategy.fee_bps": "5.5",
    "strategy.allow_short": "true",
    "strategy.entry": "next_open",
    "strategy.sizing": "vol_target",
    "strategy.vol_lookback": "20",
}


def setting_widgets(app: AppTest):
    for kind in (
        "number_input",
        "slider",
        "select_slider",
        "selectbox",
        "radio",
        "multiselect",
        "toggle",
        "date_input",
    ):
        for widget in app.get(kind):
            key = getattr(widget, "key", None) or ""
            if key.startswith("w:"):
                yield kind, key[2:].split("@")[0], widget


def fallback(kind: str, widget):
    """What a browser without the widget's state shows: the widget's default."""
    proto = widget.proto
    if kind == "number_input":
        return proto.default
    if kind in ("selectbox", "radio"):
        return proto.default
    if kind in ("multiselect", "select_slider", "slider"):
        return list(proto.default)
    if kind == "toggle":
        return proto.default
    if kind == "date_input":
        return list(proto.default)
    raise AssertionError(kind)


def shown(kind: str, widget):
    """The same for the value the server holds."""
    if kind in ("selectbox", "radio"):
        return widget.index
    if kind == "multiselect":
        return list(widget.indices)
    if kind == "select_slider":
        return [list(widget.options).index(widget.format_func(widget.value))]
    if kind == "slider":
        return [widget.value]
    if kind == "date_input":
        return [] if widget.value is None else [widget.value.isoformat()]
    return widget.value


PAGES = ["pages/features.py", "pages/models.py", "pages/compare.py", "pages/strategy.py"]


@pytest.mark.parametrize("page", PAGES)
def test_setting_widgets_fall_back_to_the_kept_value_and_offer_the_declared_range(app_env, page):
    app = AppTest.from_file(APP, default_timeout=180)
    app.query_params = dict(LINK)
    app.run()
    if page == "pages/strategy.py":
        # The Strategy page draws its form over a comparison (naive and drift, linked).
        app.switch_page("pages/compare.py").run()
        app.get("form_submit_button")[0].click().run()
    app.switch_page(page).run()
    assert not app.exception
    seen = set()
    for kind, name, widget in setting_widgets(app):
        seen.add(name)
        assert fallback(kind, widget) == shown(kind, widget), name
        spec = sharing.SPECS[name]
        if kind in ("number_input", "slider") and spec.lo is not None:
            proto = widget.proto
            assert (proto.min, proto.max) == (spec.lo, spec.hi), name
        if spec.choices is not None:
            assert len(widget.options) == len(spec.choices), name
        if name in LINK:
            assert sharing.serialize(sharing.SPECS[name].default) != LINK[name]
    linked = {name for name in LINK if name.split(".")[0] in {"features"}}
    if page == "pages/features.py":
        assert linked <= seen
    if page == "pages/models.py":
        assert {"lstm.units", "lstm.dropout", "prophet.weekly", "level"} <= seen
    if page == "pages/compare.py":
        assert {"compare.folds", "compare.loss", "compare.test_start", "horizon"} <= seen
    if page == "pages/strategy.py":
        strategy = {name for name in sharing.SPECS if name.startswith("strategy.")}
        assert strategy == seen
