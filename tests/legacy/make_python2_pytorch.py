"""Write PyTorch checkpoints as Python 2 saved them (tests/legacy/python2-*.pt), by hand.

Python 2 cannot run here, so this writes the bytes Python 2.7's ``cPickle`` wrote at
protocol 2 for what ``torch.save`` (0.3 and 0.4, the legacy format; see
torch/serialization.py ``_legacy_save``) gave it: the magic number (``LONG1``), the
protocol version, the system info, the saved object, the sorted storage keys, then each
storage as an 8-byte element count and its raw bytes. What differs from Python 3's pickles:

- a ``str`` is bytes, written ``SHORT_BINSTRING`` (``U``, under 256 bytes) or ``BINSTRING``
  (``T``); a ``unicode`` is ``BINUNICODE``; equal strings are interned, so repeats are
  memo gets (``BINGET``), as are repeated globals;
- an int beyond 32 bits is ``INT`` (text: ``I140234567890123\\n``), as ``id()`` values are in
  an optimizer's ``param_groups``;
- ``collections.OrderedDict`` pickles as ``OrderedDict([[key, value], ...])``, with its
  attributes (torch 0.4's ``_metadata``) applied by ``BUILD``;
- torch 0.3 rebuilt a tensor with ``torch._utils._rebuild_tensor(storage, offset, size,
  stride)``, torch 0.4 with ``_rebuild_tensor_v2(..., requires_grad, backward_hooks)``.

Run ``.venv/bin/python tests/legacy/make_python2_pytorch.py``: the same bytes every time.
The tensors' values are in ``TENSORS`` below; tests compare them with ``torch.load``'s.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_CLASSES = {
    np.dtype("<f4"): "FloatStorage",
    np.dtype("<f8"): "DoubleStorage",
    np.dtype("<f2"): "HalfStorage",
    np.dtype("<i8"): "LongStorage",
    np.dtype("<i4"): "IntStorage",
    np.dtype("<u1"): "ByteStorage",
    np.dtype("<i1"): "CharStorage",
    np.dtype("<i2"): "ShortStorage",
}


@dataclass(frozen=True)
class Unicode:
    """A Python 2 ``unicode`` (a plain ``str`` here is Python 2's ``str``: bytes)."""

    text: str


@dataclass(frozen=True)
class Global:
    module: str
    name: str


@dataclass
class Reduce:
    function: Global
    args: tuple[Any, ...]
    state: Any = None


@dataclass(frozen=True)
class Tensor:
    """A view of storage ``key``: ``torch._utils._rebuild_tensor`` (0.3) or ``_v2`` (0.4)."""

    key: str
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


ORDERED_DICT = Global("collections", "OrderedDict")


def ordered_dict(pairs: list[tuple[Any, Any]], metadata: Any = None) -> Reduce:
    """Python 2.7's ``OrderedDict.__reduce__``: ``(OrderedDict, ([[k, v], ...],), vars or nothing)``."""
    state = {"_metadata": metadata} if metadata else None
    return Reduce(ORDERED_DICT, ([[key, value] for key, value in pairs],), state)


@dataclass
class Pickler:
    """What cPickle wrote at protocol 2 for these values (memo puts after each object, as it did)."""

    storages: dict[str, np.ndarray]
    version: str  # "0.3" or "0.4"
    out: bytearray = field(default_factory=lambda: bytearray(b"\x80\x02"))
    memo: dict[object, int] = field(default_factory=dict)  # interned strings and globals, to get again
    puts: int = 0

    def dump(self, value: Any) -> bytes:
        self.save(value)
        return bytes(self.out + b".")

    def _put(self, key: object = None) -> None:
        index, self.puts = self.puts, self.puts + 1
        if key is not None:
            self.memo[key] = index
        self.out += b"q" + bytes([index]) if index < 256 else b"r" + struct.pack("<I", index)

    def _get(self, key: object) -> bool:
        index = self.memo.get(key)
        if index is None:
            return False
        self.out += b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index)
        return True

    def save(self, value: Any) -> None:
        out = self.out
        if value is None:
            out += b"N"
        elif isinstance(value, bool):
            out += b"\x88" if value else b"\x89"
        elif isinstance(value, int):
            if 0 <= value < 256:
                out += b"K" + bytes([value])
            elif 0 <= value < 65536:
                out += b"M" + struct.pack("<H", value)
            elif -(2**31) <= value < 2**31:
                out += b"J" + struct.pack("<i", value)
            elif -(2**63) <= value < 2**63:
                out += f"I{value}\n".encode()  # a Python 2 int past 32 bits
            else:
                encoded = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
                out += b"\x8a" + bytes([len(encoded)]) + encoded  # a long
        elif isinstance(value, float):
            out += b"G" + struct.pack(">d", value)
        elif isinstance(value, str | Unicode):
            key = ("str", value)
            if self._get(key):
                return
            if isinstance(value, Unicode):
                encoded = value.text.encode("utf-8")
                out += b"X" + struct.pack("<I", len(encoded)) + encoded
            else:
                encoded = value.encode("utf-8")
                head = b"U" + bytes([len(encoded)]) if len(encoded) < 256 else b"T" + struct.pack("<i", len(encoded))
                out += head + encoded
            self._put(key)
        elif isinstance(value, Global):
            if self._get(value):
                return
            out += f"c{value.module}\n{value.name}\n".encode()
            self._put(value)
        elif isinstance(value, tuple):
            if not value:
                out += b")"
                return
            if len(value) <= 3:
                for item in value:
                    self.save(item)
                out += bytes([0x84 + len(value)])
            else:
                out += b"("
                for item in value:
                    self.save(item)
                out += b"t"
            self._put()
        elif isinstance(value, list):
            out += b"]"
            self._put()
            self._batch(value, b"a", b"e")
        elif isinstance(value, dict):
            out += b"}"
            self._put()
            self._batch([item for pair in value.items() for item in pair], b"s", b"u", pairs=True)
        elif isinstance(value, Reduce):
            self.save(value.function)
            self.save(value.args)
            out += b"R"
            self._put()
            if value.state is not None:
                self.save(value.state)
                out += b"b"
        elif isinstance(value, Tensor):
            self._tensor(value)
        else:
            raise TypeError(f"no Python 2 pickling for {type(value).__name__}")

    def _batch(self, items: list[Any], one: bytes, many: bytes, pairs: bool = False) -> None:
        """cPickle's APPENDS / SETITEMS in batches of 1000, a lone item with APPEND / SETITEM."""
        step = 2 if pairs else 1
        for start in range(0, len(items), 1000 * step):
            batch = items[start : start + 1000 * step]
            if len(batch) == step:
                for item in batch:
                    self.save(item)
                self.out += one
                continue
            self.out += b"("
            for item in batch:
                self.save(item)
            self.out += many

    def _tensor(self, tensor: Tensor) -> None:
        data = self.storages[tensor.key]
        storage_class = Global("torch", STORAGE_CLASSES[data.dtype])
        pid = ("storage", storage_class, tensor.key, "cpu", data.size, None)
        if self.version == "0.3":
            rebuild, extra = Global("torch._utils", "_rebuild_tensor"), ()
        else:
            rebuild, extra = Global("torch._utils", "_rebuild_tensor_v2"), (False, ordered_dict([]))
        self.save(rebuild)
        self.out += b"("
        self.save(pid)
        self.out += b"Q"
        for item in (tensor.offset, tensor.size, tensor.stride, *extra):
            self.save(item)
        self.out += b"tR"
        self._put()


def legacy_file(saved: Any, storages: dict[str, np.ndarray], version: str) -> bytes:
    """The five pickles of ``_legacy_save``, then each storage: its element count and bytes."""

    def alone(value: Any) -> bytes:
        return Pickler(storages, version).dump(value)

    sizes = {"short": 2, "int": 4, "long": 8}  # Python 2 on 64-bit Linux: a C long is 8 bytes
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": sizes}
    keys = sorted(storages)
    stored = b"".join(struct.pack("<q", storages[key].size) + storages[key].tobytes() for key in keys)
    return alone(MAGIC) + alone(1001) + alone(info) + Pickler(storages, version).dump(saved) + alone(keys) + stored


def storages() -> dict[str, np.ndarray]:
    """Storages keyed as torch keyed them (the C pointer's decimal text), deterministic values."""
    generator = np.random.default_rng(2017)
    return {
        "94271103430400": generator.standard_normal(20).astype("<f4"),  # conv: weight (4, 5) and a view
        "94271103431728": generator.standard_normal(4).astype("<f8"),
        "94271103433056": np.arange(-3, 3, dtype="<i8"),
        "94271103434384": (generator.standard_normal(6) * 100).astype("<f2"),
        "94271103435712": np.arange(250, 256, dtype="<u1"),
        "94271103437040": np.array([], dtype="<f4"),
        "94271103438368": np.array([-128, 0, 127], dtype="<i1"),
    }


def state_dict_03() -> tuple[Reduce, dict[str, np.ndarray]]:
    stored = storages()
    weight = Tensor("94271103430400", 0, (4, 5), (5, 1))
    return ordered_dict(
        [
            ("conv1.weight", weight),
            ("conv1.weight_t", Tensor("94271103430400", 0, (5, 4), (1, 5))),  # a transposed view
            ("conv1.bias", Tensor("94271103430400", 15, (5,), (1,))),  # an offset into it
            ("fc.weight", Tensor("94271103431728", 0, (2, 2), (2, 1))),
            ("bn.num_batches", Tensor("94271103433056", 0, (6,), (1,))),
            ("half", Tensor("94271103434384", 0, (3, 2), (2, 1))),
            ("bytes", Tensor("94271103435712", 0, (6,), (1,))),
            ("empty", Tensor("94271103437040", 0, (0,), (1,))),
            ("chars", Tensor("94271103438368", 0, (3,), (1,))),
        ]
    ), stored


def state_dict_04() -> tuple[Reduce, dict[str, np.ndarray]]:
    stored = storages()
    metadata = ordered_dict([("", {"version": 1}), ("conv1", {"version": 1}), ("bn", {"version": 2})])
    return ordered_dict(
        [
            ("conv1.weight", Tensor("94271103430400", 0, (4, 5), (5, 1))),
            ("conv1.bias", Tensor("94271103430400", 15, (5,), (1,))),
            ("caf\u00e9.weight", Tensor("94271103431728", 0, (2, 2), (1, 2))),  # UTF-8 bytes in a str
            (Unicode("unicode.weight"), Tensor("94271103433056", 2, (2, 2), (2, 1))),
            ("half", Tensor("94271103434384", 0, (6,), (1,))),
            ("bytes", Tensor("94271103435712", 1, (5,), (1,))),
            ("empty", Tensor("94271103437040", 0, (0, 3), (3, 1))),
            ("chars", Tensor("94271103438368", 0, (3,), (1,))),
        ],
        metadata,
    ), stored


def training_04() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A Python 2 training checkpoint: ``id()`` ints (``INT``) and a 300-byte ``str`` (``BINSTRING``),
    which ``torch.load(weights_only=True)`` does not read and ``weights_only=False`` does."""
    state, stored = state_dict_04()
    ids = [140234567890123 + 48 * index for index in range(2)]
    optimizer = {
        "state": {},
        "param_groups": [
            {"lr": 0.1, "momentum": 0.9, "dampening": 0, "weight_decay": 0.0001, "nesterov": False, "params": ids}
        ],
    }
    long_name = "x" * 300
    saved = {"epoch": 90, "arch": "resnet18", "best_prec1": 69.758, "state_dict": state, "optimizer": optimizer}
    saved[long_name] = Tensor("94271103431728", 0, (4,), (1,))
    return saved, stored


FILES = {
    "python2-torch0.3-state-dict.pt": (state_dict_03, "0.3"),
    "python2-torch0.4-state-dict.pt": (state_dict_04, "0.4"),
    "python2-torch0.4-training.pt": (training_04, "0.4"),
}


def main() -> None:
    for name, (make, version) in FILES.items():
        saved, stored = make()
        (HERE / name).write_bytes(legacy_file(saved, stored, version))
        print(name, (HERE / name).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
