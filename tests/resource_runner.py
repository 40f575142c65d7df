"""Run weightscope commands on files, each in a fork under the resource rule's memory and time (test_resources.py).

``python tests/resource_runner.py JOBS RESULTS SLACK SCRATCH``: JOBS is a JSON list of ``{"path", "size",
"commands"}`` (``size``: the input's bytes; ``commands``: argument lists for ``weightscope.cli.main``, the path
among them). The runner imports weightscope, numpy and every format's module once, then forks once per file and
command, measuring its own address space (the baseline) before each fork. The child sets ``RLIMIT_AS`` to the
baseline + 64 MiB + 8 x the file's size and a CPU-time alarm (``ITIMER_PROF``, ending it by ``SIGPROF``) of 1 s
per MiB + 1 s, runs the command with its output discarded and its stderr kept, and exits with the command's
status. The parent waits the CPU budget plus SLACK seconds of wall time at a time: a child that used the CPU
less than 5% of such a stretch is blocked, and killed; one that keeps running on a loaded machine is waited for,
up to 10 stretches. RESULTS gets one record per command: status (negative: the signal that ended it), whether
it was killed as blocked, CPU seconds, peak resident memory, and the end of its stderr (kept in SCRATCH
meanwhile).

The runner starts nothing else and holds no lock while it forks: weightscope's readers are single-threaded at
open, so a fork of this process is a fresh command without the interpreter's start.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import select
import signal
import sys
import time
import traceback
from typing import Any

import numpy  # noqa: F401 - in the baseline, as the rule says

import weightscope
from weightscope.cli import main
from weightscope.formats import FORMATS
from weightscope.limits import MEMORY_BASE, MEMORY_PER_FILE_BYTE

MIB = 1 << 20
TRACEBACK_STATUS = 120  # an exception main() let through: a traceback, whatever it was
STDERR_KEPT = 2000
WALL_INTERVALS = 10  # a child may take 10x its CPU budget of wall time on a loaded machine, if it keeps running
MIN_PROGRESS = 0.05  # the share of a wall interval a child must spend on the CPU not to count as blocked


def address_space() -> int:
    """This process's virtual memory (VmSize), in bytes: what ``RLIMIT_AS`` counts."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def cpu_budget(size: int) -> float:
    """The rule's time for an input of ``size`` bytes: 1 s per MiB and 1 s."""
    return size / MIB + 1.0


def memory_budget(size: int) -> int:
    """The rule's memory for an input of ``size`` bytes: 64 MiB + 8 x its size."""
    return MEMORY_BASE + MEMORY_PER_FILE_BYTE * size


def _child(argv: list[str], limit: int, cpu: float, stderr_fd: int) -> None:
    """In the fork: the limits, then the command; never returns."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(stderr_fd, 2)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        signal.signal(signal.SIGPROF, signal.SIG_DFL)  # the CPU budget spent: ended by SIGPROF
        signal.setitimer(signal.ITIMER_PROF, cpu)
        status = main(argv)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    except BaseException:  # a traceback: reported as such, whatever it was
        try:
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(TRACEBACK_STATUS)


def _cpu_seconds(pid: int) -> float:
    """CPU time the process ``pid`` has used so far, all its threads (utime + stime of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _hung(handle: int, pid: int, interval: float) -> bool:
    """Wait for the child; True when it stops using the CPU before ending (blocked: on a FIFO, a lock).

    Its CPU time is bounded by its alarm; the wall clock only tells a blocked child from one that shares the
    machine's cores with other work: each ``interval`` it must have run, at most ``WALL_INTERVALS`` of them.
    """
    used = 0.0
    for _ in range(WALL_INTERVALS):
        ready, _, _ = select.select([handle], [], [], interval)
        if ready:
            return False
        now = _cpu_seconds(pid)
        if now - used < MIN_PROGRESS * interval:
            return True
        used = now
    return True


def run_one(argv: list[str], size: int, slack: float, stderr_path: str) -> dict[str, Any]:
    """Run ``main(argv)`` in a fork under the limits for an input of ``size`` bytes; what happened."""
    baseline = address_space()  # what the fork starts with: this process as it is now
    limit = baseline + memory_budget(size)
    cpu = cpu_budget(size)
    stderr_fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(argv, limit, cpu, stderr_fd)
    os.close(stderr_fd)
    handle = os.pidfd_open(pid)
    try:
        timed_out = _hung(handle, pid, cpu + slack)
        if timed_out:
            os.kill(pid, signal.SIGKILL)
        _, wait_status, usage = os.wait4(pid, 0)
    finally:
        os.close(handle)
    with open(stderr_path, "rb") as stderr:
        text = stderr.read().decode("utf-8", "replace")
    return {
        "argv": argv,
        "status": os.waitstatus_to_exitcode(wait_status),
        "timed_out": timed_out,
        "wall": time.monotonic() - started,
        "cpu": usage.ru_utime + usage.ru_stime,
        "max_rss": usage.ru_maxrss * 1024,
        "limit": limit,
        "baseline": baseline,
        "cpu_budget": cpu,
        "stderr": text[-STDERR_KEPT:],
    }


def run(jobs: list[dict[str, Any]], slack: float, scratch: str) -> dict[str, Any]:
    # weightscope imported means all of its code: every reader and what it needs (h5py, protobuf), the commands'.
    for reader in FORMATS.values():
        reader.load()
        if reader.requires:
            importlib.import_module(reader.requires)
    for module in ("weightscope.analysis", "weightscope.summary", "weightscope.layers"):
        importlib.import_module(module)
    results = [
        run_one(argv, job["size"], slack, os.path.join(scratch, "stderr")) for job in jobs for argv in job["commands"]
    ]
    return {"version": weightscope.__version__, "results": results}


if __name__ == "__main__":
    jobs_path, results_path, slack_text, scratch = sys.argv[1:]
    with open(jobs_path) as handle:
        jobs = json.load(handle)
    report = run(jobs, float(slack_text), scratch)
    with open(results_path, "w") as handle:
        json.dump(report, handle)
