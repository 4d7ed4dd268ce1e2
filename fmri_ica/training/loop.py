"""The training loop: Adam on cross-entropy, model selection on validation, exact resume.

One process, or several launched by torchrun / srun (DistributedDataParallel, see
:mod:`fmri_ica.training.distributed`). What differs between the two is kept in
:class:`Runtime` (device, rank, model wrapper, sampler, cross-rank reductions), and every
write happens only where ``runtime.is_main``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import numbers
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .._utils import (
    check_option,
    command_line,
    item_log_level,
    package_versions,
    seed_everything,
    write_json,
    write_text,
)
from .._utils import progress as progress_bar
from ..exceptions import InvalidParameterError
from . import distributed
from .checkpoint import (
    STATE_FILE,
    cpu_state_dict,
    get_rng_states,
    load_training_state,
    save_checkpoint,
    save_training_state,
    set_rng_states,
)
from .data import EpochSampler, as_dataset, fetch_batch, set_dataset_epoch
from .evaluation import check_labels, forward_all, loss_and_accuracy

__all__ = ["fit", "FitResult", "TrainingInterrupted", "Runtime", "DistributedRuntime",
           "resolve_runtime"]

logger = logging.getLogger(__name__)

STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name)
)
# Parameters that change the optimisation path: a resumed run must use the same ones.
_MUST_MATCH_ON_RESUME = ("lr", "batch_size", "weight_decay", "seed", "grad_clip", "class_weights")


@dataclass
class FitResult:
    """What :func:`fit` returns. Epochs count from 1; ``best_epoch`` 0 means none improved.

    ``best_*`` describe the epoch best on validation (the ``best/`` checkpoint);
    ``selected_epoch`` is the epoch whose weights the model ends with (``best_epoch``
    with ``selection="best"``, the last epoch with ``"last"``); ``early_best`` is True
    when that epoch is among the first ones (<= max(2, 10% of the epochs run)), so the
    model may be close to its initialisation. With ``out_dir``, the kept weights are in
    ``out_dir / selection`` (``best/`` or ``last/``) and the untrained ones in ``init/``.
    """

    best_epoch: int
    best_val_loss: float
    best_val_accuracy: float
    history: list[dict]
    stopped_early: bool
    out_dir: Path | None
    selection: str = "best"
    selected_epoch: int = 0
    early_best: bool = False


class TrainingInterrupted(SystemExit):
    """Raised by :func:`fit` after SIGTERM/SIGUSR1, once the training state is saved.

    A ``SystemExit`` (exit status 128 + signal number), so a script exits cleanly without a
    traceback and ``except Exception`` in batch loops does not swallow a preemption.
    """

    def __init__(self, signum: int, out_dir: Path, advice: str | None = None):
        super().__init__(128 + signum)
        self.signum, self.out_dir = signum, out_dir
        self.advice = advice or _resume_advice(out_dir, resumed=False)

    def __str__(self) -> str:
        return (
            f"Training stopped by {signal.Signals(self.signum).name}; state saved in "
            f"{self.out_dir}. {self.advice}"
        )


def _resume_advice(out_dir, resumed: bool) -> str:
    """How to continue an interrupted run: the caller that passed ``resume=True`` (the CLI,
    the pipeline, the benchmarks) continues by itself when run again."""
    command = command_line.get()
    if resumed and command:
        return f"Run the same command again to continue from there: {command}"
    if resumed:
        return "Run the same script again to continue from there (it passes resume=True to fit)."
    return f"To continue, call fit(..., resume=True) with out_dir={str(out_dir)!r}."


@dataclass(frozen=True)
class Runtime:
    """Where and as which process training runs: one process (this class) or several
    (:class:`DistributedRuntime`)."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and shows progress."""
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to train (DDP: ``DistributedDataParallel(model)``)."""
        return model

    def sampler(self, n: int, seed: int) -> EpochSampler:
        """Per-epoch index order; this rank's share of each global batch."""
        return EpochSampler(n, seed, rank=self.rank, world_size=self.world_size)

    def sum(self, values: list[float]) -> list[float]:
        """Sum over processes (DDP: ``all_reduce``)."""
        return values

    def any(self, flag: bool) -> bool:
        """True if any process says so (DDP: every rank must stop at the same step)."""
        return flag

    def max(self, value: int) -> int:
        """The largest ``value`` over processes (e.g. the signal that stops them all)."""
        return value

    def barrier(self) -> None:
        """Wait until every process gets here."""

    def broadcast(self, value):
        """The main process's ``value`` (small, picklable) on every process."""
        return value


@dataclass(frozen=True)
class DistributedRuntime(Runtime):
    """One of ``world_size`` processes of a torchrun / srun launch (process group joined)."""

    def _comm_device(self):
        return self.device if self.device.type == "cuda" else None

    def wrap(self, model: nn.Module) -> nn.Module:
        return distributed.wrap_ddp(model, self.device)

    def sum(self, values: list[float]) -> list[float]:
        return distributed.all_reduce(list(values), device=self._comm_device())

    def any(self, flag: bool) -> bool:
        return self.max(int(bool(flag))) > 0

    def max(self, value: int) -> int:
        reduced = distributed.all_reduce([value], op=distributed.dist.ReduceOp.MAX,
                                         device=self._comm_device())
        return int(reduced[0])

    def barrier(self) -> None:
        self.any(False)  # an all-reduce: works alike on gloo and NCCL

    def broadcast(self, value):
        return distributed.broadcast(value, device=self._comm_device())


def resolve_runtime(device=None) -> Runtime:
    """The :class:`Runtime` of this process; ``device=None`` picks CUDA if available, else CPU.

    Launched as several processes (torchrun's ``RANK``/``WORLD_SIZE``, or an srun step's
    ``SLURM_PROCID``/``SLURM_NTASKS``; see :mod:`fmri_ica.training.distributed`), or with a
    process group already initialised, this joins the group (once) and returns a
    :class:`DistributedRuntime`; on CUDA each process then uses ``cuda:LOCAL_RANK``.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidParameterError(
            f"Invalid value for 'device': {device!r} ({exc}). Use 'cpu', 'cuda' or 'cuda:0'."
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError(
            f"Invalid value for 'device': {str(device)!r}, but CUDA is not available here. "
            "Use device='cpu' or device=None."
        )
    if distributed.dist.is_available() and distributed.dist.is_initialized():
        rank, world_size = distributed.dist.get_rank(), distributed.dist.get_world_size()
    else:
        info = distributed.launch_info()
        if not info.distributed:
            return Runtime(device)
        rank, world_size = info.rank, info.world_size
    device = distributed.init_distributed(device)
    if world_size == 1:
        return Runtime(device)
    return DistributedRuntime(device, rank, world_size)


@dataclass
class _Progress:
    """Counters of a run; saved in the training state (plain numbers and lists only)."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed steps of the unfinished epoch
    global_step: int = 0
    best_epoch: int = 0
    best_val_loss: float = math.inf
    best_val_accuracy: float = -math.inf
    bad_epochs: int = 0
    stopped_early: bool = False
    loss_sum: float = 0.0  # running sums of the unfinished epoch
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0
    history: list = field(default_factory=list)


class _StopFlag:
    signum: int | None = None


@contextlib.contextmanager
def _stop_on_signals(flag: _StopFlag, enabled: bool):
    """Route SIGTERM/SIGUSR1 to ``flag`` (checked after every step) while inside."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # no logging here: a handler must not take locks
        flag.signum = signum

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def fit(
    model: nn.Module,
    train,
    val,
    *,
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 50,
    weight_decay: float = 0.0,
    patience: int | None = 10,
    min_epochs: int = 1,
    monitor: str = "val_loss",
    selection: str = "best",
    seed: int = 0,
    out_dir=None,
    device=None,
    progress: bool = True,
    resume: bool = False,
    grad_clip: float | None = None,
    class_weights=None,
    log_every: int = 1,
    eval_batch_size: int = 256,
    handle_signals: bool = True,
) -> FitResult:
    """Train ``model`` with Adam on cross-entropy; keep the best (or the last) weights.

    The loss is ``nn.CrossEntropyLoss`` on the logits (no softmax before it). After every
    epoch the model is scored on ``val``; with ``monitor="val_loss"`` (default: smoother
    than accuracy, which ties often on small sets) the best epoch has the lowest
    validation loss; with ``"val_accuracy"`` the highest accuracy, ties broken by loss.
    No epoch before ``min_epochs`` counts as best. With ``selection="best"`` training
    stops after ``patience`` epochs without improvement (never before ``min_epochs``) and
    the model ends with the best weights; with ``selection="last"`` it trains all
    ``epochs`` and keeps the final weights. Either way it ends in eval mode, and a warning
    is logged (``FitResult.early_best``) when the kept epoch is among the first ones. A
    test set never enters here.

    On small cohorts a validation set of a few subjects is noisy: its best epoch is often
    the first, an essentially untrained network. There, prefer ``selection="last"`` with
    ``weight_decay`` (e.g. 0.01), a fixed budget of ``epochs`` and many windows per run
    (:class:`~fmri_ica.training.data.RunCropDataset`), and compare the result with the
    untrained weights saved in ``out_dir/init``.

    Launched as several processes (``torchrun --nproc_per_node=N``, or ``srun`` with N
    tasks; see :mod:`fmri_ica.training.distributed`), every process calls ``fit`` with the
    same arguments and the model trains under DistributedDataParallel (NCCL on CUDA, one
    GPU per process; gloo on the CPU). ``batch_size`` is then the *global* batch: each
    step, every process takes a strided share of the same global batch of the same seeded
    order, and the loss is normalised over the whole global batch, so the weights equal
    those of one process with the same ``batch_size`` up to float rounding (for models
    without dropout: dropout masks are drawn per process; and Adam turns rounding in
    near-zero gradients into full steps, so poorly conditioned models drift apart).
    Metrics are summed over processes; validation runs on every process over all of
    ``val``; only rank 0 writes files; a signal to any process stops them all at the same
    step. A training state saved by N processes resumes in M (steps count global batches).

    Parameters
    ----------
    model : torch.nn.Module
        Called as ``model(x, lengths=lengths)`` -> logits (batch, n_classes), with ``x``
        on ``device`` and ``lengths`` (batch,) on the CPU (where ``pack_padded_sequence``
        wants them) or None. Trained in place and moved to ``device``. Build it after
        seeding for a reproducible start.
    train, val : Dataset or tuple (x, y[, lengths])
        ``x`` (n, time, features) float, ``y`` (n,) int, ``lengths`` (n,) int; a Dataset
        yields ``(x, y)`` or ``(x, y, length)`` (see :class:`SequenceDataset`). A Dataset
        with ``get_batch(indices)`` is batched in one indexing operation; if ``train`` (or
        the data set inside a ``Subset``) has ``set_epoch``, it is called with the epoch
        number (from 0) before each epoch (e.g. :class:`RunCropDataset` draws new crops).
    epochs : int, default=100
        Maximum number of epochs (in total, counting epochs done before a resume).
    lr, weight_decay : float, default=1e-3, 0.0
        Adam's learning rate and L2 penalty.
    batch_size : int, default=50
        Samples per optimiser step, over all processes together.
    patience : int or None, default=10
        Epochs without improvement before stopping; None trains all ``epochs``. Must be
        None with ``selection="last"``.
    min_epochs : int, default=1
        No early stop before this epoch, and no epoch before it is chosen as best (if
        ``epochs < min_epochs``, only the last epoch can be).
    monitor : {"val_loss", "val_accuracy"}, default="val_loss"
    selection : {"best", "last"}, default="best"
        Which weights the model ends with: those of the best epoch on ``val``, or those
        of the last epoch (robust when the validation set is small; ``val`` is then
        monitored only for the metrics and the ``best/`` checkpoint).
    seed : int, default=0
        Seeds torch/NumPy/Python (dropout) and, with the epoch, the shuffling (its own
        ``torch.Generator``). On CPU the same seed and model give bitwise-identical
        weights. On GPU cuDNN's fused RNN kernels are used; their backward pass is not
        bitwise deterministic, so GPU runs agree only to rounding.
    out_dir : str or Path, optional
        Writes ``metrics.jsonl`` (one JSON line per epoch with the keys ``epoch,
        train_loss, train_acc, val_loss, val_acc, lr, seconds``; train figures are means
        over the epoch's batches in train mode), checkpoints ``init/`` (the weights
        before training, written once: the untrained null model), ``best/`` and
        ``last/`` (``model.pt`` + ``model.json``, load with :func:`load_model`),
        ``training_state.pt`` (to resume) and ``fit_result.json``.
    device : str or torch.device, optional
        None: "cuda" if available, else "cpu".
    progress : bool, default=True
        A progress bar over epochs with the latest losses and accuracy (on stderr, when it
        is a terminal). While the bar shows, the per-epoch log lines are at DEBUG, else
        at INFO (see :func:`fmri_ica.enable_logging`).
    resume : bool, default=False
        Continue from ``out_dir/training_state.pt`` if there is one (else start afresh):
        the final weights are bitwise those of an uninterrupted run (on CPU). A finished
        run is not repeated. Without ``resume``, an ``out_dir`` holding a run is an error.
    grad_clip : float, optional
        Clip the gradient norm to this value.
    class_weights : array-like, shape (n_classes,), optional
        Weights of ``nn.CrossEntropyLoss`` (also used for the validation loss).
    log_every : int, default=1
        Log a line every this many epochs.
    eval_batch_size : int, default=256
        Batch size for validation.
    handle_signals : bool, default=True
        With ``out_dir``: on SIGTERM or SIGUSR1 (what SLURM sends before preemption or
        the time limit), finish the current step, save the training state and raise
        :class:`TrainingInterrupted` (exit status 128 + signal).

    Returns
    -------
    FitResult

    Raises
    ------
    InvalidParameterError
        A bad parameter (named in the message).
    InputDataError
        Labels beyond the model's classes, non-finite inputs.
    FloatingPointError
        The training loss became NaN or infinite.
    TrainingInterrupted
        After SIGTERM/SIGUSR1, once the state is saved.
    """
    params = _check_params(
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        weight_decay=weight_decay,
        patience=patience,
        min_epochs=min_epochs,
        monitor=monitor,
        selection=selection,
        seed=seed,
        grad_clip=grad_clip,
        class_weights=class_weights,
        log_every=log_every,
        eval_batch_size=eval_batch_size,
    )
    train_ds, val_ds = as_dataset(train, "train"), as_dataset(val, "val")
    out = _check_out_dir(out_dir, resume)
    runtime = resolve_runtime(device)
    model.to(runtime.device)
    weights = params["class_weights"]
    weights = None if weights is None else torch.tensor(weights, dtype=torch.float32)
    criterion = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(runtime.device))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    prog, best = _start(model, optimizer, out, params, resume, runtime)
    loop = _Loop(model, runtime.wrap(model), optimizer, criterion, weights, params, runtime, out,
                 resume)
    loop.best_state = best  # CPU copy of the best weights so far
    flag = _StopFlag()
    bar = progress_bar(
        total=epochs,
        initial=min(prog.epoch, epochs),
        desc="fit",
        enabled=progress and runtime.is_main,
    )
    if runtime.is_main:
        logger.debug(
            "Training %s for up to %d epochs on %s: %d training and %d validation samples%s.",
            type(model).__name__, epochs, runtime.device, len(train_ds), len(val_ds),
            "" if out is None else f", saving to {out}",
        )
    with bar, _stop_on_signals(flag, handle_signals and out is not None):
        while prog.epoch < epochs and not prog.stopped_early:
            loop.run_epoch(prog, train_ds, val_ds, flag)
            record = prog.history[-1]
            bar.set_postfix(
                loss=record["train_loss"],
                val_loss=record["val_loss"],
                val_acc=record["val_acc"],
                refresh=False,
            )
            bar.update(1)
            logged = prog.epoch % log_every == 0 or prog.stopped_early or prog.epoch == epochs
            if logged and runtime.is_main:
                _log_epoch(record, epochs, prog, item_log_level(bar))
            finished = prog.epoch >= epochs or prog.stopped_early
            signum = runtime.max(flag.signum or 0)  # every rank stops at the same step
            if signum and not finished:
                loop.interrupt(prog, signum)
    if selection == "best":
        model.load_state_dict(loop.best_state)
    model.eval()
    result = _result(prog, selection, out, warn=runtime.is_main)
    if runtime.is_main:
        _log_summary(result)
    if out is not None and runtime.is_main:
        write_json(
            out / "fit_result.json",
            {**asdict(result), "params": params, "versions": package_versions()},
        )
    runtime.barrier()  # the outputs are on disk before any rank reads them
    signum = runtime.max(flag.signum or 0)
    if signum:  # arrived during the last epoch: the run is complete, still exit
        loop.interrupt(prog, signum, save=False)
    return result


def _result(prog: _Progress, selection: str, out: Path | None, warn: bool = True) -> FitResult:
    """The :class:`FitResult`, with a warning when the kept epoch is among the first ones."""
    n_run = len(prog.history)
    selected = prog.best_epoch if selection == "best" else n_run
    early = selected <= max(2, int(0.1 * n_run))
    if early and warn:
        advice = (
            "Train more epochs."
            if selection == "last"
            else "On a small validation set, use selection='last' with weight_decay and a "
            "fixed number of epochs, or raise min_epochs."
        )
        logger.warning(
            "The kept weights are those of epoch %d of %d (selection=%r): the model may be "
            "close to its initialisation%s. %s",
            selected,
            n_run,
            selection,
            "" if out is None else f" (compare with the untrained weights in {out / 'init'})",
            advice,
        )
    return FitResult(
        prog.best_epoch,
        prog.best_val_loss,
        prog.best_val_accuracy,
        prog.history,
        prog.stopped_early,
        out,
        selection=selection,
        selected_epoch=selected,
        early_best=early,
    )


class _Loop:
    """The state-changing parts of :func:`fit`: steps, epoch ends, saving."""

    def __init__(self, model, net, optimizer, criterion, weights, params, runtime, out, resumed):
        self.model, self.net, self.optimizer, self.criterion = model, net, optimizer, criterion
        self.weights, self.params, self.runtime, self.out = weights, params, runtime, out
        self.resumed = resumed  # fit(resume=True): running the caller again continues
        self.best_state: dict = {}

    def run_epoch(self, prog: _Progress, train_ds, val_ds, flag: _StopFlag) -> None:
        """One epoch (or its remainder after a mid-epoch resume), then validate and save."""
        started = time.perf_counter()
        sampler = self.runtime.sampler(len(train_ds), self.params["seed"])
        sampler.set_epoch(prog.epoch)
        set_dataset_epoch(train_ds, prog.epoch)
        self.net.train()
        batches = sampler.local_batches(self.params["batch_size"], start=prog.step)
        for indices, n_real in batches:
            x, y, lengths = fetch_batch(train_ds, indices)
            self.step(prog, x, y, lengths, n_real)
            signum = self.runtime.max(flag.signum or 0)  # every rank stops at the same step
            if signum:
                prog.seconds += time.perf_counter() - started
                self.interrupt(prog, signum)
        prog.seconds += time.perf_counter() - started
        self.end_epoch(prog, val_ds)

    def step(self, prog: _Progress, x, y, lengths, n_real: int | None = None) -> None:
        """One optimiser step on this rank's ``n_real`` samples of a global batch."""
        device = self.runtime.device
        n_real = len(y) if n_real is None else n_real
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.net(x.to(device), lengths=lengths)  # lengths stay on the CPU
        check_labels(y, logits.shape[1])
        y_dev = y.to(device)
        if self.runtime.world_size == 1:
            loss = self.criterion(logits, y_dev)
            batch_loss = loss.detach().item()
        else:
            loss, batch_loss = self.shared_loss(logits, y_dev, n_real)
        if not math.isfinite(batch_loss):
            raise FloatingPointError(
                f"The training loss is {batch_loss} at epoch {prog.epoch + 1}, step "
                f"{prog.step + 1}. Lower 'lr', set 'grad_clip', or check the inputs' scale."
            )
        loss.backward()
        if self.params["grad_clip"] is not None:
            nn.utils.clip_grad_norm_(self.net.parameters(), self.params["grad_clip"])
        self.optimizer.step()
        prog.loss_sum += batch_loss * n_real
        prog.correct += int((logits.argmax(1) == y_dev)[:n_real].sum())
        prog.seen += n_real
        prog.step += 1
        prog.global_step += 1

    def shared_loss(self, logits, y, n_real: int) -> tuple[torch.Tensor, float]:
        """This rank's part of the global batch's loss, and that loss (a float).

        ``CrossEntropyLoss`` is a (weighted) mean over the global batch: sum of ``w[y] *
        loss`` over sum of ``w[y]``. Each rank backpropagates its own numerator over the
        global denominator, times ``world_size`` since DDP averages the gradients: the
        result is one process's gradient on the whole global batch, whatever the split.
        """
        weight = self.criterion.weight
        per_sample = F.cross_entropy(logits, y, weight=weight, reduction="none")
        keep = (torch.arange(len(y), device=y.device) < n_real).to(per_sample.dtype)
        w = keep if weight is None else weight[y].to(per_sample.dtype) * keep
        numerator = (per_sample * keep).sum()
        total, denominator = self.runtime.sum([numerator.item(), w.sum().item()])
        loss = numerator * (self.runtime.world_size / denominator)
        return loss, total / denominator

    def end_epoch(self, prog: _Progress, val_ds) -> None:
        """Validate, update best and early stopping, record the metrics and save."""
        logits, labels = forward_all(
            self.model, val_ds, self.params["eval_batch_size"], self.runtime.device
        )
        val_loss, val_acc = loss_and_accuracy(logits, labels, self.weights)
        loss_sum, correct, seen = self.runtime.sum([prog.loss_sum, prog.correct, prog.seen])
        prog.epoch += 1
        record = {
            "epoch": prog.epoch,
            "train_loss": loss_sum / seen,
            "train_acc": correct / seen,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": prog.seconds,
        }
        prog.history.append(record)
        prog.step, prog.loss_sum, prog.correct, prog.seen, prog.seconds = 0, 0.0, 0, 0, 0.0
        # min(...): with epochs < min_epochs the last epoch must stay eligible, or the
        # untrained weights would be kept.
        eligible = prog.epoch >= min(self.params["min_epochs"], self.params["epochs"])
        improved = eligible and _improved(self.params["monitor"], val_loss, val_acc, prog)
        if improved:
            prog.best_epoch, prog.best_val_loss, prog.best_val_accuracy = (
                prog.epoch,
                val_loss,
                val_acc,
            )
            prog.bad_epochs = 0
            self.best_state = cpu_state_dict(self.model)
        elif eligible:
            prog.bad_epochs += 1
        patience = self.params["patience"]
        if (
            patience is not None
            and prog.bad_epochs >= patience
            and prog.epoch >= self.params["min_epochs"]
        ):
            prog.stopped_early = True
        self.save(prog, record, improved)

    def save(self, prog: _Progress, record: dict | None = None, improved: bool = False) -> None:
        """Metrics line, ``best/`` (if improved), ``last/``, then the training state.

        The training state is written last: it is the commit point a resume starts from.
        """
        if self.out is None or not self.runtime.is_main:
            return
        if record is not None:
            with open(self.out / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
        extra = {"training": self.params, "metrics": record, "global_step": prog.global_step}
        if improved:
            save_checkpoint(self.out / "best", self.model, epoch=prog.epoch, extra=extra)
        save_checkpoint(self.out / "last", self.model, epoch=prog.epoch, extra=extra)
        state = {
            "format": 1,
            "params": self.params,
            "progress": asdict(prog),
            "model": cpu_state_dict(self.model),
            "best_model": self.best_state,
            "optimizer": self.optimizer.state_dict(),
            "rng": get_rng_states(),
        }
        save_training_state(self.out, state)

    def interrupt(self, prog: _Progress, signum: int, save: bool = True) -> None:
        """Save the state at this step boundary and raise :class:`TrainingInterrupted`.

        Every rank calls this at the same step; the main one saves the epoch's running sums
        over all ranks, and the others wait for it (a launcher that sees one process exit
        stops the rest).
        """
        if save:
            loss_sum, correct, seen = self.runtime.sum([prog.loss_sum, prog.correct, prog.seen])
            self.save(replace(prog, loss_sum=loss_sum, correct=int(correct), seen=int(seen)))
            self.runtime.barrier()
        error = TrainingInterrupted(signum, self.out, _resume_advice(self.out, self.resumed))
        if not self.runtime.is_main:
            raise error
        logger.warning(
            "Received %s: saved the training state after epoch %d step %d (global step %d) "
            "to %s; exiting with status %d. %s",
            signal.Signals(signum).name,
            prog.epoch,
            prog.step,
            prog.global_step,
            self.out,
            error.code,
            error.advice,
        )
        raise error


def _improved(monitor: str, val_loss: float, val_acc: float, prog: _Progress) -> bool:
    if monitor == "val_loss":
        return val_loss < prog.best_val_loss
    return val_acc > prog.best_val_accuracy or (
        val_acc == prog.best_val_accuracy and val_loss < prog.best_val_loss
    )


def _log_epoch(record: dict, epochs: int, prog: _Progress, level: int = logging.INFO) -> None:
    logger.log(
        level,
        "epoch %d/%d: train loss %.4f acc %.3f | val loss %.4f acc %.3f | %.1f s%s",
        record["epoch"],
        epochs,
        record["train_loss"],
        record["train_acc"],
        record["val_loss"],
        record["val_acc"],
        record["seconds"],
        f" | stopping early, best epoch {prog.best_epoch}" if prog.stopped_early else "",
    )


def _log_summary(result: FitResult) -> None:
    """One INFO line at the end: what the bar showed last, and which weights were kept."""
    if not result.history or result.selected_epoch < 1:
        return
    kept = result.history[result.selected_epoch - 1]
    logger.info(
        "Trained %d epochs in %.1f s; kept epoch %d (selection=%r): val loss %.4f acc %.3f.",
        len(result.history),
        sum(r["seconds"] for r in result.history),
        result.selected_epoch,
        result.selection,
        kept["val_loss"],
        kept["val_acc"],
    )


def _start(model, optimizer, out, params, resume, runtime) -> tuple[_Progress, dict]:
    """Fresh counters and seeds, or everything restored from ``out``'s training state."""
    state = load_training_state(out) if resume and out is not None else None
    if state is None:
        if resume and runtime.is_main:
            logger.info("No training state in %s: starting from scratch.", out)
        seed_everything(params["seed"])
        if out is not None and runtime.is_main:
            write_text(out / "metrics.jsonl", "")
            save_checkpoint(out / "init", model, epoch=0, extra={"training": params})
        return _Progress(), cpu_state_dict(model)
    for name in _MUST_MATCH_ON_RESUME:
        if state["params"][name] != params[name]:
            raise InvalidParameterError(
                f"Invalid value for {name!r} with resume=True: {params[name]!r}, but the run in "
                f"{str(out)!r} used {state['params'][name]!r}. Use the same value, or a new out_dir."
            )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    set_rng_states(state["rng"])
    prog = _Progress(**state["progress"])
    if not runtime.is_main:  # the saved running sums are over all ranks: count them once
        prog.loss_sum, prog.correct, prog.seen = 0.0, 0, 0
    if runtime.is_main:  # drop lines written after the state was saved (a crash between)
        write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in prog.history))
    if runtime.is_main:
        logger.info("Resuming %s after epoch %d, step %d.", out, prog.epoch, prog.step)
    return prog, state["best_model"]


def _check_out_dir(out_dir, resume: bool) -> Path | None:
    if out_dir is None:
        if resume:
            raise InvalidParameterError("resume=True needs 'out_dir' (where the state is saved).")
        return None
    out = Path(out_dir)
    if not resume and (out / STATE_FILE).exists():
        raise InvalidParameterError(
            f"Invalid value for 'out_dir': {str(out)!r} already holds a training run. Pass "
            "resume=True to continue it, or choose (or empty) another folder."
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def _check_params(**p) -> dict:
    """Validate :func:`fit`'s numeric parameters; return them JSON-ready."""
    for name in ("epochs", "batch_size", "min_epochs", "log_every", "eval_batch_size"):
        _check_int(name, p[name], 1)
    _check_int("seed", p["seed"], 0)
    if p["patience"] is not None:
        _check_int("patience", p["patience"], 1)
    _check_float("lr", p["lr"], positive=True)
    _check_float("weight_decay", p["weight_decay"], positive=False)
    if p["grad_clip"] is not None:
        _check_float("grad_clip", p["grad_clip"], positive=True)
    check_option("monitor", p["monitor"], ("val_loss", "val_accuracy"))
    check_option("selection", p["selection"], ("best", "last"))
    if p["selection"] == "last" and p["patience"] is not None:
        raise InvalidParameterError(
            f"Invalid value for 'patience': {p['patience']!r} with selection='last'. Keeping "
            "the last weights means training the full budget of 'epochs': pass patience=None "
            "(or selection='best' for early stopping)."
        )
    if p["class_weights"] is not None:
        p["class_weights"] = _check_class_weights(p["class_weights"])
    for name in ("epochs", "batch_size", "min_epochs", "log_every", "eval_batch_size", "seed"):
        p[name] = int(p[name])  # NumPy integers -> int, for JSON and torch
    p["lr"], p["weight_decay"] = float(p["lr"]), float(p["weight_decay"])
    return p


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidParameterError(
            f"Invalid value for {name!r}: {value!r}. Expected an integer >= {minimum}."
        )


def _check_float(name: str, value, positive: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        raise InvalidParameterError(
            f"Invalid value for {name!r}: {value!r}. Expected a finite number "
            f"{'> 0' if positive else '>= 0'}."
        )


def _check_class_weights(value) -> list[float]:
    weights = torch.as_tensor(value, dtype=torch.float64)
    if (
        weights.ndim != 1
        or not torch.isfinite(weights).all()
        or (weights < 0).any()
        or weights.sum() <= 0
    ):
        raise InvalidParameterError(
            f"Invalid value for 'class_weights': {value!r}. Expected one finite weight >= 0 "
            "per class, not all zero."
        )
    return weights.tolist()
