"""Framework conventions, in one place: layouts, names, and what a layer is from its tensors.

The frameworks store the same weights differently, and every part of weightscope that
moves, compares, shows or writes them asks this module how:

- **layouts**: TensorFlow and Keras keep a dense kernel as [in, out] and a convolution's as
  [..spatial, in, out] (a transposed one [..spatial, out, in], a depthwise one [..spatial,
  in, multiplier]); PyTorch keeps [out, in] and [out, in, ..spatial] (a depthwise one as a
  grouped convolution's [in * multiplier, 1, ..spatial]). ``LAYOUT_PERMUTATIONS`` and
  ``layout`` move between them; ``channel_order`` lays a kernel out as PyTorch does.
- **names**: a tensor's last name component says its role (``PARAMETER_ROLES``: TensorFlow's
  ``kernel``, PyTorch's ``weight``, Keras 2's ``kernel:0``, TF2's object paths, GGUF's
  ``weight``); ``rename`` maps TensorFlow <-> PyTorch names, BatchNorm's four tensors
  (``gamma``/``weight``, ``beta``/``bias``, ``moving_mean``/``running_mean``,
  ``moving_variance``/``running_var``) included; ``KERAS_LAYER_WEIGHTS`` gives Keras 3's
  variable names per layer class as Keras saves them (what its reader names), and
  ``KERAS_LAYER_VARIABLES`` the classes its writer places with the names each variable may
  be given by; ``gguf_block_parameter`` reads llama.cpp's ``blk.<N>.<tensor>`` names.
- **layer kinds**: ``describe`` tells a layer's kind (Dense, Conv2D, BatchNorm, Embedding,
  a GGUF transformer block, ...) from its parameters' roles, names and shapes;
  ``keras_layer_class`` the Keras 3 class a writer gives a layer.

It imports no checkpoint or format module (they import it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from weightscope.errors import UsageError

if TYPE_CHECKING:
    from weightscope.checkpoint import TensorInfo
    from weightscope.layers import Layer

TF2_ATTRIBUTE = "/.ATTRIBUTES/VARIABLE_VALUE"


# -- names -------------------------------------------------------------------------------------

# The last component of a parameter's name -> its role in the layer.
PARAMETER_ROLES: Mapping[str, str] = {
    "kernel": "weight",
    "_kernel": "weight",  # Keras 3's attribute, in object paths
    "weight": "weight",
    "weights": "weight",
    "w": "weight",
    "embeddings": "weight",
    "bias": "bias",
    "biases": "bias",
    "b": "bias",
    "gamma": "scale",
    "beta": "offset",
    "moving_mean": "running_mean",
    "running_mean": "running_mean",
    "moving_variance": "running_var",
    "running_var": "running_var",
}

# Roles that are buffers, not parameters: running statistics, updated by the forward pass rather than
# learned (PyTorch's buffers(), not parameters(); Keras' non-trainable weights). PyTorch's third
# BatchNorm buffer, num_batches_tracked, is a counter: bookkeeping.
BUFFER_ROLES = frozenset({"running_mean", "running_var"})

# The frameworks' conventions ``convert`` takes tensors to (``--layout``, ``--names``), or keeps the file's.
CONVENTIONS = ("keep", "pytorch", "tensorflow")

# What each framework calls a role, to explain a miss ("TensorFlow calls it kernel").
FRAMEWORK_NAMES: Mapping[str, str] = {
    "kernel": "TensorFlow and Keras",
    "weight": "PyTorch",
    "gamma": "TensorFlow and Keras",
    "beta": "TensorFlow and Keras",
    "moving_mean": "TensorFlow and Keras",
    "moving_variance": "TensorFlow and Keras",
    "running_mean": "PyTorch",
    "running_var": "PyTorch",
}


def split_name(name: str) -> tuple[str, str]:
    """(parent path, last component): ``/`` separates TF names, ``.`` PyTorch ones."""
    base = name.removesuffix(TF2_ATTRIBUTE)
    base = base[:-2] if base.endswith(":0") else base
    separator = "/" if "/" in base else "."
    parent, _, last = base.rpartition(separator)
    return parent, last


TF_TO_PYTORCH = {
    "kernel": "weight",
    "embeddings": "weight",
    "embedding": "weight",  # Flax's Embed
    "scale": "weight",  # Flax's norms (and Keras 3's RMSNormalization)
    "depthwise_kernel": "weight",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
PYTORCH_TO_TF_NORM = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
}


def rename(name: str, target: str, norm_layers: set[str]) -> str:
    """``layer1/kernel`` <-> ``layer1.weight``; normalisation layers' four tensors mapped too."""
    parent, last = split_name(name)
    if target == "pytorch":
        last = TF_TO_PYTORCH.get(last, last)
        return f"{parent.replace('/', '.')}.{last}" if parent else last
    if parent in norm_layers:
        last = PYTORCH_TO_TF_NORM.get(last, last)
    elif last == "weight":
        last = "embeddings" if EMBEDDING.search(parent) else "kernel"
    return f"{parent.replace('.', '/')}/{last}" if parent else last


def norm_layers(names: Iterable[str], shape_of: Callable[[str], tuple[int, ...]]) -> set[str]:
    """Layers (as name parents) whose ``weight`` is a normalisation's scale: a 1-D weight, or running stats."""
    layers = set()
    for name in names:
        parent, last = split_name(name)
        if last in ("running_mean", "running_var") or (last == "weight" and len(shape_of(name)) == 1):
            layers.add(parent)
    return layers


# llama.cpp names a transformer block's tensors ``blk.<N>.<tensor>.weight`` (gguf-py's
# ``TENSOR_NAMES``: ``attn_q``, ``ffn_up``, ``attn_norm``, ...): one layer, ``blk.<N>``, in
# which each tensor plays the part its name gives (``attn_q``; a bias ``attn_q.bias``).
GGUF_BLOCK_TENSOR = re.compile(r"blk\.(\d+)\.(.+)")


def gguf_block_parameter(name: str) -> tuple[str, str] | None:
    """(layer, role) of a GGUF block tensor: ``blk.3.attn_q.weight`` is ``attn_q`` of ``blk.3``; else None."""
    match = GGUF_BLOCK_TENSOR.fullmatch(name)
    if match is None:
        return None
    return f"blk.{match[1]}", match[2].removesuffix(".weight")


# -- layouts ---------------------------------------------------------------------------------

# The permutation of a TensorFlow weight's axes that gives PyTorch's layout, by rank:
# dense [in, out] -> [out, in]; convolution [..spatial, in, out] -> [out, in, ..spatial]
# (a transposed convolution's [..spatial, out, in] -> [in, out, ..spatial] is the same move).
_TO_PYTORCH = {2: (1, 0), 3: (2, 1, 0), 4: (3, 2, 0, 1), 5: (4, 3, 0, 1, 2)}
_TO_TENSORFLOW = {rank: tuple(int(axis) for axis in np.argsort(order)) for rank, order in _TO_PYTORCH.items()}
LAYOUT_PERMUTATIONS = {rank: (_TO_PYTORCH[rank], _TO_TENSORFLOW[rank]) for rank in _TO_PYTORCH}
_KIND = {2: "dense", 3: "convolution 1D", 4: "convolution 2D", 5: "convolution 3D"}
TF_KERNELS = ("kernel", "pointwise_kernel")  # a SeparableConv's pointwise part is a 1×1 convolution
EMBEDDING = re.compile("embe?d", re.IGNORECASE)  # llama.cpp's token_embd too
# transformers' Conv1D (GPT-2's, and the models built on it) keeps a Linear's weight transposed, (in, out); its
# modules, by model type (config.json's) and name.
CONV1D_MODELS = frozenset({"gpt2", "imagegpt", "decision_transformer", "openai-gpt"})
CONV1D_WEIGHT = re.compile(r"(?:^|\.)(?:c_attn|q_attn|c_proj|c_fc)\.weight$")


def conv1d_weights(shapes: Mapping[str, tuple[int, ...]], model_type: str | None) -> set[str]:
    """The 2-D weights of ``shapes`` kept as Conv1D keeps them, (in, out): GPT-2's module names in a model of a
    ``CONV1D_MODELS`` type; without a model type, where a ``c_attn`` is three times as wide as it is tall (GPT-2's
    fused (in, 3 · in); GPT-BigCode's Linear ``c_attn`` is taller than wide)."""
    named = {name for name, shape in shapes.items() if len(shape) == 2 and CONV1D_WEIGHT.search(name)}
    if model_type is None:
        fused = [shapes[name] for name in named if name.endswith("c_attn.weight")]
        return named if any(shape[1] == 3 * shape[0] for shape in fused) else set()
    return named if model_type in CONV1D_MODELS else set()


def layout(name: str, shape: tuple[int, ...], target: str) -> tuple[tuple[int, ...] | None, Any, str] | str:
    """(permutation, reshape, what was done) taking ``name`` to ``target``'s layout, or why not."""
    parent, last = split_name(name)
    rank = len(shape)
    if rank < 2 or last in ("bias", "embeddings", "embedding") or (last == "weight" and EMBEDDING.search(parent)):
        return None, None, "kept"
    # Keras 3 calls a DepthwiseConv's weight 'kernel' (tf-keras 'depthwise_kernel'); only the
    # layer's name tells it from a convolution's.
    depthwise = last == "depthwise_kernel" or (last == "kernel" and "depthwise" in split_name(parent)[1].lower())
    tensorflow_kernel = last in TF_KERNELS or depthwise
    if (target == "pytorch" and last == "weight") or (target == "tensorflow" and tensorflow_kernel):
        return None, None, "kept"  # already in the target's layout
    if target == "pytorch" and depthwise and rank in (3, 4):
        # [..spatial, in, multiplier] -> a grouped convolution's [in * multiplier, 1, ..spatial]
        *spatial, channels, multiplier = shape
        order = (rank - 2, rank - 1, *range(rank - 2))
        return order, (channels * multiplier, 1, *spatial), f"depthwise {rank - 2}D -> grouped convolution"
    if rank in _TO_PYTORCH and (
        (target == "pytorch" and last in TF_KERNELS) or (target == "tensorflow" and last == "weight")
    ):
        order = _TO_PYTORCH[rank] if target == "pytorch" else _TO_TENSORFLOW[rank]
        return order, None, f"{_KIND[rank]} {list(order)}"
    return f"'{last}' of rank {rank} has no known {target} layout"


def channel_order(name: str, shape: Sequence[int], role: str | None) -> tuple[int, ...] | None:
    """For a convolution kernel, the axes that lay it out as PyTorch does: [out, in, ..spatial]; else None.

    Which layout a kernel is in is ``layout``'s decision (``kernel`` is TensorFlow's
    [..spatial, in, out], ``weight`` PyTorch's [out, in, ..spatial]).
    """
    if len(shape) < 3 or role != "weight":
        return None
    decided = layout(name, tuple(shape), "pytorch")
    if isinstance(decided, str) or decided[1] is not None:
        return None  # no known layout, or a depthwise kernel (a reshape, not a permutation)
    return decided[0] or tuple(range(len(shape)))


# -- Keras 3 layers -----------------------------------------------------------------------------

# Keras 3 layer classes -> their variables in ``weights`` order (``[v.path.split("/")[-1] for v in
# layer.weights]``), each with the config setting (``None``: always present) that decides
# whether the layer has it: a flag, or ``setting=value``. A test builds every class with real
# Keras 3 and checks these names and orders.
_KERNEL_AND_BIAS: tuple[tuple[str, str | None], ...] = (("kernel", None), ("bias", "use_bias"))
_RECURRENT: tuple[tuple[str, str | None], ...] = (("kernel", None), ("recurrent_kernel", None), ("bias", "use_bias"))
KERAS_LAYER_WEIGHTS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "Dense": _KERNEL_AND_BIAS,
    "EinsumDense": (("kernel", None), ("bias", "bias_axes")),
    "Embedding": (("embeddings", None),),
    "LayerNormalization": (("gamma", "scale"), ("beta", "center")),
    "GroupNormalization": (("gamma", "scale"), ("beta", "center")),
    "RMSNormalization": (("scale", None),),
    "BatchNormalization": (("gamma", "scale"), ("beta", "center"), ("moving_mean", None), ("moving_variance", None)),
    "Normalization": (("mean", None), ("variance", None), ("count", None)),
    "PReLU": (("alpha", None),),
    "Attention": (("scale", "use_scale"), ("concat_score_weight", "score_mode=concat")),
    "AdditiveAttention": (("scale", "use_scale"),),
    **{f"DepthwiseConv{rank}D": _KERNEL_AND_BIAS for rank in (1, 2)},
    **{
        f"SeparableConv{rank}D": (("depthwise_kernel", None), ("pointwise_kernel", None), ("bias", "use_bias"))
        for rank in (1, 2)
    },
    **{f"Conv{rank}D{kind}": _KERNEL_AND_BIAS for rank in (1, 2, 3) for kind in ("", "Transpose")},
    # The cells of the recurrent layers (LSTM, GRU, SimpleRNN, ConvLSTM1D/2D/3D, and inside Bidirectional).
    **{cell: _RECURRENT for cell in ("LSTMCell", "GRUCell", "SimpleRNNCell", "ConvLSTMCell")},
}
# A layer's own sublayers are saved under the attribute that holds them
# (``layers/multi_head_attention/query_dense``, ``layers/lstm/cell``): attribute -> class.
# Every recurrent cell names its variables alike, so ``cell`` stands for them all.
KERAS_SUBLAYER_CLASSES = {
    "cell": "LSTMCell",
    **{f"{part}_dense": "EinsumDense" for part in ("query", "key", "value", "output")},  # MultiHeadAttention
}


def snake_case(name: str) -> str:
    """Keras's ``naming.to_snake_case``: how a layer's class names its group (``Conv2D`` -> ``conv2d``)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# The Keras 3 layer classes a writer places (``keras_layer_class``) -> their variables as
# ``KERAS_LAYER_WEIGHTS`` orders them, each as the names it may be given by (a DepthwiseConv's
# ``kernel`` is tf-keras's ``depthwise_kernel``), and which of them the layer always has (those
# no setting leaves out).
_WRITTEN_CLASSES = (
    "Dense",
    "Embedding",
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    *(f"Conv{rank}D{kind}" for rank in (1, 2, 3) for kind in ("", "Transpose")),
    *(f"DepthwiseConv{rank}D" for rank in (1, 2)),
    *(f"SeparableConv{rank}D" for rank in (1, 2)),
)


def _written_variables(class_name: str) -> tuple[tuple[tuple[str, ...], ...], set[str]]:
    weights = KERAS_LAYER_WEIGHTS[class_name]
    depthwise = class_name.startswith("DepthwiseConv")
    names = tuple((name, "depthwise_kernel") if depthwise and name == "kernel" else (name,) for name, _ in weights)
    return names, {name for name, setting in weights if setting is None}


KERAS_LAYER_VARIABLES: dict[str, tuple[tuple[tuple[str, ...], ...], set[str]]] = {
    class_name: _written_variables(class_name) for class_name in _WRITTEN_CLASSES
}


def keras_layer_class(layer_name: str, shape: Mapping[str, tuple[int, ...]]) -> str:
    """The Keras 3 class of layer ``layer_name`` that its variables' names and shapes (and, for a convolution, the
    layer's name) tell: a key of ``KERAS_LAYER_VARIABLES``; a ``UsageError`` where none fits."""
    given = set(shape)
    if given == {"embeddings"}:
        return "Embedding"
    if {"moving_mean", "moving_variance"} <= given:
        return "BatchNormalization"
    if given and given <= {"gamma", "beta"}:
        return "GroupNormalization" if "group_norm" in layer_name.lower() else "LayerNormalization"
    if {"depthwise_kernel", "pointwise_kernel"} <= given and len(shape["depthwise_kernel"]) in (3, 4):
        return f"SeparableConv{len(shape['depthwise_kernel']) - 2}D"
    kernels = given - {"bias"}
    if kernels == {"depthwise_kernel"} and len(shape["depthwise_kernel"]) in (3, 4):
        return f"DepthwiseConv{len(shape['depthwise_kernel']) - 2}D"
    if kernels == {"kernel"} and len(shape["kernel"]) == 2:
        return "Dense"
    if kernels == {"kernel"} and len(shape["kernel"]) in (3, 4, 5):
        return _keras_convolution(layer_name, shape["kernel"], shape.get("bias"))
    raise UsageError(
        f"layer '{layer_name}' holds {', '.join(f'{name} {list(shape[name])}' for name in sorted(given))}: "
        f"not the variables of a Keras layer the writer knows ({', '.join(KERAS_LAYER_VARIABLES)})"
    )


def _keras_convolution(layer_name: str, kernel: tuple[int, ...], bias: tuple[int, ...] | None) -> str:
    """Conv, ConvTranspose or DepthwiseConv: named so (Keras's default names are), else what the bias's
    length allows (``[out]``, ``[out]`` second to last, ``[in * multiplier]``), plain Conv first."""
    rank = len(kernel) - 2
    bias_lengths = {
        f"Conv{rank}D": kernel[-1],
        f"Conv{rank}DTranspose": kernel[-2],
        **({f"DepthwiseConv{rank}D": kernel[-2] * kernel[-1]} if rank in (1, 2) else {}),
    }
    fits = [name for name, length in bias_lengths.items() if bias is None or bias == (length,)]
    lowered = layer_name.lower()
    named = [name for name in fits if ("transpose" in lowered) == name.endswith("Transpose")]
    named = [name for name in named if ("depthwise" in lowered) == name.startswith("Depthwise")]
    if named:
        return named[0]
    if len(fits) == 1 and "transpose" not in lowered and "depthwise" not in lowered:
        return fits[0]
    raise UsageError(
        f"layer '{layer_name}': a kernel {list(kernel)} with bias {list(bias) if bias else None} fits no Keras "
        f"convolution its name allows ({', '.join(bias_lengths)}); give its class (save(..., layers=))"
    )


# -- layer kinds ---------------------------------------------------------------------------------

_NORM_NAMES = (("group", "GroupNorm"), ("instance", "InstanceNorm"), ("rms", "RMSNorm"), ("batch", "BatchNorm"))


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
    pytorch = len(infos) == 1 and _last(infos[0]) == "weight" and EMBEDDING.search(_layer_word(layer))
    if not pytorch and not all(_last(info).endswith(("embeddings", "embedding")) for info in infos):  # Flax's
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
    """A weight whose layout ``layout`` can decide, and at most a bias [out]."""
    weights = [info for role, info in layer.parameters.items() if role in ("weight", "depthwise_kernel")]
    if len(weights) != 1 or not layer.parameters.keys() <= {"weight", "depthwise_kernel", "bias"}:
        return None
    (weight,) = weights
    rank = len(weight.shape)
    if rank not in (2, 3, 4, 5):
        return None
    to_pytorch = layout(weight.name, weight.shape, "pytorch")
    to_tensorflow = layout(weight.name, weight.shape, "tensorflow")
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
    """The guess, where the bias (if any) has one value per output (OpenVINO's stands [1, out, 1, 1] to broadcast)."""
    bias = layer.bias
    fits = _vector(bias, outputs) or (bias is not None and [size for size in bias.shape if size != 1] == [outputs])
    return (kind, description) if fits else None
