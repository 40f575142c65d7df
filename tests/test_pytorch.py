"""PyTorch checkpoints (zip and legacy), written by torch.save and read back by weightscope as torch.load reads them."""

from __future__ import annotations

import collections
import os
import pickle
import pickletools
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_same_tensor

import weightscope as ws
from weightscope.cli import main
from weightscope.formats.pytorch import scan

DTYPES = [
    torch.float32, torch.float64, torch.float16, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8,
    torch.bool, torch.complex64, torch.uint16, torch.float8_e4m3fn,
]  # fmt: skip


def _flatten(value: object, name: str = "") -> dict[str, torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return {name: value}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list | tuple) else []
    found: dict[str, torch.Tensor] = {}
    for key, item in items:
        found.update(_flatten(item, f"{name}.{key}" if name else str(key)))
    return found


def _assert_matches_torch(path: Path) -> None:
    expected = _flatten(torch.load(path, weights_only=True))
    with ws.open(path) as ckpt:
        assert ckpt.format == "pytorch"
        assert sorted(ckpt) == sorted(expected)
        for name, tensor in expected.items():
            ours = ckpt[name]
            assert not ours.flags.writeable
            if tensor.dtype in (torch.bfloat16, torch.float8_e4m3fn):
                assert ours.dtype.itemsize == tensor.element_size()
                assert ours.tobytes() == tensor.contiguous().view(torch.uint8).numpy().tobytes()
            else:
                assert_same_tensor(ours, tensor.detach().numpy())


def _model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.Sigmoid(), torch.nn.Linear(5, 2))


def test_state_dict_reads_as_torch_loads_it(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(_model().state_dict(), path)
    _assert_matches_torch(path)
    with ws.open(path) as ckpt:
        layers = ckpt.layers()
        assert layers["0"].weight.shape == (5, 2) and layers["0"].bias.shape == (5,)
    assert main(["layers", str(path)]) == 0


def _save(obj: object, path: Path, legacy: bool) -> Path:
    """``torch.save`` in the zip format, or in the legacy (pre-1.6) one."""
    if legacy:
        return _legacy_save(obj, path)
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_every_dtype_and_layout(tmp_path: Path, legacy: bool) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    shared = torch.arange(10, dtype=torch.int64)
    dtypes = LEGACY_DTYPES if legacy else DTYPES
    tensors = {str(dtype).removeprefix("torch."): (torch.rand(3, 4) * 10).to(dtype) for dtype in dtypes}
    tensors |= {
        "bf16": torch.randn(3, 4).to(torch.bfloat16),
        "transposed": base.t(),
        "slice": base[1:3, 2:5],
        "shared_a": shared[2:5],
        "shared_b": shared[::3],
        "scalar": torch.tensor(3.5),
        "empty": torch.empty(0, 3),
    }
    path = _save(tensors, tmp_path / "tensors.pt", legacy)
    _assert_matches_torch(path)
    with ws.open(path) as ckpt:
        assert not ckpt["transposed"].flags.c_contiguous
        assert ckpt["bf16"].view(np.int16).tobytes() == tensors["bf16"].view(torch.int16).numpy().tobytes()


def _bn_model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(2, 5), torch.nn.BatchNorm1d(5), torch.nn.Sigmoid(), torch.nn.Linear(5, 2)
    )


def _trained(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, object]:
    """Two steps of training; the checkpoint a training loop saves."""
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(4, 2)).sum().backward()
        optimizer.step()
    return {"epoch": 3, "model": model.state_dict(), "optimizer": optimizer.state_dict()}


def _expected_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, tuple[str, torch.Tensor]]:
    """``optimizer.state.<i>.<slot>`` -> (the parameter it belongs to, as ``model.<name>``, its value), from torch's
    own bookkeeping: the i-th parameter of the optimizer's groups is the one ``state_dict()`` numbers i."""
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    ordered = [parameter for group in optimizer.param_groups for parameter in group["params"]]
    return {
        f"optimizer.state.{index}.{slot}": (f"model.{names[id(parameter)]}", value)
        for index, parameter in enumerate(ordered)
        for slot, value in optimizer.state[parameter].items()
        if isinstance(value, torch.Tensor)
    }


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_training_checkpoint_names_nested_tensors(tmp_path: Path, legacy: bool) -> None:
    model = _bn_model()
    optimizer = torch.optim.Adam(model.parameters())
    path = _save(_trained(model, optimizer), tmp_path / "train.pt", legacy)
    _assert_matches_torch(path)
    expected = _expected_state(model, optimizer)
    assert len(expected) == 3 * len(list(model.parameters()))  # step, exp_avg, exp_avg_sq of each
    with ws.open(path) as ckpt:
        assert ckpt.metadata["epoch"] == "3"
        assert set(ckpt.layers()) == {"0", "1", "3"}  # the checkpoint's "model." is the model's name
        for name, (owner, value) in expected.items():
            role = ckpt.role(name)
            assert (role.kind, role.role, role.owner) == ("optimizer", name.rpartition(".")[2], owner)
            assert ckpt[name].tobytes() == value.numpy().tobytes() and ckpt[name].shape == tuple(value.shape)
        layers = ckpt.layers()
        attached = {
            (owner, slot, info.name)
            for layer in layers.values()
            for owner, slots in layer.optimizer_state.items()
            for slot, info in slots.items()
        }
        assert attached == {(owner, name.rpartition(".")[2], name) for name, (owner, _) in expected.items()}
        assert set(layers["1"].optimizer_state) == {"model.1.weight", "model.1.bias"}  # BatchNorm's buffers skipped
    names = {entry.name for entry in scan(path)}
    assert {"torch._utils._rebuild_tensor_v2", "collections.OrderedDict"} <= names
    assert all(entry.allowed for entry in scan(path))


def test_sgd_momentum_and_param_groups_in_model_order(tmp_path: Path) -> None:
    model = _bn_model()
    optimizer = torch.optim.SGD(
        [{"params": model[:2].parameters()}, {"params": model[3].parameters(), "lr": 0.1}], lr=0.01, momentum=0.9
    )
    saved = _trained(model, optimizer)
    path = tmp_path / "sgd.pt"  # two state dicts: the one under a usual key is the model's
    torch.save({"state_dict": saved["model"], "ema": model.state_dict(), "optimizer": saved["optimizer"]}, path)
    expected = _expected_state(model, optimizer)
    assert len(expected) == len(list(model.parameters()))
    with ws.open(path) as ckpt:
        for name, (owner, value) in expected.items():
            role = ckpt.role(name)
            assert (role.role, role.owner) == ("momentum_buffer", owner.replace("model.", "state_dict.", 1))
            assert ckpt[name].tobytes() == value.numpy().tobytes()


class _Masked(torch.nn.Module):
    """A linear layer with a buffer whose name says nothing: its state dict holds one tensor more than parameters()."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)
        self.register_buffer("mask", torch.ones(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.mask[0]


def _swapped_state(optimizer: torch.optim.Optimizer) -> dict[str, object]:
    saved = optimizer.state_dict()
    saved["state"] = {1 - index: slots for index, slots in saved["state"].items()}  # weight's state under bias's index
    return saved


@pytest.mark.parametrize("case", ["subset", "unknown buffer", "shapes", "two optimizers", "bare"])
def test_optimizer_state_left_unowned_when_it_cannot_be_decided(tmp_path: Path, case: str) -> None:
    model = {"unknown buffer": _Masked(), "shapes": torch.nn.Sequential(torch.nn.Linear(2, 2))}.get(case, _bn_model())
    parameters = model[0].parameters() if case == "subset" else model.parameters()
    optimizer = torch.optim.Adam(parameters)
    saved = _trained(model, optimizer)
    if case == "shapes":
        saved["optimizer"] = _swapped_state(optimizer)
    if case == "two optimizers":
        saved["optimizer_b"] = saved["optimizer"]
    path = tmp_path / "train.pt"
    torch.save(saved["optimizer"] if case == "bare" else saved, path)
    with ws.open(path) as ckpt:
        state = [name for name in ckpt if ".state." in name or name.startswith("state.")]
        assert state
        assert all(ckpt.role(name).kind == "optimizer" and ckpt.role(name).owner is None for name in state)
        assert not any(layer.optimizer_state for layer in ckpt.layers().values())


class _Call:
    def __init__(self, function: object, args: tuple[object, ...]) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.function, self.args


def _torch_zip(path: Path, pickled: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
    return path


def _stack_global_getattr() -> bytes:
    # getattr(builtins, "eval")("open('MARKER', 'w')") with STACK_GLOBAL, protocol 4.
    text = pickle.dumps("builtins", 4)[2:-1]  # SHORT_BINUNICODE 'builtins' (plus MEMOIZE)
    return (
        b"\x80\x04"
        + text
        + pickle.dumps("getattr", 4)[2:-1]
        + b"\x93"
        + pickle.dumps(("builtins", "eval"), 2)[2:-1]
        + b"R"
        + pickle.dumps(("open('MARKER','w')",), 2)[2:-1]
        + b"R."
    )


MALICIOUS = {
    "system": (lambda: pickle.dumps(_Call(os.system, ("touch MARKER",)), 2), os.system.__module__ + ".system"),
    "eval": (lambda: pickle.dumps(_Call(eval, ("open('MARKER','w')",)), 2), "__builtin__.eval"),
    "getattr": (_stack_global_getattr, "builtins.getattr"),
}


@pytest.mark.parametrize("kind", sorted(MALICIOUS))
def test_malicious_pickles_are_refused(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    make, name = MALICIOUS[kind]
    path = _torch_zip(tmp_path / f"{kind}.pt", make())
    with pytest.raises(ws.RefusedError, match=f"refused to load: the file wants to call {name}$"):
        ws.open(path)
    assert main(["ls", str(path)]) == 6
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and name in err
    assert main(["scan", str(path)]) == 6
    assert f"REFUSED GLOBAL {name}" in capsys.readouterr().out or kind == "getattr"
    assert any(not entry.allowed and entry.name == name for entry in scan(path))
    assert not (tmp_path / "MARKER").exists()


def test_refused_opcodes_and_hostile_strides(tmp_path: Path) -> None:
    path = _torch_zip(tmp_path / "inst.pt", b"(c__main__\nThing\no.")
    with pytest.raises(ws.RefusedError, match=r"wants to call __main__\.Thing"):
        ws.open(path)
    source = tmp_path / "ok.pt"
    torch.save({"t": torch.arange(4.0)}, source)
    with zipfile.ZipFile(source) as archive:
        data = archive.read("ok/data.pkl")
    forged = data.replace(b"K\x04\x85", b"K\x40\x85", 1)  # shape (4,) -> (64,): past the storage
    assert forged != data
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(bad, "w") as out:
        for entry in archive.infolist():
            out.writestr(entry.filename, forged if entry.filename.endswith("data.pkl") else archive.read(entry))
    with pytest.raises(ws.CorruptCheckpointError, match="reach element"):
        ws.open(bad)


def test_scan_json_lists_allowed_calls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "model.pt"
    torch.save(_model().state_dict(), path)
    assert main(["scan", "--json", str(path)]) == 0
    assert '"torch._utils._rebuild_tensor_v2"' in capsys.readouterr().out


def test_npz_is_not_claimed(tmp_path: Path) -> None:
    path = tmp_path / "arrays.npz"
    np.savez(path, a=np.zeros(2))
    with ws.open(path) as ckpt:
        assert ckpt.format == "npz"


# -- the legacy format (torch.save(..., _use_new_zipfile_serialization=False)) -------------------

LEGACY_DTYPES = [
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.uint8, torch.bool, torch.complex64, torch.complex128,
]  # fmt: skip


def _legacy_save(obj: object, path: Path) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    return path


def test_legacy_state_dict(tmp_path: Path) -> None:
    path = _legacy_save(_model().state_dict(), tmp_path / "legacy.pt")
    _assert_matches_torch(path)
    with ws.open(path) as ckpt:
        assert ckpt.layers()["0"].weight.shape == (5, 2)
    assert main(["layers", str(path)]) == 0


def test_legacy_malicious_object_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    name = os.system.__module__ + ".system"
    path = _legacy_save({"w": torch.zeros(2), "evil": _Call(os.system, ("touch MARKER",))}, tmp_path / "evil.pt")
    with pytest.raises(ws.RefusedError, match=f"refused to load: the file wants to call {name}$"):
        ws.open(path)
    assert main(["ls", str(path)]) == 6
    assert name in capsys.readouterr().err
    assert main(["scan", str(path)]) == 6
    assert f"REFUSED GLOBAL {name}" in capsys.readouterr().out
    assert any(not entry.allowed and entry.name == name for entry in scan(path))
    assert not (tmp_path / "MARKER").exists()


def test_legacy_truncated_and_forged(tmp_path: Path) -> None:
    path = _legacy_save({"t": torch.arange(16.0), "u": torch.arange(4)}, tmp_path / "ok.pt")
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) - 40, 200, 20, 10):
        short = tmp_path / f"cut{cut}.pt"
        short.write_bytes(data[:cut])
        with pytest.raises((ws.TruncatedFileError, ws.CorruptCheckpointError)):
            ws.open(short, format="pytorch")
    # An element count that disagrees with the pickle's numel.
    keys_end = data.index(b".", data.index(b"\x80\x02]")) + 1
    count = int.from_bytes(data[keys_end : keys_end + 8], "little")
    forged = tmp_path / "forged.pt"
    forged.write_bytes(data[:keys_end] + (count + 1).to_bytes(8, "little") + data[keys_end + 8 :])
    with pytest.raises(ws.CorruptCheckpointError, match="elements; the pickle says"):
        ws.open(forged)
    # A plain pickle is not claimed as PyTorch: it is read as one.
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}, 2))
    with ws.open(plain) as ckpt:
        assert ckpt.format == "pickle" and ckpt.metadata == {"a": "1"}
    with pytest.raises(ws.UnsupportedFormatError, match=r"not torch\.save's"):
        ws.open(plain, format="pytorch")


def _one_tensor_zip(path: Path, shape: tuple[int, ...], stride: tuple[int, ...], numel: int = 4) -> Path:
    """A zip of one float32 tensor viewing a 4-element storage, its pickle written by hand."""

    def ints(values: tuple[int, ...]) -> bytes:
        return b"(" + b"".join(pickle.dumps(value, 2)[2:-1] for value in values) + b"t"

    pickled = (
        b"\x80\x02}X\x01\x00\x00\x00tctorch._utils\n_rebuild_tensor_v2\n("
        + b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu"
        + pickle.dumps(numel, 2)[2:-1]
        + b"tQK\x00"
        + ints(shape)
        + ints(stride)
        + b"\x89ccollections\nOrderedDict\n)RtRs."
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/data/0", np.arange(4, dtype="<f4").tobytes())
    return path


def test_shapes_numpy_cannot_hold_are_refused_before_any_array(tmp_path: Path) -> None:
    # Found by the corpus: zero strides fit any storage, and an empty tensor any shape; numpy
    # raised ValueError ("array is too big") on both.
    with ws.open(_one_tensor_zip(tmp_path / "ok.pt", (2, 2), (2, 1))) as checkpoint:
        np.testing.assert_array_equal(checkpoint["t"], [[0, 1], [2, 3]])
    for shape, stride in (((2**32, 2**32), (0, 0)), ((0, 2**70), (1, 1)), ((0, 2**61), (1, 1))):
        with pytest.raises(ws.UnsupportedFormatError, match="larger than numpy can hold"):
            ws.open(_one_tensor_zip(tmp_path / "huge.pt", shape, stride))


def test_build_on_anything_but_a_dict_is_refused(tmp_path: Path) -> None:
    # BUILD is how a pickle reaches an object's __setstate__: on a global, or a tensor, it is refused.
    for body in (
        b"ccollections\nOrderedDict\n}X\x0c\x00\x00\x00__setstate__K\x01sb.",
        b"ctorch\nSize\n((K\x01ttR}b.",
    ):
        path = _torch_zip(tmp_path / "build.pt", b"\x80\x02" + body)
        with pytest.raises(ws.RefusedError, match=r"sets the state of .*\(BUILD\)"):
            ws.open(path)
    assert ("BUILD", "collections.OrderedDict", False) in [entry[:3] for entry in scan(_torch_zip(
        tmp_path / "scan.pt", b"\x80\x02ccollections\nOrderedDict\n}b."
    ))]  # fmt: skip
    # an OrderedDict's state (a state_dict's _metadata) is still read
    ok = tmp_path / "ok.pt"
    torch.save(_model().state_dict(), ok)
    with ws.open(ok) as checkpoint:
        assert len(checkpoint) == 4


@pytest.mark.parametrize("name", ["../evil", "archive/data/../../evil", "/etc/evil", "C:/evil", "archive\\..\\evil"])
def test_member_names_leaving_the_archive_are_corrupt(tmp_path: Path, name: str) -> None:
    path = _one_tensor_zip(tmp_path / "model.pt", (4,), (1,))
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(name, b"evil")
    with pytest.raises(ws.CorruptCheckpointError, match="outside the archive"):
        ws.open(path)


def test_zip_needing_a_newer_zip_version_is_unsupported(tmp_path: Path) -> None:
    # Found by fuzz_pytorch_zip: zipfile raised NotImplementedError("zip file version 11.5").
    path = _one_tensor_zip(tmp_path / "model.pt", (4,), (1,))
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + 6] = 115  # "version needed to extract": 11.5
    path.write_bytes(bytes(data))
    with pytest.raises(ws.UnsupportedFormatError, match="zip file version"):
        ws.open(path)


def test_deeply_nested_values_in_messages_are_shown_bounded(tmp_path: Path) -> None:
    # A tuple nested 3,000 deep in a refused call's arguments, a persistent id, or the first
    # pickle of a legacy file: its repr in the error message raised RecursionError.
    nested = b"(" * 3000 + b"t" * 3000
    storage = b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04"
    for body, match in (
        (b"ccollections\nOrderedDict\n" + nested + b"\x85R", r"a dict made of \(\(\(\(\(\.\.\.\)"),
        (storage + nested + b"tQ", "a persistent id that is not a storage"),
    ):
        with pytest.raises(ws.CorruptCheckpointError, match=match):
            ws.open(_torch_zip(tmp_path / "nested.pt", b"\x80\x02" + body + b"."))
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(b"\x80\x02" + nested + b".")
    with pytest.raises(ws.UnsupportedFormatError, match=r"not torch\.save's"):
        ws.open(legacy, format="pytorch")


def _legacy_head() -> bytes:
    """The first three pickles of a legacy file: magic number, protocol version, system info."""
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return pickle.dumps(0x1950A86A20F9469CFC6C, 2) + pickle.dumps(1001, 2) + pickle.dumps(info, 2)


def _laughs(depth: int) -> bytes:
    """A list of lists, each holding the one before twice through the memo: 2^depth leaves."""
    body = b"](]K\x01a\x94" + b"".join(b"](" + (b"h" + bytes([i])) * 2 + b"e\x94" for i in range(depth)) + b"e"
    return b"\x80\x02" + body + b"."


def test_values_shared_through_the_memo_are_walked_within_a_budget(tmp_path: Path) -> None:
    # Found reviewing the walk: 846 bytes naming 2^30 values took 40 s before an error.
    path = _torch_zip(tmp_path / "laughs.pt", _laughs(30))
    started = time.perf_counter()
    with pytest.raises(ws.CorruptCheckpointError, match="reaches more than 12008 values"):
        ws.open(path)
    assert time.perf_counter() - started < 1
    legacy = tmp_path / "legacy-laughs.pt"
    legacy.write_bytes(_legacy_head() + _laughs(30) + b"\x80\x02](e.")
    with pytest.raises(ws.CorruptCheckpointError, match="reaches more than"):
        ws.open(legacy)
    # the same state dict saved under ten keys is still read, every name listed
    model = _model()
    shared = tmp_path / "shared.pt"
    torch.save(
        {f"copy{index}": model.state_dict() for index in range(10)} | {"same": [model.state_dict()] * 10}, shared
    )
    with ws.open(shared) as checkpoint:
        assert len(checkpoint) == 20 * len(model.state_dict())


def test_more_dimensions_than_numpy_holds_are_unsupported(tmp_path: Path) -> None:
    # Found after the TensorFlow readers' same bug: 65 dimensions made numpy raise ValueError.
    with ws.open(_one_tensor_zip(tmp_path / "ok.pt", (1,) * 64, (1,) * 64)) as checkpoint:
        assert checkpoint["t"].ndim == 64
    with pytest.raises(ws.UnsupportedFormatError, match="65 dimensions; numpy arrays hold 64"):
        ws.open(_one_tensor_zip(tmp_path / "deep.pt", (1,) * 65, (1,) * 65))


# -- files Python 2 wrote (tests/legacy/make_python2_pytorch.py writes them by hand) -----------

PYTHON2 = Path(__file__).resolve().parent / "legacy"


@pytest.mark.parametrize("name", ["python2-torch0.3-state-dict.pt", "python2-torch0.4-state-dict.pt"])
def test_python2_files_read_as_torch_loads_them(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = PYTHON2 / name
    ops = {op.name for op, _, _ in pickletools.genops(path.read_bytes()[path.read_bytes().index(b"\x80\x02", 30) :])}
    assert {"SHORT_BINSTRING", "BINGET", "BINPERSID"} <= ops  # a Python 2 pickle, not Python 3's
    _assert_matches_torch(path)  # torch.load(weights_only=True), bit for bit
    assert main(["scan", str(path)]) == 0
    assert "REFUSED" not in capsys.readouterr().out
    assert all(entry.allowed for entry in scan(path))


def test_python2_training_checkpoint_reads_as_torch_loads_it() -> None:
    # id() ints past 32 bits (INT) and a 300-byte str (BINSTRING): torch reads it with weights_only=False only
    path = PYTHON2 / "python2-torch0.4-training.pt"
    expected = _flatten(torch.load(path, weights_only=False))
    with ws.open(path) as ckpt:
        assert sorted(ckpt) == sorted(expected)
        for name, tensor in expected.items():
            assert_same_tensor(ckpt[name], tensor.numpy())
        assert ckpt.metadata["optimizer.param_groups.0.params"] == "[140234567890123, 140234567890171]"
        assert ckpt.metadata["arch"] == "resnet18"


def test_python2_strings_that_are_not_utf8_are_unsupported(tmp_path: Path) -> None:
    # torch.load decodes Python 2 str as UTF-8 unless told otherwise: latin-1 bytes fail there too
    data = (PYTHON2 / "python2-torch0.4-state-dict.pt").read_bytes().replace(b"caf\xc3\xa9", b"cafe\xe9")
    path = tmp_path / "latin1.pt"
    path.write_bytes(data)
    with pytest.raises(Exception, match="codec can't decode"):
        torch.load(path, weights_only=True)
    with pytest.raises(ws.UnsupportedFormatError, match="a Python 2 string that is not UTF-8"):
        ws.open(path)


# A quantised tensor is a case torch.load still reads: made with torch's deprecated makers on purpose.
@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated:UserWarning")
def test_what_torch_weights_only_allows_reads_as_it_loads(tmp_path: Path) -> None:
    # torch.load(weights_only=True) rebuilds these; weightscope lists the tensors and shows the rest
    tagged = torch.arange(3.0)
    tagged.note = "attribute"  # type: ignore[attr-defined]  # saved through _rebuild_from_type_v2
    saved = {
        "parameter": torch.nn.Parameter(torch.ones(2, 2)),
        "tagged": tagged,
        "counter": collections.Counter(a=2),
        "set": {3},
        "complex": 1 + 2j,
        "device": torch.device("cpu"),
        "raw": bytearray(b"\x00\x01"),
        "size": torch.Size([2, 3]),
    }
    path = tmp_path / "allowed.pt"
    torch.save(saved, path)
    loaded = torch.load(path, weights_only=True)
    assert loaded["counter"] == {"a": 2} and loaded["set"] == {3} and loaded["device"] == torch.device("cpu")
    _assert_matches_torch(path)
    with ws.open(path) as ckpt:
        assert ckpt.metadata["counter.a"] == "2" and ckpt.metadata["complex"] == "(1+2j)"
        assert ckpt.metadata["device"] == "cpu" and ckpt.metadata["size"] == "(2, 3)"
    quantised = tmp_path / "quantised.pt"
    torch.save({"q": torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.qint8)}, quantised)
    torch.load(quantised, weights_only=True)  # torch reads it; weightscope says what it does not read
    with pytest.raises(ws.UnsupportedFormatError, match=r"torch\.QInt8Storage: torch loads it"):
        ws.open(quantised)
