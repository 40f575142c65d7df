"""How ``torch.load(path)`` decides what a file is: one decision for sniffing, reading and ``scan``.

``torch.serialization.load`` (2.x) reads a file as a zip when its first four bytes are
a local header's signature ``PK\\x03\\x04`` (``_is_zipfile``: nothing else of the file is
looked at). Otherwise it goes to ``_legacy_load``, which first tries ``tarfile.open(f,
"r:")`` (the format of PyTorch before 0.4) and, when ``tarfile`` raises ``TarError``,
unpickles the file from its first byte (the format of PyTorch 0.4 to 1.5). A file both a
tar and a pickle stream would thus be loaded from its tar members: weightscope must not
read its pickles instead.

Imports nothing of the readers, so that sniffing stays cheap.
"""

from __future__ import annotations

from typing import Literal

from weightscope.containers.zip import LOCAL_SIGNATURE
from weightscope.errors import CorruptCheckpointError
from weightscope.sources import AnySource

TorchKind = Literal["zip", "tar", "legacy"]


def torch_kind(source: AnySource, path: object) -> TorchKind:
    """``"zip"``, ``"tar"`` or ``"legacy"``: which of its readers ``torch.load(path)`` uses on the file."""
    if bytes(source.read(0, min(len(LOCAL_SIGNATURE), source.size), "magic")) == LOCAL_SIGNATURE:
        return "zip"
    import tarfile  # only a file that is no zip pays for it (about 3 ms of every start of the command line)

    try:
        with tarfile.open(fileobj=_SourceFile(source), mode="r:"):  # type: ignore[call-overload]
            return "tar"
    except tarfile.TarError:
        return "legacy"
    except Exception as error:  # torch.load catches only TarError: anything else ends the load
        raise CorruptCheckpointError(f"{path}: torch.load cannot tell a tar from a pickle here ({error!r})") from None


class _SourceFile:
    """A read-only file object over a source, for ``tarfile``; a read never asks for more than the file holds."""

    def __init__(self, source: AnySource) -> None:
        self._source = source
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        remaining = max(0, self._source.size - self._position)
        length = remaining if size < 0 else min(size, remaining)
        data = bytes(self._source.read(self._position, length, "the file")) if length else b""
        self._position += length
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        position = offset + (0, self._position, self._source.size)[whence]
        if position < 0:
            raise OSError("negative seek position")
        self._position = position
        return position

    def tell(self) -> int:
        return self._position
