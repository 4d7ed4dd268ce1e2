"""Several processes training one model: launch variables, process group, DDP runtime.

A run is distributed when it is launched as several processes, by ``torchrun`` (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) or by ``srun`` (a job
step's ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS`` or ``SLURM_NTASKS``, ``SLURM_LOCALID``;
``MASTER_ADDR`` from the environment, else the first host of ``SLURM_STEP_NODELIST`` /
``SLURM_NODELIST``; ``MASTER_PORT`` from the environment, else 29500 + the job id modulo
1000). torchrun's variables win when both are set. The process group uses NCCL on CUDA
and gloo on the CPU; each process drives the GPU of its ``LOCAL_RANK``.

Training semantics (see :func:`fmri_ica.training.fit`): ``batch_size`` is the *global*
batch. Every rank draws the same seeded permutation, cuts it into the same global batches
as one process would, and takes a strided share (``batch[rank::world_size]``) of each; the
loss is normalised by the whole global batch, so the averaged gradient is that of one
process with the same ``batch_size`` (equal within float tolerance, models without
dropout; dropout masks are drawn per rank). Steps count global batches, so a training
state saved by N processes resumes in M.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..exceptions import InvalidParameterError

__all__ = ["LaunchInfo", "RankFailed", "current_runtime", "first_host", "init_distributed", "launch_info",
           "run_on_main"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 7200  # rank 0 may build samples while the others wait


@dataclass(frozen=True)
class LaunchInfo:
    """How this process was launched: its rank among ``world_size`` and on its node."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str  # "torchrun", "slurm" or "single"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def first_host(nodelist: str) -> str:
    """The first host name of a SLURM node list: ``"gpu[03-05,09],cpu1"`` -> ``"gpu03"``.

    Examples
    --------
    >>> first_host("node[07-09,12]"), first_host("a1,b2"), first_host("c[1,3]-ib")
    ('node07', 'a1', 'c1-ib')
    """
    match = re.match(r"([^,\[]*)(?:\[([^\]]*)\])?([^,]*)", nodelist.strip())
    if not match or not (match.group(1) or match.group(2)):
        raise InvalidParameterError(
            f"Invalid SLURM node list {nodelist!r}: cannot read its first host. Set "
            "MASTER_ADDR to the host name of the first node."
        )
    prefix, ranges, suffix = match.groups()
    first = (ranges or "").split(",")[0].split("-")[0]
    return f"{prefix}{first}{suffix}"


def launch_info(environ=None) -> LaunchInfo:
    """Read the launcher's variables (torchrun first, then an srun job step).

    Inside an ``sbatch`` script (the batch step, no ``srun``) SLURM's task variables are
    ignored: that script is one process.

    Raises
    ------
    InvalidParameterError
        A variable is not an integer, or the rank is outside ``0..world_size-1``.
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env and "RANK" in env:
        names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
        values = [_int_var(env, name, 0) for name in names]
        addr, launcher = env.get("MASTER_ADDR", "127.0.0.1"), "torchrun"
    elif "SLURM_PROCID" in env and "SLURM_STEP_ID" in env and not _batch_step(env):
        world = "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS"
        names = ("SLURM_PROCID", world, "SLURM_LOCALID")
        values = [_int_var(env, name, 0 if i != 1 else 1) for i, name in enumerate(names)]
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
        addr, launcher = env.get("MASTER_ADDR") or first_host(nodes), "slurm"
    else:
        return LaunchInfo(0, 1, 0, "127.0.0.1", 29500, "single")
    rank, world_size, local_rank = values
    if world_size < 1 or not 0 <= rank < world_size:
        raise InvalidParameterError(
            f"Invalid launch variables: rank {rank} of world size {world_size} ({names[0]}, "
            f"{names[1]}). Launch with torchrun or srun, which set them."
        )
    job = _int_var(env, "SLURM_JOB_ID", 0) if "SLURM_JOB_ID" in env else 0
    port = _int_var(env, "MASTER_PORT", 0) if "MASTER_PORT" in env else 29500 + job % 1000
    return LaunchInfo(rank, world_size, local_rank, addr, port, launcher)


def _batch_step(env) -> bool:
    """True in an sbatch script itself (step ``batch``/``extern``, not an srun step)."""
    step = str(env.get("SLURM_STEP_ID", ""))
    return step in ("batch", "extern", "4294967294", "4294967295") or not step


def _int_var(env, name: str, default: int) -> int:
    value = env.get(name, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidParameterError(
            f"Invalid environment variable {name}={value!r}: expected an integer. It is set by "
            "torchrun/srun; unset it to run as one process."
        ) from None


def init_distributed(device: torch.device, info: LaunchInfo | None = None,
                     timeout_s: float | None = None) -> torch.device:
    """Join the process group of this launch (once per process); return this rank's device.

    NCCL for a CUDA ``device`` (the GPU ``cuda:LOCAL_RANK``), gloo for the CPU. The group
    is destroyed at exit. ``timeout_s`` (default ``FMRI_ICA_DIST_TIMEOUT_S`` or 7200) bounds
    how long a rank waits for the others at a collective.
    """
    info = info or launch_info()
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return device
    os.environ.setdefault("MASTER_ADDR", info.master_addr)
    os.environ.setdefault("MASTER_PORT", str(info.master_port))
    timeout_s = timeout_s or float(os.environ.get("FMRI_ICA_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S))
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend, rank=info.rank, world_size=info.world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    atexit.register(_destroy)
    logger.info("Joined a %s process group as rank %d of %d (%s).", backend, info.rank,
                info.world_size, info.launcher)
    return device


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)``: parameters broadcast from rank 0, gradients averaged."""
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, output_device=None)


def all_reduce(values: list[float], op=None, device=None) -> list[float]:
    """``values`` reduced over every rank (sum by default), in float64."""
    device = device or (torch.device("cuda") if dist.get_backend() == "nccl" else None)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
    return tensor.tolist()


def broadcast(value, device=None):
    """Rank 0's ``value`` (any picklable object; small) on every rank."""
    box = [value]
    dist.broadcast_object_list(box, src=0, device=device)
    return box[0]


class RankFailed(RuntimeError):
    """Raised on the other ranks when rank 0 failed in :func:`run_on_main`."""


def run_on_main(runtime, function):
    """Call ``function()`` on rank 0 only while the others wait; return its result everywhere.

    Works for a single process too (just calls ``function``). If rank 0 raises, it re-raises
    and the other ranks raise :class:`RankFailed` (instead of hanging at the next collective).
    The result is broadcast, so it must be picklable (keep it small: a flag, a path).
    """
    if runtime.world_size == 1:
        return function()
    result, error = None, None
    if runtime.is_main:
        try:
            result = function()
        except BaseException as exc:
            error = exc
    failed = runtime.any(error is not None)  # also the barrier
    if error is not None:
        raise error
    if failed:
        raise RankFailed("Rank 0 failed while the other ranks waited; see rank 0's log.")
    return runtime.broadcast(result)


def current_runtime(device=None):
    """This process's :class:`~fmri_ica.training.loop.Runtime` for code around training.

    Under a multi-process launch (or with a process group joined) the distributed runtime
    of ``device`` (joining the group); otherwise a single-process CPU runtime, without
    checking ``device`` (so that e.g. building samples on a node without the configured
    GPU works).
    """
    from .loop import Runtime, resolve_runtime

    joined = dist.is_available() and dist.is_initialized()
    if not joined and not launch_info().distributed:
        return Runtime(torch.device("cpu"))
    return resolve_runtime(device)
