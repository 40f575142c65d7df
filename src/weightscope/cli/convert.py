"""The convert command."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from weightscope.cli._common import (
    CHECKPOINT,
    _count_kinds,
    _open,
    _WritableFormat,
    dequantize_option,
    step_option,
)
from weightscope.cli._output import Command, Output, examples, pass_output
from weightscope.conventions import CONVENTIONS
from weightscope.output import format_bytes, format_shape, render_table, safe_text

if TYPE_CHECKING:
    from weightscope.convert import Conversion, PlannedTensor


SHOWN = 5  # tensors listed without --verbose


def _convention_option(flag: str, help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--layout`` or ``--names``: keep what the file has, or take PyTorch's or TensorFlow's convention."""
    choice = click.Choice(CONVENTIONS)
    return click.option(flag, type=choice, default="keep", show_default=True, help=help)


@click.command(
    "convert",
    cls=Command,
    short_help="Write a checkpoint in another format, layout or naming.",
    epilog=examples(
        "weightscope convert checkpoint/model.ckpt model.safetensors",
        "weightscope convert model.ckpt m.pt --layout pytorch --names pytorch",
        "weightscope convert big.pth big/ --dtype bfloat16 --max-shard-size 2GB",
    ),
)
@click.argument("source", type=CHECKPOINT)
@click.argument("destination", type=click.Path())  # as typed: "out/" names a model folder
@click.option(
    "--to",
    "to",
    type=_WritableFormat(),
    metavar="FORMAT",  # the choices, listed in the help, wrap there; as a metavar they made a line no width holds
    help="Output format: a format weightscope writes ('weightscope formats' lists them). Default: from DESTINATION's "
    "name: .safetensors, .pt/.pth/.bin, .npz, .weights.h5, .msgpack, and TensorFlow for a prefix with no suffix or "
    "ending .ckpt.",
)
@_convention_option(
    "--layout", "Permute weights to this framework's layout (dense [out, in] vs [in, out], convolutions)."
)
@_convention_option(
    "--names", "Rename to this framework's convention (layer1/kernel <-> layer1.weight, BatchNorm's four)."
)
@click.option(
    "--strip-prefix",
    metavar="PREFIX",
    help="After --names, remove PREFIX from the names starting with it (Keras's model name: --strip-prefix cnn.).",
)
@click.option(
    "--rename",
    "rename",
    metavar="FROM=TO",
    multiple=True,
    help="After --names and --strip-prefix, rename the names FROM matches whole: a glob whose '*' TO gives back in "
    "order ('layer1.*=0.*'), or re:REGEX=REPLACEMENT ('re:block(\\d+)\\.(.*)=layers.\\1.\\2'). Repeatable, "
    "applied in turn.",
)
@click.option(
    "--key-map",
    "key_map",
    metavar="FILE.json",
    type=click.Path(dir_okay=False),
    help="Last, rename exactly by a JSON object of old name to new name.",
)
@click.option("--include-optimizer", is_flag=True, help="Also write optimizer state (weights only by default).")
@click.option("--filter", "pattern", metavar="GLOB", help="Only tensors whose source name matches this glob.")
@click.option(
    "--dtype", type=click.Choice(["float16", "bfloat16", "float32"]), help="Cast the floating tensors to this type."
)
@click.option(
    "--max-shard-size",
    metavar="SIZE",
    help="Write DESTINATION as a Hugging Face model folder (safetensors, or --to pytorch, flax-msgpack): shards of "
    "at most SIZE (5GB = 5*10**9 bytes, 500MB, 2GiB) and their index, with the source model's config.json. A "
    "DESTINATION ending in '/' is such a folder, of 5GB shards unless told.",
)
@click.option(
    "-v", "--verbose", is_flag=True, help=f"List every tensor written (by default the first {SHOWN}, and counts)."
)
@click.option("--json", "as_json", is_flag=True, help="A JSON summary of what was written, every tensor in it.")
@dequantize_option
@step_option
@pass_output
def convert_command(
    out: Output,
    source: Path,
    destination: str,
    to: str | None,
    layout: str,
    names: str,
    strip_prefix: str | None,
    rename: tuple[str, ...],
    key_map: str | None,
    include_optimizer: bool,
    pattern: str | None,
    dtype: str | None,
    max_shard_size: str | None,
    verbose: bool,
    dequantize: bool,
    step: int | None,
) -> None:
    """Write SOURCE's weights to DESTINATION in another format, layout or naming; verified before it appears."""
    from weightscope.convert import convert
    from weightscope.renames import Renames, load_key_map

    renames = Renames.parse(strip_prefix, rename, None if key_map is None else load_key_map(key_map))
    if destination.endswith(("/", os.sep)) and max_shard_size is None:  # out/: a model folder, as save_pretrained's
        from weightscope.shards import DEFAULT_SHARD_SIZE

        max_shard_size = DEFAULT_SHARD_SIZE
    with _open(source, step=step, dequantize=dequantize) as ckpt, out.progress(0, 0, f"convert {source.name}") as bar:
        result = convert(
            ckpt,
            Path(destination),
            to=to,
            layout=layout,
            names=names,
            include_optimizer=include_optimizer,
            pattern=pattern,
            dtype=dtype,
            progress=bar,
            max_shard_size=max_shard_size,
            renames=renames,
        )
    for name, why in result.ambiguous.items():
        out.note(f"kept as is: '{safe_text(name)}': {why}")
    for note in result.notes:
        out.note(safe_text(note))
    out.result(result, lambda result: _convert_text(result, verbose), to_json=lambda result: result.to_json())


def _sample(tensors: Sequence[PlannedTensor]) -> list[PlannedTensor]:
    """``SHOWN`` of the tensors, in order: the first of each layout (a convolution's, a dense kernel's, one
    kept), then the first others."""
    firsts: dict[str, int] = {}
    for index, tensor in enumerate(tensors):
        firsts.setdefault(tensor.layout, index)
    chosen = list(firsts.values())[:SHOWN]
    chosen += [index for index in range(len(tensors)) if index not in chosen][: SHOWN - len(chosen)]
    return [tensors[index] for index in sorted(chosen)]


def _convert_text(result: Conversion, verbose: bool) -> Iterator[str]:
    """What was written: every tensor with ``verbose``, else the first few, then counts of what changed."""
    from weightscope.convert import skipped_kinds

    shown = result.tensors if verbose else _sample(result.tensors)
    rows = [[tensor.source, tensor.name, format_shape(tensor.shape), tensor.layout] for tensor in shown]
    yield render_table(["source", "written as", "shape", "layout"], rows)
    if len(shown) < len(result.tensors):
        yield f"{len(result.tensors) - len(shown)} more: --verbose lists every tensor"
    yield (
        f"wrote {len(result.tensors)} tensors, {format_bytes(result.nbytes)}, to {safe_text(result.destination)} "
        f"({result.format}, verified) in {result.seconds:.2f} s"
    )
    yield f"layouts: {_count_kinds(tensor.layout for tensor in result.tensors)}"
    renamed = sum(tensor.name != tensor.source for tensor in result.tensors)
    if renamed:
        yield f"renamed: {renamed} of {len(result.tensors)} tensors (to {result.names}'s names)"
    cast = [tensor for tensor in result.tensors if tensor.cast_from is not None]
    if cast:
        yield f"cast to {result.dtype}: {len(cast)} tensors ({_count_kinds(str(tensor.cast_from) for tensor in cast)})"
    if result.skipped:
        yield f"left out: {_count_kinds(skipped_kinds(result.skipped), unit='tensor')}"
