"""Train the seed's dense autoencoder in float32 numpy, with TensorFlow 1's arithmetic.

The network is a stack of ``tf.layers.dense`` layers named ``layer1``, ``layer2``, …:
``h_k = act(h_{k-1} @ layerK/kernel + layerK/bias)``, kernels ``[in, out]``. Training
minimises ``loss = mean((y - x) ** 2)`` over all ``N × d`` elements (the target is the
input) with TF1's ``AdamOptimizer(lr, beta1=0.9, beta2=0.999, epsilon=1e-8)``.

Every step follows the ops TF builds for the seed program, in float32, in TF's order:

* Forward (``MatMul`` + ``BiasAdd`` + activation; grappler fuses them into one oneDNN
  inner product on x86): each dot product is a chain of fused multiply-adds in ``k``
  order, the bias is added after it, then the activation. The sigmoid is oneDNN's
  ``eltwise_logistic``: ``e = exp(-|z|)`` by oneDNN's polynomial, ``s = e / (e + 1)``,
  ``1 - s`` for ``z > 0`` (Eigen's ``tf.math.sigmoid`` differs from it by an ulp).
* ``Mean`` (reported loss): Eigen's float32 sum, divided by ``N·d`` in float32.
* Gradient of ``Mean`` then ``Pow``: ``dy = ((1/(N·d)) * 2) * (y - x)``
  (``_MeanGrad`` divides a tile of ones by the count; ``_PowGrad`` multiplies by ``2``
  and by ``pow(y - x, 1)``).
* ``SigmoidGrad``: ``dz = dy * (y * (1 - y))``; ``TanhGrad``: ``dy * (1 - y*y)``;
  ``ReluGrad``: ``dy`` where ``y > 0``.
* ``BiasAddGrad``: column sums, rows added in order.
* ``MatMul`` gradients ``h.T @ dz`` and ``dz @ kernel.T`` go to oneDNN's sgemm (no-copy
  kernel): ``k`` is cut into blocks of 384 (the last ``384 < r < 768`` split in two
  halves), each block a chain of fused multiply-adds, block results added in order.
* ``ApplyAdam`` (tensorflow/core/kernels/training_ops.cc, ``ApplyAdamNonCuda``), with
  ``b1p``/``b2p`` the stored ``beta1_power``/``beta2_power``::

      alpha = lr * sqrt(1 - b2p) / (1 - b1p)
      m += (g - m) * (1 - beta1)
      v += (g*g - v) * (1 - beta2)
      var -= (m * alpha) / (sqrt(v) + epsilon)

  then (``AdamOptimizer._finish``) ``beta1_power *= beta1``, ``beta2_power *= beta2``.
  ``beta*_power`` start at ``beta*`` and hold ``beta^(t+1)`` after ``t`` steps.
  TF's kernels run with denormals flushed to zero; so does every operation of this
  update here (``beta1_power`` becomes 0.0 after ~830 steps, a slot whose gradient
  stays 0 stops decaying near 1e-37 instead of creeping through the denormals).

Fused multiply-adds are computed as a float64 sum of the exact float64 product, rounded
to float32 (which rounds twice, so it can differ from a true FMA once in ~10⁹ cases).

Started from TensorFlow's initial weights and fed its float32 samples, this reproduces
TF 2.21 (oneDNN on, x86-64 with AVX-512) bit for bit: every weight, Adam slot, beta
power and per-step loss of the seed's ``(2, 5, 2)`` sigmoid network over 1000 steps, and
likewise for relu/linear and other widths. It does not follow TF where TF's own order
depends on more than the shapes; there the two agree to rounding (≤ ~5e-6 after 1000
steps): ``tanh`` (oneDNN's polynomial tanh is not reproduced; ``np.tanh`` is used);
``BiasAddGrad`` on layers of 25–64 units with thousands of rows, which TF splits across
its threads; a handful of rows (other GEMM kernels); and CPUs without AVX-512, where
oneDNN and Eigen pick other blockings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import pairwise

import numpy as np

from weightscope.errors import UsageError

__all__ = ["ACTIVATIONS", "adam_variables", "forward", "initial_variables", "train"]

ACTIVATIONS = ("sigmoid", "relu", "tanh", "linear")

BETA1 = np.float32(0.9)
BETA2 = np.float32(0.999)
EPSILON = np.float32(1e-8)

_F32 = np.float32
_ONE = np.float32(1)


def initial_variables(sizes: tuple[int, ...], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Glorot-uniform kernels (limit ``sqrt(6 / (fan_in + fan_out))``) and zero biases, float32.

    ``sizes[0]`` inputs, then one dense layer (``layer1``, ``layer2``, …) per later size.
    """
    if len(sizes) < 2 or any(int(size) < 1 for size in sizes):
        raise UsageError(f"a network needs at least two positive layer sizes, not {sizes}")
    variables: dict[str, np.ndarray] = {}
    for k, (fan_in, fan_out) in enumerate(pairwise(sizes), start=1):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        variables[f"layer{k}/kernel"] = rng.uniform(-limit, limit, (fan_in, fan_out)).astype(_F32)
        variables[f"layer{k}/bias"] = np.zeros(fan_out, _F32)
    return variables


def adam_variables(variables: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """TF1 Adam's fresh state for ``variables``: zero slots, ``beta*_power = beta*``."""
    state = {"beta1_power": np.array(BETA1), "beta2_power": np.array(BETA2)}
    for name in _parameter_names(variables):
        state[f"{name}/Adam"] = np.zeros_like(variables[name], dtype=_F32)
        state[f"{name}/Adam_1"] = np.zeros_like(variables[name], dtype=_F32)
    return state


def forward(variables: Mapping[str, np.ndarray], x: np.ndarray, activation: str = "sigmoid") -> np.ndarray:
    """The network's output for the rows of ``x``, in float32."""
    _check_activation(activation)
    h = np.asarray(x, dtype=_F32)
    for layer in _layer_names(variables):
        h = _dense(h, variables[f"{layer}/kernel"], variables[f"{layer}/bias"], activation)
    return h


def train(
    variables: Mapping[str, np.ndarray],
    data: np.ndarray,
    *,
    steps: int = 1000,
    learning_rate: float = 0.01,
    activation: str = "sigmoid",
    optimizer_state: Mapping[str, np.ndarray] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, np.ndarray]:
    """Train the autoencoder (target = input) on all of ``data`` for ``steps`` Adam steps.

    ``variables`` holds ``layerK/kernel`` and ``layerK/bias``; ``optimizer_state`` (if
    given) the ``NAME/Adam``, ``NAME/Adam_1``, ``beta1_power`` and ``beta2_power`` to
    continue from. ``on_step(step, loss)`` is called for every step with the loss before
    that step's update. Returns every variable TF1's ``Saver`` would save, float32.
    """
    _check_activation(activation)
    if steps < 0:
        raise UsageError(f"steps must be ≥ 0, not {steps}")
    layers = _layer_names(variables)
    params = {name: np.array(variables[name], dtype=_F32) for name in _parameter_names(variables)}
    x = np.asarray(data, dtype=_F32)
    width_in, width_out = params[f"{layers[0]}/kernel"].shape[0], params[f"{layers[-1]}/kernel"].shape[1]
    if x.ndim != 2 or x.shape[1] != width_in or width_out != width_in:
        raise UsageError(
            f"an autoencoder for {width_in} inputs and {width_out} outputs cannot train on data of shape {x.shape}"
        )
    state = adam_variables(params)
    if optimizer_state is not None:
        for name, fresh in state.items():
            if name not in optimizer_state:
                raise UsageError(f"optimizer state lacks {name!r}")
            value = np.array(optimizer_state[name], dtype=_F32)
            if value.shape != fresh.shape:
                raise UsageError(f"optimizer state {name!r} has shape {value.shape}, expected {fresh.shape}")
            state[name] = value
    lr = _F32(learning_rate)
    count = _F32(x.size)
    dloss = (_ONE / count) * _F32(2)  # _MeanGrad's 1/count, times _PowGrad's exponent

    for step in range(steps):
        # Forward, keeping every layer's output.
        outputs = [x]
        for layer in layers:
            outputs.append(_dense(outputs[-1], params[f"{layer}/kernel"], params[f"{layer}/bias"], activation))
        diff = outputs[-1] - x
        if on_step is not None:
            on_step(step, float(_eigen_sum((diff * diff).ravel()) / count))

        # Backward.
        grads: dict[str, np.ndarray] = {}
        dy = dloss * diff
        for k in range(len(layers), 0, -1):
            layer = layers[k - 1]
            dz = _activation_grad(outputs[k], dy, activation)
            grads[f"{layer}/bias"] = np.add.reduce(dz, axis=0)
            grads[f"{layer}/kernel"] = _matmul(outputs[k - 1].T, dz)
            if k > 1:
                dy = _matmul(dz, params[f"{layer}/kernel"].T)

        # ApplyAdam on every variable with the current powers, then advance the powers.
        b1p, b2p = state["beta1_power"][()], state["beta2_power"][()]
        alpha = lr * np.sqrt(_ONE - b2p) / (_ONE - b1p)
        for name, grad in grads.items():
            g, m, v = _ftz(grad), state[f"{name}/Adam"], state[f"{name}/Adam_1"]
            m = state[f"{name}/Adam"] = _ftz(m + _ftz(_ftz(g - m) * (_ONE - BETA1)))
            v = state[f"{name}/Adam_1"] = _ftz(v + _ftz(_ftz(_ftz(g * g) - v) * (_ONE - BETA2)))
            params[name] = _ftz(params[name] - _ftz(_ftz(m * alpha) / (np.sqrt(v) + EPSILON)))
        state["beta1_power"] = _ftz(np.array(b1p * BETA1))
        state["beta2_power"] = _ftz(np.array(b2p * BETA2))

    return {**params, **state}


# --- the pieces, each in TensorFlow's float32 order ---------------------------------


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise UsageError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")


def _layer_names(variables: Mapping[str, np.ndarray]) -> list[str]:
    layers: list[str] = []
    while f"layer{len(layers) + 1}/kernel" in variables:
        layers.append(f"layer{len(layers) + 1}")
    if not layers:
        raise UsageError("no dense layers: expected variables layer1/kernel, layer1/bias, …")
    for layer in layers:
        if f"{layer}/bias" not in variables:
            raise UsageError(f"{layer}/kernel has no {layer}/bias")
    return layers


def _parameter_names(variables: Mapping[str, np.ndarray]) -> list[str]:
    return [f"{layer}/{part}" for layer in _layer_names(variables) for part in ("kernel", "bias")]


def _dense(h: np.ndarray, kernel: np.ndarray, bias: np.ndarray, activation: str) -> np.ndarray:
    z = _matmul(h, np.asarray(kernel, dtype=_F32)) + np.asarray(bias, dtype=_F32)
    if activation == "sigmoid":
        return _logistic(z)
    if activation == "relu":
        return np.maximum(z, _F32(0))
    if activation == "tanh":
        return np.tanh(z)
    return z


def _activation_grad(y: np.ndarray, dy: np.ndarray, activation: str) -> np.ndarray:
    if activation == "sigmoid":
        return dy * (y * (_ONE - y))
    if activation == "tanh":
        return dy * (_ONE - y * y)
    if activation == "relu":
        return np.where(y > 0, dy, _F32(0))
    return dy


_TINY = np.finfo(np.float32).tiny


def _ftz(x: np.ndarray) -> np.ndarray:
    """Flush denormals to (signed) zero, as TF's CPU kernels do (``port::ScopedFlushDenormal``)."""
    return np.where(np.abs(x) < _TINY, _F32(0) * x, x)


def _fma(a: np.ndarray | np.float32, b: np.ndarray | np.float32, c: np.ndarray | np.float32) -> np.ndarray:
    """``a * b + c`` rounded once to float32 (the float32 product is exact in float64)."""
    return np.asarray((a.astype(np.float64) * b + c).astype(_F32))


_SGEMM_BLOCK_K = 384  # oneDNN's no-copy sgemm K block on AVX-512
_PRODUCTS_AT_ONCE = 1 << 21  # float64 products kept in memory at once (16 MiB)


def _k_blocks(k: int) -> list[tuple[int, int]]:
    """oneDNN's split of ``k``: blocks of 384; a remainder in (384, 768) split in halves."""
    blocks: list[tuple[int, int]] = []
    start = 0
    while start < k:
        size = k - start
        if size >= 2 * _SGEMM_BLOCK_K:
            size = _SGEMM_BLOCK_K
        elif size > _SGEMM_BLOCK_K:
            size = (size + 1) // 2
        blocks.append((start, start + size))
        start += size
    return blocks


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` in float32: per K block a chain of FMAs in ``k`` order, blocks summed in order."""
    blocks = _k_blocks(a.shape[1])
    width = max(stop - start for start, stop in blocks)
    # Every block's k indices in a (blocks, width) table; padding points at a zero column.
    index = np.full((len(blocks), width), a.shape[1])
    for row, (start, stop) in enumerate(blocks):
        index[row, : stop - start] = np.arange(start, stop)
    a_cols = np.concatenate([a, np.zeros((a.shape[0], 1), _F32)], axis=1).T.astype(np.float64)[index]
    b_rows = np.concatenate([b, np.zeros((1, b.shape[1]), _F32)], axis=0).astype(np.float64)[index]
    acc = np.zeros((len(blocks), a.shape[0], b.shape[1]), _F32)
    # The product of two float32 numbers is exact in float64; acc + product is computed in
    # float64 and rounded once to float32 on the way out. All products at once when small.
    products = None
    if acc.size * width <= _PRODUCTS_AT_ONCE:
        products = a_cols[..., :, None] * b_rows[..., None, :]
    wide = np.empty(acc.shape, np.float64)
    for j in range(width):
        if products is None:
            term = np.multiply(a_cols[:, j, :, None], b_rows[:, j, None, :], out=wide)
        else:
            term = products[:, j]
        np.add(acc, term, out=acc, casting="same_kind")
    total = acc[0]
    for partial in acc[1:]:
        total = total + partial
    return total


# oneDNN's jit eltwise exp (jit_uni_eltwise_injector: exp_compute_vector_fwd).
def _hex_f32(bits: int) -> np.float32:
    return np.uint32(bits).view(_F32)


_EXP_LOG2E = _hex_f32(0x3FB8AA3B)
_EXP_LN2 = _hex_f32(0x3F317218)
_EXP_MAX_ARG = _hex_f32(0x42B17218)  # ln(FLT_MAX)
_EXP_MIN_ARG = _hex_f32(0xC2AEAC50)  # ln(FLT_MIN)
_EXP_POLY = tuple(_hex_f32(b) for b in (0x3F7FFFFB, 0x3EFFFEE3, 0x3E2AAD40, 0x3D2B9D0D, 0x3C07CFCE))


def _onednn_exp(x: np.ndarray) -> np.ndarray:
    """``exp(x)`` as oneDNN computes it: ``2^n · p(r)``, ``x = n·ln2 + r``, degree-5 ``p``."""
    underflow = x < _EXP_MIN_ARG
    x = np.clip(x, _EXP_MIN_ARG, _EXP_MAX_ARG)
    n = np.floor(x * _EXP_LOG2E + _F32(0.5))
    r = _fma(-n, _EXP_LN2, x)
    # 2^(n-1) built in the exponent field (then doubled), so that n = 128 stays finite.
    scale = ((n - _ONE).astype(np.int32) + 127) << 23
    scale = np.where(underflow, 0, scale).astype(np.uint32).view(_F32)
    p: np.ndarray | np.float32 = _EXP_POLY[4]
    for coefficient in (*_EXP_POLY[3::-1], _ONE):
        p = _fma(p, r, coefficient)
    return _ftz(_ftz(p * scale) * _F32(2))  # results below FLT_MIN flush to 0, as in TF


def _logistic(z: np.ndarray) -> np.ndarray:
    """oneDNN's ``eltwise_logistic``: ``s = e / (e + 1)`` with ``e = exp(-|z|)``; ``1 - s`` for ``z ≥ 0``."""
    e = _onednn_exp(-np.abs(z))
    s = e / (e + _ONE)
    return np.where(np.signbit(z), s, _ONE - s)


# Eigen's full float32 sum (TensorReduction.h: FullReducer → InnerMostDimReducer, tree reduction).
_EIGEN_PACKET = 8  # TF's x86 builds vectorise Eigen with AVX: packets of 8 floats
_EIGEN_LEAF = 1024  # LeafSize<float>: packets per leaf of the tree


def _eigen_sum(values: np.ndarray, first: int = 0) -> np.float32:
    """Sum ``values`` (float32, 1-D) in Eigen's order; ``first`` is their offset in the tensor."""
    size, packet = values.size, _EIGEN_PACKET
    if size > packet * _EIGEN_LEAF:  # split in two at a packet boundary, recurse
        split = packet * -(-(first + -(-size // 2)) // packet)
        left = min(split - first, size)
        total = _F32(0) + _eigen_sum(values[:left], first)
        return _F32(total + _eigen_sum(values[left:], split)) if left < size else total
    # A leaf: four packet accumulators, folded into the first; remaining packets; scalar tail.
    acc = np.zeros(packet, _F32)
    start = size - size % (4 * packet) if size >= 4 * packet else 0
    if start:
        partial = np.add.reduce(values[:start].reshape(-1, 4, packet), axis=0)  # rows in order
        acc = ((partial[0] + partial[1]) + partial[2]) + partial[3]
    stop = size - size % packet
    for offset in range(start, stop, packet):
        acc = acc + values[offset : offset + packet]
    tail = _F32(0)
    for value in values[stop:]:
        tail = _F32(tail + value)
    while acc.size > 4:  # predux: upper half added onto lower half, lane by lane
        acc = acc[: acc.size // 2] + acc[acc.size // 2 :]
    return _F32(tail + _F32((acc[0] + acc[2]) + (acc[1] + acc[3])))
