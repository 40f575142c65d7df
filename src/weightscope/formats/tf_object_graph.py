"""Readable names and roles for TF2 object-based checkpoints, from their object graph.

A ``tf.train.Checkpoint`` (and Keras ``save_weights`` in TF format, and a SavedModel's
``variables/``) stores each variable under the *shortest* path through the graph of
Python objects that tracked it, escaped (``.`` → ``..``, ``/`` → ``.S``) and joined with
``/``, then ``/.ATTRIBUTES/VARIABLE_VALUE``. The graph itself is the scalar string
tensor ``_CHECKPOINTABLE_OBJECT_GRAPH``, a serialized ``TrackableObjectGraph``
(``core/protobuf/trackable_object_graph.proto``):

- ``nodes`` (1): node 0 is the root. Each node has ``children`` (1: ``node_id`` = 1,
  ``local_name`` = 2), ``attributes`` (2: ``name`` = 1 — ``VARIABLE_VALUE`` for a
  variable —, ``full_name`` = 2, the variable's own name, ``checkpoint_key`` = 3) and
  ``slot_variables`` (3: ``original_variable_node_id`` = 1, ``slot_name`` = 2,
  ``slot_variable_node_id`` = 3), the optimizer slots of TF1-style optimizers.
- The graph may have cycles (tf-keras models list themselves as ``root``) and several
  paths to one node (Keras 3 reaches every weight through both the model and the
  optimizer's ``_trainable_variables``), which is why shortest-path keys can name a
  model's kernel ``optimizer/_trainable_variables/0``.

What this module decides, as TensorFlow 2.21 with Keras 3 and tf-keras write them:

- **Readable name**: the attribute's ``full_name`` where it is non-empty and unique
  (``sequential/layer1/kernel``, ``layer1/kernel``, ``adam/sequential_layer1_kernel_momentum``);
  else the key without ``/.ATTRIBUTES/VARIABLE_VALUE``, unescaped.
- **Parameter or optimizer state**: a variable reachable from the root without crossing
  an edge named ``optimizer`` belongs to the model; the rest is the optimizer's.
- **Which variable a slot belongs to**: ``slot_variables`` references (legacy
  optimizers: ``.OPTIMIZER_SLOT`` keys); Keras 3's ``OPT/{model_layer_var}_momentum`` and
  ``_velocity`` full names; tf-keras's ``OPT/m/{var}`` and ``OPT/v/{var}``. First and
  second moments are reported as the slots ``m`` and ``v``, as for TF1's ``Adam`` and
  ``Adam_1``; optimizer state that belongs to no variable (``iteration``,
  ``learning_rate``, ``beta_1``…) keeps its own name as its slot.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from weightscope.errors import CorruptCheckpointError
from weightscope.formats.tf_state import OBJECT_GRAPH_KEY

if TYPE_CHECKING:
    from weightscope.layers import TensorRole

VARIABLE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_UNESCAPE = re.compile(r"\.(.)")
_KERAS3_SLOT = re.compile(r"^[^/]+/(?P<owner>.+)_(?P<slot>momentum|velocity)$")
_TF_KERAS_SLOT = re.compile(r"^[^/]+/(?P<slot>m|v)/(?P<owner>.+)$")
_SLOT_NAMES = {"momentum": "m", "velocity": "v"}
# Edges into optimizer state, and into Keras' own bookkeeping (metrics).
_OPTIMIZER_EDGE = "optimizer"
_BOOKKEEPING_EDGE = "keras_api"


def unescape_key(key: str) -> str:
    """A checkpoint key with TF's escapes undone: ``..`` → ``.``, ``.S`` → ``/``."""
    return _UNESCAPE.sub(lambda match: "/" if match.group(1) == "S" else match.group(1), key)


class ObjectGraph:
    """The object graph of one checkpoint: readable names at once, roles when first asked for.

    Names are what opening a checkpoint needs, so they come from one pass over the
    nodes; roles need walks of the whole graph and are worked out on first use.
    """

    def __init__(self, serialized: bytes, keys: set[str]) -> None:
        """``keys``: the keys stored in the checkpoint; attributes stored elsewhere are passed over."""
        from weightscope import _proto

        self._serialized = serialized
        self._keys = keys
        # One parse, no Python loop over the nodes: read as TrackableObjectGraphMerged, the
        # nodes merge into one message whose attributes are every node's.
        attributes = _parse(_proto.TrackableObjectGraphMerged, serialized).nodes.attributes
        stored = [(attribute.checkpoint_key, attribute.full_name) for attribute in attributes]
        if not keys.issuperset(map(itemgetter(0), stored)):
            stored = [pair for pair in stored if pair[0] in keys]
        # Mostly every full name is there and unique: take them all, then mend the rest.
        names = dict(stored)
        full_names = list(map(itemgetter(1), stored))
        unusable = {""}
        if len(set(full_names)) < len(full_names):
            unusable |= {full_name for full_name, count in Counter(full_names).items() if count > 1}
        for key, full_name in stored:
            if full_name in unusable or not key.endswith(VARIABLE_SUFFIX):
                names[key] = unescape_key(key.removesuffix(VARIABLE_SUFFIX).replace("/.ATTRIBUTES/", "/"))
        # A readable name must name one tensor only, and no other tensor by its raw key.
        if len(set(names.values())) < len(names) or not keys.isdisjoint(names.values()):
            taken = Counter(names.values())
            for key, name in names.items():
                if taken[name] > 1 or (name != key and name in keys):
                    names[key] = key
        self.names = names  # checkpoint key -> readable name

    def roles(self) -> dict[str, TensorRole]:
        """Checkpoint key -> role; the owners of optimizer state are readable names."""
        from weightscope import _proto
        from weightscope.layers import TensorRole, classify, split_name  # roles are asked for after opening

        nodes = _parse(_proto.TrackableObjectGraph, self._serialized).nodes
        count = len(nodes)
        if not count:
            raise CorruptCheckpointError(f"{OBJECT_GRAPH_KEY} has no nodes, not even the root")
        for node in nodes:
            for reference in node.children:
                if not 0 <= reference.node_id < count:
                    raise CorruptCheckpointError(
                        f"{OBJECT_GRAPH_KEY}: a child refers to node {reference.node_id} of {count}"
                    )
        model_side = _reachable_without(nodes, {_OPTIMIZER_EDGE, _BOOKKEEPING_EDGE})
        bookkeeping_side = _reachable_without(nodes, {_OPTIMIZER_EDGE}) - model_side
        names = self.names
        stored = [
            (node_id, attribute.checkpoint_key, attribute.name, attribute.full_name)
            for node_id, node in enumerate(nodes)
            if node.attributes
            for attribute in node.attributes
            if attribute.checkpoint_key in self._keys
        ]
        variables = {node_id: key for node_id, key, attribute, _ in stored if attribute == "VARIABLE_VALUE"}
        slots: dict[int, tuple[int, str]] = {}  # slot node -> (variable node, slot name)
        for node in nodes:
            for slot in node.slot_variables:
                slots[slot.slot_variable_node_id] = (slot.original_variable_node_id, slot.slot_name)
        by_full_name = {full_name: names[key] for _, key, _, full_name in stored}
        by_flat_name = {full_name.replace("/", "_"): name for full_name, name in by_full_name.items()}

        roles: dict[str, TensorRole] = {}
        for node_id, key, _, full_name in stored:
            name = names[key]
            if node_id in model_side:
                role = classify(name)
                if role.kind == "optimizer":  # a model variable whose name only looks like a slot
                    parent, last = split_name(name)
                    role = TensorRole("parameter", layer=parent or name, role=last)
                roles[key] = role
            elif node_id in bookkeeping_side:
                roles[key] = TensorRole("bookkeeping")
            elif node_id in slots and slots[node_id][0] in variables:
                owner, slot = slots[node_id]
                roles[key] = TensorRole("optimizer", role=slot, owner=names[variables[owner]])
            else:
                roles[key] = _optimizer_role(full_name, name, by_full_name, by_flat_name)
        return roles


def _parse(message: Any, serialized: bytes) -> Any:
    from google.protobuf.message import DecodeError

    try:
        return message.FromString(serialized)
    except DecodeError as error:
        raise CorruptCheckpointError(f"{OBJECT_GRAPH_KEY} is not a valid TrackableObjectGraph ({error})") from None


def _optimizer_role(
    full_name: str, name: str, by_full_name: dict[str, str], by_flat_name: dict[str, str]
) -> TensorRole:
    """Keras optimizers name their slots after the variable; the rest is optimizer-wide."""
    from weightscope.layers import TensorRole

    if (match := _TF_KERAS_SLOT.match(full_name)) and match["owner"] in by_full_name:
        return TensorRole("optimizer", role=match["slot"], owner=by_full_name[match["owner"]])
    if (match := _KERAS3_SLOT.match(full_name)) and match["owner"] in by_flat_name:
        return TensorRole("optimizer", role=_SLOT_NAMES[match["slot"]], owner=by_flat_name[match["owner"]])
    return TensorRole("optimizer", role=name.rpartition("/")[2])


def _reachable_without(nodes: object, skipped: set[str]) -> set[int]:
    """Nodes reachable from the root by edges whose names are not in ``skipped``."""
    seen = {0}
    queue = deque([0])
    while queue:
        for reference in nodes[queue.popleft()].children:  # type: ignore[index]
            if reference.local_name not in skipped and reference.node_id not in seen:
                seen.add(reference.node_id)
                queue.append(reference.node_id)
    return seen
