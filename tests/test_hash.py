"""Integrity manifests: ``weightscope hash`` and ``verify --manifest``, the same weights in three formats."""

from __future__ import annotations

import hashlib
import io
import json
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import weightscope as ws
from weightscope import manifest
from weightscope.cli import Environment, main
from weightscope.errors import ExitStatus


def run(*args: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main([str(arg) for arg in args], env=Environment(stdout=out, stderr=err))
    return status, out.getvalue(), err.getvalue()


def _weights() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return {
        "conv.weight": torch.randn(8, 3, 3, 3, generator=generator),
        "conv.bias": torch.randn(8, generator=generator).half(),
        "fc.weight": torch.randn(5, 7, generator=generator).t().contiguous(),
        "embed.weight": torch.randint(-100, 100, (6, 4), generator=generator, dtype=torch.int8),
        "steps": torch.tensor(1234567, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "scale": torch.tensor(0.5, dtype=torch.float64),
    }


def _oracle(weights: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What the manifest should say, computed from torch's own bytes and the documented digest lines."""
    tensors = {}
    for name, tensor in weights.items():
        values = tensor.contiguous().numpy()
        assert values.dtype.byteorder in "=|<"  # this machine is little-endian, as the definition's bytes are
        tensors[name] = {
            "dtype": values.dtype.name,
            "shape": list(values.shape),
            "sha256": hashlib.sha256(values.tobytes()).hexdigest(),
        }
    lines = "".join(
        f"{json.dumps(name)} {entry['dtype']} {json.dumps(entry['shape']).replace(' ', '')} {entry['sha256']}\n"
        for name, entry in sorted(tensors.items())
    )
    return {"tensors": tensors, "model_sha256": hashlib.sha256(lines.encode()).hexdigest()}


@pytest.fixture
def three_formats(tmp_path: Path) -> dict[str, Path]:
    weights = _weights()
    paths = {
        "safetensors": tmp_path / "model.safetensors",
        "pytorch": tmp_path / "model.pt",
        "npz": tmp_path / "model.npz",
    }
    save_file(weights, paths["safetensors"])
    # a transposed view, as torch saves it (strides of its storage): read through the strided path
    torch.save({**weights, "fc.weight": weights["fc.weight"].t().contiguous().t()}, paths["pytorch"])
    np.savez(paths["npz"], **{name: tensor.numpy() for name, tensor in weights.items()})
    return paths


def _manifest(path: Path | str) -> dict[str, Any]:
    status, out, err = run("hash", "--json", path)
    assert (status, err) == (0, ""), err
    document: dict[str, Any] = json.loads(out)
    return document


def test_the_same_weights_hash_the_same_in_three_formats(three_formats: dict[str, Path]) -> None:
    expected = _oracle(_weights())
    documents = {kind: _manifest(path) for kind, path in three_formats.items()}
    for kind, document in documents.items():
        assert document["format"] in kind or kind == "pytorch"
        assert document["tensors"] == expected["tensors"], kind
        assert document["model_sha256"] == expected["model_sha256"], kind


def test_streaming_in_small_chunks_gives_the_same_digests(
    three_formats: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _oracle(_weights())
    monkeypatch.setattr(manifest, "CHUNK_BYTES", 24)  # rows split, strided views walked row by row
    for path in three_formats.values():
        assert _manifest(path)["tensors"] == expected["tensors"]


def test_bfloat16_and_big_endian_values_hash_as_their_little_endian_bytes(tmp_path: Path) -> None:
    weights = {"w": torch.randn(4, 6, generator=torch.Generator().manual_seed(1)).bfloat16()}
    save_file(weights, tmp_path / "b.safetensors")
    torch.save(weights, tmp_path / "b.pt")
    raw = weights["w"].view(torch.int16).numpy().tobytes()
    for path in (tmp_path / "b.safetensors", tmp_path / "b.pt"):
        entry = _manifest(path)["tensors"]["w"]
        assert entry == {"dtype": "bfloat16", "shape": [4, 6], "sha256": hashlib.sha256(raw).hexdigest()}
    little = np.arange(10, dtype="<f4")
    np.save(tmp_path / "little.npy", little)
    np.save(tmp_path / "big.npy", little.astype(">f4"))
    little_entries, big_entries = (_manifest(tmp_path / f"{kind}.npy")["tensors"] for kind in ("little", "big"))
    assert list(little_entries.values()) == list(big_entries.values())  # an .npy file's tensor is named by the file
    assert little_entries["little"]["sha256"] == hashlib.sha256(little.tobytes()).hexdigest()


def test_a_flipped_byte_changes_exactly_that_tensors_digest(tmp_path: Path) -> None:
    weights = _weights()
    original, damaged = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file(weights, original)
    with ws.open(original) as ckpt:
        offset = ckpt.info("fc.weight").offset
    data = bytearray(original.read_bytes())
    data[offset + 9] ^= 0x01
    damaged.write_bytes(bytes(data))
    before, after = _manifest(original)["tensors"], _manifest(damaged)["tensors"]
    changed = [name for name in before if before[name] != after[name]]
    assert changed == ["fc.weight"]
    assert _manifest(original)["model_sha256"] != _manifest(damaged)["model_sha256"]


def test_verify_manifest_passes_and_fails_accordingly(tmp_path: Path) -> None:
    weights = _weights()
    original = tmp_path / "a.safetensors"
    save_file(weights, original)
    receipt = tmp_path / "manifest.json"
    receipt.write_text(run("hash", "--json", original)[1])

    torch.save(weights, tmp_path / "copy.pt")  # another format, the same weights: passes
    for path in (original, tmp_path / "copy.pt"):
        status, out, err = run("verify", "--manifest", receipt, path)
        assert (status, err) == (0, "")
        assert out == f"OK: {len(weights)} tensors match the manifest {receipt}\n"

    changed = dict(weights)
    changed["conv.bias"] = changed["conv.bias"].clone()
    changed["conv.bias"][3] += 1
    del changed["mask"]
    changed["extra.weight"] = torch.zeros(2)
    changed["scale"] = changed["scale"].float()
    save_file(changed, tmp_path / "changed.safetensors")
    status, out, err = run("verify", "--manifest", receipt, tmp_path / "changed.safetensors")
    assert status == ExitStatus.CORRUPT
    lines = out.splitlines()
    assert lines[:2] == ["MISSING mask", "EXTRA extra.weight"]
    assert lines[2].startswith("DIFFERENT conv.bias: sha256 ")
    assert lines[3].startswith("DIFFERENT scale: dtype float32, manifest float64; sha256 ")
    assert len(lines) == 4
    assert err == f"weightscope: not as the manifest {receipt} says: 1 missing, 1 extra, 2 different (4 match)\n"


def test_a_damaged_tensor_is_listed_by_verify_and_fails_hash(tmp_path: Path) -> None:
    path = tmp_path / "a.safetensors"
    save_file(_weights(), path)
    receipt = tmp_path / "manifest.json"
    receipt.write_text(run("hash", "--json", path)[1])
    np.savez(tmp_path / "z.npz", **{name: t.numpy() for name, t in _weights().items()})
    data = bytearray((tmp_path / "z.npz").read_bytes())
    at = data.index(b"conv.weight.npy") + 300  # past the local header and the .npy header: a value's byte
    data[at] ^= 0xFF  # the member's CRC-32 no longer matches
    (tmp_path / "z.npz").write_bytes(bytes(data))
    status, out, err = run("verify", "--manifest", receipt, tmp_path / "z.npz")
    assert status == ExitStatus.CORRUPT
    assert any(line.startswith("DAMAGED ") and "conv.weight" in line for line in out.splitlines())
    status, out, err = run("hash", tmp_path / "z.npz")
    assert status == ExitStatus.CORRUPT and "conv.weight" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not a manifest: not JSON"),
        ("[]", 'not a manifest: no "kind"'),
        ('{"kind": "weightscope-manifest", "version": 9, "algorithm": "sha256"}', "manifest version 9"),
        (
            '{"kind": "weightscope-manifest", "version": 1, "algorithm": "sha256", "tensors": {"a": {"shape": 1}}}',
            'the manifest\'s entry for tensor "a"',
        ),
    ],
)
def test_a_file_that_is_no_manifest_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "a.safetensors"
    save_file({"a": torch.zeros(2)}, path)
    (tmp_path / "bad.json").write_text(text)
    status, out, err = run("verify", "--manifest", tmp_path / "bad.json", path)
    assert (status, out) == (ExitStatus.USAGE, "")
    assert message in err and err.count("\n") == 1


def test_hashing_streams_a_large_tensor_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.safetensors"
    big = torch.arange(12 << 20, dtype=torch.float32).reshape(3 << 10, 4 << 10)  # 48 MiB
    save_file({"big": big}, path)
    tracemalloc.start()
    try:
        with ws.open(path) as ckpt:
            found = manifest.tensor_digest(ckpt, "big")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found.sha256 == hashlib.sha256(big.numpy().tobytes()).hexdigest()
    assert peak < 4 << 20, peak  # views of the mapped file, hashed a chunk at a time: no copy of the tensor


def test_hash_text_output(tmp_path: Path) -> None:
    path = tmp_path / "a.safetensors"
    save_file({"b": torch.ones(2, 3), "a": torch.zeros(4, dtype=torch.float16)}, path)
    status, out, err = run("hash", path)
    document = _manifest(path)
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["name", "dtype", "shape", "sha256"]
    assert lines[2].split() == ["a", "float16", "[4]", document["tensors"]["a"]["sha256"]]
    assert lines[-1] == f"model sha256 {document['model_sha256']} (2 tensors)"


def test_a_remote_checkpoint_hashes_as_the_local_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_remote import serving

    save_file(_weights(), tmp_path / "model.safetensors")
    monkeypatch.setattr(manifest, "CHUNK_BYTES", 40)  # several range reads per tensor
    with serving(tmp_path) as root:
        remote = _manifest(f"{root}/model.safetensors")
    assert remote["tensors"] == _oracle(_weights())["tensors"]
    assert remote["model_sha256"] == _manifest(tmp_path / "model.safetensors")["model_sha256"]


def test_a_tensorflow_checkpoint_and_its_converted_copy_have_one_model_digest(
    tf_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """The object graph and save counter are bookkeeping: digested each, but no line of the model digest, so the
    digest is the one its safetensors copy (which ``convert`` writes without them) has."""
    source = tf_checkpoints["keras3_checkpoint"]
    copy = tmp_path / "copy.safetensors"
    assert run("convert", "--include-optimizer", source, copy)[0] == 0
    original, converted = _manifest(source), _manifest(copy)
    left_out = original["model_sha256_leaves_out"]
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" in left_out and set(left_out) <= set(original["tensors"])
    assert set(original["tensors"]) - set(left_out) == set(converted["tensors"])
    assert converted["model_sha256_leaves_out"] == []
    assert original["model_sha256"] == converted["model_sha256"]
    # the digest is the documented one, over the model's lines alone
    lines = [
        manifest.TensorDigest(name, entry["dtype"], tuple(entry["shape"]), entry["sha256"]).line()
        for name, entry in sorted(original["tensors"].items())
        if name not in left_out
    ]
    assert original["model_sha256"] == hashlib.sha256("".join(lines).encode()).hexdigest()
    status, text, _ = run("hash", source)
    model_tensors = len(original["tensors"]) - len(left_out)
    assert status == 0 and text.splitlines()[-1] == (
        f"model sha256 {original['model_sha256']} ({model_tensors} tensors; {len(left_out)} bookkeeping left out)"
    )
