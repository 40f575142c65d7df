"""Small files that used to cost gigabytes, minutes, or forever: each now reads within the rule.

Every file here is built by hand (or with h5py) inside the test, and read in a child
process held to 64 MiB + 8 x its size of address space above the interpreter's own, and
1 s of CPU per MiB + 1 s (``tests/bounded.py``): it must end with its typed error, or
with its correct contents where the file is legitimate, never with a ``MemoryError``, a
crash, or a hang.
"""

from __future__ import annotations

import os
import re
import struct
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from bounded import MiB, run_bounded

import weightscope as ws
from weightscope._crc32c import crc32c
from weightscope.containers.table import FOOTER_SIZE, MAGIC_BYTES, encode_varint, mask_crc


@pytest.fixture(scope="module")
def start_seconds() -> float:
    """The harness alone (interpreter, imports, no file): its wall time is what a child's start costs."""
    started = time.monotonic()
    empty = run_bounded(None, start_seconds=60)
    assert empty.outcome == "ok", empty.outcome
    assert empty.baseline > 64 * MiB  # numpy, h5py and protobuf are in it: the rule's 64 MiB comes on top
    return time.monotonic() - started


# -- TensorFlow: keys that grow by a byte each ------------------------------------------------


def _block(entries: list[tuple[int, bytes, bytes]], interval: int) -> bytes:
    """A block of (bytes shared with the key before, the rest of the key, the value) entries,
    with a restart point every ``interval`` entries."""
    out = bytearray()
    restarts: list[int] = []
    for number, (shared, rest, value) in enumerate(entries):
        if number % interval == 0:
            restarts.append(len(out))
        out += encode_varint(shared) + encode_varint(len(rest)) + encode_varint(len(value)) + rest + value
    return bytes(out) + b"".join(struct.pack("<I", at) for at in restarts) + struct.pack("<I", len(restarts))


def _tf_checkpoint(prefix: Path, keys: list[tuple[int, bytes]], interval: int) -> Path:
    """An index of one data block: the header (1 shard), then ``keys`` (shared, rest) with empty
    values; and an empty data file."""
    out = bytearray()

    def write(contents: bytes) -> bytes:
        handle = encode_varint(len(out)) + encode_varint(len(contents))
        out.extend(contents + b"\0" + struct.pack("<I", mask_crc(crc32c(b"\0", crc32c(contents)))))
        return handle

    data = write(_block([(0, b"", b"\x08\x01"), *((shared, rest, b"") for shared, rest in keys)], interval))
    metaindex = write(struct.pack("<II", 0, 1))
    index = write(_block([(0, b"\xff", data)], 1))
    out.extend((metaindex + index).ljust(FOOTER_SIZE - 8, b"\0") + MAGIC_BYTES)
    Path(f"{prefix}.index").write_bytes(bytes(out))
    Path(f"{prefix}.data-00000-of-00001").write_bytes(b"")
    return prefix


def tf_growing_keys(folder: Path) -> Path:
    """``a``, ``aa``, ``aaa``... 120,000 keys in one restart interval: 480 KB of index, 7 GB of keys."""
    return _tf_checkpoint(folder / "grow.ckpt", [(length, b"a") for length in range(120_000)], 1 << 30)


def tf_growing_keys_in_short_intervals(folder: Path) -> Path:
    """Keys growing 8 bytes each through intervals of 128 entries, which the vectorised parse takes:
    ``000000aaaaaaaa``, then 8 more ``a``... then ``000001aaaaaaaa``...; 256,000 keys, 3 MB of
    index, 140 MB of keys as Python strings."""
    keys: list[tuple[int, bytes]] = []
    previous = b""
    for stem in range(2_000):
        for step in range(128):
            key = b"%06d" % stem + b"a" * (8 * step + 8)
            if (len(keys) + 1) % 128 == 0:  # a restart point (entry 0 is the header): the whole key
                shared = 0
            elif step:
                shared = len(previous)
            else:  # a new stem: what it shares with the last key, as LevelDB's writer shares it
                shared = next((i for i, (old, new) in enumerate(zip(previous, key, strict=False)) if old != new), 0)
            keys.append((shared, key[shared:]))
            previous = key
    return _tf_checkpoint(folder / "steps.ckpt", keys, 128)


@pytest.mark.parametrize("make", [tf_growing_keys, tf_growing_keys_in_short_intervals])
def test_tensorflow_keys_growing_a_byte_each_are_refused_at_the_cap(
    tmp_path: Path, start_seconds: float, make: Callable[[Path], Path]
) -> None:
    prefix = make(tmp_path)
    with pytest.raises(ws.LimitExceededError, match="WEIGHTSCOPE_MAX_MEMORY"):
        ws.open(prefix)
    run_bounded(prefix, start_seconds=start_seconds).assert_within("LimitExceededError")


# -- GGUF and safetensors: many small things ---------------------------------------------------


def _gguf(metadata: bytes, count: int, infos: bytes = b"", tensors: int = 0, data: bytes = b"") -> bytes:
    body = b"GGUF" + struct.pack("<IQQ", 3, tensors, count) + metadata + infos
    return body + b"\0" * (-len(body) % 32) + data


def _gguf_string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def test_gguf_array_of_a_million_empty_strings_is_summarised_within_the_rule(
    tmp_path: Path, start_seconds: float
) -> None:
    path = tmp_path / "strings.gguf"
    array = struct.pack("<IIQ", 9, 8, 1_000_000) + b"\0" * 8 * 1_000_000  # type array, of strings, count
    path.write_bytes(_gguf(_gguf_string(b"tokenizer.ggml.tokens") + array, 1))
    with ws.open(path) as ckpt:
        assert ckpt.metadata["tokenizer.ggml.tokens"] == "[1000000 strings]"
    run_bounded(path, start_seconds=start_seconds).assert_within("ok")


def _gguf_tensor(name: bytes, offset: int) -> bytes:
    return _gguf_string(name) + struct.pack("<IQIQ", 1, 1, 0, offset)  # 1 dim of 1, F32


def test_gguf_tensor_named_twice_after_30000_others_is_refused_at_once(tmp_path: Path, start_seconds: float) -> None:
    path = tmp_path / "twice.gguf"
    names = [b"t%d" % i for i in range(30_000)] + [b"t29999"]
    infos = b"".join(_gguf_tensor(name, 32 * i) for i, name in enumerate(names))
    path.write_bytes(_gguf(b"", 0, infos, len(names), b"\0" * 32 * len(names)))
    with pytest.raises(ws.CorruptCheckpointError, match="'t29999' is given twice"):
        ws.open(path)
    run_bounded(path, start_seconds=start_seconds).assert_within("CorruptCheckpointError")


def _safetensors(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


def test_safetensors_name_given_twice_at_the_end_of_a_long_header_is_refused_at_once(
    tmp_path: Path, start_seconds: float
) -> None:
    # 930 KB: counting each name's occurrences took 125 s.
    path = tmp_path / "twice.safetensors"
    entry = '"t{}":{{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}'
    names = [*range(20_000), 19_999]
    path.write_bytes(_safetensors(("{" + ",".join(entry.format(i) for i in names) + "}").encode()))
    assert path.stat().st_size > 900_000
    with pytest.raises(ws.CorruptCheckpointError, match="names 't19999' twice"):
        ws.open(path)
    run_bounded(path, start_seconds=start_seconds).assert_within("CorruptCheckpointError")


def test_safetensors_header_of_tiny_json_objects_is_refused_before_parsing(
    tmp_path: Path, start_seconds: float
) -> None:
    # 4 MB of [{}] make 130 MB of Python objects: more than 64 MiB + 8 x 4 MB.
    path = tmp_path / "objects.safetensors"
    path.write_bytes(_safetensors(b'{"__metadata__":{"a":[' + b",".join([b"[{}]"] * 800_000) + b"]}}"))
    with pytest.raises(ws.LimitExceededError, match="parsing the JSON header"):
        ws.open(path)
    run_bounded(path, start_seconds=start_seconds).assert_within("LimitExceededError")


# -- Keras / HDF5 -----------------------------------------------------------------------------


def _keras3_weights(path: Path) -> Path:
    """A Keras 3 ``.weights.h5`` of one layer (dense: kernel, bias)."""
    with h5py.File(path, "w") as file:
        variables = file.create_group("layers/dense/vars")
        variables.create_dataset("0", data=np.arange(6, dtype=np.float32).reshape(2, 3))
        variables.create_dataset("1", data=np.zeros(3, np.float32))
    return path


def _strings_naming_one(path: Path, many: np.ndarray, count: int) -> None:
    """Add the attribute ``many`` (``count`` strings of 7 bytes), then point each of its strings at
    one stored string of 300 KB."""
    with h5py.File(path, "a") as file:
        file.attrs["big"] = "x" * 300_000
        file.attrs["many"] = many
    raw = bytearray(path.read_bytes())
    big = raw.index(struct.pack("<I", 300_000))  # its record: length, heap collection, index
    records = re.search(rb"(?:\x07\x00\x00\x00.{12}){%d}" % count, raw, re.DOTALL)
    assert records is not None
    raw[records.start() : records.end()] = raw[big : big + 16] * count
    path.write_bytes(bytes(raw))


def test_hdf5_attribute_of_thousands_of_strings_naming_one_stored_string_is_refused(
    tmp_path: Path, start_seconds: float
) -> None:
    # 3,000 variable-length strings, each pointing at the same 300 KB string in the global
    # heap: 430 KB of file made h5py build 900 MB on opening (1.7 GB resident).
    path = _keras3_weights(tmp_path / "strings.weights.h5")
    _strings_naming_one(path, np.array(["zzzzzzz"] * 3_000, dtype=h5py.string_dtype()), 3_000)
    with pytest.raises(ws.LimitExceededError, match="attribute 'many'"):
        ws.open(path)
    run_bounded(path, start_seconds=start_seconds).assert_within("LimitExceededError")


def test_hdf5_one_compound_value_of_400_strings_naming_one_stored_string_is_refused(
    tmp_path: Path, start_seconds: float
) -> None:
    # One element, but 400 variable-length fields in it: 120 MB.
    path = _keras3_weights(tmp_path / "compound.weights.h5")
    fields = np.dtype([(f"f{i}", h5py.string_dtype()) for i in range(400)])
    _strings_naming_one(path, np.array(tuple(["zzzzzzz"] * 400), dtype=fields), 400)
    with pytest.raises(ws.LimitExceededError, match="attribute 'many'"):
        ws.open(path)
    run_bounded(path, start_seconds=start_seconds).assert_within("LimitExceededError")


def test_hdf5_dataset_of_10_values_in_one_512_mib_chunk_is_refused(tmp_path: Path, start_seconds: float) -> None:
    # The dataset's own inflation bound saw 40 bytes; reading inflates the whole chunk.
    path = _keras3_weights(tmp_path / "chunk.weights.h5")
    squeeze = zlib.compressobj(9)
    zeros = bytes(MiB)
    chunk = b"".join(squeeze.compress(zeros) for _ in range(512)) + squeeze.flush()
    with h5py.File(path, "a") as file:
        dataset = file["layers/dense/vars"].create_dataset(
            "2", shape=(10,), maxshape=(None,), dtype="f4", chunks=(128 * MiB,), compression="gzip"
        )
        dataset.id.write_direct_chunk((0,), chunk)
    assert path.stat().st_size < MiB
    with pytest.raises(ws.LimitExceededError, match="a chunk of tensor"):
        ws.open(path)
    run_bounded(path, start_seconds=start_seconds).assert_within("LimitExceededError")


def test_hdf5_small_chunks_gzipped_still_read(tmp_path: Path) -> None:
    path = _keras3_weights(tmp_path / "fine.weights.h5")
    values = np.arange(100_000, dtype=np.float32) % 7
    with h5py.File(path, "a") as file:
        file["layers/dense/vars"].create_dataset("2", data=values, chunks=(4096,), compression="gzip")
    with ws.open(path) as ckpt:
        assert np.array_equal(ckpt["dense/vars/2"], values)
    assert run_bounded(path).outcome == "ok"


def test_keras_zip_whose_config_inflates_to_hundreds_of_mb_is_refused(tmp_path: Path, start_seconds: float) -> None:
    path = tmp_path / "config.keras"
    weights = _keras3_weights(tmp_path / "model.weights.h5").read_bytes()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("metadata.json", "{}")
        with archive.open("config.json", "w") as config:
            config.write(b'{"class_name": "Sequential", "config": {}, "padding": "')
            for _ in range(300):
                config.write(b" " * MiB)
            config.write(b'"}')
        archive.writestr("model.weights.h5", weights)
    assert path.stat().st_size < MiB
    with pytest.raises(ws.LimitExceededError, match=r"inflating member 'config\.json'"):
        ws.open(path)
    run_bounded(path, start_seconds=start_seconds).assert_within("LimitExceededError")


# -- hangs: files that are not regular files -------------------------------------------------------


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    """A FIFO no one writes to: opening it for reading blocks forever."""
    path = tmp_path / "never.h5"
    os.mkfifo(path)
    return path


def test_a_fifo_given_as_the_checkpoint_is_refused_without_blocking(fifo: Path, start_seconds: float) -> None:
    with pytest.raises(ws.UnsupportedFormatError, match="a FIFO, not a regular file"):
        ws.open(fifo, format="keras")
    run_bounded(fifo, 0, start_seconds=start_seconds).assert_within("UnsupportedFormatError")


def test_hdf5_external_link_to_a_fifo_is_refused_without_following_it(
    tmp_path: Path, fifo: Path, start_seconds: float
) -> None:
    path = _keras3_weights(tmp_path / "linked.weights.h5")
    with h5py.File(path, "a") as file:
        file["layers/dense/vars/2"] = h5py.ExternalLink(str(fifo), "/x")
    with pytest.raises(ws.UnsupportedFormatError, match=f"a link out of the file to '{fifo}'"):
        ws.open(path)
    run_bounded(path, start_seconds=start_seconds).assert_within("UnsupportedFormatError")


def test_hdf5_dataset_stored_in_a_fifo_or_made_of_one_is_refused_without_reading_it(
    tmp_path: Path, fifo: Path, start_seconds: float
) -> None:
    external = _keras3_weights(tmp_path / "external.weights.h5")
    with h5py.File(external, "a") as file:
        file["layers/dense/vars"].create_dataset("2", shape=(4,), dtype="f4", external=[(str(fifo), 0, 16)])
    virtual = _keras3_weights(tmp_path / "virtual.weights.h5")
    layout = h5py.VirtualLayout(shape=(4,), dtype="f4")
    layout[:] = h5py.VirtualSource(str(fifo), "x", shape=(4,))
    with h5py.File(virtual, "a") as file:
        file["layers/dense/vars"].create_virtual_dataset("2", layout)
    for path in (external, virtual):
        with pytest.raises(ws.UnsupportedFormatError, match="keeps its data in another file"):
            ws.open(path)
        run_bounded(path, start_seconds=start_seconds).assert_within("UnsupportedFormatError")


def test_hdf5_groups_nested_800_deep_are_refused_at_once(tmp_path: Path, start_seconds: float) -> None:
    # Every lookup walks the path from the root: 1.9 MB of nested layers took 10 s to list.
    path = tmp_path / "deep.weights.h5"
    with h5py.File(path, "w") as file:
        group = file.create_group("layers")
        for _ in range(800):
            group = group.create_group("l")
            group.create_group("vars").create_dataset("0", data=np.zeros(1, np.float32))
    with pytest.raises(ws.UnsupportedFormatError, match="nested over 64 groups deep"):
        ws.open(path)
    run_bounded(path, start_seconds=start_seconds).assert_within("UnsupportedFormatError")


def test_hdf5_groups_nested_as_keras_nests_models_still_read(tmp_path: Path) -> None:
    path = tmp_path / "nested.weights.h5"
    with h5py.File(path, "w") as file:
        group = file
        for depth in range(10):  # ten models, each inside the one before
            group = group.create_group(f"layers/functional_{depth}")
            group.create_group("vars").attrs["name"] = f"model{depth}"
        group.create_group("layers/dense/vars").create_dataset("0", data=np.ones(2, np.float32))
    with ws.open(path) as ckpt:
        # a Dense layer's one variable is its kernel (Keras 3 names it from the layer's class)
        assert list(ckpt) == ["/".join(f"model{depth}" for depth in range(10)) + "/dense/kernel"]


# -- ONNX: a message per two bytes ---------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [b"\x42\x00", b"\x72\x00", b"graph"],
    ids=["empty opset imports", "empty metadata entries", "empty initializers"],
)
def test_onnx_of_500000_empty_messages_is_refused_before_parsing(
    tmp_path: Path, start_seconds: float, field: bytes
) -> None:
    # Parsing made 28-74 MB of messages of these 1 MB files: 100 MB would make 7 GB.
    if field == b"graph":
        initializers = b"\x2a\x00" * 500_000
        field = b"\x3a" + encode_varint(len(initializers)) + initializers
        count = 1
    else:
        count = 500_000
    path = tmp_path / "messages.onnx"
    path.write_bytes(b"\x08\x07" + field * count)  # ir_version 7, then the messages
    with pytest.raises(ws.LimitExceededError, match="parsing the model's protocol buffer"):
        ws.open(path)
    run_bounded(path, start_seconds=start_seconds).assert_within("LimitExceededError")


def test_keras_zip_whose_config_is_megabytes_of_tiny_json_objects_is_refused_before_parsing(tmp_path: Path) -> None:
    # 3 MB of [{}] inflate within the cap but would parse to 100 MB of Python objects.
    path = tmp_path / "objects.keras"
    weights = _keras3_weights(tmp_path / "model.weights.h5").read_bytes()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", b'{"a": [' + b",".join([b"[{}]"] * 600_000) + b"]}")
        archive.writestr("model.weights.h5", weights)
    with pytest.raises(ws.LimitExceededError, match=r"parsing config\.json"):
        ws.open(path)


def test_hdf5_chunk_inflating_past_the_expansion_cap_is_refused_and_the_cap_can_be_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _keras3_weights(tmp_path / "zeros.weights.h5")
    with h5py.File(path, "a") as file:  # 10 values in a chunk of 4 MiB of zeros, about 4 KB stored
        file["layers/dense/vars"].create_dataset(
            "2", data=np.zeros(10, np.float32), maxshape=(None,), chunks=(MiB,), compression=9
        )
    monkeypatch.setenv("WEIGHTSCOPE_MAX_EXPANSION", "100")
    with pytest.raises(ws.LimitExceededError, match=r"the chunk at \(0,\) of tensor .* over 100x"):
        ws.open(path)
    monkeypatch.setenv("WEIGHTSCOPE_MAX_EXPANSION", "2000")
    with ws.open(path) as ckpt:
        assert not ckpt["dense/vars/2"].any()


def test_a_fifo_swapped_in_after_the_check_is_refused_on_its_descriptor(
    fifo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race: the path was a regular file when checked, a FIFO when opened. Opened
    # non-blocking, the FIFO answers at once, and fstat on the descriptor refuses it.
    from weightscope import sources

    regular = os.stat(__file__)
    monkeypatch.setattr(sources.os, "stat", lambda path: regular)
    started = time.monotonic()
    with pytest.raises(ws.UnsupportedFormatError, match="a FIFO, not a regular file"):
        sources.open_regular(fifo)
    assert time.monotonic() - started < 5
