"""Fuzz the TorchScript reader: the zip, data.pkl's module records, constants.pkl, code/'s declarations, scan."""

from __future__ import annotations

import contextlib
import io
import warnings

import fuzzlib
from fuzz_pytorch_zip import exercise_unverified

with fuzzlib.instrumented():
    from weightscope.errors import WeightscopeError
    from weightscope.formats.torchscript import TorchScriptCheckpoint, declarations, scan
    from weightscope.limits import Budget, Limits


def seeds() -> list[bytes]:
    """Real ``torch.jit.save`` archives: a scripted model (nested modules, BatchNorm's buffers, a tied weight, a
    transposed view, several dtypes), a traced one (tensor constants) and a frozen one (its weights as constants)."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 4, bias=False))
    model[2].weight = torch.nn.Parameter(torch.randn(4, 4))
    model.register_buffer("transposed", torch.randn(3, 5).t())
    model.register_buffer("halves", torch.randn(3).to(torch.float16))
    model.register_buffer("brains", torch.randn(3).to(torch.bfloat16))
    model.register_buffer("small", torch.arange(-3, 3, dtype=torch.int8))
    files = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated
        modules = [
            torch.jit.script(model),
            torch.jit.trace(model.eval(), torch.randn(2, 3)),
            torch.jit.freeze(torch.jit.script(model.eval())),
        ]
        for module in modules:
            buffer = io.BytesIO()
            torch.jit.save(module, buffer)
            files.append(buffer.getvalue())
    return files


def one_input(data: bytes) -> None:
    path = fuzzlib.scratch_file("input-torchscript.pt", data)
    fuzzlib.exercise(path, "torchscript")
    exercise_unverified(path, TorchScriptCheckpoint)
    scan(path)
    budget = Budget(Limits.for_size(len(data)), path)
    with contextlib.suppress(WeightscopeError):  # refused past the budget: a flood of declarations
        declarations("__torch__.fuzzed", data.decode("utf-8", "replace"), budget.spend)  # code/'s text, any text


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
