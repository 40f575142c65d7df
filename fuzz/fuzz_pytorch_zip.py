"""Fuzz the PyTorch zip reader: the zip directory, local headers, members, byteorder, data.pkl."""

from __future__ import annotations

import io
from pathlib import Path

import fuzzlib
import numpy as np

with fuzzlib.instrumented():
    from weightscope.errors import WeightscopeError
    from weightscope.formats.pytorch import PyTorchCheckpoint


def torch_files(legacy: bool = False) -> list[bytes]:
    """Small real ``torch.save`` files: a state dict, a training checkpoint with Adam's state, every dtype."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    dtypes = [
        torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.int16, torch.int32,
        torch.int64, torch.uint8, torch.bool, torch.complex64,
    ]  # fmt: skip
    if not legacy:
        dtypes += [torch.uint16, torch.float8_e4m3fn, torch.float8_e5m2]
    every = {str(dtype).removeprefix("torch."): torch.arange(6).reshape(2, 3).to(dtype) for dtype in dtypes}
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    every.update(
        {"transposed": base.t(), "view": base[1:, 2:], "scalar": torch.tensor(1.5), "empty": torch.zeros(0, 2)}
    )
    objects = [
        model.state_dict(),
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": 3,
            "nested": [{"a": base}, (1, "x")],
        },
        every,
    ]
    files = []
    for saved in objects:
        buffer = io.BytesIO()
        torch.save(saved, buffer, _use_new_zipfile_serialization=not legacy)
        files.append(buffer.getvalue())
    return files


def seeds() -> list[bytes]:
    return torch_files()


def exercise_unverified(path: Path, reader: type[PyTorchCheckpoint] = PyTorchCheckpoint) -> None:
    """``fuzzlib.exercise`` without CRC checks, so that damaged members reach the pickle and the tensors."""
    try:
        with reader(path, verify=False) as ckpt:
            for name in ckpt:
                ckpt.info(name)
                ckpt.role(name)
                array = ckpt[name]
                if array.size:
                    np.asarray(array).reshape(-1)[[0, -1]]
            ckpt.layers()
            ckpt.metadata  # noqa: B018 - a property that parses
    except WeightscopeError:
        pass


def one_input(data: bytes) -> None:
    path = fuzzlib.scratch_file("input.pt", data)
    fuzzlib.exercise(path, "pytorch")
    exercise_unverified(path)


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
