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
  (which layout a name means is ``weightscope.conventions``' decision, shared with
  ``convert --layout``; the kinds are told there, by ``describe``), with at most a bias [out].
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
      "bytes_by_dtype": {dtype: int},  # bytes in the files, by element type, largest first: the memory
                                       # loading the weights as stored takes (weights only)
      "values_by_dtype": {dtype: int}, # every stored tensor's values by element type, as the Hugging Face
                                       # Hub counts a repository's parameters (a tied tensor stored once)
      "model": {fact: str}             # what the checkpoint says of the model, where it does (a model
                                       # folder's config.json, a GGUF's general.* keys): architecture,
                                       # model_type, hidden_size, layers, heads, dtype, tied_embeddings,
                                       # auto_map (custom code named, never run); {} where it says nothing
      "sharding": {"ranks": int, "chunks_per_tensor": {str: int}, "bytes_per_file": {file: int}} | None
                                       # how ranks saved it (a DCP folder); None for a checkpoint saved whole
      "size_breakdown": {...}          # only for a program (an ExecuTorch .pte): where its bytes go, by tensor
                                       # (with the operators taking it), by operator, by delegate: see
                                       # ExecuTorchCheckpoint.size_breakdown
    }
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from weightscope.checkpoint import Checkpoint, TensorInfo
from weightscope.conventions import BUFFER_ROLES, describe
from weightscope.layers import Layer
from weightscope.notebook import summary_html


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
    values_by_dtype: dict[str, int] = field(default_factory=dict)
    model: dict[str, str] = field(default_factory=dict)
    sharding: dict[str, Any] | None = None  # ``Checkpoint.sharding()``: ranks, chunks per tensor, bytes per file
    size_breakdown: dict[str, Any] | None = None  # ``Checkpoint.size_breakdown()``: a program's bytes by operator
    _repr_html_ = summary_html

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
            "values_by_dtype": dict(self.values_by_dtype),
            "model": dict(self.model),
            "sharding": self.sharding,
            **({"size_breakdown": self.size_breakdown} if self.size_breakdown is not None else {}),
        }


def values(info: TensorInfo) -> int:
    """The values a tensor holds, as TensorFlow counts them: none in a string tensor."""
    return 0 if info.type_name == "string" else info.size


def summarize(ckpt: Checkpoint) -> Summary:
    """The network ``ckpt``'s weights describe, and every value it holds counted by kind."""
    layers = [_summarize_layer(layer, ckpt.layer_kind(layer)) for layer in ckpt.layers().values()]
    counts = {"parameters": 0, "buffers": 0, "optimizer_slots": 0, "optimizer_other": 0, "bookkeeping": 0}
    other_names: list[str] = []
    strings = 0
    by_dtype: dict[str, int] = {}
    values_by_dtype: dict[str, int] = {}
    for info in ckpt.infos():
        by_dtype[info.type_name] = by_dtype.get(info.type_name, 0) + info.nbytes
        values_by_dtype[info.type_name] = values_by_dtype.get(info.type_name, 0) + values(info)
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
        values_by_dtype={dtype: values_by_dtype[dtype] for dtype in bytes_by_dtype if values_by_dtype[dtype]},
        model=model_facts(ckpt.metadata),
        sharding=ckpt.sharding(),
        size_breakdown=ckpt.size_breakdown(),
        **counts,
    )


# Each fact of ``Summary.model``: the metadata keys that state it, first found wins: a model folder's
# ``config.<key>`` (the names differ by family: GPT-2's n_embd, T5's d_model), GGUF's ``<architecture>.<key>``.
_MODEL_FACTS = {
    "architecture": ("config.architectures", "general.architecture"),
    "model_type": ("config.model_type",),
    "hidden_size": ("config.hidden_size", "config.n_embd", "config.d_model", "{arch}.embedding_length"),
    "layers": ("config.num_hidden_layers", "config.n_layer", "config.num_layers", "{arch}.block_count"),
    "heads": ("config.num_attention_heads", "config.n_head", "config.num_heads", "{arch}.attention.head_count"),
    "dtype": ("config.dtype", "config.torch_dtype"),
    "tied_embeddings": ("config.tie_word_embeddings",),
    "auto_map": ("config.auto_map",),
    "sharding": ("sharding",),  # a training checkpoint's ranks (DeepSpeed ZeRO's stage, world size, dtypes)
}


def model_facts(metadata: Mapping[str, str]) -> dict[str, str]:
    """What ``metadata`` says of the model (``Summary.model``): its architecture, sizes and dtype."""
    arch = metadata.get("general.architecture", "")
    facts = {}
    for fact, keys in _MODEL_FACTS.items():
        found = next((metadata[key.format(arch=arch)] for key in keys if key.format(arch=arch) in metadata), None)
        if found is not None:
            facts[fact] = found.strip('"')
    return facts


def _summarize_layer(layer: Layer, recorded: tuple[str, str] | None) -> LayerSummary:
    """``layer``'s counts and kind: ``recorded`` by the format, else told from its parameters."""
    buffers = sum(values(info) for role, info in layer.parameters.items() if role in BUFFER_ROLES)
    state = sum(values(info) for slots in layer.optimizer_state.values() for info in slots.values())
    kind, description = recorded or describe(layer)
    return LayerSummary(
        name=layer.name,
        kind=kind,
        description=description,
        parameters=sum(values(info) for info in layer.parameters.values()) - buffers,
        buffers=buffers,
        optimizer_state=state,
        roles={role: info.shape for role, info in layer.parameters.items()},
    )
