"""Commands that run something: the browser viewer and the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from weightscope.cli._common import CHECKPOINT, PATH, _open, dequantize_option
from weightscope.cli._output import Command, Output, pass_output
from weightscope.demo import ENGINES


@click.command("view", cls=Command)
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


@click.command("demo", cls=Command)
@click.option("--engine", type=click.Choice(ENGINES), default=ENGINES[0], show_default=True)
@click.option("--out", type=PATH, default=Path("checkpoint/model.ckpt"), show_default=True)
@click.option("--steps", type=int, default=1000, show_default=True)
@click.option("--lr", "learning_rate", type=float, default=0.01, show_default=True)
@click.option("--hidden", type=int, default=5, show_default=True, help="Units of layer1.")
@click.option("--samples", type=int, default=5000, show_default=True)
@click.option("--seed", type=int, default=None, help="Seed for the samples and initial weights.")
@click.option("--init", type=PATH, default=None, help="Start from this checkpoint's variables.")
@click.option("--data", type=PATH, default=None, help="Train on this N×2 .npy array.")
@click.option("--all", "show_all", is_flag=True, help="Also print every variable.")
@pass_output
def demo_command(out: Output, /, **options: Any) -> None:
    """The seed's program: train the 2-5-2 network, save a TensorFlow checkpoint, read it back."""
    from weightscope.demo import DemoOptions, run_demo

    run_demo(DemoOptions(**options), out.text)
