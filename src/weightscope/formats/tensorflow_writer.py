"""Writing TensorFlow checkpoints: what ``tf.train.Checkpoint.write`` and TF1's ``Saver`` write, without TensorFlow.

A prefix's data file ``<prefix>.data-00000-of-00001`` (each tensor's bytes in the order
given, strings as TensorFlow lays them out: varint lengths, their masked CRC32C, then the
bytes) and its index ``<prefix>.index`` (a LevelDB-style table of ``BundleEntryProto``
sorted by name, after the ``BundleHeaderProto``), then the directory's ``checkpoint``
state file. The bytes are the reader's, ``weightscope.formats.tensorflow``, which
describes them.
"""

from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from weightscope._crc32c import crc32c
from weightscope.atomic import atomic_files
from weightscope.containers.table import build_table, encode_varint, mask_crc
from weightscope.dtypes import ELEMENT_TYPES, tensorflow_code
from weightscope.errors import UsageError
from weightscope.formats.tensorflow import _STRING_CODE, data_file_name
from weightscope.formats.tf_state import STATE_FILE, read_checkpoint_state
from weightscope.writing import Holds, Tensors, Writer, checked, little_endian, plan

if TYPE_CHECKING:
    from weightscope.formats import Staging


def _string_tensor_bytes(array: np.ndarray, name: str) -> tuple[bytes, int]:
    """The bytes of a string tensor as TensorFlow writes them, and its entry checksum."""
    strings = []
    for value in array.ravel():
        if isinstance(value, str):
            value = value.encode("utf-8")
        if not isinstance(value, bytes | np.bytes_):
            raise UsageError(f"tensor '{name}': an object array must hold only bytes or str")
        strings.append(bytes(value))
    crc = 0
    lengths = bytearray()
    for value in strings:
        lengths += encode_varint(len(value))
        crc = crc32c(struct.pack("<I" if len(value) <= 0xFFFFFFFF else "<Q", len(value)), crc)
    length_checksum = struct.pack("<I", mask_crc(crc))
    crc = crc32c(length_checksum, crc)
    body = b"".join(strings)
    return bytes(lengths) + length_checksum + body, mask_crc(crc32c(body, crc))


def _stored_key(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")  # a name read from a file as bytes is written as those bytes


# What the files hold: every type with a TensorFlow code and a numpy dtype (strings as object arrays); names
# are the index's keys, bytes that need not be UTF-8.
HOLDS = Holds(
    "TensorFlow",
    "model.ckpt",
    target="a checkpoint prefix",
    dtypes=frozenset(e.name for e in ELEMENT_TYPES if e.tensorflow is not None and e.numpy_name is not None),
    name_errors="surrogateescape",
    stored_as=_stored_key,
)


def save(
    tensors: Tensors | Mapping[str, ArrayLike], path: str | os.PathLike[str], *, update_state: bool = True
) -> Path:
    """Write ``tensors`` as a TensorFlow checkpoint at prefix ``path``; returns the prefix.

    Every tensor is planned (name, type, shape) before a file is made, and each array is
    checked against its plan before its bytes are written. Tensor data goes to the data
    file in the mapping's order, streamed from the arrays (memory-mapped views included);
    the index lists them sorted, as TensorFlow does. With ``update_state`` the directory's
    ``checkpoint`` file is updated the way TensorFlow's savers do: this prefix becomes the
    newest, earlier entries are kept (where ``checkpoint`` is a directory, it is left as
    it is and a warning says so). All files are written under temporary names and renamed
    into place only when all are complete: data, index, then the state file.
    """
    write(tensors, path, update_state=update_state)
    return Path(path)


def write(
    tensors: Tensors | Mapping[str, ArrayLike], path: str | os.PathLike[str], *, update_state: bool = True
) -> list[Path]:
    """``save``, returning the files written in the order they were renamed into place (the registry's
    ``Writer``): data, index, then the state file when updated."""
    from weightscope import _proto

    prefix = Path(path)
    source, specs = plan(tensors, prefix, HOLDS)
    types = [_STRING_CODE if spec.dtype.kind == "O" else tensorflow_code(spec.dtype) for spec in specs]
    state, not_recorded = planned_state(prefix) if update_state else (None, None)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    entries: list[tuple[bytes, bytes]] = []
    written = [Path(data_file_name(str(prefix), 0, 1)), Path(f"{prefix}.index")]
    with atomic_files() as files:
        with files.create(written[0]) as data:
            offset = 0
            for spec, code in zip(specs, types, strict=True):
                array = checked(source.array(spec.name), spec)
                entry = _proto.BundleEntryProto(dtype=code)
                entry.shape.SetInParent()  # TF always writes the shape, even a scalar's
                for size in spec.shape:
                    entry.shape.dim.add(size=size)
                payload: bytes | memoryview
                if code == _STRING_CODE:
                    payload, checksum = _string_tensor_bytes(array, spec.name)
                else:
                    payload = little_endian(array).reshape(-1).view(np.uint8).data
                    checksum = mask_crc(crc32c(payload))
                size = len(payload)  # bytes: a flat uint8 view has one element per byte
                data.write(payload)
                del array, payload
                entry.offset, entry.size, entry.crc32c = offset, size, checksum
                offset += size
                entries.append((_stored_key(spec.name), entry.SerializeToString()))
            data.flush()
            os.fsync(data.fileno())
        entries.sort()
        header = _proto.BundleHeaderProto(num_shards=1)
        header.version.producer = 1
        with files.create(written[1]) as index:
            index.write(build_table([(b"", header.SerializeToString()), *entries]))
            index.flush()
            os.fsync(index.fileno())
        if state is not None:
            written.append(prefix.parent / STATE_FILE)
            with files.create(written[2]) as handle:
                handle.write(state)
                handle.flush()
                os.fsync(handle.fileno())
    if not_recorded is not None:
        warnings.warn(not_recorded, stacklevel=3)
    return written


WRITER = Writer(HOLDS, write)


def planned_state(prefix: Path) -> tuple[bytes | None, str | None]:
    """The directory's ``checkpoint`` file with ``prefix`` made the newest (earlier entries kept,
    as TensorFlow's savers keep them), or None and why it cannot be: a ``checkpoint`` there
    that is not a regular file (a directory called ``checkpoint``) is left as it is."""
    from google.protobuf import text_format

    from weightscope import _proto

    directory = prefix.parent
    path = directory / STATE_FILE
    if path.exists() and not path.is_file():
        what = "a directory" if path.is_dir() else "not a regular file"
        return None, (
            f"{path} is {what}, not TensorFlow's checkpoint state file: left as it is, so the new checkpoint "
            f"is not recorded there (open it by its prefix, {prefix})"
        )
    previous = read_checkpoint_state(directory)
    recorded = prefix.name  # relative to the directory, as TF records paths it saved there
    paths = [p for p in (previous.all_model_checkpoint_paths if previous else []) if p != recorded]
    state = _proto.CheckpointState(model_checkpoint_path=recorded, all_model_checkpoint_paths=[*paths, recorded])
    return text_format.MessageToString(state).encode("utf-8"), None


def staging(destination: Path, names: Sequence[str]) -> Staging:
    """What ``convert`` does around this writer: the state file is not updated by it but planned here and moved
    into place last, after the data and the index the writer wrote."""
    from weightscope.formats import Staging

    state, not_recorded = planned_state(destination)
    return Staging(
        options={"update_state": False},
        files={} if state is None else {STATE_FILE: state},
        notes=() if not_recorded is None else (not_recorded,),
    )
