"""Fuzz the zip structure against the two zip readers it stands in for: ``zipfile`` and miniz (``torch.load``).

Beyond ``fuzzlib``'s rule (only ``WeightscopeError`` may come out), a differential one:
whenever ``read_directory`` accepts an archive, ``zipfile`` must read the same members
(names, offsets, sizes, CRC-32s, methods, and where each member's bytes start), and so
must PyTorch's reader (``torch._C.PyTorchFileReader``, miniz) when it opens the archive:
the same records, each found (as ``torch.load`` finds them) at the offset weightscope
reads. ``torch_kind`` must give torch's own zip / tar / legacy decision. Then the file
goes through the PyTorch and ``.npz`` readers whole.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

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


def one_input(data: bytes) -> None:
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
