"""Fuzz what the tools write about a file: names and metadata of any code units, lone surrogates included.

Each input becomes a safetensors file whose one tensor name and metadata key and value
are the fuzzer's text. Whatever it is, the promises of ``weightscope.output`` hold: the
text for a terminal holds no control character, bidirectional override, line separator or
lone surrogate and is valid UTF-8, and escaping it again changes nothing; the JSON is
valid UTF-8 that loads back to the same document; and the name as printed opens the tensor.
"""

from __future__ import annotations

import json
import re

import atheris
import fuzzlib

with fuzzlib.instrumented():
    import weightscope as ws
    from weightscope.errors import WeightscopeError
    from weightscope.output import dumps_json, safe_text, terminal_text

# The harness's own list, not weightscope's: what must not reach a terminal.
FORBIDDEN = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def paired(text: str) -> str:
    """``text`` with surrogate pairs made the characters they encode."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def _file(name: str, key: str, value: str) -> bytes:
    header = {name: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "__metadata__": {key: value}}
    text = json.dumps(header).encode()  # ASCII: a lone surrogate as the escape "\ud800"
    return len(text).to_bytes(8, "little") + text + bytes(4)


def seeds() -> list[bytes]:
    """Texts as a file could hold them: escape sequences, C1, bidi, separators, surrogates."""
    return [
        "layer1.weight".encode("utf-16-le"),
        "\x1b]8;;http://x/\x07a\x1b[2J".encode("utf-16-le"),
        "\x9b31m\u202eb\u2028c\u2066".encode("utf-16-le"),
        "d\ud800e\udcff".encode("utf-16-le", "surrogatepass"),
        "f\ud83d\ude00g".encode("utf-16-le", "surrogatepass"),
    ]


def one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    name, key, value = (provider.ConsumeUnicode(40) for _ in range(3))
    path = fuzzlib.scratch_file("input.safetensors", _file(name, key, value))
    try:
        ckpt = ws.open(path, format="safetensors")
    except WeightscopeError:
        return  # refused (an empty name, "__metadata__"...): a typed error is a fine answer
    with ckpt:
        (read,) = list(ckpt)
        document = [{"name": read, "metadata": ckpt.metadata}]
        for escape, text in ((terminal_text, f"{read}\n{key} = {value}"), (safe_text, read)):
            shown = escape(text)
            assert FORBIDDEN.search(shown) is None, ascii(shown)
            shown.encode("utf-8")  # strict
            assert escape(shown) == shown  # escapes are left as they are
        text = dumps_json(document)
        assert FORBIDDEN.search(text.replace("\n", "")) is None, ascii(text)
        loaded = [{"name": paired(read), "metadata": {paired(k): paired(v) for k, v in ckpt.metadata.items()}}]
        assert json.loads(text.encode("utf-8")) == loaded  # as JSON reads them: a surrogate pair is one character
        assert ckpt.resolve(safe_text(read)) == read  # the printed name opens the tensor
        assert ckpt.resolve(paired(read)) == read  # and so does the name JSON gives back
        assert ckpt.resolve(read) == read


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
