"""Framework tensors on request: ``ws.open(path, framework="torch"|"jax")``, ``ws.load``, ``ws.save`` of tensors.

PyTorch's tensors are checked against ``safetensors.torch.load_file`` and ``torch.load``; JAX's against
``safetensors.flax.load_file``, in a process of their own (JAX starts its runtime and threads on import).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from conformance_makers import write_gguf

import weightscope as ws
from weightscope.frameworks import FrameworkCheckpoint

ROOT = Path(__file__).resolve().parent.parent


def _state() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(23)
    return {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=generator),
        "fc.weight": torch.randn(5, 7, generator=generator).to(torch.bfloat16),
        "fc.bias": torch.randn(5, generator=generator).to(torch.float16),
        "steps": torch.tensor(1234, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
        "scale": torch.tensor([0.5, -2.0]).to(torch.float8_e4m3fn),
    }


def _mapped_file(address: int) -> str:
    """The file mapped at ``address`` in this process, from /proc/self/maps ("" when anonymous memory)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(part, 16) for part in fields[0].split("-"))
        if start <= address < end:
            return fields[5] if len(fields) == 6 else ""
    raise AssertionError(f"{address:#x} is mapped nowhere")


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8)


def assert_same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """The same type, shape and bytes (float8 has no ``torch.equal``)."""
    assert isinstance(ours, torch.Tensor)
    assert (ours.dtype, ours.shape) == (theirs.dtype, theirs.shape)
    assert torch.equal(_bits(ours), _bits(theirs))


def test_load_equals_safetensors_load_file_and_shares_the_files_memory(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file(_state(), path)
    expected = safetensors.torch.load_file(path)
    loaded = ws.load(path, framework="torch")
    assert sorted(loaded) == sorted(expected)
    for name, tensor in expected.items():
        assert_same(loaded[name], tensor)
    with ws.open(path, framework="torch") as ckpt:
        assert isinstance(ckpt, FrameworkCheckpoint)
        tensor = ckpt["fc.weight"]
        storage = tensor.untyped_storage()
        # One copy-on-write map of the whole file, the tensor at its offset in it: no copy of the values.
        assert storage.nbytes() == path.stat().st_size
        assert tensor.data_ptr() == storage.data_ptr() + ckpt.extent("fc.weight").offset
        assert _mapped_file(tensor.data_ptr()) == str(path)
        assert ckpt["conv.weight"].untyped_storage().data_ptr() == storage.data_ptr()  # one map per file
        numpy_view = ckpt.checkpoint["fc.weight"]  # the numpy API is the wrapped checkpoint's
        assert numpy_view.dtype.name == "bfloat16" and not numpy_view.flags.writeable
        assert ckpt.info("fc.weight").shape == (5, 7) and ckpt.format == "safetensors"
        assert repr(ckpt).endswith(" as torch tensors")
    tensor[0, 0] = 99  # writable, privately: the file keeps its bytes, and the tensor outlives the checkpoint
    assert float(tensor[0, 0]) == 99
    assert torch.equal(safetensors.torch.load_file(path)["fc.weight"], expected["fc.weight"])


def test_views_equal_torch_load_with_their_strides(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "transposed": base.t(),
        "rows": base[1:3],
        "expanded": torch.arange(3.0).reshape(3, 1).expand(3, 5),
        "half": base.to(torch.bfloat16)[:, ::2],
    }
    path = tmp_path / "views.pt"
    torch.save(state, path)
    expected = torch.load(path, weights_only=True)
    with ws.open(path, framework="torch") as ckpt:
        for name, tensor in expected.items():
            ours = ckpt[name]
            assert torch.equal(ours, tensor), name
            assert ours.stride() == tensor.stride(), name
            assert _mapped_file(ours.data_ptr()) == str(path)


@pytest.mark.parametrize("kind", ["npy", "gguf", "tensorflow", "npz stored"])
def test_other_formats_plain_tensors_are_views_of_the_file_too(kind: str, tmp_path: Path) -> None:
    values = np.arange(24, dtype=np.float32).reshape(4, 6)
    if kind == "npy":
        np.save(path := tmp_path / "kernel.npy", values)
    elif kind == "gguf":
        path = write_gguf(tmp_path, {"kernel": values})[0][0]
    elif kind == "tensorflow":  # written as TensorFlow writes it (byte-identical: tests/test_tensorflow_writer.py)
        ws.save({"kernel": values}, path := tmp_path / "model.ckpt")
    else:
        np.savez(path := tmp_path / "model.npz", kernel=values)
    with ws.open(path, framework="torch") as ckpt:
        tensor = ckpt["kernel"]
        extent = ckpt.extent("kernel")
        assert torch.equal(tensor, torch.from_numpy(values))
    assert _mapped_file(tensor.data_ptr()) == extent.file
    assert tensor.data_ptr() == tensor.untyped_storage().data_ptr() + extent.offset


def test_decoded_big_endian_and_unaligned_tensors_are_copies_that_equal_the_oracle(tmp_path: Path) -> None:
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.savez_compressed(tmp_path / "deflated.npz", kernel=values)
    np.save(tmp_path / "big.npy", values.astype(">f4"))
    for path in (tmp_path / "deflated.npz", tmp_path / "big.npy"):
        tensor = next(iter(ws.load(path, framework="torch").values()))
        assert torch.equal(tensor, torch.from_numpy(values))
        assert _mapped_file(tensor.data_ptr()) != str(path)
    # A safetensors header of odd length puts float32 values at an odd offset: no view of them, a copy.
    odd = tmp_path / "odd.safetensors"
    header = json.dumps({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode() + b" "
    odd.write_bytes(len(header).to_bytes(8, "little") + header + np.array([1.5, -2.0], "<f4").tobytes())
    assert (8 + len(header)) % 4
    assert torch.equal(ws.load(odd, framework="torch")["x"], safetensors.torch.load_file(odd)["x"])


def test_save_takes_torch_tensors_and_round_trips_through_the_frameworks_readers(tmp_path: Path) -> None:
    state = _state()
    state["parameter"] = torch.nn.Parameter(torch.randn(3, 2))  # requires grad: detached, as safetensors does
    state["strided"] = torch.arange(20.0).reshape(4, 5).t()
    ws.save(state, tmp_path / "out.safetensors")
    for name, tensor in safetensors.torch.load_file(tmp_path / "out.safetensors").items():
        assert_same(tensor, state[name].detach())
    ws.save(state, tmp_path / "out.pt")
    for name, tensor in torch.load(tmp_path / "out.pt", weights_only=True).items():
        assert_same(tensor, state[name].detach())
    assert ws.load(tmp_path / "out.safetensors")["fc.weight"].dtype.name == "bfloat16"  # numpy: ml_dtypes'


def test_numpy_is_the_default_and_a_missing_or_unknown_framework_is_a_typed_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file({"x": torch.ones(2)}, path)
    with ws.open(path, framework="numpy") as ckpt:
        assert isinstance(ckpt, ws.Checkpoint) and isinstance(ckpt["x"], np.ndarray)
    with pytest.raises(ws.UsageError, match="framework must be one of 'numpy', 'torch', 'jax', not 'tf'"):
        ws.open(path, framework="tf")
    monkeypatch.setitem(sys.modules, "jax", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(ws.UnsupportedFormatError, match=r"framework='jax' needs jax.*: pip install jax"):
        ws.load(path, framework="jax")


def test_string_tensors_have_no_torch_type(tmp_path: Path) -> None:
    np.save(tmp_path / "words.npy", np.array(["a", "bc"]))
    with pytest.raises(
        ws.UnsupportedFormatError, match="tensor 'words' holds str64 values, which PyTorch has no type for"
    ):
        ws.load(tmp_path / "words.npy", framework="torch")


def test_weightscope_imports_no_framework_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file({"x": torch.ones(2, dtype=torch.bfloat16)}, path)
    script = (
        "import sys, weightscope as ws\n"
        f"arrays = ws.load({str(path)!r})\n"
        f"ws.save(arrays, {str(tmp_path / 'copy.safetensors')!r})\n"
        "print(sorted(name for name in ('torch', 'jax', 'tensorflow') if name in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "[]"


JAX_SCRIPT = """
import json, sys
import jax, jax.numpy as jnp, ml_dtypes, numpy as np
import safetensors.flax
import weightscope as ws

path, out = sys.argv[1], sys.argv[2]
expected = safetensors.flax.load_file(path)
loaded = ws.load(path, framework="jax")
with ws.open(path, framework="jax") as ckpt:
    one = ckpt["fc.weight"]
report = {
    "names": sorted(loaded) == sorted(expected),
    "types": all(isinstance(array, jax.Array) for array in loaded.values()) and isinstance(one, jax.Array),
    "same": {
        name: (str(loaded[name].dtype), list(loaded[name].shape)) == (str(array.dtype), list(array.shape))
        and np.asarray(loaded[name]).tobytes() == np.asarray(array).tobytes()
        for name, array in expected.items()
    },
    "bfloat16": str(loaded["fc.weight"].dtype),
}
state = {"w": jnp.arange(6, dtype=jnp.bfloat16).reshape(2, 3), "b": jnp.ones(3, jnp.float32)}
ws.save(state, out)
back = safetensors.flax.load_file(out)
report["saved"] = all(
    back[name].dtype == array.dtype and np.asarray(back[name]).tobytes() == np.asarray(array).tobytes()
    for name, array in state.items()
)
print(json.dumps(report))
"""


def test_jax_arrays_equal_safetensors_flax(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    state = {name: tensor for name, tensor in _state().items() if name != "scale"}
    safetensors.torch.save_file(state, path)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-c", JAX_SCRIPT, str(path), str(tmp_path / "jax.safetensors")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report == {
        "names": True,
        "types": True,
        "same": dict.fromkeys(state, True),
        "bfloat16": "bfloat16",
        "saved": True,
    }
