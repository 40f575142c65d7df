"""The byte-source protocol: ``ByteSource`` is the only contract between a reader and its bytes.

- No module outside ``sources.py`` and ``remote.py`` tells a local path from a URL, or a mapped
  file from a remote one, by its type: they ask ``sources`` (``local_path``, ``inside``,
  ``opening``, ``plus``, ``open_source``, with ``whole`` too) or the source itself (``local_path``, ``read_head``,
  ``prefetch``).
- ``FileSource`` and ``RemoteSource`` answer the protocol's methods as documented.
- A third source, a toy over bytes in memory defined here, backs the safetensors and npz
  readers when they are handed it, and reads what the real libraries read.
"""

from __future__ import annotations

import ast
import io
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load as safetensors_load
from safetensors.numpy import save as safetensors_save

import weightscope as ws
import weightscope.sources as sources_module
from weightscope.bounds import check_range
from weightscope.formats import FORMATS
from weightscope.sources import FileSource, LoadedFile, as_path, inside, local_path, open_source, opening

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "weightscope"
ALLOWED = {"sources.py", "remote.py"}  # where the kinds of path and source are told apart
KINDS = {"Path", "PurePath", "PosixPath", "WindowsPath", "RemotePath", "FileSource", "RemoteSource", "RemoteStore"}


def type_checks(text: str, filename: str = "<text>") -> list[str]:
    """The ``isinstance``/``issubclass`` calls in ``text`` whose classes include a path or source kind."""
    found = []
    for node in ast.walk(ast.parse(text, filename)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) == 2):
            continue
        if node.func.id not in ("isinstance", "issubclass"):
            continue
        names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
        names |= {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
        if names & KINDS:
            found.append((node.lineno, f"{filename}:{node.lineno}: {ast.unparse(node)}"))
    return [hit for _, hit in sorted(found)]


def test_no_module_outside_sources_and_remote_checks_the_kind_of_a_path_or_source() -> None:
    checked = [path for path in sorted(PACKAGE.rglob("*.py")) if path.name not in ALLOWED or path.parent != PACKAGE]
    assert len(checked) > 50  # the whole package, not an empty glob
    found = [hit for path in checked for hit in type_checks(path.read_text(encoding="utf-8"), str(path))]
    assert not found, "ask weightscope.sources (local_path, inside, opening, ...) instead:\n" + "\n".join(found)


def test_the_scan_finds_the_checks_it_forbids() -> None:
    text = """
if isinstance(path, Path): pass
if not isinstance(ckpt.path, pathlib.Path): pass
ok = isinstance(source, FileSource | RemoteSource)
ok = isinstance(x, (str, RemotePath))
ok = isinstance(x, str) and isinstance(x, os.PathLike)
"""
    assert [hit.split(":")[1] for hit in type_checks(text)] == ["2", "3", "4", "5"]


def test_local_path_and_the_path_questions(tmp_path: Path) -> None:
    import fsspec

    fsspec.filesystem("memory").pipe("/weightscope-sources/a/b.bin", b"0123456789")
    remote = as_path("memory://weightscope-sources/a/b.bin")
    assert local_path(tmp_path) == tmp_path
    assert local_path(remote) is None
    assert inside(tmp_path / "x" / "y", tmp_path) and not inside(tmp_path.parent, tmp_path)
    assert inside(remote, remote.parent) and not inside(remote.parent, remote)
    assert not inside(remote, tmp_path) and not inside(tmp_path, remote.parent)  # never across kinds


def test_file_source_answers_the_protocol(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(100)))
    source = open_source(path)
    assert isinstance(source, FileSource) and source.local_path == path and source.size == 100
    source.prefetch([(0, 10), (50, 10)])  # a hint a mapped file has no use for
    assert bytes(source.read(10, 5, "x")) == bytes(range(10, 15))
    assert bytes(source.read_head(10, 80, 4, "x")) == bytes(range(10, 90))  # a view away: all of it
    with pytest.raises(ws.TruncatedFileError, match=r"f\.bin: EOF reading x at 90"):
        source.read_head(90, 20, 4, "x")
    source.close()


def test_a_loaded_file_answers_the_protocol_read_whole_without_a_map(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``open_source(whole=True)``: a local file read into memory at its first read (one read, no map); a URL's own
    source."""
    import mmap

    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(100)))
    monkeypatch.setattr(mmap, "mmap", None)  # (mapping it would fail)
    source = open_source(path, whole=True)
    assert isinstance(source, LoadedFile) and source.local_path == path and source.size == 100
    assert bytes(source.read(10, 5, "x")) == bytes(range(10, 15))
    assert bytes(source.read_head(10, 80, 4, "x")) == bytes(range(10, 90))
    with pytest.raises(ws.TruncatedFileError, match=r"f\.bin: EOF reading x at 90"):
        source.read_head(90, 20, 4, "x")
    view = source.read(0, 100, "x")
    source.close()
    assert bytes(view) == bytes(range(100))  # views handed out stay valid
    shrunk = open_source(path, whole=True)
    path.write_bytes(bytes(range(60)))  # changed between the stat and the read
    with pytest.raises(ws.TruncatedFileError, match=r"f\.bin: 60 bytes read of its 100: it changed meanwhile"):
        shrunk.read(0, 8, "x")
    import fsspec

    monkeypatch.setattr(sources_module, "LOAD_AT_MOST", 59)  # a larger file (60 bytes now) is mapped
    with pytest.raises(TypeError):
        open_source(path, whole=True).read(0, 8, "x")  # (mmap is None here)
    fsspec.filesystem("memory").pipe("/weightscope-sources/l.bin", b"remote")
    remote = as_path("memory://weightscope-sources/l.bin")
    assert (
        not isinstance(open_source(remote, whole=True), FileSource)
        and bytes(open_source(remote, whole=True).read(0, 6, "x")) == b"remote"
    )


def test_remote_source_answers_the_protocol() -> None:
    import fsspec

    fsspec.filesystem("memory").pipe("/weightscope-sources/r.bin", bytes(range(100)))
    path = as_path("memory://weightscope-sources/r.bin")
    source = open_source(path)
    assert source.local_path is None and source.size == 100 and source.path == path
    assert bytes(source.read_head(10, 80, 4, "x")) == bytes(range(10, 14))  # only the first `limit` bytes
    assert bytes(source.read_head(10, 3, 4, "x")) == bytes(range(10, 13))
    with pytest.raises(ws.TruncatedFileError, match=r"r\.bin: EOF reading x at 90"):
        source.read_head(90, 20, 4, "x")  # checked against the end as a read of them all is
    source.close()


def test_opening_keeps_a_url_s_blocks_for_the_reader_and_lets_them_go_after() -> None:
    import fsspec

    fsspec.filesystem("memory").pipe("/weightscope-sources/o.bin", bytes(range(200)))
    path = as_path("memory://weightscope-sources/o.bin")

    def read_twice() -> None:
        for _ in range(2):
            source = open_source(path)
            source.read(0, 8, "the head")
            source.close()

    before = path.store.requests
    with opening(path):
        read_twice()
    assert path.store.requests - before == 1  # the second source read the first's block
    read_twice()
    assert path.store.requests - before == 3  # unpinned: each source's blocks went with it
    with opening(Path("local")):  # nothing to keep for a local file
        pass


class MemorySource:
    """A third ``ByteSource``: bytes in memory. Nothing but the protocol."""

    def __init__(self, path: MemoryPath, data: bytes) -> None:
        self.path, self._data, self.size = path, data, len(data)
        self.local_path = None
        self.prefetched: list[tuple[int, int]] = []
        self.closed = False

    def read(self, offset: int, length: int, what: str) -> memoryview:
        check_range(self.path, offset, length, self.size, what)
        return memoryview(self._data)[offset : offset + length]

    def read_head(self, offset: int, length: int, limit: int, what: str) -> memoryview:
        return self.read(offset, length, what)

    def prefetch(self, ranges: list[tuple[int, int]]) -> None:
        self.prefetched.extend(ranges)

    def close(self) -> None:
        self.closed = True


class MemoryPath:
    """A name for bytes in memory: the part of a path a reader asks of it once it is handed one."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self._data = name, data
        self.opened: list[MemorySource] = []

    def __str__(self) -> str:
        return f"memory-toy://{self.name}"

    @property
    def stem(self) -> str:
        return self.name.rsplit(".", 1)[0]

    @property
    def suffix(self) -> str:
        return "." + self.name.rsplit(".", 1)[1]

    def open_source(self) -> MemorySource:
        self.opened.append(MemorySource(self, self._data))
        return self.opened[-1]


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "a/w": rng.standard_normal((3, 5)).astype(np.float32),
        "b.bias": np.arange(7, dtype=np.int64),
        "scalar": np.array(2.5, np.float64),
        "empty": np.zeros((0, 4), np.float16),
    }


def _read_over(path: MemoryPath, format: str) -> dict[str, np.ndarray]:
    with FORMATS[format].load()(path) as ckpt:
        assert ckpt.path is path
        arrays = {name: ckpt[name] for name in ckpt}
        assert all(not array.flags.writeable for array in arrays.values())
        assert ckpt.info("b.bias").shape == (7,)
    assert [source.closed for source in path.opened] == [True]
    return arrays


def test_a_toy_source_backs_the_safetensors_reader() -> None:
    data = safetensors_save(_tensors())
    arrays = _read_over(MemoryPath("w.safetensors", data), "safetensors")
    expected = safetensors_load(data)
    assert arrays.keys() == expected.keys()
    for name, array in expected.items():
        assert array.dtype == arrays[name].dtype and np.array_equal(array, arrays[name])


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_a_toy_source_backs_the_npz_reader_and_hears_its_prefetch(save: object) -> None:
    buffer = io.BytesIO()
    save(buffer, **_tensors())  # type: ignore[operator]
    path = MemoryPath("w.npz", buffer.getvalue())
    arrays = _read_over(path, "npz")
    with np.load(io.BytesIO(buffer.getvalue())) as expected:
        assert sorted(arrays) == sorted(expected.files)
        for name in expected.files:
            assert arrays[name].dtype == expected[name].dtype and np.array_equal(arrays[name], expected[name])
    offsets = {offset for offset, _ in path.opened[0].prefetched}  # the zip's and the reader's hints
    assert 0 in offsets and len(offsets) == len(arrays)  # every member's local header, asked at once
