"""Fuzz the Flax msgpack reader: the msgpack container, ndarray/scalar/complex ext types, chunked arrays, names."""

from __future__ import annotations

from pathlib import Path

import fuzzlib

with fuzzlib.instrumented():
    import weightscope.containers.msgpack
    import weightscope.formats.flax_msgpack  # noqa: F401 - both instrumented for coverage

TESTS = Path(__file__).resolve().parent.parent / "tests"


def seeds() -> list[bytes]:
    """The files flax wrote (tests/fixtures/flax: to_bytes of a TrainState, many dtypes, chunked arrays, Hub shards)
    and the broken ones of tests/corpus/flax."""
    files = sorted((TESTS / "fixtures" / "flax").rglob("*.msgpack")) + sorted((TESTS / "corpus" / "flax").iterdir())
    return [path.read_bytes() for path in files]


def one_input(data: bytes) -> None:
    fuzzlib.exercise(fuzzlib.scratch_file("input.msgpack", data), "flax-msgpack")


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
