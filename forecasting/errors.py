"""The project's exceptions: every failure a user can act on, as one small tree.

::

    ForecastingError                 base: pages and the command line catch only this
    ├── ConfigurationError           the request itself is wrong; fix it and retry
    │   ├── UnknownExchange          not an exchange ccxt knows, or it has no OHLCV
    │   ├── InvalidSymbol            not listed on the exchange (carries close matches)
    │   ├── InvalidTimeframe         not offered by the exchange (carries the offered ones)
    │   ├── InvalidDateRange         since is not before until, or unparseable
    │   └── BadCredentials           the exchange rejected the API keys
    ├── DataUnavailable              the source could not give us candles
    │   ├── NoCandles                the range holds no candles
    │   ├── NetworkUnreachable       timeouts, refused connections, 5xx after retries
    │   ├── RateLimited              HTTP 429/418 after retries
    │   ├── GeoBlocked               HTTP 451: the exchange refuses this server's country
    │   └── ExchangeFailure          anything else the exchange said
    ├── DataFormatError              an uploaded file is not usable OHLCV (names row/column)
    ├── InsufficientHistory          too few candles for what was asked
    ├── NotFittedError               a model was asked to forecast before it was fitted
    ├── ModelFailed                  a model's fit failed on these candles (an optimiser)
    ├── EngineFailed                 an engine run in its own process failed (NautilusTrader)
    ├── Cancelled                    the user stopped a long run (training, backtest)
    ├── OverBudget                   a run's estimated cost is over the server's limit
    └── ServerBusy                   the server's queue of runs is full

Errors raised at a boundary (ccxt, pyarrow, csv) are chained with ``raise ... from exc``
so the original cause stays in tracebacks and logs, while the message itself is written
for the person at the screen: what was wrong and what to do.
"""

from __future__ import annotations

__all__ = [
    "BadCredentials",
    "Cancelled",
    "ConfigurationError",
    "DataFormatError",
    "DataUnavailable",
    "EngineFailed",
    "ExchangeFailure",
    "ForecastingError",
    "GeoBlocked",
    "InsufficientHistory",
    "InvalidDateRange",
    "InvalidSymbol",
    "InvalidTimeframe",
    "NetworkUnreachable",
    "NoCandles",
    "ModelFailed",
    "NotFittedError",
    "OverBudget",
    "ServerBusy",
    "RateLimited",
    "UnknownExchange",
]


class ForecastingError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigurationError(ForecastingError):
    """The request is wrong in a way the user can fix."""


class UnknownExchange(ConfigurationError):
    """The exchange id is not one ccxt knows, or it cannot serve OHLCV candles."""


class InvalidSymbol(ConfigurationError):
    """The symbol is not listed on the exchange.

    Parameters
    ----------
    message
        What went wrong, for the user.
    suggestions
        Listed symbols that look closest to the one asked for.
    """

    def __init__(self, message: str, suggestions: list[str] | None = None) -> None:
        super().__init__(message)
        self.suggestions = list(suggestions or [])


class InvalidTimeframe(ConfigurationError):
    """The exchange does not offer the timeframe.

    Parameters
    ----------
    message
        What went wrong, for the user.
    offered
        The timeframes the exchange does offer.
    """

    def __init__(self, message: str, offered: list[str] | None = None) -> None:
        super().__init__(message)
        self.offered = list(offered or [])


class InvalidDateRange(ConfigurationError):
    """The date range is empty, reversed or cannot be read."""


class BadCredentials(ConfigurationError):
    """The exchange rejected the configured API keys."""


class DataUnavailable(ForecastingError):
    """The data source could not provide candles."""


class NoCandles(DataUnavailable):
    """The requested range holds no candles."""


class NetworkUnreachable(DataUnavailable):
    """The exchange could not be reached, even after retrying."""


class RateLimited(DataUnavailable):
    """The exchange kept refusing requests for being too frequent."""


class GeoBlocked(DataUnavailable):
    """The exchange refuses requests from this server's location (HTTP 451)."""


class ExchangeFailure(DataUnavailable):
    """The exchange answered with an error we have no better name for."""


class DataFormatError(ForecastingError):
    """An uploaded file is not usable OHLCV data.

    Parameters
    ----------
    message
        What went wrong, for the user.
    row
        1-based line number in the file (the header is line 1), when known.
    column
        The column at fault, when known.
    """

    def __init__(self, message: str, *, row: int | None = None, column: str | None = None) -> None:
        super().__init__(message)
        self.row = row
        self.column = column


class InsufficientHistory(ForecastingError):
    """There are too few candles for what was asked."""


class NotFittedError(ForecastingError):
    """A model was asked to forecast (or to be saved) before it was fitted."""


class ModelFailed(ForecastingError):
    """A model could not be fitted on these candles (its optimiser failed)."""


class EngineFailed(ForecastingError):
    """An external engine run in its own process (NautilusTrader) failed or timed out."""


class Cancelled(ForecastingError):
    """The user stopped a long run (training, a backtest) before it finished."""


class OverBudget(ForecastingError):
    """A run's estimated cost is over the server's limit (the message says what to lower)."""


class ServerBusy(ForecastingError):
    """The server already queues as many runs as it allows; try again later."""
