"""Small torch modules for the TorchScript tests (tests/test_torchscript.py): ``torch.jit.script`` reads its
modules' source, so they live in a file. Every weight is random from a seed; nothing here is read by weightscope."""

from __future__ import annotations

import warnings

import torch
from torch import nn


class Box:
    """A scripted class (not a module): its tensor is no parameter or buffer."""

    def __init__(self, value: torch.Tensor) -> None:
        self.value = value


with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # torch.jit.script is deprecated
    torch.jit.script(Box)  # compiles it: a scripted module holding a Box then pickles it as __torch__...Box


class Block(nn.Module):
    """A linear layer and a BatchNorm (parameters, running statistics, a counter)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.bn = nn.BatchNorm1d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.fc(x))


class Net(nn.Module):
    """Nested submodules, a shared (tied) parameter, buffers that are views of one storage (transposed, sliced),
    float16, bfloat16 and int8 buffers, and a tensor constant in ``forward``."""

    def __init__(self, width: int = 4, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.layers = nn.ModuleList([Block(width), Block(width)])
        self.head = nn.Linear(width, 3, bias=False)
        self.tied = nn.Linear(width, 3, bias=False)
        self.tied.weight = self.head.weight
        grid = torch.randn(5, 6)
        self.register_buffer("transposed", grid.t())  # strides (1, 6)
        self.register_buffer("window", grid[1:4, 2:5])  # offset 8, strides (6, 1): the same storage
        self.register_buffer("halves", torch.randn(3).half())
        self.register_buffer("brains", torch.randn(2, 2).bfloat16())
        self.register_buffer("small", torch.arange(-4, 4, dtype=torch.int8))
        # Each of the two blocks has trained a little: running statistics that are not the defaults.
        for block in self.layers:
            block.bn.running_mean.normal_()
            block.bn.running_var.uniform_(0.5, 2.0)
            block.bn.num_batches_tracked.fill_(7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x) + self.tied(x) + torch.tensor([0.5, 1.5, 2.5])


class Attributes(nn.Module):
    """Tensors that are no parameter or buffer: a plain attribute, in a list, in a dict, in a tuple, in a
    scripted class's object; and attributes that are no tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.plain = torch.arange(4)
        self.listed = [torch.ones(1), torch.full((2,), 3.0)]
        self.named = {"a": torch.zeros(2), "b": torch.ones(3)}
        self.paired = (1, torch.full((2,), 5.0))
        self.box = Box(torch.full((2,), 7.0))
        self.counts = [1, 2, 3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + self.plain.float().sum() + self.box.value.sum() + len(self.counts)


class Traced(nn.Module):
    """Traced, its literals become the archive's constants."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.fc = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * torch.tensor([2.0, 3.0]) + torch.tensor([1, 2], dtype=torch.float16).float()
