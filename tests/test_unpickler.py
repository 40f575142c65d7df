"""The allow-list unpickler on hostile pickles: bounded memory and time, linear dicts, a scan that keeps its verdict."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from corpus.make_pytorch_corpus import VALID, call, glob, integer, pickle2, shell, tensor, text, torch_zip

import weightscope as ws
from weightscope.cli import main
from weightscope.containers.unpickler import MAX_COLLISIONS
from weightscope.formats.pytorch import _Unpickler, scan

PRIME = 2**61 - 1  # CPython hashes an int n as n mod this prime


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# Run in a child: open the file and list it as `ls` would, under an address-space limit of what
# the child has mapped already plus the rule (64 MiB + 8 x the file), timing its CPU.
_CHILD = """
import json, resource, sys, time
import weightscope as ws
from weightscope.cli import main
path, size = sys.argv[1], int(sys.argv[2])
with open("/proc/self/statm") as statm:
    mapped = int(statm.read().split()[0]) * resource.getpagesize()
limit = mapped + (64 << 20) + 8 * size
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
started = time.process_time()
try:
    with ws.open(path) as ckpt:
        listed = [ckpt.info(name) for name in ckpt]
        dict(ckpt.metadata)
        for name in ckpt:  # a view of a few stored bytes is refused when read whole
            ckpt[name]
    outcome = "opened"
except ws.WeightscopeError as error:
    outcome = type(error).__name__
print(json.dumps({"outcome": outcome, "cpu": time.process_time() - started}))
"""


def _bounded(path: Path) -> dict[str, object]:
    """What opening ``path`` and reading its tensors ends with, in a child held to the resource rule; its CPU time."""
    size = path.stat().st_size
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(size)],
        capture_output=True,
        text=True,
        timeout=60 + 10 * size / 2**20,  # wall time: a loaded machine; the rule is checked on CPU time
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outcome: dict[str, object] = json.loads(result.stdout)
    assert float(outcome["cpu"]) <= 1 + size / 2**20, outcome  # type: ignore[arg-type]
    return outcome


def _colliding(keys: int) -> bytes:
    """A dict of ``keys`` int keys, multiples of 2**61 - 1, so all hash to 0."""
    return pickle2(b"}(" + b"".join(integer(PRIME * (index + 1)) + b"N" for index in range(keys)) + b"u")


def _memo_string(copies: int, length: int) -> bytes:
    """One string of ``length`` characters, then a dict naming it under ``copies`` keys through the memo."""
    keys = b"".join(b"J" + struct.pack("<i", key) + b"h\x00" for key in range(1, copies))
    return torch_zip(pickle2(b"}(" + integer(0) + text("x" * length) + b"q\x00" + keys + b"u"))


HOSTILE = {
    # the figures: 140 KB naming a 100 KB string 20,000 times reached 1.9 GB when shown
    "one-string-shown-20000-times": lambda: _memo_string(20_000, 100_000),
    # a megabyte and a half of EMPTY_DICT, MEMOIZE
    "empty-dicts-memoized": lambda: torch_zip(pickle2(b"(" + b"}\x94" * 750_000 + b"t")),
    "empty-lists-in-one-tuple": lambda: torch_zip(pickle2(b"(" + b"]" * 1_500_000 + b"t")),
    # 850,000 tensors named from 12 KB
    "850000-tensors": lambda: (
        Path(__file__).parent / "corpus/pytorch/LimitExceededError--850000-tensors.pt"
    ).read_bytes(),
    "20000-int-keys-hashing-alike": lambda: torch_zip(_colliding(20_000)),
}
EXPECTED = {
    "20000-int-keys-hashing-alike": "UnsupportedFormatError",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_small_pickles_that_would_build_gigabytes_are_refused_within_the_rule(kind: str, tmp_path: Path) -> None:
    path = _write(tmp_path / f"{kind}.pt", HOSTILE[kind]())
    assert _bounded(path)["outcome"] == EXPECTED.get(kind, "LimitExceededError")
    with pytest.raises(ws.WeightscopeError, match=r"WEIGHTSCOPE_MAX_MEMORY|hash alike"):
        ws.open(path)


CORPUS = Path(__file__).parent / "corpus"
AMPLIFYING = sorted(
    path
    for group in ("pytorch", "pickle")
    for path in (CORPUS / group).iterdir()
    if path.name.startswith("LimitExceededError--") or "hashing-alike" in path.name
)


@pytest.mark.parametrize("path", AMPLIFYING, ids=[f"{path.parent.name}/{path.name}" for path in AMPLIFYING])
def test_amplifying_corpus_files_are_refused_within_the_rule(path: Path) -> None:
    assert _bounded(path)["outcome"] == path.name.partition("--")[0]


def test_the_memory_cap_is_raised_by_its_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "shown.pt", _memo_string(400, 100_000))  # 40 MB of metadata to show from 100 KB
    monkeypatch.setenv("WEIGHTSCOPE_MAX_MEMORY", "16MiB")
    with pytest.raises(ws.LimitExceededError, match=r"the metadata shown needs .* set WEIGHTSCOPE_MAX_MEMORY"):
        ws.open(path)
    monkeypatch.setenv("WEIGHTSCOPE_MAX_MEMORY", "1GiB")
    with ws.open(path) as ckpt:
        assert len(ckpt.metadata) == 400


def test_int_keys_hashing_alike_are_bounded_not_quadratic(tmp_path: Path) -> None:
    # keys n * (2**61 - 1) all hash to 0: each insertion would compare with every key before it
    for keys, expected in ((MAX_COLLISIONS, None), (MAX_COLLISIONS + 1, ws.UnsupportedFormatError)):
        body = _colliding(keys)
        if expected is None:
            assert len(_Unpickler(body, "ok").load()) == keys
        else:
            with pytest.raises(expected, match=f"more than {MAX_COLLISIONS} keys of one dict hash alike"):
                _Unpickler(body, "bad").load()
    # the same keys in many dicts, and distinct small ints in one, are ordinary
    many = pickle2(b"(" + b"".join(b"}(" + integer(PRIME) + b"Nu" for _ in range(1000)) + b"t")
    assert len(_Unpickler(many, "ok").load()) == 1000
    small = pickle2(b"}(" + b"".join(integer(index) + b"N" for index in range(5000)) + b"u")
    assert len(_Unpickler(small, "ok").load()) == 5000
    started = time.process_time()
    with pytest.raises(ws.UnsupportedFormatError):
        _Unpickler(_colliding(20_000), "bad").load()
    assert time.process_time() - started < 1


# -- scan keeps its verdict -------------------------------------------------------------------

LEFT_UNDER = pickle2(call(glob("os", "system"), text(shell("under"))) + VALID[2:-1])


@pytest.mark.parametrize(
    ("body", "status", "listed"),
    [
        # a refused call left under the result at STOP (CPython would run it, and return the dict)
        (LEFT_UNDER, 6, "REFUSED REDUCE os.system"),
        # a refused call, then damage: listed, and refused as ls refuses it
        (pickle2(call(glob("os", "system"), text(shell("then"))) + b"\xff"), 6, "REFUSED GLOBAL os.system"),
        # damage after allowed calls only: listed, and corrupt as ls says
        (VALID[:-1] + b"K\x01.", 4, "allowed REDUCE torch._utils._rebuild_tensor_v2"),
        (VALID[:-1] + b"\xff", 4, "allowed REDUCE torch._utils._rebuild_tensor_v2"),
        # an opcode that builds objects, after a tensor
        (VALID[:-1] + b"(c__main__\nThing\no.", 6, "REFUSED GLOBAL __main__.Thing"),
    ],
)
def test_scan_lists_what_it_saw_and_agrees_with_ls(
    body: bytes, status: int, listed: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "model.pt", torch_zip(body))
    assert main(["ls", str(path)]) == status
    capsys.readouterr()
    assert main(["scan", str(path)]) == status
    out = capsys.readouterr().out
    assert listed in out
    report = scan(path)
    assert report.verdict is not None and report.verdict.exit_status == status
    assert not Path(f"/tmp/weightscope-corpus-marker-{shell('under')}").exists()


def test_scan_of_a_clean_file_has_no_verdict(tmp_path: Path) -> None:
    report = scan(_write(tmp_path / "ok.pt", torch_zip(VALID)))
    assert report.verdict is None
    reduced = {entry.name: entry.count for entry in report if entry.opcode == "REDUCE"}
    assert reduced == {"collections.OrderedDict": 2, "torch._utils._rebuild_tensor_v2": 1}
    assert all(entry.allowed for entry in report)


def test_every_tensor_of_a_valid_pickle_is_still_read(tmp_path: Path) -> None:
    body = pickle2(b"}(" + text("a") + tensor("0", 4, (2, 2), (2, 1)) + text("b") + tensor("0", 4, (4,), (1,)) + b"u")
    with ws.open(_write(tmp_path / "ok.pt", torch_zip(body))) as ckpt:
        assert sorted(ckpt) == ["a", "b"] and ckpt["a"].shape == (2, 2)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_reads_as_pickle_loads_it_at_every_protocol(protocol: int) -> None:
    value: dict[object, object] = {
        "text": "naïve ☃ \U0001f600",
        "bytes": b"\x00\xff" * 3,
        "ints": [0, 1, -1, 255, 65535, 2**31 - 1, -(2**31), 2**63, -(2**200)],
        "floats": (0.5, -1e300, float("inf")),
        "nested": {1: [None, True, False], 2.5: ((),)},
        "set": {1, 2, 3},
        "complex": 1 + 2j,
        "shared": [[1]] * 3,  # one list three times, through the memo
    }
    if protocol >= 4:
        value["frozen"] = frozenset({"a"})
    data = pickle.dumps(value, protocol)
    assert _Unpickler(data, "plain").load() == pickle.loads(data)


def test_an_int_too_long_to_print_is_unsupported() -> None:
    # LONG4 of 1,025 bytes: Python prints no int past 4,300 digits, so none could be shown
    for length, expected in ((1024, None), (1025, ws.UnsupportedFormatError)):
        data = b"\x80\x04\x8b" + struct.pack("<I", length) + b"\x01" * length + b"."
        if expected is None:
            assert _Unpickler(data, "ok").load() == pickle.loads(data)
        else:
            with pytest.raises(expected, match="an int of 1025 bytes"):
                _Unpickler(data, "bad").load()


def test_scanning_many_distinct_names_is_bounded(tmp_path: Path) -> None:
    # scan lists every name; each distinct one costs far more than its 8 bytes of GLOBAL
    names = pickle2(b"(" + b"".join(b"c" + f"m\n{index:05x}\n".encode() for index in range(400_000)) + b"t")
    path = _write(tmp_path / "names.pt", torch_zip(names))
    report = scan(path)
    assert isinstance(report.verdict, ws.RefusedError)
    assert report and all(not entry.allowed for entry in report)
    scanned = _Unpickler(names, "names", scan=True)
    scanned.load()
    assert isinstance(scanned.verdict, ws.RefusedError)  # the first error stays the verdict
    assert scanned.stopped and 10_000 < len(scanned.found) < 400_000  # listed until the memory cap
