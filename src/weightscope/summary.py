"""The network a checkpoint's weights describe, read from their names and shapes alone.

``summarize(ckpt)`` gives one row per layer (in the order ``Checkpoint.layers()`` gives
them: the order in which the checkpoint first names each layer), with the kind of layer
its parameters' roles and shapes show, and its values by what they are: parameters (the
learned ones: PyTorch's ``parameters()``, Keras' trainable weights), buffers (a BatchNorm's
running mean and variance: PyTorch's buffers, Keras' non-trainable weights, so Keras'
``count_params()`` is parameters + buffers), and the optimizer-state values attached to the
layer's variables. Every count is of values (elements), not tensors. Below them, totals of
every value in the checkpoint, counted as TensorFlow counts (the elements of every tensor but
the string ones, such as ``_CHECKPOINTABLE_OBJECT_GRAPH``; PyTorch's ``num_batches_tracked``
is bookkeeping), and bytes by dtype.

Kinds are named only where roles, names and shapes agree; anything else is ``?`` with
its roles and shapes:

- ``Dense 2 → 5``: a TensorFlow ``kernel`` [in, out] or a PyTorch ``weight`` [out, in]
  (which layout a name means is ``weightscope.convert``'s decision, shared with
  ``convert --layout``), with at most a bias [out].
- ``Conv2D 3×3 3 → 16``: a TensorFlow kernel [..spatial, in, out] or a PyTorch weight
  [out, in, ..spatial], of rank 3, 4 or 5 (Conv1D, Conv2D, Conv3D). A PyTorch weight
  holds in/groups input channels; groups are not in the weights. ``Conv2DTranspose``
  where the layer's name says "transpose" (a transposed convolution whose name does
  not say so reads as a convolution with in and out swapped); ``DepthwiseConv2D``
  for a ``depthwise_kernel`` or a Keras 3 kernel in a layer named "depthwise...";
  ``SeparableConv2D`` for a depthwise and a pointwise kernel.
- ``BatchNorm 16``: running mean and variance (and perhaps scale and offset).
- ``LayerNorm 768``: a 1-D scale (TensorFlow ``gamma``, or a PyTorch 1-D ``weight``
  with a bias of the same size), perhaps an offset, no running statistics;
  ``GroupNorm``, ``InstanceNorm``, ``RMSNorm`` or ``BatchNorm`` where the layer's
  name says so. A PyTorch 1-D weight without a bias (a PReLU's looks the same) is a
  norm only where the name says "norm".
- ``Embedding 30522 × 768``: a TensorFlow ``embeddings`` (or tensors named
  ``*_embeddings``), or a PyTorch 2-D weight, without a bias, in a layer whose own name
  (its last component) contains "embed" (or llama.cpp's "embd"). (GPT-2's ``wte.weight``,
  whose name does not say so, reads as a Dense layer without a bias.)
- ``LM head 640 → 262144``: a top-level ``output.weight`` or ``lm_head.weight`` [vocabulary,
  hidden] without a bias (llama.cpp's GGUF, Meta's Llama checkpoints).
- ``Block: 4 attention, 3 feed-forward, 2 other tensors``: a GGUF transformer block
  (``blk.N``), its tensors by llama.cpp's names (``attn_*``, ``ffn_*``, norms).

``--json`` (``Summary.to_json()``) gives this document; its keys are stable::

    {
      "layers": [
        {
          "name": str,             # as Checkpoint.layers() names it
          "kind": str,             # Dense, Conv1D/2D/3D, Conv2DTranspose..., DepthwiseConv2D,
                                   # SeparableConv2D, BatchNorm, LayerNorm, GroupNorm,
                                   # InstanceNorm, RMSNorm, Embedding, LMHead, Block, or "?"
          "description": str,      # "Dense 2 → 5", "? weight [2, 5, 3]", ...
          "parameters": int,       # values of the layer's learned parameters
          "buffers": int,          # values of its running mean and variance
          "optimizer_state": int,  # values of optimizer slots attached to its variables
          "roles": {role: [int, ...]}  # each parameter's shape, by role
        }, ...
      ],
      "totals": {
        "layers": int,
        "parameters": int,        # learned values (Keras: trainable)
        "buffers": int,           # running statistics (Keras: non-trainable)
        "optimizer_slots": int,   # values of per-variable optimizer state (Adam's m and v, ...)
        "optimizer_other": int,   # optimizer values attached to no variable (beta1_power, iteration, ...,
                                  # or PyTorch state.N.* whose variable the file does not say)
        "bookkeeping": int,       # global_step, save_counter, num_batches_tracked, ...
        "in_all": int,            # every value: the sum of the five above
        "string_tensors": int     # tensors of strings, not counted anywhere
      },
      "optimizer_other": [str, ...],   # the names of the tensors counted in optimizer_other
      "bytes_by_dtype": {dtype: int}   # bytes in the files, by element type, largest first
    }
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from weightscope.checkpoint import Checkpoint, TensorInfo
from weightscope.convert import _EMBEDDING, _layout
from weightscope.layers import BUFFER_ROLES, Layer, split_name

_NORM_NAMES = (("group", "GroupNorm"), ("instance", "InstanceNorm"), ("rms", "RMSNorm"), ("batch", "BatchNorm"))


@dataclass(frozen=True)
class LayerSummary:
    """One row: a layer, what it looks like, and how many values it holds."""

    name: str
    kind: str
    description: str
    parameters: int
    buffers: int
    optimizer_state: int
    roles: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "parameters": self.parameters,
            "buffers": self.buffers,
            "optimizer_state": self.optimizer_state,
            "roles": {role: list(shape) for role, shape in self.roles.items()},
        }


@dataclass(frozen=True)
class Summary:
    """The layers, and every value of the checkpoint counted by what it is for."""

    layers: list[LayerSummary]
    parameters: int
    buffers: int
    optimizer_slots: int
    optimizer_other: int
    bookkeeping: int
    string_tensors: int
    optimizer_other_names: list[str]
    bytes_by_dtype: dict[str, int]

    @property
    def in_all(self) -> int:
        return self.parameters + self.buffers + self.optimizer_slots + self.optimizer_other + self.bookkeeping

    def to_json(self) -> dict[str, Any]:
        return {
            "layers": [layer.to_json() for layer in self.layers],
            "totals": {
                "layers": len(self.layers),
                "parameters": self.parameters,
                "buffers": self.buffers,
                "optimizer_slots": self.optimizer_slots,
                "optimizer_other": self.optimizer_other,
                "bookkeeping": self.bookkeeping,
                "in_all": self.in_all,
                "string_tensors": self.string_tensors,
            },
            "optimizer_other": list(self.optimizer_other_names),
            "bytes_by_dtype": dict(self.bytes_by_dtype),
        }


def values(info: TensorInfo) -> int:
    """The values a tensor holds, as TensorFlow counts them: none in a string tensor."""
    return 0 if info.type_name == "string" else info.size


def summarize(ckpt: Checkpoint) -> Summary:
    """The network ``ckpt``'s weights describe, and every value it holds counted by kind."""
    layers = [_summarize_layer(layer) for layer in ckpt.layers().values()]
    counts = {"parameters": 0, "buffers": 0, "optimizer_slots": 0, "optimizer_other": 0, "bookkeeping": 0}
    other_names: list[str] = []
    strings = 0
    by_dtype: dict[str, int] = {}
    for info in ckpt.infos():
        by_dtype[info.type_name] = by_dtype.get(info.type_name, 0) + info.nbytes
        if info.type_name == "string":
            strings += 1
            continue
        role = ckpt.role(info.name)
        if role.kind == "parameter":
            counts["buffers" if role.buffer else "parameters"] += info.size
        elif role.kind == "optimizer" and role.owner is not None:
            counts["optimizer_slots"] += info.size
        elif role.kind == "optimizer":
            counts["optimizer_other"] += info.size
            other_names.append(info.name)
        else:
            counts["bookkeeping"] += info.size
    bytes_by_dtype = dict(sorted(by_dtype.items(), key=lambda item: (-item[1], item[0])))
    return Summary(
        layers=layers,
        string_tensors=strings,
        optimizer_other_names=other_names,
        bytes_by_dtype=bytes_by_dtype,
        **counts,
    )


def _summarize_layer(layer: Layer) -> LayerSummary:
    buffers = sum(values(info) for role, info in layer.parameters.items() if role in BUFFER_ROLES)
    state = sum(values(info) for slots in layer.optimizer_state.values() for info in slots.values())
    kind, description = describe(layer)
    return LayerSummary(
        name=layer.name,
        kind=kind,
        description=description,
        parameters=sum(values(info) for info in layer.parameters.values()) - buffers,
        buffers=buffers,
        optimizer_state=state,
        roles={role: info.shape for role, info in layer.parameters.items()},
    )


def describe(layer: Layer) -> tuple[str, str]:
    """(kind, description) of a layer from its parameters' roles, names and shapes; ``?`` where in doubt."""
    found = _norm(layer) or _embedding(layer) or _separable(layer) or _block(layer) or _lm_head(layer)
    found = found or _dense_or_convolution(layer)
    if found is not None:
        return found
    roles = ", ".join(f"{role} [{', '.join(map(str, info.shape))}]" for role, info in layer.parameters.items())
    return "?", f"? {roles}"


def _last(info: TensorInfo) -> str:
    return split_name(info.name)[1]


def _layer_word(layer: Layer) -> str:
    """The layer's own name (its last component), lowercased, for the hints names give."""
    info = next(iter(layer.parameters.values()))
    return split_name(split_name(info.name)[0])[1].lower() or layer.name.lower()


def _vector(info: TensorInfo | None, size: int) -> bool:
    return info is None or info.shape == (size,)


def _norm(layer: Layer) -> tuple[str, str] | None:
    """BatchNorm (running statistics), else a 1-D scale and perhaps offset: LayerNorm or what the name says."""
    parameters = dict(layer.parameters)
    weight = parameters.get("weight")
    if weight is not None and _last(weight) == "weight" and len(weight.shape) == 1:
        # PyTorch calls a norm's scale and offset weight and bias.
        parameters["scale"] = parameters.pop("weight")
        if "bias" in parameters:
            parameters["offset"] = parameters.pop("bias")
        elif not parameters.keys() & BUFFER_ROLES and "norm" not in _layer_word(layer):
            return None  # a lone 1-D weight: a PReLU's looks the same
    if not parameters.keys() <= {"scale", "offset", *BUFFER_ROLES}:
        return None
    anchor = parameters.get("running_mean", parameters.get("scale"))
    if anchor is None or len(anchor.shape) != 1:
        return None
    size = anchor.shape[0]
    if not all(_vector(info, size) for info in parameters.values()):
        return None
    if parameters.keys() & BUFFER_ROLES:
        if not parameters.keys() >= BUFFER_ROLES:
            return None
        kind = "BatchNorm"
    else:
        word = _layer_word(layer)
        kind = next((named for hint, named in _NORM_NAMES if hint in word), "LayerNorm")
    return kind, f"{kind} {size}"


def _embedding(layer: Layer) -> tuple[str, str] | None:
    """A TensorFlow ``embeddings`` (or ``*_embeddings`` tables), or a PyTorch 2-D weight in an "embed" layer."""
    infos = list(layer.parameters.values())
    if not infos or any(len(info.shape) != 2 for info in infos):
        return None
    pytorch = len(infos) == 1 and _last(infos[0]) == "weight" and _EMBEDDING.search(_layer_word(layer))
    if not pytorch and not all(_last(info).endswith("embeddings") for info in infos):
        return None
    if len(infos) == 1:
        rows, columns = infos[0].shape
        return "Embedding", f"Embedding {rows} × {columns}"
    tables = ", ".join(f"{_last(info)} {info.shape[0]} × {info.shape[1]}" for info in infos)
    return "Embedding", f"Embedding {tables}"


def _block(layer: Layer) -> tuple[str, str] | None:
    """A transformer block as llama.cpp's GGUF groups it (``blk.N``): attention, feed-forward and norm tensors."""
    roles = list(layer.parameters)
    attention = [role for role in roles if role.startswith("attn_") and not role.endswith("norm")]
    feed_forward = [role for role in roles if role.startswith("ffn_") and not role.endswith("norm")]
    if not attention or not feed_forward:
        return None
    norms = len(roles) - len(attention) - len(feed_forward)
    parts = f"{len(attention)} attention, {len(feed_forward)} feed-forward, {norms} other tensors"
    return "Block", f"Block: {parts}"


def _lm_head(layer: Layer) -> tuple[str, str] | None:
    """A language model's output projection: a top-level ``output`` (llama.cpp, Meta's Llama) or ``lm_head``
    PyTorch-style weight [vocabulary, hidden], no bias."""
    weight = layer.parameters.get("weight")
    if weight is None or len(layer.parameters) != 1 or weight.name not in ("output.weight", "lm_head.weight"):
        return None
    if len(weight.shape) != 2 or weight.shape[0] <= weight.shape[1]:
        return None  # a vocabulary outnumbers the hidden size; a classifier's few classes do not
    vocabulary, hidden = weight.shape
    return "LMHead", f"LM head {hidden} → {vocabulary}"


def _separable(layer: Layer) -> tuple[str, str] | None:
    """A TensorFlow SeparableConv: depthwise [..spatial, in, multiplier], pointwise [1.., in × multiplier, out]."""
    depthwise, pointwise = layer.parameters.get("depthwise_kernel"), layer.parameters.get("pointwise_kernel")
    if (
        depthwise is None
        or pointwise is None
        or not layer.parameters.keys()
        <= {
            "depthwise_kernel",
            "pointwise_kernel",
            "bias",
        }
    ):
        return None
    rank = len(depthwise.shape)
    if rank not in (3, 4) or len(pointwise.shape) != rank:
        return None
    *spatial, channels, multiplier = depthwise.shape
    *ones, middle, out = pointwise.shape
    if any(size != 1 for size in ones) or middle != channels * multiplier or not _vector(layer.bias, out):
        return None
    kind = f"SeparableConv{rank - 2}D"
    return kind, f"{kind} {_window(spatial)} {channels} → {out}"


def _window(spatial: list[int] | tuple[int, ...]) -> str:
    return "×".join(str(size) for size in spatial)


def _dense_or_convolution(layer: Layer) -> tuple[str, str] | None:
    """A weight whose layout ``weightscope.convert`` can decide, and at most a bias [out]."""
    weights = [info for role, info in layer.parameters.items() if role in ("weight", "depthwise_kernel")]
    if len(weights) != 1 or not layer.parameters.keys() <= {"weight", "depthwise_kernel", "bias"}:
        return None
    (weight,) = weights
    rank = len(weight.shape)
    if rank not in (2, 3, 4, 5):
        return None
    to_pytorch = _layout(weight.name, weight.shape, "pytorch")
    to_tensorflow = _layout(weight.name, weight.shape, "tensorflow")
    transposed = "transpose" in _layer_word(layer)
    if isinstance(to_pytorch, tuple) and to_pytorch[0] is not None:  # a TensorFlow kernel
        *spatial, inputs, outputs = weight.shape
        if to_pytorch[2].startswith("depthwise"):
            kind = f"DepthwiseConv{rank - 2}D"
            outputs = inputs * outputs  # [..spatial, in, multiplier]
            return _checked(layer, outputs, kind, f"{kind} {_window(spatial)} {inputs} → {outputs}")
        if transposed and rank > 2:
            inputs, outputs = outputs, inputs  # [..spatial, out, in]
    elif isinstance(to_tensorflow, tuple) and to_tensorflow[0] is not None:  # a PyTorch weight
        outputs, inputs, *spatial = weight.shape
        if transposed and rank > 2:
            inputs, outputs = outputs, inputs  # [in, out / groups, ..spatial]
    else:
        return None
    if rank == 2:
        return _checked(layer, outputs, "Dense", f"Dense {inputs} → {outputs}")
    kind = f"Conv{rank - 2}D" + ("Transpose" if transposed else "")
    return _checked(layer, outputs, kind, f"{kind} {_window(spatial)} {inputs} → {outputs}")


def _checked(layer: Layer, outputs: int, kind: str, description: str) -> tuple[str, str] | None:
    """The guess, where the bias (if any) has one value per output."""
    return (kind, description) if _vector(layer.bias, outputs) else None
