"""A loopback Hugging Face Hub: the parts of the Hub's HTTP API the real ``huggingface_hub`` client uses to read.

``HfFileSystem`` (``hf://ORG/MODEL[@REVISION]/path``) and ``hf_hub_download`` make these
requests (read from huggingface_hub 2.4's ``hf_file_system.py``, ``hf_api.py``,
``file_download.py``, ``utils/_http.py``, ``utils/_pagination.py``), all answered here for
model repositories:

- ``GET /api/models/{id}`` and ``/api/models/{id}/revision/{rev}`` (the revision URL-quoted):
  the repository's info (``id``, ``sha``, ``siblings``); a missing repository is 404 with
  ``X-Error-Code: RepoNotFound``, a missing revision ``RevisionNotFound``.
- ``GET /api/models/{id}/tree/{rev}[/{path}]?recursive=&expand=`` (``rev`` and ``path`` each
  one quoted segment): the entries of a folder (every descendant, flat, when recursive), in
  pages of ``page_size`` linked by ``Link: <...>; rel="next"``; a path that is no folder is
  404 ``EntryNotFound``.
- ``POST /api/models/{id}/paths-info/{rev}`` (form ``paths=...&expand=...``): the entries of
  the paths that exist.
- ``HEAD`` and ``GET /{id}/resolve/{rev}/{path}``: the file, ``Range: bytes=a-b`` answered
  206 with exactly those bytes (test_remote's range handler); headers ``X-Repo-Commit``,
  ``ETag`` (the git blob id), and for LFS files ``X-Linked-Etag`` (the sha256) and
  ``X-Linked-Size``; a missing file is 404 ``EntryNotFound``. An LFS file is answered, as
  on the Hub, by a 302 (with those headers) to its CDN URL, here ``/{id}/cdn/{commit}/{path}``
  on a second port, another origin (the client sends it no token, as to the real CDN, whose
  URLs are signed), which the client follows with its Range header (``lfs_redirects=False``
  serves it directly).

Entries are the Hub's: ``{"type": "file", "oid": git blob sha1, "size", "path", "lfs":
{"oid": sha256, "size", "pointerSize"}}`` (weights files are LFS files, as on the Hub) and
``{"type": "directory", "oid", "path"}``. No ``X-Xet-*`` header is ever sent (the client
would switch to the Xet protocol). A repository added with a token answers only requests
carrying ``Authorization: Bearer TOKEN`` (others get 401 ``RepoNotFound``, as the Hub does
for private repositories).

Each ``Hub`` counts what it sent: body bytes per file (``file_bytes``, keyed
``"ORG/MODEL/path"``), bytes of API answers (``api_bytes``), every request (``requests``)
and every ``Authorization`` header received (``authorizations``; by the CDN: ``cdn_authorizations``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import threading
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_remote import _RangeHandler, _Server

# Files the Hub's default .gitattributes sends to LFS (the weights formats among them).
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".gguf", ".onnx", ".npz", ".npy", ".msgpack")
_POINTER_SIZE = 134  # an LFS pointer file's length, as the Hub reports it (its exact value is not used)


def blob_id(data: bytes) -> str:
    """Git's object id of a blob (what the Hub calls a file's ``oid``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    revisions: dict[str, Path]  # a revision's name ("main", "refs/pr/1") -> the folder it holds
    token: str | None = None


@dataclass
class Hub:
    """Repositories served, and the counts of what was sent."""

    page_size: int = 1000
    lfs_redirects: bool = True  # LFS files' resolve answered 302 to the CDN, as the Hub does
    cdn: str = ""  # the CDN's address: this server's handler on another port (another origin)
    repos: dict[str, Repo] = field(default_factory=dict)
    file_bytes: Counter[str] = field(default_factory=Counter)
    api_bytes: int = 0
    requests: list[str] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)
    cdn_authorizations: list[str] = field(default_factory=list)  # tokens sent to the CDN: none should be
    _entries: dict[tuple[Path, int, int], dict[str, Any]] = field(default_factory=dict)

    def add(self, repo_id: str, folder: Path, revision: str = "main", *, token: str | None = None) -> str:
        """Serve ``folder`` as ``repo_id`` at ``revision``; the commit id it is served at."""
        repo = self.repos.setdefault(repo_id, Repo({}))
        repo.revisions[revision] = folder
        repo.token = token or repo.token
        return self.commit(repo_id, revision)

    @staticmethod
    def commit(repo_id: str, revision: str) -> str:
        return hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()

    @property
    def sent(self) -> int:
        """File bytes sent, all files together."""
        return sum(self.file_bytes.values())

    def reset(self) -> None:
        self.file_bytes.clear()
        self.api_bytes = 0
        self.requests.clear()
        self.authorizations.clear()
        self.cdn_authorizations.clear()

    # -- what a request names ------------------------------------------------------------------
    def revision(self, repo_id: str, text: str) -> tuple[str, Path, str] | None:
        """The revision ``text`` starts with (quoted or not, or a commit id), its folder, and the rest of ``text``."""
        repo = self.repos[repo_id]
        for name, folder in sorted(repo.revisions.items(), key=lambda item: -len(item[0])):
            for spelled in (urllib.parse.quote(name, safe=""), name, self.commit(repo_id, name)):
                if text == spelled or text.startswith(spelled + "/"):
                    return self.commit(repo_id, name), folder, text[len(spelled) + 1 :]
        return None

    def entry(self, folder: Path, path: str) -> dict[str, Any]:
        """The Hub's tree entry of ``folder / path``."""
        file = folder / path
        if file.is_dir():
            return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "path": path}
        status = file.stat()
        key = (file, status.st_size, status.st_mtime_ns)
        if key not in self._entries:
            data = file.read_bytes()
            entry: dict[str, Any] = {"type": "file", "oid": blob_id(data), "size": len(data), "path": path}
            if file.suffix in LFS_SUFFIXES:
                digest = hashlib.sha256(data).hexdigest()
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{digest}\nsize {len(data)}\n"
                entry["oid"] = blob_id(pointer.encode())
                entry["lfs"] = {"oid": digest, "size": len(data), "pointerSize": _POINTER_SIZE}
            self._entries[key] = entry
        return self._entries[key]

    def tree(self, folder: Path, path: str, recursive: bool) -> list[dict[str, Any]] | None:
        """The entries under ``path`` (a folder; None if it is not one), directories first, then by path."""
        base = folder / path if path else folder
        if not base.is_dir():
            return None
        found = base.rglob("*") if recursive else base.iterdir()
        paths = sorted((not p.is_dir(), p.relative_to(folder).as_posix()) for p in found)
        return [self.entry(folder, p) for _, p in paths]


class _HubHandler(_RangeHandler):
    """The Hub's routes; file bodies are sent by the range handler, with the Hub's headers added."""

    hub: Hub

    def __init__(self, *args: Any, hub: Hub, **kwargs: Any) -> None:
        self.hub = hub
        self.hub_headers: dict[str, str] = {}
        self.counted_as = ""
        super().__init__(*args, **kwargs)

    def end_headers(self) -> None:
        for name, value in self.hub_headers.items():
            self.send_header(name, value)
        super().end_headers()

    def count(self, file: Path, sent: int) -> None:
        super().count(file, sent)
        self.hub.file_bytes[self.counted_as] += sent

    # -- access ---------------------------------------------------------------------------------
    def _repo(self, repo_id: str) -> Repo | None:
        """The repository, if it exists and this request may see it (else the error headers are set)."""
        authorization = self.headers.get("Authorization")
        if authorization is not None:
            self.hub.authorizations.append(authorization)
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.token is not None and authorization != f"Bearer {repo.token}"):
            self.hub_headers = {"X-Error-Code": "RepoNotFound"}
            return None
        return repo

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.hub_headers = headers or {}
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.hub.api_bytes += len(data)
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, code: str, status: int = 404) -> None:
        status = 401 if code == "RepoNotFound" and self.headers.get("Authorization") is None else status
        self._json(status, {"error": code}, {"X-Error-Code": code})

    # -- resolve: the range handler's GET and HEAD, of the file the URL names ------------------
    def _located(self) -> tuple[str, str, Path, str] | None:
        """The repository, commit, folder and path of the file a ``resolve`` (or CDN) URL names; None
        (the error headers set) if there is none."""
        parts = urllib.parse.urlsplit(self.path).path.split("/", 4)  # "", ns, name, "resolve" or "cdn", rest
        self.hub_headers = {"X-Error-Code": "EntryNotFound"}
        if len(parts) < 5 or parts[3] not in ("resolve", "cdn"):
            return None
        repo_id = f"{parts[1]}/{parts[2]}"
        if parts[3] == "cdn" and "Authorization" in self.headers:
            self.hub.cdn_authorizations.append(self.headers["Authorization"])
        if parts[3] == "resolve" and self._repo(repo_id) is None:  # the CDN's URLs are signed: no token asked
            return None
        found = self.hub.revision(repo_id, parts[4]) if repo_id in self.hub.repos else None
        if found is None:
            self.hub_headers = {"X-Error-Code": "RevisionNotFound"}
            return None
        commit, folder, path = found
        path = urllib.parse.unquote(path)
        if not path or ".." in path.split("/") or not (folder / path).is_file():
            return None
        return repo_id, commit, folder, path

    def _target(self) -> tuple[str, Path | None]:
        located = self._located()
        if located is None:
            return "", None
        repo_id, commit, folder, path = located
        entry = self.hub.entry(folder, path)
        self.hub_headers = {"ETag": f'"{entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]}"'}
        if "/resolve/" in self.path:
            self.hub_headers = self._file_headers(commit, entry)
        self.counted_as = f"{repo_id}/{path}"
        return "", folder / path

    @staticmethod
    def _file_headers(commit: str, entry: dict[str, Any]) -> dict[str, str]:
        headers = {"X-Repo-Commit": commit, "ETag": f'"{entry["oid"]}"'}
        if "lfs" in entry:
            headers |= {"X-Linked-Etag": f'"{entry["lfs"]["oid"]}"', "X-Linked-Size": str(entry["size"])}
        return headers

    def _redirected(self) -> bool:
        """An LFS file's ``resolve`` answered as the Hub does: 302 to the CDN (here, this server's ``cdn``
        route), with the file's headers; the client follows it, its Range header with it."""
        if not self.hub.lfs_redirects or "/resolve/" not in self.path:
            return False
        located = self._located()
        if located is None:
            return False
        repo_id, commit, folder, path = located
        entry = self.hub.entry(folder, path)
        if "lfs" not in entry:
            return False
        self.hub_headers = self._file_headers(commit, entry)
        self.send_response(302)
        self.send_header("Location", f"{self.hub.cdn}/{repo_id}/cdn/{commit}/{urllib.parse.quote(path)}")
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def do_GET(self) -> None:  # noqa: N802 (http.server's names)
        self.hub.requests.append(f"{self.command} {self.path}")
        if self.path.startswith("/api/"):
            self._api()
        elif not self._redirected():
            super().do_GET()

    def do_HEAD(self) -> None:  # noqa: N802
        self.hub.requests.append(f"{self.command} {self.path}")
        if self.path.startswith("/api/"):
            self._api()
        elif not self._redirected():
            super().do_HEAD()

    def do_POST(self) -> None:  # noqa: N802
        self.hub.requests.append(f"{self.command} {self.path}")
        self._api()

    # -- the API --------------------------------------------------------------------------------
    def _api(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/api/agent-harnesses":  # the client's once-a-day fetch of AI agents' names (User-Agent)
            self._json(200, {"standardEnvVars": [], "harnesses": {}})
            return
        parts = url.path.split("/", 6)  # "", "api", "models", ns, name, route, rest
        if len(parts) < 5 or parts[2] != "models":
            self._error("NotFound")
            return
        repo_id = f"{parts[3]}/{parts[4]}"
        repo = self._repo(repo_id)
        if repo is None:
            self._error("RepoNotFound")
            return
        route, rest = (parts[5], parts[6]) if len(parts) == 7 else ("", "main")
        found = self.hub.revision(repo_id, rest)
        if route not in ("", "revision", "tree", "paths-info") or found is None:
            self._error("RevisionNotFound" if found is None else "NotFound")
            return
        commit, folder, path = found
        if route in ("", "revision"):
            siblings = [{"rfilename": entry["path"]} for entry in self.hub.tree(folder, "", True) or ()]
            self._json(200, {"id": repo_id, "sha": commit, "private": repo.token is not None, "siblings": siblings})
        elif route == "tree":
            self._tree(folder, urllib.parse.unquote(path), query)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            paths = [p for p in form.get("paths", []) if (folder / p).exists() and ".." not in p.split("/")]
            self._json(200, [self.hub.entry(folder, p) for p in paths])

    def _tree(self, folder: Path, path: str, query: dict[str, list[str]]) -> None:
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        entries = None if ".." in path.split("/") else self.hub.tree(folder, path, recursive)
        if entries is None:
            self._error("EntryNotFound")
            return
        cursor = int(query.get("cursor", ["0"])[0])
        page = entries[cursor : cursor + self.hub.page_size]
        headers = {}
        if cursor + self.hub.page_size < len(entries):
            host, port = self.server.server_address[:2]
            following = urllib.parse.urlencode({**{k: v[0] for k, v in query.items()}, "cursor": cursor + len(page)})
            path_part = urllib.parse.urlsplit(self.path).path
            headers["Link"] = f'<http://{host}:{port}{path_part}?{following}>; rel="next"'
        self._json(200, page, headers)


@contextlib.contextmanager
def serving_hub(hub: Hub) -> Iterator[str]:
    """``hub`` answering on a loopback port, for the block; its endpoint (what ``HF_ENDPOINT`` names)."""
    handler = functools.partial(_HubHandler, hub=hub, directory="/nonexistent")
    servers = [_Server(("127.0.0.1", 0), handler) for _ in range(2)]  # the Hub, and its CDN (another origin)
    hub.cdn = f"http://127.0.0.1:{servers[1].server_address[1]}"
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{servers[0].server_address[1]}"
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@contextlib.contextmanager
def hub_client(endpoint: str, home: Path) -> Iterator[None]:
    """Point this process's ``huggingface_hub`` at ``endpoint``, with no token, online, its home in ``home``.

    ``HF_ENDPOINT`` is read once, when ``huggingface_hub.constants`` is first imported (into
    ``ENDPOINT`` and the download URL template ``HUGGINGFACE_CO_URL_TEMPLATE``); so are
    ``HF_HUB_OFFLINE`` and the token file's path. The environment is set for child
    processes, and the constants are patched for this one: both ``ENDPOINT`` (which
    ``HfFileSystem`` and ``HfApi`` read when made) and the template (which ``hf_hub_url``
    builds file URLs from: with ``ENDPOINT`` alone patched, ``resolve`` requests would still
    go to huggingface.co). ``HfFileSystem`` instances are cached by endpoint and token, their
    listings with them: the cache is cleared on both sides.
    """
    import huggingface_hub
    from huggingface_hub import constants

    values = {
        "HF_ENDPOINT": endpoint,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(home),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in values.items():
            patch.setenv(name, value)
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
            patch.delenv(name, raising=False)
        patch.setattr(constants, "ENDPOINT", endpoint)
        patch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        patch.setattr(constants, "HF_HUB_OFFLINE", False)
        patch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
        huggingface_hub.HfFileSystem.clear_instance_cache()
        try:
            yield
        finally:
            huggingface_hub.HfFileSystem.clear_instance_cache()
