"""Paths a file names, confined to its folder: ONNX external data, a sharded set's shards.

A file may name other files it needs beside it (``location`` in an ONNX TensorProto, a
shard in a ``model.safetensors.index.json``). A hostile one names ``/etc/passwd``,
``C:\\secrets``, ``../../home/you/.ssh/id_rsa`` or, over HTTP, ``%2e%2e/x``: every such path
is refused unless it lies inside the folder of the file naming it, after ``.``, ``..`` and
symbolic links are resolved (a remote path's ``resolve`` folds them as the server would). One
other place may be allowed: the ``blobs/`` folder of a Hugging Face cache, which its
``snapshots/<revision>/`` files link into.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from weightscope.errors import CorruptCheckpointError, RefusedError
from weightscope.sources import AnyPath, inside, local_path


def confined(folder: AnyPath, location: str, where: str, what: str, *, also: Path | None = None) -> AnyPath:
    """The file ``location`` names, relative to ``folder`` (resolved), which it must lie inside (or inside ``also``,
    where given, once symbolic links are followed); ``where`` names the file that names it and ``what`` the kind
    of path (``external data path``) in errors."""
    if Path(location).is_absolute() or location.startswith(("/", "\\")) or ":" in location[:2]:
        raise RefusedError(f"{where}: {what} '{location}' is absolute; it must lie in the model's folder")
    if "\0" in location:
        raise CorruptCheckpointError(f"{where}: {what} {location!r} holds a NUL byte")
    local = local_path(folder)
    if local is not None and location not in (".", "..") and "/" not in location and "\\" not in location:
        # One name in the (resolved) folder, a file or nothing (no link): itself. One lstat, not resolve's walk.
        joined = local / location
        try:
            mode = os.lstat(joined).st_mode
        except OSError:
            mode = 0
        if not mode or stat.S_ISREG(mode):
            return joined
    resolved = (folder / location).resolve()
    if not (inside(resolved, folder) or (also is not None and inside(resolved, also))):
        raise RefusedError(f"{where}: {what} '{location}' escapes the model's folder {folder} (to {resolved})")
    if resolved.exists() and not resolved.is_file():
        raise CorruptCheckpointError(f"{where}: {what} '{location}' is not a file ({resolved})")
    return resolved
