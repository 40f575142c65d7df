"""Files that two readers read differently: weightscope refuses them, or shows what torch.load loads.

The crafted files are the corpus's (``tests/corpus/make_pytorch_corpus.py``,
``differential_entries``), here with payloads that touch a marker in the test's own
folder. The real ``torch.load`` runs on the same bytes, ``weights_only`` True and False,
in a subprocess: where it runs the payload, weightscope must refuse to open the file and
``scan`` must not call it safe; where weightscope lists tensors, they must be exactly
the ones torch loads.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from make_pytorch_corpus import FOUR, VALID, differential_entries, legacy, ordered_dict, pickle2, tensor
from make_pytorch_corpus import torch_members as members_of
from zip_crafting import end_record, members_and_directory, stored_zip, two_directories

import weightscope as ws
from weightscope import errors
from weightscope.formats._torch_kind import torch_kind
from weightscope.formats.pytorch import ScanEntry, scan
from weightscope.sources import FileSource

# What each refusal must name.
REASONS = {
    "zip-two-central-directories": "bytes .another directory.. lie between them",
    "zip-data-pkl-twice-differing-in-case": "'archive/data.pkl' and 'archive/DATA.PKL' differ only in case",
    "zip-data-pkl-twice": "two members named 'archive/data.pkl'",
    "protocol-0-pickle-before-a-zip": "refused to load: the file wants to call (os|posix).system",
    "zip-bytes-between-directory-and-end": "4 bytes .another directory.. lie between them",
    "zip-directory-offset-off-by-4": "places a 246-byte central directory at 376, but the end records start at 626",
    "zip-entry-count-one-short": "the central directory is 246 bytes, but its 3 entries take 185",
    "zip-comment-holding-an-end-record": "not at the end of the file",
    "zip-name-with-a-nul": "a member name holding a NUL byte",
    "zip-local-header-names-another-member": "its local header at 273 names 'archive/data/1'",
    "zip-local-header-crc-differs": "local header's CRC-32 and sizes .0x00000000, 16, 16. differ",
    "zip-local-header-size-differs": "local header's CRC-32 and sizes .0x25601b8b, 8, 8. differ",
    "zip-local-header-method-differs": "local header's flags 0x0 and method 8 differ",
    "zip-members-overlap": "members 'archive/byteorder' and 'archive/data/0' overlap",
    "zip-member-outside-the-folder": "member 'other/x' is outside the archive's folder",
    "torchscript-constants-pkl": "a TorchScript archive",
    "zip64-directory-offset-contradicts-end-record": r"directory offset \(380\) contradicts the zip64 end record's",
    "zip64-locator-points-elsewhere": "places the zip64 end record at 618, not at 626",
    "zip-bytes-before-the-first-member": r"\d+ bytes before the first member",
    "legacy-pickles-that-are-also-a-tar": "a tar archive, which torch.load reads as the format of PyTorch before 0.4",
    "storage-member-larger-than-its-storage": "its storage is 16 bytes; 'archive/data/0' holds 24",
}
# Not claimed as PyTorch (it is no zip, and no torch.save pickle starts it): read as PyTorch, it is refused.
FORCED = {"protocol-0-pickle-before-a-zip": errors.RefusedError}
# The ones whose payload torch.load(weights_only=False) runs: each is a real attack on a reader that read it otherwise.
ATTACKS = {
    "zip-two-central-directories",
    "zip-data-pkl-twice-differing-in-case",
    "zip-data-pkl-twice",
    "protocol-0-pickle-before-a-zip",
    "legacy-pickles-that-are-also-a-tar",
}
ENTRIES = sorted(differential_entries(lambda name: name))
# Files both read: weightscope must list what torch loads, records found as miniz finds them.
AGREED = {
    "valid.pt": stored_zip(members_of(VALID)),
    "byteorder-in-capitals-says-big.pt": stored_zip(
        [
            ("archive/data.pkl", VALID),
            ("archive/BYTEORDER", b"big"),
            ("archive/data/0", FOUR),
            ("archive/version", b"3\n"),
        ]
    ),
    "data-pkl-in-capitals.pt": stored_zip(
        [("archive/version", b"3\n"), ("archive/DATA.PKL", VALID), *members_of(VALID)[1:-1]]
    ),
    "legacy.pt": legacy(pickle2(ordered_dict(("weight", tensor("0", 4, (2, 2), (2, 1), legacy=True))))),
}

TORCH_LOAD = """
import glob, json, os, sys
import torch

def flat(value, name=""):
    if isinstance(value, torch.Tensor):
        return {name: value.tolist()}
    if isinstance(value, dict):
        return {key: item for k, v in value.items() for key, item in flat(v, f"{name}.{k}" if name else str(k)).items()}
    return {name: repr(value)}

markers, results = sys.argv[1], {}
for path in sys.argv[2:]:
    for weights_only in (True, False):
        try:
            outcome = {"tensors": flat(torch.load(path, weights_only=weights_only))}
        except Exception as error:
            outcome = {"error": f"{type(error).__name__}: {error}"[:300]}
        ran = glob.glob(os.path.join(markers, "*"))
        outcome["ran"] = bool(ran)
        for marker in ran:
            os.unlink(marker)
        results[f"{path} {weights_only}"] = outcome
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("differentials")
    markers = folder / "markers"
    markers.mkdir()
    made = {**differential_entries(lambda name: f"touch {markers}/{name}"), **AGREED}
    paths = {name: folder / name for name in made}
    for name, data in made.items():
        paths[name].write_bytes(data)
    return paths


@pytest.fixture(scope="module")
def torch_loads(files: dict[str, Path]) -> dict[str, dict[str, object]]:
    """What torch.load makes of each file, weights_only True and False, and whether it ran the payload."""
    markers = next(iter(files.values())).parent / "markers"
    result = subprocess.run(
        [sys.executable, "-c", TORCH_LOAD, str(markers), *map(str, files.values())],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded: dict[str, dict[str, object]] = json.loads(result.stdout)
    return loaded


def _ours(path: Path) -> dict[str, list[object]] | errors.WeightscopeError:
    try:
        with ws.open(path, format="pytorch") as checkpoint:
            return {name: np.asarray(checkpoint[name]).tolist() for name in checkpoint}
    except errors.WeightscopeError as error:
        return error


def _scan(path: Path) -> list[ScanEntry] | None:
    """What ``scan`` lists, or None where its verdict is that the file cannot be opened at all."""
    report = scan(path)
    return None if report.verdict is not None and not report else list(report)


@pytest.mark.parametrize("entry", ENTRIES)
def test_each_differential_is_refused_naming_why_and_torch_shows_the_danger(
    entry: str, files: dict[str, Path], torch_loads: dict[str, dict[str, object]]
) -> None:
    path = files[entry]
    expected, why = entry.split("--", 1)
    why = why.removesuffix(".pt")
    with pytest.raises(FORCED.get(why, getattr(errors, expected)), match=REASONS[why]):
        ws.open(path, format="pytorch")
    ours = _ours(path)
    assert isinstance(ours, errors.WeightscopeError)
    safe, unsafe = torch_loads[f"{path} True"], torch_loads[f"{path} False"]
    assert not safe["ran"]
    assert unsafe["ran"] == (why in ATTACKS), unsafe  # torch.load(weights_only=False) runs these, and only these
    if unsafe["ran"]:
        scanned = _scan(path)
        assert scanned is None or any(not item.allowed for item in scanned), scanned  # never "all allowed"


@pytest.mark.parametrize("entry", sorted(AGREED))
def test_files_both_read_list_exactly_what_torch_loads(
    entry: str, files: dict[str, Path], torch_loads: dict[str, dict[str, object]]
) -> None:
    path = files[entry]
    ours = _ours(path)
    assert not isinstance(ours, errors.WeightscopeError), ours
    for weights_only in (True, False):
        assert torch_loads[f"{path} {weights_only}"] == {"tensors": ours, "ran": False}
    assert [item for item in scan(path) if not item.allowed] == []


def test_the_big_endian_record_found_ignoring_case_is_read_big_endian(files: dict[str, Path]) -> None:
    with ws.open(files["byteorder-in-capitals-says-big.pt"]) as checkpoint:
        np.testing.assert_array_equal(checkpoint["weight"], np.frombuffer(FOUR, ">f4").reshape(2, 2))


def test_torch_kind_is_torch_loads_decision(files: dict[str, Path], tmp_path: Path) -> None:
    """zip exactly when torch's _is_zipfile says so; tar exactly when tarfile opens the file; else legacy."""
    saved = {"w": torch.arange(4.0)}
    torch.save(saved, tmp_path / "zip.pt")
    torch.save(saved, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    cases = {
        tmp_path / "zip.pt": "zip",
        tmp_path / "legacy.pt": "legacy",
        files["UnsupportedFormatError--legacy-pickles-that-are-also-a-tar.pt"]: "tar",
        files["UnsupportedFormatError--protocol-0-pickle-before-a-zip.pt"]: "legacy",
        files["CorruptCheckpointError--zip-bytes-before-the-first-member.pt"]: "zip",
    }
    for path, kind in cases.items():
        source = FileSource(path)
        try:
            assert torch_kind(source, path) == kind, path
        finally:
            source.close()
        with path.open("rb") as handle:
            assert torch.serialization._is_zipfile(handle) == (kind == "zip")
            try:
                tarfile.open(fileobj=handle, mode="r:").close()
                is_tar = True
            except tarfile.TarError:
                is_tar = False
            assert is_tar == (kind == "tar")


def _npy(value: float) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([value]))
    return buffer.getvalue()


def _unlisted_first(hidden: tuple[str, bytes], listed: tuple[str, bytes]) -> bytes:
    before, _ = members_and_directory([hidden])
    body, directory = members_and_directory([listed], start=len(before))
    return before + body + directory + end_record(1, len(directory), len(before) + len(body))


NPZ_FORGERIES = {
    # zipfile (np.load) reads the second directory; miniz would read the first
    "two directories": two_directories([("x.npy", _npy(1.0))], [("x.npy", _npy(2.0))]),
    "a member no directory entry lists": _unlisted_first(("x.npy", _npy(1.0)), ("x.npy", _npy(2.0))),
    "names differing in case": stored_zip([("x.npy", _npy(1.0)), ("X.npy", _npy(2.0))]),
    "a name cut at a NUL": stored_zip([("x.npy\0.txt", _npy(1.0))]),
    "a directory past its stated entries": stored_zip([("x.npy", _npy(1.0)), ("y.npy", _npy(2.0))], count=1),
}


@pytest.mark.parametrize("forgery", sorted(NPZ_FORGERIES))
def test_npz_forgeries_that_np_load_reads_are_refused(forgery: str, tmp_path: Path) -> None:
    """np.load (zipfile) reads each of these one way; miniz, or the same bytes read strictly, another."""
    path = tmp_path / "forged.npz"
    path.write_bytes(NPZ_FORGERIES[forgery])
    with np.load(path) as loaded:
        assert loaded.files  # numpy lists members
    with pytest.raises(ws.CorruptCheckpointError):
        ws.open(path)
