"""The layer model: what each tensor is for, whatever the framework called it.

TensorFlow calls a dense layer's weight matrix ``kernel``, PyTorch ``weight``, Keras 2
``kernel:0``; all three are the *weight* of their layer. This module gives every tensor
name a ``TensorRole``: the layer it belongs to, its role there, or that it is optimizer
state (and of which variable) or bookkeeping. The tables below (optimizer state) and
``weightscope.conventions``' (parameter names) are the whole of the knowledge; the
functions only apply them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from weightscope.conventions import BUFFER_ROLES, FRAMEWORK_NAMES, PARAMETER_ROLES, TF2_ATTRIBUTE, split_name

if TYPE_CHECKING:
    from weightscope.checkpoint import TensorInfo

# TF1 optimizer slots: NAME/<slot>, where <slot> may carry a _N suffix when several
# optimizers share a graph. The value is what the slot holds.
TF1_SLOTS: Mapping[str, str] = {
    "Adam": "m",
    "Adam_1": "v",
    "Momentum": "momentum",
    "RMSProp": "rms",
    "RMSProp_1": "momentum",
    "Adagrad": "accumulator",
    "AdagradDA": "gradient_accumulator",
    "AdagradDA_1": "gradient_squared_accumulator",
    "Adadelta": "accum",
    "Adadelta_1": "accum_update",
    "Ftrl": "accum",
    "Ftrl_1": "linear",
}
# Optimizer state that belongs to no single variable.
OPTIMIZER_GLOBALS = re.compile(r"(?:^|/)(beta[12]_power(?:_\d+)?)$")
BOOKKEEPING = re.compile(
    r"^(?:global_step|save_counter(?:/.*)?|_CHECKPOINTABLE_OBJECT_GRAPH)$|(?:^|[./])num_batches_tracked$"
)
# PyTorch's ``optimizer.state_dict()["state"]``, flattened (``optimizer.state.0.exp_avg``): the slots
# torch.optim's optimizers keep per parameter index.
TORCH_SLOTS = frozenset(
    {
        "step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "square_avg", "grad_avg",
        "acc_delta", "sum", "exp_inf", "mu_product", "eta", "mu", "ax", "prev", "step_size",
        "row_var", "col_var", "variance", "d", "prev_flat_grad",
    }
)  # fmt: skip
TORCH_STATE = re.compile(r"(?:^|\.)state\.\d+\.(?P<slot>[A-Za-z_]+)$")
TF2_SLOT = re.compile(r"^(?P<owner>.+)/\.OPTIMIZER_SLOT/(?P<optimizer>.+)/(?P<slot>[^/]+)/\.ATTRIBUTES/VARIABLE_VALUE$")


@dataclass(frozen=True)
class TensorRole:
    """What one tensor is: a layer's parameter, optimizer state, or bookkeeping."""

    kind: str  # "parameter", "optimizer" or "bookkeeping"
    layer: str | None = None  # for parameters: the layer's name
    role: str | None = None  # for parameters: weight, bias, scale, ...; else the slot
    owner: str | None = None  # for optimizer state: the variable it belongs to

    @property
    def buffer(self) -> bool:
        """Whether it is a layer's buffer (running statistics) rather than a learned parameter."""
        return self.kind == "parameter" and self.role in BUFFER_ROLES

    @property
    def category(self) -> str:
        """What counts tally it under: "parameter", "buffer", "optimizer" or "bookkeeping"."""
        return "buffer" if self.buffer else self.kind

    @property
    def label(self) -> str:
        """One word for listings: the role of a parameter, else the kind."""
        return self.role if self.kind == "parameter" and self.role else self.kind


def classify(name: str) -> TensorRole:
    """The role of the tensor called ``name``, from its name alone."""
    if BOOKKEEPING.search(name):
        return TensorRole("bookkeeping")
    if match := OPTIMIZER_GLOBALS.search(name):
        return TensorRole("optimizer", role=match.group(1))
    if match := TF2_SLOT.match(name):
        return TensorRole("optimizer", role=match["slot"], owner=match["owner"] + TF2_ATTRIBUTE)
    if (match := TORCH_STATE.search(name)) and match["slot"] in TORCH_SLOTS:
        return TensorRole("optimizer", role=match["slot"])
    if name.startswith(("optimizer/", "Adam/", "SGD/", "RMSprop/")):
        return TensorRole("optimizer", role=split_name(name)[1])
    parent, last = split_name(name)
    slot = re.sub(r"_\d+$", "", last) if last not in TF1_SLOTS else last
    if parent and (last in TF1_SLOTS or slot in TF1_SLOTS):
        return TensorRole("optimizer", role=TF1_SLOTS.get(last, last), owner=parent)
    role = PARAMETER_ROLES.get(last.lower() if len(last) == 1 else last, last)
    return TensorRole("parameter", layer=parent or name, role=role)


# A JAX training state's tree (Flax's TrainState, saved by Orbax or flax.serialization), its names joined by "/":
# optax's state under one of these roots mirrors the parameters' paths (``opt_state/0/mu/params/Dense_0/kernel``).
OPTAX_ROOTS = ("opt_state", "optimizer", "optimizer_state")


def jax_tree_roles(names: list[str]) -> dict[str, TensorRole]:
    """The optimizer state among a JAX tree's ``names``, each attached to the parameter whose path it ends with (the
    one parameter so named: an ambiguous ending attaches nothing), and a top-level ``step`` as bookkeeping."""
    state = [name for name in names if name.split("/", 1)[0] in OPTAX_ROOTS]
    stated = set(state)
    parameters = [name for name in names if name not in stated]
    ends: dict[str, str | None] = {}
    for name in parameters:
        parts = name.split("/")
        for start in range(len(parts)):
            end = "/".join(parts[start:])
            ends[end] = None if end in ends and ends[end] != name else name
    roles = {}
    for name in state:
        parts = name.split("/")
        role = TensorRole("optimizer", role=parts[-1])
        for slot in range(1, len(parts) - 1):
            owner = ends.get("/".join(parts[slot + 1 :]))
            if owner is not None:
                role = TensorRole("optimizer", role=parts[slot], owner=owner)
                break
        roles[name] = role
    if "step" in ends:
        roles["step"] = TensorRole("bookkeeping")
    return roles


@dataclass(frozen=True)
class Layer:
    """A layer's parameters (and buffers) by role, with the optimizer state of each of them."""

    name: str
    parameters: Mapping[str, TensorInfo]  # role -> tensor
    optimizer_state: Mapping[str, Mapping[str, TensorInfo]] = field(default_factory=dict)
    # ^ parameter tensor name -> {slot: state tensor}

    @property
    def weight(self) -> TensorInfo | None:
        return self.parameters.get("weight")

    @property
    def bias(self) -> TensorInfo | None:
        return self.parameters.get("bias")

    @property
    def parameter_count(self) -> int:
        """Values of the learned parameters: buffers left out, as PyTorch's ``parameters()`` leaves them."""
        return sum(info.size for role, info in self.parameters.items() if role not in BUFFER_ROLES)

    @property
    def buffer_count(self) -> int:
        """Values of the buffers (running statistics): Keras' non-trainable weights."""
        return sum(info.size for role, info in self.parameters.items() if role in BUFFER_ROLES)


class Layers(dict[str, Layer]):
    """Layers by name, in the order the checkpoint first names each (``Checkpoint.layers()``); a table in a notebook."""

    def _repr_html_(self) -> str:
        from weightscope.notebook import layers_html  # a notebook's: not imported at every start

        return layers_html(self)


def group_layers(infos: Iterable[TensorInfo], role_of: Callable[[str], TensorRole]) -> Layers:
    """Group tensors into layers, attaching optimizer state to its variable.

    Layers are named by their path less any first component all of them share (Keras
    puts the model's name there: ``sequential/layer1`` is the layer ``layer1``).
    """
    infos = list(infos)
    roles = {info.name: role_of(info.name) for info in infos}
    parameters: dict[str, dict[str, TensorInfo]] = {}
    owner_layer: dict[str, str] = {}
    for info in infos:
        role = roles[info.name]
        if role.kind == "parameter":
            assert role.layer is not None and role.role is not None
            parameters.setdefault(role.layer, {})[role.role] = info
            owner_layer[info.name] = role.layer
    state: dict[str, dict[str, dict[str, TensorInfo]]] = {}
    for info in infos:
        role = roles[info.name]
        if role.kind == "optimizer" and role.owner in owner_layer and role.role:
            layer = owner_layer[role.owner]
            state.setdefault(layer, {}).setdefault(role.owner, {})[role.role] = info
    shared = _shared_first_component(list(parameters))
    return Layers(
        (path[len(shared) :], Layer(path[len(shared) :], tensors, state.get(path, {})))
        for path, tensors in parameters.items()
    )


def _shared_first_component(paths: list[str]) -> str:
    """``model/`` (or PyTorch's ``model.``) when every path (two or more) starts with it and goes on past it."""
    if len(paths) < 2:
        return ""
    separator = "/" if "/" in paths[0] else "."
    if any(separator not in path for path in paths):
        return ""
    first = paths[0].split(separator, 1)[0] + separator
    return first if all(path.startswith(first) for path in paths) else ""


def find_by_role(name: str, layers: Mapping[str, Layer]) -> str | None:
    """The tensor that plays the role ``name`` asks for (``layer1/weight`` -> ``layer1/kernel``).

    The layer may be named as ``layers()`` names it or by its full path.
    """
    parent, last = split_name(name)
    wanted = PARAMETER_ROLES.get(last.lower() if len(last) == 1 else last)
    if wanted is None:
        return None
    normalized = parent.replace(".", "/")
    for layer in layers.values():
        info = layer.parameters.get(wanted)
        if info is not None and normalized in (
            layer.name.replace(".", "/"),
            split_name(info.name)[0].replace(".", "/"),
        ):
            return info.name
    return None


def naming_convention(found: str) -> str | None:
    """Which frameworks name a role the way ``found`` does ("TensorFlow and Keras call a
    layer's weight 'kernel'"), or None where the name is no framework's convention."""
    _, last = split_name(found)
    framework = FRAMEWORK_NAMES.get(last)
    if framework is None:
        return None
    verb = "call" if " and " in framework else "calls"
    return f"{framework} {verb} a layer's {PARAMETER_ROLES.get(last, last)} '{last}'"


def explain_role_name(asked: str, found: str) -> str:
    """Why ``asked`` was not found though ``found`` plays its role."""
    convention = naming_convention(found)
    return f"{convention}: did you mean '{found}'?" if convention else f"did you mean '{found}'?"
