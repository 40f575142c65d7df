"""``weightscope view``: a local web page that shows one checkpoint, or compares two.

The page (``static/``, shipped inside the package: nothing is fetched from the
internet) draws what a small JSON API of the server answers; the API reuses the
library's ``tensor_stats``, ``summarize``, ``checkpoint_diff``, the histogram and
block-mean counting of ``weightscope.plot``, and ``weightscope.spectra``'s and
``weightscope.anatomy``'s figures (``weightscope.viewer.analyses``). See
``weightscope.viewer.server``.
"""

from __future__ import annotations

from weightscope.viewer.server import ViewerServer, make_server, serve

__all__ = ["ViewerServer", "make_server", "serve"]
