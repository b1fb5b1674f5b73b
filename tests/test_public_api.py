"""The package's public surface: what importing it costs, what it exports, its errors."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import forecasting
import forecasting.data
from forecasting import errors

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("streamlit", "tensorflow", "keras", "prophet")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    # a fresh interpreter, so nothing imported by other tests can hide an import
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def _public_names(module: types.ModuleType) -> set[str]:
    """Names a module exposes: not private, not a submodule."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"  # ``from __future__ import annotations``
    }


def test_import_does_not_pull_heavy_packages() -> None:
    code = (
        "import json, sys\n"
        "import forecasting, forecasting.data\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules "
        "or any(k.startswith(m + '.') for k in sys.modules)]))\n"
    )
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize("module", [forecasting, forecasting.data], ids=lambda m: m.__name__)
def test_all_lists_exactly_the_public_names(module: types.ModuleType) -> None:
    assert len(module.__all__) == len(set(module.__all__)), "duplicates in __all__"
    assert set(module.__all__) == _public_names(module)
    for name in module.__all__:
        assert getattr(module, name) is not None


def _submodules() -> list[str]:
    names = ["forecasting.errors"]
    for package in (forecasting, forecasting.data):
        for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            if not info.name.endswith("__main__"):
                names.append(info.name)
    return sorted(set(names))


@pytest.mark.parametrize("name", _submodules())
def test_every_module_all_resolves(name: str) -> None:
    module = importlib.import_module(name)
    assert isinstance(module.__all__, list)
    missing = [item for item in module.__all__ if not hasattr(module, item)]
    assert missing == []


@pytest.mark.parametrize(
    "name",
    [
        "forecasting.charts",
        "forecasting.errors",
        "forecasting.ohlcv",
        "forecasting.data.csvfile",
        "forecasting.data.quality",
        "forecasting.data.sample",
    ],
)
def test_module_all_lists_what_it_defines(name: str) -> None:
    # every function and class a module defines without a leading underscore is exported
    module = importlib.import_module(name)
    own = {
        item
        for item, value in vars(module).items()
        if not item.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == name
    }
    assert own <= set(module.__all__)


def test_top_level_reexports_are_the_same_objects() -> None:
    for name in forecasting.__all__:
        value = getattr(forecasting, name)
        source = forecasting.data if name in forecasting.data.__all__ else errors
        assert getattr(source, name) is value


def _error_classes() -> list[type[BaseException]]:
    return [
        value
        for value in vars(errors).values()
        if inspect.isclass(value) and issubclass(value, BaseException)
        and value.__module__ == errors.__name__
    ]  # fmt: skip


def test_error_classes_are_all_exported_forecasting_errors() -> None:
    classes = _error_classes()
    assert {cls.__name__ for cls in classes} == set(errors.__all__)
    for cls in classes:
        assert issubclass(cls, errors.ForecastingError), cls
        assert cls.__doc__
    assert errors.ForecastingError.__bases__ == (Exception,)


def test_error_tree_in_docstring_matches_the_classes() -> None:
    doc = errors.__doc__
    tree = {}
    for line in doc.splitlines():
        stripped = line.lstrip(" │├└─")
        name = stripped.split(" ", 1)[0]
        if name in errors.__all__:
            # depth in the drawing: four characters per level
            tree[name] = (len(line) - len(stripped)) // 4
    assert set(tree) == set(errors.__all__)
    # each class's parent is the nearest class drawn one level up before it
    stack: list[str] = []
    for line in doc.splitlines():
        stripped = line.lstrip(" │├└─")
        name = stripped.split(" ", 1)[0]
        if name not in tree:
            continue
        del stack[tree[name] - 1 :]
        if stack:
            assert getattr(errors, name).__bases__ == (getattr(errors, stack[-1]),), name
        stack.append(name)


def test_error_payloads() -> None:
    error = errors.DataFormatError("bad", row=3, column="close")
    assert (str(error), error.row, error.column) == ("bad", 3, "close")
    assert (errors.DataFormatError("x").row, errors.DataFormatError("x").column) == (None, None)
    assert errors.InvalidSymbol("x", ["BTC/USDT"]).suggestions == ["BTC/USDT"]
    assert errors.InvalidSymbol("x").suggestions == []
    assert errors.InvalidTimeframe("x", ("1h", "1d")).offered == ["1h", "1d"]
    assert errors.InvalidTimeframe("x").offered == []


def test_command_line_help() -> None:
    result = _run("-m", "forecasting", "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: python -m forecasting" in result.stdout
    assert "fetch" in result.stdout
    assert result.stderr == ""
