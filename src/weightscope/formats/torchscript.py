"""TorchScript archives (``torch.jit.save``, ``ScriptModule.save``): the module tree's tensors, nothing run.

The file is a PyTorch zip (see ``weightscope.formats.pytorch``: one top-level folder, the
first member's; members looked up as miniz looks them up; storages stored and 64-byte
aligned, so memory-mapped) holding:

- ``data.pkl``: the module tree, a pickle (protocol 2). Each module (and each object of a
  ``@torch.jit.script`` class) is ``GLOBAL '__torch__.<path> <Class>'``, ``EMPTY_TUPLE``,
  ``NEWOBJ``, then ``BUILD`` with a dict of its attributes in the class's slot order:
  ``training``, parameters, buffers, submodules (a ``ModuleList``'s are ``"0"``, ``"1"``,
  ...), other values. Tensors are ``torch._utils._rebuild_tensor_v2`` calls over storages
  named by persistent ids ``('storage', torch.<Type>Storage, key, location, numel)``, as in
  ``torch.save``'s pickles, storage ``key`` being the member ``data/<key>``; TorchScript
  names a storage class for every dtype (``UInt16Storage``, ``Float8_e4m3fnStorage``, ...).
  Typed lists and dicts are ``torch.jit._pickle.build_intlist`` (``doublelist``,
  ``boollist``, ``tensorlist``) of a list, and ``restore_type_tag(value, "Dict[str,
  Tensor]")``. A parameter shared by two modules (tied weights) is one pickled tensor
  reached twice through the memo; a view of another tensor's storage is a tensor of the
  same storage key with its own offset and strides.
- ``constants.pkl``: a tuple of the tensor constants the code refers to as
  ``CONSTANTS.c0``, ``CONSTANTS.c1``, ... (a traced module's literals, a frozen module's
  weights), their storages in ``constants/<key>``.
- ``code/__torch__/<path>.py`` (deflated) and ``.debug_pkl``: the TorchScript source of
  every class. ``version`` (``3``...), ``byteorder``, ``.data/serialization_id``; a traced
  module adds ``traced_inputs.pkl`` + ``traced_inputs/`` (its example inputs); ``extra/``
  holds the files given as ``_extra_files``.

The members come in the order ``extra/``, ``data/``, ``data.pkl``, ``code/``, ``constants/``,
``constants.pkl``, ...: an archive is recognised by its first member alone (an extra file, a
storage, or a ``data.pkl`` whose pickle starts with a ``__torch__`` class), as no ``torch.save``
zip starts (``weightscope.formats._sniffing``).

What weightscope reads: the tensors of ``data.pkl``, named by their attribute paths, and of
``constants.pkl``, named ``CONSTANTS.c<i>`` as the code names them. The names and order of
``ScriptModule.state_dict()`` need to know which attributes are parameters and buffers,
which only ``code/`` says: each module class there declares ``__parameters__ = [...]``
and ``__buffers__ = [...]``, and those two lines (nothing else of ``code/``) are read as
text, by a regular expression. A module's parameters, then its buffers, then its
submodules' are listed first, as ``state_dict()`` lists them (``layers.0.fc.weight``);
every other tensor after them — a plain tensor attribute, a tensor in a list, dict or
tuple attribute or in a scripted class's object, a module whose class ``code/`` does not
declare — under its attribute path (``names.a``, ``ts.0``) and, with the constants, as
bookkeeping, not parameters. A frozen module (``torch.jit.freeze``) thus has its weights
only as constants, bookkeeping. Parameters and buffers are told apart by name as in any
PyTorch state dict (``running_mean`` is a buffer); ``code/``'s declarations choose which
tensors are state, not their roles.

Security model: ``code/`` is never run, compiled or interpreted — the graph is not
followed, so nothing says which operator uses a tensor. The pickles are read by
``weightscope.containers.unpickler`` under ``TorchScriptAllowList``: PyTorch's
(``weightscope.formats.pytorch_pickle``), plus every ``__torch__.*`` global as an opaque
record type whose ``NEWOBJ`` makes an empty record and whose ``BUILD`` sets its
attributes from a dict (anything else — a class's own ``__setstate__``, quantised packed
parameters — is refused as unsupported: it would take running its code), the
``torch.jit._pickle`` list builders and type tag, and the storage classes above. Any other
global is refused as soon as its opcode is read. ``traced_inputs.pkl`` and the
``.debug_pkl`` files are not read. A reader must refuse, beyond what a ``torch.save``
zip's reader refuses: a deflated pickle or storage (code may be deflated), a ``data.pkl``
that is not a ``__torch__`` object, a ``__torch__`` class called (``REDUCE``: refused as
code) or made of arguments, record attributes that are not named by strings, modules nested
deeper or reaching more values through the memo than ``torch.save``'s walk allows, a
``constants.pkl`` that is not a tuple of tensors, and a ``code/`` file of more than
``MAX_CODE`` bytes, or whose text and declarations outgrow the file's memory cap. ``scan``
lists the pickles' globals and the archive's other members (``code/``, ``extra/``, ...), and
says that the code is not interpreted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

from weightscope.checkpoint import Index
from weightscope.containers.allow_list import Global, ScanReport
from weightscope.containers.unpickler import ENTRY_BYTES, Unpickler, size_of
from weightscope.containers.zip import check_crc, inflate, is_deflated
from weightscope.errors import CorruptCheckpointError, LimitExceededError, UnsupportedFormatError
from weightscope.formats.pytorch import (
    TENSOR_BYTES,
    PyTorchCheckpoint,
    _Archive,
)
from weightscope.formats.pytorch import scan as scan_pytorch
from weightscope.formats.pytorch_pickle import ALLOWED_GLOBALS, TorchAllowList, _Tensor, _Unpickler
from weightscope.layers import TensorRole
from weightscope.limits import Budget, Limits

MAX_CODE = 64 << 20  # bytes of one code/ file read for its declarations
TEXT_BYTES = 5  # what a code/ file's byte may cost read: the byte, and up to 4 of its text (a str of UCS-4)
PICKLES = ("data.pkl", "constants.pkl")
CONSTANT = "CONSTANTS.c{}"  # a constant's name: as the code refers to it
# Storage classes TorchScript names and torch.save does not (it writes these dtypes as untyped storages).
_STORAGES = {
    "UInt16Storage": "uint16", "UInt32Storage": "uint32", "UInt64Storage": "uint64",
    "Float8_e4m3fnStorage": "float8_e4m3fn", "Float8_e5m2Storage": "float8_e5m2",
    "Float8_e4m3fnuzStorage": "float8_e4m3fnuz", "Float8_e5m2fnuzStorage": "float8_e5m2fnuz",
    "Float8_e8m0fnuStorage": "float8_e8m0fnu",
}  # fmt: skip
_JIT = "torch.jit._pickle"
_LISTS = ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist")
_TAG = "restore_type_tag"


class _Record(dict[str, Any]):
    """An object of a ``__torch__`` class (a module, a scripted class's object): its attributes, nothing more."""

    def __init__(self, qualname: str) -> None:
        super().__init__()
        self.qualname = qualname


class _Globals(Mapping[tuple[str, str], Global]):
    """PyTorch's allow-list, TorchScript's list builders and storages, and every ``__torch__`` class as a record."""

    _table: ClassVar[dict[tuple[str, str], Global]] = {
        **ALLOWED_GLOBALS,
        **{(_JIT, name): Global(_JIT, name, "jit") for name in (*_LISTS, _TAG)},
        **{("torch", name): Global("torch", name, "storage", element) for name, element in _STORAGES.items()},
    }

    def __getitem__(self, key: tuple[str, str]) -> Global:
        module, name = key
        if (module == "__torch__" or module.startswith("__torch__.")) and all(
            part.isidentifier() for part in (*module.split("."), name)
        ):
            return Global(module, name, "record")
        return self._table[key]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


class TorchScriptAllowList(TorchAllowList):
    """``TorchAllowList`` and what TorchScript's pickler adds: records of ``__torch__`` classes, typed lists."""

    globals = _Globals()

    def call(self, function: Global, args: tuple[Any, ...], unpickler: Unpickler) -> Any:
        if function.kind != "jit":
            return super().call(function, args, unpickler)
        if function.name == _TAG and len(args) == 2 and isinstance(args[1], str):
            return args[0]  # the value; its type's text only helps torch check it
        if function.name in _LISTS and len(args) == 1 and isinstance(args[0], list):
            return args[0]
        raise CorruptCheckpointError(f"{unpickler.where}: {function.qualname} called with {len(args)} arguments")

    def new(self, cls: Global, args: tuple[Any, ...], unpickler: Unpickler) -> Any:
        if cls.kind != "record":
            return super().new(cls, args, unpickler)
        if args != ():
            raise CorruptCheckpointError(f"{unpickler.where}: makes a {cls.qualname} of arguments (NEWOBJ)")
        return _Record(cls.qualname)

    def build(self, target: Any, state: Any, unpickler: Unpickler) -> bool:
        if not isinstance(target, _Record):
            return super().build(target, state, unpickler)
        if not isinstance(state, dict):
            raise UnsupportedFormatError(
                f"{unpickler.where}: a {target.qualname} whose state its own __setstate__ (TorchScript code) sets; "
                "weightscope runs no code"
            )
        if not all(isinstance(key, str) for key in state):
            raise CorruptCheckpointError(f"{unpickler.where}: a {target.qualname} with attributes not named by strings")
        unpickler.budget.spend(ENTRY_BYTES * len(state), "the modules' attributes")
        target.update(state)
        return True


# -- code/: the two lines read ------------------------------------------------------------------------------

# One pass of the regular expression engine over the text, a match only where a line starts a class or declares.
_LINES = re.compile(r"^class (\w+)|^[ \t]+__(parameters|buffers)__ = \[(.*)\][ \t]*$", re.MULTILINE)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ESCAPED = re.compile(r"\\(.)")
MATCH_BYTES = 96  # what a matched line is charged: a match object and its groups, made and dropped
NAME_BYTES = 32  # per character of a declaration's list: a name of n characters (n + 2 quoted) costs 57 + n in a list


def declarations(
    qualified: str, text: str, spend: Callable[[int, str], None]
) -> dict[str, tuple[list[str], list[str]]]:
    """The parameters and buffers each module class of a ``code/`` file declares, by the class's qualified name.

    ``qualified`` is the file's module path (``__torch__.torch.nn.modules.linear``). Only lines
    ``class Name...`` and, indented (in the last class before them), ``__parameters__ = ["a", "b", ]``
    and ``__buffers__ = [...]`` are looked at (names unescaped of ``\\"`` and ``\\\\``); a class
    declaring neither is no module. Each line matched, and a declaration's names before they are made, are
    charged to ``spend`` (``Budget.spend``), so that a flood of them is refused in bounded time and memory."""
    found: dict[str, tuple[list[str], list[str]]] = {}
    name = ""
    for line in _LINES.finditer(text):
        spend(MATCH_BYTES, "the code/ files' declarations")
        if line[1] is not None:
            name = f"{qualified}.{line[1]}"
            continue
        if not name:
            continue  # a declaration outside any class
        declared = found.setdefault(name, ([], []))[0 if line[2] == "parameters" else 1]
        spend(NAME_BYTES * len(line[3]), "the code/ files' declarations")  # before the names are made
        declared.extend(
            _ESCAPED.sub(r"\1", quoted) if "\\" in quoted else quoted for quoted in _QUOTED.findall(line[3])
        )
    return found


def contents(archive: _Archive) -> tuple[str, ...]:
    """What the archive holds besides the pickles' globals: its storages counted, every other member named."""
    folder = archive.folder.decode("utf-8", "replace")
    notes = [
        "a TorchScript archive: its code/ is TorchScript source, listed here, never run; weightscope does not "
        "interpret the graph (it reads the tensors of data.pkl and constants.pkl)"
    ]
    storages = tuple(f"{folder}/{kind}/" for kind in ("data", "constants", "traced_inputs"))
    for kind in storages:
        sizes = [entry.file_size for entry in archive.entries if entry.filename.startswith(kind)]
        if sizes:
            notes.append(f"{kind}: {len(sizes)} storage{'s' * (len(sizes) != 1)}, {sum(sizes)} bytes")
    notes.extend(
        f"{entry.filename} ({entry.file_size} bytes)"
        for entry in archive.entries
        if not entry.filename.startswith(storages)
    )
    return tuple(notes)


# -- the reader ----------------------------------------------------------------------------------------------


class TorchScriptCheckpoint(PyTorchCheckpoint):
    """A ``torch.jit.save`` archive: the module tree's tensors by attribute path (``state_dict()``'s names first),
    then its tensor constants (``CONSTANTS.c0``, ...); ``code/`` never run."""

    format = "torchscript"
    torchscript = True
    pickles = PICKLES
    contents = staticmethod(contents)

    _declared: dict[str, tuple[list[str], list[str]]]  # module class -> its parameters and buffers

    def _load(self) -> Index:
        self._budget = Budget(Limits.for_size(self._source.size), self.path)
        self._tensors, self._verified, index = {}, set(), Index()
        self._open_zip()
        self._declared = {}
        for record, text in self._code():
            self._declared |= declarations(record.removesuffix(".py").replace("/", "."), text, self._budget.spend)
        data = bytes(self._member_bytes("data.pkl"))
        root = self._unpickle(data)
        if not isinstance(root, _Record):
            raise CorruptCheckpointError(
                f"{self.path}: data.pkl holds a {type(root).__name__}, not a TorchScript module"
            )
        index.metadata["module"] = root.qualname
        self._visits_for(len(data))
        loose: list[tuple[str, Any, int]] = []
        if root.qualname in self._declared:
            self._walk_module(index, root, "", 0, loose)
        else:
            loose.append(("", root, 0))
        state = len(index.infos)
        for name, value, depth in loose:
            self._walk(index, value, name, depth, optimizer=False)
        if self._archive.find("constants.pkl", self.path) is not None:
            self._constants(index, self._unpickle(bytes(self._member_bytes("constants.pkl")), "constants.pkl"))
        for name in list(index.infos)[state:]:  # plain attributes and constants: none is a parameter or buffer
            index.roles[name] = TensorRole("bookkeeping")
        return index

    def _unpickle(self, data: bytes, record: str = "data.pkl") -> Any:
        where = f"{self.path}: {record}"
        return _Unpickler(data, where, budget=self._budget, allow=TorchScriptAllowList()).load()

    def _code(self) -> Iterator[tuple[str, str]]:
        """Each ``code/__torch__/...py`` file's path from ``code/`` on, and its text."""
        prefix = self._archive.folder + b"/code/"
        for entry in self._archive.entries:
            if not (entry.raw_name.startswith(prefix + b"__torch__") and entry.raw_name.endswith(b".py")):
                continue
            what = f"{self.path}: member '{entry.filename}'"
            if entry.file_size > MAX_CODE:
                raise LimitExceededError(f"{what} is {entry.file_size} bytes; code/ files are read up to {MAX_CODE}")
            self._budget.spend(TEXT_BYTES * entry.file_size, "the code/ files' text")
            data = self._source.read(entry.start, entry.compress_size, f"member '{entry.filename}'")
            if is_deflated(entry, what):
                data = memoryview(inflate(data, entry.file_size, what))
            if self.verify_checksums:
                check_crc(data, entry.CRC, what)
            yield entry.raw_name[len(prefix) :].decode("utf-8", "replace"), bytes(data).decode("utf-8", "replace")

    def _walk_module(self, index: Index, module: _Record, prefix: str, depth: int, loose: list[Any]) -> None:
        """List a module's state as ``state_dict()`` does (its parameters, its buffers, then each submodule's),
        and set aside its other attributes that may hold tensors, for ``loose``."""
        self._visit(depth)
        parameters, buffers = self._declared[module.qualname]
        state = [key for key in dict.fromkeys((*parameters, *buffers)) if isinstance(module.get(key), _Tensor)]
        for key in state:
            self._walk(index, module[key], f"{prefix}{key}", depth + 1, optimizer=False)
        for key, value in module.items():
            if key in state:
                continue
            if isinstance(value, _Record) and value.qualname in self._declared:
                self._walk_module(index, value, f"{prefix}{key}.", depth + 1, loose)
            elif isinstance(value, _Tensor | _Record | dict | list | tuple):
                loose.append((f"{prefix}{key}", value, depth + 1))

    def _constants(self, index: Index, constants: Any) -> None:
        if not isinstance(constants, tuple):
            raise CorruptCheckpointError(f"{self.path}: constants.pkl holds a {type(constants).__name__}, not a tuple")
        for position, constant in enumerate(constants):
            if not isinstance(constant, _Tensor):
                raise CorruptCheckpointError(
                    f"{self.path}: constants.pkl item {position} is a {type(constant).__name__}, not a tensor"
                )
            name = CONSTANT.format(position)
            self._budget.spend(TENSOR_BYTES + size_of(name), "the tensors listed")
            self._add(index, name, constant, False, "constants")


def scan(path: str | os.PathLike[str]) -> ScanReport:
    """The globals and calls ``data.pkl`` and ``constants.pkl`` name, each marked allowed or refused, the archive's
    other members as notes (its code is listed, never run), and the verdict of opening it (``pytorch.scan``)."""
    return scan_pytorch(path, allow=TorchScriptAllowList, reader=TorchScriptCheckpoint)
