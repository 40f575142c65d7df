"""``weightscope meta``: safetensors and GGUF metadata edited without rewriting the weights, checked by their own
readers (``safetensors.safe_open``, gguf-py's ``GGUFReader``)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from gguf import GGUFReader, GGUFValueType
from safetensors import safe_open
from safetensors.numpy import save_file

from weightscope import metadata_edit
from weightscope.cli import Environment, main
from weightscope.errors import ExitStatus
from weightscope.formats import safetensors as safetensors_format

TENSORS = {
    "layer1.weight": np.arange(24, dtype=np.float32).reshape(4, 6),
    "layer1.bias": np.linspace(-1, 1, 4).astype(np.float16),
    "steps": np.array(7, dtype=np.int64),
}


def run(*args: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main([str(arg) for arg in args], env=Environment(stdout=out, stderr=err))
    return status, out.getvalue(), err.getvalue()


def _digest(path: Path, start: int = 0) -> str:
    return hashlib.sha256(path.read_bytes()[start:]).hexdigest()


# -- safetensors ---------------------------------------------------------------------------------


def _safetensors(path: Path, metadata: dict[str, str] | None) -> Path:
    save_file(TENSORS, path, metadata=metadata)
    return path


def _data_start(path: Path) -> int:
    (length,) = struct.unpack("<Q", path.read_bytes()[:8])
    return 8 + int(length)


def _safetensors_read(path: Path) -> tuple[dict[str, str] | None, dict[str, np.ndarray]]:
    with safe_open(path, "np") as handle:
        return handle.metadata(), {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118


def _same_tensors(found: dict[str, np.ndarray]) -> None:
    assert found.keys() == TENSORS.keys()
    for name, array in TENSORS.items():
        assert found[name].dtype == array.dtype and found[name].tobytes() == array.tobytes()


def test_safetensors_header_rewritten_in_place_when_it_fits(tmp_path: Path) -> None:
    path = _safetensors(tmp_path / "m.safetensors", {"format": "pt", "note": "a long note to be replaced"})
    start, data = _data_start(path), _digest(path, _data_start(path))
    status, out, err = run("meta", path, "--set", "note=short", "--set", "author=me")
    assert status == 0
    assert err.startswith("weightscope: rewrote the header in place (the new header is ")
    assert out.splitlines()[0].split() == ["key", "value"]
    metadata, tensors = _safetensors_read(path)
    assert metadata == {"format": "pt", "note": "short", "author": "me"}
    _same_tensors(tensors)
    assert (_data_start(path), _digest(path, start)) == (start, data)  # the data section did not move or change


def test_safetensors_copied_when_the_header_grows(tmp_path: Path) -> None:
    path = _safetensors(tmp_path / "m.safetensors", {"format": "pt"})
    os.chmod(path, 0o640)
    data = _digest(path, _data_start(path))
    status, out, err = run("meta", path, "--set", "description=" + "x" * 500, "--json")
    assert status == 0
    assert "wrote a new file of" in err and "the header does not fit" in err
    document = json.loads(out)
    assert document["written"]["in_place"] is False
    assert document["written"]["bytes"] == path.stat().st_size
    metadata, tensors = _safetensors_read(path)
    assert metadata == {"format": "pt", "description": "x" * 500}
    _same_tensors(tensors)
    assert _digest(path, _data_start(path)) == data  # the same data bytes, after a longer header
    assert _data_start(path) % 8 == 0
    assert path.stat().st_mode & 0o777 == 0o640  # the file keeps its mode
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]
    # the copy left room: the next edit is made in place
    status, _, err = run("meta", path, "--set", "author=" + "a" * 900)
    assert status == 0 and "in place" in err
    assert _safetensors_read(path)[0] == {"format": "pt", "description": "x" * 500, "author": "a" * 900}
    assert _digest(path, _data_start(path)) == data


def test_copied_through_python_where_the_kernel_cannot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _safetensors(tmp_path / "m.safetensors", {"format": "pt"})
    data = _digest(path, _data_start(path))
    kernel_copy = os.copy_file_range
    calls = []

    def five_bytes_then_cannot(source: int, target: int, count: int, *offsets: int) -> int:
        calls.append(count)
        if len(calls) > 1:  # after a first part was copied: the fallback starts over
            raise OSError(18, "Invalid cross-device link")
        return kernel_copy(source, target, 5, *offsets)

    monkeypatch.setattr(os, "copy_file_range", five_bytes_then_cannot)
    status, _, err = run("meta", path, "--set", "description=" + "x" * 300)
    assert status == 0 and "wrote a new file" in err
    assert len(calls) == 2
    assert _safetensors_read(path)[0] == {"format": "pt", "description": "x" * 300}
    assert _digest(path, _data_start(path)) == data


def test_a_symlink_stays_one_and_its_file_is_edited(tmp_path: Path) -> None:
    target = _safetensors(tmp_path / "blob", {"format": "pt"})
    link = tmp_path / "model.safetensors"
    link.symlink_to(target)
    status, _, err = run("meta", link, "--set", "description=" + "z" * 300)
    assert status == 0 and "wrote a new file" in err
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert _safetensors_read(target)[0] == {"format": "pt", "description": "z" * 300}
    assert sorted(os.listdir(tmp_path)) == ["blob", "model.safetensors"]


def test_safetensors_delete_and_show(tmp_path: Path) -> None:
    path = _safetensors(tmp_path / "m.safetensors", {"format": "pt", "b": "2"})
    status, out, _ = run("meta", path, "--json")
    assert status == 0
    assert sorted(json.loads(out)["metadata"], key=lambda entry: entry["key"]) == [
        {"key": "b", "type": "string", "value": "2"},
        {"key": "format", "type": "string", "value": "pt"},
    ]
    status, _, err = run("meta", path, "--delete", "format", "--delete", "b")
    assert status == 0 and "in place" in err
    metadata, tensors = _safetensors_read(path)
    assert metadata is None  # no __metadata__ left at all, as the reference writer writes none
    _same_tensors(tensors)
    assert run("meta", path) == (0, "no metadata (a safetensors checkpoint)\n", "")


def test_copy_forced_even_when_it_fits(tmp_path: Path) -> None:
    path = _safetensors(tmp_path / "m.safetensors", {"format": "pt"})
    status, _, err = run("meta", path, "--set", "format=np", "--copy")
    assert status == 0 and "as asked (--copy)" in err
    assert _safetensors_read(path)[0] == {"format": "np"}


def test_a_failure_while_copying_leaves_the_original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _safetensors(tmp_path / "m.safetensors", {"format": "pt"})
    before = _digest(path)

    def fail_half_way(source: Any, target: Any, count: int) -> None:
        target.write(source.read(count // 2))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(metadata_edit, "copy_data", fail_half_way)
    status, out, err = run("meta", path, "--set", "description=" + "y" * 400)
    assert (status, out) == (ExitStatus.ERROR, "")
    assert err == "weightscope: error: No space left on device\n"
    assert _digest(path) == before
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]  # no temporary file left beside it


def test_in_place_refused_when_the_file_changed_meanwhile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _safetensors(tmp_path / "m.safetensors", {"format": "pt"})
    editor = safetensors_format.METADATA_EDITOR
    planned = editor.plan

    def plan_then_touch(*args: Any) -> Any:
        result = planned(*args)
        with open(path, "ab") as handle:
            handle.write(b"")
        os.utime(path, ns=(1, 1))
        return result

    monkeypatch.setattr(editor, "plan", plan_then_touch)
    before = _digest(path)
    status, _, err = run("meta", path, "--set", "format=np")
    assert status == ExitStatus.USAGE and "the file changed while its metadata was being edited" in err
    assert _digest(path) == before


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--set", "novalue"], ExitStatus.USAGE, "--set takes KEY=VALUE, not 'novalue'"),
        (["--delete", "absent"], ExitStatus.USAGE, "no metadata key 'absent' to delete"),
        (["--set", "a=1", "--delete", "a"], ExitStatus.USAGE, "metadata key 'a' is set or deleted twice"),
        (["--set", "a=1", "--type", "uint32"], ExitStatus.USAGE, "safetensors metadata maps strings to strings"),
        (["--set", "=1"], ExitStatus.USAGE, "an empty metadata key"),
        (["--copy"], ExitStatus.USAGE, "--type and --copy go with --set or --delete"),
    ],
)
def test_safetensors_mistakes_are_one_line_and_change_nothing(
    tmp_path: Path, args: list[str], status: int, message: str
) -> None:
    path = _safetensors(tmp_path / "m.safetensors", {"format": "pt"})
    before = _digest(path)
    found, out, err = run("meta", path, *args)
    assert (found, out) == (status, "")
    assert message in err and err.count("\n") == 1
    assert _digest(path) == before


def test_a_damaged_file_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = _safetensors(tmp_path / "m.safetensors", {"format": "pt"})
    data = path.read_bytes()[:-4]  # the last tensor ends past the end of the file
    path.write_bytes(data)
    status, out, err = run("meta", path, "--set", "a=b")
    assert (status, out) == (ExitStatus.CORRUPT, "")
    assert err.startswith(f"weightscope: error: {path}: ") and err.count("\n") == 1
    assert path.read_bytes() == data


def test_other_formats_are_shown_not_edited(tmp_path: Path) -> None:
    np.savez(tmp_path / "m.npz", **{name: array for name, array in TENSORS.items()})
    assert run("meta", tmp_path / "m.npz") == (0, "no metadata (a npz checkpoint)\n", "")
    status, _, err = run("meta", tmp_path / "m.npz", "--set", "a=b")
    assert status == ExitStatus.UNSUPPORTED and "meta edits these formats' files: safetensors, GGUF" in err


# -- GGUF ------------------------------------------------------------------------------------------


@pytest.fixture
def gguf_file(tmp_path: Path) -> Path:
    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_uint32("llama.context_length", 2048)
    writer.add_float32("llama.rope.freq_base", 10000.0)
    writer.add_bool("t.flag", True)
    writer.add_name("tiny")
    writer.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    writer.add_array("t.ints", list(range(40)))
    writer.add_tensor("token_embd.weight", np.arange(32, dtype=np.float32).reshape(4, 8))
    writer.add_tensor("blk.0.attn_q.weight", np.ones((8, 8), np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _gguf_read(path: Path) -> tuple[dict[str, tuple[list[GGUFValueType], Any]], dict[str, bytes], int]:
    """gguf-py's view: each field's types and value, each tensor's bytes, and where the data starts."""
    reader = GGUFReader(path)
    fields = {
        name: (list(field.types), field.contents())
        for name, field in reader.fields.items()
        if not name.startswith("GGUF.")
    }
    tensors = {tensor.name: np.asarray(tensor.data).tobytes() for tensor in reader.tensors}
    return fields, tensors, int(reader.data_offset)


def test_gguf_value_rewritten_in_place_with_its_type(gguf_file: Path) -> None:
    fields, tensors, start = _gguf_read(gguf_file)
    size, data = gguf_file.stat().st_size, _digest(gguf_file, start)
    status, _, err = run("meta", gguf_file, "--set", "llama.context_length=4096", "--set", "general.name=tinx")
    assert status == 0
    assert err.startswith("weightscope: rewrote the header in place (the new key/values and tensor infos end at")
    new_fields, new_tensors, new_start = _gguf_read(gguf_file)
    assert new_fields["llama.context_length"] == ([GGUFValueType.UINT32], 4096)
    assert new_fields["general.name"] == ([GGUFValueType.STRING], "tinx")
    for name in ("llama.context_length", "general.name"):
        del fields[name], new_fields[name]
    assert new_fields == fields
    assert (new_tensors, new_start, gguf_file.stat().st_size, _digest(gguf_file, start)) == (tensors, start, size, data)


def test_gguf_copied_when_the_key_values_grow(gguf_file: Path) -> None:
    _, tensors, start = _gguf_read(gguf_file)
    data = _digest(gguf_file, start)
    status, out, err = run(
        "meta",
        gguf_file,
        "--set", "general.description=" + "d" * 200,
        "--set", "llama.rope.freq_base=500000",
        "--set", "t.new=3",
        "--set", "t.on=yes",
        "--type", "t.new=uint16",
        "--type", "t.on=bool",
        "--delete", "t.flag",
        "--json",
    )  # fmt: skip
    assert status == 0, err
    assert "wrote a new file of" in err and "the header does not fit" in err
    fields, new_tensors, new_start = _gguf_read(gguf_file)
    assert fields["general.description"] == ([GGUFValueType.STRING], "d" * 200)
    assert fields["llama.rope.freq_base"] == ([GGUFValueType.FLOAT32], 500000.0)  # the existing key's type
    assert fields["t.new"] == ([GGUFValueType.UINT16], 3)
    assert fields["t.on"] == ([GGUFValueType.BOOL], True)
    assert "t.flag" not in fields
    assert fields["tokenizer.ggml.tokens"] == ([GGUFValueType.ARRAY, GGUFValueType.STRING], ["a", "b", "c"])
    assert new_tensors == tensors
    assert new_start > start and new_start % 32 == 0
    assert _digest(gguf_file, new_start) == data
    document = json.loads(out)
    assert {"key": "t.new", "type": "uint16", "value": 3} in document["metadata"]
    assert {"key": "t.ints", "type": "array[int32]", "value": None, "length": 40} in document["metadata"]


def test_gguf_arrays_set_as_json_checked_by_gguf_py(gguf_file: Path) -> None:
    _, tensors, start = _gguf_read(gguf_file)
    data = _digest(gguf_file, start)
    status, _, err = run(
        "meta",
        gguf_file,
        "--set", 'tokenizer.ggml.tokens=["<s>", "é", ""]',  # the existing key's element type: strings
        "--set", "t.ints=[-5, 7]",  # int32, as it was
        "--set", "t.scales=[0.5, 2, 1e-3]",
        "--type", "t.scales=array[float32]",
        "--set", "t.mask=[true, false]",
        "--type", "t.mask=array[bool]",
        "--set", "t.none=[]",
        "--type", "t.none=array[uint64]",
    )  # fmt: skip
    assert status == 0, err
    fields, new_tensors, new_start = _gguf_read(gguf_file)
    assert fields["tokenizer.ggml.tokens"] == ([GGUFValueType.ARRAY, GGUFValueType.STRING], ["<s>", "é", ""])
    assert fields["t.ints"] == ([GGUFValueType.ARRAY, GGUFValueType.INT32], [-5, 7])
    assert fields["t.scales"] == ([GGUFValueType.ARRAY, GGUFValueType.FLOAT32], [0.5, 2.0, np.float32(1e-3)])
    assert fields["t.mask"] == ([GGUFValueType.ARRAY, GGUFValueType.BOOL], [True, False])
    assert fields["t.none"][1] == []
    assert new_tensors == tensors and _digest(gguf_file, new_start) == data


def test_gguf_metadata_shown_with_types(gguf_file: Path) -> None:
    status, out, err = run("meta", gguf_file)
    assert (status, err) == (0, "")
    rows = [line.split(None, 2) for line in out.splitlines()[2:]]
    assert ["llama.context_length", "uint32", "2048"] in rows
    assert ["tokenizer.ggml.tokens", "array[string]", "['a', 'b', 'c']"] in rows
    assert ["t.ints", "array[int32]", "[40 int32 values]"] in rows


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "llama.context_length=-1"], "'llama.context_length' is a uint32; '-1' is not one"),
        (["--set", "llama.context_length=4294967296"], "is a uint32; '4294967296' is not one"),
        (["--set", "t.flag=maybe"], "'t.flag' is a bool; 'maybe' is not one"),
        (["--set", "llama.rope.freq_base=1e39"], "does not fit a float32"),
        (["--set", "tokenizer.ggml.tokens=x"], "'tokenizer.ggml.tokens' is an array[string]; give a JSON array of"),
        (["--set", "tokenizer.ggml.tokens=[1]"], 'give a JSON array of strings, like ["a", "b"]'),
        (["--set", "t.ints=[1, 2.5]"], "'t.ints' is a int32; '2.5' is not one"),
        (["--set", "t.ints=[[1]]"], "is an array[int32]; give a JSON array of numbers"),
        (["--set", "t.new=[300]", "--type", "t.new=array[uint8]"], "'t.new' is a uint8; '300' is not one"),
        (["--set", "a=[1]", "--type", "a=array[array[int8]]"], "unknown GGUF type 'array[array[int8]]'"),
        (["--set", "general.alignment=64"], "general.alignment places the tensor data"),
        (["--delete", "general.alignment"], "general.alignment places the tensor data"),
        (["--set", "a=1", "--type", "a=uint128"], "unknown GGUF type 'uint128'"),
        (["--set", "a=1", "--type", "b=uint8"], "a type for 'b', which no --set sets"),
    ],
)
def test_gguf_mistakes_are_one_line_and_change_nothing(gguf_file: Path, args: list[str], message: str) -> None:
    before = _digest(gguf_file)
    status, out, err = run("meta", gguf_file, *args)
    assert (status, out) == (ExitStatus.USAGE, "")
    assert message in err and err.count("\n") == 1
    assert _digest(gguf_file) == before
