"""The app's budget glue: limits from secrets, the shared queue, and stopping."""

from __future__ import annotations

import threading
import time
import types

import pytest

from forecasting.budget import Limits
from ui import budget


@pytest.fixture
def secrets(monkeypatch):
    """Set the app's secrets for one test; the process-wide limits are read afresh."""
    found: dict = {}
    monkeypatch.setattr(budget, "st", types.SimpleNamespace(secrets=found))
    budget.limits.cache_clear()
    budget.run_queue.cache_clear()
    yield found
    budget.limits.cache_clear()
    budget.run_queue.cache_clear()


def test_limits_come_from_the_secrets_table(secrets, monkeypatch) -> None:
    monkeypatch.delenv("CFL_CACHE_MAX_CANDLES", raising=False)
    secrets["limits"] = {"cache_max_candles": 50, "concurrent_runs": 2}
    assert budget.limits() == (Limits(cache_max_candles=50, concurrent_runs=2), None)
    assert budget.run_queue().slots == 2


def test_a_bad_limit_keeps_the_defaults_and_says_why(secrets) -> None:
    secrets["limits"] = {"max_run_seconds": "lots"}
    found, problem = budget.limits()
    assert found == Limits()
    assert "[limits] max_run_seconds must be a number above 0" in problem
    assert problem.endswith("The server uses its default limits until this is fixed.")


def test_outside_a_script_run_nothing_stops() -> None:
    assert budget.stop_check()() is False


def test_a_waiting_run_shows_its_place_on_its_bar(secrets) -> None:
    secrets["limits"] = {"concurrent_runs": 1}
    shown: list[str] = []
    bar = types.SimpleNamespace(progress=lambda value, text: shown.append(str(text)))
    release = threading.Event()
    holding = threading.Event()

    def hold() -> None:
        with budget.run_queue().turn():
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    threading.Timer(0.3, release.set).start()
    start = time.monotonic()
    with budget.queued(bar, lambda: False, "this comparison"):
        waited = time.monotonic() - start
    holder.join(5)
    assert waited >= 0.25
    assert shown
    assert shown[0].startswith("Waiting for the server: this comparison is next")
