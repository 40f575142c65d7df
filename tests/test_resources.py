"""The resource rule (README, security model) on every reader: memory <= 64 MiB + 8 x the file's size, time <= 1 s
per MiB + 1 s, for ``ls``, ``scan``, ``verify``, ``stats --all`` and ``summary`` on every corpus file and on crafted
amplification inputs; each ends with a result or a typed error's exit status, never a traceback, a signal or a hang.

Each command runs in its own fork of one runner process (tests/resource_runner.py) that imported weightscope and
numpy once: ``RLIMIT_AS`` is the runner's measured address space plus the rule's memory, a CPU-time alarm the rule's
time, and the wall clock the rule's time plus what starting the interpreter takes on this machine right now (measured
here). Two runners share the inputs, one per core.
"""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from corpus.flatbuffer_vectors import finished_tflite_model, offset_vector
from corpus.make_executorch_corpus import shared_plans
from corpus.make_pytorch_corpus import (
    deflating_zip,
    gguf_file,
    gguf_string,
    integer,
    ordered_dict,
    pickle2,
    tensor,
    text,
    torch_zip,
)
from corpus.make_tensorflow_corpus import _valid_checkpoint
from corpus.make_torchscript_corpus import CODE_FILE
from corpus.make_torchscript_corpus import members as torchscript_members

from weightscope import _proto, errors
from weightscope._crc32c import crc32c
from weightscope.containers.table import FOOTER_SIZE, MAGIC_BYTES, NO_COMPRESSION, encode_varint, mask_crc
from weightscope.errors import ExitStatus, WeightscopeError

TESTS = Path(__file__).resolve().parent
CORPUS = TESTS / "corpus"
RUNNER = TESTS / "resource_runner.py"
SOURCE = TESTS.parent / "src"
COMMANDS = (["ls"], ["scan"], ["verify"], ["stats", "--all"], ["summary"])
# Results, or a typed error (weightscope.errors): not ERROR (7), which is an OSError main() caught (ENOMEM included).
TYPED = {int(status) for status in ExitStatus if status not in (ExitStatus.USAGE, ExitStatus.ERROR)}
RUNNERS = 2


# -- crafted inputs: small files that claim much, one per way found to amplify -----------------------------------


def _pickle_referencing_one_string(times: int, size: int) -> bytes:
    """Metadata values that are all one list of one ``size``-byte string, through the memo: shown, each is a copy."""
    body = b"}" + b"(" + text("first") + b"]" + text("x" * size) + b"a\x94"  # memo 0: the list
    body += b"".join(text(f"k{index}") + b"h\x00" for index in range(times)) + b"u"
    return torch_zip(pickle2(body))


def _pickle_naming_tensors_exponentially(depth: int, padding: int) -> bytes:
    """A list of lists, each holding the one before twice through the memo, down to one tensor: 2^depth distinct
    tensor names (``tree.17.0.1...``) from a few bytes and ``padding`` more (the walk's budget grows with the file)."""
    levels = b"".join(b"](" + (b"h" + bytes([index])) * 2 + b"e\x94" for index in range(depth))
    tree = b"](" + tensor("0", 4, (2, 2), (2, 1)) + b"\x94" + levels + b"e"
    return torch_zip(pickle2(b"}(" + text("pad") + text("p" * padding) + text("tree") + tree + b"u"))


def _pickle_of_memoize_opcodes(count: int) -> bytes:
    return torch_zip(pickle2(b"N" + b"\x94" * count))


def _pickle_of_empty_dicts(count: int) -> bytes:
    return torch_zip(pickle2(b"(" + b"}" * count + b"t"))


def _pickle_of_colliding_int_keys(count: int) -> bytes:
    """A dict whose integer keys all hash to 0 (multiples of 2^61 - 1): inserting them is quadratic."""
    modulus = (1 << 61) - 1
    pairs = b"".join(integer(modulus * index) + b"N" for index in range(1, count + 1))
    return torch_zip(pickle2(b"}(" + pairs + b"u"))


def _safetensors_of_many_tensors(count: int, *, last_name_twice: bool = False) -> bytes:
    """``count`` one-value tensors (the last two named alike, if asked): finding the name twice is not quadratic."""
    names = [f"t{index:07d}" for index in range(count)]
    if last_name_twice:
        names[-1] = names[-2]
    entries = (
        json.dumps(name) + ":" + json.dumps({"dtype": "F32", "shape": [1], "data_offsets": [4 * index, 4 * index + 4]})
        for index, name in enumerate(names)
    )
    encoded = ("{" + ",".join(entries) + "}").encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + bytes(4 * count)


def _gguf_of_empty_strings(count: int) -> bytes:
    """One metadata array of ``count`` empty strings (type 9: array, of type 8: string)."""
    metadata = gguf_string(b"strings") + struct.pack("<IIQ", 9, 8, count) + gguf_string(b"") * count
    return gguf_file([], b"", metadata=metadata, count=1)


def _gguf_of_many_tensors(count: int, *, last_name_twice: bool = False) -> bytes:
    """``count`` one-float tensors (the last two named alike, if asked): the duplicate check is not quadratic."""
    names = [f"t{index:07d}".encode() for index in range(count)]
    if last_name_twice:
        names[-1] = names[-2]
    tensors = [(name, [1], 0, 32 * index) for index, name in enumerate(names)]
    return gguf_file(tensors, bytes(32 * count))


def _keras_with_inflating_config(size: int) -> bytes:
    """A ``.keras`` zip whose honest, deflated ``config.json`` inflates to ``size`` bytes (about 1000x)."""
    h5py = pytest.importorskip("h5py")
    weights = io.BytesIO()
    with h5py.File(weights, "w"):
        pass
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", b'{"keras_version": "3.0.0"}')
        with archive.open("config.json", "w") as config:
            config.write(b'{"class_name": "Sequential", "config": {"name": "')
            for _ in range(size >> 20):
                config.write(b"x" * (1 << 20))
            config.write(b'"}}')
        archive.writestr("model.weights.h5", weights.getvalue())
    return buffer.getvalue()


def _hdf5_of_one_large_chunk(elements: int) -> bytes:
    """Keras 3 weights: a dataset of 10 values in one deflated chunk of ``elements`` floats (128 MiB: 130 KB)."""
    h5py = pytest.importorskip("h5py")
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        variables = file.create_group("layers/dense/vars")
        chunked = dict(maxshape=(None,), chunks=(elements,), compression="gzip", compression_opts=9)
        variables.create_dataset("0", shape=(10,), dtype="<f4", **chunked)[:] = np.arange(10)
    return buffer.getvalue()


def _npz_of_many_members(count: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        member = io.BytesIO()
        np.save(member, np.zeros(1, np.float32))
        for index in range(count):
            archive.writestr(f"a{index}.npy", member.getvalue())
    return buffer.getvalue()


def _tensorflow_keys_growing_by_one_byte(count: int) -> dict[str, bytes]:
    """An index of ``count`` empty tensors named ``a``, ``aa``, ``aaa``... in one block and one restart interval:
    each entry stores one byte of its key, the keys hold count^2 / 2 (20,000: 320 KB of index, 200 MB of keys)."""
    _, data, entries = _valid_checkpoint()
    empty = _proto.BundleEntryProto(dtype=1, crc32c=mask_crc(crc32c(b"")))  # DT_FLOAT
    empty.shape.dim.add(size=0)
    value = empty.SerializeToString()
    header = entries[0][1]
    body = encode_varint(0) + encode_varint(0) + encode_varint(len(header)) + header
    step = encode_varint(1) + encode_varint(len(value)) + b"a" + value
    body += b"".join(encode_varint(shared) + step for shared in range(count))
    index = bytearray()

    def block(entries: bytes) -> bytes:  # the block, its restart array of one, its trailer; its handle
        start = len(index)
        contents = entries + struct.pack("<II", 0, 1)
        index.extend(contents + bytes([NO_COMPRESSION]))
        index.extend(struct.pack("<I", mask_crc(crc32c(bytes([NO_COMPRESSION]), crc32c(contents)))))
        return encode_varint(start) + encode_varint(len(contents))

    data_handle = block(body)
    metaindex_handle = block(b"")
    index_handle = block(encode_varint(0) + encode_varint(1) + encode_varint(len(data_handle)) + b"b" + data_handle)
    index.extend((metaindex_handle + index_handle).ljust(FOOTER_SIZE - 8, b"\0") + MAGIC_BYTES)
    return {"model.ckpt.index": bytes(index), "model.ckpt.data-00000-of-00001": data}


def _flax_map(entries: list[bytes]) -> bytes:
    """A Flax msgpack file: one map32 of ``entries`` (each a key then a value, packed)."""
    return b"\xdf" + struct.pack(">I", len(entries)) + b"".join(entries)


def _flax_of_many_tensors(count: int) -> bytes:
    """``count`` one-float ndarrays (ext 1: ``[[1], "float32", 4 bytes]``), named ``t0000000``...."""
    payload = b"\x93\x91\x01\xa7float32\xc4\x04" + bytes(4)
    return _flax_map([b"\xa8" + f"t{index:07d}".encode() + b"\xc7\x11\x01" + payload for index in range(count)])


def _flax_of_empty_maps(count: int) -> bytes:
    """``count`` keys (uint32s) each holding an empty map: each a metadata leaf."""
    return _flax_map([b"\xce" + struct.pack(">I", index) + b"\x80" for index in range(count)])


def _openvino_chain(count: int) -> bytes:
    """An OpenVINO IR of a Parameter and ``count`` ReLUs one after another (no Const: no .bin), each edge named."""
    port = '<input><port id="0"><dim>1</dim></port></input><output><port id="1"><dim>1</dim></port></output>'
    layers = "".join(f'<layer id="{n}" name="r{n}" type="ReLU">{port}</layer>' for n in range(1, count + 1))
    edges = "".join(
        f'<edge from-layer="{n - 1}" from-port="{0 if n == 1 else 1}" to-layer="{n}" to-port="0"/>'
        for n in range(1, count + 1)
    )
    first = '<layer id="0" name="x" type="Parameter"><output><port id="0"><dim>1</dim></port></output></layer>'
    return f'<net name="chain" version="11"><layers>{first}{layers}</layers><edges>{edges}</edges></net>'.encode()


def _openvino_concat(count: int) -> bytes:
    """An IR of ``count`` Parameters all feeding one Concat, each through its own port."""
    output = '<output><port id="0"><dim>1</dim></port></output>'
    sources = "".join(f'<layer id="{n}" name="x{n}" type="Parameter">{output}</layer>' for n in range(count))
    ports = "".join(f'<port id="{n}"><dim>1</dim></port>' for n in range(count))
    concat = f'<layer id="{count}" name="all" type="Concat"><input>{ports}</input></layer>'
    edges = "".join(f'<edge from-layer="{n}" from-port="0" to-layer="{count}" to-port="{n}"/>' for n in range(count))
    return f'<net name="wide" version="11"><layers>{sources}{concat}</layers><edges>{edges}</edges></net>'.encode()


def _openvino_nested(depth: int) -> bytes:
    """An IR whose one layer holds ``depth`` nested elements of no meaning."""
    layer = '<layer id="0" name="x" type="ReLU">' + "<a>" * depth + "</a>" * depth + "</layer>"
    return f'<net name="deep" version="11"><layers>{layer}</layers></net>'.encode()


def _torchscript_of_code(code: str) -> bytes:
    """A TorchScript archive whose code/ file is ``code``, deflated (to a thousandth of its size when it repeats)."""
    return deflating_zip(torchscript_members(code=code), (f"archive/{CODE_FILE}",))


def _tflite_model(tensors: list[tuple[str, list[int], bytes]], sparse_levels: int = 0) -> bytes:
    """A TFLite model (flatbuffers' Builder, the schema's slots) of one subgraph holding ``tensors`` (name, shape,
    data); with ``sparse_levels``, the first is sparse: a dense level of its first dimension's size, then a CSR level
    whose segments give each row its share of the values in turn (the first row all of them)."""
    import flatbuffers

    builder = flatbuffers.Builder(0)
    offsets, buffers = [], [0]
    for number, (name, shape, data) in enumerate(tensors):
        text, dims = builder.CreateString(name), builder.CreateNumpyVector(np.array(shape, np.int32))
        sparsity = 0
        if number == 0 and sparse_levels:
            count = len(data) // 4
            segments = np.concatenate([[0], np.full(shape[0], count)]).astype(np.int32)
            vectors = []
            for values in (segments, np.arange(count, dtype=np.int32)):
                vector = builder.CreateNumpyVector(values)
                builder.StartObject(1)
                builder.PrependUOffsetTRelativeSlot(0, vector, 0)
                vectors.append(builder.EndObject())
            builder.StartObject(2)  # DimensionMetadata: DENSE of the rows
            builder.PrependInt32Slot(1, shape[0], 0)
            dense = builder.EndObject()
            builder.StartObject(6)  # SPARSE_CSR: segments and indices as Int32Vector (union type 1)
            builder.PrependInt8Slot(0, 1, 0)
            builder.PrependUint8Slot(2, 1, 0)
            builder.PrependUOffsetTRelativeSlot(3, vectors[0], 0)
            builder.PrependUint8Slot(4, 1, 0)
            builder.PrependUOffsetTRelativeSlot(5, vectors[1], 0)
            csr = builder.EndObject()
            order = builder.CreateNumpyVector(np.array([0, 1], np.int32))
            levels = offset_vector(builder, [dense, csr])
            builder.StartObject(3)
            builder.PrependUOffsetTRelativeSlot(0, order, 0)
            builder.PrependUOffsetTRelativeSlot(2, levels, 0)
            sparsity = builder.EndObject()
        builder.StartObject(7)  # Tensor: shape 0, type 1 (float32), buffer 2, name 3, sparsity 6
        builder.PrependUOffsetTRelativeSlot(0, dims, 0)
        builder.PrependUint32Slot(2, number + 1, 0)
        builder.PrependUOffsetTRelativeSlot(3, text, 0)
        if sparsity:
            builder.PrependUOffsetTRelativeSlot(6, sparsity, 0)
        offsets.append(builder.EndObject())
        payload = builder.CreateByteVector(data)
        builder.StartObject(1)  # Buffer: data 0
        builder.PrependUOffsetTRelativeSlot(0, payload, 0)
        buffers.append(builder.EndObject())
    builder.StartObject(1)
    buffers[0] = builder.EndObject()  # the empty sentinel

    listed = offset_vector(builder, offsets)
    builder.StartObject(1)
    builder.PrependUOffsetTRelativeSlot(0, listed, 0)
    subgraphs = offset_vector(builder, [builder.EndObject()])
    return finished_tflite_model(builder, subgraphs, offset_vector(builder, buffers))


def _stride_zero_pytorch(shape: tuple[int, ...], stride: tuple[int, ...]) -> bytes:
    return torch_zip(pickle2(ordered_dict(("t", tensor("0", 4, shape, stride)))))


OK, CORRUPT, LIMIT = int(ExitStatus.OK), int(ExitStatus.CORRUPT), int(ExitStatus.UNSUPPORTED)
# Each makes a file, or the files of a folder holding a TensorFlow prefix ``model.ckpt``, and names the statuses
# its commands may end with (``scan`` aside): a result, or the cap's refusal (``LimitExceededError``); corrupt
# only where the bytes are a lie (a pickle's memo flood, keys no dict can hold quickly), never for a valid file.
CRAFTED: dict[str, tuple[Callable[[], bytes | dict[str, bytes]], set[int]]] = {
    "pytorch-one-string-shown-20000-times.pt": (lambda: _pickle_referencing_one_string(20_000, 100_000), {OK, LIMIT}),
    "pytorch-2-17-tensor-names-from-a-memo.pt": (
        lambda: _pickle_naming_tensors_exponentially(17, 120_000),
        {CORRUPT, LIMIT},
    ),
    "pytorch-2-million-memoize-opcodes.pt": (lambda: _pickle_of_memoize_opcodes(2_000_000), {OK, CORRUPT, LIMIT}),
    "pytorch-2-million-empty-dicts.pt": (lambda: _pickle_of_empty_dicts(2_000_000), {OK, CORRUPT, LIMIT}),
    "pytorch-20000-int-keys-of-one-hash.pt": (lambda: _pickle_of_colliding_int_keys(20_000), {OK, CORRUPT, LIMIT}),
    "pytorch-stride-0-2-62-bytes.pt": (lambda: _stride_zero_pytorch((2**30, 2**30), (0, 0)), {OK}),
    "pytorch-stride-0-expand-within-the-cap.pt": (lambda: _stride_zero_pytorch((1024, 4), (0, 1)), {OK}),
    "torchscript-1-5-million-classes-in-code.pt": (lambda: _torchscript_of_code("class a\n" * 1_500_000), {OK, LIMIT}),
    "torchscript-2-million-buffers-declared.pt": (
        lambda: _torchscript_of_code("class Net(Module):\n  __buffers__ = [" + '"a", ' * 2_000_000 + "]\n"),
        {OK, LIMIT},
    ),
    "torchscript-code-inflating-to-60-mib.pt": (lambda: _torchscript_of_code("#" * (60 << 20)), {OK, LIMIT}),
    "safetensors-30000-tensors.safetensors": (lambda: _safetensors_of_many_tensors(30_000), {OK}),
    "safetensors-30000-tensors-the-last-name-twice.safetensors": (
        lambda: _safetensors_of_many_tensors(30_000, last_name_twice=True),
        {CORRUPT},
    ),
    "gguf-30000-tensors-the-last-name-twice.gguf": (
        lambda: _gguf_of_many_tensors(30_000, last_name_twice=True),
        {CORRUPT},
    ),
    "gguf-a-million-empty-strings.gguf": (lambda: _gguf_of_empty_strings(1_000_000), {OK, LIMIT}),
    "gguf-30000-tensors.gguf": (lambda: _gguf_of_many_tensors(30_000), {OK}),
    "keras-config-inflating-to-256-mib.keras": (lambda: _keras_with_inflating_config(256 << 20), {OK, LIMIT}),
    "keras-10-values-in-a-128-mib-chunk.weights.h5": (lambda: _hdf5_of_one_large_chunk(2**25), {OK, LIMIT}),
    "npz-20000-members.npz": (lambda: _npz_of_many_members(20_000), {OK}),
    "flax-30000-tensors.msgpack": (lambda: _flax_of_many_tensors(30_000), {OK}),
    "flax-a-million-empty-maps.msgpack": (lambda: _flax_of_empty_maps(1_000_000), {OK, LIMIT}),
    "flax-a-million-nils-in-a-list.msgpack": (
        lambda: b"\x81\xa1a\xdd" + struct.pack(">I", 10**6) + b"\xc0" * 10**6,
        {OK, LIMIT},
    ),
    "executorch-one-plan-listed-100000-times.pte": (lambda: shared_plans(100_000, 64), {LIMIT}),
    "tflite-30000-tensors.tflite": (
        lambda: _tflite_model([(f"t{index}", [2], b"\0" * 8) for index in range(30_000)]),
        {OK},
    ),
    "tflite-sparse-4-values-of-a-2-30-matrix.tflite": (
        lambda: _tflite_model([("sparse", [2**15, 2**15], b"\0" * 16)], sparse_levels=2),
        {OK, LIMIT},  # listed; refused where read
    ),
    "tflite-sparse-4-values-of-a-256-matrix.tflite": (
        lambda: _tflite_model([("sparse", [16, 16], np.arange(1, 5, dtype=np.float32).tobytes())], sparse_levels=2),
        {OK},
    ),
    "tensorflow-20000-keys-growing-by-one-byte": (lambda: _tensorflow_keys_growing_by_one_byte(20_000), {OK, LIMIT}),
    "openvino-100000-relus-in-a-chain.xml": (lambda: _openvino_chain(100_000), {OK, LIMIT}),
    "openvino-a-concat-of-100000-inputs.xml": (lambda: _openvino_concat(100_000), {OK, LIMIT}),
    "openvino-a-million-nested-elements.xml": (lambda: _openvino_nested(1_000_000), {CORRUPT}),
}

CORPUS_ENTRIES = sorted(
    path for group in CORPUS.iterdir() if group.is_dir() for path in group.iterdir() if "--" in path.name
)
INPUTS = [f"corpus/{path.parent.name}/{path.name}" for path in CORPUS_ENTRIES] + [f"crafted/{name}" for name in CRAFTED]
FIRST_FILE = next(name for name in INPUTS if (TESTS / name).is_file())  # one file, whose size its limit is made of


def _target(entry: Path) -> tuple[Path, int]:
    """The path a command names for a corpus entry (a folder: the TensorFlow prefix in it, else the folder), and its
    bytes."""
    if entry.is_dir():
        prefix = entry / "model.ckpt"
        target = prefix if Path(f"{prefix}.index").is_file() else entry
        return target, sum(path.stat().st_size for path in entry.rglob("*") if path.is_file())
    return entry, entry.stat().st_size


def _interpreter_start() -> float:
    """Seconds to start Python and import weightscope's command line and numpy, here and now."""
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", "import numpy, weightscope.cli"], env=_environment(), check=True, capture_output=True
    )
    return time.monotonic() - started


def _environment() -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("WEIGHTSCOPE_")}
    environment["PYTHONPATH"] = os.pathsep.join([str(SOURCE), environment.get("PYTHONPATH", "")])
    environment["OPENBLAS_NUM_THREADS"] = "1"  # as the README advises for one process per core
    # glibc reserves 64 MiB of address space for each thread's malloc arena: RLIMIT_AS counts it, though nothing uses
    # it, and a thread of stats would fail its first malloc. One arena: what is counted is what is allocated.
    environment["MALLOC_ARENA_MAX"] = "1"
    return environment


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The selected inputs' five commands, run by two runners at once: {"inputs": {input: [result, ...]}}."""
    work = tmp_path_factory.mktemp("resources")
    selected = {FIRST_FILE} | {
        item.callspec.params["name"]
        for item in request.session.items
        if item.module is sys.modules[__name__] and hasattr(item, "callspec")
    }
    jobs: dict[str, dict[str, Any]] = {}
    for entry in CORPUS_ENTRIES:
        path, size = _target(entry)
        if f"corpus/{entry.parent.name}/{entry.name}" in selected:
            jobs[f"corpus/{entry.parent.name}/{entry.name}"] = {"path": str(path), "size": size}
    for name, (make, _) in CRAFTED.items():
        if f"crafted/{name}" not in selected:
            continue
        made = make()
        if isinstance(made, bytes):
            (work / name).write_bytes(made)
        else:
            (work / name).mkdir()
            for file, contents in made.items():
                (work / name / file).write_bytes(contents)
        path, size = _target(work / name)
        jobs[f"crafted/{name}"] = {"path": str(path), "size": size}
    for job in jobs.values():
        job["commands"] = [[*command, job["path"]] for command in COMMANDS]
    slack = _interpreter_start()
    names = list(jobs)
    processes = []
    for runner in range(RUNNERS):
        mine = names[runner::RUNNERS]
        (work / f"jobs{runner}.json").write_text(json.dumps([jobs[name] for name in mine]))
        scratch = work / f"scratch{runner}"
        scratch.mkdir()
        arguments = [str(work / f"jobs{runner}.json"), str(work / f"results{runner}.json"), str(slack), str(scratch)]
        process = subprocess.Popen([sys.executable, str(RUNNER), *arguments], env=_environment(), cwd=work)
        processes.append((mine, runner, process))
    found: dict[str, Any] = {"slack": slack, "inputs": {}}
    (work / "inputs.json").write_text(json.dumps(jobs))
    for mine, runner, process in processes:
        assert process.wait() == 0, f"runner {runner} failed"
        report = json.loads((work / f"results{runner}.json").read_text())
        results = iter(report["results"])
        for name in mine:
            found["inputs"][name] = [next(results) for _ in COMMANDS]
    return found


def _failure(result: dict[str, Any]) -> str | None:
    """What broke the rule in one command's result, or None."""
    command = " ".join(result["argv"][:-1])
    tail = result["stderr"].strip().splitlines()[-1:] or [""]
    if result["timed_out"]:
        return f"{command}: blocked, {result['cpu']:.2f} s of CPU in {result['wall']:.1f} s"
    if result["status"] == -signal.SIGPROF:
        return f"{command}: over its time, {result['cpu_budget']:.1f} s of CPU"
    if result["status"] < 0:
        return f"{command}: killed by signal {-result['status']} after {result['cpu']:.2f} s of CPU: {tail[0]}"
    if "Traceback" in result["stderr"] or result["status"] not in TYPED:
        return f"{command}: exit {result['status']}: {tail[0]}"
    return None


def _expected(name: str) -> set[int]:
    """The statuses an input's commands (``scan`` aside) may end with: a corpus file's own error's, or a result."""
    group, entry = name.split("/", 1)
    if group == "crafted":
        return CRAFTED[entry][1]
    error: type[WeightscopeError] = getattr(errors, entry.rsplit("/", 1)[-1].split("--", 1)[0])
    return {OK, int(error.exit_status)}


@pytest.mark.parametrize("name", INPUTS)
def test_each_command_ends_in_a_result_or_a_typed_error_within_the_rule(name: str, outcomes: dict[str, Any]) -> None:
    results = outcomes["inputs"][name]
    assert [result["argv"][:-1] for result in results] == [list(command) for command in COMMANDS]
    failures = []
    for result in results:
        command = result["argv"][0]
        # scan reads PyTorch files only; verify ends 4 whatever kept it from reading a tensor.
        allowed = TYPED if command == "scan" else _expected(name) | ({CORRUPT} if command == "verify" else set())
        failure = _failure(result)
        if failure is None and result["status"] not in allowed:
            failure = f"{command}: exit {result['status']}, not one of {sorted(allowed)}: {result['stderr'][-300:]}"
        if failure is None and result["max_rss"] > result["limit"]:  # RLIMIT_AS bounds this: a check of the check
            failure = f"{command}: {result['max_rss']:,} bytes resident, over its limit of {result['limit']:,}"
        if failure is not None:
            failures.append(failure)
    assert not failures, "\n".join(failures)


def test_the_limits_bite(outcomes: dict[str, Any]) -> None:
    """The baseline is measured, not assumed, and the rule's memory is what a child gets on top of it."""
    [ls] = [result for result in outcomes["inputs"][FIRST_FILE] if result["argv"][0] == "ls"]
    assert 20 << 20 < ls["baseline"] < 4 << 30
    assert ls["limit"] - ls["baseline"] == (64 << 20) + 8 * os.path.getsize(ls["argv"][-1])
