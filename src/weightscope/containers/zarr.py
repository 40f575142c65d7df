"""Zarr arrays as tensorstore writes them for Orbax: v2 ``.zarray`` and v3 ``zarr.json`` metadata, chunks by key.

Read (``docs/formats`` 4.3, checked on Orbax's own files): a regular chunk grid in C order; v2 with no filters
and no compressor or ``{"id": "zstd"}`` (``dimension_separator`` ``.`` or ``/``; a scalar's chunk is ``0``);
v3 with ``bytes`` (either endian), an optional ``zstd``, alone or inside ``sharding_indexed`` (inner chunks,
then at the shard's end an index of ``(offset, nbytes)`` uint64 LE per inner chunk, ``2^64-1`` for none, with
its CRC-32C when ``index_codecs`` says so; keys ``c/i/j``). Data types by name: numpy's integer, float and bool
types, and tensorstore's ``bfloat16`` and float8 names. A missing chunk holds the fill value (``null``: zero, as
tensorstore 0.1.86 reads it: checked). Every chunk must decode to exactly its chunk's bytes (edge chunks are
full-size); others are refused, and a zstd frame is decoded into a buffer of that size, never more.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Literal, NamedTuple

import numpy as np

from weightscope._crc32c import crc32c
from weightscope.containers.ocdbt import zstd_decode
from weightscope.dtypes import BY_NAME, check_rank, check_size
from weightscope.errors import ChecksumMismatchError, CorruptCheckpointError, LimitExceededError, UnsupportedFormatError

METADATA_V2 = ".zarray"
METADATA_V3 = "zarr.json"
_V2_NUMERIC = re.compile(r"[<>|][biuf]\d{1,2}")
_NONE = (1 << 64) - 1
_WORKERS = max(1, min(4, os.cpu_count() or 1))  # threads decoding one array's chunks
_PARALLEL_BYTES = 4 << 20  # below this an array's chunks are decoded in the calling thread
ChunkReader = Callable[[str], "bytes | memoryview | None"]  # a chunk's stored bytes by key; None where missing


class ZarrArray(NamedTuple):
    shape: tuple[int, ...]
    dtype: np.dtype  # the stored type, in its byte order
    type_name: str  # weightscope's name of it (``bfloat16``)
    chunks: tuple[int, ...]  # the grid's chunk (a v3 shard's) shape
    compressed: bool  # zstd
    fill: np.ndarray  # 0-d, of the array's type
    separator: str
    zarr3: bool
    inner: tuple[int, ...] | None = None  # a v3 shard's inner chunk shape
    index_crc: bool = False

    def chunk_keys(self) -> Iterator[tuple[tuple[int, ...], str]]:
        """Each chunk's grid position and key, in C order."""
        counts = [-(-size // chunk) if chunk else 0 for size, chunk in zip(self.shape, self.chunks, strict=True)]
        for position in itertools.product(*(range(count) for count in counts)):
            if self.zarr3:
                yield position, self.separator.join(("c", *map(str, position)))
            else:
                yield position, self.separator.join(map(str, position)) or "0"


def _fail(where: object, problem: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"{where}: {problem}")


def _dims(value: object, what: str, where: object, *, positive: bool = False) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(type(item) is int and item >= int(positive) for item in value):
        raise _fail(where, f"{what} {value!r} is not a list of {'positive' if positive else 'non-negative'} integers")
    check_rank(value, f"{where}")
    return tuple(value)


def _element(name: object, where: object) -> tuple[np.dtype, str]:
    """The numpy type and weightscope name of a zarr data type name (v2 ``<f4``/``bfloat16``, v3 ``float32``)."""
    if isinstance(name, str) and _V2_NUMERIC.fullmatch(name):
        try:
            dtype = np.dtype(name)  # matched: a plain integer, float or bool type, never an object or record
        except TypeError:
            raise UnsupportedFormatError(f"{where}: zarr data type {name!r} is not one weightscope reads") from None
        entry = BY_NAME.get(dtype.name)
        if entry is not None and entry.dtype == dtype.newbyteorder("="):
            return dtype, entry.name
    entry = BY_NAME.get(name) if isinstance(name, str) else None
    if entry is None or entry.dtype is None or entry.dtype.kind == "O" or entry.name.startswith(("q", "string")):
        raise UnsupportedFormatError(f"{where}: zarr data type {name!r} is not one weightscope reads")
    return entry.dtype, entry.name


def _object(value: object, what: str, where: object) -> dict[str, Any]:
    """``value`` when it is a JSON object (an absent one is empty), else an error naming ``what`` it should be."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(where, f"zarr {what} {value!r} is no JSON object")
    return value


def _fill(value: object, dtype: np.dtype, where: object) -> np.ndarray:
    """The fill value as a 0-d array of the array's (native) type."""
    if value is None:
        value = 0
    elif isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        value = float(value.replace("Infinity", "inf"))
    elif not isinstance(value, bool | int | float):
        raise UnsupportedFormatError(f"{where}: fill value {value!r} is not one weightscope reads")
    try:
        return np.asarray(value, dtype=dtype.newbyteorder("="))
    except (OverflowError, ValueError):
        raise _fail(where, f"fill value {value!r} is no {dtype.name}") from None


def parse(text: bytes | memoryview, where: object) -> ZarrArray:
    """An array's metadata from its ``.zarray`` or ``zarr.json`` text."""
    try:
        meta = json.loads(bytes(text))
    except (ValueError, RecursionError) as error:
        raise _fail(where, f"zarr metadata is no JSON ({error})") from None
    if not isinstance(meta, dict):
        raise _fail(where, "zarr metadata is no JSON object")
    version = meta.get("zarr_format")
    if version == 2:
        array = _parse_v2(meta, where)
    elif version == 3:
        array = _parse_v3(meta, where)
    else:
        raise UnsupportedFormatError(f"{where}: zarr_format {version!r} is not 2 or 3")
    if len(array.chunks) != len(array.shape) or (array.inner is not None and len(array.inner) != len(array.shape)):
        raise _fail(where, f"chunk shape {list(array.chunks)} does not match shape {list(array.shape)}")
    check_size(array.shape, array.dtype.itemsize, f"{where}")
    check_size(array.chunks, array.dtype.itemsize, f"{where}")
    return array


def _parse_v2(meta: dict[str, Any], where: object) -> ZarrArray:
    dtype, name = _element(meta.get("dtype"), where)
    compressor = meta.get("compressor")
    if compressor is not None and _object(compressor, "compressor", where).get("id") != "zstd":
        raise UnsupportedFormatError(f"{where}: zarr compressor {compressor!r} is not read (zstd or none)")
    if meta.get("filters") not in (None, []):
        raise UnsupportedFormatError(f"{where}: zarr filters {meta['filters']!r} are not read")
    if meta.get("order", "C") != "C":
        raise UnsupportedFormatError(f"{where}: zarr order {meta.get('order')!r} is not read (C only)")
    separator = meta.get("dimension_separator", ".")
    if separator not in (".", "/"):
        raise _fail(where, f"dimension_separator {separator!r} is neither '.' nor '/'")
    shape = _dims(meta.get("shape"), "shape", where)
    chunks = _dims(meta.get("chunks"), "chunks", where, positive=True)
    return ZarrArray(shape, dtype, name, chunks, compressor is not None, _fill(meta.get("fill_value"), dtype, where),
                     separator, zarr3=False)  # fmt: skip


def _codecs(codecs: object, where: object) -> tuple[Literal["<", ">"], bool]:
    """The byte order and whether zstd follows, from a v3 codec list ``[bytes, zstd?]``."""
    if not isinstance(codecs, list) or not codecs or not all(isinstance(codec, dict) for codec in codecs):
        raise _fail(where, f"zarr codecs {codecs!r} are no list of objects")
    first, *rest = codecs
    if first.get("name") != "bytes" or [codec.get("name") for codec in rest] not in ([], ["zstd"]):
        names = [codec.get("name") for codec in codecs]
        raise UnsupportedFormatError(f"{where}: zarr codecs {names} are not read (bytes, then zstd or nothing)")
    endian = _object(first.get("configuration"), "bytes codec", where).get("endian", "little")
    if endian not in ("little", "big"):
        raise _fail(where, f"byte order {endian!r}")
    return "<" if endian == "little" else ">", bool(rest)


def _parse_v3(meta: dict[str, Any], where: object) -> ZarrArray:
    if meta.get("node_type") != "array":
        raise UnsupportedFormatError(f"{where}: zarr node type {meta.get('node_type')!r} is no array")
    dtype, name = _element(meta.get("data_type"), where)
    grid = _object(meta.get("chunk_grid"), "chunk grid", where)
    if grid.get("name") != "regular":
        raise UnsupportedFormatError(f"{where}: zarr chunk grid {grid!r} is not read (regular only)")
    chunks = _dims(_object(grid.get("configuration"), "grid", where).get("chunk_shape"), "chunk_shape", where,
                   positive=True)  # fmt: skip
    encoding = _object(meta.get("chunk_key_encoding"), "chunk key encoding", where) or {"name": "default"}
    separator = _object(encoding.get("configuration"), "chunk key encoding", where).get(
        "separator", "/" if encoding.get("name") == "default" else "."
    )
    if encoding.get("name") != "default" or separator not in (".", "/"):
        raise UnsupportedFormatError(f"{where}: zarr chunk key encoding {encoding!r} is not read")
    codecs = meta.get("codecs")
    inner: tuple[int, ...] | None = None
    index_crc = False
    sharded = isinstance(codecs, list) and len(codecs) == 1 and isinstance(codecs[0], dict)
    if sharded and codecs[0].get("name") == "sharding_indexed":  # type: ignore[index]
        config = _object(codecs[0].get("configuration"), "sharding", where)  # type: ignore[index]
        inner = _dims(config.get("chunk_shape"), "inner chunk_shape", where, positive=True)
        if len(inner) != len(chunks) or any(shard % part for shard, part in zip(chunks, inner, strict=True)):
            raise _fail(where, f"inner chunks {list(inner)} do not tile shards of {list(chunks)}")
        if config.get("index_location", "end") != "end":
            raise UnsupportedFormatError(f"{where}: a shard index at the start is not read")
        index_codecs = config.get("index_codecs")
        index = [_object(codec, "codec", where).get("name") for codec in index_codecs or []] if isinstance(
            index_codecs, list) else None  # fmt: skip
        if index not in (["bytes"], ["bytes", "crc32c"]):
            raise UnsupportedFormatError(f"{where}: shard index codecs {index} are not read")
        index_crc = index == ["bytes", "crc32c"]
        codecs = config.get("codecs")
    order, compressed = _codecs(codecs, where)
    dtype = dtype.newbyteorder(order) if dtype.itemsize > 1 else dtype
    shape = _dims(meta.get("shape"), "shape", where)
    fill = _fill(meta.get("fill_value"), dtype, where)
    return ZarrArray(shape, dtype, name, chunks, compressed, fill, separator, True, inner, index_crc)


def _decode(array: ZarrArray, stored: bytes | memoryview, shape: tuple[int, ...], what: str, into: np.ndarray) -> None:
    """Decode one chunk of ``shape`` into ``into`` (its values, of the array's type, in the file's byte order), which
    it must fill exactly: a chunk of any other size, decoded or stored, is refused."""
    expected = math.prod(shape) * array.dtype.itemsize
    target = into.reshape(-1).view(np.uint8)
    if not array.compressed:
        if len(stored) != expected:
            raise CorruptCheckpointError(f"{what} holds {len(stored)} bytes, not the {expected} of a chunk of "
                                         f"{list(shape)}")  # fmt: skip
        target[:] = np.frombuffer(stored, np.uint8)
        return
    try:
        size = zstd_decode(stored, expected, "its zstd frame", what, into=target).size
    except LimitExceededError:
        raise CorruptCheckpointError(
            f"{what} decodes to more than the {expected} bytes of a chunk of {list(shape)}"
        ) from None
    if size != expected:
        raise CorruptCheckpointError(f"{what} decodes to {size} bytes, not the {expected} of a chunk of {list(shape)}")


def _shard(array: ZarrArray, stored: bytes | memoryview, what: str) -> list[bytes | memoryview | None]:
    """A v3 shard's inner chunks' stored bytes, in C order (None for those not stored), its index checked."""
    assert array.inner is not None
    count = math.prod(shard // part for shard, part in zip(array.chunks, array.inner, strict=True))
    index_bytes = 16 * count + 4 * array.index_crc
    if len(stored) < index_bytes:
        raise CorruptCheckpointError(f"{what} is {len(stored)} bytes, shorter than its index of {index_bytes}")
    index = bytes(stored[len(stored) - index_bytes :])
    if array.index_crc:
        computed, kept = crc32c(index[:-4]), int.from_bytes(index[-4:], "little")
        if computed != kept:
            raise ChecksumMismatchError(
                f"{what}'s index is damaged: stored CRC-32C {kept:#010x}, computed {computed:#010x}"
            )
    body = len(stored) - index_bytes
    pieces: list[bytes | memoryview | None] = []
    for number, (offset, nbytes) in enumerate(np.frombuffer(index, "<u8", count=2 * count).reshape(-1, 2).tolist()):
        if offset == _NONE and nbytes == _NONE:
            pieces.append(None)
        elif offset + nbytes > body:
            raise CorruptCheckpointError(f"{what}: inner chunk {number} at {offset}..{offset + nbytes} lies outside "
                                         f"the shard's {body} bytes of chunks")  # fmt: skip
        else:
            pieces.append(stored[offset : offset + nbytes])
    return pieces


def assemble(array: ZarrArray, read: ChunkReader, what: str) -> np.ndarray:
    """The whole array from its chunks (``read`` gives each one's stored bytes by key), in native byte order.

    A chunk lying whole and contiguous in the array (one covering the array, or whole rows of it) is decoded in
    place; an edge chunk, or one in another byte order, through a buffer of its own. The stored bytes are looked up
    in order, then decoded on a few threads where there are several chunks of some size (zstd releases the GIL, as
    tensorstore decodes on its own threads); the first chunk in order that fails is the error raised."""
    native = array.dtype.newbyteorder("=")
    out = np.empty(array.shape, native)
    inner = array.inner or array.chunks
    per_shard = [shard // part for shard, part in zip(array.chunks, inner, strict=True)]
    jobs: list[Callable[[], None]] = []
    for position, key in array.chunk_keys():
        stored = read(key)
        where = f"{what} chunk {key}"
        if array.inner is None:
            pieces: list[bytes | memoryview | None] = [stored]
        else:
            pieces = [None] * math.prod(per_shard) if stored is None else _shard(array, stored, where)
        for part, piece in zip(itertools.product(*map(range, per_shard)), pieces, strict=True):
            start = [outer * chunk + index * size for outer, chunk, index, size in
                     zip(position, array.chunks, part, inner, strict=True)]  # fmt: skip
            target = tuple(slice(min(begin, total), min(begin + size, total)) for begin, size, total in
                           zip(start, inner, array.shape, strict=True))  # fmt: skip
            jobs.append(partial(_place, array, piece, where, out[target] if target else out[...], target))
    workers = min(len(jobs), _WORKERS) if out.nbytes >= _PARALLEL_BYTES else 1
    if workers < 2:
        for job in jobs:
            job()
        return out
    with ThreadPoolExecutor(workers) as pool:
        for done in [pool.submit(job) for job in jobs]:
            done.result()
    return out


def _place(array: ZarrArray, piece: bytes | memoryview | None, where: str, region: np.ndarray, target: tuple) -> None:
    """One chunk's values (the fill value where it is not stored) into ``region``, its view of the array."""
    inner = array.inner or array.chunks
    if piece is None:
        region[...] = array.fill
    elif region.shape == inner and region.flags.c_contiguous and array.dtype == region.dtype:
        _decode(array, piece, inner, where, region)
    else:
        buffer = np.empty(inner, array.dtype)
        _decode(array, piece, inner, where, buffer)
        region[...] = buffer[tuple(slice(0, cut.stop - cut.start) for cut in target)]
