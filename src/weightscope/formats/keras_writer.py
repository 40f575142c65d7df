"""Keras 3 ``.weights.h5`` files written through h5py (``model.load_weights`` reads them), each layer's
variables planned from the tensors' specs before a byte is written. The reader, and the layout both
follow, is ``weightscope.formats.keras``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from weightscope.atomic import atomic_files
from weightscope.conventions import (
    KERAS_LAYER_VARIABLES,
    keras_layer_class,
    snake_case,
)
from weightscope.errors import UnsupportedFormatError, UsageError
from weightscope.formats.keras import WRITTEN_NAMES
from weightscope.writing import Holds, Spec, Tensors, Writer, checked, little_endian, plan

# -- writing ---------------------------------------------------------------------------------

# The dtypes a Keras variable has and HDF5 holds as Keras writes them (bfloat16 as a
# 2-byte opaque type with the attribute ``dtype="bfloat16"``).
_WRITABLE_DTYPES = frozenset(
    {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
    | {"float16", "float32", "float64", "bfloat16"}
)


class _Layer:
    """One layer of the file: its user name, Keras class, and its tensors in Keras's order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.variables: dict[str, Spec] = {}  # variable -> its tensor's plan
        self.class_name = ""
        self.ordered: list[str] = []  # tensor names, in the class's variable order

    def place(self, class_name: str) -> None:
        slots, required = KERAS_LAYER_VARIABLES[class_name]
        given = set(self.variables)
        ordered = [next(name for name in names if name in given) for names in slots if given & set(names)]
        known = {name for names in slots for name in names}
        canonical = {names[0] for names in slots if given & set(names)}
        if given - known or not required <= canonical or not given or len(ordered) != len(given):
            raise UsageError(
                f"layer '{self.name}' holds {', '.join(sorted(given)) or 'nothing'}; a Keras {class_name} holds "
                f"{', '.join('/'.join(names) for names in slots)} (always {', '.join(sorted(required)) or 'one'})"
            )
        self.class_name = class_name
        self.ordered = [self.variables[name].name for name in ordered]

    def infer(self) -> str:
        """The Keras class the variables' names and shapes (and, for a convolution, the layer's name) tell."""
        return keras_layer_class(self.name, {name: spec.shape for name, spec in self.variables.items()})


# What the files hold; a layer's variable is stored under the layer and its place: <model>/ does not tell two apart.
HOLDS = Holds(
    "a Keras weights file",
    "model.weights.h5",
    dtypes=_WRITABLE_DTYPES,
    stored_as=lambda name: tuple(name.split("/")[-2:]),
)


def _plan_layers(specs: list[Spec], layers: Mapping[str, str] | None) -> tuple[str, list[tuple[str, _Layer]]]:
    """(model prefix, [(group path, layer)]): every tensor placed in its layer's ``vars``, or UsageError."""
    prefixes: set[str] = set()
    found: dict[str, _Layer] = {}
    for spec in specs:
        name = spec.name
        parts = name.split("/")
        if parts[0] == "optimizer":
            raise UsageError(f"tensor '{name}': optimizer state is not written to a Keras weights file")
        if len(parts) < 2 or len(parts) > 3 or not all(parts):
            raise UsageError(
                f"tensor '{name}': not <layer>/<variable> (or <model>/<layer>/<variable>); "
                "nested models and layers without a name are not written"
            )
        if parts[-2] == "vars" and parts[-1].isdigit():
            raise UsageError(f"tensor '{name}': a variable named by its index; name it (kernel, bias, ...)")
        prefixes.add("/".join(parts[:-2]))
        if len(prefixes) > 1:
            raise UsageError(f"tensor '{name}': tensors of several models ({', '.join(sorted(prefixes))})")
        layer = found.setdefault(parts[-2], _Layer(parts[-2]))
        layer.variables[parts[-1]] = spec
    if layers is None:
        order = list(found.values())
        for layer in order:
            layer.place(layer.infer())
    else:
        missing = [name for name in found if name not in layers]
        if missing:
            raise UsageError(f"layers {', '.join(missing)} hold tensors but are not among the given layers")
        order = []
        for name, class_name in layers.items():
            layer = found.get(name, _Layer(name))
            if layer.variables:
                if class_name not in KERAS_LAYER_VARIABLES:
                    raise UsageError(f"layer '{name}': the writer does not know a Keras {class_name}'s variables")
                layer.place(class_name)
            else:
                layer.class_name = class_name
            order.append(layer)
    used: dict[str, list[_Layer]] = {}
    placed = []
    for layer in order:
        base = snake_case(layer.class_name)
        count = len(used.setdefault(base, []))
        used[base].append(layer)
        placed.append((f"layers/{base}" + (f"_{count}" if count else ""), layer))
    shared = [same for same in used.values() if len(same) > 1]
    if layers is None and shared:
        names = ", ".join(f"'{layer.name}'" for layer in shared[0])
        base = snake_case(shared[0][0].class_name)
        raise UsageError(
            f"layers {names} are all Keras {shared[0][0].class_name}: their order in the model decides which is "
            f"layers/{base} and which layers/{base}_1, and the names do not tell it; give the model's layers "
            "in order (weightscope.formats.keras.save(..., layers={layer.name: class name}))"
        )
    return prefixes.pop() if prefixes else "", placed


def save(
    tensors: Tensors | Mapping[str, ArrayLike],
    path: str | os.PathLike[str],
    *,
    layers: Mapping[str, str] | None = None,
) -> Path:
    """Write ``tensors`` as a Keras 3 ``.weights.h5`` at ``path`` that ``model.load_weights`` accepts.

    Names are ``<layer>/<variable>`` (``dense/kernel``), optionally under one shared model
    prefix (``cnn/dense/kernel``). Keras finds a layer's variables by its class and its
    place among the model's layers of that class (``layers/dense``, ``layers/dense_1``…),
    not by its name: the class is told by the variables (and a convolution's by its
    name and bias), and layers that share a class are refused, since their order is not
    in the names, unless ``layers`` gives the model's layers in order as name -> Keras
    class (``{layer.name: type(layer).__name__ for layer in model.layers}``). Everything
    is checked before a file is made; the file appears at ``path`` only once complete.
    """
    write(tensors, path, layers=layers)
    return Path(path)


def write(
    tensors: Tensors | Mapping[str, ArrayLike],
    path: str | os.PathLike[str],
    *,
    layers: Mapping[str, str] | None = None,
) -> list[Path]:
    """``save``, returning the one file written (the registry's ``Writer``)."""
    target = Path(path)
    source, specs = plan(tensors, target, HOLDS)
    prefix, placed = _plan_layers(specs, layers)
    try:
        import h5py
    except ImportError:
        raise UnsupportedFormatError("writing Keras files needs h5py: pip install 'weightscope[keras]'") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_files() as files:
        handle = files.create(target)
        temporary = handle.name
        handle.close()
        with h5py.File(temporary, "w") as file:
            model = file.create_group("vars")
            if prefix:
                model.attrs["name"] = prefix
            file.create_group("layers")
            for group_path, layer in placed:
                variables = file.create_group(group_path).create_group("vars")
                variables.attrs["name"] = layer.name
                if layer.ordered:
                    variables.attrs[WRITTEN_NAMES] = np.array(layer.ordered, dtype=h5py.string_dtype())
                for index, name in enumerate(layer.ordered):
                    spec = layer.variables[name.rsplit("/", 1)[-1]]
                    array = little_endian(checked(source.array(name), spec))
                    dataset = variables.create_dataset(str(index), data=array)
                    if spec.dtype.name == "bfloat16":
                        dataset.attrs["dtype"] = "bfloat16"
                    del array
            file.flush()
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
    return [target]


WRITER = Writer(HOLDS, write)
