"""The corpus of broken and malicious files (tests/corpus/): each must raise its own typed error.

Every entry of ``tests/corpus/<group>/`` is a file, or a directory holding a
multi-file checkpoint (a TensorFlow prefix ``model.ckpt``), named
``<ErrorClass>--<what is wrong>[.<suffix>]``: reading it (opening, listing, every
tensor's values, ``verify``) must raise exactly that ``weightscope.errors`` class —
not another, not a traceback, not a result. The ``make_*.py`` scripts beside them wrote
them. Payloads of the malicious files would create marker files under
``/tmp/weightscope-corpus-marker-*`` or open a socket: neither may happen.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

import weightscope as ws
from weightscope import errors

CORPUS = Path(__file__).resolve().parent / "corpus"
ENTRIES = sorted(path for group in CORPUS.iterdir() if group.is_dir() for path in group.iterdir() if "--" in path.name)
MARKERS = Path("/tmp")


def _target(entry: Path) -> Path:
    """The file to open: an entry's own, a TensorFlow prefix's ``model.ckpt`` in it, or else the folder itself."""
    return entry / "model.ckpt" if (entry / "model.ckpt.index").is_file() else entry


def _read_everything(path: Path) -> None:
    with ws.open(path) as ckpt:
        for name in ckpt:
            ckpt.role(name)
            np.asarray(ckpt[name]).tobytes()
        ckpt.layers()
        problems = ckpt.verify()
        if problems:
            raise problems[0]


def test_the_corpus_is_there() -> None:
    assert len(ENTRIES) >= 20


@pytest.mark.parametrize("entry", ENTRIES, ids=[f"{path.parent.name}/{path.name}" for path in ENTRIES])
def test_each_file_gives_its_typed_error(entry: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = getattr(errors, entry.name.split("--", 1)[0])
    assert isinstance(expected, type) and issubclass(expected, errors.WeightscopeError)
    connections: list[object] = []
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: connections.append(address))
    with pytest.raises(errors.WeightscopeError) as caught:
        _read_everything(_target(entry))
    assert type(caught.value) is expected, f"{type(caught.value).__name__}: {caught.value}"
    assert connections == []
    assert not list(MARKERS.glob("weightscope-corpus-marker-*"))
