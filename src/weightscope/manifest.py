"""Integrity manifests: a SHA-256 of each tensor's logical bytes, and one digest of the whole model.

What is hashed is a tensor's values as reading gives them, not the bytes a format stores, so the
same weights hash the same in every format (a safetensors file, a ``torch.save`` state dict, an
``.npz``, a TensorFlow checkpoint's variables of the same names):

- a tensor's digest is the SHA-256 of its elements in C order (row-major, the last axis fastest),
  each in its dtype's little-endian bytes; a bool is one byte, 0 or 1; a string tensor's element
  is its UTF-8 bytes after their length as a little-endian uint64. A tensor stored quantised in
  blocks (GGUF's Q4_K, ...) hashes as the float32 values it reads as (its dtype says so);
- a tensor's dtype is its numpy name (``float32``, ``bfloat16``, ``float8_e4m3fn``, ``bool``), or
  ``string``; its shape the list of its dimensions;
- the model digest is the SHA-256 of one line per tensor, sorted by name (by Unicode code point),
  each ``NAME DTYPE SHAPE DIGEST\\n`` in UTF-8: NAME as a JSON string with every non-ASCII character
  escaped (``"layer1.weight"``), SHAPE as JSON without spaces (``[64,3,7,7]``, ``[]`` for a
  scalar), DIGEST the tensor's hex digest. The lines are those of the model's tensors: bookkeeping
  (a TensorFlow checkpoint's ``_CHECKPOINTABLE_OBJECT_GRAPH`` and ``save_counter``, PyTorch's
  ``num_batches_tracked``: what ``convert`` leaves out as bookkeeping) has a digest of its own in the
  manifest, named under ``model_sha256_leaves_out``, but no line. Two checkpoints have the same model
  digest exactly when they hold model tensors of the same names, dtypes, shapes and values, so a
  checkpoint and its ``convert``ed copy have the same.

Hashing streams: a tensor stored as plain bytes is read ``CHUNK_BYTES`` at a time (slices of the
mapped file, or range reads of a remote one); any other (compressed, strided, quantised) is read
whole by its reader, then hashed in chunks of that size, so no more than one tensor and one chunk
are held at a time. A manifest is the JSON ``weightscope hash --json`` prints (``manifest_json``);
``compare`` checks a checkpoint against one, tensor by tensor.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from weightscope.checkpoint import Checkpoint
from weightscope.errors import UsageError, WeightscopeError, kept
from weightscope.lazy import is_plain

Advance = Callable[[int, int], None]  # (tensors, bytes) more done

CHUNK_BYTES = 16 << 20
MANIFEST_KIND = "weightscope-manifest"
MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 1 << 30  # a manifest of millions of tensors stays well under this


@dataclass(frozen=True)
class TensorDigest:
    """One tensor's entry in a manifest."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    sha256: str

    def line(self) -> str:
        """The tensor's line in the model digest (see the module's docstring)."""
        shape = json.dumps(list(self.shape), separators=(",", ":"))
        return f"{json.dumps(self.name, ensure_ascii=True)} {self.dtype} {shape} {self.sha256}\n"


def model_digest(tensors: Mapping[str, TensorDigest], leave_out: Collection[str] = ()) -> str:
    """The SHA-256 over the sorted lines of ``tensors`` but those named in ``leave_out``: the whole model's digest."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        if name not in leave_out:
            digest.update(tensors[name].line().encode("utf-8"))
    return digest.hexdigest()


def bookkeeping(ckpt: Checkpoint) -> list[str]:
    """The tensors of ``ckpt`` that the model digest leaves out: its bookkeeping, in its order."""
    return [name for name in ckpt if ckpt.role(name).kind == "bookkeeping"]


def dtype_name(dtype: np.dtype) -> str:
    return "string" if dtype.kind in "OSU" else dtype.name


def _canonical(chunk: np.ndarray) -> memoryview:
    """The little-endian C-order bytes of ``chunk`` (a bool as 0 or 1)."""
    if chunk.dtype.kind == "b":
        chunk = chunk.view(np.uint8) != 0  # a hostile file's bool byte of 2 is still true
    elif chunk.dtype.byteorder == ">":
        chunk = chunk.astype(chunk.dtype.newbyteorder("<"))
    return np.ascontiguousarray(chunk).reshape(-1).view(np.uint8).data  # any dtype's bytes, ml_dtypes' too


def _chunks(array: np.ndarray) -> Iterator[np.ndarray]:
    """``array`` in C order, in blocks of at most about ``CHUNK_BYTES``: runs of whole rows, else parts of a row."""
    if array.ndim == 0 or array.nbytes <= CHUNK_BYTES:
        yield array
        return
    if array.flags.c_contiguous:
        flat = array.reshape(-1)
        step = max(1, CHUNK_BYTES // array.itemsize)
        for start in range(0, flat.size, step):
            yield flat[start : start + step]
        return
    row_bytes = array[0].nbytes if len(array) else 0
    rows = max(1, CHUNK_BYTES // max(1, row_bytes))
    for start in range(0, len(array), rows):
        if rows == 1:
            yield from _chunks(array[start])
        else:
            yield array[start : start + rows]


def _update_strings(digest: Any, array: np.ndarray) -> None:
    for value in array.reshape(-1):
        data = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)


def tensor_digest(ckpt: Checkpoint, name: str) -> TensorDigest:
    """The digest of tensor ``name`` of ``ckpt``, streamed (see the module's docstring)."""
    info = ckpt.info(name)
    extent = ckpt.extent(name)
    digest = hashlib.sha256()
    if extent is not None and is_plain(info, extent) and not extent.checksum:
        # plain bytes with no checksum to check: read a range of rows at a time (a view of a mapped file)
        whole = ckpt.slice(name)
        rows = max(1, CHUNK_BYTES // max(1, info.dtype.itemsize * math.prod(info.shape[1:])))
        if not info.shape:
            digest.update(_canonical(np.asarray(whole[()])))
        for start in range(0, info.shape[0] if info.shape else 0, rows):
            for chunk in _chunks(np.asarray(whole[start : start + rows])):
                digest.update(_canonical(chunk))
        dtype = info.dtype
    else:
        array = ckpt[name]
        dtype = array.dtype
        if dtype.kind in "OSU":
            _update_strings(digest, array)
        else:
            for chunk in _chunks(array):
                digest.update(_canonical(chunk))
    return TensorDigest(name, dtype_name(dtype), tuple(info.shape), digest.hexdigest())


def digests(ckpt: Checkpoint, advance: Advance | None = None) -> Iterator[TensorDigest | WeightscopeError]:
    """Each tensor's digest, in the checkpoint's order; a tensor that cannot be read, its error instead (kept).
    ``advance(1, nbytes)`` is told as each tensor is done (a progress bar's)."""
    for name in ckpt:
        try:
            yield tensor_digest(ckpt, name)
        except WeightscopeError as error:
            yield kept(error)
        if advance is not None:
            advance(1, ckpt.info(name).nbytes)


def manifest_json(
    tensors: Mapping[str, TensorDigest], *, path: str, format: str, leave_out: Sequence[str] = ()
) -> dict[str, Any]:
    """The manifest document: what ``hash --json`` prints and ``verify --manifest`` reads; ``leave_out`` names the
    bookkeeping tensors the model digest has no line for."""
    return {
        "kind": MANIFEST_KIND,
        "version": MANIFEST_VERSION,
        "algorithm": "sha256",
        "path": path,
        "format": format,
        "model_sha256": model_digest(tensors, leave_out),
        "model_sha256_leaves_out": list(leave_out),
        "tensors": {
            name: {"dtype": entry.dtype, "shape": list(entry.shape), "sha256": entry.sha256}
            for name, entry in tensors.items()
        },
    }


def load_manifest(path: Path) -> dict[str, TensorDigest]:
    """The tensors a manifest file lists; a file that is no manifest is a ``UsageError`` naming what is wrong."""
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise UsageError(f"{path}: {size} bytes; a manifest is at most {MAX_MANIFEST_BYTES}")
        document = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as error:
        if isinstance(error, UsageError):
            raise
        raise UsageError(f"{path}: not a manifest: not JSON ({' '.join(str(error).split())})") from None
    except FileNotFoundError:
        raise UsageError(f"{path}: no such manifest") from None
    if not isinstance(document, dict) or document.get("kind") != MANIFEST_KIND:
        raise UsageError(
            f'{path}: not a manifest: no "kind": "{MANIFEST_KIND}" (make one with weightscope hash --json)'
        )
    if document.get("version") != MANIFEST_VERSION or document.get("algorithm") != "sha256":
        raise UsageError(
            f"{path}: manifest version {document.get('version')!r}, algorithm "
            f"{document.get('algorithm')!r}; weightscope reads version {MANIFEST_VERSION}, sha256"
        )
    tensors = document.get("tensors")
    if not isinstance(tensors, dict):
        raise UsageError(f'{path}: the manifest\'s "tensors" is not an object')
    entries = {}
    for name, entry in tensors.items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("dtype"), str)
            and isinstance(entry.get("sha256"), str)
            and isinstance(entry.get("shape"), list)
            and all(isinstance(size, int) and not isinstance(size, bool) for size in entry["shape"])
        ):
            raise UsageError(
                f"{path}: the manifest's entry for tensor {json.dumps(name)} is not "
                "{dtype: string, shape: [integers], sha256: string}"
            )
        entries[name] = TensorDigest(name, entry["dtype"], tuple(entry["shape"]), entry["sha256"].lower())
    return entries


@dataclass
class Comparison:
    """A checkpoint against a manifest: what is missing, extra, different or unreadable."""

    matched: int = 0
    missing: list[str] = field(default_factory=list)  # in the manifest, not in the checkpoint
    extra: list[str] = field(default_factory=list)  # in the checkpoint, not in the manifest
    different: list[tuple[TensorDigest, TensorDigest]] = field(default_factory=list)  # (expected, found)
    unreadable: list[WeightscopeError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.different or self.unreadable)


def compare(ckpt: Checkpoint, expected: Mapping[str, TensorDigest], advance: Advance | None = None) -> Comparison:
    """Hash every tensor of ``ckpt`` and hold each against its entry in ``expected`` (``advance`` as ``digests``)."""
    present = set(ckpt)
    result = Comparison(missing=[name for name in expected if name not in present])
    for found in digests(ckpt, advance):
        if isinstance(found, WeightscopeError):
            result.unreadable.append(found)
        elif found.name not in expected:
            result.extra.append(found.name)
        elif expected[found.name] != found:
            result.different.append((expected[found.name], found))
        else:
            result.matched += 1
    return result
