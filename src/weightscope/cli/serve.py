"""Commands that run something: the browser viewer and the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from weightscope.cli._common import CHECKPOINT, PATH, _open, dequantize_option
from weightscope.cli._output import Command, Output, examples, pass_output
from weightscope.demo import ENGINES


@click.command(
    "view",
    cls=Command,
    short_help="Look at one checkpoint, or compare two, in the browser.",
    epilog=examples(
        "weightscope view model.safetensors",
        "weightscope view before.pt after.pt --port 8000 --no-browser",
    ),
)
@click.argument("path", type=CHECKPOINT)
@click.argument("path2", type=CHECKPOINT, required=False)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="The port on 127.0.0.1 (0: a free one)."
)
@click.option("--no-browser", is_flag=True, help="Only print the address; do not open a browser.")
@dequantize_option
@pass_output
def view_command(out: Output, path: Path, path2: Path | None, port: int, no_browser: bool, dequantize: bool) -> None:
    """Look at a checkpoint (or compare two) in the browser: layers, statistics, histograms, heatmaps, values.

    A local server on 127.0.0.1 with a random token in the address it prints; Ctrl-C stops it.
    """
    import contextlib

    from weightscope.viewer import serve

    with contextlib.ExitStack() as stack:
        checkpoints = [
            stack.enter_context(_open(item, dequantize=dequantize)) for item in (path, path2) if item is not None
        ]
        serve(checkpoints, port, open_browser=not no_browser, echo=out.text)


@click.command(
    "demo",
    cls=Command,
    short_help="Train a tiny autoencoder, save it, read it back.",
    epilog=examples(
        "weightscope demo",
        "weightscope demo --engine tensorflow --steps 200 --out ae/model.ckpt",
        "weightscope demo --init checkpoint/model.ckpt --steps 100 --all",
    ),
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default=ENGINES[0],
    show_default=True,
    help="Who trains: numpy (weightscope's own few lines, no TensorFlow needed) or TensorFlow itself.",
)
@click.option(
    "--out",
    type=PATH,
    metavar="PREFIX",
    default=Path("checkpoint/model.ckpt"),
    show_default=True,
    help="Where to save the TensorFlow checkpoint: PREFIX.index, PREFIX.data-00000-of-00001, and the folder's "
    "'checkpoint' file.",
)
@click.option("--steps", type=int, default=1000, show_default=True, help="Training steps (Adam updates).")
@click.option("--lr", "learning_rate", type=float, default=0.01, show_default=True, help="Adam's learning rate.")
@click.option("--hidden", type=int, default=5, show_default=True, help="Units of layer1, the hidden layer.")
@click.option(
    "--samples", type=int, default=5000, show_default=True, help="Training points drawn from N(0, 1) (without --data)."
)
@click.option("--seed", type=int, default=None, help="Seed for the samples and initial weights (default: a new one).")
@click.option("--init", type=PATH, default=None, help="Start from this checkpoint's variables (and Adam's state).")
@click.option("--data", type=PATH, default=None, help="Train on this N×2 .npy array instead of random points.")
@click.option("--all", "show_all", is_flag=True, help="Also print every variable saved, optimizer state too.")
@pass_output
def demo_command(out: Output, /, **options: Any) -> None:
    """Train the 2-5-2 autoencoder of the TensorFlow 1 blog post this project began from, save a TensorFlow
    checkpoint, and read layer1's kernel and bias back from the file.

    The network learns to give back its input: 2 numbers in, 5 sigmoid units (layer1), 2 out (layer2),
    trained with Adam on points drawn from N(0, 1). The checkpoint is TensorFlow's own format, written
    without TensorFlow by the numpy engine; every other command reads it (try 'weightscope ls' on it).
    """
    from weightscope.demo import DemoOptions, run_demo

    run_demo(DemoOptions(**options), out.text)
