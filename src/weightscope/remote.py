"""Remote checkpoints: URLs (``s3://``, ``gs://``, ``http(s)://``, ``hf://``, any fsspec protocol) read by range.

Two small pieces stand in for ``pathlib.Path`` and ``FileSource`` when a checkpoint is
named by a URL, so the formats' path resolution and reading work unchanged (what differs,
``weightscope.sources`` answers: ``local_path``, ``plus``, ``inside``, ``opening``):

- ``RemotePath``: the part of ``Path`` the formats use (``name``, ``stem``, ``suffix``,
  ``parent``, ``/``, ``exists``, ``is_file``, ``is_dir``, ``glob``, ``stat``,
  ``read_text``, ``resolve``, ``is_relative_to``) over one ``RemoteStore``.
- ``RemoteSource``: the ``ByteSource`` protocol (``read``, ``read_head``, ``prefetch``, a
  ``local_path`` of None) answered by range requests. A read of at least ``block_size``
  (1 MiB) fetches exactly its range in one request: a tensor, usually. An object no
  larger than that (most TensorFlow indexes, state files) is fetched whole at its first
  read. A smaller read of a larger object (a header, an index block, a small tensor)
  fetches its range and a read-ahead after it: 64 KiB after a jump, doubling (to 1 MiB)
  while the reads continue where the last fetch ended, as an index or a long header read
  in pieces does. What was fetched goes to a small LRU cache (four fetches) that the next
  small reads are answered from. A zip's readers ask for every member's local header at
  once (``prefetch``: concurrent requests). While many tensors are read (``reading_many``:
  ``Checkpoint.arrays``), ``IN_FLIGHT`` reads are made at once, each fetching exactly its
  range: every range is known, so no read-ahead is fetched past one.

Every read returns a memoryview over bytes of its own (a copy, never a view of a cached
block), so arrays made from it are owned and read-only, and closing frees the cache.

A ``RemoteStore`` belongs to one ``weightscope.open`` call: the fsspec filesystem, what
is known of each object (its size, or that it is missing), the cache, and counters of
the requests made and bytes fetched (``checkpoint.path.store.bytes_fetched``).

fsspec is optional (``pip install 'weightscope[remote]'``) and imported only here; a
local path never imports this module. Credentials and endpoints are fsspec's business:
``weightscope.open(url, storage_options={...})`` passes them to the filesystem, and
fsspec's environment configuration (``FSSPEC_S3_ENDPOINT_URL``, ``AWS_*``) applies too.
``hf://ORG/NAME[@REVISION]/path`` is huggingface_hub's ``HfFileSystem`` (``pip install
'weightscope[hub]'``), which finds the user's token itself (``HF_TOKEN``, the token file
``hf auth login`` writes) and the Hub's address in ``HF_ENDPOINT``.
"""

from __future__ import annotations

import bisect
import contextlib
import fnmatch
import posixpath
import sys
import threading
import urllib.parse
from collections import Counter, OrderedDict
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from weightscope.bounds import check_range
from weightscope.errors import CheckpointNotFoundError, TruncatedFileError, UsageError, WeightscopeError, reason

BLOCK_SIZE = 1 << 20  # reads this large are fetched exactly; objects this small whole; the most read-ahead
FIRST_READ_AHEAD = 64 << 10  # fetched past a small read after a jump; doubled while reads continue
CACHED_BLOCKS = 4
# Reads kept in flight while many tensors are read (``Checkpoint.arrays``): each a range request waiting on the
# network, so more than the cores; bounded, as each holds its tensor's bytes until it is used.
IN_FLIGHT = 8
_NO_LISTING = ("http", "https")  # HTTP has no directories: a URL ending in "/" is taken for one
# Protocols whose clients and servers percent-decode a URL's path before resolving its dot
# segments: there ``%2e%2e/x`` (or ``..%2fx``, ``..%5cx``) is ``../x``.
_DECODED = ("http", "https")


class RemoteError(WeightscopeError, OSError):
    """A remote object could not be read: a network error, a refused request, a server's error."""


# Protocols whose fsspec filesystem another package provides: that package, and the extra installing it.
_PROVIDERS = {"hf": ("huggingface_hub", "hub")}
# Filesystems made afresh for each store: HfFileSystem's instances (shared in a process) keep every
# listing, file sizes with them, for good: a repository's later commit would be read at the old sizes.
_FRESH: dict[str, dict[str, Any]] = {"hf": {"skip_instance_cache": True}}


def _import_fsspec(protocol: str) -> Any:
    try:
        import fsspec
    except ImportError:
        if protocol in _PROVIDERS:
            raise _missing_provider(protocol) from None
        raise UsageError(
            "reading a checkpoint by URL needs fsspec (and the filesystem for its protocol, e.g. s3fs, gcsfs, "
            "aiohttp): pip install 'weightscope[remote]'"
        ) from None
    return fsspec


def _missing_provider(protocol: str) -> UsageError:
    package, extra = _PROVIDERS[protocol]
    return UsageError(f"reading {protocol}:// URLs needs {package}: pip install 'weightscope[{extra}]'")


class RemoteStore:
    """One filesystem, what is known of its objects, and the read-ahead cache, shared by paths and sources."""

    def __init__(
        self,
        protocol: str,
        storage_options: dict[str, Any] | None = None,
        *,
        block_size: int = BLOCK_SIZE,
        first_read_ahead: int = FIRST_READ_AHEAD,
        cached_blocks: int = CACHED_BLOCKS,
        in_flight: int = IN_FLIGHT,
    ) -> None:
        fsspec = _import_fsspec(protocol)
        self.protocol = protocol
        options = {**_FRESH.get(protocol, {}), **(storage_options or {})}
        try:
            self.fs = fsspec.filesystem(protocol, **options)
        except ImportError as error:
            if protocol in _PROVIDERS:
                raise _missing_provider(protocol) from None
            raise UsageError(
                f"reading {protocol}:// URLs needs a filesystem fsspec did not find ({error}): "
                "pip install 'weightscope[remote]' (s3, http) or the protocol's package (gcsfs for gs://)"
            ) from None
        except ValueError as error:
            raise UsageError(f"{protocol}:// is not a protocol fsspec knows ({error})") from None
        except TypeError as error:
            raise UsageError(f"storage_options the {protocol}:// filesystem does not take: {error}") from None
        self._cat_options, self._cat_ranges_options = _unbuffered(fsspec, self.fs)
        self.block_size = block_size
        self.first_read_ahead = first_read_ahead
        self.cached_blocks = cached_blocks
        self.in_flight = in_flight
        self._exact = 0  # reading_many blocks running: small reads fetch their range exactly
        self.requests = 0
        self.bytes_fetched = 0
        self._infos: dict[str, dict[str, Any] | None] = {}
        self._blocks: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._prefetched: dict[str, list[tuple[int, bytes]]] = {}  # by URL, sorted by offset
        self._last: dict[str, tuple[int, int]] = {}  # by URL: the range its last small read fetched
        self._window: dict[str, int] = {}  # by URL: the read-ahead of that fetch
        self._open: Counter[str] = Counter()
        self._pinned = 0
        self._lock = threading.Lock()

    # -- what is known of objects ----------------------------------------------------------
    def info(self, url: str) -> dict[str, Any] | None:
        """fsspec's info of ``url`` (size, type), or None where there is no such object; asked once."""
        if url not in self._infos:
            try:
                info = self.fs.info(url)
            except FileNotFoundError as error:
                _raise_if_unreachable(url, error)
                info = None
            except Exception as error:  # network libraries raise their own types: name the URL, keep it typed
                raise RemoteError(f"{url}: {type(error).__name__}: {reason(error)}") from error
            self._infos[url] = info
        return self._infos[url]

    def size(self, url: str) -> int:
        info = self.info(url)
        if info is None or info.get("type") == "directory":
            raise CheckpointNotFoundError(f"{url}: no such object")
        size = info.get("size")
        if not isinstance(size, int) or size < 0:
            raise RemoteError(f"{url}: the server does not say how large the object is")
        return size

    # -- fetching --------------------------------------------------------------------------
    def fetch(self, url: str, start: int, end: int, size: int, what: str) -> bytes:
        """The bytes ``[start, end)`` of ``url`` (``size`` bytes long), in one request."""
        if end <= start:
            return b""
        try:
            data = self.fs.cat_file(url, start=start, end=end, **self._cat_options)
        except FileNotFoundError:
            raise CheckpointNotFoundError(f"{url}: no such object") from None
        except WeightscopeError:
            raise
        except Exception as error:  # network libraries raise their own types: name the URL, keep it typed
            raise RemoteError(f"{url}: {type(error).__name__} reading {what} at {start}: {reason(error)}") from error
        with self._lock:
            self.requests += 1
            self.bytes_fetched += len(data)
        if len(data) > end - start and len(data) == size:
            data = data[start:end]  # a server that ignores Range sends the whole object
        if len(data) != end - start:
            raise TruncatedFileError(
                f"{url}: EOF reading {what} at {start}: expected {end - start} bytes, got {min(len(data), end - start)}"
            )
        return bytes(data)

    def prefetch(self, url: str, ranges: list[tuple[int, int]], size: int) -> None:
        """Fetch ``(offset, length)`` ranges concurrently (fsspec's ``cat_ranges``) for later small reads."""
        ranges = sorted((offset, min(size, offset + length)) for offset, length in ranges if 0 <= offset < size)
        if not ranges:
            return
        try:
            starts, ends = [r[0] for r in ranges], [r[1] for r in ranges]
            found = self.fs.cat_ranges([url] * len(ranges), starts, ends, **self._cat_ranges_options)
        except Exception:  # a hint only: the reads that follow fetch what is missing, and raise what is wrong
            return
        kept = self._prefetched.setdefault(url, [])
        for (start, end), data in zip(ranges, found, strict=True):
            if isinstance(data, bytes | bytearray):
                with self._lock:
                    self.requests += 1
                    self.bytes_fetched += len(data)
                if len(data) == end - start:
                    kept.append((start, bytes(data)))
        kept.sort(key=lambda item: item[0])

    def _from_prefetched(self, url: str, offset: int, length: int) -> bytes | None:
        kept = self._prefetched.get(url)
        if not kept:
            return None
        i = bisect.bisect_right(kept, offset, key=lambda item: item[0]) - 1
        if i >= 0:
            start, data = kept[i]
            if offset + length <= start + len(data):
                return data[offset - start : offset - start + length]
        return None

    def read(self, url: str, offset: int, length: int, size: int, what: str) -> bytes:
        """``length`` bytes at ``offset``: exactly fetched when large, else from (or into) the cache."""
        if length >= self.block_size:
            return self.fetch(url, offset, offset + length, size, what)
        prefetched = self._from_prefetched(url, offset, length)
        if prefetched is not None:
            return prefetched
        with self._lock:
            for (cached_url, start), block in reversed(self._blocks.items()):
                if cached_url == url and start <= offset and offset + length <= start + len(block):
                    self._blocks.move_to_end((url, start))
                    return block[offset - start : offset - start + length]
        if self._exact:
            return self.fetch(url, offset, offset + length, size, what)
        if size <= self.block_size:
            start, end = 0, size  # a small object (an index, a state file) whole, at once
        else:
            start, end = offset, min(size, offset + length + self._read_ahead(url, offset))
        block = self.fetch(url, start, end, size, what)
        with self._lock:
            self._last[url] = (start, end)
            self._blocks[(url, start)] = block
            while len(self._blocks) > self.cached_blocks:
                self._blocks.popitem(last=False)
        return block[offset - start : offset - start + length]

    def _read_ahead(self, url: str, offset: int) -> int:
        """How far past a small read to fetch: ``first_read_ahead`` after a jump, twice the last
        (to ``block_size``) when the read continues the last fetch (an index or header read in pieces)."""
        last_start, last_end = self._last.get(url, (-1, -1))
        previous = self._window.get(url, 0)
        window = min(2 * previous, self.block_size) if last_start <= offset <= last_end else self.first_read_ahead
        self._window[url] = max(window, self.first_read_ahead)
        return self._window[url]

    @contextlib.contextmanager
    def reading_many(self) -> Iterator[int]:
        """While many tensors are read at once: every read fetches exactly its range (no read-ahead); gives how
        many reads to keep in flight."""
        with self._lock:
            self._exact += 1
        try:
            yield self.in_flight
        finally:
            with self._lock:
                self._exact -= 1

    # -- lifetime: a source's blocks go when its last source closes (not while opening) -----
    def opened(self, url: str) -> None:
        self._open[url] += 1

    def closed(self, url: str) -> None:
        self._open[url] = max(0, self._open[url] - 1)
        if not self._pinned:
            self._evict()

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        """Keep blocks while a checkpoint is being opened: its format is sniffed from them first."""
        self._pinned += 1
        try:
            yield
        finally:
            self._pinned -= 1
            if not self._pinned:
                self._evict()

    def _evict(self) -> None:
        with self._lock:
            for key in [key for key in self._blocks if not self._open[key[0]]]:
                del self._blocks[key]
            for url in [url for url in self._prefetched if not self._open[url]]:
                del self._prefetched[url]


def _unbuffered(fsspec: Any, fs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Options for ``fs.cat_file`` and ``fs.cat_ranges`` that fetch exactly the range asked for.

    fsspec's generic ``cat_file`` (and the ``cat_ranges`` that calls it) reads through
    ``open()``, whose file object fetches a read-ahead of its own past each read (5 MiB by
    default): a filesystem that keeps them (``HfFileSystem``, for one) is asked for no cache,
    the store deciding what is fetched. Filesystems with their own ``cat_file`` (s3fs, HTTP)
    fetch exactly the range already, and are passed nothing.
    """
    generic = fsspec.AbstractFileSystem

    def inherited(method: Any, name: str) -> bool:  # async filesystems' methods are per-instance wrappers
        return getattr(method, "__func__", None) is getattr(generic, name)

    if not inherited(fs.cat_file, "cat_file"):
        return {}, {}
    options = {"cache_type": "none"}
    return options, options if inherited(fs.cat_ranges, "cat_ranges") else {}


def _raise_if_unreachable(url: str, error: FileNotFoundError) -> None:
    """fsspec's HTTP filesystem reports any failure to stat a URL as FileNotFoundError. Only
    a 404 or 410, or a cloud API's own answer (a botocore error: no such bucket), says the
    object is missing; a refused connection, a server error or a bad option says nothing of it."""
    cause = error.__cause__
    if cause is None or isinstance(cause, FileNotFoundError) or isinstance(getattr(cause, "response", None), dict):
        return
    hub = sys.modules.get("huggingface_hub.errors")  # imported by HfFileSystem, the only one raising its errors
    if hub is not None and isinstance(cause, hub.RepositoryNotFoundError | hub.RevisionNotFoundError):
        # The Hub says so of a repository that is private or gated too, to a request without a token:
        # HfFileSystem's words say that, and nothing in the repository (or revision) can be read.
        raise CheckpointNotFoundError(f"{url}: {reason(error)}") from error
    if getattr(cause, "status", None) in (404, 410):
        return
    raise RemoteError(f"{url}: {type(cause).__name__}: {reason(cause)}") from error


def split_url(url: str) -> tuple[str, str]:
    """``("s3", "bucket/key")`` from ``"s3://bucket/key"``."""
    protocol, _, rest = url.partition("://")
    return protocol.lower(), rest


def _check_hub_url(rest: str) -> None:
    """An ``hf://`` URL starts with a repository, ``ORG/NAME`` (after ``datasets/`` or ``spaces/``):
    HfFileSystem refuses anything else with a ValueError, which would read as the server's error."""
    parts = rest.split("/")
    if parts[0] in ("models", "datasets", "spaces"):
        parts = parts[1:]
    if len(parts) < 2 or not parts[0] or "@" in parts[0] or not parts[1].partition("@")[0]:
        raise UsageError(f"hf://{rest}: not a Hub URL; one is hf://ORG/NAME[@REVISION][/PATH]")


class RemotePath:
    """A URL with the part of ``pathlib.Path``'s interface the formats use."""

    def __init__(self, url: str, store: RemoteStore | None = None, *, storage_options: dict[str, Any] | None = None):
        protocol, rest = split_url(str(url))
        if protocol == "hf":
            _check_hub_url(rest)
        if protocol in _DECODED:
            try:
                urllib.parse.urlsplit(str(url)).port  # noqa: B018 - parsing it is the check
            except ValueError as error:
                raise UsageError(f"{url}: not a URL: {reason(error)}") from None
        self.store = store if store is not None else RemoteStore(protocol, storage_options)
        self._protocol = protocol
        # HTTP has no directories: a trailing "/" is what says a URL names one, as a bare host names its root.
        self._dir_hint = (rest.endswith("/") or "/" not in rest) and protocol in _NO_LISTING
        rest = rest.rstrip("/")
        self._rest = rest
        self._url = f"{protocol}://{rest}"

    def _with_rest(self, rest: str, *, directory: bool = False) -> RemotePath:
        path = RemotePath.__new__(RemotePath)
        path.store, path._protocol = self.store, self._protocol
        path._rest = rest.rstrip("/")
        path._url = f"{self._protocol}://{path._rest}"
        path._dir_hint = directory and self._protocol in _NO_LISTING
        return path

    # -- names -----------------------------------------------------------------------------
    def __str__(self) -> str:
        return self._url

    def __repr__(self) -> str:
        return f"RemotePath({self._url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and other._url == self._url

    def __hash__(self) -> int:
        return hash(self._url)

    def __lt__(self, other: RemotePath) -> bool:
        return self._url < other._url

    @property
    def name(self) -> str:
        if "/" not in self._rest:
            return ""  # a bucket or host, like Path("/").name
        return self._rest.rsplit("/", 1)[1]

    @property
    def stem(self) -> str:
        name = self.name
        dot = name.rfind(".")
        return name[:dot] if dot > 0 else name

    @property
    def suffix(self) -> str:
        name = self.name
        dot = name.rfind(".")
        return name[dot:] if 0 < dot < len(name) - 1 else ""

    @property
    def parent(self) -> RemotePath:
        if "/" not in self._rest:
            return self
        return self._with_rest(self._rest.rsplit("/", 1)[0], directory=True)

    def __truediv__(self, name: str | RemotePath) -> RemotePath:
        return self._with_rest(f"{self._rest}/{name}")

    def with_name(self, name: str) -> RemotePath:
        return self.parent / name

    def plus(self, text: str) -> RemotePath:
        """This URL with ``text`` appended: the ``.index`` or ``.data-…`` file of a prefix."""
        return self._with_rest(self._rest + text)

    def resolve(self) -> RemotePath:
        """With ``.`` and ``..`` folded away (never above the bucket or host), as the URL that is requested.

        Over HTTP the path is first percent-decoded, and a backslash taken for a slash, as
        clients and servers do, then folded, then encoded again in full: what is checked
        (``is_relative_to``) is then exactly what is fetched, with nothing left for the client
        or the server to normalise (``%2e%2e/secret.bin`` is ``../secret.bin`` here too).
        """
        host, _, key = self._rest.partition("/")
        if self._protocol in _DECODED:
            key = urllib.parse.unquote(key).replace("\\", "/")
        key = posixpath.normpath("/" + key).lstrip("/") if key else ""
        if self._protocol in _DECODED:
            key = urllib.parse.quote(key, safe="/")
        return self._with_rest(f"{host}/{key}" if key else host, directory=self._dir_hint)

    def is_relative_to(self, other: RemotePath) -> bool:
        return self._url == other._url or self._url.startswith(other._url + "/")

    def is_absolute(self) -> bool:
        return True

    # -- the objects -----------------------------------------------------------------------
    def info(self) -> dict[str, Any] | None:
        if self._dir_hint:
            return {"type": "directory", "size": 0}
        return self.store.info(self._url)

    def exists(self) -> bool:
        return self.info() is not None

    def is_file(self) -> bool:
        info = self.info()
        return info is not None and info.get("type") != "directory"

    def is_dir(self) -> bool:
        info = self.info()
        return info is not None and info.get("type") == "directory"

    def stat(self) -> SimpleNamespace:
        return SimpleNamespace(st_size=self.store.size(self._url))

    def glob(self, pattern: str) -> Iterator[RemotePath]:
        """The objects directly in this directory whose names match ``pattern`` (none over HTTP)."""
        if self._protocol in _NO_LISTING:
            return iter(())
        try:
            entries = self.store.fs.ls(self._url, detail=True)
        except FileNotFoundError:
            return iter(())
        except Exception as error:
            raise RemoteError(f"{self._url}: {type(error).__name__} listing it: {reason(error)}") from error
        found = []
        for entry in entries:
            name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
            if fnmatch.fnmatchcase(name, pattern):
                child = self / name
                self.store._infos.setdefault(child._url, entry)
                found.append(child)
        return iter(sorted(found))

    def read_bytes(self) -> bytes:
        size = self.store.size(self._url)
        return self.store.fetch(self._url, 0, size, size, "the file")

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def open_source(self) -> RemoteSource:
        return RemoteSource(self)


class RemoteSource:
    """A ``ByteSource`` for a remote object: range-checked reads, answered by range requests."""

    def __init__(self, path: RemotePath) -> None:
        self.path = path
        self._store = path.store
        self._url = str(path)
        self.size = self._store.size(self._url)
        self._open = True
        self._store.opened(self._url)

    @property
    def local_path(self) -> Path | None:
        return None  # no memory map, no local-only library

    def read(self, offset: int, length: int, what: str) -> memoryview:
        """The bytes ``[offset, offset + length)``, owned; ``what`` names them in errors."""
        check_range(self.path, offset, length, self.size, what)
        if length == 0:
            return memoryview(b"")
        return memoryview(self._store.read(self._url, offset, length, self.size, what))

    def read_head(self, offset: int, length: int, limit: int, what: str) -> memoryview:
        """The first ``limit`` bytes of ``[offset, offset + length)``, after checking all of it lies in the object."""
        return self.read(offset, length if offset + length > self.size else min(length, limit), what)

    def prefetch(self, ranges: list[tuple[int, int]]) -> None:
        """Fetch ``(offset, length)`` ranges at once, concurrently, for the small reads that follow."""
        self._store.prefetch(self._url, ranges, self.size)

    def close(self) -> None:
        if self._open:
            self._open = False
            self._store.closed(self._url)
