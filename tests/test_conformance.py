"""The conformance suite: one reader contract every format opts into with a maker (tests/conformance_makers.py),
and one writer contract every writable format meets.

Modelled on zarr-python's ``StoreTests`` and numpy's ``test_format.py``: each maker writes
the same matrix of tensors (every dtype the format holds, 0-d, empty, one element, > 1 MiB,
non-contiguous sources, big-endian, names with ``/``, ``.`` and unicode) with the format's
real library, once per session; every test below then runs for every maker. Arrays read
after ``close`` are tests/test_lifetime.py's (every reader, in a child process).

Listing touches no tensor data: on a copy whose every tensor's bytes (the extent its
``info`` gives) are overwritten with garbage, open + list + ``info`` give what they give on
the original, and reading shows the garbage is there (a checksum error or other values).
This is robust to how a reader reads (map, ``read``, h5py's own I/O), which a spy on one
byte source would not be.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import struct
import textwrap
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import crc32c
import h5py
import numpy as np
import pytest
from conformance_makers import MAKERS, Maker, Written, tensors_for
from conftest import killed_while_writing
from test_flax_msgpack import flax_restore
from test_writers import NPZ, PYTORCH, SAFETENSORS, Writer, _assert_all_equal, _tensors

import weightscope as ws
from weightscope.cli import main
from weightscope.formats import keras_writer as keras_format
from weightscope.formats import tensorflow_writer as tensorflow_format
from weightscope.remote import FIRST_READ_AHEAD

# -- the files, made once per session -------------------------------------------------------------
_MADE: dict[str, Written] = {}


@pytest.fixture(scope="session")
def made_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("conformance")


def _made(maker: Maker, root: Path) -> Written:
    if maker.name not in _MADE:
        directory = root / maker.name
        directory.mkdir()
        _MADE[maker.name] = maker.write(directory, tensors_for(maker))
    return _MADE[maker.name]


@pytest.fixture(params=MAKERS, ids=str)
def maker(request: pytest.FixtureRequest) -> Maker:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def written(maker: Maker, made_root: Path) -> Written:
    return _made(maker, made_root)


def native(array: np.ndarray) -> np.ndarray:
    """``array`` in native byte order, C-contiguous, bit for bit (a byte swap, never a cast: NaN payloads kept)."""
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder in "=|" or array.dtype.isnative:
        return array
    return array.byteswap().view(array.dtype.newbyteorder("="))


def assert_bits_equal(ours: np.ndarray, theirs: np.ndarray, name: str) -> None:
    ours, theirs = native(ours), native(theirs)
    assert (ours.dtype, ours.shape) == (theirs.dtype, theirs.shape), name
    assert ours.tobytes() == theirs.tobytes(), name


# -- the reader contract ----------------------------------------------------------------------
def test_the_maker_was_given_the_whole_matrix(maker: Maker, written: Written) -> None:
    tensors = {name: array for _, expected in written for name, array in expected.items()}
    shapes = [array.shape for array in tensors.values()]
    assert any(array.nbytes > 1 << 20 for array in tensors.values())
    assert (1,) in shapes
    assert (() in shapes) == maker.scalars and ((3, 0, 2) in shapes) == maker.empty
    assert any(not array.flags.c_contiguous for array in tensors.values())
    assert {str(array.dtype.newbyteorder("=")) for array in tensors.values()} >= set(maker.dtypes)


def test_every_tensor_reads_bit_for_bit_read_only_as_its_info_says(maker: Maker, written: Written) -> None:
    for path, expected in written:
        with ws.open(path) as ckpt:
            assert ckpt.format == maker.format
            assert sorted(ckpt) == sorted(expected)
            for name, want in expected.items():
                array = ckpt[name]
                info = ckpt.info(name)
                assert (info.dtype, info.shape) == (array.dtype, array.shape), name
                assert info.type_name == native(want).dtype.name, name  # what it is stored as: uint16, not quint16
                assert not array.flags.writeable, name
                assert_bits_equal(array, want, name)
            assert not ckpt.verify()


def _checksum_by_hand(kind: str, data: bytes) -> int:
    if kind == "crc32":
        return zlib.crc32(data)
    if kind == "sha1":
        return int(hashlib.sha1(data).hexdigest(), 16)
    assert kind == "crc32c", kind
    crc = crc32c.crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF  # masked as LevelDB masks


def test_each_extent_agrees_with_info_and_its_bytes_read_by_hand_are_the_array(maker: Maker, written: Written) -> None:
    """``extent(name)`` names ``info(name)``'s file; a plain extent's bytes, read from that file with ``open`` (no
    byte source, no map) and laid out by its dtype and strides, are the array, and match the checksum it carries."""
    plain: set[str] = set()
    for path, expected in written:
        with ws.open(path) as ckpt:
            for name in expected:
                info, extent = ckpt.info(name), ckpt.extent(name)
                if extent is None:
                    continue
                assert extent.file == info.file, name
                if extent.compression or not info.size:
                    continue
                itemsize = extent.dtype.itemsize
                strides = extent.strides
                if strides is None:
                    assert (extent.offset, extent.nbytes) == (info.offset, info.nbytes), name
                else:  # the bytes its values span, from the first to the last
                    span = 1 + sum((length - 1) * step for length, step in zip(info.shape, strides, strict=True))
                    assert extent.nbytes == span * itemsize, name
                with open(extent.file, "rb") as handle:
                    handle.seek(extent.offset)
                    data = handle.read(extent.nbytes)
                    if extent.checksum:
                        start, length = extent.checked or (extent.offset, extent.nbytes)
                        handle.seek(start)
                        assert _checksum_by_hand(extent.checksum, handle.read(length)) == extent.expected, name
                byte_strides = None if strides is None else tuple(step * itemsize for step in strides)
                by_hand = np.ndarray(info.shape, extent.dtype, buffer=data, strides=byte_strides)
                assert_bits_equal(by_hand, ckpt[name], name)
                plain.add(name)
    tensors = {name: array for _, expected in written for name, array in expected.items()}
    largest = max(tensors, key=lambda name: tensors[name].nbytes)
    assert (largest in plain) == maker.chunked_dask  # dask reads the plain extents chunk by chunk, and only those


def _files(path: Path) -> list[Path]:
    """Every file a checkpoint at ``path`` is made of (a TF prefix's index and data, an ONNX model's external data)."""
    return sorted(file for file in path.parent.iterdir() if file.is_file() and file.name != "checkpoint")


def _copy(path: Path, target: Path) -> Path:
    shutil.copytree(path.parent, target)
    return target / path.name


def _infos(ckpt: ws.Checkpoint, root: Path) -> list[Any]:
    return [info._replace(file=os.path.relpath(info.file, root)) for info in ckpt.infos()]


def _garbage(file: Path, expected: dict[str, np.ndarray], rng: np.random.Generator) -> list[tuple[int, bytes]]:
    """Garbage for where the tensors' bytes are in ``file``, found without asking the reader: every place a
    tensor's bytes occur (as given, in native order, or as a protocol-2 pickle holds them: decoded as Latin-1,
    encoded as UTF-8, which its garbage keeps valid and as long), for tensors of 16 bytes or more; in a deflated
    zip member, where they are compressed with the member's header, the second half of its compressed bytes;
    every chunk of a chunked HDF5 dataset."""
    data = file.read_bytes()
    found = []
    for array in expected.values():
        raw = {np.ascontiguousarray(array).tobytes(), native(array).tobytes()}
        for stored in raw | {value.decode("latin-1").encode("utf-8") for value in raw}:
            start = data.find(stored) if len(stored) >= 16 else -1
            while start >= 0:
                found.append((start, stored))
                start = data.find(stored, start + 1)
    garbage = []
    for start, stored in found:
        if stored in {np.ascontiguousarray(array).tobytes() for array in expected.values()} or stored.isascii():
            garbage.append((start, rng.integers(0, 256, len(stored), np.uint8).tobytes()))
        else:  # the UTF-8 of Latin-1 text: its characters shuffled
            text = stored.decode("utf-8")
            garbage.append((start, "".join(text[i] for i in rng.permutation(len(text))).encode("utf-8")))
    if h5py.is_hdf5(file):  # chunked (compressed) datasets: their chunks, where HDF5's chunk index says

        def chunks(_: str, dataset: object) -> None:
            if isinstance(dataset, h5py.Dataset) and dataset.chunks is not None:
                for index in range(dataset.id.get_num_chunks()):
                    chunk = dataset.id.get_chunk_info(index)
                    garbage.append((chunk.byte_offset, rng.integers(0, 256, chunk.size, np.uint8).tobytes()))

        with h5py.File(file, "r") as hdf5:
            hdf5.visititems(chunks)
    if zipfile.is_zipfile(file):
        with zipfile.ZipFile(file) as archive:
            for member in archive.infolist():
                if member.compress_type == zipfile.ZIP_DEFLATED and member.compress_size > 4096:
                    name_length, extra_length = struct.unpack("<HH", data[member.header_offset + 26 :][:4])
                    start = member.header_offset + 30 + name_length + extra_length + member.compress_size // 2
                    garbage.append((start, rng.integers(0, 256, member.compress_size // 2, np.uint8).tobytes()))
    return garbage


def test_listing_touches_no_tensor_data(maker: Maker, written: Written, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    damaged_bytes = 0
    for number, (path, expected) in enumerate(written):
        copy = _copy(path, tmp_path / str(number))
        with ws.open(path) as ckpt:
            infos = _infos(ckpt, path.parent)
        before = damaged_bytes
        for file in _files(path):
            with open(copy.parent / file.name, "r+b") as target:
                for start, garbage in _garbage(file, expected, rng):
                    target.seek(start)
                    damaged_bytes += target.write(garbage)
        if damaged_bytes == before:
            continue  # a .npy of fewer than 16 bytes of data: not told from its header by search
        # A .keras zip's member CRC covers every tensor and is checked at open, before h5py parses the member.
        with ws.open(copy, verify=not maker.eager_checksum) as damaged:
            assert _infos(damaged, copy.parent) == infos
            with contextlib.suppress(ws.CorruptCheckpointError):  # else a checksum found the garbage
                assert any(damaged[name].tobytes() != native(want).tobytes() for name, want in expected.items())
    assert damaged_bytes > 1 << 19  # the large tensor's bytes at least (half of them, compressed)


@pytest.fixture(scope="session")
def http_root(made_root: Path) -> Iterator[str]:
    from test_remote import serving

    with serving(made_root) as root:
        yield root


def test_remote_reads_as_local(maker: Maker, written: Written, made_root: Path, http_root: str) -> None:
    from test_remote import assert_same_as_local

    if not maker.remote:  # h5py reads local files only: refused, with the reason
        with pytest.raises(ws.UnsupportedFormatError, match="local files only"):
            ws.open(f"{http_root}/{written[0][0].relative_to(made_root).as_posix()}")
        return
    for path, _ in written:
        assert_same_as_local(f"{http_root}/{path.relative_to(made_root).as_posix()}", path)


def test_remote_listing_fetches_no_tensor_data(maker: Maker, written: Written, made_root: Path, http_root: str) -> None:
    """Listing over HTTP fetches the index and read-aheads (less than half the large tensor), not the tensors;
    where they lie inside what must be parsed to list (a pickle, a protobuf), the file once and read-aheads (five
    at most), not more."""
    if not maker.remote:
        return  # test_remote_reads_as_local: refused
    path, expected = next((path, expected) for path, expected in written if "large" in expected)
    total = sum(file.stat().st_size for file in _files(path))
    with ws.open(f"{http_root}/{path.relative_to(made_root).as_posix()}") as ckpt:
        list(ckpt.infos())
        fetched = ckpt.path.store.bytes_fetched
    if maker.inline_data:
        assert fetched <= total + 5 * FIRST_READ_AHEAD
    else:
        assert fetched < expected["large"].nbytes // 2


def test_dask_equals_eager_in_one_chunk_and_in_many(maker: Maker, written: Written) -> None:
    largest = max((array.nbytes, name) for _, expected in written for name, array in expected.items())[1]
    for path, expected in written:
        with ws.open(path) as ckpt:
            for name in expected:
                eager = ckpt[name]
                assert_bits_equal(ckpt.to_dask(name).compute(), eager, name)
                chunked = ckpt.to_dask(name, chunk_bytes=4096)  # the large tensor in ~290 chunks, each its own range
                assert_bits_equal(chunked.compute(), eager, name)
                if name == largest:  # plain bytes are read chunk by chunk; others whole, by one task (lazy.py)
                    assert (chunked.npartitions > 1) == maker.chunked_dask


def _slice_keys(shape: tuple[int, ...]) -> list[Any]:
    """Index expressions for a tensor of ``shape``: rows, steps, negative ends, Ellipsis, a single element."""
    if not shape:
        return [(), ...]
    keys: list[Any] = [slice(None), slice(1, None, 2), slice(-3, None), (..., slice(0, 1))]
    if shape[0]:
        keys += [0, -1, (slice(0, 1), ...)]
    return keys


def test_a_slice_equals_the_whole_read_sliced(written: Written) -> None:
    for path, expected in written:
        with ws.open(path) as ckpt:
            for name in expected:
                whole = ckpt[name]
                for key in _slice_keys(whole.shape):
                    part = np.asarray(ckpt.slice(name)[key])
                    assert_bits_equal(part, np.asarray(whole[key]), f"{name}[{key}]")
                    assert not part.flags.writeable or part.ndim == 0, name


def test_arrays_gives_every_tensor_in_order_as_indexing_does(written: Written) -> None:
    """``ckpt.arrays()`` (read ahead on threads where the reader says it may) equals ``ckpt[name]`` name by name, in
    the checkpoint's order; and in the order asked for a list of names."""
    for path, _ in written:
        with ws.open(path) as ckpt:
            names = list(ckpt)
            given = list(ckpt.arrays())
            assert [name for name, _ in given] == names
            for name, array in given:
                assert_bits_equal(array, ckpt[name], name)
                assert not array.flags.writeable, name
            assert [name for name, _ in ckpt.arrays(names[::-1])] == names[::-1]


def test_ls_json_lists_every_tensor_as_info_says(written: Written, capsys: pytest.CaptureFixture[str]) -> None:
    for path, expected in written:
        assert main(["ls", "--all", "--json", str(path)]) == 0
        listed = {tensor["name"]: tensor for tensor in json.loads(capsys.readouterr().out)["tensors"]}
        assert sorted(listed) == sorted(expected)
        with ws.open(path) as ckpt:
            for name, tensor in listed.items():
                assert (tensor["shape"], tensor["nbytes"]) == (list(ckpt.info(name).shape), ckpt.info(name).nbytes)


def test_converts_to_pytorch_bit_for_bit(
    maker: Maker, written: Written, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, expected = written[0]  # PyTorch holds every dtype of every maker
    if maker.graph_constants:  # an IR's integer and 0-d Consts are its graph's shapes and axes: left out
        expected = {name: want for name, want in expected.items() if want.dtype.kind not in "biu" and want.ndim}
    assert main(["convert", str(path), str(tmp_path / "out.pt")]) == 0, capsys.readouterr().err
    with ws.open(tmp_path / "out.pt") as converted:
        assert sorted(converted) == sorted(expected)
        for name, want in expected.items():
            assert_bits_equal(converted[name], want, name)


def _cuts(file: Path, expected: dict[str, np.ndarray]) -> set[int]:
    """Where to cut ``file``: after 1 and 2 bytes (2 bytes of protobuf can be a whole message: an ONNX model's
    ir_version), mid-header (half way to the first tensor data), mid-data (of the largest tensor), 1 byte short;
    the data found as ``_garbage`` finds it, without asking the reader."""
    size = file.stat().st_size
    found = _garbage(file, expected, np.random.default_rng(0))
    header = min((start for start, _ in found), default=size)
    cuts = {1, 2, max(header // 2, 1), size - 1}
    if found:
        start, garbage = max(found, key=lambda item: len(item[1]))
        cuts.add(start + len(garbage) // 2)
    return {cut for cut in cuts if 0 < cut < size}


def test_a_truncated_copy_is_refused_as_truncated_or_corrupt(maker: Maker, written: Written, tmp_path: Path) -> None:
    for number, (path, expected) in enumerate(written):
        for file in _files(path):
            for cut in sorted(_cuts(file, expected)):
                copy = _copy(path, tmp_path / f"{number}-{file.name}-{cut}")
                os.truncate(copy.parent / file.name, cut)
                try:
                    with ws.open(copy, format=maker.format) as ckpt:
                        values = {name: ckpt[name] for name in ckpt}
                except ws.CorruptCheckpointError as error:  # TruncatedFileError and ChecksumMismatchError are ones
                    assert str(copy.parent) in str(error) and "\n" not in str(error), (file.name, cut)  # names the file
                    continue
                except Exception as error:  # the contract: nothing else
                    pytest.fail(f"{file.name} cut at {cut} of {file.stat().st_size}: {type(error).__name__}: {error}")
                assert sorted(values) == sorted(expected), (file.name, cut)  # still whole: then every value right
                for name, want in expected.items():
                    assert_bits_equal(values[name], want, f"{file.name} cut at {cut}: {name}")


# -- the writer contract ------------------------------------------------------------------------
def _load_tensorflow(path: Path) -> dict[str, np.ndarray]:
    from tf_fixtures import tf_reader_values

    return tf_reader_values(path)


KERAS_VARIABLES = {"dense": ("kernel", "bias"), "embedding": ("embeddings",)}  # Keras's order of a layer's variables


def _load_keras(path: Path) -> dict[str, np.ndarray]:
    """What Keras 3's ``load_weights`` reads, by h5py: ``layers/<layer>/vars/<index>``, the index in Keras's order."""
    with h5py.File(path, "r") as file:
        return {
            f"{layer}/{KERAS_VARIABLES[layer][int(index)]}": variables[index][()]
            for layer, group in file["layers"].items()
            for variables in [group["vars"]]
            for index in variables
        }


TENSORFLOW = Writer(
    "tensorflow",
    ".ckpt",
    tensorflow_format.save,
    (*NPZ.dtypes, "bfloat16", "float8_e5m2", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2fnuz"),
    (_load_tensorflow,),
    keeps_order=False,
)
KERAS = Writer("keras", ".weights.h5", keras_format.save, (), (_load_keras,), keeps_order=False)
FLAX = Writer(
    "flax-msgpack",
    ".msgpack",
    functools.partial(ws.save, format="flax-msgpack"),
    (*NPZ.dtypes, "bfloat16"),
    (flax_restore,),
    keeps_order=True,
)
EVERY_WRITER = [SAFETENSORS, NPZ, PYTORCH, TENSORFLOW, KERAS, FLAX]


def _writer_tensors(writer: Writer) -> dict[str, np.ndarray]:
    """test_writers' matrix for the writer's dtypes; for Keras, whose names are ``<layer>/<variable>`` of layers it
    knows, a Dense and an Embedding layer, from a transposed, a big-endian and a float16 source."""
    if writer is not KERAS:
        return _tensors(writer)
    kernel = np.arange(12, dtype=np.float32).reshape(3, 4).T
    return {
        "dense/kernel": kernel,
        "dense/bias": np.array([0.5, -1.0, np.nan], dtype=">f4"),
        "embedding/embeddings": np.linspace(-1, 1, 10, dtype=np.float16).reshape(5, 2),
    }


# The files a writer makes, where not the one at the path given (a TensorFlow prefix names none).
MADE = {"tensorflow": ["model.ckpt.data-00000-of-00001", "model.ckpt.index", "checkpoint"]}  # in commit order


def _files_at(directory: Path) -> dict[str, bytes]:
    return {entry.name: entry.read_bytes() for entry in directory.iterdir() if not entry.name.startswith(".")}


@pytest.mark.parametrize("writer", EVERY_WRITER, ids=str)
def test_the_library_and_weightscope_read_back_every_tensor(writer: Writer, tmp_path: Path) -> None:
    tensors = _writer_tensors(writer)
    path = writer.save(tensors, tmp_path / f"model{writer.suffix}")
    assert path == tmp_path / f"model{writer.suffix}"
    with ws.open(path) as ckpt:
        assert sorted(_files_at(tmp_path)) == sorted(MADE.get(writer.format, [path.name]))
        assert ckpt.format == writer.format
        _assert_all_equal(tensors, {name: ckpt[name] for name in ckpt}, ordered=False)
        assert not ckpt.verify()
    for read in writer.readers:
        _assert_all_equal(tensors, read(path), ordered=writer.keeps_order)


@pytest.mark.parametrize("writer", EVERY_WRITER, ids=str)
def test_the_writer_declares_what_it_holds_and_returns_its_files_in_commit_order(
    writer: Writer, tmp_path: Path
) -> None:
    from weightscope.formats import load_writer

    registered = load_writer(writer.format)
    held = registered.holds.dtypes
    assert held is not None or writer is NPZ  # .npz's types are checked as each member's header is laid out
    assert held is None or set(writer.dtypes) <= held  # every type the matrix writes is declared
    if writer in (SAFETENSORS, PYTORCH):
        # and the matrix is every type it holds, but safetensors' packed sub-byte types, which its torch loader (0.8)
        # does not read: test_quant holds them to safetensors.torch.save's bytes
        assert held - {"float4_e2m1fn", "float6_e2m3fn", "float6_e3m2fn"} == set(writer.dtypes)
    written = registered.write(_writer_tensors(writer), tmp_path / f"model{writer.suffix}")
    assert [path.parent for path in written] == [tmp_path] * len(written)
    assert [path.name for path in written] == MADE.get(writer.format, [f"model{writer.suffix}"])  # the index last
    with pytest.raises(ws.UsageError, match=f"is a directory; give .* such as {tmp_path / registered.holds.example}"):
        registered.write(_writer_tensors(writer), tmp_path)  # the one output-path check, in the shared plan


SLOW_SAVE = """
import sys, time
import numpy as np
import weightscope as ws
from weightscope.cli import main
from weightscope.remote import FIRST_READ_AHEAD

class Slow:  # a Tensors whose second array takes a minute to come
    def names(self):
        return ["dense/kernel", "dense/bias"]

    def spec(self, name):
        return np.dtype(np.float32), ((1024, 256) if name == "dense/kernel" else (256,))

    def array(self, name):
        if name == "dense/bias":  # the kernel is written by now
            print("writing", flush=True)
            time.sleep(60)
        return np.ones(self.spec(name)[1], np.float32)

ws.save(Slow(), sys.argv[1], format=sys.argv[2])
"""


@pytest.mark.parametrize("writer", EVERY_WRITER, ids=str)
def test_killed_save_leaves_the_earlier_files_intact(writer: Writer, tmp_path: Path) -> None:
    path = tmp_path / f"model{writer.suffix}"
    first = {"dense/kernel": np.arange(6, dtype=np.float32).reshape(3, 2)}
    writer.save(first, path)
    before = _files_at(tmp_path)
    environment = {**os.environ, "PYTHONPATH": str(Path(ws.__file__).parents[1])}
    with killed_while_writing(textwrap.dedent(SLOW_SAVE), str(path), writer.format, env=environment):
        pass
    assert _files_at(tmp_path) == before  # no file added, changed or removed: temporaries are dot-files
    with ws.open(path) as ckpt:
        assert_bits_equal(ckpt["dense/kernel"], first["dense/kernel"], "dense/kernel")
        assert not ckpt.verify()
