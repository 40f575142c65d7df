"""weightscope._tables, the compiled parsers of TensorFlow's index tables and bundle entries, against the Python and
numpy paths they stand in for (``containers.table``'s entry-by-entry reader, ``_bundle_index``'s numpy decoder):
on valid tables, and differentially on thousands of damaged ones (bits flipped, blocks cut short, varints written
over, separators and restart counts changed), seeded. Where the compiled parse takes a table, it gives what the
reference gives; where it declines (None), the reference raises its own error or takes it; a checkpoint opened
either way lists alike, or fails with the same error.
"""

from __future__ import annotations

from itertools import repeat
from pathlib import Path

import numpy as np
import pytest
from compiled_entries import Compiled, compiled_entries

import weightscope as ws
from weightscope import _tables
from weightscope.containers import table as table_module
from weightscope.containers.table import build_table, encode_varint, iter_table
from weightscope.formats import _bundle_index
from weightscope.formats import tensorflow as tensorflow_module
from weightscope.formats._bundle_entries import _shapes
from weightscope.infos import TensorInfo
from weightscope.limits import Budget, Limits
from weightscope.sources import FileSource

_Blocks = list[tuple[bytes, int, bytes]]


def _tensors(rng: np.random.Generator, count: int) -> dict[str, np.ndarray]:
    """Tensors of every kind an index describes: dtypes, ranks 0-5, empty ones, strings."""
    dtypes = [np.float32, np.float64, np.int8, np.int64, np.uint16, np.bool_, np.complex64, np.float16]
    tensors: dict[str, np.ndarray] = {}
    for i in range(count):
        shape = tuple(int(size) for size in rng.integers(0, 4, int(rng.integers(0, 6))))
        name = f"net/block_{i // 5:03d}/{['kernel', 'bias', 'gamma', 'beta', 'moving_mean'][i % 5]}"
        if i % 17 == 3:
            tensors[name] = np.array([b"", b"ab\x00c", "é".encode()][: i % 3 + 1], dtype=object)
        else:
            tensors[name] = (rng.standard_normal(shape) * 100).astype(dtypes[i % len(dtypes)])
    return tensors


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of 80 tensors whose index has blocks of ~1 KiB (several blocks, restart points every 4 entries),
    so that damage lands on every part of a block; returns its prefix."""
    prefix = ws.save(_tensors(np.random.default_rng(1), 80), tmp_path_factory.mktemp("tables") / "m.ckpt")
    index = Path(f"{prefix}.index")
    source = FileSource(index)
    entries = list(iter_table(source))
    source.close()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(table_module, "BLOCK_SIZE", 1024)
        patch.setattr(table_module, "DATA_RESTART_INTERVAL", 4)
        index.write_bytes(build_table(entries))
    return prefix


def _blocks(index: Path) -> _Blocks:
    source = FileSource(index)
    try:
        return [
            (separator, offset, bytes(block)) for separator, offset, block in table_module._blocks(source, _budget())
        ]
    finally:
        source.close()


def _budget(memory: int = 1 << 30) -> Budget:
    return Budget(Limits(memory, 1 << 20), "t.index")


def _varint_bytes(rng: np.random.Generator) -> bytes:
    """A varint of any length, or a run of continuation bytes that never ends."""
    if rng.random() < 0.1:
        return b"\xff" * int(rng.integers(1, 12))
    return encode_varint(int(rng.integers(0, 1 << int(rng.integers(1, 64)), dtype=np.uint64)))


def _damage(data: bytes, rng: np.random.Generator) -> bytes:
    """``data`` with one kind of damage: bits flipped, cut short, a varint written over, bytes dropped or doubled."""
    damaged = bytearray(data)
    kind = int(rng.integers(5))
    at = int(rng.integers(len(damaged) + 1))
    if kind == 0:
        for _ in range(int(rng.integers(1, 4))):
            if damaged:
                damaged[int(rng.integers(len(damaged)))] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        del damaged[at:]
    elif kind == 2:
        varint = _varint_bytes(rng)
        damaged[at : at + len(varint)] = varint
    elif kind == 3:
        del damaged[at : at + int(rng.integers(1, 9))]
    else:
        damaged[at:at] = damaged[at : at + int(rng.integers(1, 9))]
    return bytes(damaged)


def _damaged_blocks(blocks: _Blocks, rng: np.random.Generator) -> _Blocks:
    """One block damaged, its separator changed, its restart count rewritten, or blocks dropped or swapped."""
    blocks = list(blocks)
    i = int(rng.integers(len(blocks)))
    separator, offset, contents = blocks[i]
    kind = rng.random()
    if kind < 0.7:
        blocks[i] = (separator, offset, _damage(contents, rng))
    elif kind < 0.8:
        blocks[i] = (_damage(separator, rng), offset, contents)
    elif kind < 0.9:
        count = int(rng.choice([0, 1, 2, int(rng.integers(1 << 32))]))
        blocks[i] = (separator, offset, contents[:-4] + count.to_bytes(4, "little"))
    elif len(blocks) > 1:
        j = int(rng.integers(len(blocks)))
        blocks[i], blocks[j] = blocks[j], blocks[i]
    else:
        del blocks[i]
    return blocks


# -- the table's blocks ----------------------------------------------------------------------------------------


def _reference(blocks: _Blocks, memory: int) -> tuple[list[str], list[bytes], int] | None:
    """What ``iter_table``'s path reads from ``blocks``: keys, values and the keys' cost; None where it refuses."""
    budget = _budget(memory)
    source = FileSource.__new__(FileSource)
    source.path = Path("t.index")
    try:
        entries = list(table_module._entries(source, blocks, budget))
    except ws.WeightscopeError:
        return None
    return [key.decode("utf-8", "surrogateescape") for key, _ in entries], [value for _, value in entries], budget.spent


def _compiled(blocks: _Blocks, memory: int) -> tuple[list[str], list[bytes], int] | None:
    parsed = _tables.parse_blocks(blocks, memory)
    if parsed is None:
        return None
    keys, bounds, cost = parsed
    joined = b"".join(contents for _, _, contents in blocks)
    starts, ends = np.frombuffer(bounds, np.int64).reshape(2, len(keys)).tolist()
    return keys, [joined[start:end] for start, end in zip(starts, ends, strict=True)], cost


def test_the_compiled_parse_reads_the_seed_as_the_reference_does(seed: Path) -> None:
    blocks = _blocks(Path(f"{seed}.index"))
    assert len(blocks) >= 3
    expected = _reference(blocks, 1 << 30)
    assert expected is not None and len(expected[0]) == 81
    assert _compiled(blocks, 1 << 30) == expected
    assert _compiled([], 0) == ([], [], 0)


def test_damaged_blocks_parse_as_the_reference_or_not_at_all(seed: Path) -> None:
    rng = np.random.default_rng(2026)
    blocks = _blocks(Path(f"{seed}.index"))
    outcomes = {"taken": 0, "declined, refused by the reference too": 0, "declined, read by the reference": 0}
    for case in range(3000):
        damaged = _damaged_blocks(blocks, rng)
        memory = 1 << 30 if case % 10 else int(rng.integers(0, 20_000))  # at times, the keys pass the cap
        compiled, expected = _compiled(damaged, memory), _reference(damaged, memory)
        if compiled is not None:
            assert compiled == expected, case
            outcomes["taken"] += 1
        elif expected is None:
            outcomes["declined, refused by the reference too"] += 1
        else:
            outcomes["declined, read by the reference"] += 1
    # Both happen, the damage is not all of one sort; the compiled parse declines next to nothing the reference reads
    # (varints of over 5 bytes in a block's entry: none here).
    assert outcomes["taken"] > 300 and outcomes["declined, refused by the reference too"] > 300, outcomes


def test_keys_charged_past_the_room_decline(tmp_path: Path) -> None:
    (tmp_path / "t.index").write_bytes(build_table([(b"a" * 100, b"")]))
    blocks = _blocks(tmp_path / "t.index")
    assert _reference(blocks, 280) is not None and _reference(blocks, 279) is None  # 2 x 100 + 80
    assert _compiled(blocks, 280) == _reference(blocks, 280) and _compiled(blocks, 279) is None


# -- the entries ------------------------------------------------------------------------------------------------


def _decode_both(messages: list[bytes]) -> tuple[Compiled, _bundle_index.Entries]:
    lengths = np.array([len(message) for message in messages], np.int64)
    ends = np.cumsum(lengths)
    data = np.frombuffer(b"".join(messages) + bytes(table_module.PADDING), np.uint8)
    return compiled_entries(data, ends - lengths, ends), _bundle_index.decode_entries(data, ends - lengths, ends)


def _assert_same_entries(made: Compiled, expected: _bundle_index.Entries) -> None:
    """The same entries taken, with the same fields (dims up to each rank: past it both hold 1s)."""
    compiled = made.entries
    assert compiled.decoded.tolist() == expected.decoded.tolist()
    taken = compiled.decoded
    for field in ("dtype", "shard", "offset", "size", "crc32c", "rank"):
        assert getattr(compiled, field)[taken].tolist() == getattr(expected, field)[taken].tolist(), field
    for i in np.flatnonzero(taken).tolist():
        assert compiled.dims[i].tolist() == expected.dims[i, : compiled.dims.shape[1]].tolist()
        assert (expected.dims[i, compiled.dims.shape[1] :] == 1).all()
    # The shapes made as numpy's path makes them, one tuple per distinct shape; () where not decoded.
    assert made.shapes == _shapes(np.where(taken, expected.rank, 0), expected.dims)
    assert all(type(size) is int for shape in made.shapes for size in shape)
    distinct = {shape: id(shape) for shape in made.shapes}
    assert all(id(shape) == distinct[shape] for shape in made.shapes)


def test_damaged_entries_decode_as_numpys_decoder_does(seed: Path) -> None:
    rng = np.random.default_rng(22)
    source = FileSource(f"{seed}.index")
    values = [value for _, value in list(iter_table(source))[1:]]
    source.close()
    messages = [_damage(values[int(rng.integers(len(values)))], rng) for _ in range(20_000)]
    compiled, expected = _decode_both(values + messages)
    assert compiled.entries.decoded[: len(values)].all()  # every entry TensorFlow's way is taken
    _assert_same_entries(compiled, expected)
    assert 0.1 < compiled.entries.decoded.mean() < 0.9  # (damage both kept and lost entries)


def _damaged_entries(seed: Path, number: int) -> tuple[int, list[bytes], np.ndarray, np.ndarray, np.ndarray]:
    """The seed's index entries and 20,000 damaged copies of them (``number`` seeds the damage): how many are
    undamaged, the entries, and their bytes (padded as ``read_table`` pads them) with each one's bounds."""
    rng = np.random.default_rng(number)
    source = FileSource(f"{seed}.index")
    values = [value for _, value in list(iter_table(source))[1:]]
    source.close()
    messages = values + [_damage(values[int(rng.integers(len(values)))], rng) for _ in range(20_000)]
    lengths = np.array([len(message) for message in messages], np.int64)
    ends = np.cumsum(lengths)
    data = np.frombuffer(b"".join(messages) + bytes(table_module.PADDING), np.uint8)
    return len(values), messages, data, ends - lengths, ends


def test_damaged_entries_are_checked_as_numpys_checks_do(seed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``check_rows`` (``_checked_rows``) against ``_check_entries``, on the seed's entries damaged, and with every
    element type met for the first time (its dtype made, then the entries checked again)."""
    undamaged, messages, data, starts, ends = _damaged_entries(seed, 23)
    rows = compiled_entries(data, starts, ends).rows
    numpys = _bundle_index.decode_entries(data, starts, ends)
    unmade = len(tensorflow_module.ELEMENT_TYPES)
    with ws.open(seed) as ckpt:
        for first_time in (True, False):
            if first_time:  # (the module's tables as a new process has them)
                monkeypatch.setattr(tensorflow_module, "_DTYPES", np.full(unmade, None, object))
                monkeypatch.setattr(tensorflow_module, "_ITEMSIZES", np.full(unmade, -1, np.int64))
            checked = ckpt._checked_rows(rows, np.array([shard.size for shard in ckpt._shards]))
            element, shard, plain = np.frombuffer(checked, np.int64).reshape(len(messages), 3).T
            plain = plain != 0
            assert (tensorflow_module._DTYPES != None).sum() > 3  # noqa: E711 - the types met were made
            expected_element, expected_shard, expected_plain = ckpt._check_entries(numpys)
            assert plain.tolist() == expected_plain.tolist()
            assert element[plain].tolist() == expected_element[plain].tolist()
            assert shard[plain].tolist() == expected_shard[plain].tolist()
            assert plain[:undamaged].all() and 0.05 < plain.mean() < 0.9
            assert not element[~plain].any() and not shard[~plain].any()


def test_damaged_entries_make_the_columns_numpys_path_makes(seed: Path) -> None:
    """``entry_columns`` (decoded, checked and made columns in compiled code) against ``_numpy_columns``, on the
    seed's entries damaged: the same odd entries, and the same columns and numbers for the others."""
    undamaged, messages, data, starts, ends = _damaged_entries(seed, 24)
    start = 5  # (a chunk's place among all entries)
    numbers, expected_numbers = (np.zeros((5, start + len(messages)), np.int64) for _ in range(2))
    columns, expected_columns = ([[None] * (start + len(messages)) for _ in range(4)] for _ in range(2))
    with ws.open(seed) as ckpt:
        files = [str(shard.path) for shard in ckpt._shards]
        shard_sizes = np.array([shard.size for shard in ckpt._shards])
        kinds = (tensorflow_module._DTYPES, tensorflow_module._TYPE_NAMES)

        def check(rows: bytearray) -> bytearray:
            return ckpt._checked_rows(rows, shard_sizes)

        bounds = (starts, ends)
        odd = _bundle_index.entry_columns(data, bounds, check, kinds, files, numbers, start, columns)
        numpys = _bundle_index.decode_entries(data, starts, ends)
        expected_odd = ckpt._numpy_columns(numpys, files, expected_numbers, expected_columns, start)
    assert odd is not None
    assert odd == expected_odd and 0.1 < len(odd) / len(messages) < 0.95
    assert min(odd) - start >= undamaged  # every entry TensorFlow wrote passes
    plain = np.ones(len(messages), bool)
    plain[np.array(odd) - start] = False
    for made, wanted in zip(columns, expected_columns, strict=True):
        assert made[:start] == wanted[:start] == [None] * start and len(made) == len(wanted)
        assert [made[start + i] for i in np.flatnonzero(plain)] == [wanted[start + i] for i in np.flatnonzero(plain)]
    assert (numbers[:, start:][:, plain] == expected_numbers[:, start:][:, plain]).all()
    assert not numbers[:, :start].any() and not numbers[1::2, start:][:, ~plain].any()  # shard and extent 0: odd


def test_entry_columns_refuse_arguments_that_do_not_fit() -> None:
    data = np.frombuffer(bytes.fromhex("080112081202080212020803") + bytes(32), np.uint8)  # float32 [2, 3]
    rows, shapes = _tables.decode_entries(data, np.array([0]), np.array([12]))
    good = bytearray(np.array([0, 0, 1], np.int64).tobytes())  # element 0, shard 0, plain
    numbers = np.zeros((5, 2), np.int64)
    columns: list[list[object]] = [[None, None] for _ in range(4)]

    def fill(*changed: tuple[int, object]) -> object:
        args: list[object] = [rows, good, shapes, ["d"], ["t"], ["f"], numbers, 1, columns]
        for position, value in changed:
            args[position] = value
        return _tables.entry_columns(*args)

    assert fill() == [] and columns == [[None, "d"], [None, (2, 3)], [None, "t"], [None, "f"]]
    assert not numbers.any()  # (an entry with no offset, size or checksum stored)
    with pytest.raises(TypeError):
        _tables.entry_columns(rows, good)
    with pytest.raises(TypeError, match="lists"):
        fill((3, ("d",)))
    with pytest.raises(TypeError, match="lists"):
        fill((8, columns[:3]))
    with pytest.raises(ValueError, match="as long as numbers' rows"):
        fill((8, [[None], *columns[1:]]))
    with pytest.raises(ValueError, match="of the same entries"):
        fill((1, good + good))
    with pytest.raises(ValueError, match="out of range"):
        fill((1, bytearray(np.array([1, 0, 1], np.int64).tobytes())))
    with pytest.raises(ValueError, match="out of range"):
        fill((1, bytearray(np.array([0, -1, 1], np.int64).tobytes())))
    for start in (2, -1):
        with pytest.raises(ValueError, match="past the numbers' end"):
            fill((7, start))
    with pytest.raises(ValueError, match="5 rows"):
        fill((6, np.zeros((3, 2), np.int64)))
    with pytest.raises(TypeError):
        fill((6, np.zeros((5, 2), np.int32)))
    read_only = np.zeros((5, 2), np.int64)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        fill((6, read_only))


def test_entries_are_decoded_as_numpys_decoder_in_chunks_of_any_length(seed: Path) -> None:
    source = FileSource(f"{seed}.index")
    values = [value for _, value in list(iter_table(source))[1:]]
    source.close()
    for count in (0, 1, 2, 7, len(values)):
        _assert_same_entries(*_decode_both(values[:count]))


def test_bad_arguments_raise_and_bounds_outside_the_data_decline() -> None:
    data = np.zeros(8, np.uint8)
    with pytest.raises(TypeError):
        _tables.decode_entries(data, np.zeros(1, np.int32), np.zeros(1, np.int32))
    with pytest.raises(ValueError, match="as many starts as ends"):
        _tables.decode_entries(data, np.zeros(2, np.int64), np.zeros(1, np.int64))
    for start, end in ((0, 9), (-1, 2), (3, 2)):
        assert _tables.decode_entries(data, np.array([start]), np.array([end])) is None
    with pytest.raises(TypeError):
        _tables.parse_blocks([(b"", 0)], 10)
    with pytest.raises(TypeError):
        _tables.parse_blocks([("separator", 0, b"")], 10)


# -- whole checkpoints -----------------------------------------------------------------------------------------


def _opened(prefix: Path) -> tuple[str, object]:
    """The listing of the checkpoint, or its error (type and message)."""
    try:
        with ws.open(prefix) as ckpt:
            return "listed", [(info, type(info.dtype)) for info in ckpt.infos()]
    except ws.WeightscopeError as error:
        return type(error).__name__, str(error)


def test_damaged_indexes_open_alike_with_the_compiled_parsers_and_without(
    seed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The damaged blocks stand in for the index file's (their checksums would refuse nearly all damage first)."""
    rng = np.random.default_rng(7)
    blocks = _blocks(Path(f"{seed}.index"))
    damaged: _Blocks = blocks
    monkeypatch.setattr(table_module, "_blocks", lambda source, budget: iter(damaged))

    def opened(compiled: bool) -> tuple[str, object]:
        monkeypatch.setattr(table_module, "_tables", _tables if compiled else None)
        monkeypatch.setattr(_bundle_index, "_tables", _tables if compiled else None)
        return _opened(seed)

    assert opened(True) == opened(False) and opened(True)[0] == "listed"
    outcomes: dict[str, int] = {}
    for case in range(3000):
        damaged = _damaged_blocks(blocks, rng)
        outcome = opened(True)
        assert outcome == opened(False), case
        outcomes[outcome[0]] = outcomes.get(outcome[0], 0) + 1
    assert outcomes.get("listed", 0) > 100 and len(outcomes) >= 4, outcomes


# -- extents -----------------------------------------------------------------------------------------------------


def test_the_first_overlap_is_the_one_numpy_finds(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(31)
    cases = []
    for _ in range(3000):
        n = int(rng.integers(0, 12))
        size = rng.integers(0, 50, n) * (rng.random(n) < 0.8)
        offset = np.cumsum(size + rng.integers(-1 if rng.random() < 0.3 else 0, 5, n)) - size
        shard = (rng.random(n) < 0.2).astype(np.int64) * int(rng.integers(1, 3))
        extents = np.ascontiguousarray(np.stack([shard, offset, size]).astype(np.int64)[:, rng.permutation(n)])
        cases.append((extents, np.lexsort((extents[1], extents[0]))))
    top = np.iinfo(np.int64).max  # an end past 2**63 wraps, in numpy's sum and C's alike
    cases.append((np.array([[0, 0], [top - 2, top - 1], [5, 1]]), np.array([0, 1])))
    compiled = [_bundle_index.first_overlap(extents, order) for extents, order in cases]
    monkeypatch.setattr(_bundle_index, "_tables", None)
    assert compiled == [_bundle_index.first_overlap(extents, order) for extents, order in cases]
    assert 200 < sum(clash is not None for clash in compiled) < 2800  # (both outcomes, often)
    with pytest.raises(ValueError, match="3 rows"):
        _tables.first_overlap(np.zeros((2, 4), np.int64), np.arange(4))
    with pytest.raises(ValueError, match="an order of the extents' indices"):
        _tables.first_overlap(np.ones((3, 2), np.int64), np.array([0, 2]))
    with pytest.raises(TypeError):
        _tables.first_overlap(np.zeros((3, 4), np.int32), np.arange(4))


# -- rows -------------------------------------------------------------------------------------------------------


def test_rows_are_the_tuples_map_and_zip_make() -> None:
    columns = [[f"t{i}" for i in range(5)], *([i * k for i in range(5)] for k in range(1, 8))]
    made = list(_tables.rows(TensorInfo, columns))
    assert made == list(map(tuple.__new__, repeat(TensorInfo), zip(*columns, strict=True)))
    assert all(type(row) is TensorInfo for row in made) and made[3].name == "t3" and made[3].key == 21
    assert list(_tables.rows(TensorInfo, [[] for _ in range(8)])) == []
    rows = _tables.rows(TensorInfo, columns)
    assert iter(rows) is rows and next(rows) == made[0]
    columns[2].append(0)  # a column grown while the rows are made: refused, as zip(strict=True) refuses it
    with pytest.raises(ValueError, match="column 2 is longer"):
        list(rows)
    with pytest.raises(ValueError, match="column 1 is shorter"):
        list(_tables.rows(TensorInfo, [[1, 2], [1]]))
    for cls, column in ((list, []), (TensorInfo, ())):
        with pytest.raises(TypeError):
            _tables.rows(cls, [column])


def test_int64_columns_make_ints_as_each_row_is_made() -> None:
    """An int field's column may be an int64 array (a listing's sizes and offsets): its rows hold exact ints, equal
    to those of the column as a list."""
    lists = [[f"t{i}" for i in range(5)], *([i * k - 2**40 for i in range(5)] for k in range(1, 8))]
    columns: list[list[object] | np.ndarray] = [*lists]
    columns[3], columns[6] = np.array(lists[3], np.int64), np.arange(10, dtype=np.int64)[::2].copy()
    lists[6] = list(range(0, 10, 2))
    made = list(_tables.rows(TensorInfo, columns))
    assert made == list(map(tuple.__new__, repeat(TensorInfo), zip(*lists, strict=True)))
    assert all(type(row.nbytes) is int and type(row.offset) is int for row in made)
    with pytest.raises(ValueError, match="column 3 is shorter"):
        list(_tables.rows(TensorInfo, [*lists[:3], np.zeros(4, np.int64), *lists[4:]]))
    for bad in (np.zeros(5, np.int32), np.zeros((5, 1), np.int64), np.zeros(10, np.int64)[::2], b"\0" * 40):
        with pytest.raises(TypeError, match=r"list or an int64 array|one-dimensional"):
            _tables.rows(TensorInfo, [*lists[:3], bad, *lists[4:]])
