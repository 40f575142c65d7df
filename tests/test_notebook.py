"""In a notebook: a checkpoint's readable repr, and the HTML tables Jupyter shows for it, its layers and the analyses.

The HTML is checked as a real Jupyter kernel renders it: a notebook made with nbformat runs in
ipykernel, executed by nbclient, and its outputs are read back. Tensor names are hostile input.
"""

from __future__ import annotations

import base64
import re
import struct
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

import weightscope as ws
from weightscope.analysis import checkpoint_diff, tensor_stats
from weightscope.health import checkpoint_health
from weightscope.histograms import stats_with_histogram
from weightscope.notebook import MAX_ROWS
from weightscope.output import format_bytes, format_count
from weightscope.spectra import checkpoint_spectra
from weightscope.summary import summarize

SRC = Path(__file__).resolve().parent.parent / "src"
HOSTILE = "<script>alert('x')</script>"


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    generator = np.random.default_rng(seed)
    return {
        "conv1.weight": generator.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "conv1.bias": np.zeros(8, np.float32),
        "fc.weight": generator.standard_normal((10, 32)).astype(np.float32),
        "fc.bias": np.ones(10, np.float32),
        HOSTILE: np.arange(4, dtype=np.int64),
    }


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    ws.save(_weights(), first)
    changed = _weights()
    changed["fc.weight"] = changed["fc.weight"] * 1.5
    del changed["conv1.bias"]
    ws.save(changed, second)
    return first, second


def test_repr_counts_tensors_values_and_bytes_in_words(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    first, _ = pair
    with ws.open(first) as ckpt:
        values = 8 * 27 + 8 + 320 + 10 + 4
        stored = format_bytes(values * 4 + 4 * 4)  # int64 the hostile one, float32 the rest
        assert (
            stored == "2.2 KiB" and repr(ckpt) == f"<safetensors {str(first)!r}: 5 tensors, {values} values, {stored}>"
        )
    ws.save({"only": np.ones(1, np.float32)}, tmp_path / "one.pt")
    assert (
        repr(ws.open(tmp_path / "one.pt"))
        == f"<PyTorch checkpoint {str(tmp_path / 'one.pt')!r}: 1 tensor, 1 value, 4 B>"
    )
    ws.save({"big": np.zeros((1000, 1170), np.float16)}, tmp_path / "big.npz")
    big = ws.open(tmp_path / "big.npz")
    assert repr(big) == f"<NumPy archive {str(tmp_path / 'big.npz')!r}: 1 tensor, 1.2 M values, 2.2 MiB>"
    assert repr(ws.open(tmp_path / "big.npz", framework="torch")) == repr(big) + " as torch tensors"


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0 values"), (1, "1 value"), (999, "999 values"), (1000, "1.0 k values"), (11_689_512, "11.7 M values"),
     (999_960, "1.0 M values"), (7_241_732_096, "7.2 G values"), (3 * 10**15, "3000.0 T values")],
)  # fmt: skip
def test_counts_read_as_people_write_model_sizes(count: int, text: str) -> None:
    assert format_count(count, "value") == text


def test_dir_shows_the_public_api_only() -> None:
    import weightscope.analysis  # noqa: F401  (a submodule imported is an attribute of the package, not its API)

    assert dir(ws) == sorted(ws.__all__)
    assert "analysis" not in dir(ws) and "annotations" not in dir(ws) and "open" in dir(ws)
    assert all(hasattr(ws, name) for name in dir(ws))


def test_html_escapes_hostile_names_and_cuts_long_tables(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    first, second = pair
    with ws.open(first) as a, ws.open(second) as b:
        pages = [
            a._repr_html_(),
            a.layers()._repr_html_(),
            checkpoint_diff(a, b)._repr_html_(),
            summarize(a)._repr_html_(),
            tensor_stats(HOSTILE, a[HOSTILE])._repr_html_(),
        ]
    for page in pages:
        assert "<script" not in page and "&lt;script&gt;" in page
    bidi = tmp_path / "bidi.safetensors"
    ws.save({"evil\u202eexe.gpj": np.ones(1, np.float32)}, bidi)
    assert "evil\\u202eexe.gpj" in ws.open(bidi)._repr_html_()  # escaped as on a terminal, never applied
    many = tmp_path / "many.safetensors"
    ws.save({f"t{index:03d}": np.zeros(1, np.float32) for index in range(MAX_ROWS + 50)}, many)
    page = ws.open(many)._repr_html_()
    assert page.count("<tr>") == 1 + MAX_ROWS + 1  # the header, the rows shown, the count of the rest
    assert f"t{MAX_ROWS - 1:03d}" in page and f"t{MAX_ROWS:03d}" not in page
    assert "… and 50 more tensors (150 in all)" in page


def _png_size(page: str) -> tuple[int, int]:
    found = re.search(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert found is not None, page
    png = base64.b64decode(found.group(1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def test_stats_show_a_small_histogram_when_matplotlib_is_there(
    pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with ws.open(pair[0]) as ckpt:
        values = ckpt["fc.weight"]
        stats = stats_with_histogram("fc.weight", values)
    assert stats.histogram is not None
    assert stats.histogram.counts.tolist() == np.histogram(values, 40)[0].tolist()
    assert stats == tensor_stats("fc.weight", values) and "histogram" not in stats.to_json()
    page = stats._repr_html_()
    assert _png_size(page) == (256, 96)
    assert ">fc.weight · float32 · [10, 32]<" in page and f">{float(values.max()):.6g}<" in page
    assert "<img" not in tensor_stats("fc.weight", values)._repr_html_()  # no histogram asked for, none drawn
    for module in ("matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)  # as if matplotlib were not installed
    page = stats._repr_html_()
    assert "<img" not in page and "fc.weight" in page


def test_health_and_spectra_show_their_figures(pair: tuple[Path, Path]) -> None:
    with ws.open(pair[0]) as ckpt:
        health = checkpoint_health(ckpt)
        spectra = checkpoint_spectra(ckpt, ["fc.weight"])
    page = health._repr_html_()
    assert f"{len(health.tensors)} tensors checked, {len(health.flagged)} flagged" in page
    assert all(f">{tensor.name}<" in page for tensor in health.tensors)
    spectrum = spectra[0]
    page = spectrum._repr_html_()
    assert ">fc.weight · [10, 32]<" in page and f">{spectrum.spectral_norm:.6g}<" in page


NOTEBOOK_CELLS = [
    "import sys\nsys.path.insert(0, {src!r})\nimport weightscope as ws\nckpt = ws.open({first!r})\nckpt",
    "ckpt.layers()",
    "from weightscope.analysis import checkpoint_diff\ncheckpoint_diff(ckpt, ws.open({second!r}))",
    "from weightscope.histograms import stats_with_histogram\nstats_with_histogram('fc.weight', ckpt['fc.weight'])",
    "from weightscope.summary import summarize\nsummarize(ckpt)",
    "print(dir(ws))",
]


def test_a_real_jupyter_kernel_shows_the_tables(pair: tuple[Path, Path], tmp_path: Path) -> None:
    first, second = pair
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(cell.format(src=str(SRC), first=str(first), second=str(second)))
        for cell in NOTEBOOK_CELLS
    ]
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [cell.outputs for cell in notebook.cells]
    assert all(output.output_type != "error" for cell in outputs for output in cell), outputs
    shown, layers, diff, stats, summary = (cell[-1]["data"] for cell in outputs[:5])
    with ws.open(first) as ckpt:
        assert shown["text/plain"] == repr(ckpt)
        for info in ckpt.infos():
            if info.name != HOSTILE:
                assert f"<td>{info.name}</td><td>{list(info.shape)}</td><td>{info.type_name}</td>" in shown["text/html"]
    assert "<td>fc</td><td>bias [10], weight [10, 32]</td>" in layers["text/html"]
    assert "1 of 4 tensors differ, 1 only in A, 0 only in B" in diff["text/html"]
    assert "<td>fc.weight</td><td>different</td>" in diff["text/html"]
    assert _png_size(stats["text/html"]) == (256, 96)
    assert "Conv2D 3×3 3 → 8" in summary["text/html"]
    for page in (shown, layers, diff, summary):
        assert "<script" not in page["text/html"]
        assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;" in page["text/html"]
    assert outputs[5][0]["text"].strip() == str(sorted(ws.__all__))
