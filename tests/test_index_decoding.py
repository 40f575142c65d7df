"""The vectorised index readers against the reference ones they stand in for.

``weightscope.containers.table.read_table`` parses a table's blocks with numpy and must
give what ``iter_table`` (entry by entry) gives; ``weightscope.formats._bundle_index``
decodes ``BundleEntryProto`` with numpy and must give what protobuf gives for every
entry it takes, and leave every other entry to protobuf. A checkpoint opened with both
fast paths must list and read exactly as one opened with neither.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest
from compiled_entries import compiled_entries
from google.protobuf.message import DecodeError

import weightscope as ws
from weightscope import _proto
from weightscope import infos as infos_module
from weightscope.containers import table as table_module
from weightscope.containers.table import build_table, encode_varint, iter_table, read_table
from weightscope.formats import _bundle_entries as bundle_entries
from weightscope.formats import _bundle_index
from weightscope.formats import tensorflow as tensorflow_module
from weightscope.formats._bundle_index import MAX_RANK, decode_entries
from weightscope.formats.tensorflow import resolve_prefix
from weightscope.infos import InfoColumns
from weightscope.limits import Budget, Limits
from weightscope.sources import FileSource

U64 = (1 << 64) - 1


# -- helpers -----------------------------------------------------------------------------


def _bundles(tf_checkpoints: dict[str, Path]) -> dict[str, Path]:
    """The fixtures with an index (all but the single-file V1 checkpoint)."""
    return {name: path for name, path in tf_checkpoints.items() if name != "v1"}


def _index_path(checkpoint: Path) -> Path:
    if (checkpoint / "saved_model.pb").is_file():
        checkpoint = checkpoint / "variables" / "variables"
    return Path(resolve_prefix(checkpoint)[1])


def _read(path: Path, vectorised: bool = True) -> tuple[table_module.Table, list[tuple[bytes, bytes]]]:
    """The table read both ways; ``vectorised``: whether ``read_table`` should take its fast path."""
    source = FileSource(path)
    try:
        budget = Budget(Limits.for_size(source.size), path)
        assert (
            table_module._parse_blocks(list(table_module._blocks(source, budget)), budget) is not None
        ) == vectorised
        return read_table(source), list(iter_table(source))
    finally:
        source.close()


def _assert_same_table(fast: table_module.Table, slow: list[tuple[bytes, bytes]]) -> None:
    assert fast.keys == [key.decode("utf-8", "surrogateescape") for key, _ in slow]
    assert [fast.value(i) for i in range(len(fast.keys))] == [value for _, value in slow]
    assert not fast.data[len(fast.data) - table_module.PADDING :].any()


def _varint(value: int) -> bytes:
    """A varint as protobuf writes an int64: negative values as 10 bytes."""
    return encode_varint(value & U64)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + payload


def _decode(messages: list[bytes]) -> _bundle_index.Entries:
    lengths = np.array([len(message) for message in messages], np.int64)
    ends = np.cumsum(lengths)
    data = np.frombuffer(b"".join(messages), np.uint8)  # no padding: numpy's decoder adds its own
    if _bundle_index._tables is None:  # (the parsers fixture's numpy side)
        return decode_entries(data, ends - lengths, ends)
    padded = np.frombuffer(b"".join(messages) + bytes(table_module.PADDING), np.uint8)  # as read_table pads it
    return compiled_entries(padded, ends - lengths, ends).entries


def _fields(entries: _bundle_index.Entries, i: int) -> dict[str, object]:
    rank = int(entries.rank[i])
    return {
        "dtype": int(entries.dtype[i]),
        "shape": [int(size) for size in entries.dims[i, :rank]],
        "shard_id": int(entries.shard[i]),
        "offset": int(entries.offset[i]),
        "size": int(entries.size[i]),
        "crc32c": int(entries.crc32c[i]),
    }


def _protobuf_fields(message: bytes) -> dict[str, object] | None:
    """What protobuf reads from ``message``; None where it refuses it."""
    try:
        entry = _proto.BundleEntryProto.FromString(message)
    except DecodeError:
        return None
    return {
        "dtype": entry.dtype,
        "shape": [dim.size for dim in entry.shape.dim],
        "shard_id": entry.shard_id,
        "offset": entry.offset,
        "size": entry.size,
        "crc32c": entry.crc32c,
    }


def _assert_decoded_like_protobuf(messages: list[bytes]) -> _bundle_index.Entries:
    """Every entry the decoder takes reads as protobuf reads it; returns the decoded entries."""
    entries = _decode(messages)
    for i, message in enumerate(messages):
        if entries.decoded[i]:
            assert _fields(entries, i) == _protobuf_fields(message), message.hex()
            assert entries.dims[i, entries.rank[i] :].tolist() == [1] * (entries.dims.shape[1] - entries.rank[i])
    return entries


def _entry(**fields: object) -> bytes:
    entry = _proto.BundleEntryProto()
    shape = fields.pop("shape", None)
    if shape is not None:
        entry.shape.SetInParent()
        for size in shape:  # type: ignore[attr-defined]
            entry.shape.dim.add(size=size)
    for name, value in fields.items():
        setattr(entry, name, value)
    return entry.SerializeToString()


# -- the table ---------------------------------------------------------------------------


@pytest.fixture(params=["compiled", "numpy"])
def parsers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parsers under test: the compiled ones (``weightscope._tables``, which the project's install builds), or
    numpy's and Python's, which an install without a C compiler takes."""
    if request.param == "numpy":
        monkeypatch.setattr(table_module, "_tables", None)
        monkeypatch.setattr(_bundle_index, "_tables", None)
        monkeypatch.setattr(infos_module, "_tables", None)
    else:
        assert table_module._tables is not None, (
            "weightscope._tables was not built: pip install -e . needs a C compiler"
        )


both_parsers = pytest.mark.usefixtures("parsers")


@both_parsers
def test_every_fixture_table_reads_alike_both_ways(tf_checkpoints: dict[str, Path]) -> None:
    for name, checkpoint in _bundles(tf_checkpoints).items():
        fast, slow = _read(_index_path(checkpoint))
        assert len(slow) > 1, name
        _assert_same_table(fast, slow)


def _save_table(path: Path, keys: list[bytes], longest_value: int = 300) -> Path:
    entries = [(key, bytes([len(key) % 251]) * (i % longest_value)) for i, key in enumerate(sorted(set(keys)))]
    path.write_bytes(build_table(entries))
    return path


def _random_keys(rng: np.random.Generator, count: int, alphabet: bytes) -> list[bytes]:
    """Keys sharing long prefixes, as tensor names do, from the bytes in ``alphabet``."""
    stems = [bytes(rng.choice(list(alphabet), int(rng.integers(0, 40)))) for _ in range(max(count // 50, 1))]
    return [
        stems[int(rng.integers(len(stems)))] + bytes(rng.choice(list(alphabet), int(rng.integers(0, 12))))
        for _ in range(count)
    ]


@both_parsers
@pytest.mark.parametrize(
    "alphabet",
    [
        b"abcdefghijklmnopqrstuvwxyz/_0123456789",
        bytes(range(256)),  # invalid UTF-8, NUL, newlines (the byte the decoder joins keys with)
        "ünïcode/名前/ä".encode() + b"/a",
    ],
    ids=["ascii", "all-bytes", "utf-8"],
)
def test_random_tables_read_alike_both_ways(tmp_path: Path, alphabet: bytes) -> None:
    rng = np.random.default_rng(len(alphabet))
    for count in (0, 1, 2, 17, 5000):
        fast, slow = _read(_save_table(tmp_path / f"{count}.index", _random_keys(rng, count, alphabet)))
        _assert_same_table(fast, slow)


@both_parsers
@pytest.mark.parametrize("interval", [1, 3, 129, 1000])
def test_unusual_restart_intervals_and_block_sizes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interval: int
) -> None:
    monkeypatch.setattr(table_module, "DATA_RESTART_INTERVAL", interval)
    monkeypatch.setattr(table_module, "BLOCK_SIZE", 16384)
    rng = np.random.default_rng(interval)
    keys = _random_keys(rng, 3000, b"abcdefgh/_0123")
    # Values of a few bytes: a 16 KiB block holds some 300 entries, more than the 128 the
    # vectorised parse follows from one restart point.
    fast, slow = _read(_save_table(tmp_path / "t.index", keys, longest_value=4), vectorised=interval <= 128)
    _assert_same_table(fast, slow)


@both_parsers
def test_long_keys_and_long_values(tmp_path: Path) -> None:
    keys = [b"k" * 300 + bytes([i]) for i in range(200)] + [b"z" * 70_000]
    entries = [(key, bytes(range(256)) * (i % 5)) for i, key in enumerate(sorted(keys))]
    path = tmp_path / "t.index"
    path.write_bytes(build_table(entries))
    fast, slow = _read(path)
    _assert_same_table(fast, slow)


@both_parsers
def test_a_key_out_of_order_gives_the_same_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    keys = sorted(set(_random_keys(rng, 500, b"abcdef")))
    keys[300], keys[301] = keys[301], keys[300]
    path = tmp_path / "t.index"
    path.write_bytes(build_table([(key, b"v") for key in keys]))
    source = FileSource(path)
    with pytest.raises(ws.CorruptCheckpointError, match="keys out of order") as fast:
        read_table(source)
    with pytest.raises(ws.CorruptCheckpointError) as slow:
        list(iter_table(source))
    assert str(fast.value) == str(slow.value)
    source.close()


# -- BundleEntryProto -------------------------------------------------------------------------


@both_parsers
def test_every_fixture_entry_decodes_as_protobuf_does(tf_checkpoints: dict[str, Path]) -> None:
    for name, checkpoint in _bundles(tf_checkpoints).items():
        _, slow = _read(_index_path(checkpoint))
        messages = [value for _, value in slow[1:]]
        entries = _assert_decoded_like_protobuf(messages)
        for i, message in enumerate(messages):
            entry = _proto.BundleEntryProto.FromString(message)
            # TensorFlow's own entries are all taken, but for partitioned variables' lists of slices.
            assert entries.decoded[i] == (not entry.slices), (name, slow[i + 1][0])


def _random_entry(rng: np.random.Generator) -> tuple[bytes, bool]:
    """A BundleEntryProto, odd in one of many ways or not, and whether it is plain.

    Plain: as TensorFlow writes entries, every value below 2**49, rank at most MAX_RANK.
    """

    def number(bits: int) -> int:
        return int(rng.integers(0, 1 << int(rng.integers(1, bits))))

    kind = int(rng.integers(0, 32))
    fields: dict[str, object] = {}
    if rng.random() < 0.9:
        fields["dtype"] = int(rng.choice([1, 2, 3, 7, 9, 14, 19, 21, 101, 0, 200, 1000, 2**31 - 1]))
    if rng.random() < 0.9:
        fields["shape"] = [number(20) if rng.random() < 0.8 else number(63) for _ in range(int(rng.integers(0, 6)))]
    for name, bits in (("shard_id", 4), ("offset", 40), ("size", 30)):
        if rng.random() < 0.7:
            fields[name] = number(bits)
    if rng.random() < 0.8:
        fields["crc32c"] = number(33)
    if kind == 0:
        fields["shard_id"] = -int(rng.integers(1, 5))
    elif kind == 1:
        fields["offset"] = -number(40) - 1
    elif kind == 2:
        fields["shape"] = [3, -1]
    elif kind == 3:
        fields["shape"] = [1] * (MAX_RANK + int(rng.integers(0, 3)))
    message = _entry(**fields)
    values = [*fields.get("shape", []), *(fields.get(name, 0) for name in ("dtype", "shard_id", "offset", "size"))]
    plain = kind >= 16 and len(fields.get("shape", [])) <= MAX_RANK and all(0 <= v < 1 << 49 for v in values)
    if kind == 4:  # an unknown field, of any wire type
        wire_type = int(rng.choice([0, 1, 2, 5]))
        payload = {0: _varint(number(60)), 1: bytes(8), 2: _varint(3) + b"abc", 5: bytes(4)}[wire_type]
        message += _field(int(rng.integers(8, 40)), wire_type, payload)
    elif kind == 5:  # a known field with the wrong wire type
        message += _field(int(rng.integers(1, 7)), 1, bytes(8))
    elif kind == 6:  # a field repeated: protobuf keeps the last value
        message += _entry(offset=number(30) + 1)
    elif kind == 7:  # the fields in reverse order
        entry = _proto.BundleEntryProto.FromString(message)
        message = b"".join(
            entry.__class__(**{field.name: value}).SerializeToString()
            for field, value in reversed(entry.ListFields())  # type: ignore[attr-defined]
        )
    elif kind == 8:
        entry = _proto.BundleEntryProto.FromString(message)
        entry.slices.add().extent.add(start=1, length=2)
        message = entry.SerializeToString()
    elif kind == 9:
        entry = _proto.BundleEntryProto.FromString(message)
        entry.shape.dim.add(size=2, name="rows")
        message = entry.SerializeToString()
    elif kind == 10:
        entry = _proto.BundleEntryProto.FromString(message)
        entry.shape.unknown_rank = True
        message = entry.SerializeToString()
    elif kind == 11:  # cut short
        message = message[: int(rng.integers(0, max(len(message), 1)))]
    elif kind == 12:  # bytes flipped
        damaged = bytearray(message)
        for _ in range(2):
            if damaged:
                damaged[int(rng.integers(len(damaged)))] = int(rng.integers(256))
        message = bytes(damaged)
    elif kind == 13:  # zero values written out, as another writer might
        message = _field(1, 0, _varint(0)) + _field(3, 0, _varint(0)) + message
    elif kind == 14:  # garbage
        message = bytes(rng.integers(0, 256, int(rng.integers(0, 30)), dtype=np.uint8))
    elif kind == 15:  # varints with needless continuation bytes (1 in 3 bytes)
        message = _field(1, 0, b"\x81\x80\x00")
    return message, plain


@both_parsers
def test_random_entries_decode_as_protobuf_does() -> None:
    rng = np.random.default_rng(20240611)
    messages, plain = zip(*(_random_entry(rng) for _ in range(20_000)), strict=True)
    entries = _assert_decoded_like_protobuf(list(messages))
    assert entries.decoded[list(plain)].all()  # it takes what it should, not just refuses all
    assert sum(plain) > 5000


@both_parsers
def test_every_odd_entry_is_left_to_protobuf() -> None:
    plain = _entry(dtype=1, shape=[2, 3], offset=8, size=24, crc32c=7)
    odd = {
        "negative dim": _entry(dtype=1, shape=[2, -3], size=24),
        "negative offset (a 10-byte varint)": _entry(dtype=1, shape=[2], offset=-8, size=8),
        "negative shard": _entry(dtype=1, shard_id=-1),
        "dim of 2**49": _entry(dtype=1, shape=[1 << 49]),
        "dim of 2**62": _entry(dtype=1, shape=[1 << 62, 0]),
        "rank above the cap": _entry(dtype=1, shape=[1] * (MAX_RANK + 1)),
        "unknown field 8": plain + _field(8, 0, _varint(5)),
        "unknown field 100": plain + _field(100, 2, _varint(1) + b"x"),
        "dtype as fixed64": _field(1, 1, bytes(8)),
        "shape twice": plain + _field(2, 2, _varint(2) + _field(2, 2, b"")),
        "offset twice": plain + _field(4, 0, _varint(9)),
        "fields out of order": _field(5, 0, _varint(4)) + _field(1, 0, _varint(1)),
        "slices": plain + _field(7, 2, _varint(0)),
        "unknown rank": _field(2, 2, _varint(2) + _field(3, 0, _varint(1))),
        "dim with an empty varint": _field(2, 2, _varint(3) + _field(2, 2, _varint(1) + b"\x08")),
        "shape running past the entry": _field(2, 2, _varint(40) + bytes(3)),
        "varint running past the entry": b"\x20\xff\xff",
        "truncated crc32c": b"\x35\x01\x02",
    }
    named = _proto.BundleEntryProto.FromString(plain)
    named.shape.dim[0].name = "rows"
    odd["dim with a name"] = named.SerializeToString()
    entries = _assert_decoded_like_protobuf([plain, *odd.values()])
    assert entries.decoded[0]
    taken = {name for name, decoded in zip(odd, entries.decoded[1:], strict=True) if decoded}
    assert taken == set()


@both_parsers
def test_plain_entries_of_every_size_are_taken() -> None:
    messages = [
        b"",  # every field zero: a float32-less, dtype-0 scalar
        _entry(dtype=1),  # a scalar with no shape field at all
        _entry(dtype=1, shape=[]),  # a scalar with an empty shape, as TensorFlow writes it
        _entry(dtype=1, shape=[0, 5]),  # a zero dim is an empty Dim message
        _field(2, 2, _varint(4) + _field(2, 2, _varint(2) + _field(1, 0, _varint(0)))),  # size 0 written out
        _entry(dtype=9, shape=[(1 << 49) - 1], offset=(1 << 49) - 1, size=(1 << 49) - 1, crc32c=U64 >> 32),
        _entry(dtype=1, shape=[1] * MAX_RANK, shard_id=3),
        _entry(dtype=7, shape=[127, 128, 16383, 16384], offset=1 << 35),
        _field(1, 0, b"\x81\x80\x00"),  # a value with needless continuation bytes
    ]
    entries = _assert_decoded_like_protobuf(messages)
    assert entries.decoded.all()


@both_parsers
def test_entries_that_all_start_with_dtype_and_shape() -> None:
    # Every entry starts 08 DT 12 LL, as TensorFlow writes them: the decoder reads both
    # fields from one window. What follows must still be checked as usual.
    named = _proto.BundleEntryProto.FromString(_entry(dtype=1, shape=[2]))
    named.shape.dim[0].name = "rows"
    cases = {
        "plain": (_entry(dtype=1, shape=[2, 3], offset=5, size=24, crc32c=9), True),
        "empty shape": (_entry(dtype=3, shape=[]), True),
        "shape running past the entry": (_entry(dtype=1, shape=[7])[:4], False),
        "dim with a name": (named.SerializeToString(), False),
        "unknown field after": (_entry(dtype=1, shape=[1]) + _field(9, 0, _varint(1)), False),
        "dtype twice": (_entry(dtype=1, shape=[1]) + _field(1, 0, _varint(2)), False),
        "rank above the cap": (_entry(dtype=1, shape=[1 << 40] * 13), False),  # a shape of 117 bytes
        "long last dim": (_entry(dtype=2, shape=[1, (1 << 49) - 1], size=8), True),
    }
    messages = [message for message, _ in cases.values()]
    assert all(message[0] == 0x08 and message[2] == 0x12 and message[3] < 0x80 for message in messages)
    entries = _assert_decoded_like_protobuf(messages)
    expected = {name: taken for name, (_, taken) in cases.items()}
    assert dict(zip(cases, entries.decoded.tolist(), strict=True)) == expected


# -- whole checkpoints: the fast paths against protobuf and the entry-by-entry table --------


@pytest.fixture
def slow_paths(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Turns the fast paths off: every table parsed entry by entry in Python, every entry by protobuf."""

    def nothing_decoded(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> _bundle_index.Entries:
        entries = decode_entries(data, starts, ends)
        return entries._replace(decoded=np.zeros_like(entries.decoded))

    def turn_off() -> None:
        monkeypatch.setattr(table_module, "_parse_compiled", lambda blocks, budget: None)
        monkeypatch.setattr(table_module, "_parse_blocks", lambda blocks, budget: None)
        monkeypatch.setattr(tensorflow_module, "entry_columns", lambda *_: None)  # as built without the compiler
        monkeypatch.setattr(tensorflow_module, "decode_entries", nothing_decoded)

    return turn_off


def _listing_and_values(path: Path) -> tuple[list[ws.TensorInfo], dict[str, bytes]]:
    with ws.open(path) as ckpt:
        infos = list(ckpt.infos())
        values = {}
        for info in infos:
            if info.type_name not in ("variant", "resource"):
                array = ckpt[info.name]
                values[info.name] = repr(array.tolist()).encode() if array.dtype.kind == "O" else array.tobytes()
    return infos, values


def _assert_same_listing(fast: list[ws.TensorInfo], slow: list[ws.TensorInfo]) -> None:
    assert fast == slow
    for ours, theirs in zip(fast, slow, strict=True):
        assert ours.dtype == theirs.dtype and type(ours.dtype) is type(theirs.dtype)
        assert all(type(size) is int for size in ours.shape)


@both_parsers
def test_fixtures_list_and_read_as_with_protobuf(
    tf_checkpoints: dict[str, Path], slow_paths: Callable[[], None]
) -> None:
    paths = [_index_path(checkpoint) for checkpoint in _bundles(tf_checkpoints).values()]
    fast = [_listing_and_values(path) for path in paths]
    slow_paths()
    for path, (infos, values) in zip(paths, fast, strict=True):
        slow_infos, slow_values = _listing_and_values(path)
        _assert_same_listing(infos, slow_infos)
        assert values == slow_values, path


def _many_tensors(count: int, seed: int) -> Iterator[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    dtypes = [np.float32, np.float64, np.int8, np.int64, np.uint16, np.bool_, np.complex64, np.float16]
    for i in range(count):
        rank = int(rng.integers(0, 5))
        shape = tuple(int(size) for size in rng.integers(0, 4 if rank > 2 else 40, rank))
        name = f"net/block_{i // 7:04d}/{['kernel', 'bias', 'gamma', 'beta', 'moving_mean'][i % 5]}_{i % 7}"
        if i % 97 == 0:
            yield name, np.array([b"", b"ab\x00c", "é".encode()] * (i % 3), dtype=object)
        else:
            dtype = dtypes[i % len(dtypes)]
            yield name, (rng.standard_normal(shape) * 100).astype(dtype)


@both_parsers
def test_a_large_saved_checkpoint_lists_and_reads_as_with_protobuf(
    tmp_path: Path, slow_paths: Callable[[], None]
) -> None:
    prefix = ws.save(dict(_many_tensors(6000, 3)), tmp_path / "big" / "model.ckpt")
    infos, values = _listing_and_values(prefix)
    assert len(infos) == 6000
    slow_paths()
    slow_infos, slow_values = _listing_and_values(prefix)
    _assert_same_listing(infos, slow_infos)
    assert values == slow_values


@both_parsers
def test_names_sorted_as_bytes_not_as_str_read_back(tmp_path: Path) -> None:
    # A byte that is not UTF-8 (0xff, decoded as the surrogate U+DCFF) sorts after the
    # lead byte of U+E000 (0xee) as bytes, before it as str: reads find tensors by bytes.
    names = ["a\udcff", "a\ue000", "a\x00b", "a", "b\nc", "é"]
    tensors = {name: np.full(i + 1, i, np.int32) for i, name in enumerate(names)}
    prefix = ws.save(tensors, tmp_path / "m.ckpt")
    with ws.open(prefix) as ckpt:
        assert list(ckpt) == sorted(names, key=lambda name: name.encode("utf-8", "surrogateescape"))
        for name, value in tensors.items():
            np.testing.assert_array_equal(ckpt[name], value)


def _rewrite_entry(prefix: Path, name: bytes, change: Callable[[bytes], bytes]) -> None:
    source = FileSource(f"{prefix}.index")
    entries = list(iter_table(source))
    source.close()
    rebuilt = [(key, change(value) if key == name else value) for key, value in entries]
    Path(f"{prefix}.index").write_bytes(build_table(rebuilt))


def _set(**fields: object) -> Callable[[bytes], bytes]:
    def change(value: bytes) -> bytes:
        entry = _proto.BundleEntryProto.FromString(value)
        for field, new in fields.items():
            if field == "shape":
                del entry.shape.dim[:]
                for size in new:  # type: ignore[attr-defined]
                    entry.shape.dim.add(size=size)
            else:
                setattr(entry, field, new)
        return entry.SerializeToString()

    return change


BROKEN = {
    "negative dim": (_set(shape=[2, -5]), ws.CorruptCheckpointError),
    "size mismatch": (_set(size=8), ws.CorruptCheckpointError),
    "shard out of range": (_set(shard_id=4), ws.CorruptCheckpointError),
    "negative shard": (_set(shard_id=-1), ws.CorruptCheckpointError),
    "past the end": (_set(offset=10**9), ws.TruncatedFileError),
    "negative offset": (_set(offset=-4), ws.TruncatedFileError),
    "unknown dtype": (_set(dtype=99), ws.UnsupportedFormatError),
    "element count overflow": (_set(shape=[1 << 40, 1 << 40, 1 << 40]), ws.CorruptCheckpointError),
    "unknown rank": (lambda value: value + _field(2, 2, _varint(2) + _field(3, 0, _varint(1))), None),
    "not a protocol buffer": (lambda value: value + b"\xff", ws.CorruptCheckpointError),
}


@both_parsers
@pytest.mark.parametrize("damage", list(BROKEN), ids=list(BROKEN))
def test_broken_entries_give_the_same_error_both_ways(
    tmp_path: Path, slow_paths: Callable[[], None], damage: str
) -> None:
    change, error = BROKEN[damage]
    tensors = {f"layer{i}/kernel": np.ones((2, 5), np.float32) * i for i in range(40)}
    prefix = ws.save(tensors, tmp_path / "model.ckpt")
    _rewrite_entry(prefix, b"layer17/kernel", change)
    with pytest.raises(ws.WeightscopeError) as fast:
        ws.open(prefix)
    slow_paths()
    with pytest.raises(ws.WeightscopeError) as slow:
        ws.open(prefix)
    assert type(fast.value) is type(slow.value)
    assert str(fast.value) == str(slow.value)
    if error is not None:
        assert isinstance(fast.value, error)
    assert re.search(r"layer17/kernel", str(fast.value))


# -- pieces ------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [[0, 1, 5, 7], [0, 1, 1 << 40, (1 << 40) + 1]], ids=["packed", "hashed"])
def test_shape_tuples_are_exact_even_when_hashes_collide(monkeypatch: pytest.MonkeyPatch, sizes: list[int]) -> None:
    rng = np.random.default_rng(5)
    rank = rng.integers(0, 4, 3000)
    dims = np.where(np.arange(3) < rank[:, None], rng.choice(np.array(sizes), (3000, 3)), 1)
    expected = [tuple(int(size) for size in row[:r]) for row, r in zip(dims, rank, strict=True)]
    shapes = bundle_entries._shapes(rank, dims)
    assert shapes == expected
    assert len({id(shape) for shape in shapes}) == len(set(expected))  # one tuple per distinct shape
    monkeypatch.setattr(bundle_entries, "_HASH_MULTIPLIER", np.uint64(0))  # only the last dim counts
    shapes = bundle_entries._shapes(rank, dims)
    assert shapes == expected
    assert all(type(size) is int for shape in shapes for size in shape)


def test_tensor_info_is_an_immutable_value(tmp_path: Path) -> None:
    prefix = ws.save({"a/kernel": np.zeros((2, 3), np.float32), "s": np.float64(1.0)}, tmp_path / "m.ckpt")
    with ws.open(prefix) as ckpt:
        info = ckpt.info("a/kernel")
        scalar = ckpt.info("s")
    assert info.shape == (2, 3) and scalar.shape == ()
    assert json.dumps(info.shape) == "[2, 3]"
    assert (info.size, scalar.size) == (6, 1)
    assert info == ws.TensorInfo(*info) and hash(info) == hash(ws.TensorInfo(*info))
    with pytest.raises(AttributeError):
        info.name = "b"  # type: ignore[misc]


def test_header_decodes_as_protobuf_does() -> None:
    from weightscope import _proto
    from weightscope.formats._bundle_index import decode_header

    rng = np.random.default_rng(5)
    headers = [_proto.BundleHeaderProto(num_shards=1)]
    headers[0].version.producer = 1
    for _ in range(300):
        header = _proto.BundleHeaderProto(num_shards=int(rng.integers(-5, 1 << 20)), endianness=int(rng.integers(0, 2)))
        header.version.producer = int(rng.integers(0, 3))
        header.version.min_consumer = int(rng.integers(-2, 3))
        header.version.bad_consumers.extend(rng.integers(-3, 5, size=int(rng.integers(0, 3))).tolist())
        headers.append(header)
    for header in headers:
        decoded = decode_header(header.SerializeToString())
        assert decoded is not None
        assert (decoded.num_shards, decoded.endianness, decoded.min_consumer, decoded.bad_consumers) == (
            header.num_shards,
            header.endianness,
            header.version.min_consumer,
            tuple(header.version.bad_consumers),
        )
    # What the hand decoder does not know (an unknown field, a fixed32) goes to protobuf.
    assert decode_header(b"\x08\x01\x25\x00\x00\x00\x00") is None
    assert decode_header(b"\x20\x01") is None
    assert decode_header(b"\x1a\x05\x08") is None  # a length past the end


@both_parsers
def test_odd_header_goes_through_protobuf_and_still_reads(tmp_path: Path) -> None:
    from weightscope import _proto
    from weightscope.containers.table import build_table, iter_table
    from weightscope.sources import FileSource

    prefix = ws.save({"w": np.arange(3, dtype=np.float32)}, tmp_path / "m.ckpt")
    entries = list(iter_table(FileSource(f"{prefix}.index")))
    # The same header with a field from a future TensorFlow: protobuf skips it, so do we.
    from weightscope.formats._bundle_index import decode_header

    odd = entries[0][1] + b"\x20\x07"
    assert decode_header(odd) is None and _proto.BundleHeaderProto.FromString(odd).num_shards == 1
    Path(f"{prefix}.index").write_bytes(build_table([(b"", odd), *entries[1:]]))
    with ws.open(prefix) as ckpt:
        np.testing.assert_array_equal(ckpt["w"], np.arange(3, dtype=np.float32))


def test_a_varint_over_64_bits_is_corrupt() -> None:
    from weightscope.containers.table import read_varint

    assert read_varint(b"\xff" * 9 + b"\x01", 0, "test") == ((1 << 64) - 1, 10)
    with pytest.raises(ws.CorruptCheckpointError, match="over 64 bits"):
        read_varint(b"\xff" * 9 + b"\x7f", 0, "test")


@both_parsers
@pytest.mark.parametrize("names", ["b a c d", "b a c a d b"])
def test_info_columns_answer_as_the_dict_of_their_rows(names: str) -> None:
    rows = [
        ws.TensorInfo(name, np.dtype(np.float32), (i,), 4 * i, "float32", "f", 8 * i, f"key{i}")
        for i, name in enumerate(names.split())
    ]
    unique = len(set(names.split())) == len(rows)
    columns = InfoColumns([list(column) for column in zip(*rows, strict=True)], unique=unique)
    expected = {row.name: row for row in rows}  # a repeated name: its last row, at its first one's place
    assert list(columns) == list(expected) and len(columns) == len(expected)
    assert list(columns.values()) == list(expected.values()) and list(columns.items()) == list(expected.items())
    assert all(columns[name] == row and name in columns for name, row in expected.items())
    assert columns == expected and dict(MappingProxyType(columns)) == expected
    assert "z" not in columns and columns.get("z") is None and 3 not in columns
    with pytest.raises(KeyError):
        columns["z"]
    assert all(type(info) is ws.TensorInfo for info in columns.values())


@both_parsers
def test_opening_and_listing_leave_the_collector_nothing_per_tensor(tmp_path: Path) -> None:
    """The infos of a TensorFlow index are columns, made into tuples as a listing asks: none is kept for the garbage
    collector to walk (issue 22: made at open and kept, 100,000 of them cost ~30 ms of collections)."""
    prefix = ws.save({f"v/{i:05d}": np.zeros(2, np.float32) for i in range(5000)}, tmp_path / "m.ckpt")
    with ws.open(prefix):  # the reader's modules, dtypes and caches made first
        pass
    gc.collect()
    before = len(gc.get_objects())
    with ws.open(prefix) as ckpt:
        opened = len(gc.get_objects())
        listed = {info.name: info.shape for info in ckpt.infos()}
        after = len(gc.get_objects())
        assert ckpt.info("v/04999").shape == (2,) and "v/00000" in ckpt
    assert len(listed) == 5000
    assert opened - before < 500 and after - before < 500, (before, opened, after)


@pytest.mark.parametrize("count", [0, 1, 7, 5000])
def test_shape_groups_are_numpy_unique_ones(count: int) -> None:
    """``_groups`` (a quicksort; ``np.unique``'s index and inverse take a stable sort, 15x slower) groups as it does."""
    key = np.random.default_rng(count).integers(0, 40, count).astype(np.uint64) << np.uint64(40)
    first, inverse = bundle_entries._groups(key)
    values, expected_inverse = np.unique(key, return_inverse=True)
    assert (key[first] == values).all() and (inverse == expected_inverse).all()


def _both_parses(path: Path) -> tuple[table_module.Table | None, table_module.Table | None, list[tuple[bytes, bytes]]]:
    """The table in ``path`` parsed entry by entry in compiled code and in numpy's lockstep, and as ``iter_table``
    reads it."""
    source = FileSource(path)
    try:
        blocks = list(table_module._blocks(source, Budget(Limits.for_size(source.size), path)))
        parses = [parse(blocks, Budget(Limits.for_size(source.size), path)) for parse in _PARSES]
        return parses[0], parses[1], list(iter_table(source))
    finally:
        source.close()


_PARSES = (table_module._parse_compiled, table_module._parse_blocks)


def test_both_parses_give_the_table_iter_table_reads(tf_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    paths = [_index_path(checkpoint) for checkpoint in _bundles(tf_checkpoints).values()]
    for count, alphabet, longest in [
        (0, b"a", 100),
        (1, b"ab", 100),
        (40, bytes(range(256)), 100),
        (1500, "ü/名/a".encode(), 100),
        (3000, b"ab/_0", 100),
        (300, b"ab", 20_000),  # lengths of 2 and 3 bytes
    ]:
        keys = [key[:100] for key in _random_keys(rng, count, alphabet)]
        paths.append(_save_table(tmp_path / f"{count}.index", keys, longest_value=longest))
    for path in paths:
        compiled, lockstep, reference = _both_parses(path)
        assert compiled is not None and lockstep is not None, path
        _assert_same_table(compiled, reference)
        _assert_same_table(lockstep, reference)


def test_the_compiled_parse_comes_first_and_numpys_lockstep_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the package was built with ``weightscope._tables``, it parses every table, small or large; an install
    without a C compiler takes numpy's lockstep parse (and the entry-by-entry one after it)."""
    compiled = table_module._tables
    assert compiled is not None, "weightscope._tables was not built: pip install -e . needs a C compiler"
    called: list[str] = []
    for parse in _PARSES:
        monkeypatch.setattr(table_module, parse.__name__, lambda *args, f=parse: called.append(f.__name__) or f(*args))
    for count in (3, 1400):
        keys = [b"model/block_%05d/dense_%d/kernel" % divmod(i, 5) for i in range(count)]  # as TF's writer keys them
        source = FileSource(_save_table(tmp_path / f"{count}.index", keys, longest_value=40))
        for built, expected in ((True, ["_parse_compiled"]), (False, ["_parse_compiled", "_parse_blocks"])):
            monkeypatch.setattr(table_module, "_tables", compiled if built else None)
            called.clear()
            assert read_table(source).keys == [key.decode() for key, _ in iter_table(source)]
            assert called == expected
        source.close()


def test_keys_growing_in_a_small_table_are_refused_at_the_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled parse charges each key as it makes it: past the cap it stops, and ``iter_table``'s path raises
    the error, having built no more than the cap either."""
    monkeypatch.setenv("WEIGHTSCOPE_MAX_MEMORY", "200KB")
    path = tmp_path / "t.index"
    path.write_bytes(build_table([(b"a" * length, b"") for length in range(1, 600)]))  # 180 KB of keys, 12 KB file
    source = FileSource(path)
    budget = Budget(Limits.for_size(source.size), path)
    blocks = list(table_module._blocks(source, budget))
    spent = budget.spent  # (the index block's keys)
    assert table_module._parse_compiled(blocks, budget) is None and budget.spent == spent
    for built in (True, False):
        if not built:
            monkeypatch.setattr(table_module, "_tables", None)
        with pytest.raises(ws.LimitExceededError, match="WEIGHTSCOPE_MAX_MEMORY"):
            read_table(source)
    source.close()
