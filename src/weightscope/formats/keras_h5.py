"""How a Keras HDF5 file holds what the reader lists: list attributes (split ``name0``, ``name1``… when long),
text attributes as bytes or str, the saved objects holding variables (in Keras' order, by file offset) and
their user names; tf-keras' uniquified variable scopes mapped back to the layer's name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import h5py


def _is_text(value: object) -> bool:
    return isinstance(value, str | bytes)


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _attribute_list(group: h5py.Group, name: str) -> list[str]:
    """A list attribute, joined from ``name0``, ``name1``… when Keras split a long one."""
    if name in group.attrs:
        return [_text(value) for value in np.atleast_1d(group.attrs[name])]
    values: list[str] = []
    chunk = 0
    while f"{name}{chunk}" in group.attrs:
        values.extend(_text(value) for value in np.atleast_1d(group.attrs[f"{name}{chunk}"]))
        chunk += 1
    return values


def _layer_weight_name(layer_name: str, weight_name: str) -> str:
    """A tf-keras weight's name under its layer's name: TF1 graphs made variable scopes unique
    (a second model's layer ``conv`` got variables ``conv_1/kernel``), the model config's
    layer names did not, and Keras loads by those."""
    scope, separator, rest = weight_name.partition("/")
    if separator and scope != layer_name and re.fullmatch(re.escape(layer_name) + r"_\d+", scope):
        return f"{layer_name}/{rest}"
    return weight_name


def _vars_groups(root: h5py.Group) -> Iterator[tuple[str, h5py.Group]]:
    """(object path, its ``vars`` group) for every saved object holding variables, in Keras' order.

    HDF5 lists links by name (``dense_10`` before ``dense_2``); Keras writes objects in
    model order, so the file offset of each object's first contiguous dataset restores it.
    """
    found: list[tuple[float, str, h5py.Group]] = []

    def visit(path: str | bytes, item: Any) -> None:
        if not isinstance(path, str):  # h5py gives a link name that is not UTF-8 as bytes
            raise ValueError(f"an object name that is not UTF-8: {path!r:.80}")  # -> CorruptCheckpointError
        if path.rsplit("/", 1)[-1] == "vars" and len(item):
            offsets = [item[key].id.get_offset() for key in item if key.isdigit()]
            first = min((offset for offset in offsets if offset is not None), default=float("inf"))
            found.append((first, path.removesuffix("vars").rstrip("/"), item))

    root.visititems(visit)
    return ((path, item) for _, path, item in sorted(found, key=lambda entry: entry[0]))


def _display_name(root: h5py.Group, path: str, shown: dict[str, tuple[str, ...]]) -> str:
    """``layers/dense`` -> ``layer1``: each object by its user name, collections (``layers``) left out.

    ``shown`` keeps each object path's parts: a path's parents are looked up once, not once
    per object under them (objects nested thousands deep made that cubic).
    """
    pending: list[str] = []
    prefix = path
    while prefix and prefix not in shown:
        pending.append(prefix)
        prefix = prefix.rpartition("/")[0]
    parts = shown.get(prefix, ())
    for prefix in reversed(pending):
        part = prefix.rpartition("/")[2]
        variables = root.get(f"{prefix}/vars")
        if variables is not None:
            parts += (_text(variables.attrs.get("name", part)),)
        elif part != "layers":
            parts += (part,)
        shown[prefix] = parts
    return "/".join(parts)
