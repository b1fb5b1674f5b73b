"""Reading an uploaded experiment bundle back: bounded work and one-line refusals.

The upload is treated as hostile: zip bombs (honest and lying about their size), encrypted
or oddly compressed entries, archives of many files, deep JSON and plain garbage must each
end in a :class:`DataFormatError` that names the problem, with memory bounded.
"""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zipfile
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting.bundle import (
    MAX_DEPTH,
    MAX_ENTRIES,
    MAX_SETTINGS_BYTES,
    SETTINGS_ENTRY,
    experiment_bundle,
    read_bundle_settings,
)
from forecasting.errors import DataFormatError
from tests.factories import random_walk_candles

SETTINGS = {"symbol": "ETH/USDT", "compare.folds": "2", "horizon": "3"}
MB = 1 << 20


def zip_of(
    files: dict[str, bytes | str], compression: int = zipfile.ZIP_DEFLATED, comment: bytes = b""
) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
        archive.comment = comment
    return buffer.getvalue()


def bundle_with(text: str | bytes, **kwargs) -> bytes:
    return zip_of({SETTINGS_ENTRY: text, "settings.json": "{}"}, **kwargs)


def bomb(inflated: int, name: str = SETTINGS_ENTRY) -> bytes:
    """A zip whose one entry inflates to ``inflated`` zero bytes (written in streaming)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo(name)
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=False) as entry:
            block = b"\0" * MB
            for _ in range(inflated // MB):
                entry.write(block)
    return buffer.getvalue()


def patched(data: bytes, *, local: tuple[int, str, int], central: tuple[int, str, int]) -> bytes:
    """``data`` with one field of the first local header and central entry overwritten.

    Each of ``local``/``central`` is (offset in the header, struct format, new value).
    """
    out = bytearray(data)
    for signature, (offset, fmt, value) in ((b"PK\x03\x04", local), (b"PK\x01\x02", central)):
        start = out.index(signature)
        struct.pack_into(fmt, out, start + offset, value)
    return bytes(out)


def lying_size(data: bytes, size: int) -> bytes:
    """``data`` with the first entry's uncompressed size changed to ``size`` in both headers."""
    return patched(data, local=(22, "<I", size), central=(24, "<I", size))


def refused(data: bytes, **kwargs) -> str:
    with pytest.raises(DataFormatError) as caught:
        read_bundle_settings(data, **kwargs)
    message = str(caught.value)
    assert "\n" not in message, "one line"
    assert "Traceback" not in message
    assert "/" not in message, "never a path"
    assert "Compare page" in message, "says what to do"
    return message


def peak_while(call) -> int:
    tracemalloc.start()
    try:
        call()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


# ------------------------------------------------------------------------- good bundles


def test_the_apps_own_bundle_round_trips():
    from forecasting.evaluation import BacktestSettings
    from forecasting.experiment import ExperimentSettings, run_experiment
    from ui import sharing

    candles = random_walk_candles(120)
    result = run_experiment(
        candles,
        ExperimentSettings(
            models=("naive", "drift"), backtest=BacktestSettings(horizon=2, folds=2, test_size=10)
        ),
        source={"source": "test"},
    )
    values = {"horizon": 2, "compare.folds": 2, "compare.models": ("naive", "drift")}
    document = sharing.settings_document(values)  # what ui.settings.bundle_files() writes
    data = experiment_bundle(result, extra_files={SETTINGS_ENTRY: document})

    assert read_bundle_settings(data) == json.loads(document)


@pytest.mark.parametrize(
    "compression",
    [
        zipfile.ZIP_DEFLATED,  # what the app writes
        zipfile.ZIP_STORED,  # a zip tool that does not compress
    ],
)
def test_settings_are_read(compression):
    assert read_bundle_settings(bundle_with(json.dumps(SETTINGS), compression=compression)) == (
        SETTINGS
    )


def test_a_comment_and_moderate_nesting_are_fine():
    document = {"a": [[{"b": [1, 2]}]], **SETTINGS}
    data = bundle_with(json.dumps(document), comment=b"made by hand" * 100)
    assert read_bundle_settings(data) == document


# ---------------------------------------------------------------------------- zip bombs


def test_bomb_that_declares_its_size_is_refused_without_inflating():
    data = bomb(64 * MB)
    assert len(data) < 200_000  # a small upload

    peak = peak_while(lambda: refused(data))

    assert "larger than" in refused(data)
    assert peak < 2 * MB


@pytest.mark.parametrize(
    "declared",
    [
        1_000,  # far below the limit: zipfile would stop there and fail the CRC
        MAX_SETTINGS_BYTES,  # exactly at the limit
        0xFFFF_FFFF - 1,  # huge
    ],
)
def test_bomb_whose_header_lies_about_its_size_stays_bounded(declared):
    # The case: a 1 MB bundle cost about 2 GB, inflated before the size check.
    data = lying_size(bomb(128 * MB), declared)
    assert len(data) < 300_000

    peak = peak_while(lambda: refused(data))

    assert peak < 4 * MB, f"peak {peak / MB:.1f} MB"


def test_raw_deflate_stream_longer_than_declared_stays_bounded():
    # A stored-size-0 entry whose data is a deflate stream of 64 MB of zeros.
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = b"".join(squeeze.compress(b"\0" * MB) for _ in range(64)) + squeeze.flush()
    data = zip_of({SETTINGS_ENTRY: ""})
    local = data.index(b"PK\x03\x04")
    name_end = local + 30 + len(SETTINGS_ENTRY)
    central = data.index(b"PK\x01\x02")
    # Put the raw stream in the entry and fix the compressed size and offsets to match.
    body = bytearray(data[:name_end] + stream)
    struct.pack_into("<I", body, local + 18, len(stream))
    directory = bytearray(data[central:])
    struct.pack_into("<I", directory, 20, len(stream))
    end = directory.index(b"PK\x05\x06")
    struct.pack_into("<I", directory, end + 16, len(body))
    data = bytes(body + directory)

    peak = peak_while(lambda: refused(data, max_bytes=MAX_SETTINGS_BYTES))

    assert peak < 4 * MB, f"peak {peak / MB:.1f} MB"


def test_limit_holds_when_the_entry_really_is_large():
    text = json.dumps({"x": "y" * 10_000})
    assert read_bundle_settings(bundle_with(text), max_bytes=len(text)) == json.loads(text)
    assert "larger than" in refused(bundle_with(text), max_bytes=len(text) - 1)
    # and with the size field lowered to pass the first check
    assert refused(lying_size(bundle_with(text), 100), max_bytes=1_000)


# ------------------------------------------------------------------ entries it will not read


def test_encrypted_entry_is_refused():
    data = patched(bundle_with(json.dumps(SETTINGS)), local=(6, "<H", 1), central=(8, "<H", 1))
    assert "encrypted" in refused(data)


@pytest.mark.parametrize(
    ("method", "name"),
    [
        (99, "unknown"),  # WinZip AES
        (9, "deflate64"),  # a method zipfile does not inflate
        (14, "lzma"),  # one it does, but this app never writes
    ],
)
def test_unsupported_compression_method_is_refused(method, name):
    data = bundle_with(json.dumps(SETTINGS))
    data = patched(data, local=(8, "<H", method), central=(10, "<H", method))
    message = refused(data)
    assert f"method {method} ({name})" in message


def test_real_lzma_and_bzip2_entries_are_refused():
    for compression in (zipfile.ZIP_LZMA, zipfile.ZIP_BZIP2):
        assert "compressed with method" in refused(
            bundle_with(json.dumps(SETTINGS), compression=compression)
        )


def test_too_many_entries_is_refused_before_parsing_them():
    files = {f"f{i}": "" for i in range(MAX_ENTRIES + 1)}
    files[SETTINGS_ENTRY] = json.dumps(SETTINGS)
    assert "more than" in refused(zip_of(files))
    # A lying entry count in the end record: the directory's size still gives it away.
    data = bytearray(zip_of({**files, **{f"g{i}": "" for i in range(40 * MAX_ENTRIES)}}))
    end = data.rindex(b"PK\x05\x06")
    struct.pack_into("<HH", data, end + 8, 2, 2)
    peak = peak_while(lambda: refused(bytes(data)))
    assert peak < MB


# ---------------------------------------------------------------------------- the JSON


@pytest.mark.parametrize(
    "depth",
    [
        MAX_DEPTH + 1,  # just beyond the bound
        900,  # within Python's recursion limit
        100_000,  # far beyond it
    ],
)
def test_deep_nesting_is_refused(depth):
    text = '{"a": ' + "[" * depth + "]" * depth + "}"
    assert "nested deeper" in refused(bundle_with(text))


def test_nesting_at_the_bound_is_read():
    depth = MAX_DEPTH - 1  # plus the object itself
    text = '{"a": ' + "[" * depth + "]" * depth + "}"
    assert read_bundle_settings(bundle_with(text))["a"] is not None


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("[1, 2]", "holds a JSON list"),
        ('"settings"', "holds a JSON string"),
        ("null", "holds a JSON null"),
        ("42", "holds a JSON number"),
        ("{'a': 1}", "not valid JSON"),
        ('{"a": ' + "9" * 5000 + "}", "number too long"),
        (b"\xff\xfe{}", "not UTF-8"),
    ],
)
def test_bad_settings_text_is_refused(text, phrase):
    assert phrase in refused(bundle_with(text))


@pytest.mark.parametrize(
    "data",
    [
        b"",  # empty upload
        b"not a zip at all",  # the AppTest case
        b"PK\x05\x06" + b"\0" * 18,  # an empty zip
        zip_of({"settings.json": "{}"}),  # a zip without the settings
        bundle_with("{}")[:-30],  # cut short
        bytes(range(256)) * 10,  # noise
    ],
)
def test_garbage_is_refused(data):
    refused(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    position=st.integers(min_value=0, max_value=10_000),
    replacement=st.binary(min_size=1, max_size=8),
)
def test_damaged_bundles_give_a_message_never_a_traceback(position, replacement):
    # Every member of the kind: whatever byte of a real bundle is damaged, the answer is
    # the settings or one DataFormatError.
    data = bytearray(bundle_with(json.dumps(SETTINGS), comment=b"c" * 20))
    at = position % len(data)
    data[at : at + len(replacement)] = replacement
    try:
        document = read_bundle_settings(bytes(data))
    except DataFormatError as exc:
        message = str(exc)
        assert "\n" not in message
        assert "Compare page" in message
    else:
        assert isinstance(document, dict)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2_000))
def test_random_bytes_give_a_message(data):
    with pytest.raises(DataFormatError):
        read_bundle_settings(data)
