"""The viewer's server: the page's three static files and a JSON API, on 127.0.0.1 only.

Security, as Jupyter does it: the URL printed carries a random token
(``secrets.token_urlsafe``), which the page (``/?token=...``) and every API request
(``?token=...`` or the header ``X-Weightscope-Token``) must carry, else 403. The first
answer to a request with the token sets a cookie holding it (``HttpOnly``,
``SameSite=Strict``, ``Path=/``, named for the port), accepted in place of the token, and
the page drops the token from its address (``history.replaceState``), so it stays out of
the address bar, the history and bookmarks. The browser is not given the token on its
command line (which other local users can read in ``/proc``): it is opened on a file only
the user can read (0600, in a private temporary directory) whose page redirects to the
address with the token, and which is removed when the server stops. A request
whose ``Host`` header is not ``127.0.0.1:PORT`` or ``localhost:PORT`` is refused (403),
so that a web page whose name was rebound to 127.0.0.1 cannot read the answers; the
request's path is matched exactly (never decoded, never joined to a directory) against
the static files and the API routes, anything else is 404; and the API reads only the
checkpoints the server was started with, called file 0 and file 1.

The API (GET; every answer JSON; errors ``{"error": message}`` with status 400, 403, 404
or 422):

``/api/files``
    ``{"files": [{"file", "label", "path", "format", "tensors", "metadata"}], "compare": bool}``; ``label``
    is the file's own name, with as many of its folders as tell the two files apart (``file_labels``).
``/api/tensors?file=F``
    ``{"file", "tensors": [{"name", "dtype", "shape", "size", "nbytes", "kind", "role",
    "layer", "owner"}]}`` in the checkpoint's order; ``kind`` is ``parameter``,
    ``optimizer`` (optimizer state; ``owner`` is its variable, ``role`` its slot) or
    ``bookkeeping``; ``layer`` is the layer of ``Checkpoint.layers()`` it belongs to.
``/api/summary?file=F``
    ``weightscope.summary.summarize(ckpt).to_json()``.
``/api/tensor?file=F&name=N``
    The tensor's row as above plus ``key``, ``stats`` (``tensor_stats(...).to_json()``),
    ``plottable``, and ``channels``: for a convolution kernel ``{"axis", "count",
    "layout", "matrix"}`` (the output-channel axis, how many, whose layout, and the
    [input channels, kernel positions] matrix one channel is drawn as), else null.
``/api/histogram?file=F&name=N&bins=B[&compare=1[&other=M]]``
    ``weightscope.plot.histogram`` of the finite values: ``{"file", "name", "bins",
    "edges", "counts", "count", "nans", "infs"}``; with ``compare=1`` also ``"compare":
    {"file": 1, "name", "counts", "count", "nans", "infs"}`` for tensor ``M`` (default
    ``N``) of file 1, counted with the same edges (``bin_edges`` of both ranges).
``/api/heatmap?file=F&name=N&rows=R&cols=C[&channel=K]``
    ``weightscope.plot.block_means`` of the tensor as a matrix (or of output channel K of
    a convolution kernel) in at most R×C cells: ``{"file", "name", "channel", "shape",
    "matrix", "block", "grid", "downsampled", "left_out", "min", "max", "means"}``; each
    cell is the mean of a ``block`` [rows, columns] of values; "NaN" where none is finite.
``/api/values?file=F&name=N&offset=O&limit=L``
    ``{"file", "name", "dtype", "shape", "offset", "limit", "total", "values"}``: up to L
    (at most 1000) values in C order from flat index O, as ``output.json_values`` gives them.
``/api/diff[?optimizer=1]``
    ``checkpoint_diff(file 0, file 1).to_json()`` with ``tensors`` ordered by change:
    different ones by relative L2 change, largest first, then shape and dtype
    mismatches, then equal ones.
``/api/spectrum?file=F&name=N``
    ``weightscope.viewer.analyses.spectrum_document``: ``{"file", "name", "shape",
    "skipped", "parts"}``; a tensor without a spectrum (a vector, an embedding, NaN...)
    answers 200 with ``skipped`` its reason and no parts; else a part per matrix (three for
    a fused QKV): ``Spectrum.to_json()`` (``method`` "exact", or "randomized" for a tensor of
    more than 4 Mi values, with its ``error_bound``), ``esd`` (``{"edges", "density",
    "eigenvalues"}``: the eigenvalues on 60 logarithmic bins) and ``fit`` (the power law's
    line, ``{"x": [xmin, largest], "density"}``, or null).
``/api/anatomy``
    ``anatomy(file 0, file 1).to_json()`` (what file 1 changed in file 0, ``diff
    --anatomy``'s document) with ``layers`` ordered by relative change, largest first.

Large tensors are summarised chunk by chunk (``weightscope.analysis.chunks``), so an
answer takes a few chunks' worth of memory whatever the tensor's size.
"""

from __future__ import annotations

import contextlib
import hmac
import html
import http.cookies
import http.server
import math
import os
import secrets
import shutil
import sys
import tempfile
import threading
import traceback
import webbrowser
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np

import weightscope.output
from weightscope.analysis import TensorStats, checkpoint_diff, chunks, diff_order, tensor_stats
from weightscope.atomic import interruptible
from weightscope.checkpoint import Checkpoint
from weightscope.conventions import channel_order
from weightscope.errors import TensorNotFoundError, UsageError, WeightscopeError, reason
from weightscope.histograms import DEFAULT_BINS, FiniteRange, bin_edges, check_plottable, finite_range, histogram
from weightscope.output import dumps_json, json_values
from weightscope.plot import MAX_BINS, block_means
from weightscope.summary import summarize
from weightscope.viewer.analyses import anatomy_document, file_labels, spectrum_document

TOKEN_HEADER = "X-Weightscope-Token"
MAX_CELLS = 2048  # heatmap rows and columns, each
MAX_VALUES = 1000
DEFAULT_VALUES = 100
_RECENT = 64  # statistics and value ranges of this many tensors are kept

# The only paths served besides the API: path -> (file in the package's static/, content type).
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
_PAGES = {"index.html"}  # static files that need the token: the page, not its script and style

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


class ApiError(Exception):
    """An answer other than 200: its HTTP status and what went wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def static_file(name: str) -> bytes:
    """One of the page's files, from inside the installed package."""
    return resources.files("weightscope.viewer").joinpath("static", name).read_bytes()


def flat_values(array: np.ndarray, offset: int, limit: int) -> np.ndarray:
    """Values ``offset`` to ``offset + limit`` in C order, copying no more than a chunk of the tensor."""
    if array.ndim == 0 or array.flags.c_contiguous:
        return array.reshape(-1)[offset : offset + limit]
    pieces, position = [], 0
    for chunk in chunks(array):
        end = position + chunk.size
        if end > offset:
            pieces.append(chunk[max(0, offset - position) : offset + limit - position].copy())
        if end >= offset + limit:
            break
        position = end
    return np.concatenate(pieces) if pieces else np.empty(0, array.dtype)


class Viewer:
    """The API over the opened checkpoints: file 0 and, to compare, file 1."""

    def __init__(self, checkpoints: Sequence[Checkpoint]) -> None:
        if not 1 <= len(checkpoints) <= 2:
            raise UsageError("the viewer shows one checkpoint, or compares two")
        self.checkpoints = list(checkpoints)
        self._once_lock = threading.Lock()
        self._once: dict[tuple[Any, ...], Any] = {}
        self._once_locks: dict[tuple[Any, ...], threading.Lock] = {}
        self._recent_lock = threading.Lock()
        self._recent: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self.routes: dict[str, Callable[[dict[str, str]], Any]] = {
            "/api/files": self.files,
            "/api/tensors": self.tensors,
            "/api/summary": self.summary,
            "/api/tensor": self.tensor,
            "/api/histogram": self.histogram,
            "/api/heatmap": self.heatmap,
            "/api/values": self.values,
            "/api/diff": self.diff,
            "/api/spectrum": self.spectrum,
            "/api/anatomy": self.anatomy,
        }

    # -- caches ------------------------------------------------------------------------
    def _computed_once(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        """What ``compute`` gives, computed on first use (listings, summaries, spectra, the diff), once: a request
        for the same key waits for it, one for another key does not (a spectrum can take seconds)."""
        with self._once_lock:
            if key in self._once:
                return self._once[key]
            lock = self._once_locks.setdefault(key, threading.Lock())
        with lock:
            with self._once_lock:
                if key in self._once:
                    return self._once[key]
            value = compute()
            with self._once_lock:
                self._once[key] = value
            return value

    def _recently(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        """What ``compute`` gives, kept for the last few tensors looked at (stats, value ranges)."""
        with self._recent_lock:
            if key in self._recent:
                self._recent.move_to_end(key)
                return self._recent[key]
        value = compute()
        with self._recent_lock:
            self._recent[key] = value
            while len(self._recent) > _RECENT:
                self._recent.popitem(last=False)
        return value

    # -- arguments -----------------------------------------------------------------------
    def _file(self, params: dict[str, str], key: str = "file", default: str | None = "0") -> int:
        text = params.get(key, default)
        if text not in [str(index) for index in range(len(self.checkpoints))]:
            files = "file 0 and file 1" if len(self.checkpoints) > 1 else "file 0"
            raise ApiError(404, f"no file {text!r}: this viewer has {files}")
        return int(text)

    def _name(self, ckpt: Checkpoint, params: dict[str, str], key: str = "name") -> str:
        name = params.get(key)
        if not name:
            raise ApiError(400, f"give the tensor's {key}")
        return ckpt.resolve(name)  # TensorNotFoundError: 404

    @staticmethod
    def _int(params: dict[str, str], key: str, default: int | None, low: int, high: int) -> int:
        text = params.get(key)
        if text is None or text == "":
            if default is None:
                raise ApiError(400, f"give {key}")
            return default
        try:
            value = int(text)
        except ValueError:
            raise ApiError(400, f"{key} must be a whole number, not {text!r}") from None
        if not low <= value <= high:
            raise ApiError(400, f"{key} must be from {low:,} to {high:,}, not {value:,}")
        return value

    def _stats(self, file: int, name: str) -> TensorStats:
        ckpt = self.checkpoints[file]
        return self._recently(("stats", file, name), lambda: tensor_stats(name, ckpt[name]))

    def _range(self, file: int, name: str) -> FiniteRange:
        ckpt = self.checkpoints[file]
        return self._recently(("range", file, name), lambda: finite_range(ckpt[name]))

    def _plottable(self, ckpt: Checkpoint, name: str) -> None:
        info = ckpt.info(name)
        check_plottable(name, info.dtype, info.shape)  # UsageError: 400

    # -- the routes ------------------------------------------------------------------------
    def files(self, params: dict[str, str]) -> dict[str, Any]:
        labels = file_labels([str(ckpt.path) for ckpt in self.checkpoints])
        return {
            "files": [
                {
                    "file": index,
                    "label": labels[index],
                    "path": str(ckpt.path),
                    "format": ckpt.format,
                    "tensors": len(ckpt),
                    "metadata": ckpt.metadata,
                }
                for index, ckpt in enumerate(self.checkpoints)
            ],
            "compare": len(self.checkpoints) > 1,
        }

    def _rows(self, file: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Every tensor's row, and where each name is in the list."""

        def compute() -> tuple[list[dict[str, Any]], dict[str, int]]:
            ckpt = self.checkpoints[file]
            layer_of: dict[str, str] = {}
            for layer in ckpt.layers().values():
                for info in layer.parameters.values():
                    layer_of[info.name] = layer.name
                for slots in layer.optimizer_state.values():
                    for info in slots.values():
                        layer_of[info.name] = layer.name
            rows: list[dict[str, Any]] = []
            for info in ckpt.infos():
                role = ckpt.role(info.name)
                rows.append(
                    {
                        "name": info.name,
                        "dtype": info.type_name,
                        "shape": list(info.shape),
                        "size": info.size,
                        "nbytes": info.nbytes,
                        "kind": role.kind,
                        "role": role.role,
                        "layer": layer_of.get(info.name),
                        "owner": role.owner,
                    }
                )
            return rows, {row["name"]: index for index, row in enumerate(rows)}

        return self._computed_once(("rows", file), compute)

    def tensors(self, params: dict[str, str]) -> dict[str, Any]:
        file = self._file(params)
        return {"file": file, "tensors": self._rows(file)[0]}

    def summary(self, params: dict[str, str]) -> dict[str, Any]:
        file = self._file(params)
        return self._computed_once(("summary", file), lambda: summarize(self.checkpoints[file]).to_json())

    def tensor(self, params: dict[str, str]) -> dict[str, Any]:
        file = self._file(params)
        ckpt = self.checkpoints[file]
        name = self._name(ckpt, params)
        rows, where = self._rows(file)
        document = dict(rows[where[name]])
        info = ckpt.info(name)
        document["key"] = info.key
        document["stats"] = self._stats(file, name).to_json()
        try:
            self._plottable(ckpt, name)
            document["plottable"] = True
        except UsageError:
            document["plottable"] = False
        channels = None
        order = channel_order(name, info.shape, document["role"])
        if order is not None:
            channels = {
                "axis": order[0],
                "count": info.shape[order[0]],
                "layout": "pytorch" if order == tuple(range(len(order))) else "tensorflow",
                "matrix": [info.shape[order[1]], math.prod(info.shape[axis] for axis in order[2:])],
            }
        document["channels"] = channels
        return document

    def histogram(self, params: dict[str, str]) -> dict[str, Any]:
        file = self._file(params)
        ckpt = self.checkpoints[file]
        name = self._name(ckpt, params)
        bins = self._int(params, "bins", DEFAULT_BINS, 1, MAX_BINS)
        self._plottable(ckpt, name)
        tensors = [(file, name)]
        if params.get("compare") == "1":
            if len(self.checkpoints) < 2:
                raise ApiError(404, "no file 1 to compare with")
            other_ckpt = self.checkpoints[1]
            other = other_ckpt.resolve(params.get("other") or name)
            self._plottable(other_ckpt, other)
            tensors.append((1, other))
        ranges = [self._range(index, tensor) for index, tensor in tensors]
        edges = bin_edges(ranges, bins)
        series = []
        for (index, tensor), value_range in zip(tensors, ranges, strict=True):
            result = histogram(self.checkpoints[index][tensor], edges=edges, value_range=value_range)
            series.append(
                {
                    "file": index,
                    "name": tensor,
                    "counts": result.counts.tolist(),
                    "count": result.count,
                    "nans": result.nans,
                    "infs": result.infs,
                }
            )
        document = {**series[0], "bins": bins, "edges": edges.tolist()}
        if len(series) > 1:
            document["compare"] = series[1]
        return document

    def heatmap(self, params: dict[str, str]) -> dict[str, Any]:
        file = self._file(params)
        ckpt = self.checkpoints[file]
        name = self._name(ckpt, params)
        cells = (self._int(params, "rows", 256, 1, MAX_CELLS), self._int(params, "cols", 256, 1, MAX_CELLS))
        self._plottable(ckpt, name)
        array = ckpt[name]
        channel = None
        if params.get("channel", "") != "":
            order = channel_order(name, array.shape, ckpt.role(name).role)
            if order is None:
                raise ApiError(400, f"'{name}' is not a convolution kernel: it has no output channels to show")
            channel = self._int(params, "channel", None, 0, array.shape[order[0]] - 1)
            array = np.transpose(array, order)[channel]  # a view: [in, ..spatial]
        result = block_means(array, cells)
        finite = result.means[np.isfinite(result.means)]
        return {
            "file": file,
            "name": name,
            "channel": channel,
            "shape": list(array.shape),
            "matrix": list(result.matrix),
            "block": list(result.block),
            "grid": list(result.means.shape),
            "downsampled": result.downsampled,
            "left_out": result.left_out,
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
            "means": json_values(result.means),
        }

    def values(self, params: dict[str, str]) -> dict[str, Any]:
        file = self._file(params)
        ckpt = self.checkpoints[file]
        name = self._name(ckpt, params)
        info = ckpt.info(name)
        offset = self._int(params, "offset", 0, 0, max(0, info.size - 1))
        limit = self._int(params, "limit", DEFAULT_VALUES, 1, MAX_VALUES)
        values = json_values(flat_values(ckpt[name], offset, limit))
        return {
            "file": file,
            "name": name,
            "dtype": info.type_name,
            "shape": list(info.shape),
            "offset": offset,
            "limit": limit,
            "total": info.size,
            "values": values,
        }

    def _compared(self, what: str) -> None:
        if len(self.checkpoints) < 2:
            raise ApiError(404, f"{what} needs two files: weightscope view PATH PATH2")

    def diff(self, params: dict[str, str]) -> dict[str, Any]:
        self._compared("the diff")
        include_optimizer = params.get("optimizer") == "1"

        def compute() -> dict[str, Any]:
            result = checkpoint_diff(self.checkpoints[0], self.checkpoints[1], include_optimizer=include_optimizer)
            result.tensors = sorted(result.tensors, key=diff_order)
            document = result.to_json()
            document["include_optimizer"] = include_optimizer
            return document

        return self._computed_once(("diff", include_optimizer), compute)

    def spectrum(self, params: dict[str, str]) -> dict[str, Any]:
        file = self._file(params)
        ckpt = self.checkpoints[file]
        name = self._name(ckpt, params)
        return self._computed_once(("spectrum", file, name), lambda: {"file": file, **spectrum_document(ckpt, name)})

    def anatomy(self, params: dict[str, str]) -> dict[str, Any]:
        self._compared("the anatomy")
        return self._computed_once(("anatomy",), lambda: anatomy_document(*self.checkpoints))


class _Handler(http.server.BaseHTTPRequestHandler):
    server: ViewerServer
    server_version = "weightscope-view"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        status, content_type, body, headers = self.server.answer(
            self.path,
            self.headers.get_all("Host") or [],
            self.headers.get(TOKEN_HEADER),
            self.headers.get_all("Cookie") or [],
        )
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for header, value in {**_SECURITY_HEADERS, **headers}.items():
            self.send_header(header, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request lines carry the token."""


class ViewerServer(http.server.ThreadingHTTPServer):
    """The viewer's HTTP server on 127.0.0.1:``port`` (0: a free port), with a fresh token."""

    daemon_threads = True

    def __init__(self, checkpoints: Sequence[Checkpoint], port: int = 0, token: str | None = None) -> None:
        self.viewer = Viewer(checkpoints)
        self.token = token or secrets.token_urlsafe(32)
        try:
            super().__init__(("127.0.0.1", port), _Handler)
        except OSError as error:  # a port in use, or below 1024 without the right
            raise UsageError(
                f"cannot listen on 127.0.0.1 port {port}: {error.strerror or reason(error)}; --port 0 picks a free port"
            ) from None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    @property
    def cookie_name(self) -> str:
        """The cookie that stands for the token: one per port, as browsers keep cookies per host, not port."""
        return f"weightscope-token-{self.port}"

    def _token_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def _cookie_token(self, cookies: Sequence[str]) -> str | None:
        """The token the request's cookie holds, if it has this server's cookie."""
        for header in cookies:
            jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
            with contextlib.suppress(http.cookies.CookieError):
                jar.load(header)
                if self.cookie_name in jar:
                    return jar[self.cookie_name].value
        return None

    def answer(
        self, target: str, hosts: list[str], header_token: str | None, cookies: Sequence[str] = ()
    ) -> tuple[int, str, bytes, dict[str, str]]:
        """(status, content type, body, further headers) for a GET of ``target`` (the request line's
        path and query), given its ``Host``, token and ``Cookie`` headers."""
        if len(hosts) != 1:
            return _text(400, "one Host header, please")
        if hosts[0].lower() not in (f"127.0.0.1:{self.port}", f"localhost:{self.port}"):
            return _text(403, "this server answers only to 127.0.0.1 and localhost")
        if not target.startswith("/"):
            return _text(404, "not found")
        path, _, query = target.partition("?")
        try:
            parsed = parse_qs(query, keep_blank_values=True, max_num_fields=32)
            params = {key: values[-1] for key, values in parsed.items()}
        except ValueError:
            return _text(400, "too many query parameters")
        token_given = self._token_ok(header_token) or self._token_ok(params.pop("token", None))
        cookie_ok = self._token_ok(self._cookie_token(cookies))
        token_ok = token_given or cookie_ok
        if path in STATIC:
            name, content_type = STATIC[path]
            if name in _PAGES and not token_ok:
                return _text(403, "open the address weightscope view printed: it carries the token")
            headers = {}
            if name in _PAGES and not cookie_ok:  # the page, opened with the token: a cookie from now on
                headers["Set-Cookie"] = f"{self.cookie_name}={self.token}; HttpOnly; SameSite=Strict; Path=/"
            return 200, content_type, static_file(name), headers
        route = self.viewer.routes.get(path)
        if route is None:
            return _text(404, "not found")
        if not token_ok:
            return _json(403, {"error": "a missing or wrong token"})
        try:
            return _json(200, route(params))
        except ApiError as error:
            return _json(error.status, {"error": str(error)})
        except TensorNotFoundError as error:
            return _json(404, {"error": str(error)})
        except UsageError as error:
            return _json(400, {"error": str(error)})
        except WeightscopeError as error:
            return _json(422, {"error": str(error)})
        except Exception as error:
            # A bug: its stack, whose messages may quote the file, escaped as the command line writes.
            sys.stderr.write(weightscope.output.terminal_text(traceback.format_exc()))
            return _json(500, {"error": f"{type(error).__name__}: {error}"})


def _text(status: int, message: str) -> tuple[int, str, bytes, dict[str, str]]:
    return status, "text/plain; charset=utf-8", (message + "\n").encode(), {}


def _json(status: int, document: Any) -> tuple[int, str, bytes, dict[str, str]]:
    return status, "application/json", dumps_json(document, indent=None).encode(), {}


def make_server(checkpoints: Sequence[Checkpoint], port: int = 0, token: str | None = None) -> ViewerServer:
    """A viewer server bound to 127.0.0.1:``port`` (0: any free port); run it with ``serve_forever()``."""
    return ViewerServer(checkpoints, port, token)


def serve(
    checkpoints: Sequence[Checkpoint],
    port: int = 0,
    *,
    open_browser: bool = True,
    echo: Callable[[str], None] = print,
) -> None:
    """Serve the viewer until Ctrl-C: print its URL and, unless told not to, open it in the browser."""
    with make_server(checkpoints, port) as server:
        shown = " against ".join(str(ckpt.path) for ckpt in checkpoints)
        echo(f"weightscope view: {shown}")
        echo(f"open {server.url}")
        echo("(Ctrl-C stops the server)")
        with contextlib.ExitStack() as stack:
            stack.enter_context(interruptible())  # SIGTERM and SIGHUP stop it as Ctrl-C does: the file goes too
            try:  # a stop while the browser starts stops the server as cleanly as one while it serves
                if open_browser:
                    page = stack.enter_context(redirect_file(server.url))
                    with contextlib.suppress(webbrowser.Error):
                        webbrowser.open(page.as_uri())
                server.serve_forever()
            except KeyboardInterrupt:
                echo("stopped")


_REDIRECT = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="0;url={url}">
<title>weightscope view</title>
</head>
<body>
<p>This page should take you to weightscope view. If it does not, <a href="{url}">open weightscope view</a>.</p>
</body>
</html>
"""


@contextlib.contextmanager
def redirect_file(url: str) -> Iterator[Path]:
    """A page that redirects to ``url``, in a file only this user can read, removed on the way out.

    Handed to the browser instead of ``url`` itself, as Jupyter does: a browser's command
    line can be read by every local user (``/proc/PID/cmdline``), and ``url`` carries the
    token. The file is created 0600 in a new directory that is 0700 (``mkdtemp``).
    """
    directory = Path(tempfile.mkdtemp(prefix="weightscope-view-"))
    try:
        page = directory / "open.html"
        descriptor = os.open(page, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(_REDIRECT.format(url=html.escape(url, quote=True)))
        yield page
    finally:
        shutil.rmtree(directory, ignore_errors=True)
