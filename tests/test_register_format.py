"""A format from outside weightscope: one module's worth of code and one ``register_format`` call.

The toy format below is all a package needs to add a format: a reader subclassing the
public base, and a registry entry. Every command and the library's derived readings
(listing, values, statistics, comparison, conversion, the layer summary, the viewer's
JSON API, dask arrays) then work on it with no other file touched.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import weightscope as ws
from weightscope.analysis import tensor_stats
from weightscope.checkpoint import Extent, FileCheckpoint, Index, TensorInfo
from weightscope.cli import main
from weightscope.errors import CorruptCheckpointError
from weightscope.output import dumps_json
from weightscope.summary import summarize
from weightscope.viewer import make_server
from weightscope.writing import Holds, Tensors, Writer, plan

# -- the toy format: one module's worth ---------------------------------------------------------
#
# b"WSTOY1\n", then one line per tensor, "<name> <numpy dtype> <comma-separated shape>",
# a blank line, then each tensor's bytes in C order, little-endian, in the order listed.

TOY_MAGIC = b"WSTOY1\n"
_TOY_MAX_HEADER = 1 << 16


class ToyCheckpoint(FileCheckpoint):
    format = "toy"

    def _load(self) -> Index:
        head = bytes(self._source.read(0, min(self._source.size, _TOY_MAX_HEADER), "the header"))
        end = head.find(b"\n\n")
        if not head.startswith(TOY_MAGIC) or end < 0:
            raise CorruptCheckpointError(f"{self.path}: no toy header")
        offset, index = end + 2, Index()
        for line in head[len(TOY_MAGIC) : end].decode().splitlines():
            name, dtype_name, shape_text = line.split(" ")
            dtype = np.dtype(dtype_name)
            shape = tuple(int(size) for size in shape_text.split(",") if size)
            nbytes = int(np.prod(shape)) * dtype.itemsize
            index.infos[name] = TensorInfo(name, dtype, shape, nbytes, dtype.name, str(self.path), offset, name)
            offset += nbytes
        return index

    def _extent(self, info: TensorInfo) -> Extent:
        return Extent(info.file, info.offset, info.nbytes, info.dtype.newbyteorder("<"))


TOY = ws.Format(
    "toy",
    "Toy tensors (.toy): a text header of name, dtype and shape, then raw little-endian bytes",
    f"{__name__}:ToyCheckpoint",
    magic=((0, TOY_MAGIC),),
    suffixes=(".toy",),
)


def save_toy(tensors: Tensors | dict[str, np.ndarray], path: str | Path) -> list[Path]:
    source, specs = plan(tensors, Path(path), TOY_WRITER.holds)  # names and the output path checked
    return [write_toy(Path(path), {spec.name: source.array(spec.name) for spec in specs})]


TOY_WRITER = Writer(Holds("toy", "model.toy"), save_toy)


# -- the tests -----------------------------------------------------------------------------------


def write_toy(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    header = b"".join(
        f"{name} {array.dtype.name} {','.join(map(str, array.shape))}\n".encode() for name, array in tensors.items()
    )
    data = b"".join(np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes() for array in tensors.values())
    path.write_bytes(TOY_MAGIC + header + b"\n" + data)
    return path


TENSORS: dict[str, np.ndarray] = {
    "dense/kernel": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    "dense/bias": np.array([0.5, -1.0, 2.0, 0.0], dtype=np.float32),
    "step": np.array(3, dtype=np.int64),
}


@pytest.fixture
def toy(tmp_path: Path) -> Iterator[Path]:
    ws.register_format(TOY)
    try:
        # Named with no suffix: only its magic bytes can tell what it is.
        yield write_toy(tmp_path / "weights", TENSORS)
    finally:
        ws.unregister_format("toy")


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    status = main([str(arg) for arg in args])
    return status, capsys.readouterr().out


def test_the_library_opens_it_by_its_magic(toy: Path) -> None:
    with ws.open(toy) as ckpt:
        assert ckpt.format == "toy" and isinstance(ckpt, ToyCheckpoint)
        assert list(ckpt) == list(TENSORS)
        for name, array in TENSORS.items():
            assert ckpt[name].dtype == array.dtype and np.array_equal(ckpt[name], array)
            assert not ckpt[name].flags.writeable


def test_ls_show_stats_and_summary(toy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = run(capsys, "ls", "--json", toy)
    listed = json.loads(out)
    assert status == 0 and listed["format"] == "toy"
    assert {row["name"]: row["shape"] for row in listed["tensors"]} == {n: list(a.shape) for n, a in TENSORS.items()}

    status, out = run(capsys, "show", "--json", toy, "dense/kernel")
    shown = json.loads(out)
    assert status == 0 and shown["dense/kernel"]["values"] == TENSORS["dense/kernel"].astype(float).tolist()

    status, out = run(capsys, "stats", "--json", toy)
    rows = {row["name"]: row for row in json.loads(out)}
    assert status == 0
    assert rows["dense/bias"]["min"] == -1.0 and rows["dense/bias"]["max"] == 2.0
    assert rows["dense/kernel"]["mean"] == pytest.approx(float(TENSORS["dense/kernel"].mean()))

    status, out = run(capsys, "summary", "--json", toy)
    with ws.open(toy) as ckpt:
        assert status == 0 and json.loads(out) == json.loads(dumps_json(summarize(ckpt).to_json()))
    layers = {layer["name"]: layer for layer in json.loads(out)["layers"]}
    assert layers["dense"]["parameters"] == 16  # its kernel and bias, as one layer


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_convert_reads_it_and_diff_compares_it(
    toy: Path, tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    destination = tmp_path / f"converted{suffix}"
    status, out = run(capsys, "convert", "--json", toy, destination)
    assert status == 0 and json.loads(out)["format"] != "toy"
    with ws.open(destination) as written:
        assert sorted(written) == sorted(TENSORS)
        for name, array in TENSORS.items():
            assert np.array_equal(written[name], array) and written[name].dtype == array.dtype

    status, out = run(capsys, "diff", "--json", toy, destination)
    assert status == 0 and json.loads(out)["equal"] is True

    changed = write_toy(tmp_path / "changed.toy", {**TENSORS, "dense/bias": TENSORS["dense/bias"] + 1})
    status, out = run(capsys, "diff", "--json", toy, changed)
    document = json.loads(out)
    assert status == 1 and document["equal"] is False
    assert [row["name"] for row in document["tensors"] if row["status"] != "equal"] == ["dense/bias"]


def test_the_viewer_api(toy: Path) -> None:
    from test_viewer import api

    with ws.open(toy) as ckpt, make_server([ckpt]) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            names = [row["name"] for row in api(server, "tensors", file=0)["tensors"]]
            assert sorted(names) == sorted(TENSORS)
            assert api(server, "summary", file=0) == json.loads(dumps_json(summarize(ckpt).to_json()))
            answer = api(server, "tensor", file=0, name="dense/kernel")
            stats = tensor_stats("dense/kernel", ckpt["dense/kernel"])
            assert answer["stats"] == json.loads(dumps_json(stats.to_json()))
            assert answer["stats"]["max"] == pytest.approx(float(TENSORS["dense/kernel"].max()))
        finally:
            server.shutdown()
            thread.join(5)


def test_to_dask_reads_its_byte_ranges(toy: Path) -> None:
    from weightscope.lazy import tensor_source

    with ws.open(toy) as ckpt:
        source = tensor_source(ckpt, "dense/kernel")
        assert source.file is not None and source.offset == ckpt.info("dense/kernel").offset  # a range, not the reader
        arrays = ckpt.to_dask(chunk_bytes=16)
        for name, array in TENSORS.items():
            assert np.array_equal(arrays[name].compute(scheduler="synchronous"), array)


def test_unregistered_it_is_refused_again(tmp_path: Path) -> None:
    path = write_toy(tmp_path / "weights", TENSORS)
    ws.register_format(TOY)
    with pytest.raises(ws.UsageError, match="registered already"):
        ws.register_format(TOY)
    assert ws.unregister_format("toy") is TOY
    with pytest.raises(ws.UnsupportedFormatError, match="not a checkpoint format weightscope knows"):
        ws.open(path)


def test_an_entry_point_adds_a_format_on_the_registrys_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    from weightscope.formats import ENTRY_POINT_GROUP, FormatRegistry

    asked: list[str] = []

    def entry_points(group: str) -> list[importlib.metadata.EntryPoint]:
        asked.append(group)
        return [
            importlib.metadata.EntryPoint("toy", f"{__name__}:TOY", group),
            importlib.metadata.EntryPoint("broken", f"{__name__}:write_toy", group),  # no Format: skipped
        ]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    held = dataclasses.replace(TOY, name="held")
    registry = FormatRegistry([held])
    assert registry["held"] is held and next(iter(registry)) == "held"
    assert asked == []  # nothing is read while the registry holds what it is asked for
    with pytest.warns(UserWarning, match="'broken' skipped"):
        assert list(registry) == ["held", "toy"]  # sniffed after the formats held
    assert registry["toy"] is TOY and registry.writable() == [] and asked == [ENTRY_POINT_GROUP]

    late = FormatRegistry([])
    with pytest.warns(UserWarning, match="'broken' skipped"):
        assert late["toy"] is TOY  # a name it lacks reads the entry points
    assert asked == [ENTRY_POINT_GROUP] * 2


def test_with_a_writer_it_is_a_target_of_save_convert_and_the_command_lines_choices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = ws.save(TENSORS, tmp_path / "source.safetensors")
    ws.register_format(dataclasses.replace(TOY, writer=f"{__name__}:TOY_WRITER", writes=(".toy",)))
    try:
        status, out = run(capsys, "convert", "--json", source, tmp_path / "by-name.toy")  # chosen by its ending
        assert status == 0 and json.loads(out)["format"] == "toy"
        status, out = run(capsys, "convert", "--json", "--to", "toy", source, tmp_path / "asked")  # a --to choice
        assert status == 0 and json.loads(out)["format"] == "toy"
        for written in (tmp_path / "by-name.toy", tmp_path / "asked", ws.save(TENSORS, tmp_path / "saved.toy")):
            with ws.open(written) as ckpt:
                assert ckpt.format == "toy" and all(np.array_equal(ckpt[n], a) for n, a in TENSORS.items())
    finally:
        ws.unregister_format("toy")
    assert main(["convert", "--to", "toy", str(source), str(tmp_path / "gone")]) == 2  # no longer a choice


def test_runs_finds_its_files_by_the_registrys_endings(tmp_path: Path) -> None:
    from weightscope.runs import find_checkpoints

    for step in (20, 10):
        write_toy(tmp_path / f"ckpt-{step}.toy", TENSORS)
    ws.register_format(TOY)
    try:
        assert [(entry.path.name, entry.step) for entry in find_checkpoints(tmp_path)] == [
            ("ckpt-10.toy", 10),
            ("ckpt-20.toy", 20),
        ]
    finally:
        ws.unregister_format("toy")
    with pytest.raises(ws.CheckpointNotFoundError):
        find_checkpoints(tmp_path)  # unregistered, .toy is no checkpoint's ending


INDEXED = dataclasses.replace(TOY, name="indexed", index=".idx")


def test_a_conversion_reads_entry_points_only_where_a_plugins_index_could_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``convert --to safetensors`` reads no package metadata (some 30 ms of every such command): the choice and the
    writer are the registry's own, and no file beside the destination starts with its name, so none can be a
    format's index of it. A file that does makes ``prefix_index`` read the entry points, and finds a plugin's."""
    import importlib.metadata

    from weightscope.formats import ENTRY_POINT_GROUP, FORMATS

    asked: list[str] = []

    def entry_points(group: str) -> list[importlib.metadata.EntryPoint]:
        asked.append(group)
        return [importlib.metadata.EntryPoint("indexed", f"{__name__}:INDEXED", group)]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    source = ws.save(TENSORS, tmp_path / "source.safetensors")  # its ending sought among every format's
    monkeypatch.setattr(FORMATS, "_formats", dict(FORMATS._formats))  # as they were, after the test
    monkeypatch.setattr(FORMATS, "_entry_points_read", False)
    asked.clear()
    assert main(["convert", "--to", "safetensors", str(source), str(tmp_path / "out.safetensors")]) == 0
    assert asked == [] and FORMATS.prefix_index(tmp_path / "model") is None
    (tmp_path / "model.idx").write_bytes(b"")
    assert FORMATS.prefix_index(tmp_path / "model") == tmp_path / "model.idx" and asked == [ENTRY_POINT_GROUP]
