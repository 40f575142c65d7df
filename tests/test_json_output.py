"""``--json`` is valid UTF-8 JSON whatever the file holds: lone surrogates in names, and
every kind of ``.npy`` array (text, bytes, raw void, structured, datetimes).

A lone surrogate (``"\\ud800"`` in a pickle's text, or in a safetensors header) is written
as the JSON escape ``"\\ud800"``: ``json.loads`` gives back the very name, which opens the
tensor; the escaped form the table prints opens it from the command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import weightscope as ws

SOURCE = Path(__file__).parents[1] / "src"
NAME = "layer\ud800.weight"  # a lone high surrogate
OTHER = "bias\udcff"  # a low one: what surrogateescape makes of the byte 0xff


def _weightscope(*arguments: str) -> tuple[int, str, str]:
    """The command in a child whose stdout and stderr are strict UTF-8 pipes."""
    environment = {**os.environ, "PYTHONPATH": str(SOURCE), "PYTHONIOENCODING": "utf-8:strict", "PYTHONUTF8": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "weightscope", *arguments], capture_output=True, env=environment, timeout=120
    )
    out, err = done.stdout.decode("utf-8"), done.stderr.decode("utf-8")  # strict: valid UTF-8, or this raises
    assert "Traceback" not in err, err
    return done.returncode, out, err


@pytest.fixture
def surrogate_pt(tmp_path: Path) -> Path:
    path = tmp_path / "surrogate.pt"
    torch.save({NAME: torch.arange(6.0).reshape(2, 3), OTHER: torch.ones(2)}, path)
    return path


def test_ls_json_writes_lone_surrogates_as_json_escapes(surrogate_pt: Path) -> None:
    status, out, _ = _weightscope("ls", "--json", str(surrogate_pt))
    assert status == 0
    assert "\\ud800" in out and "\\udcff" in out  # escaped, not raw (raw could not be UTF-8)
    names = [row["name"] for row in json.loads(out)["tensors"]]
    assert sorted(names) == sorted([NAME, OTHER])
    with ws.open(surrogate_pt) as ckpt:  # the names JSON gives back open the tensors
        assert ckpt[NAME].tolist() == [[0, 1, 2], [3, 4, 5]]
        assert ckpt[OTHER].tolist() == [1, 1]


@pytest.mark.parametrize(
    "command",
    [["layers", "--json"], ["stats", "--json"], ["summary", "--json"], ["diff", "--json"], ["verify"], ["ls"]],
)
def test_every_command_on_surrogate_names_writes_valid_utf8(surrogate_pt: Path, command: list[str]) -> None:
    arguments = [*command, str(surrogate_pt)] + ([str(surrogate_pt)] if command[0] == "diff" else [])
    status, out, _ = _weightscope(*arguments)
    assert status == 0
    if "--json" in command:
        document = json.loads(out)
        assert NAME.split(".")[0] in json.dumps(document, ensure_ascii=False)
    else:
        assert "\\ud800" in out or command == ["verify"]


def test_show_opens_a_surrogate_name_by_the_form_printed(surrogate_pt: Path) -> None:
    status, out, _ = _weightscope("ls", str(surrogate_pt))
    printed = next(line.split()[0] for line in out.splitlines() if line.startswith("layer"))
    assert printed == "layer\\ud800.weight"
    status, out, err = _weightscope("show", "--json", str(surrogate_pt), printed, "bias\\xff")
    assert status == 0 and err == ""  # no "'X' is 'X' in this checkpoint" note
    assert json.loads(out) == {
        NAME: {"dtype": "float32", "shape": [2, 3], "values": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]},
        OTHER: {"dtype": "float32", "shape": [2], "values": [1.0, 1.0]},
    }
    with ws.open(surrogate_pt) as ckpt:
        assert ckpt.resolve(printed) == NAME


def test_convert_refuses_a_name_it_cannot_write_in_one_escaped_line(surrogate_pt: Path, tmp_path: Path) -> None:
    status, out, err = _weightscope("convert", "--json", str(surrogate_pt), str(tmp_path / "out.pt"))
    assert status == 2 and out == ""
    assert err == "weightscope: error: tensor 'layer\\ud800.weight': the name is not valid UTF-8 text\n"
    assert list(tmp_path.iterdir()) == [surrogate_pt]


def test_a_surrogate_pair_is_the_character_it_encodes(tmp_path: Path) -> None:
    # Two code points in the pickle (surrogatepass), which JSON can only write as one character.
    name = "emoji\ud83d\ude00.weight"
    torch.save({name: torch.ones(2)}, tmp_path / "pair.pt")
    status, out, _ = _weightscope("ls", "--json", str(tmp_path / "pair.pt"))
    assert status == 0 and "emoji\U0001f600.weight" in out  # raw UTF-8, not escapes
    (row,) = json.loads(out)["tensors"]
    assert row["name"] == "emoji\U0001f600.weight"
    status, out, _ = _weightscope("ls", str(tmp_path / "pair.pt"))
    assert "emoji\U0001f600.weight" in out
    status, out, _ = _weightscope("show", "--json", str(tmp_path / "pair.pt"), row["name"])
    assert status == 0 and json.loads(out)[row["name"]]["values"] == [1.0, 1.0]
    with ws.open(tmp_path / "pair.pt") as ckpt:
        assert ckpt.resolve(row["name"]) == name


def test_scan_json_of_a_global_named_with_a_lone_surrogate(tmp_path: Path) -> None:
    module, function = "os\ud800", "system"
    pickled = b"\x80\x04"
    for text in (module, function):  # SHORT_BINUNICODE, as pickle writes text (surrogatepass)
        encoded = text.encode("utf-8", "surrogatepass")
        pickled += b"\x8c" + bytes([len(encoded)]) + encoded
    pickled += b"\x93)R."
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
    status, out, err = _weightscope("scan", "--json", str(path))
    assert status == 6, err
    assert {entry["name"] for entry in json.loads(out)} == {"os\ud800.system"}
    status, out, _ = _weightscope("scan", str(path))
    assert status == 6 and "os\\ud800.system" in out


NPY: dict[str, tuple[np.ndarray, Any]] = {
    "unicode": (np.array(["héllo", "wörld"], "<U5"), ["héllo", "wörld"]),
    "unicode-scalar": (np.array("só", "<U2"), "só"),
    "bytes": (np.array([b"ab", b"\xff!"], "S2"), ["ab", "\\xff!"]),
    "void": (np.array([b"\x01\x02\x03", b"abc"], "V3"), ["010203", "616263"]),
    "structured": (
        np.array([(1, 2.5), (3, np.nan)], [("a", "<i4"), ("b", "<f8")]),
        [{"a": 1, "b": 2.5}, {"a": 3, "b": "NaN"}],
    ),
    "nested": (
        np.array([([1, 2], (b"x", 1 + 2j))], [("a", "<i2", (2,)), ("b", [("c", "S1"), ("d", "<c8")])]),
        [{"a": [1, 2], "b": {"c": "x", "d": [1.0, 2.0]}}],
    ),
    "big-endian-structured": (np.array([(7,)], [("x", ">u4")]), [{"x": 7}]),
    "datetime": (np.array(["2020-01-02", "NaT"], "datetime64[D]"), ["2020-01-02", "NaT"]),
    "timedelta": (np.array([5, "NaT"], "timedelta64[s]"), [5, "NaT"]),
    "empty-structured": (np.zeros((0, 2), [("a", "<i4")]), []),
}


@pytest.mark.parametrize("kind", list(NPY))
def test_show_json_of_every_npy_kind(kind: str, tmp_path: Path) -> None:
    array, expected = NPY[kind]
    path = tmp_path / f"{kind}.npy"
    np.save(path, array)
    status, out, err = _weightscope("show", "--json", str(path), kind)
    assert status == 0, err
    (document,) = json.loads(out).values()
    assert document["shape"] == list(array.shape)
    assert document["values"] == expected
    status, out, err = _weightscope("show", str(path), kind)  # as numpy prints it
    assert status == 0, err
