"""The command line's shape: its output through one sink, its terminal facts from an injected Environment,
nothing private taken from the library."""

from __future__ import annotations

import ast
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

import weightscope as ws
from weightscope.cli import Environment, main
from weightscope.output import render_table

CLI = Path(__file__).resolve().parent.parent / "src" / "weightscope" / "cli"


def _environment(**facts: object) -> tuple[Environment, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return Environment(stdout=out, stderr=err, **facts), out, err  # type: ignore[arg-type]


def test_help_and_version_go_to_the_environment_at_its_width(capsys: pytest.CaptureFixture[str]) -> None:
    widths = {}
    for columns in (60, 200):
        env, out, err = _environment(terminal_width=columns)
        assert main(["convert", "--help"], env=env) == 0
        assert (
            out.getvalue().startswith("Usage: weightscope convert [OPTIONS] SOURCE DESTINATION\n")
            and not err.getvalue()
        )
        prose, examples = out.getvalue().split("Examples:\n")
        widths[columns] = max(len(line) for line in prose.splitlines())
        # The examples are command lines to copy, kept whole (as click keeps a \\b block), each under 80 columns.
        assert all(len(line) <= 78 for line in examples.splitlines())
    assert widths[60] <= 58 < widths[200] <= 78  # click's rule: the terminal's width less 2, at most 78
    env, out, _ = _environment()
    assert main(["runs", "stats", "--help"], env=env) == 0 and "Usage: weightscope runs stats" in out.getvalue()
    env, out, _ = _environment()
    assert main(["--version"], env=env) == 0 and out.getvalue() == f"weightscope, version {ws.__version__}\n"
    assert capsys.readouterr() == ("", "")  # nothing reached the process's own streams


def test_progress_is_drawn_only_on_a_terminal(tmp_path: Path) -> None:
    for step in (10, 20):
        ws.save({"layer1/kernel": np.full((2, 2), step, np.float32)}, tmp_path / f"model.ckpt-{step}")
    for terminal in (True, False):
        env, out, err = _environment(stderr_isatty=terminal, progress_delay=0, terminal_width=100)
        assert main(["runs", "find-nan", "--scheduler", "sync", str(tmp_path)], env=env) == 0
        assert out.getvalue() == "no NaNs or infinities in any checkpoint\n"
        if terminal:  # one line drawn over itself, ended once all is done
            assert err.getvalue().startswith(f"\rruns find-nan {tmp_path.name}: ") and err.getvalue().endswith("\n")
            assert err.getvalue().count("\n") == 1 and "100%" in err.getvalue() and " tasks/s]" in err.getvalue()
        else:
            assert err.getvalue() == ""
    env, out, err = _environment(stderr_isatty=False)  # asked for off a terminal: a line per tenth
    assert main(["runs", "find-nan", "--scheduler", "sync", "--progress", str(tmp_path)], env=env) == 0
    assert err.getvalue() == "weightscope: 1/1 tasks (100%)\n"  # both checkpoints in one task
    env, out, err = _environment(stderr_isatty=True, progress_delay=0)  # refused on a terminal
    assert main(["runs", "find-nan", "--scheduler", "sync", "--no-progress", str(tmp_path)], env=env) == 0
    assert err.getvalue() == ""
    for quiet in (["-q"], ["--quiet"]):  # silenced on a terminal too
        env, out, err = _environment(stderr_isatty=True, progress_delay=0)
        assert main([*quiet, "runs", "find-nan", "--scheduler", "sync", str(tmp_path)], env=env) == 0
        assert err.getvalue() == "" and out.getvalue() == "no NaNs or infinities in any checkpoint\n"


def test_what_the_terminal_cannot_encode_is_escaped_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    ws.save({"caf\xe9/\u4e2d": np.ones(2, np.float32)}, path)
    env, out, err = _environment(encoding="ascii")
    assert main(["ls", str(path)], env=env) == 0 and err.getvalue() == ""
    assert "caf\\xe9/\\u4e2d  float32" in out.getvalue() and out.getvalue().isascii()
    env, out, _ = _environment()  # UTF-8: as it is
    assert main(["ls", "--json", str(path)], env=env) == 0
    assert json.loads(out.getvalue())["tensors"][0]["name"] == "caf\xe9/\u4e2d"


def test_json_mode_prints_only_the_result(tf_checkpoints: dict[str, Path]) -> None:
    """Under --json stdout is one JSON document, whatever the command says in words (on stderr)."""
    prefix = str(tf_checkpoints["seed"])
    for command in (["ls"], ["layers"], ["stats"], ["summary"], ["show", "layer1/weight"], ["diff", prefix]):
        env, out, err = _environment()
        assert main([command[0], "--json", prefix, *command[1:]], env=env) == 0, err.getvalue()
        assert json.loads(out.getvalue())
        if command[0] == "show":
            assert "'layer1/weight' is 'layer1/kernel'" in err.getvalue()


def test_the_sink_makes_only_the_form_asked_for() -> None:
    from weightscope.cli._output import Output

    def never(data: object) -> list[str]:
        raise AssertionError("made the form not asked for")

    # the table's column as wide as the escaped cell: aligned as shown
    for as_json, expected in ((False, "name    n\n------  -\nx\\x1by  1\n"), (True, '[\n  {\n    "n": 1\n  }\n]\n')):
        env, out, _ = _environment()
        sink = Output(env, as_json=as_json)
        if as_json:
            sink.result([{"n": 1}], never)
        else:
            sink.result(
                [{"n": 1}], lambda rows: [render_table(["name", "n"], [["x\x1by", str(rows[0]["n"])]])], to_json=never
            )
        sink.text("words for people, never inside the JSON")
        assert out.getvalue() == expected + ("" if as_json else "words for people, never inside the JSON\n")


# What only cli/_environment.py may touch: the process's streams, variables and terminal.
PROCESS_FACTS = re.compile(
    r"\bsys\.(?:stdout|stderr|stdin|__stdout__|__stderr__)\b|\bos\.(?:environ|getenv|putenv)\b|\benviron\b"
    r"|get_terminal_size|\.isatty\(|get_text_stream|get_binary_stream"
)


def test_no_command_reads_the_process_terminal_itself() -> None:
    found = {
        f"{path.name}:{number}": line.strip()
        for path in sorted(CLI.glob("*.py"))
        if path.name != "_environment.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if PROCESS_FACTS.search(line)
    }
    assert not found, f"read through the Environment instead: {found}"
    assert PROCESS_FACTS.search((CLI / "_environment.py").read_text(encoding="utf-8"))  # the pattern finds them


def _private_uses(source: str) -> list[str]:
    """The library's private names (``_x``, and modules ``_x``) that ``source`` imports or reaches through
    an imported library module; ``weightscope.cli``'s own are the command's, not the library's."""

    def library(module: str) -> bool:
        return (module == "weightscope" or module.startswith("weightscope.")) and not module.startswith(
            "weightscope.cli"
        )

    def private(name: str) -> bool:
        return any(part.startswith("_") and not part.startswith("__") for part in name.split("."))

    found = []
    bound: set[str] = set()  # names bound to library modules or objects
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if library(alias.name):
                    found += [alias.name] if private(alias.name) else []
                    bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and library(node.module):
            for alias in node.names:
                if private(node.module) or private(alias.name):
                    found.append(f"{node.module}.{alias.name}")
                bound.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in bound:
                found.append(f"{ast.unparse(node)}")
    return found


def test_the_private_name_finder_finds_them() -> None:
    source = (
        "import weightscope\nimport weightscope._proto.descriptor\nfrom weightscope.lazy import _chunks, plain\n"
        "from weightscope import formats\nfrom weightscope.cli._common import _open\n"
        "def f(x):\n    formats._sniff(x); weightscope.checkpoint._x; x._asdict(); plain.__name__\n"
    )
    assert sorted(_private_uses(source)) == [
        "formats._sniff",
        "weightscope._proto.descriptor",
        "weightscope.checkpoint._x",
        "weightscope.lazy._chunks",
    ]


def test_the_command_line_uses_no_private_name_of_the_library() -> None:
    found = {path.name: uses for path in sorted(CLI.glob("*.py")) if (uses := _private_uses(path.read_text("utf-8")))}
    assert not found, f"make them public in the library, or keep them there: {found}"


@pytest.mark.parametrize("columns", [None, "120", "0", "-5", "wide"])
@pytest.mark.parametrize("terminal", [False, True])
def test_the_terminal_width_is_the_one_shutil_gives(
    monkeypatch: pytest.MonkeyPatch, columns: str | None, terminal: bool
) -> None:
    """``Environment``'s default width is read without importing shutil (issue 22: a faster start), and is the one
    ``shutil.get_terminal_size`` gives: from ``COLUMNS``, else the terminal ``sys.__stdout__`` is on, else 80."""
    import fcntl
    import os
    import shutil
    import struct
    import sys
    import termios

    from weightscope.cli._environment import _terminal_columns

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    monkeypatch.delenv("LINES", raising=False)
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 31, 97, 0, 0))  # rows, columns
    with open(follower if terminal else os.devnull, "w", closefd=not terminal) as stream:
        monkeypatch.setattr(sys, "__stdout__", stream)
        assert _terminal_columns() == shutil.get_terminal_size().columns
        expected = 120 if columns == "120" else 97 if terminal else 80
        assert _terminal_columns() == expected
    os.close(leader)
    os.close(follower)


# Run in a fresh interpreter: reports, when numpy is first imported, OpenBLAS's spin timeout in the environment and
# the weightscope modules imported by then; then runs the command line on its arguments.
_WATCH_NUMPY = """
import os, sys
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "numpy":
            loaded = sorted(module for module in sys.modules if module.startswith("weightscope"))
            print(repr((os.environ.get("OPENBLAS_THREAD_TIMEOUT"), loaded)), file=sys.stderr)
        return None
sys.meta_path.insert(0, Watch())
from weightscope.cli import main
sys.exit(main())
"""


@pytest.mark.parametrize("given", [None, "7"])
def test_openblas_threads_spin_briefly_unless_the_user_says(seed_copy: Path, given: str | None) -> None:
    """numpy's OpenBLAS threads spin ~0.1 s after numpy loads, taking a busy machine's core from ``show`` (issue 22:
    135 -> 82 ms at load 1.5): the command line sets their timeout before numpy loads (``import weightscope`` loads
    none), and a value of the user's own is kept."""
    import os
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items() if key != "OPENBLAS_THREAD_TIMEOUT"}
    if given is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = given
    run = subprocess.run(
        [sys.executable, "-c", _WATCH_NUMPY, "show", str(seed_copy), "layer1/kernel"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0 and run.stdout.startswith("[["), run.stderr
    timeout, loaded = ast.literal_eval(run.stderr.splitlines()[0])
    assert timeout == (given or "20")
    assert "weightscope.checkpoint" not in loaded and "weightscope.cli._environment" in loaded


def test_the_process_command_freezes_its_start_and_a_caller_keeps_its_collector(seed_copy: Path) -> None:
    """``main()`` run as the process's command takes what its start imported out of the collector's passes (issue
    22: the passes at exit cost ~8 ms of a ``show``); ``main(argv)`` called by other code, as here, freezes
    nothing of its caller's."""
    import gc
    import subprocess
    import sys

    program = "import gc, sys; from weightscope.cli import main; status = main(); print(gc.get_freeze_count())"
    run = subprocess.run(
        [sys.executable, "-c", program, "show", str(seed_copy), "layer1/kernel"], capture_output=True, text=True
    )
    assert run.returncode == 0 and run.stdout.startswith("[["), run.stderr
    assert int(run.stdout.splitlines()[-1]) > 10_000  # the start's modules, classes and functions
    frozen = gc.get_freeze_count()
    env, out, _ = _environment()
    assert main(["show", str(seed_copy), "layer1/kernel"], env=env) == 0 and out.getvalue().startswith("[[")
    assert gc.get_freeze_count() == frozen
