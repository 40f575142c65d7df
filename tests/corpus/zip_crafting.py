"""Zips assembled header by header, consistent or not: the archives two zip readers read differently.

``stored_zip`` writes stored members, their local headers, the central directory and the
end record; each keyword bends one thing the way a forger would. Used by
``make_pytorch_corpus.py`` and ``tests/test_zip_differentials.py``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

LOCAL = struct.Struct("<4sHHHHHIIIHH")
CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
END = struct.Struct("<4sHHHHIIH")
ZIP64_END = struct.Struct("<4sQHHIIQQQQ")
ZIP64_LOCATOR = struct.Struct("<4sIQI")
DATE = (1 << 5) | 1  # 1980-01-01


def _name(name: str | bytes) -> bytes:
    return name.encode() if isinstance(name, str) else name


def members_and_directory(
    members: Sequence[tuple[str | bytes, bytes]],
    *,
    start: int = 0,
    stated_shift: int = 0,
    local: Mapping[str | bytes, Mapping[str, Any]] | None = None,
    central: Mapping[str | bytes, Mapping[str, Any]] | None = None,
) -> tuple[bytes, bytes]:
    """The members' local headers and data (written from ``start``) and their central directory.

    ``local`` / ``central`` override, per member name, the fields of its local header or
    directory entry: ``name``, ``crc``, ``size``, ``flags``, ``method``, ``offset`` (central).
    Each directory entry states its member's offset plus ``stated_shift``.
    """
    local, central = local or {}, central or {}
    body, directory = bytearray(), bytearray()
    for name, data in members:
        encoded = _name(name)
        offset = start + len(body)
        fields = {"name": encoded, "crc": zlib.crc32(data), "size": len(data), "flags": 0, "method": 0}
        mine = {**fields, **local.get(name, {})}
        body += LOCAL.pack(
            b"PK\x03\x04", 20, mine["flags"], mine["method"], 0, DATE, mine["crc"], mine["size"], mine["size"],
            len(mine["name"]), 0,
        )  # fmt: skip
        body += mine["name"] + data
        listed = {**fields, "offset": offset + stated_shift, **central.get(name, {})}
        directory += CENTRAL.pack(
            b"PK\x01\x02", 20, 20, listed["flags"], listed["method"], 0, DATE, listed["crc"], listed["size"],
            listed["size"], len(listed["name"]), 0, 0, 0, 0, 0, listed["offset"],
        )  # fmt: skip
        directory += listed["name"]
    return bytes(body), bytes(directory)


def end_record(count: int, size: int, offset: int, comment: bytes = b"") -> bytes:
    return END.pack(b"PK\x05\x06", 0, 0, count, count, size, offset, len(comment)) + comment


def stored_zip(
    members: Sequence[tuple[str | bytes, bytes]],
    *,
    before: bytes = b"",
    between: bytes = b"",
    comment: bytes = b"",
    stated_offset_shift: int = 0,
    count: int | None = None,
    local: Mapping[str | bytes, Mapping[str, Any]] | None = None,
    central: Mapping[str | bytes, Mapping[str, Any]] | None = None,
    zip64: Mapping[str, int] | None = None,
) -> bytes:
    """A zip of stored ``members``: ``before`` prepended (offsets not moved, as ``cat junk a.zip``
    makes), ``between`` the directory and the end records, whose stated directory offset is
    moved by ``stated_offset_shift`` and whose entry count may be forged. With ``zip64``, a
    zip64 end record and locator precede the end record; their ``offset`` (of the directory)
    and ``locator`` (where the zip64 end record is said to be) are moved by the values given."""
    body, directory = members_and_directory(members, local=local, central=central)
    stated = len(body) + stated_offset_shift
    entries = len(members) if count is None else count
    records = b""
    if zip64 is not None:
        at = len(body) + len(directory) + len(between)
        records = ZIP64_END.pack(
            b"PK\x06\x06", ZIP64_END.size - 12, 45, 45, 0, 0, entries, entries, len(directory),
            stated + zip64.get("offset", 0),
        ) + ZIP64_LOCATOR.pack(b"PK\x06\x07", 0, at + zip64.get("locator", 0), 1)  # fmt: skip
    return before + body + directory + between + records + end_record(entries, len(directory), stated, comment)


def two_directories(first: Sequence[tuple[str, bytes]], second: Sequence[tuple[str, bytes]]) -> bytes:
    """Both member sets' bytes, then two directories of the same size: the end record states
    the first's offset (miniz reads it there) and lies right after the second (``zipfile``
    reads the directory that ends there, shifting its offsets by the first's length)."""
    body_first, directory_first = members_and_directory(first)
    body_second, probe = members_and_directory(second, start=len(body_first))
    assert len(directory_first) == len(probe) and len(first) == len(second), "the directories must be alike in size"
    _, directory_second = members_and_directory(second, start=len(body_first), stated_shift=-len(directory_first))
    body = body_first + body_second
    return body + directory_first + directory_second + end_record(len(first), len(directory_second), len(body))


def tar_polyglot(legacy: bytes, members: Mapping[str, bytes]) -> bytes:
    """``legacy``, a legacy ``torch.save`` file whose bytes 100 to 512 are NULs (a string in its
    system info), made a tar header there too: ``tarfile`` opens the file, so ``torch.load``
    reads the tar ``members`` that follow it instead of its pickles."""
    import io
    import tarfile

    assert legacy[100:512] == bytes(412), "bytes 100 to 512 must be free for the tar header's fields"
    block = bytearray(legacy[:512])
    rest = len(legacy) - 512
    block[124:136] = b"%011o\0" % rest  # size: the member's data is the rest of the legacy file
    block[156:157] = b"0"  # a regular file
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)  # the checksum, of the header with its own field blank
    padding = bytes(-rest % 512)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return bytes(block) + legacy[512:] + padding + archive.getvalue()
