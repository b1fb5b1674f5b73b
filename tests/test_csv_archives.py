"""Compressed and non-CSV files: unpacked when they hold one CSV, refused in one line
otherwise, never more than the size limit inflated whatever the archive claims."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zipfile

import pandas as pd
import pytest

from forecasting.data.csvfile import read_ohlcv_csv, write_ohlcv_csv
from forecasting.errors import DataFormatError


@pytest.fixture(scope="module")
def csv_bytes() -> bytes:
    index = pd.date_range("2024-01-01", periods=48, freq="h", tz="UTC", name="timestamp")
    frame = pd.DataFrame(
        {"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 10.0},
        index=index.as_unit("ms"),
    )
    buffer = io.StringIO()
    write_ohlcv_csv(frame, buffer)
    return buffer.getvalue().encode()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_holding_one_csv_reads_like_the_csv(csv_bytes) -> None:
    # Binance's public data dumps are served as one CSV in a zip.
    plain = read_ohlcv_csv(csv_bytes)
    packed = read_ohlcv_csv(_zip({"BTCUSDT-1h-2024-01.csv": csv_bytes}))
    pd.testing.assert_frame_equal(packed.candles, plain.candles)
    assert packed.notes == ("Read 'BTCUSDT-1h-2024-01.csv' from the zip archive.", *plain.notes)


@pytest.mark.parametrize(
    ("compress", "kind"),
    [(gzip.compress, "gzip"), (bz2.compress, "bzip2"), (lzma.compress, "xz")],
)
def test_compressed_files_are_read_unpacked(csv_bytes, compress, kind) -> None:
    data = read_ohlcv_csv(compress(csv_bytes))
    pd.testing.assert_frame_equal(data.candles, read_ohlcv_csv(csv_bytes).candles)
    assert data.notes[0] == f"The file is {kind}-compressed: read unpacked."


def test_a_path_to_a_zip_is_read(tmp_path, csv_bytes) -> None:
    path = tmp_path / "dump.zip"
    path.write_bytes(_zip({"a/BTCUSDT.csv": csv_bytes, "a/": b""}))
    assert len(read_ohlcv_csv(path).candles) == 48


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            _zip({"a.csv": b"x", "b.csv": b"y"}),
            "The zip archive holds 2 CSV files ('a.csv', 'b.csv'); it must hold exactly one. "
            "Unpack it and upload one CSV.",
        ),
        (
            _zip({"notes.pdf": b"%PDF"}),
            "The zip archive holds 0 CSV files ('notes.pdf'); it must hold exactly one. "
            "Unpack it and upload one CSV.",
        ),
        (
            _zip({"[Content_Types].xml": b"<x/>", "xl/workbook.xml": b"<x/>"}),
            "The file is an Excel workbook, not a CSV file: save the sheet as CSV (UTF-8).",
        ),
        (
            b"7z\xbc\xaf\x27\x1c" + b"\0" * 40,
            "The file is a 7-Zip archive: unpack it and upload the CSV inside, not a CSV file.",
        ),
        (b"PAR1" + b"\0" * 40, "The file is a Parquet file: export it as CSV, not a CSV file."),
        (
            b"\x1f\x8b" + b"\x63" * 40,
            "The file is a damaged or unreadable archive (Unknown compression method). Unpack "
            "it yourself and upload the CSV inside.",
        ),
    ],
)
def test_other_archives_and_workbooks_are_refused_in_one_line(data, message) -> None:
    with pytest.raises(DataFormatError) as caught:
        read_ohlcv_csv(data)
    assert str(caught.value) == message


@pytest.mark.parametrize("pack", ["zip", "gzip"])
def test_an_archive_inflating_past_the_limit_is_refused_without_inflating_it_all(pack) -> None:
    # 50 MB of zeros pack into about 50 kB: the reader stops one byte past the limit.
    zeros = b"0" * 50_000_000
    data = _zip({"big.csv": zeros}) if pack == "zip" else gzip.compress(zeros)
    assert len(data) < 200_000
    with pytest.raises(DataFormatError) as caught:
        read_ohlcv_csv(data, max_bytes=1_048_576)
    assert str(caught.value) == (
        "Unpacked, the file is larger than the 1 MB limit. Upload a shorter range or a "
        "longer timeframe."
    )
