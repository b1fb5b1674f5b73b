"""Failures that no retry can mend, and exchanges remembered as unreachable.

Retrying with backoff is right for a dropped connection or an HTTP 503, and wrong when
the exchange's host name does not resolve (no network, a wrong URL) or nothing listens
on its port: every attempt fails the same way, and a page waits through all of them
(four attempts with backoff, per request, per session). Such a failure ends the first
attempt (:func:`unreachable_reason`), and the server is remembered as unreachable for
:data:`REMEMBER_SECONDS` (:class:`Reachability`), so later requests and other sessions
are answered at once instead of waiting again. A success forgets it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

__all__ = [
    "REACHABILITY",
    "REMEMBER_SECONDS",
    "Reachability",
    "server_key",
    "unreachable_reason",
]

# How long an exchange found unreachable is answered from memory. Long enough that new
# sessions of an offline server do not each wait on the network; short enough that a
# network that comes back is used within a minute.
REMEMBER_SECONDS = 60.0


def unreachable_reason(exc: BaseException) -> str | None:
    """Why ``exc`` cannot succeed on a retry, in words, or ``None`` when it may.

    Walks the chain of causes (ccxt wraps requests, which wraps urllib3, which wraps the
    socket error): a failed name lookup (``socket.gaierror``, urllib3's
    ``NameResolutionError``) or a refused connection (``ConnectionRefusedError``).
    A timeout or a reset connection is not such a failure: it may pass.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending and len(seen) < 50:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, socket.gaierror) or type(current).__name__ == "NameResolutionError":
            return "its host name could not be resolved (no network, or a wrong URL)"
        if isinstance(current, ConnectionRefusedError):
            return "the connection was refused (nothing answers at its address)"
        # urllib3's MaxRetryError keeps the cause in `reason`; requests passes it as an arg.
        linked = [getattr(current, "reason", None), current.__cause__, current.__context__]
        linked += list(current.args)
        pending += [item for item in linked if isinstance(item, BaseException)]
    return None


def server_key(exchange_id: str, urls: object) -> str:
    """What identifies a server: the exchange and the hosts its API URLs name."""
    hosts: set[str] = set()

    def walk(value: object, depth: int = 0) -> None:
        if depth > 4:
            return
        if isinstance(value, str) and "://" in value:
            hosts.add(urlsplit(value).netloc.lower())
        elif isinstance(value, dict):
            for item in value.values():
                walk(item, depth + 1)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item, depth + 1)

    walk(urls)
    return f"{exchange_id}@{','.join(sorted(hosts))}"


class Reachability:
    """Servers found unreachable, each remembered for ``remember_for`` seconds.

    Thread-safe: every session of an app server shares one (:data:`REACHABILITY`).
    """

    def __init__(
        self,
        remember_for: float = REMEMBER_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.remember_for = float(remember_for)
        self._clock = clock
        self._failures: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def known_unreachable(self, key: str) -> tuple[str, float] | None:
        """``(reason, seconds ago)`` while ``key`` is remembered as unreachable."""
        with self._lock:
            found = self._failures.get(key)
            if found is None:
                return None
            ago = self._clock() - found[0]
            if ago >= self.remember_for:
                del self._failures[key]
                return None
            return found[1], ago

    def failed(self, key: str, reason: str) -> None:
        """Remember ``key`` as unreachable, for ``reason``, from now."""
        with self._lock:
            self._failures[key] = (self._clock(), reason)

    def succeeded(self, key: str) -> None:
        """Forget any failure of ``key``: it answered."""
        with self._lock:
            self._failures.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._failures.clear()


REACHABILITY = Reachability()
