"""TorchScript archives, made here by torch.jit.script / trace / freeze and saved by torch.jit.save, read as
``torch.jit.load(path).state_dict()`` and the code's constants give them, bit for bit; nothing in them is run."""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from script_models import Attributes, Net, Traced

import weightscope as ws
from weightscope.cli import main
from weightscope.errors import ExitStatus
from weightscope.summary import summarize

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script/trace are deprecated


def _bits(tensor: torch.Tensor) -> bytes:
    """A tensor's values as bytes, in C order (bfloat16 and bools too)."""
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _same(array: np.ndarray, tensor: torch.Tensor) -> None:
    assert array.shape == tuple(tensor.shape)
    assert array.dtype.name == str(tensor.dtype).removeprefix("torch.")
    assert np.ascontiguousarray(array).tobytes() == _bits(tensor)


def _save(module: Any, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module.save(str(path))
    return path


def _script(module: torch.nn.Module) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.script(module)


def _load(path: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path))


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save(_script(Net()), tmp_path_factory.mktemp("scripted") / "net.pt")


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.trace(Traced(), torch.ones(1, 2))
    return _save(module, tmp_path_factory.mktemp("traced") / "traced.pt")


def _constants(path: Path) -> dict[str, torch.Tensor]:
    """The tensor constants the loaded module's code names, as ``CONSTANTS.c0``, ... (torch's own printing)."""
    _, constants = _load(path).code_with_constants
    return {f"CONSTANTS.{name}": value for name, value in constants.const_mapping.items()}


def test_a_scripted_module_reads_as_its_state_dict_bit_for_bit(scripted: Path) -> None:
    state = _load(scripted).state_dict()
    with ws.open(scripted) as ckpt:
        assert ckpt.format == "torchscript"
        assert list(ckpt) == list(state)  # the names, in state_dict()'s order (the constant is computed: none)
        for name, tensor in state.items():
            _same(ckpt[name], tensor)
        # the shared parameter is both names, as in state_dict(); the views of one storage keep their strides
        assert ckpt.info("head.weight").offset == ckpt.info("tied.weight").offset
        assert ckpt.view("transposed") is not None and ckpt.view("transposed").strides == (1, 6)  # type: ignore[union-attr]
        assert ckpt.view("window") is not None and ckpt.view("window").strides == (6, 1)  # type: ignore[union-attr]
        assert {ckpt.info(name).dtype.name for name in ckpt} >= {"float16", "bfloat16", "int8", "int64"}
        assert ckpt.role("layers.0.bn.running_mean").category == "buffer"
        assert ckpt.role("layers.1.bn.num_batches_tracked").category == "bookkeeping"
        assert ckpt.role("layers.1.fc.weight").category == "parameter"
        assert ckpt.metadata["module"] == "__torch__.script_models.Net"
        assert not ckpt.verify()


def test_a_traced_module_reads_as_its_state_dict_and_constants_bit_for_bit(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.trace(Net(seed=5).eval(), torch.randn(2, 4))
    path = _save(module, tmp_path / "traced-net.pt")
    state, constants = _load(path).state_dict(), _constants(path)
    assert len(constants) == 1  # forward's literal
    with ws.open(path) as ckpt:
        assert list(ckpt) == [*state, *constants]
        for name, tensor in [*state.items(), *constants.items()]:
            _same(ckpt[name], tensor)
        assert ckpt.info("head.weight").offset == ckpt.info("tied.weight").offset
        assert ckpt.view("transposed").strides == (1, 6)  # type: ignore[union-attr]
        assert ckpt.role("layers.0.bn.running_var").category == "buffer"


def test_plain_attributes_and_scripted_objects_are_listed_by_path_as_bookkeeping(tmp_path: Path) -> None:
    path = _save(_script(Attributes()), tmp_path / "attributes.pt")
    loaded = _load(path)
    expected = {
        "plain": loaded.plain,
        "listed.0": loaded.listed[0],
        "listed.1": loaded.listed[1],
        "named.a": loaded.named["a"],
        "named.b": loaded.named["b"],
        "paired.1": loaded.paired[1],
        "box.value": loaded.box.value,
    }
    with ws.open(path) as ckpt:
        assert list(ckpt) == [*loaded.state_dict(), *expected]
        for name, tensor in expected.items():
            _same(ckpt[name], tensor)
            assert ckpt.role(name).kind == "bookkeeping"
        assert [ckpt.role(name).kind for name in loaded.state_dict()] == ["parameter", "parameter"]
        assert ckpt.metadata["counts"] == "[1, 2, 3]"


def test_a_traced_module_lists_its_constants_after_its_state(traced: Path) -> None:
    loaded = _load(traced)
    constants = _constants(traced)
    code = zipfile.ZipFile(traced).read("traced/code/__torch__/script_models.py").decode()
    assert len(constants) == 2 and "CONSTANTS.c0" in code and "CONSTANTS.c1" in code
    with ws.open(traced) as ckpt:
        assert list(ckpt) == [*loaded.state_dict(), *constants]
        for name, tensor in [*loaded.state_dict().items(), *constants.items()]:
            _same(ckpt[name], tensor)
        assert all(ckpt.role(name).kind == "bookkeeping" for name in constants)
        counted = summarize(ckpt)
        assert counted.parameters == sum(tensor.numel() for tensor in loaded.parameters())
        assert counted.bookkeeping == sum(tensor.numel() for tensor in constants.values())


def test_a_frozen_module_has_its_weights_as_constants(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frozen = torch.jit.freeze(_script(Net()).eval())
    path = _save(frozen, tmp_path / "frozen.pt")
    constants = _constants(path)
    assert len(constants) >= 4
    with ws.open(path) as ckpt:
        assert list(ckpt) == list(constants)
        for name, tensor in constants.items():
            _same(ckpt[name], tensor)


def test_a_module_without_tensors_reads_empty(tmp_path: Path) -> None:
    path = _save(_script(torch.nn.ReLU()), tmp_path / "relu.pt")  # data.pkl first, as in a torch.save zip
    with ws.open(path) as ckpt:
        assert ckpt.format == "torchscript" and list(ckpt) == []


def test_converts_to_safetensors_bit_for_bit(scripted: Path, tmp_path: Path) -> None:
    out = tmp_path / "net.safetensors"
    assert main(["convert", str(scripted), str(out)]) == 0
    written = load_file(out)
    state = _load(scripted).state_dict()
    kept = {name: tensor for name, tensor in state.items() if not name.endswith("num_batches_tracked")}
    assert sorted(written) == sorted(kept)  # the counters are bookkeeping, which convert leaves out
    for name, tensor in kept.items():
        _same(written[name], tensor)


def test_diff_against_the_eager_modules_state_dict_is_equal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    eager = Net(seed=3)
    scripted = _save(_script(eager), tmp_path / "net.pt")
    torch.save(eager.state_dict(), tmp_path / "eager.pt")
    assert main(["diff", str(scripted), str(tmp_path / "eager.pt")]) == 0
    capsys.readouterr()
    with torch.no_grad():
        eager.layers[1].fc.bias[0] += 1
    torch.save(eager.state_dict(), tmp_path / "changed.pt")
    assert main(["diff", str(scripted), str(tmp_path / "changed.pt"), "--json"]) == ExitStatus.DIFFERENT
    result = json.loads(capsys.readouterr().out)
    assert [tensor["name"] for tensor in result["tensors"] if tensor["status"] != "equal"] == ["layers.1.fc.bias"]


def test_scan_lists_globals_and_code_and_says_the_code_is_not_run(
    traced: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["scan", str(traced)]) == 0
    out = capsys.readouterr().out
    assert "allowed GLOBAL __torch__.script_models.Traced" in out
    assert "allowed GLOBAL torch._utils._rebuild_tensor_v2" in out
    assert "never run; weightscope does not interpret the graph" in out
    assert "traced/code/__torch__/script_models.py (" in out and "traced/constants/: 2 storages" in out
    assert main(["scan", "--json", str(traced)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {"opcode": "NEWOBJ", "name": "__torch__.script_models.Traced", "allowed": True, "count": 1} in listed
    assert any("never run" in entry.get("note", "") for entry in listed)


def _rewritten(source: Path, target: Path, replaced: dict[str, bytes]) -> Path:
    """A copy of a real archive with some members' bytes replaced, each member compressed as before."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for info in original.infolist():
            copy.writestr(info, replaced.get(info.filename.split("/", 1)[1], original.read(info)))
    return target


def _payload(marker: Path) -> bytes:
    return f"import os\nos.system('touch {marker}')\nopen({str(marker)!r}, 'w')\n".encode()


def test_code_that_would_run_is_never_run(scripted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "ran"
    code = zipfile.ZipFile(scripted).read("net/code/__torch__/script_models.py")
    hostile = _rewritten(scripted, tmp_path / "net.pt", {"code/__torch__/script_models.py": _payload(marker) + code})
    with ws.open(hostile) as ckpt:
        assert len(ckpt) == len(_load(scripted).state_dict())
        for name in ckpt:
            np.asarray(ckpt[name])
    assert main(["scan", str(hostile)]) == 0
    assert "net/code/__torch__/script_models.py (" in capsys.readouterr().out
    assert not marker.exists()


@pytest.mark.parametrize("record", ["data.pkl", "constants.pkl"])
def test_a_pickle_that_would_run_code_is_refused_in_one_line(
    scripted: Path, tmp_path: Path, record: str, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "ran"
    evil = b"\x80\x02cos\nsystem\nX" + len(f"touch {marker}").to_bytes(4, "little") + f"touch {marker}".encode()
    hostile = _rewritten(scripted, tmp_path / "net.pt", {record: evil + b"\x85R."})
    with pytest.raises(ws.RefusedError, match=f"{record}: refused to load: the file wants to call os.system"):
        ws.open(hostile)
    assert main(["ls", str(hostile)]) == ExitStatus.REFUSED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "os.system" in err
    assert main(["scan", str(hostile)]) == ExitStatus.REFUSED
    assert "REFUSED GLOBAL os.system" in capsys.readouterr().out
    assert not marker.exists()


def test_scan_names_extra_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "with-extra.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(_script(torch.nn.Linear(2, 2)), str(path), _extra_files={"config.json": b'{"a": 1}'})
    assert main(["scan", str(path)]) == 0
    assert "with-extra/extra/config.json (8 bytes)" in capsys.readouterr().out.splitlines()
    with ws.open(path) as ckpt:
        assert list(ckpt) == ["weight", "bias"]
