"""The zip archive of PyTorch checkpoints, ``.npz`` and ``.keras`` files: its directory and members.

Two readers meet every zip weightscope reads: Python's ``zipfile`` (``np.load``, Keras)
and miniz (``torch.load``). They disagree on some archives, and an archive they read
differently shows one set of tensors here and loads another there. ``read_directory``
therefore parses the end record, the zip64 records, the central directory and every
local header itself, and refuses (``CorruptCheckpointError``, naming the reason) any
archive on which the two could disagree:

- the end record is not at the end of the file (the last ``PK\\x05\\x06`` not followed by
  exactly its 22 bytes and comment), or its counts, size and offset contradict the zip64
  end record (which must sit just before its locator, where the locator says);
- bytes before the first member (``torch.load`` reads a file that does not start with a
  local header as its legacy format), or between the central directory and the end
  records (``zipfile`` then shifts every offset by their length, miniz does not): the
  directory must end where the end records begin, at the offset they state;
- a directory whose entries do not fill it exactly (``zipfile`` reads entries until its
  size is used, miniz reads the count), or malformed extra fields;
- names holding NUL (``zipfile`` cuts them there), two entries of one name, or of names
  equal ignoring ASCII case (miniz looks names up that way);
- a local header that is missing or disagrees with its directory entry in name, flags,
  compression method or, unless a data descriptor follows the data, CRC-32 and sizes;
- members overlapping each other or the central directory.

Encrypted members are unsupported (miniz refuses the whole archive). Then a reader must
refuse compression methods other than stored (0) and deflate (8), a stored member whose two
sizes differ, and a deflated member declaring more bytes than deflate can produce from its
compressed size (a zip bomb) — before inflating anything (``is_deflated``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from weightscope.errors import ChecksumMismatchError, CorruptCheckpointError, UnsupportedFormatError, UsageError
from weightscope.sources import AnySource

try:
    from weightscope import _kernels
except ImportError:  # built without a C compiler: zlib-ng's CRC-32 alone
    _kernels = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import numpy as np

STORED, DEFLATED = 0, 8
LOCAL_SIGNATURE = b"PK\x03\x04"
_CENTRAL_SIGNATURE = b"PK\x01\x02"
_END_SIGNATURE = b"PK\x05\x06"
_ZIP64_END_SIGNATURE = b"PK\x06\x06"
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ENCRYPTED = 0x1 | 0x40 | 0x2000  # encrypted, strong encryption, masked local header
_PATCHED = 0x20  # compressed patched data: zipfile refuses it
_DATA_DESCRIPTOR = 0x8  # CRC-32 and sizes follow the data; the local header's are zero
_UTF8_NAME_FLAG = 0x800
_ZIP64_EXTRA = 0x0001
_MAX_EXTRACT_VERSION = 63  # zipfile refuses archives needing a later zip version
_WIDE = 0xFFFFFFFF  # a 4-byte field whose value is in the zip64 extra field or end record
# Deflate writes at least 2 bits for a run of 258 bytes: at most ~1032 bytes out per byte
# in, plus the stream's fixed costs for tiny members.
DEFLATE_MAX_RATIO = 1032
DEFLATE_SLACK = 1024
_LOCAL_GUESS = 30 + 128  # bytes of a local header fetched with its name (PyTorch pads up to 63)


class Member(NamedTuple):  # (not a frozen dataclass: its decorator costs every command ~0.35 ms of its start)
    """One member of a zip, as its directory entry lists it and its local header confirms.

    The attribute names are ``zipfile.ZipInfo``'s, for the fields both have.
    """

    filename: str  # decoded as zipfile decodes it: UTF-8 when flagged, else cp437
    raw_name: bytes  # as stored: what miniz (PyTorch) compares, ASCII case ignored
    flag_bits: int
    compress_type: int
    CRC: int
    compress_size: int
    file_size: int
    header_offset: int
    start: int  # file offset of the member's stored bytes, after its local header


def read_directory(source: AnySource, path: object) -> list[Member]:
    """The members the zip's central directory lists, in its order, once nothing in the
    archive could make another zip reader see different ones (see the module's docstring)."""
    return _Archive(source, f"{path}").members()


_END = struct.Struct("<4sHHHHIIH")
_ZIP64_END = struct.Struct("<4sQHHIIQQQQ")
_ZIP64_LOCATOR = struct.Struct("<4sIQI")
_CENTRAL = struct.Struct("<4sBBBBHHHHIIIHHHHHII")  # the version needed is one byte and an OS, as zipfile reads it
_LOCAL = struct.Struct("<4sHHHHHIIIHH")


class _Archive:
    """One pass over a zip's structure; ``members()`` refuses what two readers could read differently."""

    def __init__(self, source: AnySource, path: str) -> None:
        self._source = source
        self._path = path
        self._directory = 0  # where the central directory starts, once the end records are read

    def _refuse(self, reason: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(f"{self._path}: {reason}")

    def _read(self, offset: int, length: int, what: str) -> bytes:
        if offset < 0 or offset + length > self._source.size:
            raise self._refuse(f"{what} at {offset} runs past the end of the file ({self._source.size} bytes)")
        return bytes(self._source.read(offset, length, what))

    def _end_record(self) -> tuple[int, int, int, int]:
        """The end record's position, and the entry count, size and offset of the directory it states."""
        size = self._source.size
        tail_start = max(0, size - _END.size - 0xFFFF)
        tail = self._read(tail_start, size - tail_start, "the end of the zip")
        # The last signature with room for the record after it (miniz searches so) ...
        position = tail.rfind(_END_SIGNATURE, 0, max(0, len(tail) - _END.size + 4))
        if position < 0:
            raise self._refuse("not a readable zip archive (no end of central directory record)")
        fields = _END.unpack_from(tail, position)
        _, disk, directory_disk, here, count, directory_size, directory_offset, comment = fields
        end = tail_start + position
        # ... must end the file with its comment, in which zipfile (searching for the last
        # signature anywhere) finds none.
        if end + _END.size + comment != size:
            raise self._refuse(
                f"the end of central directory record at {end} and its {comment}-byte comment "
                f"end at {end + _END.size + comment}, not at the end of the file ({size})"
            )
        if comment and _END_SIGNATURE in tail[position + 1 :]:
            raise self._refuse("a second end of central directory record in the archive's comment")
        if disk or directory_disk:
            raise self._refuse("a zip split over several disks")
        if here != count:
            raise self._refuse(f"the end record counts {here} entries on this disk but {count} in all")
        return end, count, directory_size, directory_offset

    def _zip64(self, end: int, count: int, directory_size: int, directory_offset: int) -> tuple[int, int, int, int]:
        """Where the end records begin, and the directory's count, size and offset, zip64 records read."""
        locator = end - _ZIP64_LOCATOR.size
        if locator < 0 or self._read(locator, 4, "the zip64 locator") != _ZIP64_LOCATOR_SIGNATURE:
            return end, count, directory_size, directory_offset
        _, disk, record, disks = _ZIP64_LOCATOR.unpack(self._read(locator, _ZIP64_LOCATOR.size, "the zip64 locator"))
        expected = locator - _ZIP64_END.size
        # zipfile reads the zip64 end record just before the locator, miniz where the locator says.
        if record != expected or expected < 0:
            raise self._refuse(f"the zip64 locator places the zip64 end record at {record}, not at {expected}")
        fields = _ZIP64_END.unpack(self._read(expected, _ZIP64_END.size, "the zip64 end record"))
        signature, length, _, _, record_disk, directory_disk, here, total, size64, offset64 = fields
        if signature != _ZIP64_END_SIGNATURE or length != _ZIP64_END.size - 12:
            raise self._refuse(f"no zip64 end record of {_ZIP64_END.size} bytes at {expected}")
        if disk or disks != 1 or record_disk or directory_disk:
            raise self._refuse("a zip split over several disks")
        if here != total:
            raise self._refuse(f"the zip64 end record counts {here} entries on this disk but {total} in all")
        for name, narrow, wide, sentinel in (
            ("entry count", count, total, 0xFFFF),
            ("directory size", directory_size, size64, _WIDE),
            ("directory offset", directory_offset, offset64, _WIDE),
        ):
            if narrow not in (wide, sentinel):
                raise self._refuse(f"the end record's {name} ({narrow}) contradicts the zip64 end record's ({wide})")
        return expected, total, size64, offset64

    def members(self) -> list[Member]:
        ends_at, count, directory_size, directory_offset = self._zip64(*self._end_record())
        # zipfile finds the directory right before the end records, miniz at the offset they state.
        if directory_offset + directory_size != ends_at:
            raise self._refuse(
                f"the end record places a {directory_size}-byte central directory at {directory_offset}, "
                f"but the end records start at {ends_at}: "
                + (
                    f"{ends_at - directory_offset - directory_size} bytes (another directory?) lie between them"
                    if directory_offset + directory_size < ends_at
                    else "they overlap"
                )
            )
        self._directory = directory_offset
        entries = self._entries(self._read(directory_offset, directory_size, "the central directory"), count)
        # Remote: every local header (with its name, and usual padding) at once.
        self._source.prefetch([(entry[7], _LOCAL_GUESS + len(entry[1])) for entry in entries])
        members = [self._confirm(*entry) for entry in entries]
        self._check_layout(members, directory_offset)
        return members

    def _entries(self, directory: bytes, count: int) -> list[tuple[str, bytes, int, int, int, int, int, int]]:
        """Each directory entry's name (decoded, raw), flags, method, CRC-32, sizes and local header offset."""
        entries: list[tuple[str, bytes, int, int, int, int, int, int]] = []
        names: set[str] = set()
        folded: dict[bytes, str] = {}  # ASCII-lowercased name -> name
        position = 0
        for index in range(count):
            if position + _CENTRAL.size > len(directory):
                raise self._refuse(f"the central directory holds fewer than the {count} entries it should")
            fields = _CENTRAL.unpack_from(directory, position)
            signature, _, _, version, _, flags, method, _, _, crc, compressed, size, name_length = fields[:13]
            extra_length, comment_length, disk, _, _, offset = fields[13:]
            if signature != _CENTRAL_SIGNATURE:
                raise self._refuse(f"central directory entry {index} has no signature")
            name_start = position + _CENTRAL.size
            position = name_start + name_length + extra_length + comment_length
            if position > len(directory):
                raise self._refuse(f"central directory entry {index} runs past the directory's end")
            raw = directory[name_start : name_start + name_length]
            name = self._name(raw, flags)
            if version > _MAX_EXTRACT_VERSION:
                raise UnsupportedFormatError(
                    f"{self._path}: member '{name}' needs zip file version {version / 10:.1f}; "
                    f"zip readers read up to {_MAX_EXTRACT_VERSION / 10:.1f}"
                )
            if flags & _ENCRYPTED:
                raise UnsupportedFormatError(f"{self._path}: member '{name}' is encrypted")
            if flags & _PATCHED:
                raise UnsupportedFormatError(f"{self._path}: member '{name}' holds compressed patched data")
            if disk:
                raise self._refuse("a zip split over several disks")
            extra = directory[name_start + name_length : name_start + name_length + extra_length]
            size, compressed, offset = self._widen(extra, (size, compressed, offset), f"member '{name}'")
            if name in names:
                raise self._refuse(f"two members named '{name}'")
            if raw.lower() in folded:
                other = folded[raw.lower()]
                raise self._refuse(f"members '{other}' and '{name}' differ only in case (PyTorch reads them as one)")
            names.add(name)
            folded[raw.lower()] = name
            entries.append((name, raw, flags, method, crc, compressed, size, offset))
        if position != len(directory):
            raise self._refuse(
                f"the central directory is {len(directory)} bytes, but its {count} entries take {position}"
            )
        return entries

    def _name(self, raw: bytes, flags: int) -> str:
        if b"\0" in raw:
            raise self._refuse(f"a member name holding a NUL byte ({raw[:200]!r})")
        try:
            return raw.decode("utf-8" if flags & _UTF8_NAME_FLAG else "cp437")
        except UnicodeDecodeError:
            raise self._refuse(f"a member name flagged UTF-8 that is not ({raw[:200]!r})") from None

    def _widen(self, extra: bytes, values: tuple[int, int, int], what: str) -> tuple[int, int, int]:
        """``(size, compressed size, offset)`` with each 0xFFFFFFFF read from the zip64 extra field, in that order."""
        wide: bytes | None = None
        position = 0
        while position < len(extra):
            if position + 4 > len(extra):
                raise self._refuse(f"{what}: a malformed extra field")
            kind, length = struct.unpack_from("<HH", extra, position)
            if position + 4 + length > len(extra):
                raise self._refuse(f"{what}: a malformed extra field")
            if kind == _ZIP64_EXTRA:
                if wide is not None:
                    raise self._refuse(f"{what}: two zip64 extra fields")
                wide = extra[position + 4 : position + 4 + length]
            position += 4 + length
        needed = [index for index, value in enumerate(values) if value == _WIDE]
        if not needed:
            return values
        if wide is None or len(wide) < 8 * len(needed):
            raise self._refuse(f"{what}: its sizes or offset need a zip64 extra field it lacks")
        widened = list(values)
        for slot, index in enumerate(needed):
            (widened[index],) = struct.unpack_from("<Q", wide, 8 * slot)
        return widened[0], widened[1], widened[2]

    def _confirm(
        self, name: str, raw: bytes, flags: int, method: int, crc: int, compressed: int, size: int, offset: int
    ) -> Member:
        """The member once its local header agrees with its directory entry (one read: the header and name)."""
        if offset + _LOCAL.size + len(raw) > self._directory:
            raise self._refuse(f"member '{name}': its local header at {offset} is not before the central directory")
        header = self._read(offset, _LOCAL.size + len(raw), f"the local header of '{name}'")
        fields = _LOCAL.unpack_from(header)
        signature, _, local_flags, local_method, _, _, local_crc, local_compressed, local_size = fields[:9]
        name_length, extra_length = fields[9:]
        start = offset + _LOCAL.size + name_length + extra_length
        if signature != LOCAL_SIGNATURE:
            raise self._refuse(f"member '{name}': no local header for it at {offset}")
        if name_length != len(raw) or header[_LOCAL.size :] != raw:
            local = self._read(offset + _LOCAL.size, name_length, f"the local header of '{name}'")
            raise self._refuse(f"member '{name}': its local header at {offset} names '{self._name(local, 0)}'")
        if local_flags != flags or local_method != method:
            raise self._refuse(
                f"member '{name}': its local header's flags {local_flags:#x} and method {local_method} differ from "
                f"its directory entry's ({flags:#x}, {method})"
            )
        if flags & _DATA_DESCRIPTOR:
            return Member(name, raw, flags, method, crc, compressed, size, offset, start)
        if _WIDE in (local_size, local_compressed):  # read from the local zip64 extra field (np.savez writes one)
            extra = self._read(start - extra_length, extra_length, f"the local header of '{name}'")
            local_size, local_compressed, _ = self._widen(
                extra, (local_size, local_compressed, 0), f"member '{name}''s local header"
            )
        if (local_crc, local_compressed, local_size) != (crc, compressed, size):
            raise self._refuse(
                f"member '{name}': its local header's CRC-32 and sizes ({local_crc:#010x}, {local_compressed}, "
                f"{local_size}) differ from its directory entry's ({crc:#010x}, {compressed}, {size})"
            )
        return Member(name, raw, flags, method, crc, compressed, size, offset, start)

    def _check_layout(self, members: list[Member], directory: int) -> None:
        """No bytes before the first member, and no member overlapping another or the directory."""
        ordered = sorted(members, key=lambda member: member.header_offset)
        first = ordered[0].header_offset if ordered else directory
        if first:
            raise self._refuse(
                f"{first} bytes before the first member (what another reader may take for a member or a file)"
            )
        for member, following in zip(ordered, [*ordered[1:], None], strict=True):
            end = member.start + member.compress_size
            if following is None and end > directory:
                raise self._refuse(f"member '{member.filename}' runs into the central directory at {directory}")
            if following is not None and end > following.header_offset:
                raise self._refuse(f"members '{member.filename}' and '{following.filename}' overlap")


def is_deflated(entry: Member, what: str) -> bool:
    """Whether the member is deflated (else stored), once its method and sizes are checked."""
    if entry.compress_type == STORED:
        if entry.compress_size != entry.file_size:
            raise CorruptCheckpointError(
                f"{what} is stored uncompressed, yet its sizes differ ({entry.compress_size}, {entry.file_size})"
            )
        return False
    if entry.compress_type != DEFLATED:
        raise UnsupportedFormatError(
            f"{what} is compressed with zip method {entry.compress_type}; weightscope reads stored and deflated"
        )
    if entry.file_size > entry.compress_size * DEFLATE_MAX_RATIO + DEFLATE_SLACK:
        raise CorruptCheckpointError(
            f"{what} declares {entry.file_size} bytes inflated from {entry.compress_size}: "
            "more than deflate can produce (a zip bomb?)"
        )
    return True


def escapes(name: str) -> bool:
    """Whether a member's name is absolute or climbs out of the archive with ``..`` (a path traversal)."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ":" in name[:2] or ".." in parts


# zlib-ng computes CRC-32 with carry-less multiplication (PCLMULQDQ/VPCLMULQDQ): ~85 GiB/s in cache on one core
# here against zlib's ~6, so checking every member as it is read costs little next to reading it. From memory its
# loop runs at 12 GiB/s, slower than a numpy sum of the same bytes (14-15): there the kernel's fold, which asks for
# the bytes ahead, takes it (19-20 GiB/s; three times slower than zlib-ng's in cache, as fast in the last level's
# 4-16 MiB), for spans of FOLDED_BYTES and more, which are read from memory far more often than not. zlib-ng is
# imported on first use: it brings gzip along, ~2 ms of every command's start otherwise (sniffing imports this
# module, and most commands read no zip).
FOLDED_BYTES = 1 << 20


def crc32(data: bytes | memoryview, value: int = 0) -> int:
    if len(data) >= FOLDED_BYTES and _kernels is not None and (folded := _kernels.crc32(data, value)) is not None:
        return folded
    from zlib_ng import zlib_ng

    return zlib_ng.crc32(data, value)


def crc32_combine(first: int, second: int, length: int) -> int:
    """The CRC-32 of A + B from A's, B's and B's length: for pieces checked apart."""
    from zlib_ng import zlib_ng

    return zlib_ng.crc32_combine(first, second, length)


def check_crc(data: bytes | memoryview, stored: int, what: str, where: str = "") -> None:
    """Refuse a member whose CRC-32 is not the one its directory entry stores; ``what`` names it."""
    if (computed := crc32(data)) != stored:
        raise ChecksumMismatchError(
            f"{what} is damaged: stored CRC-32 {stored:#010x}, computed {computed:#010x}{where}"
        )


def inflate(compressed: bytes | memoryview, size: int, what: str) -> bytes:
    """A deflated member's bytes, which must be exactly the ``size`` its directory entry declares."""
    from zlib_ng import zlib_ng

    inflater = zlib_ng.decompressobj(-zlib_ng.MAX_WBITS)
    try:
        data = inflater.decompress(compressed, size + 1)  # one byte more shows a lie
    except zlib_ng.error as error:  # type: ignore[misc]  # zlib_ng's stub declares error an instance
        raise CorruptCheckpointError(f"{what}: damaged deflate stream ({error})") from None
    if len(data) != size or not inflater.eof:
        raise CorruptCheckpointError(
            f"{what}: the deflate stream does not inflate to the {size} bytes the zip directory declares"
        )
    return data


# -- writing -------------------------------------------------------------------------------

ZIP64_LIMIT = 0xFFFFFFFF  # sizes, offsets at or past this (and member counts past 0xFFFF) need zip64
_ZIP_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_ZIP_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_ZIP_END = struct.Struct("<4sHHHHIIH")
_ZIP64_END = struct.Struct("<4sQHHIIQQQQ")
_ZIP64_LOCATOR = struct.Struct("<4sIQI")
_ZIP_CRC_OFFSET = 14  # of the CRC-32 in a local header, patched once the data is written
_ZIP_DATE = (1 << 5) | 1  # 1980-01-01 00:00, the zip epoch: no clock in the bytes, so they are reproducible
_ZIP_PADDING = b"FB"  # the extra field id PyTorch pads local headers with (its bytes are "Z"s)
_ZIP_UTF8 = 0x800
ZIP_NAME_MAX = 0xFFFF  # bytes in a member name


class ZipWriter:
    """A zip of stored members written to a seekable file, each member's data aligned to ``align``.

    Each member's size is known before it is written; its CRC-32 is computed while its
    bytes stream and patched into its local header afterwards (no data descriptors).
    Shared by the ``.npz`` and PyTorch writers.
    """

    def __init__(self, handle: BinaryIO, *, align: int = 1) -> None:
        self._handle = handle
        self._align = align
        self._entries: list[tuple[bytes, int, int, int, int]] = []  # name, flags, CRC-32, size, offset

    def add(self, name: str, size: int, chunks: Iterable[bytes | memoryview | np.ndarray]) -> int:
        """Write the member ``name`` of ``size`` bytes from ``chunks``; returns its CRC-32."""
        handle = self._handle
        offset = handle.tell()
        encoded = name.encode("utf-8")
        flags = 0 if encoded.isascii() else _ZIP_UTF8
        zip64 = size >= ZIP64_LIMIT
        extra = struct.pack("<HHQQ", 1, 16, size, size) if zip64 else b""
        start = offset + _ZIP_LOCAL.size + len(encoded) + len(extra)
        if start % self._align:
            padding = -(start + 4) % self._align
            extra += _ZIP_PADDING + struct.pack("<H", padding) + b"Z" * padding
        stored = _narrow(size)
        version = 45 if zip64 else 20
        handle.write(
            _ZIP_LOCAL.pack(b"PK\x03\x04", version, flags, 0, 0, _ZIP_DATE, 0, stored, stored, len(encoded), len(extra))
        )
        handle.write(encoded + extra)
        crc = written = 0
        for piece in chunks:
            chunk = piece if isinstance(piece, bytes | memoryview) else piece.data  # numpy's stubs: no buffer protocol
            crc = crc32(chunk, crc)
            written += memoryview(chunk).nbytes
            handle.write(chunk)
        if written != size:
            raise UsageError(f"zip member '{name}': planned {size} bytes, given {written}")
        end = handle.tell()
        handle.seek(offset + _ZIP_CRC_OFFSET)
        handle.write(struct.pack("<I", crc))
        handle.seek(end)
        self._entries.append((encoded, flags, crc, size, offset))
        return crc

    def close(self) -> None:
        """Write the central directory (and zip64 records when needed) after the members."""
        handle = self._handle
        start = handle.tell()
        for encoded, flags, crc, size, offset in self._entries:
            # The zip64 extra field holds, in this order, the sizes and the offset too wide for their fields.
            wide = (2 * [size] if size >= ZIP64_LIMIT else []) + ([offset] if offset >= ZIP64_LIMIT else [])
            extra = struct.pack(f"<HH{len(wide)}Q", 1, 8 * len(wide), *wide) if wide else b""
            version = 45 if wide else 20
            stored = _narrow(size)
            fields = (version, version, flags, 0, 0, _ZIP_DATE, crc, stored, stored, len(encoded), len(extra))
            handle.write(_ZIP_CENTRAL.pack(b"PK\x01\x02", *fields, 0, 0, 0, 0, _narrow(offset)))
            handle.write(encoded + extra)
        end = handle.tell()
        count, directory = len(self._entries), end - start
        if count >= 0xFFFF or directory >= ZIP64_LIMIT or start >= ZIP64_LIMIT:
            record = (_ZIP64_END.size - 12, 45, 45, 0, 0, count, count, directory, start)
            handle.write(_ZIP64_END.pack(b"PK\x06\x06", *record))
            handle.write(_ZIP64_LOCATOR.pack(b"PK\x06\x07", 0, end, 1))
        members = min(count, 0xFFFF)
        handle.write(_ZIP_END.pack(b"PK\x05\x06", 0, 0, members, members, _narrow(directory), _narrow(start), 0))


def _narrow(value: int) -> int:
    """A size or offset for a 4-byte zip field: 0xFFFFFFFF when it is in a zip64 record instead."""
    return 0xFFFFFFFF if value >= ZIP64_LIMIT else value
