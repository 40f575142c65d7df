"""What the viewer's ``/api/spectrum`` and ``/api/anatomy`` answer: ``weightscope.spectra``'s and
``weightscope.anatomy``'s figures, with what the page needs to draw them.

A spectrum is exact (``numpy.linalg.svd``) for a tensor of at most ``EXACT_VALUES`` values; a larger one's
takes the randomized path's ``RANDOMIZED_TOP`` largest singular values (``spectrum(top=...)``: ``method``
``"randomized"``, each value within ``error_bound``; no MP count), so an answer takes seconds, not minutes (a
4096 x 4096 matrix's exact SVD takes about 20 s on two cores). The ESD comes as ``ESD_BINS`` logarithmic bins.
Either way the matrix is held whole in float64 (8 bytes a value), as ``weightscope spectra`` holds it; the
anatomy holds each changed pair so too, as ``diff --anatomy`` does. ``file_labels``: what the page calls each file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from weightscope.anatomy import anatomy, anatomy_order
from weightscope.checkpoint import Checkpoint
from weightscope.spectra import Skipped, Spectrum, esd_density, power_law_density, tensor_spectra

EXACT_VALUES = 1 << 22  # 4 Mi values: a 2048 x 2048 matrix, a few seconds of exact SVD
RANDOMIZED_TOP = 128
ESD_BINS = 60


def spectrum_document(ckpt: Checkpoint, name: str) -> dict[str, Any]:
    """``{"name", "shape", "skipped", "parts"}``: ``skipped`` the reason the tensor has no spectrum (and no parts),
    else null and one part per matrix (three for a fused QKV), each ``Spectrum.to_json()`` plus ``esd``:
    ``{"edges", "density", "eigenvalues"}`` (``esd_density``) and ``fit``: the power law's line from ``xmin`` to
    the largest eigenvalue, ``{"x": [xmin, largest], "density": [...]}`` (straight on log-log axes), or null."""
    info = ckpt.info(name)
    top = None if info.size <= EXACT_VALUES else RANDOMIZED_TOP
    results = tensor_spectra(ckpt, name, top)
    document: dict[str, Any] = {"name": name, "shape": list(info.shape), "skipped": None, "parts": []}
    for result in results:
        if isinstance(result, Skipped):
            document["skipped"] = result.reason
        else:
            document["parts"].append(_part(result))
    return document


def _part(result: Spectrum) -> dict[str, Any]:
    edges, density, count = esd_density(result.singular_values, ESD_BINS)
    ends = np.array([result.xmin or 0.0, result.spectral_norm**2])
    law = power_law_density(result, ends)
    return {
        **result.to_json(),
        "esd": {"edges": edges.tolist(), "density": density.tolist(), "eigenvalues": count},
        "fit": None if law is None else {"x": ends.tolist(), "density": law.tolist()},
    }


def anatomy_document(base: Checkpoint, tuned: Checkpoint) -> dict[str, Any]:
    """``anatomy(base, tuned).to_json()`` with its layers ordered by ``anatomy_order``: by change, largest first."""
    result = anatomy(base, tuned)
    return dataclasses.replace(result, layers=sorted(result.layers, key=anatomy_order)).to_json()


def file_labels(paths: Sequence[str]) -> list[str]:
    """What the page calls each file (a path or URL): its name, or as many trailing parts of its path as make the
    names differ (``run1/model.ckpt`` and ``run2/model.ckpt``); the whole paths when no ending does."""
    parts = [path.rstrip("/").split("/") for path in paths]
    for count in range(1, max(map(len, parts)) + 1):
        labels = ["/".join(split[-count:]) for split in parts]
        if len(set(labels)) == len(labels):
            return labels
    return list(paths)
