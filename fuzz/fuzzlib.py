"""What every fuzz harness shares: an input as a file, one reader run over it, the verdict.

A harness is ``fuzz/fuzz_<parser>.py``: it imports the modules it fuzzes inside
``with fuzzlib.instrumented():`` (so coverage is weightscope's, and start-up is quick),
and has a ``one_input(data: bytes)`` that turns the
fuzzer's bytes into a file (or files) of its format and hands them to ``exercise``, a
``seeds()`` giving the real files it starts from, and ``main()`` calling ``run``. The
rule it checks is the project's promise about untrusted files: reading anything
(opening, listing, roles, layers, every tensor's values, ``verify``) either works or
raises a ``WeightscopeError``; any other exception is a finding, and so is an input
taking over a second (``-timeout=1``) or a process growing past 1 GiB
(``-rss_limit_mb``, ``-malloc_limit_mb``).

Run one: ``.venv/bin/python fuzz/fuzz_safetensors.py -runs=100000`` (any libFuzzer
flag); ``make fuzz`` runs them all; ``tests/test_fuzz.py`` runs each briefly and replays
every committed finding in ``fuzz/regressions/<harness>/``.
"""

from __future__ import annotations

import atexit
import contextlib
import operator
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import atheris
import numpy as np


def _patch_atheris_array_compare_leak() -> None:
    """Compare numpy arrays without atheris: its ``_trace_cmp`` (3.0.0) keeps two references to an array result.

    Every array comparison in the instrumented reader would leak its result, and the
    process would reach the 2 GiB limit after some ten thousand inputs. Arrays are not
    what the comparison feedback is for; everything else still goes to atheris.
    """
    from atheris.version_dependent import CMP_OP_SHIFT_AMOUNT

    native = atheris._trace_cmp
    compare = (operator.lt, operator.le, operator.eq, operator.ne, operator.gt, operator.ge)

    def trace_cmp(left: object, right: object, op: int, counter: int, is_const: bool) -> object:
        if isinstance(left, np.ndarray) or isinstance(right, np.ndarray):
            return compare[op >> CMP_OP_SHIFT_AMOUNT](left, right)
        return native(left, right, op, counter, is_const)

    if getattr(native, "__name__", "") != "trace_cmp":
        atheris._trace_cmp = trace_cmp


_patch_atheris_array_compare_leak()


def instrumented() -> contextlib.AbstractContextManager[None]:
    """Import weightscope's modules inside this block so that atheris sees their coverage (and nothing else's)."""
    return atheris.instrument_imports(include=["weightscope"])  # type: ignore[no-any-return]


with instrumented():
    import weightscope as ws
    from weightscope.errors import WeightscopeError

ROOT = Path(__file__).resolve().parent


# Inputs are written to memory, not disk, where the machine has /dev/shm.
def _scratch() -> Path:
    """Where inputs are written: ``$WEIGHTSCOPE_FUZZ_SCRATCH`` (whoever set it removes it: libFuzzer
    ends the process from C, past Python's exit handlers), else a directory in memory removed at exit."""
    given = os.environ.get("WEIGHTSCOPE_FUZZ_SCRATCH")
    if given:
        return Path(tempfile.mkdtemp(prefix="fuzz-", dir=given))
    directory = Path(
        tempfile.mkdtemp(prefix="weightscope-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    )
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


SCRATCH = _scratch()
LIBFUZZER_DEFAULTS = ["-timeout=1", "-rss_limit_mb=2048", "-malloc_limit_mb=1024", "-max_len=65536"]


def scratch_file(name: str, data: bytes) -> Path:
    """``data`` written to ``name`` in the harness's scratch directory."""
    path = SCRATCH / name
    path.write_bytes(data)
    return path


def exercise(path: Path, format: str | None = None, *, dequantize: bool = False) -> None:
    """Everything a user could ask of the file (``dequantize``: read with its quantised weights dequantised); only
    weightscope's own errors may come out."""
    try:
        with ws.open(path, format=format, dequantize=dequantize) as ckpt:
            for name in ckpt:
                ckpt.info(name)
                ckpt.role(name)
                array = ckpt[name]
                if array.dtype.kind not in "OV" and array.size:
                    np.asarray(array).reshape(-1)[[0, -1]]  # touch the first and last bytes
            ckpt.layers()
            ckpt.metadata  # noqa: B018 - a property that parses
            ckpt.verify()
    except WeightscopeError:
        pass


def run(one_input: Callable[[bytes], None], seeds: Iterable[bytes], argv: list[str] | None = None) -> None:
    """Fuzz ``one_input`` from ``seeds`` with libFuzzer's ``argv`` flags (atheris, coverage-guided)."""
    argv = list(sys.argv if argv is None else argv)
    corpus = [arg for arg in argv[1:] if not arg.startswith("-")]
    if not corpus:  # start from the seeds, in a corpus directory libFuzzer can grow
        directory = Path(tempfile.mkdtemp(prefix="corpus-", dir=SCRATCH))
        for index, seed in enumerate(seeds):
            (directory / f"seed-{index}").write_bytes(seed)
        argv.append(str(directory))
    atheris.Setup([argv[0], *LIBFUZZER_DEFAULTS, *argv[1:]], one_input)
    atheris.Fuzz()
