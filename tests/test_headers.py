"""weightscope._headers, the C parser of safetensors headers and index weight maps, against the Python paths.

The C functions parse a strict subset of JSON and give None for anything else; the readers then take their
Python paths. Each function is held equal to that path on real headers and indexes and on thousands of mutations of
them (seeded, so a failure repeats): the same result, or None from C where the Python path returns None too.
"""

from __future__ import annotations

import gc
import json
import random
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from weightscope import _headers
from weightscope.errors import CorruptCheckpointError
from weightscope.formats import _folder_choice
from weightscope.formats import safetensors as st
from weightscope.infos import TensorInfo

_MUTATIONS = 3000


def _tensors() -> dict[str, np.ndarray]:
    """Several dtypes (the writer orders them by dtype, so not by name), a scalar, names of non-ASCII letters."""
    return {
        "layer1.weight": np.arange(10, dtype=np.float32).reshape(5, 2),
        "layer1.bias": np.ones(5, np.float16),
        "step": np.array(3, np.int64),
        "émbed.wéight": np.zeros((2, 3, 1), np.uint8),
        "a": np.ones((1, 1, 1, 1), np.float64),
        "z": np.ones(4, np.int32),
    }


def _headered(path: Path) -> tuple[bytes, int, int]:
    """A safetensors file's header text, where its data starts and the file's size."""
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    return data[8 : 8 + length], 8 + length, len(data)


def _both(path: Path, text: bytes, start: int, size: int) -> tuple[object, object]:
    """``_compact``'s answer of C and of the Python path (``_columns``), for ``text`` at ``start`` of a file of
    ``size`` bytes."""
    ckpt = st.SafetensorsCheckpoint(path)
    try:
        found = _headers.compact_header(text, st._PLAIN, TensorInfo, str(path), start, size)
        return found, ckpt._columns(text, start) if size == ckpt._source.size else "size"
    finally:
        ckpt.close()


@pytest.fixture
def saved(tmp_path: Path) -> list[Path]:
    """Files by the reference writer: several dtypes, metadata or none, one tensor, 300 of one kind."""
    files = []
    for number, (tensors, metadata) in enumerate(
        [
            (_tensors(), None),
            (_tensors(), {"format": "pt", "note": "ünïcode"}),
            ({"x": np.ones(3, np.float32)}, {}),
            ({f"experts.{i}.w": np.full((4, 4), i, np.float32) for i in range(300)}, None),
        ]
    ):
        path = tmp_path / f"{number}.safetensors"
        safetensors.numpy.save_file(tensors, str(path), metadata=metadata)
        files.append(path)
    return files


def test_compact_header_equals_the_python_path_on_the_writers_files(saved: list[Path]) -> None:
    for path in saved:
        text, start, size = _headered(path)
        found, expected = _both(path, text, start, size)
        assert found is not None and found == expected
        metadata, infos, ordered = found
        assert metadata == json.loads(text).get("__metadata__", {})
        assert list(infos) == [name for name, _ in json.loads(text).items() if name != "__metadata__"]
        assert ordered == (list(infos) == sorted(infos))
        assert all(type(info) is TensorInfo for info in infos.values())


def test_the_reader_gives_the_same_index_on_both_paths(saved: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def read(path: Path) -> tuple[list[TensorInfo], dict[str, str]]:
        ckpt = st.SafetensorsCheckpoint(path)
        try:
            return list(ckpt.infos()), ckpt.metadata
        finally:
            ckpt.close()

    through_c = [read(path) for path in saved]
    monkeypatch.setattr(st, "_headers", None)
    assert through_c == [read(path) for path in saved]
    assert [info.name for info in through_c[0][0]] == sorted(_tensors())


def test_infos_made_in_c_are_left_to_no_garbage_collection(saved: list[Path]) -> None:
    """Tuples of strs, ints and an untracked dtype cannot make a cycle: untracked, as CPython's own collection would
    leave them, so no collection walks 100,000 of them again."""
    text, start, size = _headered(saved[3])
    found = _headers.compact_header(text, st._PLAIN, TensorInfo, str(saved[3]), start, size)
    assert found is not None
    infos = list(found[1].values())
    assert not any(map(gc.is_tracked, infos)) and not gc.is_tracked(infos[0].shape)
    offset = start + json.loads(text)["experts.7.w"]["data_offsets"][0]
    assert found[1]["experts.7.w"] == TensorInfo(
        "experts.7.w", np.dtype(np.float32), (4, 4), 64, "float32", str(saved[3]), offset, "experts.7.w"
    )


def _mutated(text: bytes, rng: random.Random) -> bytes:
    """``text`` changed where a reader's checks are: a byte, a number, a quote, an escape, a cut, a copy."""
    data = bytearray(text)
    for _ in range(rng.choice([1, 1, 2, 3])):
        at = rng.randrange(len(data) + 1)
        kind = rng.randrange(9)
        if kind == 0 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif kind == 1:
            data[at:at] = rng.choice([b"0", b"9", b"00", b"18446744073709551616", b"-1", b"1.5", b"1e3"])
        elif kind == 2:
            data[at:at] = rng.choice([b'"', b"\\", b"\\n", b"\x01", b"\xff", b"\xc3", b"\xe2\x82", b" ", b"\n"])
        elif kind == 3:
            del data[at : at + rng.randrange(1, 12)]
        elif kind == 4:
            begin = rng.randrange(len(data) + 1)
            data[at:at] = data[begin : begin + rng.randrange(1, 80)]
        elif kind == 5:
            data[at:at] = rng.choice([b",", b":", b"{", b"}", b"[", b"]", b"[]", b"{}", b"null", b'"__metadata__"'])
        elif kind == 6:
            data[at:at] = b",".join([b"1"] * rng.choice([63, 64, 65]))
        elif kind == 7:
            data[at:] = data[at:].replace(b'"F32"', rng.choice([b'"F16"', b'"XX"', b'"F4"', b'"f32"']), 1)
        else:
            data[at:] = data[at:].replace(b"[", b"[0,", 1)
    return bytes(data)


def test_compact_header_equals_the_python_path_on_mutated_headers(saved: list[Path]) -> None:
    rng = random.Random(20261204)
    sources = [(path, *_headered(path)) for path in saved[:3]]
    answered = 0
    for _ in range(_MUTATIONS):
        path, text, start, size = rng.choice(sources)
        text = _mutated(text, rng)
        # Half of them with the start the text's length gives: the tiling check then passes where the text allows.
        start = start if rng.random() < 0.5 else 8 + len(text)
        found, expected = _both(path, text, start, size)
        if expected != "size":
            assert found == expected, text
            answered += found is not None
    assert answered > _MUTATIONS // 50  # some mutations keep a valid header (a space, a digit, another dtype...)


def test_compact_header_refuses_what_it_cannot_check() -> None:
    kinds = st._PLAIN
    good = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    assert _headers.compact_header(good, kinds, TensorInfo, "f", 100, 108) is not None
    for text, start, size in [
        (good, 100, 109),  # a byte after the last tensor
        (good, 100, 107),  # the tensor past the end
        (good, 109, 108),  # the data starts past the end
        (good.replace(b"[2]", b"[" + b",".join([b"1"] * 65) + b"]"), 100, 108),  # over numpy's rank
        (good.replace(b"[2]", b"[2,0]"), 100, 108),  # empty: check_size's case
        (good.replace(b"[0,8]", b"[0,08]"), 100, 108),  # a leading zero is not JSON
        (good.replace(b"[2]", b"[18446744073709551617]"), 100, 108),  # over 64 bits
        (good.replace(b"[2]", b"[4611686018427387904]"), 100, 108),  # bytes overflow 64 bits
        (good.replace(b'"a"', b'"__metadata__"'), 100, 108),
        (good.replace(b'"a"', b'"\\u0061"'), 100, 108),  # an escape: json's path decodes it
        (good.replace(b'"a"', b'"\xff"'), 100, 108),  # not UTF-8
        (b'{"__metadata__":{"k":"v","k":"w"},' + good[1:], 100, 108),  # a key given twice
        (good[:-1] + b',"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}', 100, 116),  # a name twice
        (b'{"__metadata__":{}}', 100, 100),  # no tensor
        (b" " + good, 100, 108),
    ]:
        assert _headers.compact_header(text, kinds, TensorInfo, "f", start, size) is None, text
    with pytest.raises(TypeError):
        _headers.compact_header(good, kinds, dict, "f", 100, 108)  # type: ignore[arg-type]


# -- string_map and read_json ---------------------------------------------------------------------------------------


def _indexes() -> list[bytes]:
    weight_map = {f"model.layers.{i}.w": f"model-{i % 3 + 1:05d}-of-00003.safetensors" for i in range(40)}
    weight_map["ünïcode"] = "model-00001-of-00003.safetensors"
    tricky = {"total_size": 123, "note": 'a "weight_map": {"x": "y"} [ ] { \\" }', "list": [1, {"a": [2]}, None]}
    documents = [
        {"metadata": {"total_size": 123}, "weight_map": weight_map},
        {"weight_map": weight_map, "metadata": tricky},
        {"metadata": tricky, "weight_map": weight_map, "after": [True, False, -1.5e3]},
        {"weight_map": {}},
    ]
    texts = [json.dumps(document, **options).encode()  # type: ignore[arg-type]
             for document in documents for options in ({}, {"indent": 2}, {"separators": (",", ":")},
                                                        {"ensure_ascii": False})]  # fmt: skip
    return texts


def test_string_map_finds_the_weight_map_as_json_parses_it() -> None:
    for text in _indexes():
        found = _headers.string_map(text, "weight_map")
        if b"\\u00fcn" in text:  # json.dumps' ASCII escapes: json's path decodes them
            assert found is None
            continue
        assert found is not None, text
        begin, end, weight_map = found
        assert weight_map == json.loads(text)["weight_map"] == json.loads(text[begin:end])
        assert list(weight_map) == list(json.loads(text)["weight_map"])


def test_string_map_gives_none_where_json_must_parse() -> None:
    for text in [
        b'{"weight_map": {"a": "b\\n"}}',  # an escape
        b'{"weight_map": {"a": 1}}',  # not a string
        b'{"weight_map": {"a": "b", "a": "c"}}',  # a name twice
        b'{"weight_map": ["a"]}',
        b'{"metadata": {}}',  # no such member
        b'["weight_map", {"a": "b"}]',
        b'{"x": "\\"weight_map\\": {\\"a\\": \\"b\\"}"}',  # only inside a string
        b'{"x": [{"weight_map": {"a": "b"}}]}',  # only nested
        b'{"weight_map": {"a": "b"',  # cut
        b'{"x": ' + b"[" * 100_000 + b"]" * 99_999 + b', "weight_map": {"a": "b"}}',  # deep, unbalanced
        b'{"x": 1\x00, "weight_map": {"a": "b"}}',
    ]:
        assert _headers.string_map(text, "weight_map") is None, text[:80]


def _read(path: Path, fast: bool, monkeypatch: pytest.MonkeyPatch) -> object:
    with monkeypatch.context() as patch:
        if not fast:
            patch.setattr(_folder_choice, "_headers", None)
        try:
            return _folder_choice.read_json(path, "the index", strings="weight_map")
        except CorruptCheckpointError as error:
            return str(error)


def test_read_json_gives_the_same_document_or_message_on_mutated_indexes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(4)
    path = tmp_path / "model.safetensors.index.json"
    sources = _indexes()
    parsed = 0
    for _ in range(_MUTATIONS):
        text = _mutated(rng.choice(sources), rng)
        path.write_bytes(text)
        fast = _read(path, True, monkeypatch)
        assert fast == _read(path, False, monkeypatch), text
        parsed += isinstance(fast, dict)
    assert parsed > _MUTATIONS // 20


def test_a_deep_document_is_refused_with_jsons_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.safetensors.index.json"
    path.write_bytes(b'{"x": ' + b"[" * 200_000 + b"]" * 200_000 + b', "weight_map": {"a": "b"}}')
    message = _read(path, True, monkeypatch)
    assert isinstance(message, str) and "not UTF-8 JSON" in message
    assert message == _read(path, False, monkeypatch)
