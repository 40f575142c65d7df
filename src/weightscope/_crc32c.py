"""CRC32C (Castagnoli), hardware-accelerated, from the ``crc32c`` package's C extension.

The package's ``__init__`` looks its own version up through ``importlib.metadata``,
which costs about 30 ms at every start of the command line, a fifth of a whole
``weightscope show``. We load the extension module alone, and fall back to the
ordinary import if the package is ever laid out differently.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType


def _load_extension() -> ModuleType:
    spec = importlib.util.find_spec("crc32c")
    for location in (spec.submodule_search_locations or []) if spec else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(location) / f"_crc32c{suffix}"
            if path.is_file():
                loader = importlib.machinery.ExtensionFileLoader("crc32c._crc32c", str(path))
                extension_spec = importlib.util.spec_from_loader("crc32c._crc32c", loader, origin=str(path))
                if extension_spec is not None:
                    module = importlib.util.module_from_spec(extension_spec)
                    loader.exec_module(module)
                    return module
    import crc32c

    return crc32c


# crc32c(data, value=0) -> int: extends ``value`` over ``data`` (any buffer; the GIL is
# released over large ones, so threads checksum in parallel).
crc32c: Callable[..., int] = _load_extension().crc32c
