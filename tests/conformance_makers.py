"""The makers of the conformance suite (tests/test_conformance.py): each writes tensors with a format's REAL library.

A format joins the suite by adding a ``Maker`` to ``MAKERS``: a function that writes the
given tensors (name -> numpy array) with the format's own library and returns the files
made, each with the tensors a reader should find in it (named as the reader names them),
and what the format can hold (dtypes, 0-d and empty tensors, big-endian, which characters
names may have, whether weightscope reads it remotely). ``tensors_for(maker)`` is the
matrix every maker is given: one tensor of every dtype it holds, 0-d, empty, 1-element,
large (> 1 MiB), non-contiguous sources, big-endian where it holds it, and the names.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

Written = list[tuple[Path, dict[str, np.ndarray]]]  # each file to open, and the tensors in it as read

_INTS = ("int8", "int16", "int32", "int64", "uint8")
_NUMPY = ("bool", *_INTS, "uint16", "uint32", "uint64", "float16", "float32", "float64", "complex64", "complex128")
_FLOAT8 = ("float8_e4m3fn", "float8_e5m2")
SPECIAL_NAMES = {"/": "layer/0/kernel", ".": "encoder.block.0.weight", "unicode": "ünïcødé_層_重み"}


@dataclass(frozen=True)
class Maker:
    name: str
    format: str  # weightscope's name for it
    write: Callable[[Path, dict[str, np.ndarray]], Written]
    dtypes: tuple[str, ...]
    scalars: bool = True  # holds 0-d tensors
    empty: bool = True  # holds tensors with a 0 in their shape
    big_endian: bool = False  # stores big-endian arrays as such
    names: tuple[str, ...] = ("/", ".", "unicode")  # the SPECIAL_NAMES it holds
    remote: bool = True  # weightscope reads it over HTTP
    inline_data: bool = False  # listing parses the tensors' bytes too (they lie inside a pickle or a protobuf)
    chunked_dask: bool = True  # Dask reads its plain tensors chunk by chunk (weightscope.lazy's raw sources)
    eager_checksum: bool = False  # one checksum over every tensor's bytes is checked at open (a .keras zip member's)
    graph_constants: bool = False  # its integer, boolean and 0-d tensors are graph constants, which convert leaves out
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


def dtype(name: str) -> np.dtype:
    return np.dtype(getattr(ml_dtypes, name, None) or name)


def random_bits(kind: np.dtype, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random bits (NaNs with payloads and all) of ``kind``; bools 0 or 1."""
    rng = np.random.default_rng(seed)
    if kind == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    count = int(np.prod(shape)) * kind.itemsize
    return rng.integers(0, 256, size=count, dtype=np.uint8).view(kind).reshape(shape)


def tensors_for(maker: Maker) -> dict[str, np.ndarray]:
    """The dtype x shape x name matrix ``maker`` can hold; non-contiguous arrays are handed over as they are."""
    tensors = {f"dtype_{name}": random_bits(dtype(name), (2, 3), seed) for seed, name in enumerate(maker.dtypes)}
    transposed = random_bits(np.dtype(np.float32), (3, 4), 101).T
    sliced = random_bits(np.dtype(np.float32), (5, 6), 102)[1:4, ::2]
    assert not transposed.flags.c_contiguous and not sliced.flags.c_contiguous
    tensors |= {
        "one_element": np.array([7], np.int32),
        "large": random_bits(np.dtype(np.float32), (300_000,), 103),  # 1.14 MiB
        "transposed": transposed,
        "sliced": sliced,
        "rank4": random_bits(np.dtype(np.float32), (2, 1, 3, 2), 104),
    }
    if maker.scalars:
        tensors["scalar"] = np.array(2.5, np.float64 if "float64" in maker.dtypes else np.float32)
    if maker.empty:
        tensors["empty"] = np.zeros((3, 0, 2), np.float32)
    if maker.big_endian:
        tensors |= {
            "big_endian_f4": np.arange(6, dtype=">f4").reshape(2, 3),
            "big_endian_i8": np.arange(-3, 3, dtype=">i8"),
        }
    for kind in maker.names:
        tensors[SPECIAL_NAMES[kind]] = np.arange(4, dtype=np.float32).reshape(2, 2) + len(kind)
    return tensors | maker.extra


# -- the makers -----------------------------------------------------------------------------
def _one(path: Path, tensors: dict[str, np.ndarray]) -> Written:
    return [(path, dict(tensors))]


def _torch_tensor(array: np.ndarray) -> Any:
    import torch

    if array.dtype.name in (*_FLOAT8, "bfloat16"):  # torch takes no ml_dtypes array: the same bits, viewed
        bits = np.int16 if array.dtype.itemsize == 2 else np.uint8
        return torch.from_numpy(array.view(bits).copy()).view(getattr(torch, array.dtype.name))
    return torch.from_numpy(array)  # a transposed or sliced array stays a strided view: torch saves it so


def _torch(directory: Path, tensors: dict[str, np.ndarray], *, legacy: bool) -> Written:
    import torch

    path = directory / "model.pt"
    torch.save(
        {name: _torch_tensor(array) for name, array in tensors.items()},
        path,
        _use_new_zipfile_serialization=not legacy,
    )
    return _one(path, tensors)


def write_torchscript(directory: Path, tensors: dict[str, np.ndarray]) -> Written:
    """A scripted module whose buffers are the tensors, a dotted name's parts its submodules, by ``torch.jit.save``."""
    import warnings

    import torch

    root = torch.nn.Module()
    for name, array in tensors.items():
        *parents, leaf = name.split(".")
        module = root
        for part in parents:
            if part not in module._modules:
                module.add_module(part, torch.nn.Module())
            module = module._modules[part]
        module.register_buffer(leaf, _torch_tensor(array))
    path = directory / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated
        torch.jit.save(torch.jit.script(root), path)
    return _one(path, tensors)


def _dcp(directory: Path, tensors: dict[str, np.ndarray]) -> Written:
    """``torch.distributed.checkpoint.save`` in one process: the folder of ``.metadata`` and ``__0_0.distcp``, opened
    by its ``.metadata`` (which opens the folder): the files the suite damages are the folder's."""
    import warnings

    import torch.distributed.checkpoint as dcp

    folder = directory / "dcp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
        dcp.save({name: _torch_tensor(array) for name, array in tensors.items()}, checkpoint_id=folder)
    return _one(folder / ".metadata", tensors)


def _safetensors(directory: Path, tensors: dict[str, np.ndarray]) -> Written:
    from safetensors.numpy import save_file

    path = directory / "model.safetensors"
    save_file({name: np.ascontiguousarray(array) for name, array in tensors.items()}, str(path))
    return _one(path, tensors)


def _sharded(directory: Path, tensors: dict[str, np.ndarray]) -> Written:
    """Shards cut by huggingface_hub's rules (the large tensor alone), written by safetensors, and the index as
    huggingface_hub writes it: the set opened by its index."""
    from huggingface_hub import split_state_dict_into_shards_factory
    from safetensors.numpy import save_file

    split = split_state_dict_into_shards_factory(
        tensors,
        get_storage_size=lambda array: array.nbytes,
        filename_pattern="model{suffix}.safetensors",
        max_shard_size=100_000,
    )
    assert split.is_sharded
    for shard, names in split.filename_to_tensors.items():
        shard_tensors = {name: np.ascontiguousarray(tensors[name]) for name in names}
        save_file(shard_tensors, str(directory / shard), metadata={"format": "pt"})
    index = directory / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": split.metadata, "weight_map": split.tensor_to_filename}, indent=2))
    return _one(index, tensors)


def _gguf_split(directory: Path, tensors: dict[str, np.ndarray]) -> Written:
    """gguf-py's split (as llama.cpp's gguf-split cuts it), four tensors a part: the set opened by its first part."""
    write_gguf(directory, tensors, split_max_tensors=4)
    return _one(directory / f"model-00001-of-{len(list(directory.glob('*.gguf'))):05d}.gguf", tensors)


def _npy(directory: Path, tensors: dict[str, np.ndarray]) -> Written:
    """One .npy file per tensor, each in a directory of its own (a .npy holds one array, named after its file)."""
    written: Written = []
    for number, (name, array) in enumerate(tensors.items()):
        path = directory / str(number) / f"{name}.npy"
        path.parent.mkdir()
        np.save(path, array)
        written.append((path, {name: array}))
    return written


def _npz(directory: Path, tensors: dict[str, np.ndarray], *, compressed: bool) -> Written:
    path = directory / "arrays.npz"
    (np.savez_compressed if compressed else np.savez)(path, **tensors)
    return _one(path, tensors)


def _pickle(directory: Path, tensors: dict[str, np.ndarray], *, protocol: int) -> Written:
    path = directory / "params.pkl"
    with open(path, "wb") as file:
        pickle.dump(dict(tensors), file, protocol=protocol)
    return _one(path, tensors)


def write_gguf(directory: Path, tensors: dict[str, np.ndarray], split_max_tensors: int = 0) -> Written:
    import gguf

    path = directory / "model.gguf"
    writer = gguf.GGUFWriter(path, "llama", split_max_tensors=split_max_tensors)
    for name, array in tensors.items():
        if array.dtype == dtype("bfloat16"):  # gguf-py takes bfloat16 as its bits, with the type named
            writer.add_tensor(name, array.view(np.uint16), raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            writer.add_tensor(name, np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return _one(path, tensors)


def _onnx(directory: Path, tensors: dict[str, np.ndarray], *, external: bool) -> Written:
    import onnx
    from onnx import helper, numpy_helper

    initializers = [numpy_helper.from_array(np.ascontiguousarray(array), name) for name, array in tensors.items()]
    model = helper.make_model(helper.make_graph([], "weights", [], [], initializer=initializers))
    path = directory / "model.onnx"
    if external:
        onnx.save_model(model, path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    else:
        onnx.save_model(model, path)
    return _one(path, tensors)


# numpy / ml_dtypes names -> TFLite TensorType codes (LiteRT's schema.fbs)
_TFLITE_TYPES = {
    "float32": 0, "float16": 1, "int32": 2, "uint8": 3, "int64": 4, "bool": 6, "int16": 7, "complex64": 8, "int8": 9,
    "float64": 10, "complex128": 11, "uint64": 12, "uint32": 15, "uint16": 16, "bfloat16": 18, "float8_e4m3fn": 21,
    "float8_e5m2": 22,
}  # fmt: skip


def _tflite(directory: Path, tensors: dict[str, np.ndarray]) -> Written:
    """A model of one subgraph whose tensors each have a buffer, packed by TensorFlow's own schema code and
    ``flatbuffer_utils`` (what TensorFlow's tools rewrite models with)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model, subgraph = schema.ModelT(), schema.SubGraphT()
    model.version, model.buffers, model.subgraphs, subgraph.tensors = 3, [schema.BufferT()], [subgraph], []
    for name, array in tensors.items():
        buffer, tensor = schema.BufferT(), schema.TensorT()
        buffer.data = np.frombuffer(np.ascontiguousarray(array).tobytes(), np.uint8)
        tensor.shape, tensor.type, tensor.name = list(array.shape), _TFLITE_TYPES[array.dtype.name], name
        tensor.buffer = len(model.buffers)
        model.buffers.append(buffer)
        subgraph.tensors.append(tensor)
    path = directory / "model.tflite"
    path.write_bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return _one(path, tensors)


def _keras_h5(path: Path, tensors: dict[str, np.ndarray], **storage: Any) -> dict[str, np.ndarray]:
    """Keras 3's layout, by h5py: ``layers/<layer>/vars/<index>``, each tensor a layer of one variable; ``storage``
    as ``create_dataset`` takes it (chunks, compression)."""
    import h5py

    with h5py.File(path, "w") as file:
        for name, array in tensors.items():
            chunked = storage if array.ndim and array.size else {}  # h5py chunks no scalar or empty dataset
            file.create_group(f"layers/{name}/vars").create_dataset("0", data=array, **chunked)
    return {f"{name}/vars/0": array for name, array in tensors.items()}


def _keras_weights(directory: Path, tensors: dict[str, np.ndarray], **storage: Any) -> Written:
    path = directory / "model.weights.h5"
    return [(path, _keras_h5(path, tensors, **storage))]


def _keras_zip(directory: Path, tensors: dict[str, np.ndarray]) -> Written:
    weights = directory / "model.weights.h5"
    expected = _keras_h5(weights, tensors)
    path = directory / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:  # stored, as Keras writes it
        archive.writestr("config.json", b"{}")
        archive.write(weights, "model.weights.h5")
    weights.unlink()
    return [(path, expected)]


def _tensorflow(directory: Path, tensors: dict[str, np.ndarray]) -> Written:
    from tf_fixtures import _save_v2, _tf

    tf = _tf()
    prefix = directory / "model.ckpt"
    _save_v2(tf, prefix, [(name, tf.as_dtype(array.dtype).name, array) for name, array in tensors.items()])
    return _one(prefix, tensors)


def flax_bytes(tensors: dict[str, np.ndarray]) -> bytes:
    """What ``flax.serialization.msgpack_serialize`` writes for the tree ``tensors``' names make (split at ``/``),
    by msgpack (the library flax packs with) and flax's ``_msgpack_ext_pack`` restated: flax is not installed in the
    test venv (test_flax_msgpack holds this to bytes flax wrote)."""
    import msgpack

    def pack(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            payload = msgpack.packb((value.shape, value.dtype.name, value.tobytes("C")), use_bin_type=True)
            return msgpack.ExtType(1, payload)
        return value

    tree: dict[str, Any] = {}
    for name, array in tensors.items():
        *path, last = name.split("/")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[last] = array
    packed: bytes = msgpack.packb(tree, default=pack, strict_types=True)
    return packed


def _flax(directory: Path, tensors: dict[str, np.ndarray]) -> Written:
    path = directory / "model.msgpack"
    path.write_bytes(flax_bytes(tensors))
    return _one(path, tensors)


# ml_dtypes names -> the OpenVINO element types numpy has no dtype for: Constants made from their bits
_OPENVINO_TYPES = {"bfloat16": "bf16", "float8_e4m3fn": "f8e4m3", "float8_e5m2": "f8e5m2"}


def _openvino(directory: Path, tensors: dict[str, np.ndarray]) -> Written:
    """A model whose Results are Constants of the tensors, each named as its tensor (the layer name the reader
    lists), saved by ``ov.save_model`` uncompressed: f32 stays f32."""
    import openvino as ov
    from openvino import opset13

    results = []
    for name, array in tensors.items():
        if array.dtype.name in _OPENVINO_TYPES:  # no numpy dtype: an ov.Tensor of its bits, the type named
            bits = np.ascontiguousarray(array).view(f"u{array.dtype.itemsize}")
            element_type = getattr(ov.Type, _OPENVINO_TYPES[array.dtype.name])
            constant = ov.op.Constant(ov.Tensor(bits, list(array.shape), element_type))
        else:
            constant = opset13.constant(array)
        constant.set_friendly_name(name)
        results.append(opset13.result(constant))
    path = directory / "model.xml"
    ov.save_model(ov.Model(results, [], "weights"), path, compress_to_fp16=False)
    return _one(path, tensors)


MAKERS: list[Maker] = [
    Maker("safetensors", "safetensors", _safetensors, (*_NUMPY[:-2], "bfloat16", *_FLOAT8)),
    Maker("pytorch-zip", "pytorch", lambda d, t: _torch(d, t, legacy=False), (*_NUMPY, "bfloat16", *_FLOAT8)),
    Maker(
        "pytorch-legacy",
        "pytorch",
        lambda d, t: _torch(d, t, legacy=True),
        (*_NUMPY, "bfloat16", *_FLOAT8),
        inline_data=True,
    ),
    Maker("torchscript", "torchscript", write_torchscript, (*_NUMPY, "bfloat16", *_FLOAT8)),
    Maker("npy", "npy", _npy, _NUMPY, big_endian=True, names=(".", "unicode")),
    Maker("npz-stored", "npz", lambda d, t: _npz(d, t, compressed=False), _NUMPY, big_endian=True),
    Maker("npz-deflated", "npz", lambda d, t: _npz(d, t, compressed=True), _NUMPY, big_endian=True, chunked_dask=False),
    Maker(
        "pickle-2",
        "pickle",
        lambda d, t: _pickle(d, t, protocol=2),
        _NUMPY,
        big_endian=True,
        chunked_dask=False,
        inline_data=True,
    ),
    Maker(
        "pickle-5",
        "pickle",
        lambda d, t: _pickle(d, t, protocol=5),
        _NUMPY,
        big_endian=True,
        chunked_dask=False,
        inline_data=True,
    ),
    Maker("gguf", "gguf", write_gguf, ("int8", "int16", "int32", "int64", "float16", "float32", "float64", "bfloat16")),
    Maker(
        "onnx",
        "onnx",
        lambda d, t: _onnx(d, t, external=False),
        (*_NUMPY, "bfloat16"),
        chunked_dask=False,
        inline_data=True,
    ),
    Maker("onnx-external", "onnx", lambda d, t: _onnx(d, t, external=True), (*_NUMPY, "bfloat16")),
    # A tensor with no bytes has no data to tell it from one with none: TFLite lists no empty constants.
    Maker("tflite", "tflite", _tflite, (*_NUMPY, "bfloat16", *_FLOAT8), empty=False, remote=False),
    Maker("keras-weights-h5", "keras", _keras_weights, _NUMPY, big_endian=True, remote=False),
    Maker(
        "keras-h5-gzip",
        "keras",
        lambda d, t: _keras_weights(d, t, chunks=True, compression="gzip", shuffle=True),
        _NUMPY,
        big_endian=True,
        remote=False,
        chunked_dask=False,
    ),
    Maker(
        "keras-zip", "keras", _keras_zip, _NUMPY, big_endian=True, remote=False, eager_checksum=True, chunked_dask=False
    ),
    Maker("tensorflow", "tensorflow", _tensorflow, (*_NUMPY, "bfloat16", *_FLOAT8)),
    Maker("flax-msgpack", "flax-msgpack", _flax, (*_NUMPY, "bfloat16")),
    Maker("dcp", "dcp", _dcp, (*_NUMPY, "bfloat16", *_FLOAT8), remote=False),
    Maker("sharded-safetensors", "sharded", _sharded, (*_NUMPY[:-2], "bfloat16", *_FLOAT8)),
    Maker(
        "gguf-split",
        "sharded",
        _gguf_split,
        ("int8", "int16", "int32", "int64", "float16", "float32", "float64", "bfloat16"),
    ),
    Maker("openvino", "openvino", _openvino, (*_NUMPY[:-2], "bfloat16", *_FLOAT8), graph_constants=True),
]
