"""The allow-list unpickler: a pickle interpreted over inert values, nothing imported or called.

Loading a pickle normally imports and calls whatever its ``GLOBAL`` opcodes name
(``os.system``, ``eval``, ...). This unpickler never imports or calls anything. It
interprets the opcodes of protocols 0 to 5 that build plain data (``None``, bools, ints,
floats, strings, bytes, tuples, lists, dicts, the memo) and, for everything else, asks
an ``AllowList`` — one per kind of file (PyTorch's in ``weightscope.formats.pytorch``,
NumPy's in ``weightscope.formats.pickle_files``):

- a global resolves only from the allow-list's table (``Global`` records naming what
  they stand for); any other raises ``RefusedError`` naming it as soon as its opcode is read;
- ``REDUCE`` and ``NEWOBJ`` run only the table's functions and classes, which the
  allow-list reimplements over inert values and whose arguments it checks (a call with
  arguments of the wrong kinds is a ``CorruptCheckpointError``; nothing is called either way);
- ``BUILD`` applies state only where the allow-list says it is inert (a dict's attributes);
  on anything else it is the way to an object's ``__setstate__``, and refused;
- a persistent id (``BINPERSID``) means what the allow-list says, or is refused;
- the other opcodes that build objects (``INST``, ``OBJ``, ``EXT*``, ``NEWOBJ_EX``, ...)
  are refused by name.

Python 2's byte strings (``SHORT_BINSTRING``, ``BINSTRING``) are decoded as UTF-8, as
``torch.load`` does by default (``encoding="utf-8"``); one that is not UTF-8 is refused
as unsupported (``torch.load`` fails on it too unless given another encoding).

Resources: every value built is charged against the file's ``Budget`` (``weightscope.limits``:
64 MiB + 8 x the file's size) at about what CPython spends on it, so megabytes of
``EMPTY_DICT`` or ``MEMOIZE`` opcodes are refused before they become gigabytes; stack and
memo sizes are capped; and no dict may hold more than ``MAX_COLLISIONS`` keys of one hash
(ints and floats hash predictably, so keys that are multiples of 2**61 - 1 would make
each insertion walk all the others: quadratic time from a small file).

Scanning (``scan=True``) runs the same interpreter, but records every global and call
instead of refusing, evaluates what it can, and keeps going after a refusal; the first
error loading would have raised is kept as ``verdict``, so a scan lists everything up to
where the stream becomes unreadable and still agrees with what loading does.
"""

from __future__ import annotations

import codecs
import mmap
import pickletools
import struct
import sys
from collections.abc import Callable
from typing import Any

from weightscope.containers.allow_list import AllowList, Global, show
from weightscope.errors import (
    CorruptCheckpointError,
    RefusedError,
    TruncatedFileError,
    UnsupportedFormatError,
    WeightscopeError,
    kept,
)
from weightscope.limits import Budget, Limits

MAX_MEMO = 10_000_000
MAX_STACK = 10_000_000
MAX_PROTOCOL = 5  # pickle.HIGHEST_PROTOCOL
MAX_COLLISIONS = 256  # keys of one hash in one dict
KEY_TYPES = (str, int, float, bool, type(None), bytes)  # hashing anything else may recurse without bound
# What CPython spends on what the opcodes make (64-bit), doubled for the allocator's arenas
# and for a dict's or list's growth (its old and new tables live side by side while it
# resizes: the memo of 2 million MEMOIZE opcodes peaked at 85 bytes an entry, and a third
# more than that was not enough under RLIMIT_AS), so that a refusal comes while there is
# still room to report it: an object's header (an empty dict is 64 bytes), a container's
# slot, a dict's entry with its share of the index.
OBJECT_BYTES = 144
SLOT_BYTES = 24
ENTRY_BYTES = 96
# Opcodes that build objects by name, refused as code; any other left unread (out-of-band
# buffers) is unsupported.
OBJECT_OPCODES = frozenset({"INST", "OBJ", "EXT1", "EXT2", "EXT4", "NEWOBJ_EX"})
VIEW_BYTES = 4096
MAX_INT_BYTES = 1024  # byte strings from this long are views of the stream, not copies


class Opaque:
    """While scanning: the result of a call that was not evaluated."""


def size_of(value: object) -> int:
    """What a value made from the pickle costs: CPython's own figure for strings, bytes and
    ints (constant time), a header for the rest (their items are charged as they are added)."""
    return sys.getsizeof(value) + SLOT_BYTES if type(value) in _SIZED else OBJECT_BYTES


_SIZED = {str, bytes, int}


class Unpickler:
    """Interprets one pickle over inert values under ``allow``; ``scan`` records globals and calls, refusing nothing."""

    def __init__(
        self,
        data: bytes | mmap.mmap,
        where: str,
        allow: AllowList,
        *,
        scan: bool = False,
        start: int = 0,
        budget: Budget | None = None,
    ) -> None:
        self.data = data  # bytes, or a read-only mmap of the whole file
        self.where = where  # "PATH: member", for messages
        self.allow = allow
        self.scan = scan
        self.position = start  # a file may hold several pickles, one after another
        self.budget = budget or Budget(Limits.for_size(len(data)), where)
        self._cap = self.budget.limits.memory
        self.stopped = False  # while scanning: the stream could not be followed to its STOP
        self.verdict: WeightscopeError | None = None  # while scanning: the first error loading would raise
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        self.found: dict[tuple[str, str, bool], int] = {}
        self._view: memoryview | None = None  # of ``data``, made for the first long byte string
        self._hashes: dict[int, dict[int, int]] = {}  # id(dict) -> hash of an int or float key -> keys seen
        self._ops: dict[int, Callable[[], None]] = {
            ord(code): method
            for code, method in {
                "\x80": self._proto,
                "\x95": self._frame,
                "}": lambda: self._push({}),
                "]": lambda: self._push([]),
                ")": lambda: self._push(()),
                "\x8f": lambda: self._push(set()),
                "(": self._mark,
                "X": lambda: self._push(self._text(self._unsigned(4))),
                "\x8c": lambda: self._push(self._text(self._byte())),
                "U": lambda: self._push(self._python2_text(self._byte())),
                "T": lambda: self._push(self._python2_text(self._signed(4))),
                "C": lambda: self._push(self._bytes(self._byte())),
                "B": lambda: self._push(self._bytes(self._unsigned(4))),
                "\x8d": lambda: self._push(self._text(self._unsigned(8))),
                "\x8e": lambda: self._push(self._bytes(self._unsigned(8))),
                "\x96": lambda: self._push(self._bytes(self._unsigned(8))),  # BYTEARRAY8, kept read-only
                "J": lambda: self._push(self._signed(4)),
                "K": lambda: self._push(self._byte()),
                "M": lambda: self._push(self._unsigned(2)),
                "\x8a": lambda: self._push(self._signed(self._byte())),
                "\x8b": lambda: self._push(self._long4(self._unsigned(4))),
                "I": self._int,
                "S": lambda: self._push(self._escaped(codecs.escape_decode, quoted=True)),
                "V": lambda: self._push(self._escaped(codecs.raw_unicode_escape_decode, quoted=False)),
                "P": lambda: self._persistent(self._line()),
                "\x98": lambda: self._target((bytes, memoryview)),  # READONLY_BUFFER: they all are
                "L": lambda: self._push(self._number(int, self._line().removesuffix("L"))),
                "F": lambda: self._push(self._number(float, self._line())),
                "0": self._pop_any,
                "1": self._pop_mark,
                "2": lambda: self._push(self._top()),
                "l": lambda: self._push(self._made(list(self._pop_mark()))),
                "d": lambda: self._push(self.dict_of(self._pairs(self._pop_mark()))),
                "\x90": self._additems,
                "\x91": lambda: self._push(frozenset(self.set_of(self._pop_mark()))),
                "p": lambda: self._put(self._memo_index(self._line())),
                "g": lambda: self._get(self._memo_index(self._line())),
                "G": lambda: self._push(struct.unpack(">d", self._take(8))[0]),
                "\x88": lambda: self._push(True),
                "\x89": lambda: self._push(False),
                "N": lambda: self._push(None),
                "\x85": lambda: self._tuple(1),
                "\x86": lambda: self._tuple(2),
                "\x87": lambda: self._tuple(3),
                "t": lambda: self._push(tuple(self._pop_mark())),
                "s": self._setitem,
                "u": self._setitems,
                "a": self._append,
                "e": self._appends,
                "q": lambda: self._put(self._byte()),
                "r": lambda: self._put(self._unsigned(4)),
                "\x94": lambda: self._put(len(self.memo)),
                "h": lambda: self._get(self._byte()),
                "j": lambda: self._get(self._unsigned(4)),
                "c": self._global,
                "\x93": self._stack_global,
                "R": self._reduce,
                "\x81": self._newobj,
                "b": self._build,
                "Q": self._persistent_id,
            }.items()
        }

    def load(self) -> Any:
        """The pickled object; stops at its STOP opcode. While scanning, never raises past a refusal:
        the first error is kept in ``verdict``, and ``stopped`` says the stream could not be followed.

        The data, memo and stack are let go of at the end: the opcode table's methods make the
        unpickler a reference cycle, which would keep a closed file mapped (and what it built
        alive) until the next garbage collection.
        """
        try:
            return self._run()
        except WeightscopeError as error:
            if not self.scan:
                raise
            self.verdict = self.verdict or kept(error)
            self.stopped = True
            return Opaque()
        finally:  # what the pickle built is the result's now, or garbage: scan opens the file after this
            self.data, self.memo, self.stack = b"", {}, []

    def _run(self) -> Any:
        data, size, operations = self.data, len(self.data), self._ops
        while True:
            if self.position >= size:
                raise TruncatedFileError(f"{self.where}: the pickle ends at {size} before its STOP opcode")
            opcode = data[self.position]
            self.position += 1
            if opcode == 0x2E:  # STOP
                if len(self.stack) != 1 or self.marks:
                    # CPython and torch return the top value and drop the rest; a stream that
                    # leaves more is refused as damaged rather than guessed at.
                    self._fail(CorruptCheckpointError(f"{self.where}: the pickle stops with {len(self.stack)} values"))
                return self.stack[-1] if self.stack else Opaque()
            operation = operations.get(opcode)
            if operation is None:
                self._unknown(opcode)
                self.stopped = True
                return Opaque()  # only while scanning: nothing after it can be followed
            operation()
            if len(self.stack) > MAX_STACK or len(self.marks) > MAX_STACK:
                raise CorruptCheckpointError(f"{self.where}: the pickle's stack grows past {MAX_STACK}")

    def _fail(self, error: WeightscopeError) -> None:
        """Raise ``error``, or while scanning note it (the first one is the verdict) and go on."""
        if not self.scan:
            raise error
        self.verdict = self.verdict or kept(error)

    # -- reading the opcode stream
    def _advance(self, length: int) -> int:
        """Step over ``length`` bytes of the stream; where they start."""
        start, end = self.position, self.position + length
        if length < 0 or end > len(self.data):
            raise TruncatedFileError(f"{self.where}: the pickle ends at {len(self.data)} inside an opcode's argument")
        self.position = end
        return start

    def _take(self, length: int) -> bytes:
        start = self._advance(length)
        return self.data[start : self.position]

    def _bytes(self, length: int) -> bytes | memoryview:
        """A pickled byte string: a long one as a read-only view of the stream (a NumPy array's data, not copied)."""
        if length < VIEW_BYTES:
            return bytes(self._take(length))
        start = self._advance(length)
        if self._view is None:
            self._view = memoryview(self.data).toreadonly()
        return self._view[start : self.position]

    def _byte(self) -> int:
        position = self.position
        if position >= len(self.data):
            raise TruncatedFileError(f"{self.where}: the pickle ends at {len(self.data)} inside an opcode's argument")
        self.position = position + 1
        return self.data[position]

    def _unsigned(self, width: int) -> int:
        return int.from_bytes(self._take(width), "little")

    def _signed(self, width: int) -> int:
        return int.from_bytes(self._take(width), "little", signed=True)

    def _text(self, length: int) -> str:
        try:
            return bytes(self._take(length)).decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as error:
            raise CorruptCheckpointError(f"{self.where}: a pickled string is not UTF-8 ({error})") from None

    def _python2_text(self, length: int) -> str:
        try:
            return bytes(self._take(length)).decode("utf-8")
        except UnicodeDecodeError as error:
            raise UnsupportedFormatError(
                f"{self.where}: a Python 2 string that is not UTF-8 ({error}); torch.load reads it only when "
                "given another encoding"
            ) from None

    def _long4(self, length: int) -> int:
        # Python prints no int past 4,300 digits (``sys.set_int_max_str_digits``): one could not be shown.
        if length > MAX_INT_BYTES:
            raise UnsupportedFormatError(f"{self.where}: an int of {length} bytes (LONG4); weightscope reads 1,024")
        return self._signed(length)

    def _int(self) -> None:
        # Python 2 wrote an int past 32 bits as text (protocol 0's INT, in any protocol); 00 and 01 are bools.
        line = self._line()
        self._push({"00": False, "01": True}.get(line) if line in ("00", "01") else self._number(int, line))

    def _number(self, kind: type[int] | type[float], text: str) -> Any:
        try:
            return kind(text, 0) if kind is int else kind(text)
        except ValueError:
            raise CorruptCheckpointError(f"{self.where}: {show(text, 60)} is not a pickled number") from None

    def _memo_index(self, text: str) -> int:
        index = self._number(int, text)
        if not 0 <= index < 2**32:  # as LONG_BINPUT's; a larger key could be one hashing like others
            raise UnsupportedFormatError(f"{self.where}: memo index {index} is past 2**32")
        return int(index)

    def _pop_any(self) -> None:
        # POP: the top value or, when the stack is empty down to the last MARK, that MARK.
        if len(self.stack) > (self.marks[-1] if self.marks else 0):
            self.stack.pop()
        else:
            self._pop_mark()

    def _made(self, value: list[Any]) -> list[Any]:
        self._spend(SLOT_BYTES * len(value), "the pickle's lists")
        return value

    def _pairs(self, items: list[Any]) -> list[tuple[Any, Any]]:
        if len(items) % 2:
            raise CorruptCheckpointError(f"{self.where}: DICT of an odd number of values")
        return list(zip(items[::2], items[1::2], strict=True))

    def _additems(self) -> None:
        items = self._pop_mark()
        target = self._target(set)
        for item in items:
            self.check_key(target, item)
            if target is not None:
                self._spend(ENTRY_BYTES, "the pickle's sets")
                target.add(item)

    def _raw_line(self) -> bytes:
        """The bytes up to the next newline (protocol 0's arguments), the newline stepped over."""
        end = self.data.find(b"\n", self.position)
        if end < 0:
            raise TruncatedFileError(f"{self.where}: the pickle ends inside a line of text")
        return bytes(self._take(end - self.position + 1)[:-1])

    def _line(self) -> str:
        try:
            return self._raw_line().decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as error:
            raise CorruptCheckpointError(f"{self.where}: a pickled string is not UTF-8 ({error})") from None

    def _escaped(self, codec: Callable[[bytes], tuple[Any, int]], quoted: bool) -> Any:
        """Protocol 0's text strings: ``S'...'`` (Python 2 str, escaped) and ``V...`` (raw-unicode-escape)."""
        line = self._raw_line()
        if quoted:
            if len(line) < 2 or line[0] != line[-1] or line[:1] not in (b"'", b'"'):
                raise CorruptCheckpointError(f"{self.where}: a STRING that is not quoted")
            line = line[1:-1]
        try:
            value = codec(line)[0]
            return value.decode("utf-8") if isinstance(value, bytes) else value
        except (UnicodeDecodeError, ValueError) as error:
            raise UnsupportedFormatError(f"{self.where}: a pickled string that does not decode ({error})") from None

    # -- the stack
    def _push(self, value: Any) -> None:
        self._spend(size_of(value) + SLOT_BYTES, "the pickle's values")
        self.stack.append(value)

    def _spend(self, nbytes: int, what: str) -> None:
        """``budget.spend``, inlined for the opcodes' hot path."""
        budget = self.budget
        budget.spent += nbytes
        if budget.spent > self._cap:
            budget.spend(0, what)

    def _pop(self) -> Any:
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise CorruptCheckpointError(f"{self.where}: the pickle pops an empty stack at {self.position}")
        return self.stack.pop()

    def _top(self) -> Any:
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise CorruptCheckpointError(f"{self.where}: the pickle reads an empty stack at {self.position}")
        return self.stack[-1]

    def _mark(self) -> None:
        self._spend(SLOT_BYTES, "the pickle's marks")
        self.marks.append(len(self.stack))

    def _pop_mark(self) -> list[Any]:
        if not self.marks:
            raise CorruptCheckpointError(f"{self.where}: the pickle has no MARK for the opcode at {self.position}")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def _tuple(self, length: int) -> None:
        items = [self._pop() for _ in range(length)]
        self._push(tuple(reversed(items)))

    def _proto(self) -> None:
        if self._byte() > MAX_PROTOCOL:
            raise UnsupportedFormatError(f"{self.where}: a pickle protocol newer than {MAX_PROTOCOL}")

    def _frame(self) -> None:
        self._take(8)  # a frame's length only helps readers buffer

    # -- containers
    def _target(self, kind: type | tuple[type, ...]) -> Any:
        target = self._top()
        if isinstance(target, kind):
            return target
        if isinstance(target, Opaque):
            return None  # only while scanning
        raise CorruptCheckpointError(f"{self.where}: the pickle adds items to a {type(target).__name__}")

    def _set(self, items: list[Any]) -> None:
        if len(items) % 2:
            raise CorruptCheckpointError(f"{self.where}: SETITEMS with an odd number of values")
        target = self._target(dict)
        for key, value in zip(items[::2], items[1::2], strict=True):
            self.check_key(target, key)
            if target is not None:
                self._spend(ENTRY_BYTES, "the pickle's dicts")
                target[key] = value

    def dict_of(self, pairs: list[Any] | tuple[Any, ...]) -> dict[Any, Any]:
        """``dict(pairs)`` of a pickled list of ``(key, value)`` pairs, its keys checked and its size charged."""
        made: dict[Any, Any] = {}
        for pair in pairs:
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise CorruptCheckpointError(f"{self.where}: a dict made of {show(pair, 100)}, not a (key, value) pair")
            self.check_key(made, pair[0])
            self._spend(ENTRY_BYTES, "the pickle's dicts")
            made[pair[0]] = pair[1]
        return made

    def set_of(self, items: list[Any] | tuple[Any, ...]) -> set[Any]:
        """``set(items)`` of pickled values, checked and charged like a dict's keys."""
        made: set[Any] = set()
        for item in items:
            self.check_key(made, item)
            self._spend(ENTRY_BYTES, "the pickle's sets")
            made.add(item)
        return made

    def check_key(self, container: object, key: object) -> None:
        """Refuse a key that cannot be a dict's or set's (a tuple's hash may recurse without bound), and the
        ``MAX_COLLISIONS + 1``-th int or float key of one hash in one container (quadratic time to insert)."""
        if not isinstance(key, KEY_TYPES):
            raise UnsupportedFormatError(f"{self.where}: a dict key of type {type(key).__name__}")
        if type(key) not in (int, float) or container is None:
            return  # strings' and bytes' hashes are salted per process; None and bools are few
        seen = self._hashes.setdefault(id(container), {})
        hashed = hash(key)
        count = seen[hashed] = seen.get(hashed, 0) + 1
        self._spend(ENTRY_BYTES, "the pickle's dict keys")
        if count > MAX_COLLISIONS:
            raise UnsupportedFormatError(
                f"{self.where}: more than {MAX_COLLISIONS} keys of one dict hash alike (crafted to take quadratic time)"
            )

    def _setitem(self) -> None:
        value = self._pop()
        key = self._pop()
        self._set([key, value])

    def _setitems(self) -> None:
        self._set(self._pop_mark())

    def _append(self) -> None:
        value = self._pop()
        target = self._target(list)
        if target is not None:
            target.append(value)

    def _appends(self) -> None:
        values = self._pop_mark()
        target = self._target(list)
        if target is not None:
            self._spend(SLOT_BYTES * len(values), "the pickle's lists")
            target.extend(values)

    def _put(self, index: int) -> None:
        memo = self.memo
        if index not in memo:
            if len(memo) >= MAX_MEMO:
                raise CorruptCheckpointError(f"{self.where}: the pickle memoizes more than {MAX_MEMO} values")
            self._spend(ENTRY_BYTES + 32, "the pickle's memo")
        memo[index] = self._top()

    def _get(self, index: int) -> None:
        if index not in self.memo:
            raise CorruptCheckpointError(f"{self.where}: the pickle reads memo {index}, never written")
        self._spend(SLOT_BYTES, "the pickle's values")
        self.stack.append(self.memo[index])

    # -- globals and calls
    def _resolve(self, opcode: str, module: str, name: str) -> None:
        # Python 2's name for the builtins is looked up as CPython and torch.load translate it.
        found = self.allow.globals.get(("builtins" if module == "__builtin__" else module, name))
        self._spend(size_of(module) + size_of(name), "the pickle's names")
        self._record(opcode, f"{module}.{name}", found is not None)
        if found is None:
            self._fail(RefusedError(f"{self.where}: refused to load: the file wants to call {module}.{name}"))
        self._push(found or Global(module, name, "refused"))

    def _global(self) -> None:
        module = self._line()
        self._resolve("GLOBAL", module, self._line())

    def _stack_global(self) -> None:
        name, module = self._pop(), self._pop()
        if not isinstance(module, str) or not isinstance(name, str):
            raise CorruptCheckpointError(f"{self.where}: STACK_GLOBAL of values that are not strings")
        self._resolve("STACK_GLOBAL", module, name)

    def _record(self, opcode: str, name: str, allowed: bool) -> None:
        key = (opcode, name, allowed)
        if key not in self.found:
            self._spend(OBJECT_BYTES + ENTRY_BYTES + size_of(name), "the names scanned")
        self.found[key] = self.found.get(key, 0) + 1

    def _reduce(self) -> None:
        args, function = self._pop(), self._pop()
        self._push(self._apply("REDUCE", function, args, self.allow.call))

    def _newobj(self) -> None:
        args, cls = self._pop(), self._pop()
        self._push(self._apply("NEWOBJ", cls, args, self.allow.new))

    def _apply(self, opcode: str, function: object, args: object, make: Callable[[Global, Any, Unpickler], Any]) -> Any:
        if isinstance(function, Opaque):
            return function  # only while scanning
        if not isinstance(function, Global) or not isinstance(args, tuple):
            raise CorruptCheckpointError(
                f"{self.where}: {opcode} of {type(function).__name__} with {type(args).__name__}"
            )
        if function.kind == "refused":
            self._record(opcode, function.qualname, False)
            return Opaque()  # only while scanning: its GLOBAL gave the verdict
        try:
            value = make(function, args, self)
        except (CorruptCheckpointError, UnsupportedFormatError, RefusedError) as error:
            self._record(opcode, function.qualname, not isinstance(error, RefusedError))
            self._fail(error)
            return Opaque()
        self._record(opcode, function.qualname, True)
        return value

    def _build(self) -> None:
        state = self._pop()
        target = self._top()
        if isinstance(target, Opaque):
            return  # only while scanning
        try:
            if self.allow.build(target, state, self):
                return
        except (CorruptCheckpointError, UnsupportedFormatError, RefusedError) as error:
            self._fail(error)
            return
        # On anything else, BUILD is how a pickle reaches an object's __setstate__ (or
        # sets attributes a later call would use): refused like the opcodes that build objects.
        name = target.qualname if isinstance(target, Global) else type(target).__name__.lstrip("_")
        self._record("BUILD", name, False)
        self._fail(RefusedError(f"{self.where}: refused to load: the pickle sets the state of {name} (BUILD)"))

    def _persistent_id(self) -> None:
        self._persistent(self._pop())

    def _persistent(self, pid: Any) -> None:
        try:
            value = Opaque() if isinstance(pid, Opaque) else self.allow.persistent(pid, self)
        except (CorruptCheckpointError, UnsupportedFormatError, RefusedError) as error:
            self._fail(error)
            value = Opaque()
        self._push(value)

    def _unknown(self, opcode: int) -> None:
        known = pickletools.code2op.get(chr(opcode))  # type: ignore[attr-defined]  # public, but not in typeshed
        if known is None:
            raise CorruptCheckpointError(f"{self.where}: byte {opcode:#04x} at {self.position - 1} is no pickle opcode")
        if known.name not in OBJECT_OPCODES:
            raise UnsupportedFormatError(f"{self.where}: the pickle uses opcode {known.name}, which is not read")
        self._record(known.name, "", False)
        raise RefusedError(f"{self.where}: refused to load: the pickle uses opcode {known.name}")
