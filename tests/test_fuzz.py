"""The fuzz harnesses (fuzz/): each runs briefly and finds nothing; every committed finding stays fixed.

``make fuzz`` runs them for long; here each gets a few seconds, so that a harness that
no longer runs, or a finding that comes back, fails the suite. Every test here is marked
``fuzz``: ``make test`` runs them; ``pytest -m 'not fuzz'`` leaves them out, ``-m fuzz`` runs only them.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
HARNESSES = sorted(FUZZ.glob("fuzz_*.py"))

pytestmark = pytest.mark.fuzz


def _load(harness: Path) -> ModuleType:
    sys.path.insert(0, str(FUZZ))
    try:
        spec = importlib.util.spec_from_file_location(harness.stem, harness)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(FUZZ))


@pytest.mark.parametrize("harness", HARNESSES, ids=[path.stem for path in HARNESSES])
def test_a_short_fuzz_run_finds_nothing(harness: Path, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    findings = tmp_path / "findings"
    findings.mkdir()
    result = subprocess.run(
        [sys.executable, str(harness), "-runs=4000", "-max_total_time=6", f"-artifact_prefix={findings}/"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=FUZZ,
        env={**os.environ, "WEIGHTSCOPE_FUZZ_SCRATCH": str(scratch)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    done = re.search(r"Done (\d+) runs", result.stderr)
    assert done is not None and int(done.group(1)) > 0, result.stderr[-3000:]
    assert list(findings.iterdir()) == []  # no crash, timeout or out-of-memory input written


@pytest.mark.parametrize("harness", HARNESSES, ids=[path.stem for path in HARNESSES])
def test_every_seed_and_committed_finding_reads_without_a_stray_exception(harness: Path) -> None:
    module = _load(harness)
    inputs = list(module.seeds()) + [
        path.read_bytes() for path in sorted((FUZZ / "regressions" / harness.stem).glob("*"))
    ]
    assert inputs
    for data in inputs:
        module.one_input(data)  # raises on anything but a WeightscopeError
