"""``hf://ORG/NAME[@REVISION]/path`` through huggingface_hub's HfFileSystem, against a loopback Hub.

The server (tests/hub_server.py) answers the requests the real client makes and counts
the bytes it sends per file: what a command moved is read there, not only from the
store's own count, so a read-ahead inside the client would show.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import weightscope as ws
from weightscope.cli import main

pytest.importorskip("huggingface_hub")
from hub_server import Hub, hub_client, serving_hub

MiB = 1 << 20
REPO = "org/model"


def _tensors(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "embed.weight": rng.standard_normal((64, 16)).astype(np.float32),
        "layers.0.bias": np.arange(16, dtype=np.float16) * seed,
        "step": np.array(seed, np.int64),
    }


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A repository's folder at ``main`` and at ``refs/pr/1`` (other values), and a large file's."""
    root = tmp_path_factory.mktemp("hub")
    made = {}
    for revision, seed in (("main", 1), ("pr", 2)):
        folder = root / revision
        folder.mkdir()
        ws.save(_tensors(seed), folder / "model.safetensors", format="safetensors")
        (folder / "config.json").write_text('{"model_type": "toy"}')
        made[revision] = folder
    big = root / "big"
    big.mkdir()
    tensors = {f"block{i:03d}.weight": np.full(32768, i, np.float32) for i in range(256)}  # 32 MiB
    tensors["embedding.table"] = np.arange(MiB, dtype=np.float32)
    ws.save(tensors, big / "model.safetensors", format="safetensors")
    made["big"] = big
    return made


@pytest.fixture(scope="module")
def hub(folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    served = Hub()
    served.add(REPO, folders["main"])
    served.add(REPO, folders["pr"], "refs/pr/1")
    served.add("org/big", folders["big"])
    served.add("org/private", folders["main"], token="hf_sentinel_token_4c1d")
    with serving_hub(served) as endpoint, hub_client(endpoint, tmp_path_factory.mktemp("hf_home")):
        yield served


@pytest.fixture
def fresh(hub: Hub) -> Hub:
    """The hub with its counts at zero."""
    hub.reset()
    return hub


def _same(url: str, path: Path) -> None:
    with ws.open(url) as ckpt, ws.open(path) as expected:
        assert ckpt.format == expected.format == "safetensors"
        assert list(ckpt) == list(expected)
        for name in expected:
            assert ckpt[name].dtype == expected[name].dtype
            assert ckpt[name].tobytes() == expected[name].tobytes(), name
            assert ckpt.info(name)._replace(file="") == expected.info(name)._replace(file="")


@pytest.mark.parametrize(
    ("revision", "folder"),
    [("", "main"), ("@main", "main"), ("@COMMIT", "main"), ("@refs/pr/1", "pr"), ("@refs%2Fpr%2F1", "pr")],
)
def test_a_file_at_each_revision_form_reads_as_the_file_served_there(
    fresh: Hub, folders: dict[str, Path], revision: str, folder: str
) -> None:
    revision = revision.replace("COMMIT", fresh.commit(REPO, "main"))
    _same(f"hf://{REPO}{revision}/model.safetensors", folders[folder] / "model.safetensors")
    # The revision reached the server as HfFileSystem sends it: one quoted path segment.
    quoted = "refs%2Fpr%2F1" if folder == "pr" else revision.lstrip("@") or "main"
    assert f"GET /{REPO}/resolve/{quoted}/model.safetensors" in fresh.requests
    # ... and was sent on, as the Hub sends LFS files, to the CDN, at the revision's commit.
    commit = fresh.commit(REPO, "refs/pr/1" if folder == "pr" else "main")
    assert f"GET /{REPO}/cdn/{commit}/model.safetensors" in fresh.requests
    assert fresh.authorizations == []  # no token anywhere: none sent


def test_cli_ls_and_show_over_hf_equal_the_local_file(
    fresh: Hub, folders: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    local = folders["main"] / "model.safetensors"
    url = f"hf://{REPO}/model.safetensors"
    for command in (["ls"], ["show"], ["show", "--json"]):
        names = ["embed.weight"] if command[0] == "show" else []
        assert main([*command, str(local), *names]) == 0
        expected = capsys.readouterr().out.replace(str(local), url)
        assert main([*command, url, *names]) == 0
        assert capsys.readouterr().out == expected


def test_listing_a_large_file_moves_its_header_and_the_stores_read_ahead_only(
    fresh: Hub, folders: dict[str, Path]
) -> None:
    """The client adds nothing: what the server sent is what the store asked for (HfFileSystem's own
    5 MiB read-ahead per open file is turned off), and a tensor of 4 MiB moves exactly 4 MiB."""
    from weightscope.remote import FIRST_READ_AHEAD

    local = folders["big"] / "model.safetensors"
    header = 8 + int.from_bytes(local.read_bytes()[:8], "little")
    with ws.open("hf://org/big/model.safetensors") as ckpt:
        store = ckpt.path.store
        assert len(ckpt) == 257
        listed = fresh.file_bytes["org/big/model.safetensors"]
        assert listed == store.bytes_fetched
        assert header <= listed <= header + 3 * FIRST_READ_AHEAD
        assert local.stat().st_size > 32 * MiB
        table = ckpt["embedding.table"]
        assert table.tobytes() == np.arange(MiB, dtype=np.float32).tobytes()
        assert fresh.file_bytes["org/big/model.safetensors"] - listed == 4 * MiB == store.bytes_fetched - listed
    assert fresh.sent == fresh.file_bytes["org/big/model.safetensors"]  # and no other file


def test_missing_repository_revision_file_and_private_repository_are_checkpoint_not_found(
    fresh: Hub, capsys: pytest.CaptureFixture[str]
) -> None:
    for url, said in (
        (f"hf://{REPO}/nothing.safetensors", "no such object"),
        ("hf://org/nothing/model.safetensors", "repository not found"),
        (f"hf://{REPO}@v9/model.safetensors", "revision not found"),
        ("hf://org/private/model.safetensors", "repository not found"),  # private: as the Hub says, without a token
    ):
        with pytest.raises(ws.CheckpointNotFoundError, match=re.escape(said)) as caught:
            ws.open(url)
        assert str(caught.value).startswith(url + ": ")
        assert main(["ls", url]) == ws.CheckpointNotFoundError.exit_status
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and url in err


@pytest.mark.parametrize("url", ["hf://gpt2", "hf://org", "hf://org@main/model.safetensors", "hf://datasets/org"])
def test_a_url_naming_no_repository_is_a_usage_error(url: str) -> None:
    with pytest.raises(ws.UsageError, match=re.escape("hf://ORG/NAME[@REVISION][/PATH]")):
        ws.open(url)


def test_without_huggingface_hub_an_hf_url_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import huggingface_hub -> ImportError
    registry = importlib.import_module("fsspec.registry")._registry  # (fsspec.registry is the mapping, not the module)
    monkeypatch.delitem(registry, "hf", raising=False)  # as if HfFileSystem was never imported
    with pytest.raises(ws.UsageError, match=re.escape("needs huggingface_hub: pip install 'weightscope[hub]'")):
        ws.open(f"hf://{REPO}/model.safetensors")
    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(ws.UsageError, match=re.escape("pip install 'weightscope[hub]'")):
        ws.open(f"hf://{REPO}/model.safetensors")


def _cli(hub: Hub, url: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(Path(ws.__file__).parents[1]), **env}
    return subprocess.run(
        [sys.executable, "-m", "weightscope", "ls", url], env=environment, capture_output=True, text=True, timeout=60
    )


def test_the_users_token_from_hf_token_or_the_token_file_is_sent_and_never_printed(
    fresh: Hub, folders: dict[str, Path], tmp_path: Path
) -> None:
    """A fresh process each time, as a user runs it: HF_ENDPOINT, HF_HOME and HF_TOKEN read at start."""
    token = "hf_sentinel_token_4c1d"
    url = "hf://org/private/model.safetensors"
    (tmp_path / "token").write_text(token)
    with_file = {"HF_HOME": str(tmp_path), "HF_TOKEN_PATH": str(tmp_path / "token")}
    for env in ({"HF_TOKEN": token}, with_file):
        fresh.reset()
        done = _cli(fresh, url, **env)
        assert done.returncode == 0, done.stderr
        assert "embed.weight" in done.stdout and token not in done.stdout + done.stderr
        assert set(fresh.authorizations) == {f"Bearer {token}"}
        assert fresh.cdn_authorizations == [] and any("/cdn/" in request for request in fresh.requests)
        assert fresh.file_bytes["org/private/model.safetensors"] > 0
    # A wrong token: refused as the Hub does, and neither token printed.
    done = _cli(fresh, url, HF_TOKEN="hf_wrong_token_77")
    assert done.returncode == ws.CheckpointNotFoundError.exit_status
    assert "repository not found" in done.stderr and "hf_wrong_token_77" not in done.stdout + done.stderr


def test_the_loopback_hub_serves_hf_hub_download_and_paginated_listings(
    fresh: Hub, folders: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server itself, against the client's other paths: a download (HEAD's X-Repo-Commit, ETag,
    X-Linked-*), a listing in pages of one entry (Link: rel="next"), and paths-info."""
    import huggingface_hub

    local = folders["pr"] / "model.safetensors"
    got = huggingface_hub.hf_hub_download(REPO, "model.safetensors", revision="refs/pr/1", cache_dir=tmp_path)
    assert Path(got).read_bytes() == local.read_bytes()
    assert any(request.startswith("HEAD ") for request in fresh.requests)
    monkeypatch.setattr(fresh, "page_size", 1)
    api = huggingface_hub.HfApi()
    listed = sorted(entry.path for entry in api.list_repo_tree(REPO))
    assert listed == ["config.json", "model.safetensors"]
    assert sum("cursor=" in request for request in fresh.requests) == 1
    (info,) = api.get_paths_info(REPO, ["model.safetensors", "missing.bin"])
    assert info.size == (folders["main"] / "model.safetensors").stat().st_size and info.lfs is not None


def test_a_folder_opens_through_paginated_listings(fresh: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    """The repository listed one entry a page (``Link: rel="next"``): the folder's files are all found."""
    monkeypatch.setattr(fresh, "page_size", 1)
    with ws.open(f"hf://{REPO}") as ckpt:
        assert ckpt.format == "model-folder" and list(ckpt) == sorted(_tensors(1))
        assert ckpt.metadata["config.model_type"] == "toy"
    assert sum("cursor=" in request for request in fresh.requests) >= 1


def test_an_index_naming_a_shard_outside_its_repository_is_refused_before_any_request_for_it(
    fresh: Hub, tmp_path: Path
) -> None:
    """A weight_map entry climbing out of the repository (into another one of the same owner, or
    of another revision) is refused as ONNX external data is, and nothing is asked of the Hub for it."""
    for shard in ("../other/model.safetensors", "../../evil/model/model.safetensors", "/org/other/x.safetensors"):
        folder = tmp_path / str(abs(hash(shard)))
        folder.mkdir()
        index = {"metadata": {}, "weight_map": {"w": shard}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
        fresh.add("org/climbing", folder)
        fresh.reset()
        with pytest.raises(ws.RefusedError):
            ws.open("hf://org/climbing/model.safetensors.index.json")
        assert not [request for request in fresh.requests if "other" in request or "evil" in request]


def test_each_open_sees_the_repository_as_it_is_now(fresh: Hub, tmp_path: Path) -> None:
    """HfFileSystem keeps its listings (sizes) per instance, and instances per process: each open makes its own."""
    folder = tmp_path / "changing"
    folder.mkdir()
    ws.save({"a": np.zeros(3, np.float32)}, folder / "model.safetensors", format="safetensors")
    fresh.add("org/changing", folder)
    with ws.open("hf://org/changing/model.safetensors") as ckpt:
        assert list(ckpt) == ["a"]
    ws.save({"a": np.ones(3, np.float32), "b": np.arange(1000.0)}, folder / "model.safetensors", format="safetensors")
    with ws.open("hf://org/changing/model.safetensors") as ckpt:  # as after a new commit on main
        assert list(ckpt) == ["a", "b"] and ckpt["b"].tolist() == list(np.arange(1000.0))
