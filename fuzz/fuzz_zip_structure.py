"""Fuzz the zip structure against the two zip readers it stands in for: ``zipfile`` and miniz (``torch.load``).

Beyond ``fuzzlib``'s rule (only ``WeightscopeError`` may come out), a differential one:
whenever ``read_directory`` accepts an archive, ``zipfile`` must read the same members
(names, offsets, sizes, CRC-32s, methods, and where each member's bytes start), and so
must PyTorch's reader (``torch._C.PyTorchFileReader``, miniz) when it opens the archive:
the same records, each found (as ``torch.load`` finds them) at the offset weightscope
reads. ``torch_kind`` must give torch's own zip / tar / legacy decision. Then the file
goes through the PyTorch and ``.npz`` readers whole. Inputs not starting as a zip does are
edit scripts over the seeds (``edited``): header fields set, in one header or both, names'
case flipped, bytes inserted at structure boundaries, so that the differential checks meet
archives valid enough to be accepted.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import atheris
import fuzzlib
from fuzz_npz import seeds as npz_seeds
from fuzz_pytorch_zip import torch_files

with fuzzlib.instrumented():
    from weightscope.containers.zip import Member, read_directory
    from weightscope.errors import WeightscopeError
    from weightscope.formats._torch_kind import torch_kind
    from weightscope.sources import FileSource

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "pytorch"


def seeds() -> list[bytes]:
    """``torch.save`` zips, ``np.savez`` (zip64 local headers) and ``np.savez_compressed``, weightscope's
    own ``.npz``, and the corpus's zips that two readers read differently."""
    return [*torch_files(), *npz_seeds(), *(path.read_bytes() for path in sorted(CORPUS.glob("*--zip*")))]


def _torch_reader() -> type:
    import torch

    reader: type = torch._C.PyTorchFileReader
    return reader


PyTorchFileReader = _torch_reader()


def _zipfile_agrees(path: Path, members: list[Member]) -> None:
    with zipfile.ZipFile(path) as archive:
        theirs = archive.infolist()
        assert [info.filename for info in theirs] == [member.filename for member in members]
        for info, member in zip(theirs, members, strict=True):
            seen = (info.header_offset, info.compress_size, info.file_size, info.CRC, info.compress_type)
            ours = (member.header_offset, member.compress_size, member.file_size, member.CRC, member.compress_type)
            assert seen == ours, (member.filename, seen, ours)
            if member.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                with archive.open(info) as opened:
                    assert opened._orig_compress_start == member.start, member.filename  # type: ignore[attr-defined]


def _miniz_agrees(path: Path, members: list[Member]) -> None:
    try:
        reader = PyTorchFileReader(str(path))
        records = reader.get_all_records()
    except (RuntimeError, UnicodeDecodeError):
        return  # torch.load would refuse the file: nothing to compare
    folder = members[0].raw_name.partition(b"/")[0] + b"/"
    ours = {member.raw_name.removeprefix(folder).decode("utf-8", "surrogateescape"): member for member in members}
    assert sorted(records) == sorted(ours), (records, list(ours))
    for record, member in ours.items():
        if member.compress_type in (0, 8):  # miniz refuses to locate others (weightscope reads none)
            assert reader.get_record_offset(record) == member.start, record


def _kind_agrees(path: Path, source: FileSource) -> None:
    try:
        kind = torch_kind(source, path)
    except WeightscopeError:
        return
    with path.open("rb") as handle:
        assert (handle.read(4) == b"PK\x03\x04") == (kind == "zip")
        if kind != "zip":
            handle.seek(0)
            try:
                tarfile.open(fileobj=handle, mode="r:").close()
                assert kind == "tar"
            except tarfile.TarError:
                assert kind == "legacy"


# -- edits: header fields changed as a forger would, consistently or not ----------------------

_STRUCTURES: list[tuple[bytes, list[tuple[int, int]], list[tuple[int, int]], list[int]]] = []


def _structure(seed: bytes) -> tuple[bytes, list[tuple[int, int]], list[tuple[int, int]], list[int]]:
    """A valid zip's field positions: end records' (offset, width); each member's local and
    central header starts paired as (central, local); the boundaries where bytes may be inserted."""
    end = seed.rfind(b"PK\x05\x06")
    fields = [(end + at, width) for at, width in ((4, 2), (6, 2), (8, 2), (10, 2), (12, 4), (16, 4), (20, 2))]
    locator = end - 20
    if seed[locator : locator + 4] == b"PK\x06\x07":
        fields += [(locator + 8, 8)] + [(locator - 56 + at, 8) for at in (24, 32, 40, 48)]
    directory = int.from_bytes(seed[end + 16 : end + 20], "little")
    if directory == 0xFFFFFFFF:
        directory = int.from_bytes(seed[locator - 8 : locator], "little")
    pairs, position = [], directory
    while seed[position : position + 4] == b"PK\x01\x02":
        pairs.append((position, int.from_bytes(seed[position + 42 : position + 46], "little")))
        lengths = (int.from_bytes(seed[position + at : position + at + 2], "little") for at in (28, 30, 32))
        position += 46 + sum(lengths)
    return seed, fields, pairs, [0, directory, position, end]


def _accepted(seed: bytes) -> bool:
    path = fuzzlib.scratch_file("seed.zip", seed)
    source = FileSource(path)
    try:
        return bool(read_directory(source, path))
    except WeightscopeError:
        return False
    finally:
        source.close()


# A member's field: (offset in its central entry, in its local header, width): flags, method, CRC-32, sizes.
_MEMBER_FIELDS = [(8, 6, 2), (10, 8, 2), (16, 14, 4), (20, 18, 4), (24, 22, 4)]


def edited(data: bytes) -> bytes:
    """The seed ``data``'s first byte picks, changed by the edits the rest describes."""
    if not _STRUCTURES:  # the seeds weightscope reads (the corpus's refused ones have no sure structure)
        _STRUCTURES.extend(_structure(seed) for seed in seeds() if _accepted(seed))
    provider = atheris.FuzzedDataProvider(data)
    seed, fields, pairs, boundaries = _STRUCTURES[provider.ConsumeIntInRange(0, len(_STRUCTURES) - 1)]
    edit = bytearray(seed)
    inserted: list[tuple[int, bytes]] = []
    for _ in range(provider.ConsumeIntInRange(1, 4)):
        kind = provider.ConsumeIntInRange(0, 4)
        central, local = pairs[provider.ConsumeIntInRange(0, len(pairs) - 1)] if pairs else (0, 0)
        if kind == 0:  # any end-record field
            at, width = fields[provider.ConsumeIntInRange(0, len(fields) - 1)]
            edit[at : at + width] = provider.ConsumeBytes(width).ljust(width, b"\0")
        elif kind in (1, 2):  # a member's field, in its directory entry and (kind 1) its local header alike
            in_central, in_local, width = _MEMBER_FIELDS[provider.ConsumeIntInRange(0, len(_MEMBER_FIELDS) - 1)]
            value = provider.ConsumeBytes(width).ljust(width, b"\0")
            edit[central + in_central : central + in_central + width] = value
            if kind == 1:
                edit[local + in_local : local + in_local + width] = value
        elif kind == 3:  # flip the case of a name's byte, in both headers or in the directory only
            length = int.from_bytes(seed[central + 28 : central + 30], "little")
            index = provider.ConsumeIntInRange(0, max(0, length - 1))
            for at in (central + 46, local + 30)[: 1 + provider.ConsumeBool()]:
                if length:
                    edit[at + index] ^= 0x20
        else:  # bytes inserted before the first member, the directory, an entry or the end record
            inserted.append((boundaries[provider.ConsumeIntInRange(0, 3)], provider.ConsumeBytes(4)))
    for at, data_in in sorted(inserted, reverse=True):
        edit[at:at] = data_in
    return bytes(edit)


def one_input(data: bytes) -> None:
    """A file as it is (when it starts as a zip does), else a seed edited as ``edited`` reads the bytes."""
    if not data.startswith(b"PK"):
        data = edited(data)
    path = fuzzlib.scratch_file("input.zip", data)
    source = FileSource(path)
    try:
        _kind_agrees(path, source)
        members = read_directory(source, path)
    except WeightscopeError:
        members = None
    finally:
        source.close()
    if members is not None:
        _zipfile_agrees(path, members)
        if members:
            _miniz_agrees(path, members)
    fuzzlib.exercise(path, "pytorch")
    fuzzlib.exercise(path, "npz")


if __name__ == "__main__":
    starting = seeds()
    for seed in starting:  # the readers' lazy imports (ml_dtypes: seconds) before inputs are timed
        one_input(seed)
    fuzzlib.run(one_input, starting)
