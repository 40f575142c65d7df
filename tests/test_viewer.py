"""``weightscope view``: the JSON API against the library's own answers, what the server refuses,
and the page itself, driven in Debian's headless Chromium.

Screenshots of the views the browser tests reach are written to a temporary directory
and, when ``WEIGHTSCOPE_SCREENSHOTS`` names a directory, copied there too.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest

import weightscope as ws
from weightscope.analysis import checkpoint_diff, diff_order, tensor_stats
from weightscope.anatomy import anatomy, anatomy_order
from weightscope.output import dumps_json, json_values
from weightscope.plot import bin_edges, block_means, finite_range, histogram
from weightscope.spectra import skip_reason, spectrum
from weightscope.summary import summarize
from weightscope.viewer import ViewerServer, analyses, make_server
from weightscope.viewer.server import TOKEN_HEADER, flat_values, redirect_file

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
API = ["files", "tensors", "summary", "tensor", "histogram", "heatmap", "values", "diff", "spectrum", "anatomy"]


# -- servers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def running(*paths: Path, dequantize: bool = False) -> Iterator[ViewerServer]:
    """A viewer of ``paths`` serving on a free port in a thread of this process (as ``view [--dequantize]``)."""
    with contextlib.ExitStack() as stack:
        checkpoints = [stack.enter_context(ws.open(path, dequantize=dequantize)) for path in paths]
        server = stack.enter_context(make_server(checkpoints))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server
        finally:
            server.shutdown()
            thread.join(5)


@pytest.fixture(scope="module")
def seed(tf_checkpoints: dict[str, Path]) -> Path:
    return tf_checkpoints["seed"]


@pytest.fixture(scope="module")
def changed(seed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed checkpoint with layer1's kernel scaled and layer2's bias moved: the B of a diff."""
    with ws.open(seed) as ckpt:
        tensors = {name: np.array(ckpt[name]) for name in ckpt}
    tensors["layer1/kernel"] = tensors["layer1/kernel"] * np.float32(1.5)
    tensors["layer2/bias"] = tensors["layer2/bias"] + np.float32(0.05)
    return ws.save(tensors, tmp_path_factory.mktemp("changed") / "model.ckpt")


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20,004 small tensors: 2500 blocks of four dense layers (kernel and bias), and four Adam slots."""
    rng = np.random.default_rng(7)
    tensors: dict[str, np.ndarray] = {}
    for block in range(2500):
        for dense in range(4):
            prefix = f"block_{block:04d}/dense_{dense}"
            tensors[f"{prefix}/kernel"] = rng.normal(size=(3, 4)).astype(np.float32)
            tensors[f"{prefix}/bias"] = rng.normal(size=4).astype(np.float32)
    for slot in ("Adam", "Adam_1"):
        for dense in range(2):
            tensors[f"block_0000/dense_{dense}/kernel/{slot}"] = np.ones((3, 4), np.float32)
    return ws.save(tensors, tmp_path_factory.mktemp("many20k") / "many.ckpt")


@pytest.fixture(scope="module")
def fine_tune(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A base and a fine-tune of it (safetensors): ``fc1.weight`` changed by a rank-2 product, as a merged LoRA
    (in float32), and ``fc1.bias`` moved; the fused QKV, ``fc2`` and the embedding left as they were."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(21)
    base = {
        "embed_tokens.weight": rng.normal(size=(100, 16)),
        "attn.qkv.weight": rng.normal(size=(96, 32)),
        "fc1.weight": rng.normal(size=(64, 48)),
        "fc1.bias": rng.normal(size=64),
        "fc2.weight": rng.normal(size=(32, 64)) * np.linspace(0.1, 3, 64) ** 2,  # a spread-out spectrum
    }
    base = {name: array.astype(np.float32) for name, array in base.items()}
    tuned = dict(base)
    b, a = rng.normal(size=(64, 2)).astype(np.float32), rng.normal(size=(2, 48)).astype(np.float32)
    tuned["fc1.weight"] = base["fc1.weight"] + np.float32(0.1) * (b @ a)
    tuned["fc1.bias"] = base["fc1.bias"] + np.float32(0.01)
    folder = tmp_path_factory.mktemp("fine-tune")
    save_file(base, folder / "base.safetensors")
    save_file(tuned, folder / "tuned.safetensors")
    return folder / "base.safetensors", folder / "tuned.safetensors"


@pytest.fixture(scope="module")
def seed_server(seed: Path) -> Iterator[ViewerServer]:
    with running(seed) as server:
        yield server


@pytest.fixture(scope="module")
def diff_server(seed: Path, changed: Path) -> Iterator[ViewerServer]:
    with running(seed, changed) as server:
        yield server


def request(
    server: ViewerServer,
    target: str,
    *,
    token: str | None = "query",
    host: str | None = None,
    method: str = "GET",
) -> tuple[int, bytes]:
    """The status and body of a raw request: ``target`` is sent as is, never normalised."""
    headers = {"Host": host or f"127.0.0.1:{server.port}"}
    if token == "query":
        target += ("&" if "?" in target else "?") + f"token={server.token}"
    elif token == "header":
        headers[TOKEN_HEADER] = server.token
    elif token is not None:
        target += ("&" if "?" in target else "?") + f"token={token}"
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for key, value in headers.items():
            connection.putheader(key, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def api(server: ViewerServer, route: str, **params: Any) -> Any:
    query = "&".join(f"{key}={quote(str(value), safe='')}" for key, value in params.items())
    status, body = request(server, f"/api/{route}?{query}")
    assert status == 200, body
    return json.loads(body)


def as_json(document: Any) -> Any:
    """What the library's answer looks like once it has been through the server's JSON."""
    return json.loads(dumps_json(document))


# -- refusals ----------------------------------------------------------------------------------


def test_every_request_for_data_needs_the_token(seed_server: ViewerServer) -> None:
    for route in API:
        target = f"/api/{route}?file=0&name=layer1/kernel"
        assert request(seed_server, target, token=None)[0] == 403
        assert request(seed_server, target, token="wrong" + seed_server.token)[0] == 403
        assert request(seed_server, target, token="")[0] == 403
    assert request(seed_server, "/api/files", token="header")[0] == 200
    status, body = request(seed_server, "/", token=None)
    assert status == 403 and b"token" in body
    status, body = request(seed_server, "/")
    assert status == 200 and b"<canvas" in body
    for static in ("/static/app.js", "/static/style.css"):  # the page's code and style: no secrets
        assert request(seed_server, static, token=None)[0] == 200


def _get(server: ViewerServer, target: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """The status and headers of a GET with these headers (and the right Host)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request("GET", target, headers={"Host": f"127.0.0.1:{server.port}", **headers})
        response = connection.getresponse()
        response.read()
        return response.status, dict(response.getheaders())
    finally:
        connection.close()


def test_the_page_opened_with_the_token_sets_a_cookie_that_stands_for_it(seed_server: ViewerServer) -> None:
    status, headers = _get(seed_server, f"/?token={seed_server.token}", {})
    assert status == 200
    cookie = headers["Set-Cookie"]
    assert cookie == f"weightscope-token-{seed_server.port}={seed_server.token}; HttpOnly; SameSite=Strict; Path=/"
    jar = {"Cookie": cookie.split(";")[0]}
    assert _get(seed_server, "/", jar)[0] == 200  # a reload: the address no longer has the token
    for route in API:
        assert _get(seed_server, f"/api/{route}?file=0&name=layer1/kernel", jar)[0] in (200, 404)  # 404: no diff
    assert "Set-Cookie" not in _get(seed_server, "/", jar)[1]  # set once
    wrong = {"Cookie": f"weightscope-token-{seed_server.port}=x{seed_server.token}"}
    other_port = {"Cookie": f"weightscope-token-{seed_server.port + 1}={seed_server.token}"}
    for refused in (wrong, other_port, {"Cookie": "garbage;;=\x00"}, {}):
        assert _get(seed_server, "/api/files", refused)[0] == 403
        assert _get(seed_server, "/", refused)[0] == 403
    assert "Set-Cookie" not in _get(seed_server, f"/api/files?token={seed_server.token}", {})[1]  # the page sets it


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_the_browser_gets_a_private_file_not_the_token(seed: Path, tmp_path: Path, stop: signal.Signals) -> None:
    # $BROWSER is what webbrowser runs: a script that records what it was given, and the file then.
    record = tmp_path / "record"
    fake = tmp_path / "browser"
    fake.write_text(
        "#!/bin/sh\n"
        'page="${1#file://}"\n'
        f'{{ echo "$@"; stat -c %a "$page"; stat -c %a "$(dirname "$page")"; cat "$page"; }} > {record}\n'
    )
    fake.chmod(0o700)
    process = subprocess.Popen(
        [sys.executable, "-m", "weightscope", "view", str(seed)],
        env={**os.environ, "BROWSER": str(fake)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not record.exists() or "</html>" not in record.read_text():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert process.stdout is not None
        url = next(line for line in iter(process.stdout.readline, "") if line.startswith("open "))[5:].strip()
        token = url.split("token=")[1]
        argument, file_mode, directory_mode, *page = record.read_text().splitlines()
        assert token not in argument and argument.startswith("file:///") and argument.endswith(".html")
        assert (file_mode, directory_mode) == ("600", "700")
        assert f'<meta http-equiv="refresh" content="0;url={url}">' in page
        handed = Path(argument.removeprefix("file://"))
        assert handed.exists()
        process.send_signal(stop)
        out, _ = process.communicate(timeout=20)
        assert process.returncode == 0 and "stopped" in out
        assert not handed.exists() and not handed.parent.exists()  # removed when the server stops
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_foreign_host_header_is_refused(seed_server: ViewerServer) -> None:
    port = seed_server.port
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", f"127.0.0.1.evil.example:{port}"):
        assert request(seed_server, "/api/files", host=host)[0] == 403, host
        assert request(seed_server, "/", host=host)[0] == 403, host
    assert request(seed_server, "/api/files", host=f"localhost:{port}")[0] == 200


@pytest.mark.parametrize(
    "target",
    [
        "/../../etc/passwd",
        "/static/../../pyproject.toml",
        "/static/../server.py",
        "/static/%2e%2e/%2e%2e/pyproject.toml",
        "/static/..%2f..%2fpyproject.toml",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/static/app.js/../../server.py",
        "/etc/passwd",
        "//etc/passwd",
        "/server.py",
        "/static/",
        "/static/server.py",
        "/api/../static/app.js",
        "/api/files/../../pyproject.toml",
        "http://127.0.0.1/etc/passwd",
    ],
)
def test_no_path_outside_the_page_and_the_api(seed_server: ViewerServer, target: str) -> None:
    status, body = request(seed_server, target)
    assert status == 404
    assert b"root:" not in body and b"[project]" not in body


def test_only_the_files_it_was_started_with(seed_server: ViewerServer, seed: Path) -> None:
    for file in ("1", "-1", "../../etc/passwd", str(seed), "0x0", ""):
        status, body = request(seed_server, f"/api/tensors?file={quote(file, safe='')}")
        assert status == 404, file
        assert "error" in json.loads(body)
    status, _ = request(seed_server, "/api/tensor?file=0&name=" + quote("/etc/passwd", safe=""))
    assert status == 404
    assert request(seed_server, "/api/diff")[0] == 404  # one file: nothing to compare
    assert request(seed_server, "/api/files", method="POST")[0] == 501


# -- the API against the library ---------------------------------------------------------------


def test_files_tensors_and_summary(seed_server: ViewerServer, seed: Path) -> None:
    with ws.open(seed) as ckpt:
        files = api(seed_server, "files")
        assert files == {
            "files": [
                {
                    "file": 0,
                    "label": ckpt.path.name,
                    "path": str(ckpt.path),
                    "format": ckpt.format,
                    "tensors": len(ckpt),
                    "metadata": {},
                }
            ],
            "compare": False,
        }
        tensors = api(seed_server, "tensors", file=0)["tensors"]
        assert [row["name"] for row in tensors] == list(ckpt)
        for row in tensors:
            info, role = ckpt.info(row["name"]), ckpt.role(row["name"])
            assert (row["dtype"], row["shape"], row["size"], row["nbytes"]) == (
                info.type_name,
                list(info.shape),
                info.size,
                info.nbytes,
            )
            assert (row["kind"], row["role"], row["owner"]) == (role.kind, role.role, role.owner)
        by_name = {row["name"]: row for row in tensors}
        assert by_name["layer1/kernel"]["layer"] == "layer1"
        assert by_name["layer1/kernel/Adam"]["kind"] == "optimizer"
        assert by_name["layer1/kernel/Adam"]["owner"] == "layer1/kernel"
        assert by_name["beta1_power"]["kind"] == "optimizer"
        assert api(seed_server, "summary", file=0) == as_json(summarize(ckpt).to_json())


def test_tensor_statistics(seed_server: ViewerServer, seed: Path) -> None:
    with ws.open(seed) as ckpt:
        for name in ckpt:
            answer = api(seed_server, "tensor", file=0, name=name)
            assert answer["stats"] == as_json(tensor_stats(name, ckpt[name]).to_json())
            assert answer["shape"] == list(ckpt.info(name).shape)
        kernel = api(seed_server, "tensor", file=0, name="layer1/kernel")
        assert kernel["role"] == "weight" and kernel["layer"] == "layer1"
        assert kernel["plottable"] is True and kernel["channels"] is None
        # a role name resolves as everywhere else
        assert api(seed_server, "tensor", file=0, name="layer1/weight")["name"] == "layer1/kernel"


def test_histogram_heatmap_and_values(seed_server: ViewerServer, seed: Path) -> None:
    with ws.open(seed) as ckpt:
        kernel = ckpt["layer1/kernel"]
        answer = api(seed_server, "histogram", file=0, name="layer1/kernel", bins=7)
        expected = histogram(kernel, 7)
        assert answer["edges"] == expected.edges.tolist()
        assert answer["counts"] == expected.counts.tolist()
        assert (answer["count"], answer["nans"], answer["infs"]) == (kernel.size, 0, 0)

        answer = api(seed_server, "heatmap", file=0, name="layer1/kernel", rows=64, cols=64)
        means = block_means(kernel, (64, 64))
        assert answer["means"] == as_json(json_values(means.means))
        assert (answer["block"], answer["matrix"], answer["downsampled"]) == ([1, 1], [2, 5], False)
        answer = api(seed_server, "heatmap", file=0, name="layer1/kernel", rows=1, cols=2)
        means = block_means(kernel, (1, 2))
        assert answer["block"] == [2, 3] and answer["grid"] == [1, 2]
        assert answer["means"] == as_json(json_values(means.means))

        flat = np.asarray(kernel).reshape(-1)
        answer = api(seed_server, "values", file=0, name="layer1/kernel", offset=3, limit=4)
        assert answer["values"] == as_json(json_values(flat[3:7]))
        assert (answer["offset"], answer["total"], answer["shape"]) == (3, 10, [2, 5])
        assert api(seed_server, "values", file=0, name="layer1/kernel", offset=8, limit=100)["values"] == as_json(
            json_values(flat[8:])
        )
        assert api(seed_server, "values", file=0, name="beta1_power")["values"] == [float(ckpt["beta1_power"])]
    for bad in ("bins=0", "bins=x", "bins=100001"):
        assert request(seed_server, f"/api/histogram?file=0&name=layer1/kernel&{bad}")[0] == 400
    assert request(seed_server, "/api/values?file=0&name=layer1/kernel&offset=10")[0] == 400
    assert request(seed_server, "/api/heatmap?file=0&name=layer1/kernel&channel=0")[0] == 400  # not a convolution


def test_a_quantised_weight_is_shown_dequantised_with_dequantize() -> None:
    """``view --dequantize`` (a checkpoint opened dequantised) lists the logical weight and gives the values its
    reference's dequantisation gives; without it, the parts as stored."""
    quant = Path(__file__).parent / "fixtures" / "quant"
    with ws.open(quant / "expected.safetensors") as expected:
        want = expected["awq/mlp.up_proj.weight"].reshape(-1)
    with running(quant / "awq", dequantize=True) as server:
        names = [row["name"] for row in api(server, "tensors", file=0)["tensors"]]
        assert "mlp.up_proj.weight" in names and "mlp.up_proj.qweight" not in names
        answer = api(server, "values", file=0, name="mlp.up_proj.weight", offset=0, limit=want.size)
        assert answer["values"] == as_json(json_values(want))
    with running(quant / "awq") as server:
        assert "mlp.up_proj.qweight" in [row["name"] for row in api(server, "tensors", file=0)["tensors"]]
    assert (
        "--dequantize"
        in subprocess.run(
            [sys.executable, "-m", "weightscope", "view", "--help"], capture_output=True, text=True, check=True
        ).stdout
    )


def test_convolution_kernels_by_output_channel(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(3, 3, 4, 8)).astype(np.float32)  # TensorFlow: [h, w, in, out]
    weight = rng.normal(size=(8, 4, 3, 3)).astype(np.float32)  # PyTorch: [out, in, h, w]
    tf_path = ws.save({"conv/kernel": kernel, "conv/bias": np.zeros(8, np.float32)}, tmp_path / "tf.ckpt")
    pt_path = ws.save(
        {"conv.weight": weight, "conv.bias": np.zeros(8, np.float32)}, tmp_path / "pt.safetensors", format="safetensors"
    )
    with running(tf_path, pt_path) as server:
        assert api(server, "tensor", file=0, name="conv/kernel")["channels"] == {
            "axis": 3,
            "count": 8,
            "layout": "tensorflow",
            "matrix": [4, 9],
        }
        answer = api(server, "heatmap", file=0, name="conv/kernel", channel=5, rows=100, cols=100)
        expected = block_means(np.transpose(kernel, (3, 2, 0, 1))[5], (100, 100))
        assert answer["shape"] == [4, 3, 3] and answer["matrix"] == [4, 9]
        assert answer["means"] == as_json(json_values(expected.means))
        pytorch = api(server, "tensor", file=1, name="conv.weight")["channels"]
        assert pytorch == {"axis": 0, "count": 8, "layout": "pytorch", "matrix": [4, 9]}
        answer = api(server, "heatmap", file=1, name="conv.weight", channel=7, rows=100, cols=100)
        assert answer["means"] == as_json(json_values(block_means(weight[7], (100, 100)).means))
        assert request(server, "/api/heatmap?file=0&name=conv/kernel&channel=8")[0] == 400


def test_values_of_a_strided_tensor_copy_only_what_is_asked() -> None:
    array = np.arange(60, dtype=np.float32).reshape(6, 10)[:, ::2]  # not contiguous
    assert flat_values(array, 7, 9).tolist() == array.reshape(-1)[7:16].tolist()
    assert flat_values(array, 29, 9).tolist() == [array.reshape(-1)[29]]


def test_every_route_answers_for_names_with_lone_surrogates(tmp_path: Path) -> None:
    # torch.save writes such names (pickle text is "surrogatepass"). The answers escape them as
    # JSON does ("\\ud800"); a URL cannot carry one, so the page asks by the escaped form the
    # command line prints, which the server resolves to the tensor.
    import torch

    weight, bias = "layer\ud800.weight", "bias\udcff"
    torch.save({weight: torch.arange(6.0).reshape(2, 3), bias: torch.ones(2)}, tmp_path / "a.pt")
    torch.save({weight: torch.arange(6.0).reshape(2, 3) * 2, bias: torch.ones(2)}, tmp_path / "b.pt")
    with running(tmp_path / "a.pt", tmp_path / "b.pt") as server:
        printed = quote("layer\\ud800.weight")
        for route in API:
            status, body = request(server, f"/api/{route}?file=0&name={printed}")
            assert status == 200, (route, body)
            json.loads(body.decode("utf-8"))  # strict UTF-8
        assert [row["name"] for row in api(server, "tensors", file=0)["tensors"]] == [weight, bias]
        assert api(server, "tensor", file=1, name="layer\\ud800.weight")["name"] == weight
        assert api(server, "values", file=0, name="bias\\xff")["values"] == [1.0, 1.0]
        assert api(server, "values", file=1, name="layer\\ud800.weight")["values"] == [0, 2, 4, 6, 8, 10]
        assert {row["name"] for row in api(server, "diff")["tensors"]} == {weight, bias}


def test_values_of_records_are_objects_by_field(tmp_path: Path) -> None:
    records = np.array([(1, 2.5), (3, np.nan)], [("a", "<i4"), ("b", "<f8")])
    np.save(tmp_path / "records.npy", records)
    with running(tmp_path / "records.npy") as server:
        answer = api(server, "values", file=0, name="records")
        assert answer["values"] == [{"a": 1, "b": 2.5}, {"a": 3, "b": "NaN"}]


def test_diff_and_overlaid_histograms(diff_server: ViewerServer, seed: Path, changed: Path) -> None:
    with ws.open(seed) as a, ws.open(changed) as b:
        expected = checkpoint_diff(a, b)
        expected.tensors = sorted(expected.tensors, key=diff_order)
        answer = api(diff_server, "diff")
        answer.pop("include_optimizer")
        assert answer == as_json(expected.to_json())
        order = [tensor["name"] for tensor in answer["tensors"]]
        assert order[:2] == ["layer1/kernel", "layer2/bias"]  # relative change 0.5 first, then the bias's
        assert {tensor["status"] for tensor in answer["tensors"][2:]} == {"equal"}

        answer = api(diff_server, "histogram", file=0, name="layer1/kernel", compare=1, bins=20)
        edges = bin_edges([finite_range(a["layer1/kernel"]), finite_range(b["layer1/kernel"])], 20)
        assert answer["edges"] == edges.tolist()
        assert answer["counts"] == histogram(a["layer1/kernel"], edges=edges).counts.tolist()
        assert answer["compare"]["counts"] == histogram(b["layer1/kernel"], edges=edges).counts.tolist()
        assert api(diff_server, "tensors", file=1)["file"] == 1


def test_spectrum_equals_spectra_and_numpy_svd(fine_tune: tuple[Path, Path]) -> None:
    with running(*fine_tune) as server, ws.open(fine_tune[0]) as base, ws.open(fine_tune[1]) as tuned:
        for file, ckpt in ((0, base), (1, tuned)):
            for name in ("fc1.weight", "fc2.weight"):
                answer = api(server, "spectrum", file=file, name=name)
                assert (answer["file"], answer["name"], answer["skipped"]) == (file, name, None)
                (part,) = answer["parts"]
                expected = spectrum(name, ckpt[name])
                assert {key: part[key] for key in expected.to_json()} == as_json(expected.to_json())
                assert part["method"] == "exact" and part["error_bound"] == 0
                # the figures and the ESD against numpy's SVD of the same matrix
                values = np.linalg.svd(ckpt[name].astype(np.float64), compute_uv=False)
                assert part["spectral_norm"] == pytest.approx(values[0], rel=1e-12)
                assert part["stable_rank"] == pytest.approx(np.sum(values**2) / values[0] ** 2, rel=1e-12)
                edges, density = np.array(part["esd"]["edges"]), np.array(part["esd"]["density"])
                assert len(edges) == analyses.ESD_BINS + 1 <= 101 and part["esd"]["eigenvalues"] == len(values)
                assert edges[0] == pytest.approx(values[-1] ** 2, rel=1e-12)
                assert edges[-1] == pytest.approx(values[0] ** 2, rel=1e-8)
                counts, _ = np.histogram(values**2, edges)
                assert np.round(density * len(values) * np.diff(edges)).astype(int).tolist() == counts.tolist()
                assert float(np.sum(density * np.diff(edges))) == pytest.approx(1.0)
                # the fit's line: from xmin to the largest eigenvalue, the tail's share of a power-law density
                fit = part["fit"]
                assert fit["x"] == [part["xmin"], pytest.approx(values[0] ** 2, rel=1e-12)]
                tail = int(np.count_nonzero(values**2 >= part["xmin"]))
                assert part["tail"] == tail
                alpha = part["alpha"]
                assert fit["density"][0] == pytest.approx(tail / len(values) * (alpha - 1) / part["xmin"], rel=1e-12)
                slope = np.diff(np.log(fit["density"])) / np.diff(np.log(fit["x"]))
                assert slope[0] == pytest.approx(-alpha, rel=1e-9)
        assert api(server, "spectrum", file=0, name="fc1.weight") != api(server, "spectrum", file=1, name="fc1.weight")


def test_spectrum_of_a_fused_qkv_has_its_three_parts(fine_tune: tuple[Path, Path]) -> None:
    with running(fine_tune[0]) as server, ws.open(fine_tune[0]) as ckpt:
        answer = api(server, "spectrum", file=0, name="attn.qkv.weight")
        names = ["attn.qkv.weight[q]", "attn.qkv.weight[k]", "attn.qkv.weight[v]"]
        assert [part["name"] for part in answer["parts"]] == names
        for part, name, piece in zip(answer["parts"], names, np.split(ckpt["attn.qkv.weight"], 3), strict=True):
            expected = spectrum(name, piece)
            assert {key: part[key] for key in expected.to_json()} == as_json(expected.to_json())
            assert part["spectral_norm"] == pytest.approx(np.linalg.svd(piece.astype(np.float64))[1][0], rel=1e-12)


def test_spectrum_of_a_tensor_without_one_answers_why(fine_tune: tuple[Path, Path], tmp_path: Path) -> None:
    nan = np.ones((16, 16), np.float32)
    nan[3, 4] = np.nan
    odd = {"nan/kernel": nan, "small/kernel": np.ones((4, 20), np.float32), "zero/kernel": np.zeros((9, 9))}
    path = ws.save(odd, tmp_path / "odd.ckpt")
    with running(fine_tune[0], path) as server, ws.open(fine_tune[0]) as ckpt:
        for name in ("fc1.bias", "embed_tokens.weight"):
            info = ckpt.info(name)
            reason = skip_reason(name, info.shape, "f")
            assert reason is not None
            answer = api(server, "spectrum", file=0, name=name)
            assert answer == {"file": 0, "name": name, "shape": list(info.shape), "skipped": reason, "parts": []}
        assert api(server, "spectrum", file=0, name="fc1.bias")["skipped"] == "a vector (bias, norm scale)"
        assert api(server, "spectrum", file=1, name="nan/kernel")["skipped"].startswith("holds NaN or infinite")
        assert "fewer than 8 singular values" in api(server, "spectrum", file=1, name="small/kernel")["skipped"]
        (zero,) = api(server, "spectrum", file=1, name="zero/kernel")["parts"]  # a spectrum, nothing to draw
        assert (zero["spectral_norm"], zero["alpha"], zero["fit"]) == (0.0, None, None)
        assert zero["esd"] == {"edges": [], "density": [], "eigenvalues": 0}
        assert request(server, "/api/spectrum?file=0")[0] == 400
        assert request(server, "/api/spectrum?file=0&name=nothing")[0] == 404
        assert request(server, "/api/spectrum?file=2&name=fc1.weight")[0] == 404


def test_spectrum_of_a_large_matrix_takes_the_randomized_path(
    fine_tune: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(analyses, "EXACT_VALUES", 64 * 48 - 1)  # fc1.weight is just over the bound
    monkeypatch.setattr(analyses, "RANDOMIZED_TOP", 12)
    with running(fine_tune[0]) as server, ws.open(fine_tune[0]) as ckpt:
        (part,) = api(server, "spectrum", file=0, name="fc1.weight")["parts"]
        expected = spectrum("fc1.weight", ckpt["fc1.weight"], top=12)
        assert {key: part[key] for key in expected.to_json()} == as_json(expected.to_json())
        assert part["method"] == "randomized" and part["mp_spikes"] is None and part["esd"]["eigenvalues"] == 12
        values = np.linalg.svd(ckpt["fc1.weight"].astype(np.float64), compute_uv=False)
        assert 0 <= values[0] - part["spectral_norm"] <= part["error_bound"]  # Weyl: within the bound, from below
        assert part["esd"]["edges"][0] <= values[11] ** 2 + 1e-9
        assert part["esd"]["edges"][0] >= max(0.0, values[11] - part["error_bound"]) ** 2
        assert api(server, "spectrum", file=0, name="fc2.weight")["parts"][0]["method"] == "exact"  # 2048 values


def test_anatomy_equals_the_library_ordered_by_change(fine_tune: tuple[Path, Path], seed_server: ViewerServer) -> None:
    with running(*fine_tune) as server, ws.open(fine_tune[0]) as base, ws.open(fine_tune[1]) as tuned:
        answer = api(server, "anatomy")
        expected = anatomy(base, tuned).to_json()
        by_name = {layer["name"]: layer for layer in expected["layers"]}
        layers = sorted(anatomy(base, tuned).layers, key=anatomy_order)
        assert answer == as_json({**expected, "layers": [by_name[layer.name] for layer in layers]})
        assert [layer["name"] for layer in answer["layers"][:2]] == ["fc1.weight", "fc1.bias"]
        assert {layer["status"] for layer in answer["layers"][2:]} == {"equal"}
        weight = answer["layers"][0]
        assert (weight["rank"], weight["rank_90"], weight["rank_99"], answer["lora_rank"]) == (2, 2, 2, 2)
        change = tuned["fc1.weight"].astype(np.float64) - base["fc1.weight"]
        assert weight["relative_change"] == pytest.approx(
            np.linalg.norm(change) / np.linalg.norm(base["fc1.weight"].astype(np.float64)), rel=1e-12
        )
        assert np.linalg.matrix_rank(change, tol=weight["tolerance"]) == 2
    status, body = request(seed_server, "/api/anatomy")
    assert status == 404 and "two files" in json.loads(body)["error"]


def test_a_slow_computation_holds_up_only_requests_for_the_same_answer(seed: Path) -> None:
    from weightscope.viewer.server import Viewer

    with ws.open(seed) as ckpt:
        viewer = Viewer([ckpt])
        started, release = threading.Event(), threading.Event()
        calls: list[int] = []
        answers: list[Any] = []

        def slow() -> str:  # a spectrum or the anatomy of a large model
            calls.append(1)
            started.set()
            release.wait(30)
            return "slow"

        same = [threading.Thread(target=lambda: answers.append(viewer._computed_once(("slow",), slow))) for _ in "ab"]
        for thread in same:
            thread.start()
        assert started.wait(30)
        other = threading.Thread(target=lambda: answers.append(viewer.tensors({"file": "0"})))
        other.start()
        other.join(20)
        assert not other.is_alive() and answers[0]["tensors"]  # another key: answered while the slow one computes
        release.set()
        for thread in same:
            thread.join(20)
        assert answers[1:] == ["slow", "slow"] and calls == [1]  # computed once, both waiting for it got it


def test_the_command_prints_its_address_and_stops_on_ctrl_c(seed: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "weightscope", "view", str(seed), "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = ""
        while "token=" not in url:
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else ""
            url = line.strip().removeprefix("open ") if line.startswith("open ") else ""
        assert url.startswith("http://127.0.0.1:")
        port = int(url.split(":")[2].split("/")[0])
        token = url.split("token=")[1]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/api/files", headers={TOKEN_HEADER: token})
        assert connection.getresponse().status == 200
        connection.close()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        assert "stopped" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# -- the page, in headless Chromium --------------------------------------------------------------


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("screenshots")
    yield directory
    copy_to = os.environ.get("WEIGHTSCOPE_SCREENSHOTS")
    if copy_to:
        Path(copy_to).mkdir(parents=True, exist_ok=True)
        for picture in directory.glob("*.png"):
            shutil.copy2(picture, Path(copy_to) / picture.name)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module, driven by chromium-driver through Selenium."""
    # Not a skip: make test installs both, and a skipped browser test is not a passed one.
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "needs Debian's chromium and chromium-driver: run make test"
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,1000")
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, script: str, timeout: float = 20.0) -> Any:
    """Run ``script`` (a JavaScript expression) until it is truthy; its value. While a page loads (after a
    navigation or a refresh) it may have no body yet: the script's error then counts as not yet, until the time
    is up."""
    from selenium.common.exceptions import JavascriptException

    deadline = time.monotonic() + timeout
    while True:
        try:
            value, failed = driver.execute_script(f"return ({script});"), None
        except JavascriptException as error:
            value, failed = None, error
        if value:
            return value
        if time.monotonic() > deadline:
            if failed is not None:
                raise AssertionError(f"timed out waiting for {script}: {failed.msg}")
            errors = driver.execute_script("return document.getElementById('error').textContent")
            raise AssertionError(f"timed out waiting for {script} (page error: {errors!r})")
        time.sleep(0.05)


def inked(driver: Any, canvas_id: str) -> int:
    """How many pixels of a canvas are drawn with a colour (neither transparent nor white nor grey)."""
    return int(
        driver.execute_script(
            """
            const canvas = document.getElementById(arguments[0]);
            const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            let count = 0;
            for (let i = 0; i < data.length; i += 4) {
              const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
              if (a > 0 && (Math.max(r, g, b) - Math.min(r, g, b)) > 40) count += 1;
            }
            return count;
            """,
            canvas_id,
        )
    )


def shoot(driver: Any, path: Path) -> None:
    """A screenshot, once the page has painted what the last step changed (two animation frames)."""
    driver.execute_async_script(
        "const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(() => done()));"
    )
    driver.save_screenshot(str(path))


def text_of(driver: Any, selector: str) -> str:
    return str(driver.execute_script("return document.querySelector(arguments[0]).textContent", selector))


def test_page_shows_the_seed_and_its_layer1_kernel(
    browser: Any, seed_server: ViewerServer, seed: Path, screenshots: Path
) -> None:
    browser.get(seed_server.url)
    wait_for(browser, "document.body.dataset.ready === '1'")
    wait_for(browser, "document.querySelector('#s-layers tbody tr')")
    assert "Dense 2 → 5" in text_of(browser, "#s-layers")  # the summary is the landing view
    shoot(browser, screenshots / "1-summary.png")

    browser.find_element("css selector", '#tree .row[data-name="layer1/kernel"]').click()
    wait_for(browser, "document.querySelector('#t-info td[data-key=shape]')")
    assert text_of(browser, "#t-info td[data-key=shape]") == "[2, 5]"
    assert text_of(browser, "#t-info td[data-key=dtype]") == "float32"
    with ws.open(seed) as ckpt:
        stats = tensor_stats("layer1/kernel", ckpt["layer1/kernel"])
    assert float(text_of(browser, "#t-stats td[data-key=min]")) == pytest.approx(stats.min, rel=1e-5)
    assert float(text_of(browser, "#t-stats td[data-key=max]")) == pytest.approx(stats.max, rel=1e-5)
    assert text_of(browser, "#t-stats td[data-key=count]") == "10"
    wait_for(browser, "document.getElementById('hist').dataset.ready === '1'")
    wait_for(browser, "document.getElementById('heat').dataset.ready === '1'")
    assert inked(browser, "hist") > 500  # bars
    assert inked(browser, "heat") > 5000  # ten coloured cells
    assert browser.execute_script("return document.getElementById('heat').dataset.cells") == "2x5"
    wait_for(browser, "document.querySelectorAll('#values tbody tr').length === 10")
    shoot(browser, screenshots / "2-layer1-kernel.png")
    browser.execute_script("document.getElementById('values-panel').scrollIntoView()")
    shoot(browser, screenshots / "3-layer1-kernel-values.png")


def test_page_opened_from_the_redirect_file_drops_the_token_and_reloads_by_cookie(
    browser: Any, seed_server: ViewerServer
) -> None:
    browser.delete_all_cookies()
    with redirect_file(seed_server.url) as page:
        browser.get(page.as_uri())
        wait_for(browser, "location.protocol === 'http:' && document.body.dataset.ready === '1'")
    wait_for(browser, "document.querySelector('#s-layers tbody tr')")
    assert browser.execute_script("return location.href") == f"http://127.0.0.1:{seed_server.port}/"
    assert browser.execute_script("return document.cookie") == ""  # HttpOnly: not for scripts
    browser.refresh()  # no token in the address now: the cookie opens the page and its API
    wait_for(browser, "document.body.dataset.ready === '1'")
    wait_for(browser, "document.querySelector('#s-layers tbody tr')")
    assert "Dense 2 → 5" in text_of(browser, "#s-layers")
    assert seed_server.token not in browser.execute_script("return location.href")


def test_page_shows_a_tensor_whose_name_holds_a_lone_surrogate(browser: Any, tmp_path: Path) -> None:
    import torch

    weight = "layer\ud800/kernel"
    torch.save({weight: torch.arange(6.0).reshape(2, 3), "layer\ud800/bias": torch.ones(3)}, tmp_path / "s.pt")
    with running(tmp_path / "s.pt") as server:
        browser.get(server.url)
        wait_for(browser, "document.body.dataset.ready === '1'")
        # chromedriver takes no lone surrogate in a script: the page's own name is built in JavaScript.
        row = "[...document.querySelectorAll('#tree .row')].find((row) => row.dataset.name === NAME)"
        row = row.replace("NAME", "'layer' + String.fromCharCode(0xd800) + '/kernel'")
        wait_for(browser, row)
        browser.execute_script(f"{row}.click()")
        wait_for(browser, "document.querySelector('#t-info td[data-key=shape]')")
        assert text_of(browser, "#t-info td[data-key=shape]") == "[2, 3]"
        wait_for(browser, "document.querySelectorAll('#values tbody tr').length === 6")
        assert browser.execute_script("return document.getElementById('error').hidden")


def test_page_searches_20000_tensors(browser: Any, many: Path, screenshots: Path) -> None:
    with running(many) as server:
        browser.get(server.url)
        wait_for(browser, "document.body.dataset.ready === '1'", timeout=60)
        assert text_of(browser, "#tree-count") == "20,004 tensors"
        # only the rows in view are in the page
        assert browser.execute_script("return document.querySelectorAll('#tree .row').length") < 200
        search = browser.find_element("css selector", "#search")
        started = time.monotonic()
        search.send_keys("block_1234/dense_2/")
        wait_for(browser, "document.getElementById('tree-count').textContent.startsWith('2 of')")
        assert time.monotonic() - started < 5
        assert text_of(browser, "#tree-count") == "2 of 20,004 tensors match"
        browser.find_element("css selector", '#tree .row[data-name="block_1234/dense_2/kernel"]').click()
        wait_for(browser, "document.querySelector('#t-info td[data-key=shape]')")
        assert text_of(browser, "#t-name") == "block_1234/dense_2/kernel"
        assert text_of(browser, "#t-info td[data-key=shape]") == "[3, 4]"
        wait_for(browser, "document.getElementById('heat').dataset.ready === '1'")
        shoot(browser, screenshots / "4-search-20000.png")
        # the optimizer state has its own branch
        search.clear()
        search.send_keys("Adam_1")
        wait_for(browser, "document.querySelectorAll('#tree .row[data-name$=\"/Adam_1\"]').length === 2")
        assert text_of(browser, "#tree-count") == "2 of 20,004 tensors match"
        assert "Optimizer state" in text_of(browser, "#tree")


def test_page_compares_two_checkpoints(browser: Any, diff_server: ViewerServer, screenshots: Path) -> None:
    browser.get(diff_server.url)
    wait_for(browser, "document.body.dataset.ready === '1'")
    browser.find_element("css selector", "#tab-diff").click()
    wait_for(browser, "document.querySelector('#d-table tbody tr')")
    first = browser.execute_script("return document.querySelector('#d-table tbody tr').dataset.name")
    assert first == "layer1/kernel"
    assert "different" in text_of(browser, "#d-table tbody tr")
    assert "2 different" in text_of(browser, "#d-counts")
    wait_for(browser, "document.getElementById('d-hist').dataset.ready === '1'")
    assert inked(browser, "d-hist") > 500
    shoot(browser, screenshots / "5-diff.png")
    browser.find_element("css selector", "#tab-anatomy").click()  # layer1's kernel scaled: a change of full rank
    wait_for(browser, "!document.getElementById('a-verdict').hidden")
    assert text_of(browser, "#a-verdict").startswith("A full-rank change in 1 of the 1 changed matrices")
    assert text_of(browser, "#a-table tr[data-name='layer1/kernel'] td[data-key=rank]") == "2"  # of [2, 5]


def test_page_shows_convolution_channels_and_large_matrices(browser: Any, tmp_path: Path, screenshots: Path) -> None:
    rng = np.random.default_rng(5)
    tensors = {
        "conv1/kernel": rng.normal(size=(3, 3, 16, 32)).astype(np.float32),
        "conv1/bias": np.zeros(32, np.float32),
        "dense/kernel": (np.linspace(-1, 1, 900)[None, :] * np.linspace(0, 2, 1200)[:, None]).astype(np.float32),
    }
    tensors["dense/kernel"][:40, :40] = np.nan
    path = ws.save(tensors, tmp_path / "cnn.ckpt")
    with running(path) as server:
        browser.get(server.url)
        wait_for(browser, "document.body.dataset.ready === '1'")
        browser.find_element("css selector", '#tree .row[data-name="conv1/kernel"]').click()
        wait_for(browser, "!document.getElementById('heat-channel-box').hidden")
        browser.execute_script(
            "const box = document.getElementById('heat-channel'); box.value = '3';"
            "box.dispatchEvent(new Event('change'));"
        )
        wait_for(browser, "document.getElementById('heat-note').textContent.startsWith('output channel 3')")
        wait_for(browser, "document.getElementById('heat').dataset.cells === '16x9'")
        browser.execute_script("document.getElementById('heat-panel').scrollIntoView()")
        shoot(browser, screenshots / "6-conv-channel.png")

        browser.find_element("css selector", '#tree .row[data-name="dense/kernel"]').click()
        wait_for(browser, "document.getElementById('heat-note').textContent.includes('block')")
        note = text_of(browser, "#heat-note")
        assert "each cell is the mean of a" in note and "1,600 NaN or infinite values left out" in note
        assert text_of(browser, "#t-stats td[data-key=nans]") == "1,600"
        browser.execute_script("document.getElementById('hist-panel').scrollIntoView()")
        shoot(browser, screenshots / "7-large-matrix.png")


def test_page_shows_the_spectrum_of_a_matrix(browser: Any, fine_tune: tuple[Path, Path], screenshots: Path) -> None:
    with running(*fine_tune) as server:
        expected = api(server, "spectrum", file=0, name="fc2.weight")["parts"][0]
        browser.get(server.url)
        wait_for(browser, "document.body.dataset.ready === '1'")
        browser.find_element("css selector", '#tree .row[data-name="fc2.weight"]').click()
        # ready, and fc2's figures (the tensor first selected on loading may have been drawn, ready, just before)
        alpha = "Number(document.querySelector('#spec-figures td[data-key=alpha]')?.textContent)"
        wait_for(
            browser,
            f"document.getElementById('spec').dataset.ready === '1' && "
            f"Math.abs({alpha} - {expected['alpha']!r}) <= 1e-5 * {expected['alpha']!r}",
        )
        assert inked(browser, "spec") > 2000  # bars and the fit's line
        stable = float(text_of(browser, "#spec-figures td[data-key='stable rank']"))
        assert stable == pytest.approx(expected["stable_rank"], rel=1e-5)
        assert text_of(browser, "#spec-figures td[data-key='MP spikes']") == str(expected["mp_spikes"])
        assert text_of(browser, "#spec-figures td[data-key=SVD]") == "exact"
        assert "32 eigenvalues" in text_of(browser, "#spec-note")
        browser.execute_script("document.getElementById('spec-panel').scrollIntoView()")
        shoot(browser, screenshots / "8-spectrum.png")

        browser.find_element("css selector", '#tree .row[data-name="attn.qkv.weight"]').click()
        wait_for(browser, "!document.getElementById('spec-part-box').hidden")
        options = browser.execute_script("return [...document.querySelectorAll('#spec-part option')].map(o => o.text)")
        assert options == ["attn.qkv.weight[q]", "attn.qkv.weight[k]", "attn.qkv.weight[v]"]
        value = api(server, "spectrum", file=0, name="attn.qkv.weight")["parts"][2]["alpha"]
        browser.execute_script(
            "const box = document.getElementById('spec-part'); box.value = '2'; box.dispatchEvent(new Event('change'));"
        )
        shown = "Number(document.querySelector('#spec-figures td[data-key=alpha]').textContent)"
        wait_for(browser, f"Math.abs({shown} - {value!r}) <= 1e-5 * {value!r}")  # the v part's alpha

        # The embedding's own answer comes late: meanwhile the page redraws (showView's frame), and must not draw,
        # nor keep as the embedding's, the spectrum of the tensor shown before (it did: CI caught it, now and then).
        tensor_route = server.viewer.routes["/api/tensor"]

        def late(params: dict[str, str]) -> Any:
            if params.get("name") == "embed_tokens.weight":
                time.sleep(1.0)
            return tensor_route(params)

        server.viewer.routes["/api/tensor"] = late
        browser.find_element("css selector", '#tree .row[data-name="embed_tokens.weight"]').click()
        wait_for(browser, "document.getElementById('t-name').textContent === 'embed_tokens.weight'")
        wait_for(browser, "document.getElementById('spec').dataset.ready === 'skipped'")
        assert "an embedding" in text_of(browser, "#spec-note")
        assert browser.execute_script("return document.getElementById('spec-part-box').hidden")
        browser.find_element("css selector", '#tree .row[data-name="fc1.bias"]').click()
        wait_for(browser, "document.querySelector('#t-info td[data-key=shape]')?.textContent === '[64]'")
        assert browser.execute_script("return document.getElementById('spec-panel').hidden")  # a vector: no panel


def test_page_shows_the_anatomy_of_a_fine_tune(browser: Any, fine_tune: tuple[Path, Path], screenshots: Path) -> None:
    with running(*fine_tune) as server:
        browser.get(server.url)
        wait_for(browser, "document.body.dataset.ready === '1'")
        browser.find_element("css selector", "#tab-anatomy").click()
        wait_for(browser, "document.querySelector('#a-table tbody tr')")
        rows = browser.execute_script(
            "return [...document.querySelectorAll('#a-table tbody tr')].map(r => r.dataset.name)"
        )
        assert rows == ["fc1.weight", "fc1.bias"]  # the changed ones, largest change first
        cell = "#a-table tr[data-name='fc1.weight'] td[data-key={}]"
        assert [text_of(browser, cell.format(key)) for key in ("rank", "rank_90", "rank_99")] == ["2", "2", "2"]
        assert text_of(browser, "#a-table tr[data-name='fc1.bias'] td[data-key=rank]") == "–"
        assert browser.execute_script("return document.getElementById('a-verdict').dataset.rank") == "2"
        assert "could have been a rank-2 LoRA" in text_of(browser, "#a-verdict")
        assert "2 of 5 weights changed" in text_of(browser, "#a-counts")
        shoot(browser, screenshots / "9-anatomy.png")

        browser.find_element("css selector", "#a-equal").click()  # the equal weights too
        wait_for(browser, "document.querySelectorAll('#a-table tbody tr').length === 5")
        browser.find_element("css selector", "#a-table th[data-key=relative_change]").click()  # smallest first now
        wait_for(browser, "document.querySelector('#a-table th[data-key=relative_change]').textContent.endsWith('▲')")
        first = browser.execute_script("return document.querySelector('#a-table tbody tr').dataset.name")
        assert first == "fc1.bias"
        browser.find_element("css selector", "#a-table tr[data-name='fc1.weight']").click()  # the tensor, selected
        wait_for(browser, "document.body.dataset.view === 'tensor'")
        wait_for(browser, "document.getElementById('t-name').textContent === 'fc1.weight'")
        wait_for(browser, "document.getElementById('spec').dataset.ready === '1'")


# -- issue 23: the files called by their own names, optimizer state under its variables -----------------------------


def _twins(seed: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The seed twice, in run1/ and run2/: two files of one name."""
    prefixes = []
    for run in ("run1", "run2"):
        shutil.copytree(seed.parent, tmp_path / run)
        prefixes.append(tmp_path / run / seed.name)
    return prefixes[0], prefixes[1]


def test_files_are_labelled_by_their_own_names(seed: Path, changed: Path, tmp_path: Path) -> None:
    first, second = _twins(seed, tmp_path)
    with running(first, second) as server:
        files = api(server, "files")["files"]
    assert [file["label"] for file in files] == [f"run1/{seed.name}", f"run2/{seed.name}"]
    with running(seed, tmp_path / "run2" / seed.name) as server:  # two names told apart by the folders above
        labels = [file["label"] for file in api(server, "files")["files"]]
    assert labels == [f"{seed.parent.name}/{seed.name}", f"run2/{seed.name}"]
    keras = tmp_path / "keras.safetensors"
    ws.save({"x": np.zeros(1, np.float32)}, keras)
    with running(keras, seed) as server:
        assert [file["label"] for file in api(server, "files")["files"]] == ["keras.safetensors", seed.name]


def test_page_picker_names_both_files_and_optimizer_state_sits_under_its_variables(
    browser: Any, seed: Path, tf_checkpoints: dict[str, Path], tmp_path: Path, screenshots: Path
) -> None:
    first, second = _twins(seed, tmp_path)
    with running(first, second) as server:
        browser.get(server.url)
        wait_for(browser, "document.body.dataset.ready === '1'")
        options = browser.execute_script(
            "return [...document.querySelectorAll('#file-select option')].map((option) => option.textContent)"
        )
        assert options == [f"A: run1/{seed.name}", f"B: run2/{seed.name}"]
        assert browser.title == f"weightscope view · run1/{seed.name} vs run2/{seed.name}"
    keras3 = tf_checkpoints["keras3_checkpoint"]  # Keras 3 names a slot after its variable: adam/..._momentum
    with ws.open(keras3) as ckpt:
        owners = {name: ckpt.role(name).owner for name in ckpt if ckpt.role(name).kind == "optimizer"}
    momentum = next(name for name, owner in owners.items() if name.endswith("_momentum") and owner)
    with running(keras3) as server:
        browser.get(server.url)
        wait_for(browser, "document.body.dataset.ready === '1'")
        groups = browser.execute_script(
            "return [...document.querySelectorAll('#tree .row[data-group]')].map((row) => row.dataset.group)"
        )
        assert {owner for owner in owners.values() if owner} <= set(groups)
        row = browser.find_element("css selector", f'#tree .row[data-name="{momentum}"]')
        assert row.text.split()[:2] == ["momentum", "(m)"]
        shoot(browser, screenshots / "8-optimizer-state.png")
        row.click()
        wait_for(browser, "document.querySelector('#t-info td[data-key=\"of variable\"]')")
        assert text_of(browser, '#t-info td[data-key="of variable"]') == owners[momentum]


@pytest.mark.parametrize(
    ("paths", "labels"),
    [
        (["a/model.pt", "b/model.pt"], ["a/model.pt", "b/model.pt"]),
        (["x/a/model.pt", "y/a/model.pt"], ["x/a/model.pt", "y/a/model.pt"]),
        (["s3://bucket/run/model.pt", "run/model.pt"], ["bucket/run/model.pt", "run/model.pt"]),
        (["out/", "model.pt"], ["out", "model.pt"]),
        (["same.pt", "same.pt"], ["same.pt", "same.pt"]),
    ],
)
def test_file_labels_take_as_many_folders_as_tell_files_apart(paths: list[str], labels: list[str]) -> None:
    assert analyses.file_labels(paths) == labels
