"""What a pickle may name: an ``AllowList`` (its ``Global``s, and the inert values its functions make), and
what ``scan`` reports (``ScanEntry``, ``ScanReport``); each kind of pickle declares its own list.

The interpreter that consults one is ``weightscope.containers.unpickler``.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from weightscope.errors import RefusedError, WeightscopeError, kept

if TYPE_CHECKING:
    from weightscope.containers.unpickler import Unpickler


@dataclass(frozen=True)
class Global:
    """A name from an allow-list: a function the allow-list reimplements, a class, a constant."""

    module: str
    name: str
    kind: str  # the allow-list's own word ("call", "storage", "dtype", ...); "refused" only while scanning
    element: str | None = None  # for storage classes and dtypes

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


class ScanEntry(NamedTuple):
    """One global or call a pickle names, as ``scan`` reports it."""

    opcode: str  # GLOBAL, STACK_GLOBAL, REDUCE, NEWOBJ, or a refused opcode's name
    name: str  # module.name; empty for a refused opcode
    allowed: bool
    count: int  # type: ignore[assignment]  # shadows tuple.count: the field name is scan's public record

    def __str__(self) -> str:
        verdict = "allowed" if self.allowed else "REFUSED"
        return f"{verdict} {self.opcode} {self.name}".rstrip() + (f" (x{self.count})" if self.count > 1 else "")


class ScanReport(list[ScanEntry]):
    """What ``scan`` found in a file's pickles, and ``verdict``: the error opening the file raises
    (``RefusedError`` when it names what may not run), or None when it opens; ``notes``, lines on what else the
    file holds (a TorchScript archive's code, listed, not run)."""

    verdict: WeightscopeError | None = None
    notes: tuple[str, ...] = ()


def nothing_named(reader: Callable[[Any], Any], path: Any) -> ScanReport:
    """``scan`` of a format that names no code at all (a msgpack tree, an Orbax folder of arrays): nothing is
    listed; the verdict is what opening ``path`` with ``reader`` raises, as for a pickle."""
    report = ScanReport()
    try:
        reader(path).close()
    except WeightscopeError as error:
        report.verdict = kept(error)
    return report


class AllowList:
    """What one kind of pickle may name, and what its functions make; subclasses fill it in.

    ``globals`` maps ``(module, name)`` to the ``Global`` it resolves to; ``call``
    (``REDUCE``), ``new`` (``NEWOBJ``) and ``persistent`` (``BINPERSID``) build inert
    values from checked arguments, raising ``CorruptCheckpointError`` on arguments of
    the wrong kinds and ``RefusedError`` on what may not be called at all.
    """

    globals: ClassVar[Mapping[tuple[str, str], Global]] = {}

    def call(self, function: Global, args: tuple[Any, ...], unpickler: Unpickler) -> Any:
        raise RefusedError(f"{unpickler.where}: refused to load: the file wants to call {function.qualname}")

    def new(self, cls: Global, args: tuple[Any, ...], unpickler: Unpickler) -> Any:
        raise RefusedError(f"{unpickler.where}: refused to load: the file wants to make a {cls.qualname} (NEWOBJ)")

    def persistent(self, pid: Any, unpickler: Unpickler) -> Any:
        raise RefusedError(f"{unpickler.where}: refused to load: the pickle loads a persistent id {show(pid, 100)}")

    def build(self, target: Any, state: Any, unpickler: Unpickler) -> bool:
        """Apply ``BUILD``'s ``state`` to ``target`` where that is inert; False where it may not be.

        A dict's state is its attributes (a state dict's ``_metadata``): it holds no weights
        and is dropped."""
        return isinstance(target, dict)


_SHOWN = reprlib.Repr()  # (keyword arguments only from Python 3.12)
_SHOWN.maxlevel, _SHOWN.maxtuple, _SHOWN.maxlist, _SHOWN.maxdict, _SHOWN.maxstring, _SHOWN.maxother = 4, 8, 8, 8, 60, 60


def show(value: object, limit: int) -> str:
    """A pickled value in a message: nesting, length and size bounded (a plain repr of a tuple
    nested 100,000 deep raises RecursionError)."""
    return _SHOWN.repr(value)[:limit]


def is_int(value: object) -> bool:
    return type(value) is int


def ints(value: object) -> bool:
    return isinstance(value, tuple) and all(is_int(item) for item in value)
