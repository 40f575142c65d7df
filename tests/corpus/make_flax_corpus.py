"""Write tests/corpus/flax/: broken and hostile Flax msgpack files, each named <Error>--<why>.msgpack.

Values are packed by msgpack (``msgpack.packb``, as ``flax.serialization`` packs them: an ndarray is ext type 1
holding ``packb((shape, dtype name, bytes), use_bin_type=True)``); then one thing is wrong per file. Run from the
repo root with the fixtures venv (``make fixtures-env``):
``.venv-fixtures/bin/python tests/corpus/make_flax_corpus.py``.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

FOLDER = Path(__file__).resolve().parent / "flax"


def _ndarray(shape: Any, dtype: Any, data: bytes, code: int = 1) -> msgpack.ExtType:
    return msgpack.ExtType(code, msgpack.packb((shape, dtype, data), use_bin_type=True))


def _array(values: np.ndarray) -> msgpack.ExtType:
    return _ndarray(list(values.shape), values.dtype.name, values.tobytes())


def _tree(**leaves: Any) -> bytes:
    return msgpack.packb({"params": {"Dense_0": leaves}}, use_bin_type=True)


GOOD = _tree(kernel=_array(np.ones((2, 3), np.float32)), bias=_array(np.zeros(3, np.float32)))
_MAP32 = b"\xdf"
_ARRAY32 = b"\xdd"


def _chunked(chunks: list[msgpack.ExtType], shape: list[int]) -> dict[str, Any]:
    return {
        "__msgpack_chunked_array__": True,
        "shape": {str(number): size for number, size in enumerate(shape)},
        "chunks": {str(number): chunk for number, chunk in enumerate(chunks)},
    }


CASES: dict[str, bytes] = {
    "TruncatedFileError--cut-inside-a-tensor": GOOD[:-5],
    "TruncatedFileError--cut-after-the-first-byte": GOOD[:1],
    "TruncatedFileError--map-claims-4-billion-entries": _MAP32 + struct.pack(">I", 2**32 - 1) + b"\xa1a\xc0",
    "TruncatedFileError--array-claims-4-billion-values": b"\x81\xa1a" + _ARRAY32 + struct.pack(">I", 2**32 - 1),
    "TruncatedFileError--bin-longer-than-the-file": b"\x81\xa1a\xc6" + struct.pack(">I", 2**31) + b"xx",
    "TruncatedFileError--ext-longer-than-the-file": b"\x81\xa1a\xc9" + struct.pack(">Ib", 2**31, 1) + b"xx",
    "CorruptCheckpointError--nested-200-maps-deep": b"\x81\xa1a" * 200 + b"\xc0",
    "CorruptCheckpointError--byte-0xc1": b"\x81\xa1a\xc1",
    "CorruptCheckpointError--key-not-utf-8": b"\x81\xa2\xff\xfe\xc0",
    "CorruptCheckpointError--key-given-twice": b"\x82\xa1a\x01\xa1a\x02",
    "CorruptCheckpointError--key-that-is-a-map": b"\x81\x80\x01",
    "CorruptCheckpointError--bytes-after-the-tree": GOOD + b"\xc0",
    "CorruptCheckpointError--buffer-shorter-than-the-shape": _tree(kernel=_ndarray([2, 3], "float32", bytes(20))),
    "CorruptCheckpointError--buffer-longer-than-the-shape": _tree(kernel=_ndarray([2, 3], "float32", bytes(28))),
    "CorruptCheckpointError--negative-dimension": _tree(kernel=_ndarray([-1, 3], "float32", bytes(24))),
    "CorruptCheckpointError--dimension-that-is-a-float": _tree(kernel=_ndarray([2.0, 3], "float32", bytes(24))),
    "CorruptCheckpointError--ndarray-payload-of-two-fields": _tree(
        kernel=msgpack.ExtType(1, msgpack.packb(([3], "float32"), use_bin_type=True))
    ),
    "CorruptCheckpointError--ndarray-payload-not-msgpack": _tree(kernel=msgpack.ExtType(1, b"\xc1")),
    "CorruptCheckpointError--ndarray-payload-with-bytes-after-it": _tree(
        kernel=msgpack.ExtType(1, msgpack.packb(([1], "int8", b"\x01"), use_bin_type=True) + b"\x00")
    ),
    "CorruptCheckpointError--complex-of-three-parts": _tree(c=msgpack.ExtType(2, msgpack.packb((1.0, 2.0, 3.0)))),
    "CorruptCheckpointError--name-given-twice-by-a-list": msgpack.packb({"a": {"0": 1}, "a/0": 2}, use_bin_type=True),
    "CorruptCheckpointError--chunks-of-two-dtypes": msgpack.packb(
        {"big": _chunked([_array(np.zeros(2, np.float32)), _array(np.zeros(2, np.float64))], [4])}
    ),
    "CorruptCheckpointError--chunks-that-add-up-to-another-size": msgpack.packb(
        {"big": _chunked([_array(np.zeros(2, np.float32)), _array(np.zeros(2, np.float32))], [5])}
    ),
    "CorruptCheckpointError--chunks-keyed-1-2": msgpack.packb(
        {
            "big": {
                "__msgpack_chunked_array__": True,
                "shape": {"0": 2},
                "chunks": {"1": _array(np.zeros(1)), "2": _array(np.zeros(1))},
            }
        }
    ),
    "CorruptCheckpointError--chunked-array-with-no-chunks": msgpack.packb(
        {"big": {"__msgpack_chunked_array__": True, "shape": {"0": 0}}}
    ),
    "UnsupportedFormatError--object-dtype": _tree(kernel=_ndarray([1], "object", bytes(8))),
    "UnsupportedFormatError--structured-dtype": _tree(kernel=_ndarray([1], "[('a', '<i4')]", bytes(4))),
    "UnsupportedFormatError--dtype-O": _tree(kernel=_ndarray([1], "O", bytes(8))),
    "UnsupportedFormatError--dtype-name-not-utf-8": _tree(kernel=_ndarray([1], b"\xfffloat32", bytes(4))),
    "UnsupportedFormatError--70-dimensions": _tree(kernel=_ndarray([1] * 70, "float32", bytes(4))),
    "UnsupportedFormatError--shape-of-2-64-elements": _tree(kernel=_ndarray([2**32, 2**32], "float32", bytes(4))),
    "UnsupportedFormatError--a-lone-number": msgpack.packb(7),
}


def main() -> None:
    FOLDER.mkdir(exist_ok=True)
    for old in FOLDER.glob("*--*"):
        old.unlink()
    for name, data in CASES.items():
        (FOLDER / f"{name}.msgpack").write_bytes(data)


if __name__ == "__main__":
    main()
