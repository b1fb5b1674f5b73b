"""The LSTM's other network families: GRU, Conv-LSTM (causal), LSTM + attention.

Each is the LSTM with its ``family`` fixed (``forecasting.models.families``): it fits
and forecasts through the same interface, its network is built from the family's Keras
layers, a seed fixes every weight's start (bit-identical forecasts), the family survives
save/load, a later price never reaches an earlier forecast, and the command line takes
it. Networks are tiny and seeded (TensorFlow on the CPU).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from factories import sine_trend_candles

from forecasting.data import write_ohlcv_csv
from forecasting.errors import ConfigurationError, DataFormatError
from forecasting.evaluation import BacktestSettings, walk_forward
from forecasting.models import GRU, LSTM, MODELS, NETWORKS, make_model
from forecasting.models import lstm as lstm_module

ROOT = Path(__file__).resolve().parents[1]

# Keras 3.15 saving weights under numpy 2 warns about __array__(copy=...): not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

HORIZON = 3
# Small enough to train in about a second on two cores; no features (only the returns).
TINY = {
    "lookback": 8,
    "horizon": HORIZON,
    "units": 4,
    "epochs": 2,
    "batch_size": 32,
    "features": "",
}
# alias, family, the Keras layer that makes the family
FAMILIES = [
    pytest.param("gru", "gru", "GRU", id="gru"),
    pytest.param("conv_lstm", "conv_lstm", "Conv1D", id="conv_lstm"),
    pytest.param("lstm_attention", "attention", "MultiHeadAttention", id="lstm_attention"),
]


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return sine_trend_candles(300, noise=0.01)


@pytest.fixture(scope="module")
def fitted(candles: pd.DataFrame) -> dict[str, LSTM]:
    """One tiny fitted model per family, for the tests that only read them."""
    return {alias: make_model(alias, **TINY).fit(candles) for alias in NETWORKS[1:]}


def _network(model: LSTM):
    return lstm_module._POOL.get(model._spec(len(model.input_columns_)))


def test_every_family_is_registered_with_the_lstms_capabilities() -> None:
    assert NETWORKS == ("lstm", "gru", "conv_lstm", "lstm_attention")
    assert set(NETWORKS) <= set(MODELS)
    for alias in NETWORKS:
        cls = MODELS[alias]
        assert cls.alias == alias
        assert issubclass(cls, LSTM)
        assert cls.capabilities == LSTM.capabilities  # seeded, trained horizon, ...
        # The same settings as the LSTM, the family's own default.
        assert set(cls().get_params()) == set(LSTM().get_params())
    assert [MODELS[a]().family for a in NETWORKS] == ["lstm", "gru", "conv_lstm", "attention"]


def test_an_lstm_given_a_family_is_named_as_that_familys_model() -> None:
    # LSTM(family="gru") built in the library is the GRU model: the same alias (tables,
    # colours, files) and title as make_model("gru"), and its clone keeps them.
    from forecasting.charts import model_color

    for alias in NETWORKS:
        made = make_model(alias)
        built = LSTM(family=made.family)
        assert (built.alias, built.title) == (made.alias, made.title) == (alias, made.title)
        assert (built.clone().alias, built.clone().title) == (alias, made.title)
        assert model_color(built.alias) == model_color(alias)
    assert LSTM.alias == "lstm"
    assert LSTM().alias == "lstm"


@pytest.mark.parametrize(("alias", "family", "layer"), FAMILIES)
def test_each_family_fits_and_forecasts_with_finite_intervals(
    fitted: dict[str, LSTM], candles: pd.DataFrame, alias: str, family: str, layer: str
) -> None:
    model = fitted[alias]
    forecast = model.predict(HORIZON)
    step = candles.index[1] - candles.index[0]
    expected = pd.date_range(candles.index[-1] + step, periods=HORIZON, freq=step)
    assert list(forecast.timestamps) == list(expected)
    assert forecast.model == alias
    assert forecast.mean.shape == forecast.lower.shape == forecast.upper.shape == (HORIZON,)
    assert np.isfinite(forecast.mean).all()
    assert np.isfinite(forecast.lower).all()
    assert np.isfinite(forecast.upper).all()
    assert (forecast.lower < forecast.mean).all()
    assert (forecast.mean < forecast.upper).all()
    assert forecast.level == 0.9
    # A shorter horizon is the first steps of the same forecast.
    np.testing.assert_array_equal(model.predict(2).mean, forecast.mean[:2])
    assert model.get_params()["family"] == family
    assert model.kernel_ == "keras"  # the fused kernel is the plain LSTM's only
    names = [type(lay).__name__ for lay in _network(model).model.layers]
    assert layer in names
    assert "FusedLSTM" not in names


def test_each_network_is_built_from_the_familys_layers(fitted: dict[str, LSTM]) -> None:
    def layers(alias: str) -> list[str]:
        return [type(lay).__name__ for lay in _network(fitted[alias]).model.layers]

    assert layers("gru") == ["GRU", "Dropout", "Dense"]
    assert layers("conv_lstm") == ["Conv1D", "Conv1D", "LSTM", "Dropout", "Dense"]
    assert layers("lstm_attention") == [
        "InputLayer",
        "LSTM",
        "Dropout",
        "Cropping1D",
        "MultiHeadAttention",
        "Concatenate",
        "Flatten",
        "Dense",
    ]
    convolutions = _network(fitted["conv_lstm"]).model.layers[:2]
    assert [c.padding for c in convolutions] == ["causal", "causal"]
    # The LSTM's stack keeps every step for the attention to read.
    assert _network(fitted["lstm_attention"]).model.layers[1].return_sequences


@pytest.mark.parametrize(("alias", "family", "layer"), FAMILIES)
def test_the_seed_fixes_every_weight_and_the_forecast(
    fitted: dict[str, LSTM], candles: pd.DataFrame, alias: str, family: str, layer: str
) -> None:
    network = _network(fitted[alias])
    weights = network.model.weights
    first, again, other = (network.initial_weights(seed) for seed in (1, 1, 2))
    # Every weight has a start drawn for the seed, the same for the same seed...
    assert set(first) == {id(w) for w in weights}
    for w in weights:
        np.testing.assert_array_equal(first[id(w)], again[id(w)])
    # ...and every kernel (recurrent, convolution, attention, dense) moves with it.
    kernels = [w for w in weights if "kernel" in w.path]
    assert len(kernels) >= 3
    for w in kernels:
        assert not np.array_equal(first[id(w)], other[id(w)]), w.path

    same = make_model(alias, **TINY).fit(candles)
    np.testing.assert_array_equal(same.predict(HORIZON).mean, fitted[alias].predict(HORIZON).mean)
    np.testing.assert_array_equal(same.predict(HORIZON).upper, fitted[alias].predict(HORIZON).upper)
    seven = make_model(alias, **{**TINY, "seed": 7}).fit(candles)
    assert not np.allclose(seven.predict(HORIZON).mean, fitted[alias].predict(HORIZON).mean)


@pytest.mark.parametrize(("alias", "family", "layer"), FAMILIES)
def test_save_and_load_keep_the_family(
    fitted: dict[str, LSTM], tmp_path: Path, alias: str, family: str, layer: str
) -> None:
    model = fitted[alias]
    path = model.save(tmp_path / f"{alias}.keras")
    state = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
    assert state["model"] == alias
    assert state["params"]["family"] == family
    loaded = type(model).load(path)
    assert type(loaded) is type(model)
    assert loaded.get_params() == model.get_params()
    before, after = model.predict(HORIZON), loaded.predict(HORIZON)
    np.testing.assert_array_equal(after.mean, before.mean)
    np.testing.assert_array_equal(after.upper, before.upper)
    # The plain LSTM's loader reads it too, as an LSTM with that family.
    assert LSTM.load(path).family == family
    # Another family's loader refuses it in one line naming what the file holds.
    other = GRU if alias != "gru" else MODELS["conv_lstm"]
    with pytest.raises(DataFormatError, match=f"holds a {alias} model") as caught:
        other.load(path)
    assert "\n" not in str(caught.value)


def test_the_convolutions_are_causal(fitted: dict[str, LSTM]) -> None:
    # A step's convolution output must not move when a later step of the window does.
    keras = lstm_module._keras()
    network = _network(fitted["conv_lstm"]).model
    convolutions = keras.Sequential([keras.Input(network.input_shape[1:]), *network.layers[:2]])
    window = np.random.default_rng(0).normal(size=(1, *network.input_shape[1:]))
    base = np.asarray(convolutions(window.astype("float32")))
    for step in range(1, window.shape[1]):
        changed = window.copy()
        changed[0, step:] += 5.0
        out = np.asarray(convolutions(changed.astype("float32")))
        np.testing.assert_array_equal(out[0, :step], base[0, :step])
        assert not np.allclose(out[0, step:], base[0, step:])


def test_later_prices_do_not_change_earlier_forecasts() -> None:
    # Walk-forward over 3 folds; every price after the first fold's last target is
    # tripled and the backtest run again with the same seeds: the first fold's rows are
    # identical, the last fold's (fitted on tripled prices) move.
    candles = sine_trend_candles(300, noise=0.01, seed=5)
    settings = BacktestSettings(horizon=HORIZON, folds=3, test_size=30)
    models = {alias: make_model(alias, **TINY, seed=3) for alias in NETWORKS[1:]}
    before = walk_forward(models, candles, settings).forecasts
    last_target = before.loc[before["fold"] == 1, "timestamp"].max()
    changed = candles.copy()
    prices = ["open", "high", "low", "close"]
    changed.loc[changed.index > last_target, prices] *= 3
    after = walk_forward(models, changed, settings).forecasts
    assert last_target < candles.index[-HORIZON]
    for alias in models:
        rows = [
            frame[(frame["model"] == alias) & (frame["fold"] == 1)].reset_index(drop=True)
            for frame in (before, after)
        ]
        assert len(rows[0]) > 0
        pd.testing.assert_frame_equal(*rows, check_exact=True)
        last = [
            frame.loc[(frame["model"] == alias) & (frame["fold"] == 3), "yhat"]
            for frame in (before, after)
        ]
        assert not np.allclose(*last), alias


@pytest.mark.parametrize(
    ("make", "message"),
    [
        # not a family
        (lambda: LSTM(family="transformer"), "LSTM family must be one of lstm, gru, conv_lstm"),
        # a family model's family is fixed
        (lambda: GRU(family="lstm"), "GRU family must be one of gru, got 'lstm'"),
        # through the registry, as the command line and the pages build models
        (lambda: make_model("lstm_attention", family="gru"), "attention family must be one of"),
    ],
)
def test_a_bad_family_is_refused_in_one_line(make, message: str, candles: pd.DataFrame) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        make().fit(candles)
    assert "\n" not in str(caught.value)


def test_importing_the_families_does_not_load_tensorflow() -> None:
    code = (
        "import json, sys\n"
        "from forecasting.models import make_model\n"
        "[make_model(a).check_settings() for a in ('gru', 'conv_lstm', 'lstm_attention')]\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_the_command_line_forecasts_with_a_family(candles: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "candles.csv"
    write_ohlcv_csv(candles, path)
    settings = json.dumps({k: v for k, v in TINY.items() if k != "horizon"})
    result = subprocess.run(
        [
            sys.executable, "-m", "forecasting", "forecast", "--data", str(path),
            "--model", "gru", "--horizon", str(HORIZON), "--seed", "7",
            "--settings", settings, "--json",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["model"] == "gru"
    assert document["settings"]["family"] == "gru"
    assert document["settings"]["seed"] == 7
    assert document["settings"]["horizon"] == HORIZON
    records = document["forecast"]
    assert len(records) == HORIZON
    for record in records:
        assert record["lower"] < record["mean"] < record["upper"]
    # The same forecast as the library's, for the same settings and seed.
    model = GRU(**{**TINY, "seed": 7}).fit(candles)
    np.testing.assert_allclose([r["mean"] for r in records], model.predict(HORIZON).mean)
