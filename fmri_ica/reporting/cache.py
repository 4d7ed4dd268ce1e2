"""Figures drawn once: a report re-run redraws only the figures whose inputs changed.

Each cached figure has a record beside it (``<figure>.key``) holding a hash of everything
the figure shows (arrays, options, the package version and the figure resolution); the
figure is reused when the record matches and the file is there.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import write_text

__all__ = ["figure_key", "cached_figure", "is_cached"]


def figure_key(*parts: Any) -> str:
    """A hash of ``parts``: arrays by their bytes, shape and dtype, the rest as JSON."""
    from .. import __version__
    from .plotting import DPI

    digest = hashlib.sha256(json.dumps([__version__, DPI]).encode())
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(f"{part.shape}{part.dtype}".encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


def _record(path: Path) -> Path:
    return path.with_name(path.name + ".key")


def is_cached(path: str | Path, key: str) -> bool:
    """Whether ``path`` exists and was drawn from inputs with this ``key``."""
    path = Path(path)
    try:
        return path.is_file() and _record(path).read_text() == key
    except OSError:
        return False


def cached_figure(path: str | Path, key: str, draw: Callable[[Path], Any]) -> Path:
    """``path``, drawn by ``draw(path)`` unless :func:`is_cached`; the record is written
    after the figure, so an interrupted draw is redone."""
    path = Path(path)
    if not is_cached(path, key):
        draw(path)
        write_text(_record(path), key)
    return path
