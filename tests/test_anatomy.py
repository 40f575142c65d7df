"""The anatomy of a fine-tune (``diff --anatomy``) and ``extract-lora``, against torch and PEFT (issue 21 item 2).

The fixtures are made here: a small torch model, a LoRA of rank 4 on two of its Linears merged into it by PEFT,
a few steps of full fine-tuning of it; PEFT loads the extracted adapter onto the base.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import peft
import pytest
import torch
from safetensors.torch import load_file, save_file

import weightscope as ws
from weightscope.anatomy import anatomy, energy_rank, layer_anatomy
from weightscope.cli import Environment, main
from weightscope.lora import extract_lora

RANK = 4
TARGETS = ["blocks.0.up", "blocks.1.down"]


class Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(20, 24)
        self.blocks = torch.nn.ModuleList(
            torch.nn.ModuleDict({"up": torch.nn.Linear(24, 48), "down": torch.nn.Linear(48, 24)}) for _ in range(2)
        )
        self.norm = torch.nn.LayerNorm(24)
        self.head = torch.nn.Linear(24, 7, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = x + block["down"](torch.relu(block["up"](x)))
        return self.head(self.norm(x))


def base_model() -> Model:
    torch.manual_seed(0)
    return Model()


def save(model: torch.nn.Module, path: Path) -> Path:
    save_file({name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("anatomy")
    paths = {"base": save(base_model(), folder / "base.safetensors")}
    for key, seed in (("lora", 1), ("lora2", 2)):
        config = peft.LoraConfig(r=RANK, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False)
        model = base_model()
        torch.manual_seed(seed)
        tuned = peft.get_peft_model(model, config)  # lora_B random, not zero: a trained adapter's stand-in
        paths[key] = save(tuned.merge_and_unload(), folder / f"{key}.safetensors")
    model = base_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    torch.manual_seed(3)
    for _ in range(3):
        tokens = torch.randint(0, 20, (8, 5))
        loss = torch.nn.functional.cross_entropy(model(tokens).reshape(-1, 7), torch.randint(0, 7, (40,)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    paths["full"] = save(model, folder / "full.safetensors")
    return paths


def run(*args: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main([str(arg) for arg in args], env=Environment(stdout=out, stderr=err))
    return status, out.getvalue(), err.getvalue()


def test_anatomy_finds_the_loras_rank_and_layers_exactly(models: dict[str, Path]) -> None:
    with ws.open(models["base"]) as base, ws.open(models["lora"]) as tuned:
        result = anatomy(base, tuned)
    changed = {layer.name: layer for layer in result.changed}
    assert set(changed) == {f"{target}.weight" for target in TARGETS}
    assert all(layer.rank == RANK for layer in changed.values()) and result.lora_rank() == RANK
    for layer in changed.values():
        values = np.array(layer.singular_values)
        assert values[RANK - 1] > 1e3 * layer.tolerance > values[RANK]  # the rank stands far out of the rounding
        assert 1 <= layer.rank_90 <= layer.rank_99 <= RANK
    assert {layer.status for layer in result.layers} == {"changed", "equal"}


def test_figures_equal_numpys_definitions(models: dict[str, Path]) -> None:
    base, tuned = load_file(models["base"]), load_file(models["full"])
    name = "blocks.0.up.weight"
    w, t = base[name].double().numpy(), tuned[name].double().numpy()
    layer = layer_anatomy(name, base[name].numpy(), tuned[name].numpy())
    delta = t - w
    assert layer.relative_change == pytest.approx(np.linalg.norm(delta) / np.linalg.norm(w), rel=1e-12)
    cosine = (delta * w).sum() / np.linalg.norm(delta) / np.linalg.norm(w)
    assert layer.cosine == pytest.approx(cosine, rel=1e-9, abs=1e-12)
    values = np.linalg.svd(delta, compute_uv=False)
    share = np.cumsum(values**2) / np.sum(values**2)
    assert layer.rank_90 == int(np.argmax(share >= 0.9)) + 1 and layer.rank_99 == int(np.argmax(share >= 0.99)) + 1
    assert layer.rank is not None and layer.rank > RANK  # a full fine-tune's change is of full rank
    # intruders: each top tuned left singular vector's best |cosine| with the base's, computed by torch
    tuned_u = torch.linalg.svd(tuned[name].double(), full_matrices=False)[0][:, :10]
    base_u = torch.linalg.svd(base[name].double(), full_matrices=False)[0]
    best = (base_u.T @ tuned_u).abs().max(dim=0).values.numpy()
    np.testing.assert_allclose(layer.similarity, best, rtol=1e-9)
    assert layer.intruders == int(np.sum(best < 0.5))
    assert energy_rank(np.array([3.0, 1.0, 0.0]), 0.9) == 1 and energy_rank(np.zeros(3), 0.9) == 0


def test_an_intruder_direction_is_found() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((256, 128)).astype(np.float32)
    u, v = rng.standard_normal(256), rng.standard_normal(128)
    t = w + (100 * np.outer(u, v) / np.linalg.norm(u)).astype(np.float32)  # a new direction, stronger than any
    layer = layer_anatomy("w", w, t)
    assert layer.intruders == 1 and layer.similarity[0] < 0.5 and min(layer.similarity[1:]) > 0.5
    assert layer.rank == 1
    rescaled = layer_anatomy("w", w, 1.5 * w)
    assert rescaled.intruders == 0 and rescaled.cosine == pytest.approx(1.0) and rescaled.rank == 128  # ΔW = W / 2


def test_sign_agreement_of_two_fine_tunes(models: dict[str, Path]) -> None:
    tensors = {key: load_file(models[key]) for key in ("base", "lora", "lora2")}
    with ws.open(models["base"]) as base, ws.open(models["lora"]) as a, ws.open(models["lora2"]) as b:
        result = anatomy(base, a, b)
        same = anatomy(base, a, a)
    for layer in result.changed:
        d1 = (tensors["lora"][layer.name] - tensors["base"][layer.name]).numpy()
        d2 = (tensors["lora2"][layer.name] - tensors["base"][layer.name]).numpy()
        both = (d1 != 0) & (d2 != 0)
        assert layer.sign_agreement == pytest.approx(np.mean(np.sign(d1[both]) == np.sign(d2[both])))
        assert 0.3 < layer.sign_agreement < 0.7  # independent adapters agree by chance
    assert all(layer.sign_agreement == 1.0 for layer in same.changed)


def test_extract_lora_loads_into_peft_and_reproduces_the_merged_weights(
    models: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "adapter"
    with ws.open(models["base"]) as base, ws.open(models["lora"]) as tuned:
        extraction = extract_lora(base, tuned, out, RANK)
    assert sorted(layer.module for layer in extraction.layers) == TARGETS and extraction.left_out == []
    loaded = peft.PeftModel.from_pretrained(base_model(), out)
    merged = {name: tensor.detach() for name, tensor in loaded.merge_and_unload().state_dict().items()}
    expected = load_file(models["lora"])
    assert merged.keys() == expected.keys()
    for name, tensor in expected.items():
        scale = float(tensor.abs().max())
        torch.testing.assert_close(merged[name], tensor, rtol=0, atol=4 * torch.finfo(torch.float32).eps * scale)
    for layer in extraction.layers:
        error = (merged[f"{layer.module}.weight"] - expected[f"{layer.module}.weight"]).abs().max().item()
        assert error <= 2 * layer.max_abs + 1e-7  # the error reported is the error PEFT gives, to rounding
        assert layer.max_abs < 1e-6


def test_extract_lora_of_a_full_fine_tune_leaves_out_what_lora_cannot_hold(
    models: dict[str, Path], tmp_path: Path
) -> None:
    with ws.open(models["base"]) as base, ws.open(models["full"]) as tuned:
        extraction = extract_lora(base, tuned, tmp_path / "adapter", 2)
    assert "norm.weight" in extraction.left_out and "blocks.0.up.bias" in extraction.left_out
    assert {"head", "embed"} <= {layer.module for layer in extraction.layers}  # an Embedding's too, as PEFT's
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 2 and config["peft_type"] == "LORA"
    loaded = peft.PeftModel.from_pretrained(base_model(), tmp_path / "adapter")
    merged = loaded.merge_and_unload().state_dict()
    expected, base = load_file(models["full"]), load_file(models["base"])
    for layer in extraction.layers:
        name = f"{layer.module}.weight"
        error = torch.linalg.norm(merged[name] - expected[name]) / torch.linalg.norm(expected[name] - base[name])
        assert float(error) == pytest.approx(layer.relative_error, rel=1e-3)
        assert 0 < layer.relative_error < 1


def test_cli_diff_anatomy_and_extract_lora(models: dict[str, Path], tmp_path: Path) -> None:
    status, out, err = run("diff", models["base"], models["lora"], "--anatomy", "--json")
    assert status == 1, err
    document = json.loads(out)
    assert document["lora_rank"] == RANK
    assert {layer["name"] for layer in document["layers"] if layer["status"] == "changed"} == {
        f"{target}.weight" for target in TARGETS
    }
    status, out, err = run("diff", models["base"], models["lora"], "--anatomy", "--second", models["lora2"])
    assert status == 1 and "blocks.0.up.weight" in out and "could be a LoRA of rank 4" in out, (out, err)
    status, out, err = run("diff", models["base"], models["full"], "--anatomy", "--intruders", 0, "--json")
    assert status == 1 and all(layer["intruders"] is None for layer in json.loads(out)["layers"]), err
    status, out, err = run("diff", models["base"], models["base"], "--anatomy")
    assert status == 0 and "0 of" in out
    status, out, err = run("extract-lora", models["base"], models["lora"], tmp_path / "a", "--rank", RANK)
    assert status == 0, err
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file() and "blocks.1.down" in out
    status, out, err = run("extract-lora", models["base"], models["lora"], tmp_path / "b", "--rank", 0)
    assert status == 2 and "rank" in err
    status, out, err = run("extract-lora", models["base"], models["lora"], tmp_path / "a", "--rank", RANK)
    assert status == 2 and "folder with files in it" in err  # refused before any work, the adapter kept
    status, out, err = run("extract-lora", models["base"], models["base"], tmp_path / "c", "--rank", RANK)
    assert status == 2 and "changes no Linear or Embedding weight" in err and not (tmp_path / "c").exists()
    for option in (["--second", models["lora2"]], ["--intruders", 3]):
        status, out, err = run("diff", models["base"], models["lora"], *option)
        assert status == 2 and "--anatomy" in err, option


def test_weights_without_figures_are_named_not_a_crash(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 5)).astype(np.float32)
    nan = w.copy()
    nan[2, 3] = np.nan
    base = {"a.weight": w, "b.weight": w, "c.weight": w, "d": np.arange(4, dtype=np.int64), "gone": w}
    tuned = {"a.weight": nan, "b.weight": w[:5], "c.weight": w + 1, "d": np.arange(4, dtype=np.int64)[::-1], "new": w}
    ws.save(base, tmp_path / "base.safetensors")
    ws.save(tuned, tmp_path / "tuned.safetensors")
    status, out, err = run("diff", tmp_path / "base.safetensors", tmp_path / "tuned.safetensors", "--anatomy", "--json")
    assert status == 1, err
    document = json.loads(out)
    statuses = {layer["name"]: layer["status"] for layer in document["layers"]}
    assert statuses == {"a.weight": "not finite", "b.weight": "shape", "c.weight": "changed", "d": "changed"}
    assert document["only_base"] == ["gone"] and document["only_tuned"] == ["new"]
    ranks = {layer["name"]: layer["rank"] for layer in document["layers"]}
    assert ranks["c.weight"] == 1 and ranks["d"] is None  # w + 1: a rank-1 change; a vector has no rank
    ws.save({"\x1b[2Jevil.weight": w}, tmp_path / "a.safetensors")
    ws.save({"\x1b[2Jevil.weight": w + 1}, tmp_path / "b.safetensors")
    status, out, err = run("diff", tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--anatomy")
    assert status == 1 and "\\x1b[2Jevil.weight" in out and "\x1b" not in out + err  # a name escaped, never acted on


def test_the_rounding_tolerance_follows_the_stored_type() -> None:
    import ml_dtypes

    rng = np.random.default_rng(2)
    w = rng.standard_normal((32, 16))
    delta = np.outer(rng.standard_normal(32), rng.standard_normal(16))
    for dtype in (np.float32, np.float16, np.dtype(ml_dtypes.bfloat16)):
        base = w.astype(dtype)
        tuned = (base.astype(np.float64) + delta).astype(dtype)  # a rank-1 change, rounded to the stored type
        assert layer_anatomy("w", base, tuned).rank == 1, dtype


def test_a_llamas_lora_found_and_extracted_from_its_folders(tmp_path: Path) -> None:
    from tiny_models import tiny_llama

    tiny_llama(False).save_pretrained(tmp_path / "base")
    config = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft.get_peft_model(tiny_llama(False), config).merge_and_unload().save_pretrained(tmp_path / "tuned")
    status, out, err = run("diff", tmp_path / "base", tmp_path / "tuned", "--anatomy", "--json")
    document = json.loads(out)
    assert status == 1 and document["lora_rank"] == 8, err
    changed = {layer["name"] for layer in document["layers"] if layer["status"] == "changed"}
    assert changed == {f"model.layers.{i}.self_attn.{p}.weight" for i in range(2) for p in ("q_proj", "v_proj")}
    status, out, err = run("extract-lora", tmp_path / "base", tmp_path / "tuned", tmp_path / "adapter", "--rank", 8)
    assert status == 0, err
    merged = peft.PeftModel.from_pretrained(tiny_llama(False), tmp_path / "adapter").merge_and_unload().state_dict()
    expected = load_file(tmp_path / "tuned" / "model.safetensors")
    for name, tensor in expected.items():
        torch.testing.assert_close(merged[name], tensor, rtol=0, atol=4e-7 * float(tensor.abs().max()))


GPT2_TARGETS = ["c_attn", "c_proj", "c_fc"]  # every Conv1D of its blocks


def test_a_gpt2_conv1d_lora_found_and_extracted_with_fan_in_fan_out(tmp_path: Path) -> None:
    """GPT-2's Conv1D keeps (in, out): the adapter says fan_in_fan_out, PEFT loads it without correcting it and
    merges it back to the tuned weights; from the files alone (no config.json) the shapes tell the same."""
    import shutil
    import warnings

    from tiny_models import tiny_gpt2

    tiny_gpt2().save_pretrained(tmp_path / "base")
    config = peft.LoraConfig(r=RANK, lora_alpha=8, target_modules=GPT2_TARGETS, fan_in_fan_out=True,
                             init_lora_weights=False)  # fmt: skip
    torch.manual_seed(5)
    peft.get_peft_model(tiny_gpt2(), config).merge_and_unload().save_pretrained(tmp_path / "tuned")
    status, out, err = run("diff", tmp_path / "base", tmp_path / "tuned", "--anatomy", "--json")
    document = json.loads(out)
    assert status == 1 and document["lora_rank"] == RANK, err
    changed = {layer["name"] for layer in document["layers"] if layer["status"] == "changed"}
    assert changed == {f"transformer.h.{i}.{part}.weight" for i in range(2) for part in
                       ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}  # fmt: skip
    expected = load_file(tmp_path / "tuned" / "model.safetensors")
    for name, file in (("base", "base.safetensors"), ("tuned", "tuned.safetensors")):
        shutil.copy(tmp_path / name / "model.safetensors", tmp_path / file)
    sources = {"folders": ("base", "tuned"), "files": ("base.safetensors", "tuned.safetensors")}
    for source, (base, tuned) in sources.items():
        adapter = tmp_path / f"adapter-{source}"
        status, out, err = run("extract-lora", tmp_path / base, tmp_path / tuned, adapter, "--rank", RANK, "--json")
        assert status == 0 and len(json.loads(out)["layers"]) == 8, err
        assert json.loads((adapter / "adapter_config.json").read_text())["fan_in_fan_out"] is True, source
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            merged = peft.PeftModel.from_pretrained(tiny_gpt2(), adapter).merge_and_unload().state_dict()
        assert not [warning for warning in caught if "fan_in_fan_out" in str(warning.message)], source
        for name, tensor in expected.items():
            torch.testing.assert_close(merged[name], tensor, rtol=0, atol=4e-7 * float(tensor.abs().max()))


def test_conv1d_and_linear_changes_together_are_refused(tmp_path: Path) -> None:
    """An untied GPT-2 whose Linear head and Conv1D blocks both changed: PEFT's one fan_in_fan_out cannot say
    both, so no adapter is written."""
    from tiny_models import tiny_gpt2

    tiny_gpt2(tied=False).save_pretrained(tmp_path / "base")
    config = peft.LoraConfig(r=RANK, target_modules=["c_attn", "lm_head"], init_lora_weights=False)
    with pytest.warns(UserWarning, match="fan_in_fan_out"):  # PEFT corrects it for the Conv1D
        tuned = peft.get_peft_model(tiny_gpt2(tied=False), config)
    tuned.merge_and_unload().save_pretrained(tmp_path / "tuned")
    status, _, err = run("extract-lora", tmp_path / "base", tmp_path / "tuned", tmp_path / "adapter", "--rank", RANK)
    assert status == 2 and "one fan_in_fan_out" in err and "lm_head" in err, err
    assert not (tmp_path / "adapter").exists()


def test_layers_narrower_than_the_rank_keep_their_own_in_the_rank_pattern(
    models: dict[str, Path], tmp_path: Path
) -> None:
    with ws.open(models["base"]) as base, ws.open(models["full"]) as tuned:
        extraction = extract_lora(base, tuned, tmp_path / "adapter", 30)
    assert {layer.module: layer.rank for layer in extraction.layers}["head"] == 7
    merged = peft.PeftModel.from_pretrained(base_model(), tmp_path / "adapter").merge_and_unload().state_dict()
    expected = load_file(models["full"])
    for layer in extraction.layers:  # every matrix at its full rank: the change held whole
        name = f"{layer.module}.weight"
        assert layer.relative_error < 1e-5
        torch.testing.assert_close(merged[name], expected[name], rtol=0, atol=1e-6)


def test_the_randomized_spectrum_of_a_low_rank_change_equals_numpys() -> None:
    rng = np.random.default_rng(4)
    w = rng.standard_normal((300, 200)).astype(np.float32)
    low = (w + 0.01 * rng.standard_normal((300, 6)) @ rng.standard_normal((6, 200))).astype(np.float32)
    full = (w + 0.01 * rng.standard_normal((300, 200))).astype(np.float32)
    for tuned, rank in ((low, 6), (full, 200)):
        layer = layer_anatomy("w", w, tuned, top=0)
        exact = np.linalg.svd(tuned.astype(np.float64) - w.astype(np.float64), compute_uv=False)
        assert layer.rank == rank == int(np.sum(exact > layer.tolerance))
        np.testing.assert_allclose(layer.singular_values[:rank], exact[:rank], rtol=1e-9)
        assert (len(layer.singular_values) == 16) == (rank == 6)  # the low rank on 16 random columns, not 200
        share = np.cumsum(exact**2) / np.sum(exact**2)
        assert layer.rank_99 == int(np.argmax(share >= 0.99)) + 1 and layer.similarity == []


def test_on_one_thread_and_a_two_process_cluster_the_figures_equal_the_threads(
    models: dict[str, Path], client: Any
) -> None:
    with ws.open(models["base"]) as base, ws.open(models["full"]) as a, ws.open(models["lora"]) as b:
        threads = anatomy(base, a, b).to_json()
        assert anatomy(base, a, b, scheduler="sync").to_json() == threads
        assert anatomy(base, a, b, client=client).to_json() == threads
        status, out, err = run("diff", models["base"], models["full"], "--anatomy", "--second", models["lora"],
                               "--scheduler", client.scheduler.address, "--json")  # fmt: skip
    assert status == 1 and json.loads(out) == json.loads(json.dumps(threads)), err
    assert sum(layer["status"] == "changed" for layer in threads["layers"]) == len(threads["layers"]) > 5
