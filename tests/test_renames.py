"""convert --strip-prefix / --rename / --key-map: names a model's own code uses, the README's example run as written."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import torch
from tf_fixtures import _tf

import weightscope as ws
from weightscope.cli import main
from weightscope.convert import convert
from weightscope.renames import MAX_KEY_MAP_BYTES, Renames, load_key_map, parse_rule

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_seed_example() -> tuple[str, list[str]]:
    """The README's key-map example: the JSON ``cat`` shows, and the commands after it (``$ `` lines)."""
    text = README.read_text(encoding="utf-8")
    block = next(block for block in re.findall(r"```console\n(.*?)```", text, re.DOTALL) if "--key-map" in block)
    lines = block.splitlines()
    key_map = lines[lines.index("$ cat seed-keys.json") + 1]
    commands = [line.removeprefix("$ ") for line in lines if line.startswith("$ weightscope ")]
    return key_map, commands


def _sequential() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.Sigmoid(), torch.nn.Linear(5, 2), torch.nn.Sigmoid())


def test_the_readme_key_map_example_loads_strictly_and_computes_as_tensorflow(
    tf_checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = tf_checkpoints["seed"]
    shutil.copytree(seed.parent, tmp_path / "checkpoint")  # the folder `weightscope demo` writes
    monkeypatch.chdir(tmp_path)
    key_map, commands = _readme_seed_example()
    Path("seed-keys.json").write_text(key_map, encoding="utf-8")
    assert len(commands) == 1
    arguments = shlex.split(commands[0])
    assert arguments[:2] == ["weightscope", "convert"] and "--key-map" in arguments
    assert main(arguments[1:]) == 0
    network = _sequential()
    network.load_state_dict(torch.load(arguments[3], weights_only=True))  # strict: every name the model's
    tf = _tf()
    reader = tf.train.load_checkpoint(str(seed))
    inputs = np.random.default_rng(3).standard_normal((64, 2)).astype(np.float32)
    hidden = tf.sigmoid(tf.matmul(inputs, reader.get_tensor("layer1/kernel")) + reader.get_tensor("layer1/bias"))
    expected = tf.sigmoid(tf.matmul(hidden, reader.get_tensor("layer2/kernel")) + reader.get_tensor("layer2/bias"))
    with torch.no_grad():
        outputs = network(torch.from_numpy(inputs)).numpy()
    np.testing.assert_allclose(outputs, expected.numpy(), rtol=1e-6, atol=1e-7)
    # The README's --rename rules give the same file's tensors.
    rules = ["--rename", "layer1.*=0.*", "--rename", "layer2.*=2.*"]
    assert main(["convert", "checkpoint", "rules.pt", "--layout", "pytorch", "--names", "pytorch", *rules]) == 0
    by_rules, by_map = torch.load("rules.pt", weights_only=True), torch.load(arguments[3], weights_only=True)
    assert sorted(by_rules) == sorted(by_map) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert all(torch.equal(by_rules[name], by_map[name]) for name in by_map)


@pytest.mark.parametrize(
    ("rule", "name", "expected"),
    [
        ("layer1.*=0.*", "layer1.weight", "0.weight"),
        ("layer1.*=0.*", "layer10.weight", "layer10.weight"),  # '.' is a dot, not any character
        ("*/*=*.*", "block/kernel", "block.kernel"),
        ("encoder.*=*", "encoder.layer.0.weight", "layer.0.weight"),
        ("*.weight=*.w", "a.weight.weight", "a.weight.w"),
        ("model.*=", "model.x", ""),  # refused by Renames.apply: a name is never empty
        ("re:block(\\d+)\\.(.*)=layers.\\1.\\2", "block12.attn.weight", "layers.12.attn.weight"),
        ("re:(?P<layer>h\\.\\d+)\\.attn=\\g<layer>.self_attn", "h.3.attn", "h.3.self_attn"),
        ("re:(?=x)x=y", "x", "y"),  # '=' inside the pattern: the last '=' splits
        ("re:abc=z", "xabcx", "xabcx"),  # a whole-name match, not a search
    ],
)
def test_rename_rules_match_whole_names(rule: str, name: str, expected: str) -> None:
    assert parse_rule(rule).apply(name) == expected


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("layer1", "takes FROM=TO"),
        ("=x", "takes FROM=TO"),
        ("re:=x", "takes FROM=TO"),
        ("a*=b**", "TO has more '*' than FROM"),
        ("re:(unclosed=x", "not a regular expression"),
    ],
)
def test_bad_rename_rules_are_usage_errors(rule: str, message: str) -> None:
    with pytest.raises(ws.UsageError, match=re.escape(message)):
        parse_rule(rule)


def test_a_replacement_naming_a_missing_group_is_a_usage_error() -> None:
    with pytest.raises(ws.UsageError, match=re.escape("--rename 're:(a)=\\\\2'")):
        parse_rule("re:(a)=\\2").apply("a")


def test_renames_apply_after_names_in_order(tmp_path: Path) -> None:
    source = tmp_path / "model.safetensors"
    tensors = {f"model/block{index}/kernel": np.full((2, 3), index, np.float32) for index in range(3)}
    safetensors.numpy.save_file(tensors, source)
    key_map = {"layers.2.weight": "head.weight", "layers.9.weight": "absent.weight"}
    renames = Renames.parse("model.", ["re:block(\\d+)\\.(.*)=layers.\\1.\\2"], key_map)
    result = convert(source, tmp_path / "out.safetensors", names="pytorch", renames=renames)
    assert {tensor.source: tensor.name for tensor in result.tensors} == {
        "model/block0/kernel": "layers.0.weight",
        "model/block1/kernel": "layers.1.weight",
        "model/block2/kernel": "head.weight",
    }
    assert result.notes == ["the key map names 1 tensors there are not: 'layers.9.weight'"]
    written = safetensors.numpy.load_file(tmp_path / "out.safetensors")
    np.testing.assert_array_equal(written["head.weight"], tensors["model/block2/kernel"])


def test_names_renamed_into_one_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    source = tmp_path / "model.safetensors"
    safetensors.numpy.save_file({"a.x": np.zeros(1, np.float32), "b.x": np.ones(1, np.float32)}, source)
    with pytest.raises(ws.UsageError, match=re.escape("'a.x' and 'b.x' would both be named 'x'")):
        convert(source, tmp_path / "out.safetensors", renames=Renames.parse(rename=["*.x=x"]))
    with pytest.raises(ws.UsageError, match=re.escape("'a.x' would be renamed to an empty name")):
        convert(source, tmp_path / "out.safetensors", renames=Renames.parse(strip_prefix="a.x"))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.safetensors"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"a": "b", "a": "c"}', "key map gives 'a' twice"),
        (b'{"a": "x", "b": "x"}', "'a' and 'b' would both be named 'x'"),
        (b'{"a": 1}', "names are strings; 'a': 1"),
        (b'{"a": ["b"]}', "names are strings"),
        (b'{"a": ""}', "an empty name"),
        (b'["a", "b"]', "a key map is a JSON object of old name to new name, not list"),
        (b'{"a": "b"', "not JSON: Expecting"),
        (b'{"a": "\xff"}', "a key map is UTF-8 JSON; byte 7 is not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deep"),
        (b" " * (MAX_KEY_MAP_BYTES + 1), "a key map of over 16 MiB; refused"),
    ],
)
def test_hostile_key_maps_are_one_line_usage_errors(
    content: bytes, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keys.json"
    path.write_bytes(content)
    with pytest.raises(ws.UsageError, match=re.escape(message)):
        load_key_map(path)
    source = tmp_path / "model.safetensors"
    safetensors.numpy.save_file({"a": np.zeros(1, np.float32)}, source)
    assert main(["convert", str(source), str(tmp_path / "out.safetensors"), "--key-map", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out.safetensors").exists()


def test_a_missing_key_map_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ws.UsageError, match="cannot read the key map"):
        load_key_map(tmp_path / "absent.json")


def test_a_key_map_in_json_output_and_in_python(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "model.safetensors"
    safetensors.numpy.save_file({"cnn.conv.weight": np.zeros((2, 2), np.float32)}, source)
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"conv.weight": "features.0.weight"}), encoding="utf-8")
    arguments = ["convert", str(source), str(tmp_path / "o.safetensors"), "--strip-prefix", "cnn.", "--key-map"]
    assert main([*arguments, str(keys), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [(tensor["source"], tensor["name"]) for tensor in document["tensors"]] == [
        ("cnn.conv.weight", "features.0.weight")
    ]
    with ws.open(tmp_path / "o.safetensors") as ckpt:
        assert list(ckpt) == ["features.0.weight"]
