"""Fuzz the unpickler for amplification: small pickles built to make it allocate or work far beyond their size.

The fuzzer's bytes are a program over a vocabulary chosen for that (long strings, the
memo, dicts and lists, int keys that all hash alike, tensors and arrays, nesting), which
``assemble`` turns into a pickle. It is read as a PyTorch zip's ``data.pkl``, as a plain
pickle of NumPy arrays, and by the unpickler directly (loading and scanning). Besides the
fuzzlib rule (only weightscope's errors, 1 s an input), reading one input may not grow
the process's peak memory by more than the resource rule allows for its file: 64 MiB +
8 x its size.
"""

from __future__ import annotations

import contextlib
import resource
import struct

import fuzzlib
from fuzz_pickle import _zip

with fuzzlib.instrumented():
    from weightscope.containers.unpickler import Unpickler
    from weightscope.errors import WeightscopeError
    from weightscope.formats.pickle_files import NumpyAllowList
    from weightscope.formats.pytorch import _Unpickler
    from weightscope.limits import MEMORY_BASE, MEMORY_PER_FILE_BYTE

PRIME = 2**61 - 1  # ints n * PRIME all hash to 0 in CPython


def _text(length: int) -> bytes:
    return b"X" + struct.pack("<I", length) + b"x" * length


def _int(value: int) -> bytes:
    encoded = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(encoded)]) + encoded


TENSOR = (
    b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000"
    b"X\x03\x00\x00\x00cpuK\x10tQK\x00K\x04K\x04\x86K\x04K\x01\x86\x89ccollections\nOrderedDict\n)RtR"
)
ARRAY = (
    b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R(K\x01K\x02\x85cnumpy\ndtype\n"
    b"X\x02\x00\x00\x00f4\x89\x88\x87R(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89C\x08"
    + bytes(8)
    + b"tb"
)


def assemble(program: bytes) -> bytes:
    """A pickle from ``program``: each byte picks an opcode group, the next gives its argument."""
    out = bytearray(b"\x80\x02")
    pairs = zip(program[::2], program[1::2], strict=False)
    for choice, argument in pairs:
        choice %= 16
        if choice == 0:
            out += _text(argument * 97)  # up to 25 KB a string
        elif choice == 1:
            out += b"q" + bytes([argument])  # BINPUT
        elif choice == 2:
            out += b"h" + bytes([argument])  # BINGET
        elif choice == 3:
            out += b"\x94" * (1 + argument % 8)  # MEMOIZE
        elif choice == 4:
            out += b"}" * (1 + argument % 4)
        elif choice == 5:
            out += b"]" * (1 + argument % 4)
        elif choice == 6:
            out += b"("
        elif choice == 7:
            out += b"u" if argument % 2 else b"s"
        elif choice == 8:
            out += b"e" if argument % 2 else b"a"
        elif choice == 9:
            out += b"t" if argument % 3 == 0 else bytes([0x84 + argument % 3])
        elif choice == 10:
            out += _int(PRIME * (1 + argument))
        elif choice == 11:
            out += b"K" + bytes([argument])
        elif choice == 12:
            out += TENSOR if argument % 2 else ARRAY
        elif choice == 13:
            out += b"2" if argument % 2 else b"0"  # DUP, POP
        elif choice == 14:
            out += b"j" + struct.pack("<I", argument)  # LONG_BINGET
        else:
            out += bytes([argument])  # any opcode at all
    return bytes(out + b".")


def seeds() -> list[bytes]:
    """Programs for the amplifications found by hand: one string named many times through the memo,
    a dict of tensors named under many keys, memoized empty dicts, int keys hashing alike."""
    many_names = bytes([4, 0, 6, 0, 0, 200, 1, 0]) + bytes([11, 1, 2, 0]) * 200 + bytes([7, 1])
    nested = bytes([4, 0, 6, 0, 11, 0, 12, 1, 1, 1]) + bytes([11, 2, 2, 1]) * 100 + bytes([7, 1])
    empties = bytes([4, 0, 3, 7]) * 300
    colliding = bytes([4, 0, 6, 0]) + bytes([10, 3, 11, 0]) * 300 + bytes([7, 1])
    arrays = bytes([4, 0, 6, 0, 0, 1, 12, 0, 0, 2, 12, 0, 7, 1])
    return [many_names, nested, empties, colliding, arrays]


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def one_input(data: bytes) -> None:
    pickled = assemble(data)
    before = _peak()
    for scan in (False, True):
        with contextlib.suppress(WeightscopeError):
            _Unpickler(pickled, "fuzz", scan=scan).load()
        with contextlib.suppress(WeightscopeError):
            Unpickler(pickled, "fuzz", NumpyAllowList(), scan=scan).load()
    fuzzlib.exercise(fuzzlib.scratch_file("amplified.pt", _zip(pickled)), "pytorch")
    fuzzlib.exercise(fuzzlib.scratch_file("amplified.pkl", pickled), "pickle")
    grown = _peak() - before
    allowed = MEMORY_BASE + MEMORY_PER_FILE_BYTE * len(_zip(pickled))
    if grown > allowed:
        raise AssertionError(f"reading a {len(pickled)}-byte pickle grew the peak memory by {grown:,} bytes")


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
