"""Remote checkpoints: read by URL over a real S3 API (moto's server) and an HTTP server with ranges.

Both servers listen on 127.0.0.1 only. Each test counts the bytes transferred: the
store's own count of what it fetched, and for HTTP the server's count of body bytes sent.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import weightscope as ws
from weightscope.cli import main
from weightscope.remote import FIRST_READ_AHEAD, IN_FLIGHT, RemoteError

pytest.importorskip("fsspec")
pytest.importorskip("s3fs")
pytest.importorskip("aiohttp")
moto_server = pytest.importorskip("moto.server")

MiB = 1 << 20
BUCKET = "weights"


# -- the files served -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tf_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A directory of checkpoints to serve, and each one's name in it (its URL path)."""
    root = tmp_path_factory.mktemp("served")
    names: dict[str, str] = {}
    for fixture in ("seed", "sharded"):
        prefix = tf_checkpoints[fixture]
        for file in prefix.parent.iterdir():
            if file.is_file():
                (root / fixture).mkdir(exist_ok=True)
                (root / fixture / file.name).write_bytes(file.read_bytes())
        names[fixture] = f"{fixture}/{prefix.name}"
    rng = np.random.default_rng(9)
    small = {
        "layer1/kernel": rng.standard_normal((2, 5)).astype(np.float32),
        "layer1/bias": np.arange(5, dtype=np.float64),
        "step": np.array(7, np.int64),
        "mask": np.array([[True, False]]),
    }
    ws.save(small, root / "model.safetensors", format="safetensors")
    ws.save(small, root / "model.pt", format="pytorch")
    np.savez(root / "arrays.npz", **{name.replace("/", "_"): array for name, array in small.items()})
    names |= {"safetensors": "model.safetensors", "pytorch": "model.pt", "npz": "arrays.npz"}
    names |= _gguf_and_onnx(root, small)
    # ~64 MiB in 512 tensors of 128 KiB, and one of 4 MiB, in one TensorFlow checkpoint.
    big = {f"block{i:03d}/kernel": np.full(32768, i, np.float32) for i in range(512)}
    big["embedding/table"] = np.arange(MiB, dtype=np.float32)
    ws.save(big, root / "big" / "ckpt-1000")
    ws.save(big, root / "big.safetensors", format="safetensors")
    names |= {"big": "big/ckpt-1000", "big_safetensors": "big.safetensors"}
    zipped = {f"block{i:03d}.kernel": np.full(65536, i, np.float32) for i in range(128)}  # 32 MiB
    ws.save(zipped, root / "big.pt", format="pytorch")
    np.savez(root / "big.npz", **zipped)
    names |= {"big_pytorch": "big.pt", "big_npz": "big.npz"}
    return {"root": root, "names": names}


def _gguf_and_onnx(root: Path, tensors: dict[str, np.ndarray]) -> dict[str, str]:
    """A GGUF file, and an ONNX model whose initializers are external data in a file beside it."""
    gguf = pytest.importorskip("gguf")
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    writer = gguf.GGUFWriter(root / "model.gguf", "llama")
    writer.add_string("general.name", "remote")
    for name, array in tensors.items():
        if array.dtype.kind == "f":
            writer.add_tensor(name, array.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    initializers = [numpy_helper.from_array(array, name.replace("/", "_")) for name, array in tensors.items()]
    graph = helper.make_graph([], "weights", [], [], initializer=initializers)
    (root / "onnx").mkdir()
    onnx.save_model(
        helper.make_model(graph),
        root / "onnx" / "model.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    return {"gguf": "model.gguf", "onnx": "onnx/model.onnx"}


def local(served: dict[str, Any], which: str) -> Path:
    return Path(served["root"]) / served["names"][which]


def assert_same_as_local(url: str, path: Path, **options: Any) -> ws.Checkpoint:
    with ws.open(path) as expected, ws.open(url, **options) as ckpt:
        assert ckpt.format == expected.format
        assert list(ckpt) == list(expected)
        for name in expected:
            ours, theirs = ckpt[name], expected[name]
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
            if ours.dtype.kind == "O":  # strings
                assert ours.ravel().tolist() == theirs.ravel().tolist(), name
            else:
                assert ours.tobytes() == theirs.tobytes(), name
            assert not ours.flags.writeable or ours.dtype.kind == "O"
            assert ckpt.info(name)._replace(file="") == expected.info(name)._replace(file="")
            assert ckpt.info(name).file.startswith(url.split("://")[0] + "://")
        return ckpt


# -- S3, served by moto on loopback ----------------------------------------------------------
@contextlib.contextmanager
def s3_serving(root: Path, skipped: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """Bucket ``BUCKET`` holding ``root``'s files (but those named in ``skipped``) on a loopback moto
    server, for the block; the storage options that reach it, and its endpoint."""
    with pytest.MonkeyPatch.context() as env:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            env.setenv(key, "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        options = {"client_kwargs": {"endpoint_url": endpoint}, "use_listings_cache": False}
        import s3fs

        uploader = s3fs.S3FileSystem(skip_instance_cache=True, **options)
        uploader.makedirs(BUCKET, exist_ok=True)  # moto's state is the process's: an earlier server's bucket is here
        for file in sorted(root.rglob("*")):
            if file.is_file() and file.name not in skipped:
                uploader.put_file(str(file), f"{BUCKET}/{file.relative_to(root)}")
        try:
            yield {"options": options, "endpoint": endpoint}
        finally:
            server.stop()


@pytest.fixture(scope="module")
def s3(served: dict[str, Any]) -> Iterator[dict[str, Any]]:
    with s3_serving(Path(served["root"]), skipped=("big.pt", "big.npz")) as s3:  # those two: served over HTTP only
        yield s3


def s3_url(served: dict[str, Any], which: str) -> str:
    return f"s3://{BUCKET}/{served['names'][which]}"


@pytest.mark.parametrize("name", ["seed", "sharded", "safetensors", "pytorch", "npz", "gguf", "onnx"])
def test_s3_checkpoint_reads_as_the_local_file_bit_for_bit(
    s3: dict[str, Any], served: dict[str, Any], name: str
) -> None:
    assert_same_as_local(s3_url(served, name), local(served, name), storage_options=s3["options"])


@pytest.mark.parametrize("suffix", ["", ".index", ".data-00000-of-00001"])
def test_s3_tensorflow_checkpoint_opens_by_prefix_index_data_file_and_directory(
    s3: dict[str, Any], served: dict[str, Any], suffix: str
) -> None:
    url = s3_url(served, "seed") + suffix
    with ws.open(url, storage_options=s3["options"]) as ckpt, ws.open(local(served, "seed")) as expected:
        assert list(ckpt) == list(expected)
        assert str(ckpt.path) == s3_url(served, "seed")
    # The directory: its ``checkpoint`` file names the newest prefix (recorded as an absolute local path).
    with ws.open(f"s3://{BUCKET}/seed/", storage_options=s3["options"]) as ckpt:
        assert str(ckpt.path) == s3_url(served, "seed")


def test_s3_listing_a_large_checkpoint_fetches_its_index_only(s3: dict[str, Any], served: dict[str, Any]) -> None:
    index_size = local(served, "big").with_name("ckpt-1000.index").stat().st_size
    data_size = local(served, "big").with_name("ckpt-1000.data-00000-of-00001").stat().st_size
    assert data_size > 64 * MiB
    with ws.open(s3_url(served, "big"), storage_options=s3["options"]) as ckpt:
        store = ckpt.path.store
        assert len(ckpt) == 513
        assert store.bytes_fetched <= index_size  # the index, and not a byte of tensor data
        listed = store.bytes_fetched
        table = ckpt["embedding/table"]
        assert table.tobytes() == np.arange(MiB, dtype=np.float32).tobytes()
        assert store.bytes_fetched - listed == 4 * MiB  # exactly the tensor's range
        before = store.bytes_fetched
        small = ckpt["block007/kernel"]  # 128 KiB: fetched with the read-ahead
        assert (small == 7).all()
        assert store.bytes_fetched - before == 131072 + FIRST_READ_AHEAD
        assert (ckpt["block007/kernel"] == 7).all()  # from the cache
        assert store.bytes_fetched - before == 131072 + FIRST_READ_AHEAD
    # The target: one 4 MiB tensor of a large checkpoint for less than index + 4 MiB + 1 MiB.
    assert listed + 4 * MiB < index_size + 5 * MiB


def test_s3_safetensors_listing_fetches_its_header_and_the_read_ahead(
    s3: dict[str, Any], served: dict[str, Any]
) -> None:
    header = int.from_bytes(local(served, "big_safetensors").read_bytes()[:8], "little")
    with ws.open(s3_url(served, "big_safetensors"), storage_options=s3["options"]) as ckpt:
        store = ckpt.path.store
        assert len(ckpt) == 513
        listed = store.bytes_fetched
        assert listed <= 8 + header + 3 * FIRST_READ_AHEAD  # the header, its read-ahead, 8 bytes sniffed at the end
        assert (ckpt["embedding/table"] == np.arange(MiB, dtype=np.float32)).all()
        assert store.bytes_fetched - listed == 4 * MiB


def test_s3_missing_object_is_checkpoint_not_found(s3: dict[str, Any]) -> None:
    for url in (f"s3://{BUCKET}/no/such/ckpt-1", f"s3://{BUCKET}/nothing.safetensors", "s3://no-such-bucket/x"):
        with pytest.raises(ws.CheckpointNotFoundError, match=re.escape(url)):
            ws.open(url, storage_options=s3["options"])


def test_cli_lists_and_shows_an_s3_checkpoint(
    s3: dict[str, Any], served: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import fsspec.config

    # What FSSPEC_S3_* variables or ~/.config/fsspec/*.json set (read when fsspec is imported).
    monkeypatch.setitem(fsspec.config.conf, "s3", s3["options"])
    assert main(["ls", s3_url(served, "seed")]) == 0
    listing = capsys.readouterr().out
    assert main(["ls", str(local(served, "seed"))]) == 0
    assert capsys.readouterr().out.replace(str(local(served, "seed")), s3_url(served, "seed")) == listing
    assert main(["show", "--json", s3_url(served, "safetensors"), "layer1/bias"]) == 0
    assert "4.0" in capsys.readouterr().out


# -- HTTP, with Range, from a local server ------------------------------------------------------
class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """GET and HEAD of files, with ``Range: bytes=a-b`` answered 206; counts the body bytes sent.

    Under ``/short/`` a range is answered with half its bytes (and a Content-Range saying so);
    under ``/error/`` a GET is answered 500.
    """

    sent: ClassVar[list[int]] = [0]
    requested: ClassVar[list[str]] = []  # every request's path, as the server received it
    in_flight: ClassVar[list[int]] = [0, 0]  # GETs being answered, and the most at once
    delay: ClassVar[float] = 0.0  # seconds each GET waits before answering (a slow server, for in_flight)
    lock = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _target(self) -> tuple[str, Path | None]:
        self.requested.append(self.path)
        path = self.path.split("?", 1)[0]
        mode = ""
        for prefix in ("/short/", "/error/"):
            if path.startswith(prefix):
                mode, path = prefix.strip("/"), path[len(prefix) - 1 :]
        file = Path(self.directory) / urllib.parse.unquote(path.lstrip("/"))  # as servers decode it
        return mode, file if file.is_file() else None

    def do_HEAD(self) -> None:
        _, file = self._target()
        if file is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(file.stat().st_size))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self) -> None:
        # In flight from its arrival until its answer starts: a client sends its next request only once it has an
        # answer, so a count kept until the answer was written would be one ahead while a thread finishes writing.
        with self.lock:
            self.in_flight[0] += 1
            self.in_flight[1] = max(self.in_flight)
        try:
            time.sleep(self.delay)
        finally:
            with self.lock:
                self.in_flight[0] -= 1
        self._answer_get()

    def _answer_get(self) -> None:
        mode, file = self._target()
        if file is None:
            self.send_error(404)
            return
        if mode == "error":
            self.send_error(500, "the disk is on fire")
            return
        size = file.stat().st_size
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        with open(file, "rb") as handle:
            if match is None:
                body, status = handle.read(), 200
            else:
                start = int(match[1])
                end = min(int(match[2]) + 1 if match[2] else size, size)
                if mode == "short":
                    end = start + (end - start) // 2
                handle.seek(start)
                body, status = handle.read(end - start), 206
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.count(file, len(body))  # before the client has it, which may return at once
        self.wfile.write(body)

    def count(self, file: Path, sent: int) -> None:
        """Record ``sent`` body bytes of ``file`` (a subclass counts by file too)."""
        self.sent[0] += sent


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024  # prefetches come many at once: socketserver's 5 would drop them (1 s retries)


@contextlib.contextmanager
def serving(directory: Path) -> Iterator[str]:
    """A loopback HTTP server answering range requests for ``directory``'s files, for the block; its root URL."""
    server = _Server(("127.0.0.1", 0), functools.partial(_RangeHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def http_root(served: dict[str, Any]) -> Iterator[str]:
    with serving(served["root"]) as root:
        yield root


def _sent() -> int:
    return _RangeHandler.sent[0]


@pytest.mark.parametrize("name", ["seed", "sharded", "safetensors", "pytorch", "npz", "gguf", "onnx"])
def test_http_checkpoint_reads_as_the_local_file_bit_for_bit(http_root: str, served: dict[str, Any], name: str) -> None:
    before = _sent()
    url = f"{http_root}/{served['names'][name]}"
    ckpt = assert_same_as_local(url, local(served, name))
    assert _sent() - before == ckpt.path.store.bytes_fetched  # nothing transferred past the store's count


def test_http_zip_storages_are_checked_as_read_even_with_checks_deferred(
    http_root: str, served: dict[str, Any]
) -> None:
    """A remote zip's storages are fetched into memory: ``checks_deferred`` checks each as it is read (none kept to
    the block's end), and every tensor equals the local file's."""
    with (
        ws.open(f"{http_root}/{served['names']['big_pytorch']}") as remote,
        ws.open(local(served, "big_pytorch")) as ckpt,
        remote.checks_deferred(),
    ):
        for name in list(ckpt)[:8]:
            np.testing.assert_array_equal(remote[name], ckpt[name])
        assert remote._deferred == {} and len(remote._verified_spans) == 8


def _onnx_with_external_location(path: Path, location: str) -> None:
    """A model of one float32 initializer [4] whose bytes are external data at ``location``."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    tensor.external_data.add(key="location", value=location)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(helper.make_model(helper.make_graph([], "g", [], [], initializer=[tensor])), path)


@pytest.mark.parametrize(
    "location",
    ["%2e%2e/secret.bin", "%2E%2E/secret.bin", "..%2fsecret.bin", "sub/..%5c..%5csecret.bin", ".%2e/secret.bin"],
)
def test_http_onnx_external_data_escaping_its_folder_once_decoded_is_refused_before_any_request(
    http_root: str, served: dict[str, Any], location: str
) -> None:
    # The HTTP client decodes %2e%2e to .. and folds it: the folder check must see the same.
    root = Path(served["root"])
    (root / "secret.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    _onnx_with_external_location(root / "escape" / "model.onnx", location)
    _RangeHandler.requested.clear()
    with pytest.raises(ws.RefusedError, match="escapes the model's folder"):
        ws.open(f"{http_root}/escape/model.onnx")
    assert _RangeHandler.requested and all(path.startswith("/escape/") for path in _RangeHandler.requested)


def test_http_onnx_external_data_in_a_folder_with_a_space_is_read(http_root: str, served: dict[str, Any]) -> None:
    root = Path(served["root"])
    (root / "spaced" / "sub dir").mkdir(parents=True, exist_ok=True)
    (root / "spaced" / "sub dir" / "w.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    _onnx_with_external_location(root / "spaced" / "model.onnx", "sub dir/w.bin")
    with ws.open(f"{http_root}/spaced/model.onnx") as ckpt:
        assert ckpt["w"].tolist() == [0, 1, 2, 3]


def test_http_directory_url_opens_its_newest_checkpoint(http_root: str, served: dict[str, Any]) -> None:
    with ws.open(f"{http_root}/seed/") as ckpt:
        assert str(ckpt.path) == f"{http_root}/{served['names']['seed']}"
        with ws.open(local(served, "seed")) as expected:
            assert list(ckpt) == list(expected)


def test_http_listing_a_large_checkpoint_fetches_its_index_only(http_root: str, served: dict[str, Any]) -> None:
    index_size = local(served, "big").with_name("ckpt-1000.index").stat().st_size
    before = _sent()
    with ws.open(f"{http_root}/{served['names']['big']}") as ckpt:
        assert len(ckpt) == 513
        listed = _sent() - before
        assert listed <= index_size
        assert ckpt["embedding/table"][-1] == MiB - 1
        assert _sent() - before - listed == 4 * MiB
        assert _sent() - before == ckpt.path.store.bytes_fetched
        assert ckpt.path.store.requests <= 3  # small reads coalesced into the read-ahead


def test_http_reading_every_tensor_keeps_a_bounded_number_of_requests_in_flight(
    http_root: str, served: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``arrays()`` of a remote checkpoint: IN_FLIGHT range requests at once, each exactly a tensor's bytes (issue 22;
    the server answers each GET after 50 ms, so that the requests that can overlap do)."""
    monkeypatch.setattr(_RangeHandler, "delay", 0.05)
    with ws.open(local(served, "big")) as expected, ws.open(f"{http_root}/{served['names']['big']}") as ckpt:
        before = _sent()
        _RangeHandler.in_flight[1] = 0
        names = []
        for name, array in ckpt.arrays():
            names.append(name)
            assert array.tobytes() == expected[name].tobytes() and not array.flags.writeable, name
        assert names == list(expected) and len(names) == 513
        assert _RangeHandler.in_flight[1] == IN_FLIGHT
        # every tensor's bytes, once, and nothing else: no read-ahead past the small ones
        assert (
            _sent() - before
            == sum(info.nbytes for info in ckpt.infos())
            == ckpt.path.store.bytes_fetched - (local(served, "big").with_name("ckpt-1000.index").stat().st_size)
        )
        assert (ckpt["block007/kernel"] == 7).all()  # reads one at a time afterwards, with their read-ahead again
        assert _sent() - before == sum(info.nbytes for info in ckpt.infos()) + 131072 + FIRST_READ_AHEAD


@pytest.mark.parametrize("name", ["big_pytorch", "big_npz"])
def test_http_listing_a_large_zip_fetches_its_directory_and_headers(
    http_root: str, served: dict[str, Any], name: str
) -> None:
    """PyTorch: the central directory, data.pkl and each member's local header; npz: the
    directory and each member's local and .npy headers (fetched together, concurrently)."""
    before = _sent()
    with ws.open(f"{http_root}/{served['names'][name]}") as ckpt:
        assert len(ckpt) == 128
        listed = _sent() - before
        # 64 KiB read to sniff the format, the directory, data.pkl, and a few hundred bytes a member.
        assert listed < 4 * FIRST_READ_AHEAD + 128 * 1024
        assert (ckpt["block100.kernel"] == 100).all()
        # The tensor (npz: its member, the .npy header first), and the read-ahead.
        assert 65536 * 4 + FIRST_READ_AHEAD <= _sent() - before - listed <= 65536 * 4 + 128 + FIRST_READ_AHEAD
        assert _sent() - before == ckpt.path.store.bytes_fetched


@pytest.mark.parametrize(
    ("name", "tensor"),
    [
        ("big", "embedding/table"),
        ("big_safetensors", "embedding/table"),
        ("big_pytorch", "block100.kernel"),
        ("big_npz", "block100.kernel"),
    ],
)
def test_http_slice_fetches_only_the_ranges_it_takes(
    http_root: str, served: dict[str, Any], name: str, tensor: str
) -> None:
    with ws.open(local(served, name)) as local_ckpt, ws.open(f"{http_root}/{served['names'][name]}") as ckpt:
        whole = local_ckpt[tensor]
        before = _sent()
        assert np.array_equal(ckpt.slice(tensor)[1000:2000], whole[1000:2000])
        # 4000 bytes and the store's read-ahead past a small read, not the tensor's
        assert 4000 <= _sent() - before <= 4000 + FIRST_READ_AHEAD < whole.nbytes
    if name in ("big", "big_safetensors"):  # the 4 MiB table
        with ws.open(f"{http_root}/{served['names'][name]}") as ckpt:
            before = _sent()
            assert np.array_equal(ckpt.slice(tensor)[-300_000:], whole[-300_000:])
            assert _sent() - before == 300_000 * 4  # a large range is fetched exactly
            before = _sent()
            assert np.array_equal(ckpt.slice(tensor)[:: MiB // 8], whole[:: MiB // 8])
            assert _sent() - before <= 8 * (4 + FIRST_READ_AHEAD)  # 8 elements 2 MiB apart: a range each


def test_http_ls_through_the_cli_fetches_the_index_only(
    http_root: str, served: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    index_size = local(served, "big").with_name("ckpt-1000.index").stat().st_size
    before = _sent()
    assert main(["ls", f"{http_root}/{served['names']['big']}"]) == 0
    assert "embedding/table" in capsys.readouterr().out
    assert _sent() - before <= index_size


def test_cli_verifies_diffs_and_converts_a_remote_checkpoint(
    http_root: str, served: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"{http_root}/{served['names']['sharded']}"
    assert main(["verify", url]) == 0
    assert main(["diff", url, str(local(served, "sharded"))]) == 0
    capsys.readouterr()
    assert main(["convert", url, str(tmp_path / "copy" / "ckpt")]) == 0
    with ws.open(tmp_path / "copy" / "ckpt") as copy, ws.open(local(served, "sharded")) as expected:
        assert "model/kernel" in copy  # (convert leaves TF2's bookkeeping out)
        for name in copy:
            assert copy[name].tolist() == expected[name].tolist()


def test_http_missing_object_is_checkpoint_not_found(http_root: str) -> None:
    for url in (f"{http_root}/no/such/ckpt-1", f"{http_root}/nothing.safetensors"):
        with pytest.raises(ws.CheckpointNotFoundError, match=re.escape(url)):
            ws.open(url)


def test_a_bare_host_url_is_its_root_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    with serving(tmp_path / "empty") as root:  # http://127.0.0.1:PORT, no path: not a prefix to add ".index" to
        with pytest.raises(ws.CheckpointNotFoundError, match=re.escape(root) + ": a directory with no checkpoint"):
            ws.open(root)
        assert main(["ls", root]) == int(ws.CheckpointNotFoundError.exit_status)
        err = capsys.readouterr().err
        assert err == f"weightscope: error: {root}: a directory with no checkpoint in it that weightscope knows\n"
    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    ws.save(tensors, tmp_path / "model" / "model.safetensors")
    with serving(tmp_path / "model") as root, ws.open(root) as ckpt:  # transformers' names tried in turn
        assert ckpt.format == "model-folder" and ckpt["w"].tolist() == tensors["w"].tolist()


@pytest.mark.parametrize("port", ["99999", "80x"])
def test_a_url_whose_port_is_no_port_is_a_usage_error(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{port}/model.safetensors"
    with pytest.raises(ws.UsageError, match=re.escape(url) + ": not a URL: .*[Pp]ort"):
        ws.open(url)
    assert main(["ls", url]) == int(ws.UsageError.exit_status) and "Traceback" not in capsys.readouterr().err


def test_http_short_read_is_truncated_file_error(http_root: str, served: dict[str, Any]) -> None:
    url = f"{http_root}/short/{served['names']['safetensors']}"
    with pytest.raises(ws.TruncatedFileError, match=re.escape(url) + ".*expected"):
        ws.open(url)


def test_http_server_error_is_a_typed_error_naming_the_url(
    http_root: str, served: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"{http_root}/error/{served['names']['safetensors']}"
    with pytest.raises(RemoteError, match=re.escape(url)) as caught:
        ws.open(url)
    assert isinstance(caught.value, ws.WeightscopeError) and isinstance(caught.value, OSError)
    assert main(["ls", url]) == int(caught.value.exit_status)
    assert url in capsys.readouterr().err


def test_http_unreachable_server_is_a_remote_error_naming_the_url() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/run/model.safetensors"
    with pytest.raises(RemoteError, match=re.escape(url)):
        ws.open(url)


# -- without fsspec, and on the local path ---------------------------------------------------
def test_without_fsspec_a_url_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)  # import fsspec -> ImportError
    with pytest.raises(ws.UsageError, match=re.escape("pip install 'weightscope[remote]'")):
        ws.open("s3://bucket/run/ckpt-1000")
    assert main(["ls", "https://example.invalid/model.safetensors"]) == ws.UsageError.exit_status


def test_an_unknown_protocol_or_option_is_a_typed_error(http_root: str) -> None:
    with pytest.raises(ws.UsageError, match="nosuchproto"):
        ws.open("nosuchproto://bucket/model.safetensors")
    for url in ("s3://bucket/model.safetensors", f"{http_root}/model.safetensors"):
        # The filesystems take any keyword, and fail on it at the first request.
        with pytest.raises(RemoteError, match=re.escape(url) + ".*no_such_option"):
            ws.open(url, storage_options={"no_such_option": 1})


def test_local_ls_imports_neither_fsspec_nor_the_remote_module(served: dict[str, Any]) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "weightscope", "ls", str(local(served, "seed"))],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "weightscope.sources" in imported
    assert not {"fsspec", "weightscope.remote", "s3fs", "aiohttp"} & imported


def test_dask_arrays_of_a_remote_checkpoint_are_refused_with_a_typed_error(tmp_path: Path) -> None:
    import fsspec

    path = ws.save({"w": np.ones(4, np.float32)}, tmp_path / "m.safetensors", format="safetensors")
    fsspec.filesystem("memory").pipe("/weightscope-test/m.safetensors", path.read_bytes())
    with (
        ws.open("memory://weightscope-test/m.safetensors") as ckpt,
        pytest.raises(ws.UnsupportedFormatError, match="not by URL"),
    ):
        ckpt.to_dask("w")
