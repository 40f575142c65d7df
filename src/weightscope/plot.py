"""Pictures of tensors as PNG files: a histogram of the values, or a heatmap; any size, in bounded memory.

Both are computed chunk by chunk (``weightscope.analysis.chunks``), so a tensor larger
than memory is drawn with a few chunks' worth of it:

* a histogram (``weightscope.histograms``, shared with the viewer and notebooks): the
  bin edges span the tensor's finite minimum and maximum (``tensor_stats``), then each
  chunk's values are counted with ``np.histogram`` and the counts added up; NaN and
  infinite values are left out, and counted in a note on the figure. The counts equal
  ``np.histogram`` of the whole array's finite values with the same edges. Two tensors
  (``compare``) share one set of edges.
* a heatmap (``block_means``): the tensor as a matrix (a vector is one row; a tensor of
  rank 3 or more is reshaped to [first dimension, the rest], said on the figure). A
  matrix with more rows or columns than the plot has pixels is shrunk honestly: each
  cell is the mean of an R×C block of values (those of the last block row and column
  are what is left over, possibly fewer), summed band of rows by band of rows. Colours
  are a diverging map centred on 0, with a colorbar.

matplotlib is imported only when a picture is drawn, and only its object-oriented
core (``Figure`` and the Agg canvas): pyplot, its global figure list and the user's
chosen backend are never touched. Without matplotlib, drawing raises
``UnsupportedFormatError`` with the install hint ``pip install 'weightscope[plot]'``.

Each PNG is exactly the requested size in pixels and is written atomically; an
existing file at the output path is replaced, as plotting tools do.
"""

from __future__ import annotations

import math
import os
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from weightscope.analysis import CHUNK_ELEMENTS, numeric_kind, widened
from weightscope.atomic import atomic_write
from weightscope.errors import TensorNotFoundError, UnsupportedFormatError, UsageError
from weightscope.histograms import DEFAULT_BINS, bin_edges, check_plottable, finite_range, histogram
from weightscope.output import format_shape, safe_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from weightscope.checkpoint import Checkpoint

INSTALL_HINT = "plotting needs matplotlib: pip install 'weightscope[plot]'"
KINDS = ("hist", "heatmap")
DEFAULT_SIZE = (800, 600)
MIN_SIZE = (320, 240)  # room for the title, the axes' labels and a note
MAX_SIZE = 16384
MAX_BINS = 100_000
DPI = 100  # text is sized in points: 10 pt is about 14 pixels

# Margins around the axes, in pixels: (left, right, top, bottom before notes).
_HIST_MARGINS = (95, 25, 58, 48)
_HEATMAP_MARGINS = (95, 110, 58, 48)
_NOTE_LINE = 15  # pixels per line of notes under the axes
_MIN_PLOT = 30  # pixels of the axes, at least, each way
_CHAR_WIDTH = 7  # a rough width of a 10 pt character, to shorten long titles
_NOTE_CHAR_WIDTH = 6.5  # and of an 8.5 pt one, to wrap notes
_CENTRED_TICKS = 16  # up to this many rows (columns), each is labelled at its centre


# -- the figures, in bounded memory ------------------------------------------------------


def matrix_shape(shape: Sequence[int]) -> tuple[int, int]:
    """The [rows, columns] a tensor of ``shape`` is drawn as: a vector is one row, rank 3+ is [first, rest]."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0], math.prod(shape[1:])


@dataclass(frozen=True)
class BlockMeans:
    """A matrix shrunk to ``means`` (NaN where a block holds no finite value): each cell the mean of a block."""

    means: np.ndarray  # float64, [ceil(rows / block rows), ceil(columns / block columns)]
    block: tuple[int, int]  # rows and columns of values per cell (the last row and column of cells: up to)
    matrix: tuple[int, int]  # the rows and columns of the tensor drawn as a matrix
    left_out: int  # NaN and infinite values, not in any mean

    @property
    def downsampled(self) -> bool:
        return self.block != (1, 1)


def _row_band(array: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of the tensor as a matrix: a view of a contiguous tensor, else a copy of them only."""
    if array.ndim < 2:
        return array.reshape(1, -1)
    return array[start:stop].reshape(stop - start, -1)


def block_means(array: np.ndarray, cells: tuple[int, int], elements: int = CHUNK_ELEMENTS) -> BlockMeans:
    """The tensor as a matrix of at most ``cells`` (rows, columns): block means when it is larger.

    Blocks are R×C with R = ceil(rows / cell rows) and C = ceil(columns / cell columns);
    the matrix is read in bands of whole block rows, each cut into pieces of about
    ``elements`` values, so memory stays bounded whatever the tensor's size.
    """
    check_plottable("tensor", array.dtype, array.shape)
    rows, columns = matrix_shape(array.shape)
    block_rows = max(1, math.ceil(rows / max(1, cells[0])))
    block_columns = max(1, math.ceil(columns / max(1, cells[1])))
    grid = (math.ceil(rows / block_rows), math.ceil(columns / block_columns))
    sums = np.zeros(grid, dtype=np.float64)
    bad = np.zeros(grid, dtype=np.int64)  # non-finite values per block
    band = block_rows * max(1, elements // max(1, columns) // block_rows)  # rows per band
    piece = block_columns * max(1, elements // band // block_columns)  # columns per piece
    for top in range(0, rows, band):
        values = _row_band(array, top, min(rows, top + band))
        for left in range(0, columns, piece):
            wide = widened(values[:, left : left + piece])
            row_starts = np.arange(0, wide.shape[0], block_rows)
            column_starts = np.arange(0, wide.shape[1], block_columns)
            finite = np.isfinite(wide)
            cell = (slice(top // block_rows, None), slice(left // block_columns, None))
            if not finite.all():
                wide = np.where(finite, wide, 0.0)
                missing = np.add.reduceat(
                    np.add.reduceat(~finite, row_starts, axis=0, dtype=np.int64), column_starts, axis=1
                )
                bad[cell][: missing.shape[0], : missing.shape[1]] += missing
            total = np.add.reduceat(np.add.reduceat(wide, row_starts, axis=0), column_starts, axis=1)
            sums[cell][: total.shape[0], : total.shape[1]] += total
    row_sizes = np.minimum(block_rows, rows - np.arange(grid[0]) * block_rows)
    column_sizes = np.minimum(block_columns, columns - np.arange(grid[1]) * block_columns)
    counts = np.outer(row_sizes, column_sizes) - bad
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return BlockMeans(means, (block_rows, block_columns), (rows, columns), int(bad.sum()))


# -- drawing -----------------------------------------------------------------------------


def require_matplotlib() -> None:
    """Raise the install hint now when matplotlib is missing: before any work that would need it."""
    _matplotlib()


def _matplotlib() -> tuple[Any, Any, Any]:
    """matplotlib, its ``Figure`` and the Agg canvas; imported here, never at weightscope's import."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UnsupportedFormatError(INSTALL_HINT) from None
    return matplotlib, Figure, FigureCanvasAgg


def parse_size(text: str) -> tuple[int, int]:
    """``"800x600"`` -> (800, 600), checked against what a readable figure needs."""
    match = re.fullmatch(r"\s*(\d+)\s*[x×X]\s*(\d+)\s*", text)
    if match is None:
        raise UsageError(f"--size wants WIDTHxHEIGHT in pixels, such as 800x600, not {text!r}")
    size = (int(match.group(1)), int(match.group(2)))
    check_size(size)
    return size


def check_size(size: tuple[int, int]) -> None:
    width, height = size
    if not (MIN_SIZE[0] <= width <= MAX_SIZE and MIN_SIZE[1] <= height <= MAX_SIZE):
        raise UsageError(
            f"image size {width}x{height} is outside {MIN_SIZE[0]}x{MIN_SIZE[1]} to {MAX_SIZE}x{MAX_SIZE} pixels"
        )


def _inches(pixels: int) -> float:
    """``pixels / DPI``, nudged up so that Agg (which truncates inches × dpi) makes exactly ``pixels``."""
    inches = pixels / DPI
    while inches * DPI < pixels:
        inches = math.nextafter(inches, math.inf)
    return inches


def _note_lines(notes: Sequence[str], width: int) -> list[str]:
    """The notes wrapped to a figure ``width`` pixels wide (continuation lines indented)."""
    limit = max(20, int((width - 16) / _NOTE_CHAR_WIDTH))
    return [line for note in notes for line in textwrap.wrap(note, limit, subsequent_indent="  ")]


def _shorten(text: str, width: int) -> str:
    """``text`` cut from the left to about ``width`` pixels of 10 pt characters."""
    limit = max(8, width // _CHAR_WIDTH)
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


@dataclass
class _Layout:
    """A figure of exact pixel size with one axes placed by pixel margins, a title and notes."""

    figure: Figure
    axes: Any
    size: tuple[int, int]
    plot_pixels: tuple[int, int]  # the axes' height and width in pixels


def _layout(
    size: tuple[int, int], margins: tuple[int, int, int, int], title: Sequence[str], notes: Sequence[str]
) -> _Layout:
    check_size(size)
    _, figure_class, canvas_class = _matplotlib()
    width, height = size
    figure = figure_class(figsize=(_inches(width), _inches(height)), dpi=DPI, facecolor="white")
    canvas_class(figure)
    left, right, top, bottom = margins
    lines = _note_lines(notes, width)
    bottom += _NOTE_LINE * len(lines)
    plot_width, plot_height = width - left - right, height - top - bottom
    if min(plot_width, plot_height) < _MIN_PLOT:
        raise UsageError(f"image size {width}x{height} leaves no room for the plot and its notes; make it larger")
    axes = figure.add_axes((left / width, bottom / height, plot_width / width, plot_height / height))
    figure.text(
        0.5,
        1 - 8 / height,
        "\n".join(_shorten(line, width - 20) for line in title),
        ha="center",
        va="top",
        fontsize=10,
        parse_math=False,
    )
    if notes:
        figure.text(
            8 / width,
            6 / height,
            "\n".join(lines),
            ha="left",
            va="bottom",
            fontsize=8.5,
            color="0.25",
            parse_math=False,
        )
    return _Layout(figure, axes, size, (plot_height, plot_width))


def save_png(figure: Figure, out: str | os.PathLike[str]) -> Path:
    """Write the figure to ``out`` as a PNG of its exact pixel size, atomically (replacing any file there)."""
    from matplotlib.transforms import Bbox

    out = Path(out)
    whole = Bbox.from_bounds(0, 0, *figure.get_size_inches())  # not the user's savefig.bbox, which may be "tight"
    with atomic_write(out) as handle:
        figure.savefig(handle, format="png", dpi=figure.dpi, bbox_inches=whole, facecolor="white")
    return out


@dataclass(frozen=True)
class Tensor:
    """A tensor to draw, with what its title says: the file it came from, its name, type and shape."""

    file: str
    name: str
    type_name: str
    array: np.ndarray

    @property
    def label(self) -> str:
        return f"{safe_text(self.name)} · {self.type_name} · {format_shape(self.array.shape)}"

    @classmethod
    def of(cls, ckpt: Checkpoint, name: str) -> Tensor:
        info = ckpt.info(name)
        return cls(str(ckpt.path), info.name, info.type_name, ckpt[info.name])


def _left_out_note(nans: int, infs: int, what: str) -> list[str]:
    if not nans and not infs:
        return []
    parts = [f"{nans:,} NaN" if nans else "", f"{infs:,} infinite" if infs else ""]
    return [f"{what}: {' and '.join(part for part in parts if part)} value{'s' * (nans + infs != 1)} left out"]


def histogram_figure(
    tensor: Tensor,
    *,
    bins: int = DEFAULT_BINS,
    log: bool = False,
    compare: Tensor | None = None,
    size: tuple[int, int] = DEFAULT_SIZE,
) -> tuple[Figure, list[str]]:
    """The histogram of one tensor (overlaid with ``compare``'s, on shared edges); the figure and its notes."""
    tensors = [tensor] if compare is None else [tensor, compare]
    for item in tensors:
        check_plottable(item.name, item.array.dtype, item.array.shape)
    if not 1 <= bins <= MAX_BINS:
        raise UsageError(f"--bins must be from 1 to {MAX_BINS:,}, not {bins}")
    ranges = [finite_range(item.array) for item in tensors]
    edges = bin_edges(ranges, bins)
    histograms = [
        histogram(item.array, edges=edges, value_range=value_range)
        for item, value_range in zip(tensors, ranges, strict=True)
    ]
    notes: list[str] = []
    for side, item, result in zip("AB", tensors, histograms, strict=False):
        where = f"{side}: {safe_text(item.name)}" if compare is not None else safe_text(item.name)
        notes += _left_out_note(result.nans, result.infs, where)
        if result.left_out == result.count:
            notes.append(f"{where}: no finite values to count")
    if compare is None:
        title = [safe_text(tensor.file), tensor.label]
    else:
        title = [f"A: {safe_text(tensor.file)}   B: {safe_text(compare.file)}", tensor.label]
        if compare.label != tensor.label:
            title[1] = f"A: {tensor.label}   B: {compare.label}"
    bin_width = (edges[-1] - edges[0]) / bins
    caption = f"{bins} bins of width {bin_width:.4g} from {edges[0]:.6g} to {edges[-1]:.6g}"
    layout = _layout(size, _HIST_MARGINS, title, [caption, *notes])
    axes = layout.axes
    colours = ("tab:blue", "tab:orange")
    baseline = 0.5 if log else 0.0  # a log axis has no 0; 0.5 lies below a count of 1
    for index, (item, result) in enumerate(zip(tensors, histograms, strict=True)):
        label = None
        if compare is not None:
            label = f"{'AB'[index]}: {safe_text(item.file)} ({safe_text(item.name)})"
        stairs_values = np.maximum(result.counts, baseline) if log else result.counts
        axes.stairs(
            stairs_values,
            edges,
            baseline=baseline,
            fill=True,
            alpha=0.45 if compare is not None else 0.8,
            color=colours[index],
            label=label,
        )
        if compare is not None:
            axes.stairs(stairs_values, edges, baseline=baseline, color=colours[index], linewidth=1.2)
    if log:
        axes.set_yscale("log")
        # Up to at least 10, so that a decade shows and the ticks are powers of ten.
        axes.set_ylim(baseline, max(10.0, 2.0 * max(int(result.counts.max()) for result in histograms)))
    else:
        axes.yaxis.set_major_locator(_locator(layout.plot_pixels[0], 50, integer=True))  # counts
    axes.xaxis.set_major_locator(_locator(layout.plot_pixels[1], 90))
    axes.set_xlim(edges[0], edges[-1])
    axes.set_xlabel("value")
    axes.set_ylabel("count (log scale)" if log else "count")
    axes.grid(True, alpha=0.3)
    if compare is not None:
        legend = axes.legend(loc="upper right", fontsize=8, framealpha=0.9)
        for text in legend.get_texts():
            text.set_parse_math(False)
    return layout.figure, notes


def heatmap_figure(tensor: Tensor, *, size: tuple[int, int] = DEFAULT_SIZE) -> tuple[Figure, list[str]]:
    """The tensor as a matrix in a diverging colour map centred on 0; the figure and its notes."""
    check_plottable(tensor.name, tensor.array.dtype, tensor.array.shape)
    shape = tensor.array.shape
    rows, columns = matrix_shape(shape)
    notes: list[str] = []
    if len(shape) == 0:
        notes.append("a scalar, drawn as one cell")
    elif len(shape) == 1:
        notes.append(f"a vector of {shape[0]:,} values, drawn as one row")
    elif len(shape) > 2:
        notes.append(f"reshaped {format_shape(shape)} → [{rows}, {columns}] (first dimension × the rest)")
    # The notes take room from the plot, and the plot's size decides the blocks and so the notes: the cells
    # are chosen for the plot left by the longest notes there could be, so that each gets a pixel or more.
    check_size(size)
    width, height = size
    margin_left, margin_right, margin_top, margin_bottom = _HEATMAP_MARGINS

    def room(extra: list[str]) -> tuple[int, int]:
        lines = len(_note_lines([*notes, *extra], width))
        return height - margin_top - margin_bottom - _NOTE_LINE * lines, width - margin_left - margin_right

    possible = []
    if numeric_kind(tensor.array.dtype) == "f":  # NaN and infinities are possible
        possible = [_left_out_cells_note(max(2, rows * columns)), _GREY_NOTE]
    plot_pixels = room(possible)
    if rows > plot_pixels[0] or columns > plot_pixels[1]:
        plot_pixels = room([*possible, _block_note((rows, columns), (rows, columns), (rows, columns))])
    if min(plot_pixels) < _MIN_PLOT:
        raise UsageError(f"image size {width}x{height} leaves no room for the heatmap and its notes; make it larger")
    result = block_means(tensor.array, (max(1, plot_pixels[0]), max(1, plot_pixels[1])))
    if result.downsampled:
        notes.append(_block_note(result.block, result.means.shape, (rows, columns)))
    if result.left_out:
        notes.append(_left_out_cells_note(result.left_out))
    if np.isnan(result.means).any():
        notes.append(_GREY_NOTE)
    layout = _layout(size, _HEATMAP_MARGINS, [safe_text(tensor.file), tensor.label], notes)
    axes = layout.axes
    matplotlib, _, _ = _matplotlib()
    finite = result.means[np.isfinite(result.means)]
    limit = float(np.abs(finite).max()) if finite.size else 0.0
    limit = limit or 1.0
    colours = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.6")
    block_rows, block_columns = result.block
    grid_rows, grid_columns = result.means.shape
    image = axes.imshow(
        result.means,
        cmap=colours,
        vmin=-limit,
        vmax=limit,
        aspect="auto",
        interpolation="nearest",
        extent=(0, grid_columns * block_columns, grid_rows * block_rows, 0),
    )
    axes.set_xlim(0, columns)  # a partial last block is drawn only as far as the matrix goes
    axes.set_ylim(rows, 0)
    bar_left = (width - margin_right + 14) / width
    bar = layout.figure.add_axes((bar_left, axes.get_position().y0, 16 / width, axes.get_position().height))
    colorbar = layout.figure.colorbar(image, cax=bar)
    colorbar.set_label("block mean" if result.downsampled else "value")
    _index_ticks(axes.xaxis, columns, result.block[1], layout.plot_pixels[1] // 90)
    if len(shape) < 2:
        axes.set_yticks([])
        axes.set_ylabel("(one row)")
        axes.set_xlabel("index")
    else:
        _index_ticks(axes.yaxis, rows, result.block[0], layout.plot_pixels[0] // 50)
        axes.set_ylabel("row (dimension 0)")
        axes.set_xlabel("column" if len(shape) == 2 else "column (dimensions 1… flattened)")
    return layout.figure, notes


_GREY_NOTE = "grey: cells with no finite value"


def _block_note(block: tuple[int, int], cells: tuple[int, int], matrix: tuple[int, int]) -> str:
    partial = matrix[0] % block[0] or matrix[1] % block[1]
    return (
        f"each cell is the mean of a {block[0]}×{block[1]} block of values ({cells[0]:,}×{cells[1]:,} cells for "
        f"{matrix[0]:,}×{matrix[1]:,}{'; the last row and column of cells: the rest' if partial else ''})"
    )


def _left_out_cells_note(count: int) -> str:
    return f"{count:,} NaN or infinite value{'s' * (count != 1)} left out of the cells"


def _locator(pixels: int, spacing: int, *, integer: bool = False) -> Any:
    """Ticks about ``spacing`` pixels apart, so that a small image's labels do not run together."""
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(nbins=max(2, pixels // spacing), integer=integer)


def _index_ticks(axis: Any, count: int, block: int, most: int) -> None:
    """Whole-number ticks; a few rows (columns) each labelled at its centre."""
    if block == 1 and count <= min(_CENTRED_TICKS, max(2, most * 2)):
        axis.set_ticks(np.arange(count) + 0.5, [str(index) for index in range(count)])
        return
    axis.set_major_locator(_locator(most, 1, integer=True))


# -- a checkpoint's tensors to files -----------------------------------------------------


def _sanitise(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned or "tensor"


def output_paths(out: str | Path, names: Sequence[str]) -> list[Path]:
    """Where each named tensor's picture goes: ``out`` for one; ``<stem>-<sanitised name><suffix>`` for several."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out must name a .png file, not '{safe_text(str(out))}'")
    if len(names) == 1:
        return [out]
    paths = [out.with_name(f"{out.stem}-{_sanitise(name)}{out.suffix}") for name in names]
    seen: dict[Path, str] = {}
    for name, path in zip(names, paths, strict=True):
        if path in seen:
            raise UsageError(
                f"'{safe_text(seen[path])}' and '{safe_text(name)}' would both be written to {safe_text(str(path))}; "
                "plot them one at a time"
            )
        seen[path] = name
    return paths


@dataclass(frozen=True)
class Plot:
    """One picture written: of tensor ``name`` (and ``other`` of the compared checkpoint)."""

    name: str
    path: Path
    kind: str
    other: str | None = None
    notes: list[str] = field(default_factory=list)


def _resolve_other(other: Checkpoint, asked: str, resolved: str) -> str:
    try:
        return other.resolve(asked)
    except TensorNotFoundError:
        if resolved == asked:
            raise
        return other.resolve(resolved)


def plot_checkpoint(
    ckpt: Checkpoint,
    names: Sequence[str],
    out: str | Path,
    *,
    kind: str = "hist",
    log: bool = False,
    bins: int | None = None,
    compare: Checkpoint | None = None,
    size: tuple[int, int] = DEFAULT_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> list[Plot]:
    """Draw each named tensor (a role name such as ``layer1/weight`` works too) to its own PNG.

    Every name, option and dtype is checked before the first file is written; the
    pictures are then drawn and written one at a time (``progress(done, total)`` told of
    each). ``log``, ``bins`` and ``compare`` are for histograms.
    """
    if kind not in KINDS:
        raise UsageError(f"--kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind == "heatmap":
        given = [option for option, value in (("--log", log), ("--bins", bins), ("--compare", compare)) if value]
        if given:
            raise UsageError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for --kind hist")
    if not names:
        raise UsageError("name at least one tensor to plot")
    check_size(size)
    bins = DEFAULT_BINS if bins is None else bins
    if not 1 <= bins <= MAX_BINS:
        raise UsageError(f"--bins must be from 1 to {MAX_BINS:,}, not {bins}")
    resolved: list[tuple[str, str | None]] = []
    for asked in names:
        name = ckpt.resolve(asked)
        other = None if compare is None else _resolve_other(compare, asked, name)
        if (name, other) not in resolved:
            resolved.append((name, other))
    for name, other in resolved:
        info = ckpt.info(name)
        check_plottable(name, info.dtype, info.shape)
        if compare is not None and other is not None:
            info = compare.info(other)
            check_plottable(other, info.dtype, info.shape)
    paths = output_paths(out, [name for name, _ in resolved])
    _matplotlib()  # the install hint before any work
    plots = []
    for (name, other), path in zip(resolved, paths, strict=True):
        tensor = Tensor.of(ckpt, name)
        if kind == "hist":
            second = None if compare is None or other is None else Tensor.of(compare, other)
            figure, notes = histogram_figure(tensor, bins=bins, log=log, compare=second, size=size)
        else:
            figure, notes = heatmap_figure(tensor, size=size)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(figure, path)
        plots.append(Plot(name, path, kind, other, notes))
        if progress is not None:
            progress(len(plots), len(resolved))
    return plots
