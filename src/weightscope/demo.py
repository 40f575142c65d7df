"""The seed's program as a command: train the 2 → 5 → 2 autoencoder, save, read back.

The blog post this project grew from builds two ``tf.layers.dense`` layers, trains them
with Adam on samples of N(0, 1), saves a checkpoint and reads layer1's weight and bias
back. ``run_demo`` does the same with either engine — the numpy one, which needs no
TensorFlow, or TensorFlow itself — and reads the result back through weightscope.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import weightscope
from weightscope.errors import UsageError
from weightscope.layers import classify

ENGINES = ("numpy", "tensorflow")


@dataclass(frozen=True)
class DemoOptions:
    engine: str = "numpy"
    out: Path = Path("checkpoint/model.ckpt")
    steps: int = 1000
    learning_rate: float = 0.01
    hidden: int = 5
    samples: int = 5000
    seed: int | None = None
    init: Path | None = None
    data: Path | None = None
    show_all: bool = False


def load_data(options: DemoOptions, rng: np.random.Generator) -> np.ndarray:
    """The training samples: ``--data`` (an N×2 .npy file) or fresh draws from N(0, 1)."""
    if options.data is None:
        # The seed draws float64 samples and feeds them to a float32 placeholder.
        return rng.normal(0, 1, (options.samples, 2)).astype(np.float32)
    try:
        data = np.load(options.data, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise UsageError(f"{options.data}: not a numpy .npy array ({error})") from None
    if data.ndim != 2 or data.shape[1] != 2 or data.shape[0] == 0 or data.dtype.kind not in "fiu":
        raise UsageError(f"{options.data}: expected a non-empty N×2 numeric array, got {data.dtype} {data.shape}")
    return data.astype(np.float32)


def load_initial(options: DemoOptions, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Starting variables: those of ``--init`` (optimizer state too, when present), or fresh."""
    from weightscope.engines.numpy_engine import initial_variables

    fresh = initial_variables((2, options.hidden, 2), rng)
    if options.init is None:
        return fresh
    with weightscope.open(options.init) as ckpt:
        wanted = [name for name in ckpt if name in fresh or ckpt.role(name).kind == "optimizer"]
        initial = {name: np.array(ckpt[name]) for name in wanted}
    for name, value in fresh.items():
        if name not in initial:
            raise UsageError(f"{options.init}: has no '{name}' to start from")
        if initial[name].shape != value.shape:
            raise UsageError(
                f"{options.init}: '{name}' has shape {list(initial[name].shape)}, "
                f"the network needs {list(value.shape)} (--hidden {options.hidden})"
            )
    return initial


def run_demo(options: DemoOptions, echo: Callable[[str], None]) -> Path:
    """Train, save, print what the seed prints; returns the checkpoint prefix written."""
    if options.engine not in ENGINES:
        raise UsageError(f"unknown engine {options.engine!r}; choose from {', '.join(ENGINES)}")
    if options.steps < 0 or options.hidden < 1 or options.samples < 1:
        raise UsageError("--steps must be >= 0, --hidden and --samples >= 1")
    rng = np.random.default_rng(options.seed)
    data = load_data(options, rng)
    initial = load_initial(options, rng)

    def on_step(step: int, loss: float) -> None:
        if step % 100 == 0:
            echo(f"step: {step}, loss: {loss:f}")

    if options.engine == "tensorflow":
        from weightscope.engines.tensorflow_engine import train_tensorflow

        train_tensorflow(
            data=data,
            steps=options.steps,
            learning_rate=options.learning_rate,
            hidden=options.hidden,
            seed=options.seed,
            init_variables=initial if options.init is not None else None,
            on_step=on_step,
            save_path=str(options.out),
        )
    else:
        from weightscope.engines.numpy_engine import train

        weights = {name: value for name, value in initial.items() if classify(name).kind == "parameter"}
        state = {name: value for name, value in initial.items() if name not in weights}
        variables = train(
            weights,
            data,
            steps=options.steps,
            learning_rate=options.learning_rate,
            optimizer_state=state or None,
            on_step=on_step,
        )
        weightscope.save(dict(sorted(variables.items())), options.out, format="tensorflow")
    echo(f"model saved in path: {options.out}")
    with weightscope.open(options.out) as ckpt:
        echo(str(ckpt["layer1/kernel"]))  # TensorFlow calls the weight matrix "kernel"
        echo(str(ckpt["layer1/bias"]))
        if options.show_all:
            for name in ckpt:
                echo(f"tensor name:  {name}")
                echo(str(ckpt[name]))
    return options.out
