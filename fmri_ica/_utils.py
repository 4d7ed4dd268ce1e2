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
from contextvars import ContextVar
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
    """A tqdm progress bar on stderr, shown only where someone watches.

    The bar is off when ``enabled`` is False and when stderr is not a terminal (batch-job
    logs get the log lines, not thousands of bar updates). Log lines written through
    :func:`enable_logging`'s handler (the CLI's) print above the bar, not across it.

    Parameters
    ----------
    iterable : iterable, optional
        Items to wrap; without it, advance the bar by hand with ``bar.update(n)``.
    desc : str, default=""
        Label in front of the bar.
    total : int, optional
        Number of items; by default ``len(iterable)`` where it has one.
    enabled : bool, default=True
        False: never show the bar (e.g. a ``progress=False`` option).
    **kw
        Passed to ``tqdm`` (``unit``, ``initial``, ``leave``...).

    Returns
    -------
    tqdm.tqdm
        Iterate over it, or use it as a context manager. ``bar.disable`` is True when no
        bar is drawn; pass the bar to :func:`item_log_level` to log per-item lines.

    Examples
    --------
    >>> for figure in progress(figures, desc="report", unit="figure"):  # doctest: +SKIP
    ...     draw(figure)
    """
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=None if enabled else True,
                file=sys.stderr, **kw)


def item_log_level(bar) -> int:
    """Level for per-item log lines beside an open ``bar`` (:func:`progress`): DEBUG while
    the bar shows the same figures, INFO when it is off (not a terminal, or switched off),
    so that batch logs keep them. Ask before closing the bar: tqdm disables it on close."""
    return logging.INFO if bar.disable else logging.DEBUG


class TqdmHandler(logging.Handler):
    """Writes log lines with ``tqdm.write``: open bars are cleared, the line is printed
    and the bars are drawn again below it, so bars and log lines do not overwrite each other.

    Parameters
    ----------
    stream : file-like, optional
        Where to write; by default ``sys.stderr`` as it is at each line.
    """

    def __init__(self, stream=None):
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            stream = self.stream if self.stream is not None else sys.stderr
            tqdm.write(self.format(record), file=stream)
            stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def enable_logging(level: int | str = "INFO", *, stream=None) -> logging.Logger:
    """Show fmri_ica's log messages (progress at INFO, details at DEBUG) on stderr.

    The package only logs to its logger, ``logging.getLogger("fmri_ica")``, and by
    default nothing is shown. Call this once at the top of a script to see progress
    (training epochs, pipeline stages, explained folds); it writes through tqdm, so
    progress bars stay intact. Calling it again replaces its handler. To send the messages
    elsewhere, configure logging yourself instead (e.g. ``logging.basicConfig(level=
    logging.INFO)``); use one or the other, or each line shows twice.

    Parameters
    ----------
    level : int or str, default="INFO"
        ``"DEBUG"``, ``"INFO"``, ``"WARNING"``... or a ``logging`` constant.
    stream : file-like, optional
        Where to write; by default ``sys.stderr``.

    Returns
    -------
    logging.Logger
        The package logger.

    Examples
    --------
    >>> import fmri_ica
    >>> fmri_ica.enable_logging()  # doctest: +SKIP
    >>> fmri_ica.run_pipeline("config.yaml")  # doctest: +SKIP
    """
    if isinstance(level, str):
        level = check_option("level", level.upper(), ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
    handler = TqdmHandler(stream)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT, "%H:%M:%S"))
    package = logging.getLogger("fmri_ica")
    # replace an earlier call's handler; keep the NullHandler and any the user added
    package.handlers[:] = [h for h in package.handlers if not isinstance(h, TqdmHandler)]
    package.addHandler(handler)
    package.setLevel(level)
    return package


def launch_rank() -> int | None:
    """This process's rank when launched as several (torchrun, a multi-task srun step); None
    for one process (a single-task array job too). Reads the environment; imports torch only
    when launched as several."""
    env = os.environ
    tasks = env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1"))
    if "WORLD_SIZE" not in env and not ("SLURM_STEP_ID" in env and tasks.isdigit() and int(tasks) > 1):
        return None
    from .training.distributed import launch_info

    info = launch_info()
    return info.rank if info.distributed else None


def configure_logging(verbosity: int = 1) -> None:
    """The CLI's logging: 0 warnings, 1 info, 2+ debug (see :func:`enable_logging`).

    Under torchrun or srun, ranks other than 0 log warnings only (each line would print per rank)."""
    if launch_rank() not in (None, 0):
        verbosity = 0
    enable_logging({0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG))


#: The ``fmri-ica ...`` command line while the CLI runs (set by :func:`fmri_ica.cli.main`),
#: so that messages can say "run the same command again" rather than name Python calls.
command_line: ContextVar[str | None] = ContextVar("fmri_ica_command_line", default=None)
