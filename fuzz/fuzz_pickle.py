"""Fuzz the allow-list unpickler: raw pickle bytes, loaded directly, scanned, and as a PyTorch zip's data.pkl."""

from __future__ import annotations

import contextlib
import io
import pickle
import zipfile
from collections import OrderedDict

import fuzzlib
from fuzz_pytorch_zip import torch_files

with fuzzlib.instrumented():
    from weightscope.containers.zip import ZipWriter
    from weightscope.errors import WeightscopeError
    from weightscope.formats.pytorch import _Unpickler

STORAGES = 24  # members archive/data/0 .. 23 beside the pickle, each of STORAGE_BYTES
STORAGE_BYTES = 256


def seeds() -> list[bytes]:
    """The data.pkl of real ``torch.save`` files, and plain values pickled at protocols 0 to 5."""
    files = []
    for saved in torch_files():
        with zipfile.ZipFile(io.BytesIO(saved)) as archive:
            (name,) = [name for name in archive.namelist() if name.endswith("/data.pkl")]
            files.append(archive.read(name))
    plain = {"a": [1, 2.5, None, True], "b": ("x", b"\x00\xff", -(2**70)), "c": OrderedDict(d={})}
    files += [pickle.dumps(plain, protocol) for protocol in range(6)]
    return files


def _zip(pickled: bytes) -> bytes:
    buffer = io.BytesIO()
    writer = ZipWriter(buffer, align=64)
    writer.add("archive/data.pkl", len(pickled), [pickled])
    writer.add("archive/byteorder", 6, [b"little"])
    for key in range(STORAGES):
        writer.add(f"archive/data/{key}", STORAGE_BYTES, [bytes(range(256)) * (STORAGE_BYTES // 256)])
    writer.add("archive/version", 2, [b"3\n"])
    writer.close()
    return buffer.getvalue()


def one_input(data: bytes) -> None:
    for scan in (False, True):
        with contextlib.suppress(WeightscopeError):
            _Unpickler(data, "fuzz", scan=scan).load()
    fuzzlib.exercise(fuzzlib.scratch_file("pickle.pt", _zip(data)), "pytorch")


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
