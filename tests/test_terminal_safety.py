"""No control character from a file reaches the terminal, whatever the command.

Tensor names, metadata, pickle globals, a checkpoint state file's paths and the file
names of a run carry ESC, an OSC hyperlink and an OSC title, CSI, a C1 CSI (``\\x9b``),
DEL, bidirectional overrides (``U+202E``) and a line separator. Every command that reads
files runs on them in a subprocess whose stdout and stderr are pipes (escapes must not
pass when piped either), with UTF-8 output in strict mode; what it writes must be valid
UTF-8 holding none of those characters, and no traceback.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

SOURCE = Path(__file__).parents[1] / "src"

OSC_LINK = "\x1b]8;;http://evil.example/\x07"
OSC_TITLE = "\x1b]0;pwned\x1b\\"
CSI = "\x1b[2J"
C1 = "\x9b31m"
BIDI = "\u202e"
HOSTILE = [OSC_LINK, OSC_TITLE, CSI, C1, BIDI, "\x7f", "\u2028", "\u2066"]

# The test's own list, not weightscope's: C0 but newline, DEL, C1, lone surrogates, bidi
# controls and the Unicode line separators.
FORBIDDEN = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")

LAYER = f"{OSC_LINK}layer1{OSC_TITLE}"
NAMES = {
    f"{LAYER}.weight": np.arange(12, dtype=np.float32).reshape(4, 3),
    f"{LAYER}.bias": np.ones(4, np.float32),
    f"{LAYER}.{CSI}scale{C1}": np.full((4, 3), 2, np.float32),  # "other" column; no known layout
    f"{BIDI}layer2\x7f.weight": np.array([[np.nan, 1, 2, 3], [4, 5, 6, np.inf]], np.float32),  # stats' warning
    f"layer2\u2028{BIDI}.running_mean": np.zeros(2, np.float32),
}
METADATA = {f"{OSC_LINK}note": f"value{CSI}{C1}{BIDI}\u2066", "format": "pt"}


def _files(root: Path) -> dict[str, Path]:
    """The hostile files: two safetensors (a run of them), a pickle, a state file, a corrupt file."""
    run = root / "run"
    run.mkdir()
    a = run / "a.safetensors"
    save_file(NAMES, str(a), metadata=METADATA)
    changed = {name: array + 1 for name, array in NAMES.items()}
    changed[f"only{OSC_LINK}b{C1}"] = np.ones(3, np.float32)
    b = run / "b.safetensors"
    save_file(changed, str(b), metadata=METADATA)
    # A zip .pt whose pickle calls a global named with escapes (STACK_GLOBAL takes any text).
    module, function = f"os{OSC_LINK}", f"system{C1}{BIDI}"
    pickled = b"\x80\x04"
    for text in (module, function):
        encoded = text.encode()
        pickled += b"\x8c" + bytes([len(encoded)]) + encoded
    pickled += b"\x93)R."
    pt = root / "evil.pt"
    with zipfile.ZipFile(pt, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
    history = root / "history"
    history.mkdir()
    (history / "checkpoint").write_text(
        f'model_checkpoint_path: "model{OSC_LINK}.ckpt-2"\n'
        f'all_model_checkpoint_paths: "model{C1}.ckpt-1"\n'
        f'all_model_checkpoint_paths: "model{OSC_LINK}.ckpt-2"\n',
        encoding="utf-8",
    )
    corrupt = root / "corrupt.safetensors"
    header = f'{{"{OSC_LINK}x{C1}": {{"dtype": "F{CSI}32", "shape": [1], "data_offsets": [0, 4]}}}}'.encode()
    corrupt.write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
    return {"a": a, "b": b, "run": run, "pt": pt, "history": history, "corrupt": corrupt}


def _commands(files: dict[str, Path], out: Path) -> list[tuple[list[str], set[int]]]:
    """Every command line reading a hostile file, with the exit statuses it may end with."""
    a, b = str(files["a"]), str(files["b"])
    name = f"{LAYER}.{CSI}scale{C1}"
    commands: list[tuple[list[str], set[int]]] = [
        (["ls", a], {0}),
        (["ls", "--all", "--keys", a], {0}),
        (["ls", "--json", a], {0}),
        (["ls", "--filter", f"*{CSI}*", a], {0}),
        (["show", a, name], {0}),
        (["show", a, *NAMES], {0}),
        (["show", "--json", a, name], {0}),
        (["show", "--npy", str(out / "one.npy"), a, name], {0}),
        (["show", a, f"{LAYER}.{CSI}scal{C1}"], {3}),  # not found, with suggestions
        (["show", a, f"{LAYER}/weight"], {0, 3}),  # a role name
        (["layers", a], {0}),
        (["layers", "--json", a], {0}),
        (["stats", a], {0}),
        (["stats", "--all", "--json", a], {0}),
        (["spectra", a], {0}),
        (["spectra", "--json", a], {0}),
        (["diff", a, b], {1}),
        (["diff", "--all", a, b], {1}),
        (["diff", "--json", a, b], {1}),
        (["verify", a], {0}),
        (["summary", a], {0}),
        (["summary", "--json", a], {0}),
        (["scan", str(files["pt"])], {6}),
        (["scan", "--json", str(files["pt"])], {6}),
        (["ls", str(files["pt"])], {6}),
        (["history", str(files["history"])], {0}),
        (["history", "--json", str(files["history"])], {0}),
        (["ls", str(files["corrupt"])], {4, 5}),
        (["formats"], {0}),
        (["--traceback", "show", a, name[:-1]], {3}),  # the stack too is escaped
        (["convert", a, str(out / "x"), "--to", f"x{OSC_LINK}"], {2}),  # click's own usage errors
        (["runs", "stats", str(files["run"])], {0}),
        (["runs", "stats", "--json", str(files["run"])], {0}),
        (["runs", "find-nan", str(files["run"])], {1}),
        (["runs", "convert", str(files["run"]), "--out", str(out / "runs")], {0}),
        (["plot", a, name, "--out", str(out / "plot.png")], {0}),
    ]
    # (npz refuses the backslash of OSC_TITLE's string terminator in a member name: usage error)
    for to, suffix, status in (("safetensors", ".safetensors", 0), ("pytorch", ".pt", 0), ("npz", ".npz", 2)):
        destination = str(out / f"converted-{to}{suffix}")
        arguments = ["convert", a, destination, "--to", to, "--layout", "pytorch", "--names", "pytorch"]
        commands.append((arguments, {status}))
    commands.append((["convert", a, str(out / "converted-tf"), "--to", "tensorflow"], {0}))
    commands.append((["convert", "--json", a, str(out / "c.safetensors"), "--layout", "tensorflow"], {0}))
    return commands


# Runs each command line through weightscope's main() with stdout and stderr strict
# UTF-8 text streams over pipes' worth of bytes, as a terminal or a pipe gets them.
CHILD = """
import io, json, sys
from weightscope.cli import main

results = []
for arguments in json.load(open(sys.argv[1], encoding="utf-8")):
    out, err = io.BytesIO(), io.BytesIO()
    sys.stdout = io.TextIOWrapper(out, encoding="utf-8", errors="strict", write_through=True)
    sys.stderr = io.TextIOWrapper(err, encoding="utf-8", errors="strict", write_through=True)
    try:
        status = main(arguments)
    except BaseException as error:  # a crash is a finding: reported, not hidden
        status = f"raised {type(error).__name__}: {error!r}"
    results.append([status, out.getvalue().decode("latin-1"), err.getvalue().decode("latin-1")])
sys.stdout = sys.__stdout__
json.dump(results, open(sys.argv[2], "w", encoding="utf-8"))
"""


def _run(commands: list[list[str]], tmp_path: Path) -> list[tuple[int | str, bytes, bytes]]:
    (tmp_path / "commands.json").write_text(json.dumps(commands), encoding="utf-8")
    environment = {**os.environ, "PYTHONPATH": str(SOURCE)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "commands.json"), str(tmp_path / "results.json")],
        capture_output=True,
        env=environment,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    return [(status, out.encode("latin-1"), err.encode("latin-1")) for status, out, err in results]


def test_every_command_escapes_what_files_say(tmp_path: Path) -> None:
    files = _files(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    commands = _commands(files, out)
    results = _run([arguments for arguments, _ in commands], tmp_path)
    seen_escaped = 0
    for (arguments, statuses), (status, stdout, stderr) in zip(commands, results, strict=True):
        shown = repr(arguments)
        for stream in (stdout, stderr):
            text = stream.decode("utf-8")  # strict: valid UTF-8
            assert FORBIDDEN.search(text) is None, (shown, status, text[:2000])
            assert "Traceback" not in text or "--traceback" in arguments, (shown, text[-2000:])
            seen_escaped += "\\x1b" in text or "\\u001b" in text or "\\u202e" in text
        assert status in statuses, (shown, status, stderr.decode()[-2000:])
    assert seen_escaped >= len(commands) - 3  # the names are there, escaped (formats shows none)


def test_terminal_text_keeps_newlines_and_escapes_the_rest() -> None:
    from weightscope.output import safe_text, terminal_text

    for hostile in HOSTILE:
        line = f"a{hostile}b"
        shown = terminal_text(f"{line}\n{line}")
        assert shown == f"{safe_text(line)}\n{safe_text(line)}"
        assert FORBIDDEN.search(shown) is None and terminal_text(shown) == shown  # idempotent
    assert terminal_text("\udcff\ud800") == "\\xff\\ud800"  # a byte that was not UTF-8; a lone surrogate


def test_the_progress_bar_on_a_terminal_escapes_the_file_name() -> None:
    from weightscope.cli import Environment
    from weightscope.cli._output import Output

    stderr = io.StringIO()  # a terminal's
    env = Environment(stdout=io.StringIO(), stderr=stderr, stderr_isatty=True, progress_delay=0, terminal_width=200)
    with Output(env).progress(0, 0, f"convert {OSC_LINK}{C1}.pt") as bar:
        bar(1, 2, 512, 1024)  # convert's report: 1 of 2 tensors, 512 of 1024 bytes
    err = stderr.getvalue()
    assert err.startswith("\rconvert \\x1b]8;;http://evil.example/\\x07\\x9b31m.pt: ") and err.endswith("\n")
    assert "512/1.00k" in err and "1/2 tensors" in err
    assert FORBIDDEN.search(err.replace("\r", "")) is None
