"""Every fact about a format lives in its registry entry and its own module: nowhere else in the library
names a registered format (issue 17), so a new format is one module plus one ``register_format``."""

from __future__ import annotations

import ast
from pathlib import Path

import weightscope
from weightscope.formats import FORMATS

SOURCE = Path(weightscope.__file__).parent
FORMAT_MODULES = {path.relative_to(SOURCE).as_posix() for path in (SOURCE / "formats").glob("*.py")}

# Where a format's name is a string for another reason; each (file, name) says why.
NOT_FORMAT_FACTS = {
    # "pytorch" and "tensorflow" as frameworks' conventions (--layout, --names: dense [out, in] vs
    # [in, out], layer1.weight vs layer1/kernel), which hold whatever format the tensors are in; they
    # gather in weightscope.conventions (issue 17 item 5).
    ("conventions.py", "pytorch"),
    ("conventions.py", "tensorflow"),
    ("layers.py", "pytorch"),
    ("layers.py", "tensorflow"),
    ("convert.py", "pytorch"),
    ("convert.py", "tensorflow"),
    ("summary.py", "pytorch"),
    ("summary.py", "tensorflow"),
    ("analysis.py", "pytorch"),
    ("viewer/server.py", "pytorch"),
    ("viewer/server.py", "tensorflow"),
    # The demo trains with TensorFlow (an engine) and, as the seed's program does, writes its checkpoint.
    ("demo.py", "tensorflow"),
}


def format_names_in(path: Path) -> set[str]:
    """The registered formats' names that appear in ``path`` as whole string literals."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in FORMATS
    }


def test_format_names_appear_only_in_the_registry_and_their_modules() -> None:
    hits = set()
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE).as_posix()
        if relative in FORMAT_MODULES or relative.startswith("containers/"):
            continue
        hits |= {(relative, name) for name in format_names_in(path)}
    assert hits - NOT_FORMAT_FACTS == set()


def test_the_scan_sees_a_format_name(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text('TARGETS = {"safetensors": ".safetensors"}\nwhat = f"{1} gguf"\n', encoding="utf-8")
    assert format_names_in(module) == {"safetensors"}
