"""Plain pickles of NumPy arrays (``params.pkl`` as JAX and Haiku projects ship them), read without unpickling.

The file is one pickle (any protocol, 0 to 5) of a NumPy array, or of dicts, lists and
tuples of them (``pickle.dump(params, f)``), with numbers and strings beside them. NumPy
pickles an array in one of two ways:

- protocols 0 to 4: ``numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b"b")``
  (``numpy._core`` since NumPy 2), then ``BUILD`` with the state ``(1, shape, dtype,
  is_fortran, data)``, ``data`` the elements' bytes in C or Fortran order (protocol 2 writes
  bytes as ``_codecs.encode(text, "latin1")``);
- protocol 5: ``numpy._core.numeric._frombuffer(buffer, dtype, shape, order)``, the buffer in
  band (``BYTEARRAY8`` or ``BINBYTES8``).

A dtype is ``numpy.dtype(code, align, copy)`` (``"f4"``, ``"i8"``, ``"b1"``, ...) with
``BUILD`` of ``(version, byteorder, subarray, names, fields, itemsize, alignment, flags)``; a
NumPy scalar (``np.float32(1.0)``) is ``numpy.core.multiarray.scalar(dtype, bytes)``, read
as a 0-d array.

Security model: the pickle is read by ``weightscope.containers.unpickler`` under
``NumpyAllowList``, whose globals are only those names (and ``collections.OrderedDict``,
``_codecs.encode``); any other global (a Flax ``FrozenDict``, a JAX array's rebuild,
``os.system``) is refused by name with ``RefusedError`` before anything happens, as is
``BUILD`` on anything but an array or dtype being rebuilt. Arrays are read-only views of the
mapped file where the pickle holds their bytes in one piece (protocol 3 and later), so
opening copies only what protocol 2's text encoding forces.

A reader must refuse: object, structured, sub-array and datetime dtypes
(``UnsupportedFormatError``), an array state whose bytes are not exactly ``shape`` x
``itemsize``, a shape that is not a tuple of non-negative ints, a pickle that ends early,
and two tensors reached by the same dotted name.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from weightscope.checkpoint import FileCheckpoint, Index, TensorInfo
from weightscope.containers.allow_list import AllowList, Global, ScanEntry, ScanReport, ints, show
from weightscope.containers.unpickler import Unpickler, size_of
from weightscope.dtypes import check_rank, check_size, element_for
from weightscope.errors import CorruptCheckpointError, RefusedError, UnsupportedFormatError, WeightscopeError, kept
from weightscope.limits import Budget, Limits
from weightscope.sources import AnySource, as_path, open_source

MAX_NESTING = 200  # dict and list levels between the pickled object and an array
TENSOR_BYTES = 2048  # what one listed array costs: its records, its row in a listing
SIMPLE_KINDS = "biufc"  # bool, ints, floats, complex: dtypes of plain numbers
_SCALARS = (str, int, float, bool, type(None))

_NUMPY_CALLS = [
    *[(module, "_reconstruct") for module in ("numpy.core.multiarray", "numpy._core.multiarray")],
    *[(module, "scalar") for module in ("numpy.core.multiarray", "numpy._core.multiarray")],
    *[(module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")],
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
    ("builtins", "bytes"),  # bytes() is how protocols 0 to 2 write b""
]


@dataclass
class _Rebuilding:
    """An array between ``_reconstruct`` and the ``BUILD`` that gives its shape, dtype and bytes."""

    array: np.ndarray | None = None


@dataclass
class _DType:
    """A dtype between ``numpy.dtype(code, ...)`` and the ``BUILD`` that gives its byte order."""

    dtype: np.dtype


class NumpyAllowList(AllowList):
    """What NumPy's pickles of arrays name, rebuilt as read-only arrays; nothing else."""

    globals: ClassVar[dict[tuple[str, str], Global]] = {key: Global(*key, "call") for key in _NUMPY_CALLS}

    def call(self, function: Global, args: tuple[Any, ...], unpickler: Unpickler) -> Any:
        where, name = unpickler.where, function.name
        if name == "_reconstruct" and len(args) == 3 and args[0] == self.globals[("numpy", "ndarray")]:
            return _Rebuilding()
        if name == "dtype" and 1 <= len(args) <= 3 and isinstance(args[0], str):
            return _DType(_simple_dtype(args[0], where))
        if name == "scalar" and len(args) == 2 and isinstance(args[0], _DType):
            return _array(args[1], args[0].dtype, (), False, where)
        if name == "_frombuffer" and len(args) == 4 and isinstance(args[1], _DType) and args[3] in ("C", "F"):
            return _array(args[0], args[1].dtype, args[2], args[3] == "F", where)
        if name in ("OrderedDict", "bytes") and args == ():
            return {} if name == "OrderedDict" else b""
        if name == "OrderedDict" and len(args) == 1 and isinstance(args[0], list | tuple):
            return unpickler.dict_of(args[0])
        if name == "encode" and len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
            try:
                return args[0].encode("latin1")
            except UnicodeEncodeError:
                pass
        if name == "ndarray":
            raise RefusedError(f"{where}: refused to load: the file wants to call numpy.ndarray")
        raise CorruptCheckpointError(f"{where}: {function.qualname} called with arguments {show(args, 200)}")

    def build(self, target: Any, state: Any, unpickler: Unpickler) -> bool:
        where = unpickler.where
        if isinstance(target, _DType):
            target.dtype = _byte_order(target.dtype, state, where)
            return True
        if isinstance(target, _Rebuilding):
            if target.array is not None:
                raise CorruptCheckpointError(f"{where}: an array's state is set twice")
            items = state[1:] if isinstance(state, tuple) and len(state) == 5 else state
            if not (isinstance(items, tuple) and len(items) == 4 and isinstance(items[1], _DType)):
                raise CorruptCheckpointError(f"{where}: an array state that is not NumPy's: {show(state, 200)}")
            shape, dtype, fortran, data = items
            if not isinstance(fortran, bool):
                raise CorruptCheckpointError(f"{where}: an array state that is not NumPy's: {show(state, 200)}")
            target.array = _array(data, dtype.dtype, shape, fortran, where)
            return True
        return super().build(target, state, unpickler)


def _simple_dtype(code: str, where: str) -> np.dtype:
    try:
        dtype = np.dtype(code) if len(code) <= 8 and code[:1] in SIMPLE_KINDS else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in SIMPLE_KINDS:
        raise UnsupportedFormatError(f"{where}: an array of dtype {show(code, 40)}: only numbers are read")
    return dtype


def _byte_order(dtype: np.dtype, state: Any, where: str) -> np.dtype:
    """``dtype`` with the byte order of its pickled state; a structured or sub-array state is refused."""
    simple = isinstance(state, tuple) and len(state) in (8, 9) and state[2:5] == (None, None, None)
    if not simple or state[1] not in ("<", ">", "|", "="):
        raise UnsupportedFormatError(f"{where}: a dtype state weightscope does not read: {show(state, 200)}")
    return dtype if state[1] in ("|", "=") else dtype.newbyteorder(state[1])


def _array(data: Any, dtype: np.dtype, shape: Any, fortran: bool, where: str) -> np.ndarray:
    """A read-only array over ``data``, which must hold exactly ``shape`` elements of ``dtype``."""
    if not ints(shape) or any(length < 0 for length in shape):
        raise CorruptCheckpointError(f"{where}: an array shape that is not non-negative ints: {show(shape, 100)}")
    if not isinstance(data, bytes | memoryview):
        raise UnsupportedFormatError(f"{where}: an array whose data is a {type(data).__name__}, not bytes")
    check_rank(shape, where)
    check_size(shape, dtype.itemsize, where)
    needed = math.prod(shape) * dtype.itemsize
    if len(data) != needed:
        raise CorruptCheckpointError(f"{where}: an array of shape {list(shape)} needs {needed} bytes, not {len(data)}")
    flat = np.frombuffer(data, dtype=dtype, count=math.prod(shape))
    array = flat.reshape(shape, order="F" if fortran else "C")
    array.flags.writeable = False
    return array


def _whole(source: AnySource) -> Any:
    """The whole file, mapped: the arrays' bytes are views of it."""
    return source.read(0, source.size, "the pickle").obj if source.size else b""


def scan(path: str | os.PathLike[str]) -> ScanReport:
    """The globals and calls the pickle names, each marked allowed or refused, and the verdict:
    what opening it raises. Nothing is imported or called; refusals do not stop the listing."""
    location = as_path(path)
    source = open_source(location)
    try:
        unpickler = Unpickler(
            _whole(source),
            str(location),
            NumpyAllowList(),
            scan=True,
            budget=Budget(Limits.for_size(source.size), location),
        )
        unpickler.load()
    finally:
        source.close()
    report = ScanReport(ScanEntry(*key, count) for key, count in unpickler.found.items())
    try:
        PickleCheckpoint(path).close()
    except WeightscopeError as error:
        report.verdict = kept(error)
    return report


class PickleCheckpoint(FileCheckpoint):
    """A pickle of NumPy arrays: arrays named by their dotted path in the pickled dicts and lists."""

    format = "pickle"

    _arrays: dict[str, np.ndarray]  # by name: the arrays rebuilt (nothing in the file is imported or called)

    def _load(self) -> Index:
        budget = Budget(Limits.for_size(self._source.size), self.path)
        unpickler = Unpickler(_whole(self._source), str(self.path), NumpyAllowList(), budget=budget)
        index, self._arrays = Index(), {}
        self._walk(index, unpickler.load(), "", 0, budget)
        return index

    def _walk(self, index: Index, value: Any, name: str, depth: int, budget: Budget) -> None:
        """Name the arrays by their dotted path; note scalar leaves as metadata. Each value is walked
        once per place it is reached (the memo can share it), charged as the names it makes."""
        if depth > MAX_NESTING:
            raise CorruptCheckpointError(f"{self.path}: the pickled object nests deeper than {MAX_NESTING} levels")
        if isinstance(value, _Rebuilding):
            if value.array is None:
                raise CorruptCheckpointError(f"{self.path}: array '{name}' is never given its state (BUILD)")
            value = value.array
        if isinstance(value, np.ndarray):
            budget.spend(TENSOR_BYTES + size_of(name), "the tensors listed")
            self._add(index, name or self.path.stem, value)
        elif isinstance(value, dict | list | tuple) and not (
            isinstance(value, list | tuple) and all(isinstance(item, _SCALARS) for item in value)
        ):
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                budget.spend(len(name) + size_of(key), "the names of the pickled values")
                self._walk(index, item, f"{name}.{key}" if name else str(key), depth + 1, budget)
        elif isinstance(value, (*_SCALARS, list, tuple)):
            leaves = value if isinstance(value, list | tuple) else (value,)
            budget.spend(sum(10 * len(item) if isinstance(item, str) else 32 for item in leaves), "the metadata")
            index.metadata[name] = repr(value) if isinstance(value, list | tuple) else str(value)
        elif isinstance(value, _DType | Global):
            index.metadata[name] = str(value.dtype if isinstance(value, _DType) else value.qualname)

    def _add(self, index: Index, name: str, array: np.ndarray) -> None:
        if name in self._arrays:
            raise UnsupportedFormatError(f"{self.path}: two tensors are named '{name}'")
        # The type numpy names it (uint16), not a quantized type sharing its numpy dtype (TensorFlow's quint16).
        element = element_for(array.dtype, lambda element: element.name == array.dtype.name)
        if element is None:
            raise UnsupportedFormatError(f"{self.path}: tensor '{name}' has dtype {array.dtype}")
        self._arrays[name] = array
        index.infos[name] = TensorInfo(
            name, array.dtype, array.shape, array.nbytes, element.name, str(self.path), 0, name
        )

    def _read(self, info: TensorInfo) -> np.ndarray:
        return self._arrays[info.name]
