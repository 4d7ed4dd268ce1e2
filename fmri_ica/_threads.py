"""torch's intra-op threads: the ``threads`` setting of the pipeline, the CLI and TaskDecoder.

The models are small recurrent networks: per time step a few (batch x hidden) products,
too small to share between threads. A second thread buys little on an idle machine and
costs a great deal on a busy one, where OpenMP threads wait for each other's cores; so
the default is one thread (figures in docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from .exceptions import InvalidParameterError

__all__ = [
    "DEFAULT_THREADS",
    "check_threads",
    "resolve_threads",
    "set_torch_threads",
    "torch_threads",
]

#: The default of the ``threads`` setting.
DEFAULT_THREADS = 1


def resolve_threads(value, name: str = "threads") -> int | None:
    """The number of threads that ``value`` asks for.

    Parameters
    ----------
    value : int, "auto" or None
        A positive int; or "auto": ``SLURM_CPUS_PER_TASK`` inside a SLURM job that sets
        it, else the CPUs this process may run on (its affinity mask, which SLURM's and
        containers' CPU limits narrow); or None: whatever torch is set to (left alone).
    name : str, default="threads"
        The setting's name in error messages (e.g. "--threads").

    Returns
    -------
    int or None
        At least 1; None for None.

    Raises
    ------
    InvalidParameterError
        ``value`` is neither a positive int nor "auto" (the message names ``name``).
    """
    if value is None:
        return None
    if value == "auto":
        slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
        if slurm.isdigit() and int(slurm) > 0:
            return int(slurm)
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # no affinity API (macOS, Windows)
            return max(1, os.cpu_count() or 1)
    if isinstance(value, str) and value.strip().isdigit():  # e.g. from an environment file
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _invalid(name, value)
    return value


def _invalid(name: str, value, where: str = "") -> InvalidParameterError:
    return InvalidParameterError(
        f"Invalid value for {name!r}: {value!r}{where}. Expected a positive integer (torch's "
        f"threads per process; {DEFAULT_THREADS} by default), 'auto' (SLURM_CPUS_PER_TASK, "
        "else the CPUs this process may use) or null (leave torch's setting alone)."
    )


def check_threads(key: str, value, where: str = ""):
    """A validation rule for the config's ``threads``: ``value`` as given, or an error.

    ``(key, value, where) -> value``, the form of :func:`fmri_ica.config.validate_config`'s
    rules: "auto" stays "auto" (resolved where the threads are set), "4" becomes 4.
    """
    if value is None or value == "auto":
        return value
    try:
        return resolve_threads(value, key)
    except InvalidParameterError:
        raise _invalid(key, value, where) from None


def set_torch_threads(value, name: str = "threads", *, load_torch: bool = True) -> int | None:
    """Check ``value`` and set torch's intra-op threads to it.

    Parameters
    ----------
    value : int, "auto" or None
        See :func:`resolve_threads`; None changes nothing.
    name : str, default="threads"
        The setting's name in error messages.
    load_torch : bool, default=True
        False: only check ``value`` when torch is not imported yet (importing it takes
        seconds, wasted on work that does not use it).

    Returns
    -------
    int or None
        The previous number of threads; None when torch was left alone.
    """
    threads = resolve_threads(value, name)
    if threads is None or (not load_torch and "torch" not in sys.modules):
        return None
    import torch

    previous = torch.get_num_threads()
    if threads != previous:
        torch.set_num_threads(threads)
    return previous


@contextlib.contextmanager
def torch_threads(value, name: str = "threads") -> Iterator[int]:
    """Run the block with torch's intra-op threads set to ``value``; restore them after.

    Yields the number of threads in use.
    """
    import torch

    previous = set_torch_threads(value, name)
    try:
        yield torch.get_num_threads()
    finally:
        if previous is not None and torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
