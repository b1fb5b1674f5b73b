"""Failures no retry can mend are told apart from those a retry may mend.

Through the real ccxt client: a host name that cannot resolve (the reserved ``.invalid``
top-level domain never resolves, so the test needs no network) and a local port that
nothing listens on; against them, a local server that stalls (a timeout) must stay
retryable.
"""

from __future__ import annotations

import socket
import threading

import ccxt
import pytest

from forecasting.data.reachability import Reachability, server_key, unreachable_reason


def _error(url: str, timeout_ms: int = 3000) -> BaseException:
    exchange = ccxt.binance({"urls": {"api": {"public": url}}, "timeout": timeout_ms})
    with pytest.raises(ccxt.BaseError) as caught:
        exchange.fetch_time()
    return caught.value


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_name_that_does_not_resolve_is_not_worth_a_retry() -> None:
    reason = unreachable_reason(_error("http://exchange.invalid/api/v3"))
    assert reason == "its host name could not be resolved (no network, or a wrong URL)"


def test_a_refused_connection_is_not_worth_a_retry() -> None:
    reason = unreachable_reason(_error(f"http://127.0.0.1:{_closed_port()}/api/v3"))
    assert reason == "the connection was refused (nothing answers at its address)"


def test_a_timeout_may_pass_and_is_retried() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        error = _error(f"http://127.0.0.1:{port}/api/v3", timeout_ms=300)
        assert isinstance(error, ccxt.RequestTimeout)
        assert unreachable_reason(error) is None
    finally:
        for sock in accepted:
            sock.close()
        listener.close()


def test_an_unreachable_server_is_remembered_for_a_while_and_forgotten_on_success() -> None:
    now = [100.0]
    memory = Reachability(remember_for=60, clock=lambda: now[0])
    key = server_key("binance", {"api": {"public": "https://API.binance.com/api/v3"}})
    assert key == "binance@api.binance.com"
    assert memory.known_unreachable(key) is None
    memory.failed(key, "its host name could not be resolved")
    now[0] += 59
    assert memory.known_unreachable(key) == ("its host name could not be resolved", 59)
    assert memory.known_unreachable("binance@other.example") is None  # per server
    now[0] += 1
    assert memory.known_unreachable(key) is None  # remembered for 60 s only
    memory.failed(key, "refused")
    memory.succeeded(key)
    assert memory.known_unreachable(key) is None


def test_an_offline_exchange_fails_at_once_and_is_remembered_for_every_session(
    no_sleep_retry,
) -> None:
    """The reported case: with no network, the first page waited 13-22 s while the default
    exchange was retried, and every new session waited again. Now the first request fails
    without a retry, and the next ones (any session: a new client) without a request."""
    from forecasting.data.exchange import create_exchange, list_symbols
    from forecasting.data.reachability import REACHABILITY
    from forecasting.errors import NetworkUnreachable

    config = {"urls": {"api": {"public": "http://exchange.invalid/api/v3"}}, "timeout": 3000}
    with pytest.raises(NetworkUnreachable, match="its host name could not be resolved") as first:
        list_symbols(create_exchange("binance", config), retry=no_sleep_retry)
    assert no_sleep_retry.sleep.waits == []  # no retry was even scheduled
    assert "\n" not in str(first.value)
    calls = []
    other = create_exchange("binance", config)
    other.fetch = lambda *args, **kwargs: calls.append(args)  # any request would land here
    with pytest.raises(NetworkUnreachable, match=r"s ago; it is tried again"):
        list_symbols(other, retry=no_sleep_retry)
    assert calls == []
    REACHABILITY.clear()  # a minute later it is asked again
    with pytest.raises(NetworkUnreachable, match="its host name could not be resolved"):
        list_symbols(create_exchange("binance", config), retry=no_sleep_retry)
