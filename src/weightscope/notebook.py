"""How a checkpoint, its layers and the analyses' results show in a notebook: Jupyter's ``_repr_html_``.

Each class names its renderer here (``_repr_html_ = checkpoint_html``); every one is a
heading and one HTML table made by ``html_table``. Tensor names are hostile input (a file
may name a tensor ``<script>``): every cell and heading is shown through ``safe_text``
(control characters, bidirectional overrides and lone surrogates escaped, as on a
terminal) and then HTML-escaped. A long list shows its first ``MAX_ROWS`` rows and says
how many more there are. A ``TensorStats`` that carries a histogram
(``weightscope.histograms.stats_with_histogram``) shows it as a small PNG inline (a
``data:`` URI) when matplotlib is installed, and nothing in its place otherwise.

This module imports nothing of weightscope's but ``weightscope.output`` (the classes it
renders import it), and matplotlib only to draw a histogram.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from weightscope.output import format_bytes, format_count, format_shape, safe_text

if TYPE_CHECKING:
    from weightscope.analysis import CheckpointDiff, TensorStats
    from weightscope.checkpoint import Checkpoint
    from weightscope.health import Health
    from weightscope.histograms import Histogram
    from weightscope.layers import Layer
    from weightscope.spectra import Spectrum
    from weightscope.summary import Summary

MAX_ROWS = 100  # rows a table shows before it says how many more there are
_HISTOGRAM_INCHES = (3.2, 1.2)  # at 80 dpi: 256 × 96 pixels
_MISSING = "—"  # a figure that does not apply


def text(value: object) -> str:
    """``value`` as text safe in HTML: escaped as for a terminal (``safe_text``), then as HTML."""
    return html.escape(safe_text(str(value)))


def figure(value: float | int | None) -> str:
    """A figure for a table: integers with separators, floats to six significant digits, None as a dash."""
    if value is None:
        return _MISSING
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.6g}" if math.isfinite(value) else str(value)


def html_table(
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    total: int | None = None,
    what: str = "rows",
    right: Sequence[int] = (),
    heading: str = "",
) -> str:
    """A heading and a table of ``rows`` (cells shown through ``text``), at most ``MAX_ROWS`` of them: ``total`` (how
    many rows there are in all, when ``rows`` is cut short before) says how many more ``what`` were left out."""
    shown = list(itertools.islice(rows, MAX_ROWS + 1))
    total = len(shown) if total is None else total
    shown = shown[:MAX_ROWS]
    align = ' style="text-align: right"'

    def row(cells: Sequence[object], tag: str) -> str:
        cells_html = "".join(f"<{tag}{align * (i in right)}>{text(cell)}</{tag}>" for i, cell in enumerate(cells))
        return f"<tr>{cells_html}</tr>"

    parts = [f"<div><p><strong>{text(heading)}</strong></p>" if heading else "<div>", "<table>"]
    parts += ["<thead>", row(header, "th"), "</thead>", "<tbody>", *(row(cells, "td") for cells in shown)]
    if total > len(shown):
        more = f"… and {total - len(shown):,} more {what} ({total:,} in all)"
        parts.append(f'<tr><td colspan="{len(header)}"><em>{text(more)}</em></td></tr>')
    return "\n".join([*parts, "</tbody>", "</table>", "</div>"])


def plural(count: int, noun: str) -> str:
    """``1 tensor``, ``2 tensors``, ``1,024 tensors``."""
    return f"{count:,} {noun}{'s' * (count != 1)}"


def checkpoint_title(ckpt: Checkpoint) -> str:
    """``PyTorch checkpoint 'resnet18.pth': 122 tensors, 11.7 M values, 44.7 MiB``, from the index alone."""
    infos = list(ckpt.infos())
    values = sum(info.size for info in infos if info.dtype.kind != "O")
    sizes = (
        f"{plural(len(infos), 'tensor')}, {format_count(values, 'value')}, {format_bytes(sum(i.nbytes for i in infos))}"
    )
    return f"{ckpt.title or ckpt.format or type(ckpt).__name__} {str(ckpt.path)!r}: {sizes}"


def checkpoint_html(ckpt: Checkpoint) -> str:
    """The checkpoint's tensors: name, shape, stored type, bytes and role, from the index alone."""
    rows = (
        (info.name, format_shape(info.shape), info.type_label, format_bytes(info.nbytes), ckpt.role(info.name).label)
        for info in ckpt.infos()
    )
    header = ("name", "shape", "dtype", "size", "role")
    return html_table(header, rows, total=len(ckpt), what="tensors", right=(3,), heading=checkpoint_title(ckpt))


def layers_html(layers: Mapping[str, Layer]) -> str:
    """Each layer: its parameters' roles and shapes, their values, and the optimizer state attached."""
    rows = (
        (
            name,
            ", ".join(f"{role} {format_shape(info.shape)}" for role, info in layer.parameters.items()),
            figure(layer.parameter_count),
            figure(layer.buffer_count),
            ", ".join(sorted({slot for slots in layer.optimizer_state.values() for slot in slots})),
        )
        for name, layer in layers.items()
    )
    header = ("layer", "parameters", "values", "buffer values", "optimizer state")
    return html_table(
        header, rows, total=len(layers), what="layers", right=(2, 3), heading=plural(len(layers), "layer")
    )


def stats_html(stats: TensorStats) -> str:
    """A tensor's figures, and its histogram where it carries one and matplotlib draws it."""
    names = ("count", "min", "max", "mean", "std", "l2", "zeros", "nans", "infs")
    rows = [(name, figure(getattr(stats, name))) for name in names if getattr(stats, name) is not None]
    heading = f"{stats.name} · {stats.dtype} · {format_shape(stats.shape)}"
    table = html_table(("statistic", "value"), rows, right=(1,), heading=heading)
    image = "" if stats.histogram is None else histogram_image(stats.histogram)
    if not image:
        return table
    return f'<div style="display: flex; gap: 1em; align-items: flex-start">{table}{image}</div>'


def histogram_image(counted: Histogram) -> str:
    """A small PNG of the counts, inline as an ``<img>`` with a ``data:`` URI; "" without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return ""
    drawing = Figure(figsize=_HISTOGRAM_INCHES, dpi=80, facecolor="white")
    FigureCanvasAgg(drawing)
    axes = drawing.add_axes((0.02, 0.2, 0.96, 0.78))
    axes.stairs(counted.counts, counted.edges, fill=True, color="tab:blue", alpha=0.8)
    axes.set_yticks([])
    axes.tick_params(labelsize=7)
    axes.set_xlim(counted.edges[0], counted.edges[-1])
    for side in ("top", "right", "left"):
        axes.spines[side].set_visible(False)
    buffer = io.BytesIO()
    drawing.savefig(buffer, format="png", dpi=80)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    label = f"histogram: {len(counted.counts)} bins from {counted.edges[0]:.4g} to {counted.edges[-1]:.4g}"
    return f'<img src="data:image/png;base64,{encoded}" alt="{text(label)}" title="{text(label)}">'


def diff_html(diff: CheckpointDiff) -> str:
    """Two checkpoints compared: each pair's figures, then what only one of them has."""
    changed = sum(tensor.status != "equal" for tensor in diff.tensors)
    compared = plural(len(diff.tensors), "tensor")
    verdict = f"{changed:,} of {compared} differ" if changed else f"{compared} equal"
    if diff.only_a or diff.only_b:
        verdict += f", {len(diff.only_a):,} only in A, {len(diff.only_b):,} only in B"
    heading = f"A: {diff.a}  B: {diff.b}: {verdict} (matched by {diff.matched_by})"
    rows = (
        (
            tensor.name if tensor.other == tensor.name else f"{tensor.name} → {tensor.other}",
            tensor.status,
            figure(tensor.max_abs),
            figure(tensor.relative_l2),
            figure(tensor.cosine),
            figure(tensor.mismatched),
        )
        for tensor in diff.tensors
    )
    header = ("tensor", "status", "max |a − b|", "relative L2", "cosine", "mismatched")
    parts = [html_table(header, rows, total=len(diff.tensors), what="tensors", right=(2, 3, 4, 5), heading=heading)]
    for side, names in (("A", diff.only_a), ("B", diff.only_b)):
        if names:
            parts.append(html_table(("name",), ((name,) for name in names), total=len(names), what="tensors",
                                    heading=f"only in {side}: {plural(len(names), 'tensor')}"))  # fmt: skip
    return "\n".join(parts)


def summary_html(summary: Summary) -> str:
    """The network the weights describe: a row per layer, the totals in the heading."""
    totals = [
        f"{summary.parameters:,} parameters",
        f"{summary.buffers:,} buffer values",
        f"{summary.optimizer_slots + summary.optimizer_other:,} optimizer values",
        f"{summary.in_all:,} values in all",
    ]
    facts = ", ".join(f"{fact}: {value}" for fact, value in summary.model.items())
    heading = f"{plural(len(summary.layers), 'layer')}: {', '.join(totals)}" + (f" ({facts})" if facts else "")
    rows = (
        (layer.name, layer.description, figure(layer.parameters), figure(layer.buffers), figure(layer.optimizer_state))
        for layer in summary.layers
    )
    header = ("layer", "kind", "parameters", "buffers", "optimizer state")
    return html_table(header, rows, total=len(summary.layers), what="layers", right=(2, 3, 4), heading=heading)


def health_html(health: Health) -> str:
    """Each tensor checked, the flagged ones first, with what flagged them."""
    ordered = sorted(health.tensors, key=lambda tensor: not tensor.flags)
    rows = (
        (
            tensor.name,
            format_shape(tensor.shape),
            ", ".join(tensor.flags) or "ok",
            figure(tensor.max_over_std),
            figure(tensor.kurtosis),
            figure(tensor.spectral_norm),
        )
        for tensor in ordered
    )
    heading = f"{plural(len(health.tensors), 'tensor')} checked, {len(health.flagged):,} flagged"
    if health.failed:
        heading += f", {len(health.failed):,} unreadable ({', '.join(health.failed)})"
    header = ("tensor", "shape", "flags", "max |x| / std", "kurtosis", "spectral norm")
    return html_table(header, rows, total=len(ordered), what="tensors", right=(3, 4, 5), heading=heading)


def spectrum_html(spectrum: Spectrum) -> str:
    """One weight matrix's spectral figures."""
    names = ("spectral_norm", "frobenius_norm", "stable_rank", "effective_rank", "entropy", "alpha", "mp_spikes")
    rows: list[tuple[Any, ...]] = [(name.replace("_", " "), figure(getattr(spectrum, name))) for name in names]
    rows.append(("singular values", f"{len(spectrum.singular_values):,} ({spectrum.method})"))
    heading = f"{spectrum.name} · {format_shape(spectrum.shape)}" + (f" · {spectrum.note}" if spectrum.note else "")
    return html_table(("figure", "value"), rows, right=(1,), heading=heading)
