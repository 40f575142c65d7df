"""Write the TorchScript entries of the corpus (tests/corpus/torchscript/).

Run ``.venv/bin/python tests/corpus/make_torchscript_corpus.py``: it replaces the folder's
entries with the same bytes every time (pickles assembled by hand with the PyTorch corpus's
assembler, zips by ``zipfile`` with a fixed date). Each archive is shaped as ``torch.jit.save``
writes one (``code/`` deflated, ``constants.pkl``, the rest stored, a storage first), so that it is read as
TorchScript, and named ``<ErrorClass>--<what is wrong>.pt`` for the error reading it must
raise. The malicious ones would run ``touch /tmp/weightscope-corpus-marker-<name>`` were
their pickles ever evaluated, or their code run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from make_pytorch_corpus import FOUR, bomb, call, deflating_zip, glob, pickle2, shell, tensor, text

HERE = Path(__file__).resolve().parent
EMPTY_TUPLE = pickle2(b")")
# The code of a module class ``__torch__.evil.Net`` whose only buffer is ``weight``: and a payload, never run.
CODE = (
    "import os\n"
    f"os.system({shell('code')!r})\n"
    "class Net(Module):\n"
    "  __parameters__ = []\n"
    '  __buffers__ = ["weight", ]\n'
    "  weight : Tensor\n"
)


def module(*attributes: tuple[str, bytes], qualname: tuple[str, str] = ("__torch__.evil", "Net")) -> bytes:
    """A TorchScript object as data.pkl holds one: its class, NEWOBJ of no arguments, BUILD of its attributes."""
    items = b"".join(text(key) + value for key, value in attributes)
    return glob(*qualname) + b")\x81" + b"}(" + items + b"ub"


CODE_FILE = "code/__torch__/evil.py"
WEIGHT = ("weight", tensor("0", 4, (2, 2), (2, 1)))
VALID = pickle2(module(("training", b"\x88"), WEIGHT))


def members(
    data: bytes = VALID, constants: bytes = EMPTY_TUPLE, storages: dict[str, bytes] | None = None, code: str = CODE
) -> dict[str, bytes]:
    """A ``torch.jit.save`` archive's members: data/, data.pkl, code/, constants.pkl, version, byteorder."""
    found = {f"data/{key}": raw for key, raw in ({"0": FOUR} if storages is None else storages).items()}
    found |= {"data.pkl": data, CODE_FILE: code.encode(), "constants.pkl": constants}
    found |= {"version": b"3\n", "byteorder": b"little"}
    return {f"archive/{name}": raw for name, raw in found.items()}


def archive(
    data: bytes = VALID,
    constants: bytes = EMPTY_TUPLE,
    storages: dict[str, bytes] | None = None,
    *,
    deflated: str = CODE_FILE,
) -> bytes:
    """The archive zipped as ``torch.jit.save`` zips it: ``deflated`` (its code) deflated, the rest stored."""
    return deflating_zip(members(data, constants, storages), (f"archive/{deflated}",))


def shared_modules(depth: int) -> bytes:
    """Modules each holding the one before twice (as ``a`` and ``b``) through the memo: 2^depth module visits."""
    body = module(WEIGHT) + b"q\x00"
    for level in range(1, depth + 1):
        before = b"h" + bytes([level - 1])
        body += b"0" + module(("a", before), ("b", before)) + b"q" + bytes([level])
    return pickle2(body)


def torchscript_entries() -> dict[str, bytes]:
    whole = archive()
    return {
        "RefusedError--data-pkl-calls-os-system.pt": archive(
            pickle2(module(WEIGHT, ("hook", call(glob("os", "system"), text(shell("ts-system"))))))
        ),
        "RefusedError--constants-pkl-calls-os-system.pt": archive(
            constants=pickle2(b"(" + call(glob("os", "system"), text(shell("ts-constants"))) + b"t")
        ),
        "RefusedError--a-torchscript-class-called.pt": archive(
            pickle2(module(("hook", call(glob("__torch__.os", "system"), text(shell("ts-called"))))))
        ),
        "RefusedError--module-of-a-builtins-class.pt": archive(pickle2(module(WEIGHT, qualname=("builtins", "eval")))),
        "UnsupportedFormatError--state-set-by-setstate.pt": archive(
            pickle2(glob("__torch__.evil", "Net") + b")\x81" + b"(" + text(shell("ts-setstate")) + b"tb")
        ),
        "CorruptCheckpointError--data-pkl-not-a-module.pt": archive(
            pickle2(b"}(" + text(WEIGHT[0]) + WEIGHT[1] + b"u")
        ),
        "CorruptCheckpointError--torchscript-class-made-with-arguments.pt": archive(
            pickle2(glob("__torch__.evil", "Net") + b"(" + text(shell("ts-new")) + b"t\x81")
        ),
        "CorruptCheckpointError--constants-pkl-not-a-tuple.pt": archive(constants=pickle2(b"}")),
        "CorruptCheckpointError--constants-pkl-holding-a-string.pt": archive(
            constants=pickle2(b"(" + text("x") + b"t")
        ),
        "CorruptCheckpointError--storage-member-missing.pt": archive(storages={}),
        "CorruptCheckpointError--modules-shared-to-name-2-30-tensors.pt": archive(shared_modules(30)),
        "CorruptCheckpointError--tensor-larger-than-its-storage.pt": archive(
            pickle2(module(("weight", tensor("0", 4, (3, 3), (3, 1)))))
        ),
        "TruncatedFileError--storage-member-shorter-than-its-storage.pt": archive(storages={"0": FOUR[:8]}),
        "CorruptCheckpointError--truncated-zip.pt": whole[: len(whole) // 2],
        "CorruptCheckpointError--code-file-a-zip-bomb.pt": bomb(members(), f"archive/{CODE_FILE}"),
        "UnsupportedFormatError--data-pkl-deflated.pt": archive(deflated="data.pkl"),
        "UnsupportedFormatError--storage-deflated.pt": archive(deflated="data/0"),
    }


def main() -> None:
    folder = HERE / "torchscript"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    for name, data in torchscript_entries().items():
        (folder / name).write_bytes(data)
    print(f"torchscript: {len(list(folder.glob('*--*')))} entries")


if __name__ == "__main__":
    main()
