"""Market data: exchanges through ccxt, the local cache, CSV files, the offline sample."""

from forecasting.data.cache import CandleCache, default_cache_dir
from forecasting.data.csvfile import CsvData, read_ohlcv_csv, write_ohlcv_csv
from forecasting.data.exchange import (
    DEFAULT_EXCHANGE,
    DEFAULT_SYMBOL,
    DEFAULT_TIMEFRAME,
    RetryPolicy,
    create_exchange,
    fetch_ohlcv,
    list_exchanges,
    list_symbols,
    list_timeframes,
    source_key,
    suggest_symbols,
)
from forecasting.data.market import load_exchange_candles
from forecasting.data.quality import QualityReport, fill_gaps, quality_report
from forecasting.data.sample import SAMPLE_LABEL, load_sample

__all__ = [
    "DEFAULT_EXCHANGE",
    "DEFAULT_SYMBOL",
    "DEFAULT_TIMEFRAME",
    "SAMPLE_LABEL",
    "CandleCache",
    "CsvData",
    "QualityReport",
    "RetryPolicy",
    "create_exchange",
    "default_cache_dir",
    "fetch_ohlcv",
    "fill_gaps",
    "list_exchanges",
    "list_symbols",
    "list_timeframes",
    "load_exchange_candles",
    "load_sample",
    "quality_report",
    "read_ohlcv_csv",
    "source_key",
    "suggest_symbols",
    "write_ohlcv_csv",
]
