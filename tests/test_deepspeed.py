"""DeepSpeed ZeRO checkpoints (issue 19 item 2): made by DeepSpeed itself (tests/fixtures/deepspeed/make_zero.py).
More broken folders in tests/corpus/deepspeed/ (make_deepspeed_corpus.py).

Every consolidated tensor equals what DeepSpeed's ``get_fp32_state_dict_from_zero_checkpoint`` gives, bit for bit;
the optimizer's moments equal what DeepSpeed gathers (``safe_get_full_optimizer_state``); the converted file loads in
torch; damaged folders give typed errors naming what is wrong.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from make_deepspeed_corpus import after, rewrite
from safetensors.torch import load_file

import weightscope as ws
from weightscope.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "deepspeed"
STAGES = (1, 2, 3)


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    status = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return status, out, err


def as_torch(array: np.ndarray) -> torch.Tensor:
    """Our array as torch holds it (bfloat16 by its bits), copied: ours are read-only, which torch warns of."""
    array = np.array(array, order="C")
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def assert_bits(ours: np.ndarray, theirs: torch.Tensor, name: str) -> None:
    mine = as_torch(ours)
    assert mine.dtype == theirs.dtype and mine.shape == theirs.shape, name
    assert mine.contiguous().view(torch.uint8).tolist() == theirs.contiguous().view(torch.uint8).tolist(), name


@pytest.mark.parametrize("stage", STAGES)
def test_fp32_weights_equal_zero_to_fp32(stage: int) -> None:
    expected = load_file(FIXTURES / f"stage{stage}" / "expected.safetensors")
    with ws.open(FIXTURES / f"stage{stage}") as ckpt:
        assert ckpt.format == "deepspeed" and ckpt.metadata["zero_stage"] == str(stage)
        for name, tensor in expected.items():
            assert_bits(ckpt[name], tensor, name)
        weights = [name for name in ckpt if ckpt.role(name).kind != "optimizer"]
        extra = set(weights) - set(expected)
        # ZeRO-1 keeps no fp32 copy of frozen parameters (zero_to_fp32 leaves them out): read from the module
        assert extra == ({"frozen.weight", "frozen.bias"} if stage == 1 else set())


@pytest.mark.parametrize("stage", STAGES)
def test_moments_equal_deepspeeds_gathered_state(stage: int) -> None:
    moments = load_file(FIXTURES / f"stage{stage}" / "moments.safetensors")
    with ws.open(FIXTURES / f"stage{stage}") as ckpt:
        listed = {name for name in ckpt if ckpt.role(name).role in ("exp_avg", "exp_avg_sq")}
        assert listed == set(moments)
        for name, tensor in moments.items():
            assert_bits(ckpt[name], tensor, name)
            role = ckpt.role(name)
            assert role.kind == "optimizer" and role.owner == name.split(".", 2)[2].rpartition(".")[0]
        layers = ckpt.layers()
        state = layers["hidden"].optimizer_state
        assert state["hidden.weight"]["exp_avg"].name == "optimizer.state.hidden.weight.exp_avg"
        assert state["hidden.bias"]["exp_avg_sq"].name == "optimizer.state.hidden.bias.exp_avg_sq"


@pytest.mark.parametrize("stage", (1, 2))
def test_module_weights_listed_as_saved(stage: int) -> None:
    module = load_file(FIXTURES / f"stage{stage}" / "module.safetensors")
    with ws.open(FIXTURES / f"stage{stage}") as ckpt:
        copies = [name for name in ckpt if name.startswith("module.")]
        assert copies == [
            f"module.{name}" for name in ("embed.weight", "hidden.weight", "hidden.bias", "out.weight", "out.bias")
        ]
        for name in copies:
            assert ckpt.info(name).type_name == "bfloat16"
            assert_bits(ckpt[name], module[name.removeprefix("module.")], name)
            assert ckpt.role(name).kind == "optimizer" and ckpt.role(name).owner == name.removeprefix("module.")


def test_trainer_folder_with_weights_beside(tmp_path: Path) -> None:
    """A Trainer's checkpoint-N/ with ZeRO's files and the module's weights: read as ZeRO's, with a note."""
    folder = damaged(tmp_path, 2)
    shutil.copy(FIXTURES / "stage2" / "module.safetensors", folder / "model.safetensors")
    with ws.open(folder) as ckpt:
        assert ckpt.format == "deepspeed"
        assert any("it also holds model.safetensors" in note for note in ckpt.notes), ckpt.notes
    with ws.open(folder / "model.safetensors") as module:
        assert module.info("embed.weight").type_name == "bfloat16"


def test_tag_folder_opens_as_the_checkpoint() -> None:
    with ws.open(FIXTURES / "stage3") as root, ws.open(FIXTURES / "stage3" / "global_step2") as step:
        assert list(root) == list(step)
        assert all(np.array_equal(root[name], step[name]) for name in root)
        assert root.notes == [f"{FIXTURES / 'stage3'}: the tag in latest: global_step2"]
        assert step.notes == []


@pytest.mark.parametrize("stage", (2, 3))
def test_convert_to_safetensors_loads_in_torch(stage: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model.safetensors"
    status, printed, _ = run(capsys, "convert", FIXTURES / f"stage{stage}" / "global_step2", out, "--to", "safetensors")
    assert status == 0, printed
    # the moments; stage 2 also the module's bf16 copies (stage 3 saves none)
    assert f"left out: {15 if stage == 2 else 10} optimizer state tensors" in printed
    written = load_file(out)
    expected = load_file(FIXTURES / f"stage{stage}" / "expected.safetensors")
    assert sorted(written) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.equal(written[name], tensor) and written[name].dtype == tensor.dtype, name


def test_summary_ls_verify(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "summary", FIXTURES / "stage3")
    assert status == 0 and "sharding ZeRO stage 3 over 2 ranks (4 rank files" in out, out
    assert "master weights float32, module bfloat16; optimizer state exp_avg, exp_avg_sq" in out, out
    status, out, _ = run(capsys, "verify", FIXTURES / "stage2")
    assert status == 0 and out.startswith("OK: 24 tensors") and "3 pytorch" in out, out
    status, out, _ = run(capsys, "ls", FIXTURES / "stage2")
    assert status == 0 and "embed.weight" in out and "zero_stage = 2" in out


# -- damage ---------------------------------------------------------------------------------------------------------


def damaged(tmp_path: Path, stage: int) -> Path:
    target = tmp_path / f"stage{stage}"
    shutil.copytree(FIXTURES / f"stage{stage}", target)
    return target


def optim(folder: Path, rank: int) -> Path:
    return next(folder.glob(f"global_step2/*zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"))


def test_other_global_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = damaged(tmp_path, 2)
    rewrite(
        optim(folder, 1), lambda data: data.replace(b"deepspeed.runtime.fp16.loss_scaler\nLossScaler", b"os\nsystem")
    )
    with pytest.raises(ws.RefusedError, match=r"rank_1_mp_rank_00_optim_states.pt.*wants to call os.system"):
        ws.open(folder)
    status, _, err = run(capsys, "ls", folder)
    assert status == 6 and "os.system" in err and "Traceback" not in err


def test_enum_of_no_stage_is_refused(tmp_path: Path) -> None:
    folder = damaged(tmp_path, 2)
    rewrite(optim(folder, 0), after(b"ZeroStageEnum", b"K\x02", b"K\x07"))
    with pytest.raises(ws.CorruptCheckpointError, match=r"ZeroStageEnum\(7,\): no ZeRO stage"):
        ws.open(folder)


def test_missing_rank_file(tmp_path: Path) -> None:
    folder = damaged(tmp_path, 3)
    optim(folder, 1).unlink()
    with pytest.raises(ws.CheckpointNotFoundError, match=r"1 \*_optim_states.pt files for a world size of 2"):
        ws.open(folder)
    folder = damaged(tmp_path / "model", 3)
    (folder / "global_step2" / "zero_pp_rank_1_mp_rank_00_model_states.pt").unlink()
    with pytest.raises(ws.CheckpointNotFoundError, match=r"1 \*_model_states.pt files for a ZeRO-3 world size of 2"):
        ws.open(folder)


def test_world_sizes_disagree(tmp_path: Path) -> None:
    folder = damaged(tmp_path, 2)
    rewrite(optim(folder, 1), after(b"partition_count", b"K\x02", b"K\x03"))
    with pytest.raises(ws.CorruptCheckpointError, match=r"rank 1 says stage 2, partition_count \[3\]; rank 0 says"):
        ws.open(folder)
    folder = damaged(tmp_path / "model", 2)
    rewrite(folder / "global_step2" / "mp_rank_00_model_states.pt", after(b"dp_world_size", b"K\x02", b"K\x03"))
    with pytest.raises(ws.CorruptCheckpointError, match="dp_world_size 3; the optimizer's partition_count says 2"):
        ws.open(folder)


@pytest.mark.parametrize("stage", (2, 3))
def test_partitions_that_do_not_add_up(tmp_path: Path, stage: int) -> None:
    folder = damaged(tmp_path, stage)
    model = folder / "global_step2" / f"{'zero_pp_rank_0_' if stage == 3 else ''}mp_rank_00_model_states.pt"
    # param_shapes' embed.weight [7, 5] becomes [9, 5]: more than the partitions hold
    rewrite(model, after(b"param_shapes", b"K\x07K\x05\x86", b"K\x09K\x05\x86"))
    with pytest.raises(ws.CorruptCheckpointError, match="the partitions do not add up"):
        ws.open(folder)


def test_stage3_ranks_disagree(tmp_path: Path) -> None:
    folder = damaged(tmp_path, 3)
    shutil.copy(optim(FIXTURES / "stage2", 0), optim(folder, 1))  # a stage 2 rank among stage 3 ones
    with pytest.raises(ws.CorruptCheckpointError, match="rank 1 says stage 2"):
        ws.open(folder)


def test_truncated_rank_file(tmp_path: Path) -> None:
    folder = damaged(tmp_path, 3)
    path = optim(folder, 1)
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(ws.CorruptCheckpointError, match=re.escape(path.name)):
        ws.open(folder)


def test_bad_tags(tmp_path: Path) -> None:
    folder = damaged(tmp_path, 2)
    (folder / "latest").write_text("global_step9")
    with pytest.raises(ws.CheckpointNotFoundError, match="names 'global_step9', which is no folder"):
        ws.open(folder, format="deepspeed")
    (folder / "latest").write_text("../stage2")
    with pytest.raises(ws.CorruptCheckpointError, match="not a tag naming a folder beside it"):
        ws.open(folder, format="deepspeed")


def test_run_of_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run folder of several global_stepN/ folders: history, --step and runs take them as its checkpoints."""
    for step, stage in ((2, 2), (10, 3)):
        shutil.copytree(FIXTURES / f"stage{stage}" / "global_step2", tmp_path / f"global_step{step}")
    (tmp_path / "latest").write_text("global_step10")
    status, out, _ = run(capsys, "history", tmp_path)
    assert status == 0 and re.search(r"\*\s+10 .*global_step10", out) and re.search(r"^\s+2 .*global_step2$", out, re.M)
    status, out, _ = run(capsys, "ls", "--step", 2, tmp_path)
    assert status == 0 and "zero_stage = 2" in out
    status, out, err = run(capsys, "ls", "--step", 3, tmp_path)
    assert status == 2 and "no checkpoint of step 3 in its history (steps: 2, 10)" in err
    status, out, _ = run(capsys, "runs", "stats", "--json", tmp_path)
    assert status == 0
    steps = [entry["step"] for entry in json.loads(out)["checkpoints"]]
    assert steps == [2, 10]


def test_scan_lists_deepspeeds_names_as_allowed(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "scan", FIXTURES / "stage2")
    assert status == 0 and "REFUSED" not in out
    for name in ("ZeroStageEnum", "LossScaler", "fragment_address"):
        assert re.search(rf"allowed (NEWOBJ|REDUCE) deepspeed\..*\.{name}", out), out
    refused = Path(__file__).parent / "corpus" / "deepspeed" / "RefusedError--os-system-in-an-optimizer-pickle"
    status, out, err = run(capsys, "scan", refused)
    assert "opening this file would run code" in err
    assert status == 6 and "REFUSED GLOBAL os.system" in out


def _fake_deepspeed(monkeypatch: pytest.MonkeyPatch) -> tuple[type, type]:
    """DeepSpeed's pickled names, as torch.save records them (module and class name), without DeepSpeed."""
    import enum
    import sys
    import types

    class ZeroStageEnum(int, enum.Enum):
        weights = 3

    class LossScaler:
        def __init__(self, scale: float) -> None:
            self.cur_scale, self.dynamic = scale, False

    for cls, module in (
        (ZeroStageEnum, "deepspeed.runtime.zero.config"),
        (LossScaler, "deepspeed.runtime.fp16.loss_scaler"),
    ):
        made = types.ModuleType(module)
        setattr(made, cls.__name__, cls)
        cls.__module__, cls.__qualname__ = module, cls.__name__
        monkeypatch.setitem(sys.modules, module, made)
    return ZeroStageEnum, LossScaler


def _stage3_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, torch.Tensor]]:
    """A ZeRO-3 checkpoint of 8 parameters of 4 MiB over 2 ranks, in the fixture's layout, and its parameters."""
    import math
    from collections import OrderedDict

    stage, scaler = _fake_deepspeed(monkeypatch)
    shapes = OrderedDict((f"layers.{i}.weight", torch.Size([1025, 1023])) for i in range(8))
    full = {name: torch.randn(shape) for name, shape in shapes.items()}
    parts: list[list[torch.Tensor]] = [[], []]
    for name, shape in shapes.items():
        part = math.ceil(shape.numel() / 2)
        padded = torch.cat([full[name].reshape(-1), torch.zeros(2 * part - shape.numel())])
        parts[0].append(padded[:part])
        parts[1].append(padded[part:])
    step = tmp_path / "global_step1"
    step.mkdir()
    for rank in range(2):
        model = {"module": {}, "buffer_names": [], "param_shapes": [shapes], "shared_params": {}, "dp_world_size": 2}
        model |= {"frozen_param_shapes": OrderedDict(), "frozen_param_fragments": OrderedDict()}
        torch.save(model, step / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt")
        flat = torch.cat(parts[rank])
        state = {
            "zero_stage": stage.weights,
            "loss_scaler": scaler(1.0),
            "partition_count": 2,
            "fp32_flat_groups": [flat],
        }
        torch.save({"optimizer_state_dict": state}, step / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    return step, full


def test_stage3_reads_one_tensor_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading one parameter allocates that parameter (its pieces are views of the mapped rank files), never a
    rank's flat partition."""
    import tracemalloc

    step, full = _stage3_folder(tmp_path, monkeypatch)
    with ws.open(step) as ckpt:
        assert list(ckpt) == list(full) and ckpt.metadata["zero_stage"] == "3"
        assert "LossScaler" in (step / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt").read_bytes().decode("latin1")
        for name in full:
            tracemalloc.start()
            array = ckpt[name]
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert torch.equal(torch.from_numpy(np.array(array)), full[name]), name
            assert array.nbytes <= peak < array.nbytes + (1 << 20), (name, peak)  # one tensor, not 16 MiB of flat


def test_stage3_parts_are_the_rank_files_views(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A parameter's parts are its two ranks' slots (the last cut at its size), each a read-only view of its mapped
    rank file; ``convert`` writes them one after another and allocates no parameter's copy (4 MiB each)."""
    import tracemalloc

    from weightscope.convert import convert

    step, full = _stage3_folder(tmp_path, monkeypatch)
    with ws.open(step) as ckpt:
        for name, tensor in full.items():
            parts = ckpt.parts(name)
            half = (tensor.numel() + 1) // 2
            assert [part.shape for part in parts] == [(half,), (tensor.numel() - half,)], name
            assert all(not part.flags.owndata and not part.flags.writeable for part in parts), name
            assert torch.equal(torch.from_numpy(np.concatenate(parts)).reshape(tensor.shape), tensor), name
        convert(ckpt, tmp_path / "first.safetensors")  # what a first conversion imports is no tensor's copy
        out = tmp_path / "model.safetensors"
        tracemalloc.start()
        convert(ckpt, out)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 1 << 20, peak
    written = load_file(out)
    assert sorted(written) == sorted(full) and all(torch.equal(written[name], full[name]) for name in full)


@pytest.mark.parametrize("stage", STAGES)
def test_parts_equal_zero_to_fp32(stage: int) -> None:
    """Every tensor's parts one after another are zero_to_fp32's; stage 3's parameters (frozen ones too) of more
    than one element are in two, their ranks' slots; its buffer, saved whole, in one."""
    expected = load_file(FIXTURES / f"stage{stage}" / "expected.safetensors")
    with ws.open(FIXTURES / f"stage{stage}") as ckpt:
        split = set()
        for name, tensor in expected.items():
            parts = ckpt.parts(name)
            joined = parts[0] if len(parts) == 1 else np.concatenate(parts).reshape(tensor.shape)
            assert_bits(joined, tensor, name)
            split |= {name} if len(parts) > 1 else set()
    if stage == 3:
        assert split == {name for name, tensor in expected.items() if tensor.numel() > 1} - {"scale"}


def test_convert_to_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``convert RUN/global_stepN out/``: a destination ending in '/' is a model folder (5GB shards: one file)."""
    status, printed, _ = run(capsys, "convert", FIXTURES / "stage3" / "global_step2", f"{tmp_path / 'out'}/")
    assert status == 0, printed
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["model.safetensors"]
    written = load_file(tmp_path / "out" / "model.safetensors")
    expected = load_file(FIXTURES / "stage3" / "expected.safetensors")
    assert sorted(written) == sorted(expected) and all(torch.equal(written[name], expected[name]) for name in expected)


def test_convert_of_a_damaged_rank_writes_every_tensor_then_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rank files' CRC-32s are computed while ``convert`` writes (``checks_deferred``): every parameter is
    handed to the writer, then the conversion fails with the error reading the damaged parameter raises, and
    nothing is left at the destination or beside it."""
    from weightscope.convert import convert

    step, full = _stage3_folder(tmp_path, monkeypatch)
    path = step / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"
    data = bytearray(path.read_bytes())
    tail = full["layers.5.weight"].reshape(-1)[-1000:].numpy().tobytes()  # rank 1's slot holds the second half
    data[data.index(tail) + 100] ^= 0x01
    path.write_bytes(bytes(data))
    with ws.open(step) as ckpt, pytest.raises(ws.ChecksumMismatchError) as read:
        ckpt["layers.0.weight"]  # the whole flat partition is one zip member: any parameter's read fails
    handed: list[int] = []
    out = tmp_path / "out" / "model.safetensors"
    with pytest.raises(ws.ChecksumMismatchError) as converting:
        convert(step, out, progress=lambda done, total, *_: handed.append(done))
    assert str(converting.value) == str(read.value)
    assert "optim_states.pt: tensor 'optimizer_state_dict" in str(read.value)
    assert handed == list(range(1, 9))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["global_step1"]
