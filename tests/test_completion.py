"""Shell completion: the scripts click makes, a real bash completing commands, options and a file's tensor names."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import weightscope
from weightscope.cli import Environment, main
from weightscope.errors import ExitStatus

BASH = shutil.which("bash")
ZSH = shutil.which("zsh") or "zsh"  # make test installs both (Makefile)
FISH = shutil.which("fish") or "fish"


def run(*args: object, completion: str | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main([str(arg) for arg in args], env=Environment(stdout=out, stderr=err, completion=completion))
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    save_file(
        {
            "layer1.weight": np.zeros((3, 4), np.float32),
            "layer1.bias": np.zeros(3, np.float32),
            "layer2.weight": np.zeros((2, 3), np.float16),
        },
        path,
    )
    return path


@pytest.fixture
def on_path(tmp_path: Path) -> dict[str, str]:
    """An environment with a ``weightscope`` command (this checkout's, run by this Python) first on PATH."""
    folder = tmp_path / "bin"
    folder.mkdir()
    command = folder / "weightscope"
    command.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m weightscope "$@"\n')
    command.chmod(0o755)
    source = str(Path(weightscope.__file__).resolve().parents[1])
    return {
        "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")]),
        "HOME": str(tmp_path),
    }


def _bash_complete(env: dict[str, str], script: str, *words: str) -> tuple[list[str], str]:
    """What bash proposes for the last of ``words`` (COMPREPLY), the completion function run as bash runs it."""
    assert BASH is not None
    quoted = " ".join("'" + word.replace("'", "'\\''") + "'" for word in words)
    program = (
        f"{script}\n"
        f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; COMPREPLY=()\n"
        "complete -p weightscope >&2\n"
        "_weightscope_completion weightscope\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run([BASH, "--norc", "--noprofile", "-c", program], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line], done.stderr


def test_bash_completes_commands_options_and_tensor_names(model: Path, on_path: dict[str, str]) -> None:
    status, script, err = run("completion", "bash")
    assert (status, err) == (0, "")
    # the same script as click's protocol gives, through main(), in a real process
    sourced = subprocess.run(
        ["weightscope"], env={**on_path, "_WEIGHTSCOPE_COMPLETE": "bash_source"}, capture_output=True, text=True
    )
    assert (sourced.returncode, sourced.stdout, sourced.stderr) == (0, script, "")

    proposed, registered = _bash_complete(on_path, script, "weightscope", "sh")
    assert registered.strip() == "complete -o nosort -F _weightscope_completion weightscope"
    assert proposed == ["show"]
    proposed, _ = _bash_complete(on_path, script, "weightscope", "")
    assert {"ls", "show", "stats", "hash", "meta", "verify", "completion"} <= set(proposed)
    proposed, _ = _bash_complete(on_path, script, "weightscope", "show", "--n")
    assert proposed == ["--npy", "--no-verify"]
    proposed, _ = _bash_complete(on_path, script, "weightscope", "verify", "--m")
    assert proposed == ["--manifest"]
    for command in ("show", "stats", "spectra", "health", "plot"):
        proposed, _ = _bash_complete(on_path, script, "weightscope", command, str(model), "layer1.")
        assert proposed == ["layer1.bias", "layer1.weight"], command
    proposed, _ = _bash_complete(on_path, script, "weightscope", "show", str(model), "")
    assert proposed == ["layer1.bias", "layer1.weight", "layer2.weight"]
    proposed, _ = _bash_complete(on_path, script, "weightscope", "show", str(model), "layer1.weight", "layer2")
    assert proposed == ["layer2.weight"]


def test_no_tensor_names_and_no_traceback_from_a_broken_file(tmp_path: Path, on_path: dict[str, str]) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    script = run("completion", "bash")[1]
    for path in (broken, tmp_path / "absent.safetensors", "https://example.invalid/model.safetensors"):
        proposed, stderr = _bash_complete(on_path, script, "weightscope", "show", str(path), "l")
        assert proposed == []
        assert "Traceback" not in stderr and "error" not in stderr


def test_a_checkpoint_path_completes_as_a_file_name(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMP_WORDS", f"weightscope ls {model.parent}/mo")
    monkeypatch.setenv("COMP_CWORD", "2")
    assert run(completion="bash_complete") == (0, f"file,{model.parent}/mo\n", "")


def test_zsh_and_fish_scripts_and_answers(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    status, zsh, _ = run("completion", "zsh")
    assert status == 0 and "#compdef weightscope" in zsh and "compdef _weightscope_completion weightscope" in zsh
    assert "_WEIGHTSCOPE_COMPLETE=zsh_complete" in zsh
    status, fish, _ = run("completion", "fish")
    assert status == 0 and "complete --no-files --command weightscope" in fish
    assert "_WEIGHTSCOPE_COMPLETE=fish_complete" in fish
    assert run(completion="zsh_source")[1] == zsh
    assert run(completion="fish_source")[1] == fish

    monkeypatch.setenv("COMP_WORDS", f"weightscope show {model} layer1.w")
    monkeypatch.setenv("COMP_CWORD", "3")
    assert run(completion="zsh_complete") == (0, "plain\nlayer1.weight\nfloat32 [3, 4]\n", "")
    monkeypatch.setenv("COMP_WORDS", f"weightscope show {model} layer")
    monkeypatch.setenv("COMP_CWORD", "layer")  # fish gives the word being completed itself
    status, out, _ = run(completion="fish_complete")
    assert out.splitlines() == [
        "plain,layer1.bias\tfloat32 [3]",
        "plain,layer1.weight\tfloat32 [3, 4]",
        "plain,layer2.weight\tfloat16 [2, 3]",
    ]


def test_fish_completes_commands_options_and_tensor_names(model: Path, on_path: dict[str, str]) -> None:
    """The fish script, sourced in a real fish, asked what it proposes (``complete -C``, as a TAB asks it)."""
    script = run("completion", "fish")[1]

    def proposed(line: str) -> list[str]:
        program = f"{script}\ncomplete -C {_quoted(line)}"
        done = subprocess.run([FISH, "--no-config", "-c", program], env=on_path, capture_output=True, text=True)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        return done.stdout.splitlines()

    # the whole help text: click's own script cut it at its comma
    assert proposed("weightscope sh") == ["show\tPrint tensor values, as numpy prints them."]
    assert {"ls", "show", "hash", "completion"} <= {line.split("\t")[0] for line in proposed("weightscope ")}
    assert [line.split("\t")[0] for line in proposed("weightscope verify --m")] == ["--manifest"]
    assert proposed(f"weightscope show {model} layer1.") == [
        "layer1.bias\tfloat32 [3]",
        "layer1.weight\tfloat32 [3, 4]",
    ]


def test_zsh_runs_the_script_and_gets_tensor_names(model: Path, on_path: dict[str, str]) -> None:
    """The zsh script run in a real zsh, the words of a command line in ``words`` and ``CURRENT`` as the completion
    system sets them; its two functions that present the answers (``_describe``, ``compadd``) print them instead."""
    script = run("completion", "zsh")[1]

    def proposed(*words: str) -> list[str]:
        program = (
            'compdef() { print -r -- "compdef $*" >&2 }\n'
            f"{script}\n"
            '_describe() { print -rl -- "${(@P)3}" }\n'
            'compadd() { print -rl -- "${(@P)5}" }\n'
            f"words=({' '.join(map(_quoted, words))}); CURRENT={len(words)}\n"
            "_weightscope_completion\n"
        )
        done = subprocess.run([ZSH, "-f", "-c", program], env=on_path, capture_output=True, text=True)
        assert done.returncode == 0 and done.stderr == "compdef _weightscope_completion weightscope\n", done.stderr
        return done.stdout.splitlines()

    assert proposed("weightscope", "sh") == ["show:Print tensor values, as numpy prints them."]
    assert proposed("weightscope", "show", str(model), "layer1.") == [
        "layer1.bias:float32 [3]",
        "layer1.weight:float32 [3, 4]",
    ]
    assert proposed("weightscope", "show", "--n") == [
        "--npy:Save the (single) tensor as a .npy file.",
        "--no-verify:Skip checksum verification.",
    ]


def _quoted(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


def test_completion_answers_on_the_environments_streams(
    model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COMP_WORDS", "weightscope ha")
    monkeypatch.setenv("COMP_CWORD", "1")
    assert run("ls", "ignored", completion="bash_complete") == (0, "plain,hash\n", "")
    assert capsys.readouterr() == ("", "")


def test_an_unknown_shell_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(completion="tcsh_source")
    assert (status, out) == (ExitStatus.USAGE, "")
    assert (
        err == "weightscope: _WEIGHTSCOPE_COMPLETE=tcsh_source: expected SHELL_source or SHELL_complete, "
        "SHELL one of bash, zsh, fish\n"
    )
    status, out, err = run("completion", "tcsh")
    assert status == ExitStatus.USAGE and "'tcsh' is not one of 'bash', 'zsh', 'fish'" in err


def test_names_a_shell_would_split_or_act_on_are_not_offered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "odd.safetensors"
    zero = np.zeros(1, np.float32)
    save_file({"layer one.weight": zero, "layer\x1b[31m.weight": zero, "layer\n.bias": zero, "layer.ok": zero}, path)
    monkeypatch.setenv("COMP_WORDS", f"weightscope show {path} layer")
    monkeypatch.setenv("COMP_CWORD", "3")
    assert run(completion="bash_complete") == (0, "plain,layer.ok\n", "")
