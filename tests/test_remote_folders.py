"""A sharded model folder over ``https://``, ``s3://`` and ``hf://``: every form, and exactly the bytes it moves.

The folder is written by huggingface_hub's own splitter (``save_torch_state_dict``): three
safetensors shards of more than 1 MiB (so the store fetches their headers by range, not
whole), ``model.safetensors.index.json`` and a ``config.json``. What ``ls`` and
``summary`` move is exactly the index and config.json (small objects: fetched whole) and,
for each shard, its header with the one read-ahead the remote store adds to a small read
after a jump: the 8-byte header length is read with ``FIRST_READ_AHEAD`` (64 KiB) after
it, which holds the whole JSON header here (8 + JSON <= 8 + 64 KiB), so each shard moves
``8 + FIRST_READ_AHEAD`` bytes in one request. ``show`` of a 2 MiB tensor moves the index,
config.json, its shard's header so, and exactly the tensor's 2 MiB (a read of 1 MiB or
more is fetched exactly). A shard's URL moves 8 bytes more: the registry first reads its
last 8 bytes, as a TensorFlow index's, before the shard's name claims it for the set.

Bytes are counted twice: by the store (every fetch) and, for HTTP and the Hub, by the
server (body bytes sent): the two agree, so nothing reads ahead behind the store's back.

Over HTTP nothing lists a folder: a folder URL ends in ``/`` and is opened by the names
transformers loads, asked for in turn (``model.safetensors``: 404, then the index), with
HEAD requests that move no body bytes; without the ``/`` the URL is taken for a file (a
TensorFlow prefix, here) and is not found. The index file's URL, or a shard's, works as
anywhere. s3:// and hf:// list the folder.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import weightscope as ws
from weightscope.cli import main
from weightscope.remote import BLOCK_SIZE, FIRST_READ_AHEAD, RemoteStore

pytest.importorskip("huggingface_hub")
torch = pytest.importorskip("torch")
from hub_server import Hub, hub_client, serving_hub  # noqa: E402
from test_remote import BUCKET, _RangeHandler, s3_serving, serving  # noqa: E402

INDEX = "model.safetensors.index.json"
BIG = "model.embed_tokens.weight"  # 2 MiB
CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256, "torch_dtype": "float32"}
FORMS = ("folder", "index", "shard")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from huggingface_hub import save_torch_state_dict

    folder = tmp_path_factory.mktemp("remote_folders") / "model"
    folder.mkdir()
    generator = torch.Generator().manual_seed(18)
    state = {BIG: torch.randn(2048, 256, generator=generator)}
    for i in range(12):
        state[f"model.layers.{i}.mlp.weight"] = torch.randn(256, 256, generator=generator)  # 256 KiB
        state[f"model.layers.{i}.mlp.bias"] = torch.arange(256, dtype=torch.float16) * i
    save_torch_state_dict(state, folder, max_shard_size="2MB")
    (folder / "config.json").write_text(json.dumps(CONFIG))
    return folder


@pytest.fixture(scope="module")
def layout(folder: Path) -> dict[str, Any]:
    """The shards, and what listing the folder takes: index, config.json and each shard's header with the read-ahead."""
    weight_map = json.loads((folder / INDEX).read_text())["weight_map"]
    shards = sorted(set(weight_map.values()))
    assert len(shards) == 3
    for shard in shards:
        data = (folder / shard).read_bytes()
        assert len(data) > BLOCK_SIZE  # its header is fetched by range, not the whole shard
        assert 8 + int.from_bytes(data[:8], "little") <= 8 + FIRST_READ_AHEAD  # the header in one request
    small = sum((folder / name).stat().st_size for name in (INDEX, "config.json"))
    assert small <= 2 * BLOCK_SIZE  # each fetched whole
    return {
        "shards": shards,
        "small": small,
        "per_shard": 8 + FIRST_READ_AHEAD,
        "listing": small + len(shards) * (8 + FIRST_READ_AHEAD),
        "big_shard": weight_map[BIG],
    }


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The bytes every remote store fetches from here on, all together (``[0]``)."""
    total = [0]
    fetch = RemoteStore.fetch

    def counting(self: RemoteStore, url: str, start: int, end: int, size: int, what: str) -> bytes:
        data = fetch(self, url, start, end, size, what)
        total[0] += len(data)
        return data

    monkeypatch.setattr(RemoteStore, "fetch", counting)
    return total


# -- the three transports: each a way to name a form, and the server's count of bytes sent (if it keeps one) ------
Where = dict[str, Any]


@pytest.fixture(scope="module")
def https(folder: Path) -> Iterator[Where]:
    with serving(folder.parent) as root:
        yield {"base": f"{root}/{folder.name}", "folder": "/", "sent": lambda: _RangeHandler.sent[0], "options": None}


@pytest.fixture(scope="module")
def s3(folder: Path) -> Iterator[Where]:
    with s3_serving(folder.parent) as served:
        yield {"base": f"s3://{BUCKET}/{folder.name}", "folder": "", "sent": None, "options": served["options"]}


@pytest.fixture(scope="module")
def hf(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Where]:
    hub = Hub()
    hub.add("org/model", folder)
    with serving_hub(hub) as endpoint, hub_client(endpoint, tmp_path_factory.mktemp("hf_home")):
        yield {"base": "hf://org/model", "folder": "", "sent": lambda: hub.sent, "options": None, "hub": hub}


def _url(where: Where, form: str, layout: dict[str, Any]) -> str:
    tail = {"folder": where["folder"], "index": f"/{INDEX}", "shard": f"/{layout['shards'][1]}"}[form]
    return where["base"] + tail


def _local(folder: Path, form: str, layout: dict[str, Any]) -> Path:
    return {"folder": folder, "index": folder / INDEX, "shard": folder / layout["shards"][1]}[form]


@contextlib.contextmanager
def _configured(where: Where) -> Iterator[None]:
    """The command line reaches moto's S3 through fsspec's configuration, as a user's would."""
    import fsspec.config

    with pytest.MonkeyPatch.context() as patch:
        if where["options"] is not None:
            patch.setitem(fsspec.config.conf, "s3", where["options"])
        yield


def _run(command: list[str], expected: int = 0) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(command)
    assert status == expected, out.getvalue()
    return out.getvalue()


def _moved(where: Where, fetched: list[int], action: Callable[[], Any]) -> tuple[int, Any]:
    """What ``action`` returns, and the bytes it moved, by the store's count, which the server's (when it counts)
    equals."""
    before, sent = fetched[0], where["sent"]() if where["sent"] else None
    result = action()
    moved = fetched[0] - before
    if sent is not None:
        assert where["sent"]() - sent == moved  # nothing fetched behind the store's back
    return moved, result


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("transport", ["https", "s3", "hf"])
def test_ls_summary_and_show_of_every_form_equal_local_and_move_the_index_headers_and_tensor_only(
    transport: str,
    form: str,
    folder: Path,
    layout: dict[str, Any],
    fetched: list[int],
    request: pytest.FixtureRequest,
) -> None:
    where: Where = request.getfixturevalue(transport)
    url, local = _url(where, form, layout), _local(folder, form, layout)
    # A shard's URL is first looked at as a TensorFlow index might be: its last 8 bytes (the table's magic),
    # before its name claims it for the set.
    sniffed = 8 if form == "shard" else 0
    with _configured(where):
        for command in ("ls", "summary"):
            moved, output = _moved(where, fetched, functools.partial(_run, [command, url]))
            assert moved == layout["listing"] + sniffed, command
            assert output == _run([command, str(local)]).replace(str(local), url), command
        moved, output = _moved(where, fetched, functools.partial(_run, ["show", "--json", url, BIG]))
        assert moved == layout["small"] + layout["per_shard"] + 2 * 1024 * 1024 + sniffed
        assert output == _run(["show", "--json", str(local), BIG]).replace(str(local), url)


@pytest.mark.parametrize("transport", ["https", "s3", "hf"])
def test_a_folder_read_through_the_api_fetches_each_shard_once_then_exactly_the_tensor(
    transport: str, folder: Path, layout: dict[str, Any], fetched: list[int], request: pytest.FixtureRequest
) -> None:
    where: Where = request.getfixturevalue(transport)
    url = _url(where, "folder", layout)
    with ws.open(folder) as expected, ws.open(url, storage_options=where["options"]) as ckpt:
        assert ckpt.format == expected.format == "model-folder"
        assert list(ckpt) == list(expected)
        assert ckpt.metadata == expected.metadata
        listed, _ = _moved(where, fetched, lambda: list(ckpt.infos()))
        assert listed == layout["per_shard"] * 3  # opening took the index and config.json; listing, each header
        assert [info._replace(file="") for info in ckpt.infos()] == [
            info._replace(file="") for info in expected.infos()
        ]
        moved, array = _moved(where, fetched, lambda: ckpt[BIG])
        assert moved == 2 * 1024 * 1024 and array.tobytes() == expected[BIG].tobytes()
        for name in expected:  # every tensor, bit for bit (the small ones with the store's read-ahead)
            assert ckpt[name].tobytes() == expected[name].tobytes(), name
    assert ckpt.info(BIG).file == f"{where['base']}/{layout['big_shard']}"


def test_an_http_folder_url_without_its_slash_is_not_found(https: Where) -> None:
    with pytest.raises(ws.CheckpointNotFoundError):
        ws.open(https["base"])


@pytest.mark.parametrize("transport", ["https", "s3", "hf"])
def test_spectra_health_and_anatomy_of_a_remote_folder_equal_the_local_ones(
    transport: str, folder: Path, layout: dict[str, Any], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    where: Where = request.getfixturevalue(transport)
    url = _url(where, "folder", layout)
    # A fine-tune of the folder, local, one matrix changed by a rank-2 update: the anatomy of remote base -> local
    # tune finds that layer and that rank, as local -> local does.
    from safetensors.numpy import save_file

    tuned = {}
    with ws.open(folder) as base:
        for name in base:
            tuned[name] = np.array(base[name])
    generator = np.random.default_rng(21)
    update = generator.standard_normal((256, 2)) @ generator.standard_normal((2, 256))
    tuned["model.layers.3.mlp.weight"] = (tuned["model.layers.3.mlp.weight"] + 0.1 * update).astype(np.float32)
    save_file(tuned, str(tmp_path / "tuned.safetensors"))
    with _configured(where):
        for command in (["spectra", "--json"], ["health", "--json"]):
            remote = json.loads(_run([*command, url]))
            assert remote == json.loads(_run([*command, str(folder)]).replace(str(folder), url)), command
            assert remote, command
        anatomy = ["diff", "--anatomy", "--json", "--all"]
        tune = str(tmp_path / "tuned.safetensors")
        remote = json.loads(_run([*anatomy, url, tune], expected=1))  # they differ: diff's status 1
        local = _run([*anatomy, str(folder), tune], expected=1).replace(str(folder), where["base"])
        assert remote == json.loads(local)
    assert [layer["name"] for layer in remote["layers"] if layer["status"] == "changed"] == [
        "model.layers.3.mlp.weight"
    ]
    assert remote["lora_rank"] == 2
