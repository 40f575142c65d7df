"""Which WeightParams each Core ML neural-network layer kind holds, and their shapes (``NeuralNetwork.proto``).

A WeightParams is a flat list of values; its layer's settings give its shape, as the spec's comments and
coremltools' ``quantization_utils`` (``_quantize_nn_spec``) have them. A field whose layer gives no shape (a
PReLU's ``alpha``, a scale whose ``shapeScale`` is empty) is read flat. The quantised weights of the kinds in
``ONE_CHANNEL`` were quantised as one flat channel; those of the others per channel along axis 0 (a
deconvolution's weights along axis 1): their linear quantisation's scale and bias hold one value or one a channel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

Shape = tuple[int, ...] | None
# A layer kind's WeightParams: (field name, the message holding it, its shape) of the layer's params message.
Fields = Callable[[Any], Iterator[tuple[str, Any, Shape]]]

ONE_CHANNEL = frozenset({"scale", "bias", "loadConstant", "loadConstantND", "batchnorm", "layerNormalization"})


def _fields(*names: str, shape: Callable[[Any], dict[str, Shape]] = lambda params: {}) -> Fields:
    def fields(params: Any) -> Iterator[tuple[str, Any, Shape]]:
        shapes = shape(params)
        for name in names:
            yield name, getattr(params, name), shapes.get(name)

    return fields


def _convolution(params: Any) -> dict[str, Shape]:
    groups = max(params.nGroups, 1)
    out, kernel = params.outputChannels, params.kernelChannels
    weights = (
        (kernel, out // groups, *params.kernelSize) if params.isDeconvolution else (out, kernel, *params.kernelSize)
    )
    return {"weights": weights, "bias": (out,)}


def _convolution3d(params: Any) -> dict[str, Shape]:
    groups = max(params.nGroups, 1)
    out, inputs = params.outputChannels, params.inputChannels
    kernel = (params.kernelDepth, params.kernelHeight, params.kernelWidth)
    weights = (out // groups, inputs, *kernel) if params.isDeconvolution else (out, inputs // groups, *kernel)
    return {"weights": weights, "bias": (out,)}


def _activation(params: Any) -> Iterator[tuple[str, Any, Shape]]:
    kind = params.WhichOneof("NonlinearityType")
    if kind == "PReLU":
        yield "alpha", params.PReLU.alpha, None
    elif kind == "parametricSoftplus":
        yield "alpha", params.parametricSoftplus.alpha, None
        yield "beta", params.parametricSoftplus.beta, None


_GATES = ("update", "reset", "output")
_LSTM_GATES = ("inputGate", "forgetGate", "blockInput", "outputGate")  # blockInput has no "Gate"


def _gru(params: Any) -> Iterator[tuple[str, Any, Shape]]:
    out, inputs = params.outputVectorSize, params.inputVectorSize
    for kind, shape in (("WeightMatrix", (out, inputs)), ("RecursionMatrix", (out, out)), ("BiasVector", (out,))):
        for gate in _GATES:
            yield f"{gate}Gate{kind}", getattr(params, f"{gate}Gate{kind}"), shape


def _lstm(params: Any) -> Iterator[tuple[str, Any, Shape]]:
    out, inputs, weights = params.outputVectorSize, params.inputVectorSize, params.weightParams
    kinds = (("WeightMatrix", (out, inputs)), ("RecursionMatrix", (out, out)), ("BiasVector", (out,)))
    for kind, shape in kinds:
        for gate in _LSTM_GATES:
            yield f"{gate}{kind}", getattr(weights, f"{gate}{kind}"), shape
    for gate in ("input", "forget", "output"):
        yield f"{gate}GatePeepholeVector", getattr(weights, f"{gate}GatePeepholeVector"), (out,)


def _flat(*fields: tuple[str, str]) -> Callable[[Any], dict[str, Shape]]:
    """Shapes given by a repeated field of the params (``shapeScale``), flat where it is empty."""
    return lambda params: {name: tuple(getattr(params, shape)) or None for name, shape in fields}


LAYERS: dict[str, Fields] = {
    "convolution": _fields("weights", "bias", shape=_convolution),
    "convolution3d": _fields("weights", "bias", shape=_convolution3d),
    "innerProduct": _fields(
        "weights", "bias", shape=lambda p: {"weights": (p.outputChannels, p.inputChannels), "bias": (p.outputChannels,)}
    ),
    "embedding": _fields(
        "weights", "bias", shape=lambda p: {"weights": (p.outputChannels, p.inputDim), "bias": (p.outputChannels,)}
    ),
    "embeddingND": _fields(
        "weights", "bias", shape=lambda p: {"weights": (p.embeddingSize, p.vocabSize), "bias": (p.embeddingSize,)}
    ),
    "batchedMatmul": _fields(
        "weights",
        "bias",
        shape=lambda p: {
            "weights": (p.weightMatrixSecondDimension, p.weightMatrixFirstDimension),
            "bias": (p.weightMatrixSecondDimension,),
        },
    ),
    "batchnorm": _fields(
        "gamma",
        "beta",
        "mean",
        "variance",
        shape=lambda p: dict.fromkeys(("gamma", "beta", "mean", "variance"), (p.channels,)),
    ),
    "scale": _fields("scale", "bias", shape=_flat(("scale", "shapeScale"), ("bias", "shapeBias"))),
    "bias": _fields("bias", shape=_flat(("bias", "shape"))),
    "loadConstant": _fields("data", shape=_flat(("data", "shape"))),
    "loadConstantND": _fields("data", shape=_flat(("data", "shape"))),
    "layerNormalization": _fields(
        "gamma", "beta", shape=_flat(("gamma", "normalizedShape"), ("beta", "normalizedShape"))
    ),
    "activation": _activation,
    "simpleRecurrent": _fields(
        "weightMatrix",
        "recursionMatrix",
        "biasVector",
        shape=lambda p: {
            "weightMatrix": (p.outputVectorSize, p.inputVectorSize),
            "recursionMatrix": (p.outputVectorSize, p.outputVectorSize),
            "biasVector": (p.outputVectorSize,),
        },
    ),
    "gru": _gru,
    "uniDirectionalLSTM": _lstm,
}


def channel_axis(kind: str, params: Any, field: str) -> int | None:
    """The axis a quantised field's linear scale and bias run along (None: one channel for the whole field)."""
    if kind in ONE_CHANNEL:
        return None
    if kind in ("convolution", "convolution3d") and params.isDeconvolution and field == "weights":
        return 1
    return 0
