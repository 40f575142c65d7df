"""Write the PyTorch, plain pickle, GGUF, ONNX and Keras entries of the corpus (tests/corpus/{pytorch,pickle,...}/).

Run ``.venv/bin/python tests/corpus/make_pytorch_corpus.py``: it replaces those five
folders' entries with the same bytes every time (pickles, zips and GGUF files are
assembled by hand; no clock, no random ids). Each entry is named
``<ErrorClass>--<what is wrong>.<suffix>`` for the error reading it must raise. The
malicious pickles' payloads would run ``touch /tmp/weightscope-corpus-marker-<name>``
or open a socket, were they ever evaluated.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from zip_crafting import end_record, members_and_directory, stored_zip, tar_polyglot, two_directories

from weightscope.containers.zip import ZipWriter

HERE = Path(__file__).resolve().parent
MARKER = "/tmp/weightscope-corpus-marker-"


# -- a pickle assembler (protocol 2 opcodes, a few of 0 and 4) -------------------------------


def glob(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def text(value: str) -> bytes:
    encoded = value.encode()
    return b"X" + struct.pack("<I", len(encoded)) + encoded


def short_text(value: str) -> bytes:  # SHORT_BINUNICODE (protocol 4)
    encoded = value.encode()
    return b"\x8c" + bytes([len(encoded)]) + encoded


def integer(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    encoded = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(encoded)]) + encoded


def tup(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def call(function: bytes, *args: bytes) -> bytes:
    return function + tup(*args) + b"R"


def pickle2(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def ordered_dict(*pairs: tuple[str, bytes]) -> bytes:
    items = b"".join(text(key) + value for key, value in pairs)
    return call(glob("collections", "OrderedDict")) + (b"(" + items + b"u" if pairs else b"")


def storage(key: str, numel: int, kind: str = "FloatStorage", legacy: bool = False) -> bytes:
    pid = [text("storage"), glob("torch", kind), text(key), text("cpu"), integer(numel)]
    return tup(*pid, *([b"N"] if legacy else [])) + b"Q"


def tensor(
    key: str, numel: int, shape: tuple[int, ...], stride: tuple[int, ...], offset: int = 0, legacy: bool = False
) -> bytes:
    return call(
        glob("torch._utils", "_rebuild_tensor_v2"),
        storage(key, numel, legacy=legacy),
        integer(offset),
        tup(*map(integer, shape)),
        tup(*map(integer, stride)),
        b"\x89",
        call(glob("collections", "OrderedDict")),
    )


def laughs(depth: int) -> bytes:
    """A list of lists, each holding the one before twice through the memo: 2^depth leaves from a few bytes."""
    body = b"](]K\x01a\x94" + b"".join(b"](" + (b"h" + bytes([i])) * 2 + b"e\x94" for i in range(depth)) + b"e"
    return pickle2(body)


def amplifications(legacy: bool = False) -> dict[str, bytes]:
    """Small pickles that would make weightscope build far more than their size, and a dict made slow to fill."""
    by_int = b"".join(b"J" + struct.pack("<i", key) + b"h\x00" for key in range(1, 5000))
    keyed = [integer(key) for key in range(1000)]
    one_tensor = tensor("0", 4, (2, 2), (2, 1), legacy=legacy) + b"q\x00"
    thousand = b"}(" + keyed[0] + one_tensor + b"".join(key + b"h\x00" for key in keyed[1:]) + b"uq\x01"
    prime = 2**61 - 1  # CPython hashes an int n as n mod this prime: its multiples all hash to 0
    return {
        # one 20 KB string named 5,000 times: 1 GB of metadata to show
        "LimitExceededError--one-string-shown-5000-times": pickle2(
            b"}(" + integer(0) + text("x" * 20_000) + b"q\x00" + by_int + b"u"
        ),
        # a dict of 1,000 names for one tensor, named under 850 keys: 850,000 tensors from 14 KB
        "LimitExceededError--850000-tensors": pickle2(
            b"}(" + keyed[0] + thousand + b"".join(key + b"h\x01" for key in keyed[1:850]) + b"u"
        ),
        "UnsupportedFormatError--int-keys-hashing-alike": pickle2(
            b"}(" + b"".join(integer(prime * (index + 1)) + b"N" for index in range(300)) + b"u"
        ),
    }


FOUR = np.arange(4, dtype="<f4").tobytes()  # the storage "0" of the valid files
VALID = pickle2(ordered_dict(("weight", tensor("0", 4, (2, 2), (2, 1)))))


def torch_zip(pickled: bytes, storages: dict[str, bytes] | None = None, extra: tuple[str, ...] = ()) -> bytes:
    """A ``torch.save``-shaped zip: archive/data.pkl, byteorder, data/<key>, version; ``extra`` members too."""
    buffer = io.BytesIO()
    writer = ZipWriter(buffer, align=64)
    writer.add("archive/data.pkl", len(pickled), [pickled])
    writer.add("archive/byteorder", 6, [b"little"])
    for key, data in ({"0": FOUR} if storages is None else storages).items():
        writer.add(f"archive/data/{key}", len(data), [data])
    for name in extra:
        writer.add(name, 4, [b"evil"])
    writer.add("archive/version", 2, [b"3\n"])
    writer.close()
    return buffer.getvalue()


def legacy(saved: bytes, storages: dict[str, bytes] | None = None, *, protocol: int = 1001, info: bytes = b"") -> bytes:
    """A pre-1.6 ``torch.save`` file: magic, protocol, system info, the saved object, the keys, each storage."""
    storages = {"0": FOUR} if storages is None else storages
    magic = pickle2(b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little"))
    sizes = b"".join(text(key) + integer(size) for key, size in (("short", 2), ("int", 4), ("long", 4)))
    system = info or pickle2(
        b"}("
        + text("protocol_version")
        + integer(1001)
        + text("little_endian")
        + b"\x88"
        + text("type_sizes")
        + b"}("
        + sizes
        + b"uu"
    )
    keys = pickle2(b"](" + b"".join(text(key) for key in storages) + b"e")
    data = b"".join(struct.pack("<q", len(raw) // 4) + raw for raw in storages.values())
    return magic + pickle2(integer(protocol)) + system + saved + keys + data


def shell(name: str) -> str:
    return f"touch {MARKER}{name}"


def pytorch_entries() -> dict[str, bytes]:
    refused = {
        "reduce-os-system": b"cos\nsystem\n(S'" + shell("system").encode() + b"'\ntR.",  # protocol 0
        "reduce-posix-system": pickle2(call(glob("posix", "system"), text(shell("posix")))),
        "reduce-eval": pickle2(call(glob("builtins", "eval"), text(f"__import__('os').system('{shell('eval')}')"))),
        "reduce-exec": pickle2(call(glob("builtins", "exec"), text(f"import os; os.system('{shell('exec')}')"))),
        "subprocess-popen": pickle2(
            call(glob("subprocess", "Popen"), b"]" + b"(" + text("touch") + text(f"{MARKER}popen") + b"e")
        ),
        "subprocess-check-output-shell": pickle2(call(glob("subprocess", "check_output"), text(shell("check-output")))),
        "builtins-getattr-chain": pickle2(
            call(
                call(
                    glob("builtins", "getattr"),
                    call(glob("builtins", "__import__"), text("os")),
                    text("system"),
                ),
                text(shell("getattr")),
            )
        ),
        "getattr-on-allowed-module-object": pickle2(
            call(call(glob("builtins", "getattr"), glob("collections", "OrderedDict"), text("fromkeys")), tup())
        ),
        "import-by-name": pickle2(call(glob("builtins", "__import__"), text("os"))),
        "importlib-import-module": pickle2(call(glob("importlib", "import_module"), text("subprocess"))),
        "stack-global-os-system": b"\x80\x04"
        + short_text("os")
        + short_text("system")
        + b"\x93"
        + short_text(shell("stack-global"))
        + b"\x85R.",
        # "torch._utils" is memoized, then memo 0 is overwritten with "os": a reader of the
        # opcodes alone sees only torch names, yet STACK_GLOBAL gets os.system from the memo.
        # "torch._utils" is memoized, then memo 0 is overwritten with "os" (the stale values go
        # into a list, as pickle has no POP here): a reader that trusts the first PUT of each
        # memo slot sees only torch names, yet STACK_GLOBAL gets os.system from the memo.
        "stack-global-name-from-overwritten-memo": b"\x80\x04]"
        + short_text("torch._utils")
        + b"\x94a"
        + short_text("os")
        + b"q\x00a"
        + b"h\x00"
        + short_text("system")
        + b"\x93"
        + short_text(shell("memo"))
        + b"\x85Ra.",
        # module and name only ever reach STACK_GLOBAL as memo references (BINGET)
        "stack-global-names-from-memo-gets": b"\x80\x04]"
        + short_text("subprocess")
        + b"q\x05a"
        + short_text("getoutput")
        + b"q\x06a"
        + b"h\x05h\x06\x93"
        + short_text(shell("memo-get"))
        + b"\x85Ra.",
        "inst-opcode": b"(" + text(shell("inst")) + b"ios\nsystem\n.",
        "inst-opcode-on-allowed-name": b"(icollections\nOrderedDict\n.",
        "obj-opcode-on-allowed-name": pickle2(b"(" + glob("collections", "OrderedDict") + b"o"),
        "newobj-on-a-storage-class": pickle2(glob("torch", "FloatStorage") + b")\x81"),
        "ext1-opcode": pickle2(b"\x82\x01"),
        "reduce-ordereddict-around-os-system": pickle2(
            call(glob("collections", "OrderedDict"), call(glob("os", "system"), text(shell("nested"))))
        ),
        "reduce-rebuild-tensor-with-eval-argument": pickle2(
            call(
                glob("torch._utils", "_rebuild_tensor_v2"),
                storage("0", 4),
                call(glob("builtins", "eval"), text("0")),
                tup(integer(4)),
                tup(integer(1)),
                b"\x89",
                call(glob("collections", "OrderedDict")),
            )
        ),
        "build-setstate-on-a-global": pickle2(
            glob("collections", "OrderedDict")
            + b"}"
            + text("__setstate__")
            + glob("torch._utils", "_rebuild_tensor_v2")
            + b"sb"
        ),
        "build-state-on-a-tensor": pickle2(tensor("0", 4, (4,), (1,)) + b"}" + text("__class__") + text("os") + b"sb"),
        "socket-create-connection": pickle2(
            call(glob("socket", "create_connection"), tup(text("127.0.0.1"), integer(9)))
        ),
        "socket-class": pickle2(call(glob("socket", "socket"), tup())),
        "webbrowser-open": pickle2(call(glob("webbrowser", "open"), text("http://127.0.0.1:9/"))),
        "torch-load-nested": pickle2(call(glob("torch", "load"), text("/tmp/other.pt"))),
        "numpy-load-pickle": pickle2(call(glob("numpy", "load"), text("/tmp/x.npy"))),
        "reduce-on-a-storage-class": pickle2(call(glob("torch", "FloatStorage"), tup())),
    }
    entries = {f"RefusedError--{name}.pt": torch_zip(body) for name, body in refused.items()}
    corrupt_args = {
        "reduce-rebuild-tensor-v2-with-a-string-storage": pickle2(
            call(
                glob("torch._utils", "_rebuild_tensor_v2"),
                text("storage"),
                integer(0),
                tup(integer(4)),
                tup(integer(1)),
                b"\x89",
                call(glob("collections", "OrderedDict")),
            )
        ),
        "reduce-rebuild-tensor-v2-with-float-offset": pickle2(
            call(
                glob("torch._utils", "_rebuild_tensor_v2"),
                storage("0", 4),
                b"G" + struct.pack(">d", 0.5),
                tup(integer(4)),
                tup(integer(1)),
                b"\x89",
                call(glob("collections", "OrderedDict")),
            )
        ),
        "reduce-ordereddict-of-items-that-are-not-pairs": pickle2(
            call(glob("collections", "OrderedDict"), b"]" + b"(" + tup(text("a"), integer(1), integer(2)) + b"e")
        ),
        "reduce-torch-size-of-strings": pickle2(call(glob("torch", "Size"), tup(text("x")))),
        "reduce-codecs-encode-rot13": pickle2(call(glob("_codecs", "encode"), text("abc"), text("rot13"))),
        "persistent-id-not-a-storage": pickle2(tup(text("module"), text("os"), text("system")) + b"Q"),
        "stack-global-of-non-strings": b"\x80\x04K\x01K\x02\x93.",
        "pickle-ends-with-two-values": pickle2(b"K\x01K\x02"),
        "not-a-pickle-opcode": pickle2(b"\xff"),
    }
    # REDUCE of an allowed name with arguments of the wrong kinds: malformed, nothing is called.
    entries.update({f"CorruptCheckpointError--{name}.pt": torch_zip(body) for name, body in corrupt_args.items()})
    entries["TruncatedFileError--pickle-ends-inside-a-string.pt"] = torch_zip(VALID[:40])
    entries["CorruptCheckpointError--memo-shared-lists-naming-2-30-values.pt"] = torch_zip(laughs(30))
    entries.update({f"{name}.pt": torch_zip(body) for name, body in amplifications().items()})
    # CPython and torch drop what a pickle leaves under its result; os.system would have run
    entries["RefusedError--os-system-left-under-the-result.pt"] = torch_zip(
        pickle2(call(glob("os", "system"), text(shell("under"))) + VALID[2:-1])
    )

    # the zip around the pickle
    valid = torch_zip(VALID)
    entries["CorruptCheckpointError--zip-member-dotdot.pt"] = torch_zip(VALID, extra=("../evil",))
    entries["CorruptCheckpointError--zip-member-dotdot-inside-folder.pt"] = torch_zip(
        VALID, extra=("archive/data/../../../etc/cron.d/x",)
    )
    entries["CorruptCheckpointError--zip-member-absolute.pt"] = torch_zip(VALID, extra=("/etc/evil",))
    entries["CorruptCheckpointError--truncated-zip-half.pt"] = valid[: len(valid) // 2]
    entries["CorruptCheckpointError--truncated-zip-end-record-cut.pt"] = valid[:-10]
    entries["UnsupportedFormatError--not-a-zip.pt"] = b"PK\x03\x04" + b"\0" * 60
    entries["UnsupportedFormatError--zip-bomb-deflated-data-pkl.pt"] = bomb(
        {"archive/data.pkl": VALID, "archive/data/0": FOUR}, "archive/data.pkl"
    )
    damaged = bytearray(valid)
    start = valid.index(FOUR)
    damaged[start + 5] ^= 0x01
    entries["ChecksumMismatchError--wrong-crc-storage.pt"] = bytes(damaged)
    damaged = bytearray(valid)
    start = valid.index(VALID)
    damaged[start + 20] ^= 0x20  # 'weight' -> 'wEight' (a byte of the name): only the CRC tells
    entries["ChecksumMismatchError--wrong-crc-data-pkl.pt"] = bytes(damaged)
    entries["CorruptCheckpointError--byteorder-neither.pt"] = replace_member(valid, b"little", b"middle")

    # tensors against their storages
    def one(shape: tuple[int, ...], stride: tuple[int, ...], numel: int = 4, offset: int = 0) -> bytes:
        return torch_zip(pickle2(ordered_dict(("t", tensor("0", numel, shape, stride, offset)))))

    entries["TruncatedFileError--storage-smaller-than-its-numel.pt"] = one((8,), (1,), numel=8)
    entries["CorruptCheckpointError--tensor-larger-than-its-storage.pt"] = one((3, 2), (2, 1))
    entries["CorruptCheckpointError--offset-past-the-storage.pt"] = one((2,), (1,), offset=3)
    entries["CorruptCheckpointError--negative-size.pt"] = one((-2, 2), (2, 1))
    entries["CorruptCheckpointError--negative-stride.pt"] = one((2, 2), (-2, 1))
    entries["CorruptCheckpointError--negative-offset.pt"] = one((2,), (1,), offset=-1)
    entries["CorruptCheckpointError--size-2-62-elements.pt"] = one((2**31, 2**31), (2**31, 1))
    entries["UnsupportedFormatError--size-2-64-zero-strides.pt"] = one((2**32, 2**32), (0, 0))
    # Views numpy holds without copying, refused when read whole past the expansion cap (1024x the bytes viewed):
    # torch.zeros(1).expand(2**40), and torch.arange(6143.).as_strided((4096, 2048), (1, 1)) (32 MiB of 24 KiB).
    entries["LimitExceededError--stride-0-view-of-2-40-values.pt"] = one((2**40,), (0,))
    windows = np.arange(6143, dtype="<f4").tobytes()
    entries["LimitExceededError--overlapping-windows-1365x-their-bytes.pt"] = torch_zip(
        pickle2(ordered_dict(("t", tensor("0", 6143, (4096, 2048), (1, 1))))), storages={"0": windows}
    )
    entries["UnsupportedFormatError--empty-tensor-with-a-2-70-dimension.pt"] = one((0, 2**70), (1, 1))
    entries["UnsupportedFormatError--70-dimensions.pt"] = one((1,) * 70, (1,) * 70)
    entries["CorruptCheckpointError--huge-stride.pt"] = one((2, 2), (2**62, 1))
    entries["TruncatedFileError--huge-numel-in-persistent-id.pt"] = torch_zip(
        pickle2(ordered_dict(("t", tensor("0", 2**62, (4,), (1,)))))
    )
    entries["CorruptCheckpointError--storage-member-missing.pt"] = torch_zip(VALID, storages={})
    entries["CorruptCheckpointError--shape-and-stride-lengths-differ.pt"] = one((2, 2), (1,))

    # the legacy format
    saved = pickle2(ordered_dict(("weight", tensor("0", 4, (2, 2), (2, 1), legacy=True))))
    entries["RefusedError--legacy-os-system-in-saved-object.pt"] = legacy(
        pickle2(call(glob("os", "system"), text(shell("legacy-system"))))
    )
    entries["RefusedError--legacy-eval-in-system-info.pt"] = legacy(
        saved, info=pickle2(call(glob("builtins", "eval"), text("{'little_endian': True}")))
    )
    keys_refused = pickle2(call(glob("subprocess", "getoutput"), text(shell("legacy-keys"))))
    base = legacy(saved, storages={})
    entries["RefusedError--legacy-subprocess-in-storage-keys.pt"] = (
        base[: base.rindex(b"\x80\x02")] + keys_refused + struct.pack("<q", 1) + FOUR
    )
    entries["RefusedError--legacy-build-setstate.pt"] = legacy(
        pickle2(glob("torch._utils", "_rebuild_tensor_v2") + b"}" + text("__setstate__") + text("x") + b"sb")
    )
    entries["CorruptCheckpointError--legacy-memo-shared-lists-naming-2-30-values.pt"] = legacy(laughs(30), {})
    whole = legacy(saved)
    entries["TruncatedFileError--legacy-storage-cut-short.pt"] = whole[:-6]
    entries["TruncatedFileError--legacy-storage-count-missing.pt"] = whole[: -(len(FOUR) + 4)]
    entries["CorruptCheckpointError--legacy-element-count-differs.pt"] = legacy(saved, storages={"0": FOUR + FOUR})
    entries["UnsupportedFormatError--legacy-protocol-version-1000.pt"] = legacy(saved, protocol=1000)
    entries["CorruptCheckpointError--legacy-tensor-larger-than-its-storage.pt"] = legacy(
        pickle2(ordered_dict(("weight", tensor("0", 4, (3, 2), (2, 1), legacy=True))))
    )
    entries["CorruptCheckpointError--legacy-negative-stride.pt"] = legacy(
        pickle2(ordered_dict(("weight", tensor("0", 4, (2, 2), (-2, 1), legacy=True))))
    )
    entries["CorruptCheckpointError--legacy-key-not-typed.pt"] = legacy(saved, storages={"1": FOUR})
    entries["LimitExceededError--legacy-850000-tensors.pt"] = legacy(
        amplifications(legacy=True)["LimitExceededError--850000-tensors"]
    )
    entries.update(differential_entries())
    return entries


# -- files two readers read differently -------------------------------------------------------


def torch_members(pickled: bytes, *extra: tuple[str, bytes]) -> list[tuple[str, bytes]]:
    """The members of a ``torch.save`` zip holding ``pickled`` and the storage "0", and ``extra``."""
    return [("archive/data.pkl", pickled), ("archive/byteorder", b"little"), ("archive/data/0", FOUR), *extra,
            ("archive/version", b"3\n")]  # fmt: skip


def differential_entries(run: Callable[[str], str] = shell) -> dict[str, bytes]:
    """Files that zip readers, or ``torch.load`` and a reader of their pickles, read differently.

    In those whose pickle would run ``run(name)``, the benign state dict ``VALID`` is what
    ``zipfile`` (or a reader taking the file for a zip) sees, the command what ``torch.load``
    runs. ``tests/test_zip_differentials.py`` loads each with torch to show it.
    """

    def evil(name: str, length: int = 0) -> bytes:
        return pickle2(call(glob("os", "system"), text(run(name)))).ljust(length, b".")  # STOPs after the first

    valid = torch_members(VALID)
    padded = len(VALID)
    entries = {
        # miniz reads the directory where the end record says, zipfile the one right before it
        "CorruptCheckpointError--zip-two-central-directories.pt": two_directories(
            torch_members(evil("two-directories", padded)), valid
        ),
        # miniz looks names up ignoring ASCII case (and finds DATA.PKL), zipfile exactly
        "CorruptCheckpointError--zip-data-pkl-twice-differing-in-case.pt": stored_zip(
            torch_members(VALID, ("archive/DATA.PKL", evil("case")))
        ),
        "CorruptCheckpointError--zip-data-pkl-twice.pt": stored_zip(
            torch_members(VALID, ("archive/data.pkl", evil("twice")))
        ),
        # torch.load reads a file not starting with PK\3\4 as pickles: this one's first runs os.system
        "UnsupportedFormatError--protocol-0-pickle-before-a-zip.pt": b"cos\nsystem\n(S'"
        + run("before-zip").encode()
        + b"'\ntR."
        + stored_zip(valid),
        "CorruptCheckpointError--zip-bytes-between-directory-and-end.pt": stored_zip(valid, between=b"junk"),
        "CorruptCheckpointError--zip-directory-offset-off-by-4.pt": stored_zip(valid, stated_offset_shift=-4),
        "CorruptCheckpointError--zip-entry-count-one-short.pt": stored_zip(valid, count=len(valid) - 1),
        "CorruptCheckpointError--zip-comment-holding-an-end-record.pt": stored_zip(
            valid, comment=end_record(0, 0, 0) + b"!"
        ),
        # zipfile cuts the name at the NUL (and reads it as data.pkl), miniz does not
        "CorruptCheckpointError--zip-name-with-a-nul.pt": stored_zip(
            [valid[-1], ("archive/data.pkl\0.txt", VALID), *valid[1:-1]]
        ),
        "CorruptCheckpointError--zip-local-header-names-another-member.pt": stored_zip(
            valid, local={"archive/data/0": {"name": b"archive/data/1"}}
        ),
        "CorruptCheckpointError--zip-local-header-crc-differs.pt": stored_zip(
            valid, local={"archive/data/0": {"crc": 0}}
        ),
        "CorruptCheckpointError--zip-local-header-size-differs.pt": stored_zip(
            valid, local={"archive/data/0": {"size": 8}}
        ),
        "CorruptCheckpointError--zip-local-header-method-differs.pt": stored_zip(
            valid, local={"archive/data/0": {"method": 8}}
        ),
        "CorruptCheckpointError--zip-members-overlap.pt": stored_zip(
            valid, local={"archive/byteorder": {"size": 40}}, central={"archive/byteorder": {"size": 40}}
        ),
        "CorruptCheckpointError--zip-member-outside-the-folder.pt": stored_zip([*valid, ("other/x", b"x")]),
        "UnsupportedFormatError--torchscript-constants-pkl.pt": stored_zip(
            [*valid, ("archive/constants.pkl", evil("constants"))]
        ),
        "CorruptCheckpointError--zip64-directory-offset-contradicts-end-record.pt": stored_zip(
            valid, zip64={"offset": 4}
        ),
        "CorruptCheckpointError--zip64-locator-points-elsewhere.pt": stored_zip(valid, zip64={"locator": -8}),
        # torch.load refuses a storage record longer than the storage the pickle names
        "CorruptCheckpointError--storage-member-larger-than-its-storage.pt": stored_zip(
            [*valid[:2], ("archive/data/0", FOUR + bytes(8)), *valid[3:]]
        ),
    }
    # data before the first member: a local header no directory entry lists, then the members
    hidden = struct.pack("<4s22xH2x", b"PK\x03\x04", 16) + b"archive/data.pkl" + evil("hidden")
    body, directory = members_and_directory(valid, start=len(hidden))
    entries["CorruptCheckpointError--zip-bytes-before-the-first-member.pt"] = (
        hidden + body + directory + end_record(len(valid), len(directory), len(hidden) + len(body))
    )
    # legacy pickles whose first 512 bytes are also a tar header: torch.load reads the tar's members
    room = b"X" + struct.pack("<I", 512 - 41) + bytes(512 - 41)  # a string from byte 41 to 512
    info = pickle2(b"}(" + text("room") + room + text("little_endian") + b"\x88u")
    saved = pickle2(ordered_dict(("weight", tensor("0", 4, (2, 2), (2, 1), legacy=True))))
    # torch's tar loader: no storages and no storage views, no tensors, then the pickle it runs
    tar_members = {
        "storages": pickle2(integer(0)) + pickle2(b"]"),
        "tensors": pickle2(integer(0)),
        "pickle": evil("tar"),
    }
    entries["UnsupportedFormatError--legacy-pickles-that-are-also-a-tar.pt"] = tar_polyglot(
        legacy(saved, info=info), tar_members
    )
    return entries


# -- zips: a member whose sizes are patched -----------------------------------------------


def replace_member(archive: bytes, old: bytes, new: bytes) -> bytes:
    """Change a stored member's bytes and fix its CRC-32, so that only the content is wrong."""
    assert len(old) == len(new) and archive.count(old) == 1
    import zlib

    patched = archive.replace(old, new)
    before, after = struct.pack("<I", zlib.crc32(old)), struct.pack("<I", zlib.crc32(new))
    assert patched.count(before) == 2
    return patched.replace(before, after)


def deflating_zip(members: dict[str, bytes], deflated: tuple[str, ...]) -> bytes:
    """A zip of ``members`` (dated 1980), those named in ``deflated`` deflated, the others stored."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED if name in deflated else zipfile.ZIP_STORED
            archive.writestr(info, data)
    return buffer.getvalue()


def bomb(members: dict[str, bytes], target: str, claimed: int = 0xFFFFFFF0) -> bytes:
    """A zip whose ``target`` member is deflated and claims ``claimed`` bytes (about 4 GiB) inflated."""
    data = bytearray(deflating_zip(members, (target,)))
    encoded = target.encode()
    # the uncompressed size: at 22 in the local header, at 24 in the central directory entry
    for signature, field in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        position = 0
        while (position := data.find(signature, position)) >= 0:
            name_at = position + (30 if signature == b"PK\x03\x04" else 46)
            if data[name_at : name_at + len(encoded)] == encoded:
                data[position + field : position + field + 4] = struct.pack("<I", claimed)
            position += 4
    return bytes(data)


# -- GGUF ------------------------------------------------------------------------------------


def gguf_string(value: bytes) -> bytes:
    return struct.pack("<Q", len(value)) + value


def gguf_file(
    tensors: list[tuple[bytes, list[int], int, int]],
    data: bytes,
    *,
    metadata: bytes = b"",
    count: int = 0,
    tensor_count: int | None = None,
    magic: bytes = b"GGUF",
    version: int = 3,
) -> bytes:
    """Header, ``metadata`` (``count`` key/values), tensor infos (name, ggml dims, type, offset), data at 32."""
    infos = b"".join(
        gguf_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        + struct.pack("<IQ", kind, offset)
        for name, dims, kind, offset in tensors
    )  # fmt: skip
    head = magic + struct.pack("<IQQ", version, len(tensors) if tensor_count is None else tensor_count, count)
    body = head + metadata + infos
    return body + b"\0" * (-len(body) % 32) + data


F32, Q4_0 = 0, 2


def gguf_entries() -> dict[str, bytes]:
    eight = np.arange(8, dtype="<f4").tobytes()
    valid = gguf_file([(b"w", [8], F32, 0)], eight)
    entries = {
        "CorruptCheckpointError--bad-magic.gguf": b"GGUG" + valid[4:],
        "UnsupportedFormatError--big-endian-version.gguf": valid[:4] + struct.pack(">I", 3) + valid[8:],
        "TruncatedFileError--truncated-header.gguf": valid[:10],
        "TruncatedFileError--truncated-tensor-info.gguf": valid[:30],
        "TruncatedFileError--truncated-data.gguf": valid[:-4],
        "TruncatedFileError--huge-tensor-count.gguf": gguf_file([(b"w", [8], F32, 0)], eight, tensor_count=2**63),
        "TruncatedFileError--huge-metadata-count.gguf": gguf_file([], b"", count=2**62),
        "UnsupportedFormatError--dimension-product-past-2-64.gguf": gguf_file(
            [(b"w", [2**32, 2**32, 2**32], F32, 0)], eight
        ),
        "UnsupportedFormatError--dimension-product-2-62.gguf": gguf_file([(b"w", [2**31, 2**31], F32, 0)], eight),
        "CorruptCheckpointError--misaligned-offset.gguf": gguf_file([(b"a", [2], F32, 0), (b"b", [2], F32, 8)], eight),
        "CorruptCheckpointError--overlapping-tensors.gguf": gguf_file(
            [(b"a", [8], F32, 0), (b"b", [8], F32, 0)], eight + b"\0" * 32
        ),
        "TruncatedFileError--offset-past-the-end.gguf": gguf_file([(b"w", [8], F32, 2**40)], eight),
        "UnsupportedFormatError--empty-tensor-with-a-2-63-dimension.gguf": gguf_file([(b"w", [0, 2**63], F32, 0)], b""),
        "UnsupportedFormatError--empty-q4-0-tensor-2-57-rows.gguf": gguf_file([(b"w", [32, 0, 2**57], Q4_0, 0)], b""),
        "UnsupportedFormatError--unknown-quant-type.gguf": gguf_file([(b"w", [32], 99, 0)], b"\0" * 32),
        "CorruptCheckpointError--quantised-row-not-whole-blocks.gguf": gguf_file([(b"w", [33], Q4_0, 0)], b"\0" * 64),
        "TruncatedFileError--quantised-data-cut-short.gguf": gguf_file([(b"w", [64], Q4_0, 0)], b"\0" * 18),
        "CorruptCheckpointError--five-dimensions.gguf": gguf_file([(b"w", [1, 1, 1, 1, 8], F32, 0)], eight),
        "CorruptCheckpointError--duplicate-tensor-name.gguf": gguf_file(
            [(b"w", [8], F32, 0), (b"w", [8], F32, 32)], eight + b"\0" * 32 + eight
        ),
        "CorruptCheckpointError--string-length-over-the-cap.gguf": gguf_file(
            [], b"", metadata=gguf_string(b"k") + struct.pack("<I", 8) + struct.pack("<Q", 2**40) + b"abc", count=1
        ),
        "TruncatedFileError--string-length-past-the-end.gguf": gguf_file(
            [], b"", metadata=gguf_string(b"k") + struct.pack("<I", 8) + struct.pack("<Q", 2**20) + b"abc", count=1
        ),
        "TruncatedFileError--name-length-past-the-end.gguf": gguf_file([(b"w", [8], F32, 0)], eight)[:24]
        + struct.pack("<Q", 1000)
        + b"\0" * 40,
        "CorruptCheckpointError--name-length-over-the-cap.gguf": gguf_file([(b"w", [8], F32, 0)], eight)[:24]
        + struct.pack("<Q", 2**60)
        + b"\0" * 40,
        "UnsupportedFormatError--array-of-arrays.gguf": gguf_file(
            [],
            b"",
            metadata=gguf_string(b"k") + struct.pack("<IIQ", 9, 9, 1) + struct.pack("<IQ", 0, 0),
            count=1,
        ),
        "CorruptCheckpointError--unknown-value-type.gguf": gguf_file(
            [], b"", metadata=gguf_string(b"k") + struct.pack("<I", 77) + b"\0" * 8, count=1
        ),
        "CorruptCheckpointError--huge-array-count.gguf": gguf_file(
            [], b"", metadata=gguf_string(b"k") + struct.pack("<IIQ", 9, 10, 2**62), count=1
        ),
        "CorruptCheckpointError--alignment-not-a-power-of-two.gguf": gguf_file(
            [(b"w", [8], F32, 0)],
            eight,
            metadata=gguf_string(b"general.alignment") + struct.pack("<II", 4, 48),
            count=1,
        ),
    }
    return entries


# -- ONNX --------------------------------------------------------------------------------------

ONNX_WEIGHTS = np.arange(16, dtype="<f4").tobytes()  # tests/corpus/onnx/weights.bin, 64 bytes


def onnx_entries() -> dict[str, bytes]:
    import hashlib

    from onnx import TensorProto, helper

    def model(*initializers: TensorProto) -> bytes:
        graph = helper.make_graph([], "g", [], [], initializer=list(initializers))
        made = helper.make_model(graph, producer_name="corpus", opset_imports=[helper.make_opsetid("", 17)])
        made.ir_version = 9
        return made.SerializeToString(deterministic=True)

    def external(location: str, count: int = 16, **extra: str) -> TensorProto:
        tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[count])
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in {"location": location, "offset": "0", **extra}.items():
            tensor.external_data.add(key=key, value=value)
        return tensor

    def raw(count: int, data: bytes, name: str = "w") -> TensorProto:
        return TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[count], raw_data=data)

    good = hashlib.sha1(ONNX_WEIGHTS).hexdigest()
    bad_name = model(raw(1, b"\0" * 4, name="wxyz")).replace(b"wxyz", b"w\xff\xfez")
    return {
        "RefusedError--external-location-dotdot.onnx": model(external("../secret")),
        "RefusedError--external-location-deep-dotdot.onnx": model(external("sub/../../../../etc/passwd")),
        "RefusedError--external-location-absolute.onnx": model(external("/etc/passwd")),
        "RefusedError--external-location-windows-drive.onnx": model(external("C:\\secret")),
        "TruncatedFileError--external-data-shorter-than-declared.onnx": model(
            external("weights.bin", 32, length="128")
        ),
        "TruncatedFileError--external-offset-past-the-end.onnx": model(external("weights.bin", 1, offset="4096")),
        "CorruptCheckpointError--external-length-differs-from-shape.onnx": model(
            external("weights.bin", 4, length="64")
        ),
        "CorruptCheckpointError--external-negative-offset.onnx": model(external("weights.bin", 1, offset="-4")),
        "CorruptCheckpointError--external-data-without-location.onnx": model(external("")),
        "CheckpointNotFoundError--external-file-missing.onnx": model(external("missing.bin")),
        "ChecksumMismatchError--external-checksum-wrong.onnx": model(
            external("weights.bin", checksum=good[:-1] + ("0" if good[-1] != "0" else "1"))
        ),
        "CorruptCheckpointError--raw-data-size-mismatch.onnx": model(raw(4, b"\0" * 12)),
        "CorruptCheckpointError--raw-data-and-float-data.onnx": model(
            TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1], raw_data=b"\0" * 4, float_data=[1.0])
        ),
        "CorruptCheckpointError--negative-dims.onnx": model(raw(-1, b"")),
        "UnsupportedFormatError--huge-dims.onnx": model(
            TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2**31, 2**31, 2**31], raw_data=b"")
        ),
        "UnsupportedFormatError--70-dimensions.onnx": model(
            TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1] * 70, raw_data=b"\0" * 4)
        ),
        "UnsupportedFormatError--unknown-data-type.onnx": model(
            TensorProto(name="w", data_type=99, dims=[1], raw_data=b"\0")
        ),
        "CorruptCheckpointError--duplicate-initializer.onnx": model(raw(1, b"\0" * 4), raw(1, b"\0" * 4)),
        "CorruptCheckpointError--name-not-utf8.onnx": bad_name,
        "CorruptCheckpointError--not-a-protobuf.onnx": b"\xff" * 64,
    }


# -- Keras ----------------------------------------------------------------------------------------


def keras_entries() -> dict[str, bytes]:
    from weightscope.formats.keras_writer import save

    path = HERE / "keras-weights.tmp.h5"
    save({"dense/kernel": np.arange(6, dtype="<f4").reshape(3, 2), "dense/bias": np.ones(2, "<f4")}, path)
    weights = path.read_bytes()
    path.unlink()
    config = json.dumps(
        {
            "class_name": "Sequential",
            "config": {"name": "sequential", "layers": [{"class_name": "Dense", "config": {"name": "dense"}}]},
        }
    ).encode()

    def keras_zip(members: dict[str, bytes]) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, data in members.items():
                archive.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data)
        return buffer.getvalue()

    import h5py

    with h5py.File(path, "w") as file:  # a dataset of 2^40 floats that stores nothing: 4 TiB if read whole
        file.create_group("layers/dense/vars").create_dataset("0", shape=(2**40,), dtype="<f4", chunks=(1024,))
    unwritten = path.read_bytes()
    path.unlink()
    meta = b'{"keras_version": "3.10.0"}'
    good = {"metadata.json": meta, "config.json": config, "model.weights.h5": weights}
    valid = keras_zip(good)
    damaged = bytearray(valid)
    damaged[valid.index(weights) + len(weights) - 100] ^= 0x01  # a byte of a dataset's data
    return {
        "CorruptCheckpointError--config-not-json.keras": keras_zip({**good, "config.json": b"{'class_name': Dense"}),
        "CorruptCheckpointError--config-a-json-list.keras": keras_zip({**good, "config.json": b"[1, 2]"}),
        "CorruptCheckpointError--config-deeply-nested.keras": keras_zip({**good, "config.json": b"[" * 5_000}),
        "UnsupportedFormatError--missing-weights-file.keras": keras_zip({"metadata.json": meta, "config.json": config}),
        "CorruptCheckpointError--member-dotdot.keras": keras_zip({**good, "../../evil.sh": b"echo"}),
        "CorruptCheckpointError--member-absolute.keras": keras_zip({**good, "/etc/evil": b"echo"}),
        "CorruptCheckpointError--zip-bomb-config-claims-4gib.keras": bomb(good, "config.json"),
        "ChecksumMismatchError--weights-crc-wrong.keras": bytes(damaged),
        "CorruptCheckpointError--weights-not-hdf5.keras": keras_zip({**good, "model.weights.h5": b"\0" * 64}),
        "CorruptCheckpointError--truncated-zip.keras": valid[: len(valid) // 2],
        "LimitExceededError--weights-dataset-of-4-tib-storing-nothing.keras": keras_zip(
            {**good, "model.weights.h5": unwritten}
        ),
    }


def array(dtype: str, shape: tuple[int, ...], data: bytes) -> bytes:
    """What NumPy pickles for an array at protocol 3 and 4: _reconstruct, then BUILD of its state."""
    dtype_call = call(glob("numpy", "dtype"), text(dtype), b"\x89", b"\x88")
    dtype_state = tup(integer(3), text("<"), b"N", b"N", b"N", integer(-1), integer(-1), integer(0)) + b"b"
    empty = call(glob("numpy.core.multiarray", "_reconstruct"), glob("numpy", "ndarray"), tup(integer(0)), b"C\x01b")
    state = tup(
        integer(1),
        tup(*map(integer, shape)),
        dtype_call + dtype_state,
        b"\x89",
        b"B" + struct.pack("<I", len(data)) + data,
    )
    return empty + state + b"b"


def pickle_entries() -> dict[str, bytes]:
    """Plain pickles of NumPy arrays (``params.pkl``) that must be refused."""
    four = array("f4", (4,), FOUR)
    entries = {
        "RefusedError--os-system-beside-an-array": b"}("
        + text("w")
        + four
        + text("x")
        + call(glob("os", "system"), text(shell("pickle-system")))
        + b"u",
        "RefusedError--flax-frozendict": call(
            glob("flax.core.frozen_dict", "FrozenDict"), b"}(" + text("w") + four + b"u"
        ),
        "RefusedError--jax-array-rebuild": call(glob("jax._src.array", "_reconstruct_array"), tup(text("x"))),
        "UnsupportedFormatError--object-array": call(glob("numpy", "dtype"), text("O8"), b"\x89", b"\x88"),
        "CorruptCheckpointError--array-bytes-shorter-than-its-shape": array("f4", (5,), FOUR),
        "CorruptCheckpointError--array-never-given-its-state": b"}("
        + text("w")
        + call(glob("numpy.core.multiarray", "_reconstruct"), glob("numpy", "ndarray"), tup(integer(0)), b"C\x01b")
        + b"u",
        "LimitExceededError--one-string-shown-5000-times": b"}("
        + integer(0)
        + text("x" * 20_000)
        + b"q\x00"
        + b"".join(b"J" + struct.pack("<i", key) + b"h\x00" for key in range(1, 5000))
        + b"u",
        "TruncatedFileError--array-cut-short": four[:-6],
    }
    return {f"{name}.pkl": b"\x80\x04" + body + b"." for name, body in entries.items()}


GROUPS: dict[str, Callable[[], dict[str, bytes]]] = {
    "pytorch": pytorch_entries,
    "pickle": pickle_entries,
    "gguf": gguf_entries,
    "onnx": onnx_entries,
    "keras": keras_entries,
}


def main() -> None:
    for group, make in GROUPS.items():
        folder = HERE / group
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        for name, data in make().items():
            (folder / name).write_bytes(data)
        if group == "onnx":
            (folder / "weights.bin").write_bytes(ONNX_WEIGHTS)  # the external data the entries name
        print(f"{group}: {len(list(folder.glob('*--*')))} entries")


if __name__ == "__main__":
    main()
