"""Small shared helpers: parameter checks, atomic writes, sidecars, seeding, logging."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
import os
import platform
import random
import sys
import tempfile
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import InvalidParameterError

logger = logging.getLogger("fmri_ica")

_VERSIONED = ("fmri_ica", "torch", "nilearn", "nibabel", "numpy", "scipy", "captum")


def check_option(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``, else raise a helpful error.

    Raises
    ------
    InvalidParameterError
        Naming the parameter, the allowed values and the closest match.
    """
    allowed = list(allowed)
    if value in allowed:
        return value
    message = f"Invalid value for {name!r}: {value!r}. Allowed: {', '.join(map(repr, allowed))}."
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
    if close:
        message += f" Did you mean {close[0]!r}?"
    raise InvalidParameterError(message)


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that determine our outputs."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) for a reproducible run."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    A crash or exception leaves ``path`` untouched (the old file, or nothing), so a
    re-run never mistakes a half-written file for finished work.
    The temporary name keeps the suffixes of ``path`` (``.nii.gz``, ``.tsv``...), so
    writers that infer the format from the name still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs follow the umask
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically. NumPy scalars/arrays are converted."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=to_jsonable) + "\n")
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def to_jsonable(obj: Any) -> Any:
    """``json.dumps`` ``default`` hook: NumPy scalars/arrays and paths as plain JSON.

    Raises
    ------
    TypeError
        For any other type, as ``json.dumps`` expects.
    """
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


_json_default = to_jsonable  # former private name, kept for existing callers


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def progress(iterable=None, *, desc: str = "", total: int | None = None, enabled: bool = True, **kw):
    """A tqdm progress bar on stderr; off when ``enabled`` is False, and when stderr is not a
    terminal (batch-job logs get the log lines, not thousands of bar updates)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=None if enabled else True,
                file=sys.stderr, **kw)


def configure_logging(verbosity: int = 1) -> None:
    """Log to stderr: 0 warnings, 1 info, 2+ debug."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger("fmri_ica")
    root.handlers[:] = [handler]
    root.setLevel(level)
