"""Data sets and batching for the trainer: padded sequences in memory, seeded shuffling,
random crops of whole runs, sliding windows."""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, default_collate

from ..exceptions import InputDataError, InvalidParameterError

__all__ = [
    "SequenceDataset",
    "RunCropDataset",
    "EpochSampler",
    "as_dataset",
    "fetch_batch",
    "iter_batches",
    "set_dataset_epoch",
    "sliding_windows",
]

logger = logging.getLogger(__name__)


class SequenceDataset(Dataset):
    """Padded sequences with labels (and optionally true lengths), held in memory.

    Parameters
    ----------
    x : array-like, shape (n, time, features)
        Inputs, converted to float32. Padded steps (beyond ``lengths``) may hold anything
        finite; models that take ``lengths`` ignore them.
    y : array-like of int, shape (n,)
        Class labels in ``0 .. n_classes - 1``.
    lengths : array-like of int, shape (n,), optional
        Number of valid steps per sample (``1 <= length <= time``). None: all steps valid.

    Raises
    ------
    InvalidParameterError
        Wrong number of dimensions, or ``y``/``lengths`` not matching ``x``'s first axis.
    InputDataError
        Non-finite inputs or negative labels.
    """

    def __init__(self, x, y, lengths=None):
        self.x = _as_tensor(x, "x", torch.float32)
        self.y = _as_tensor(y, "y", torch.long)
        self.lengths = None if lengths is None else _as_tensor(lengths, "lengths", torch.long)
        _check_shapes(self.x, self.y, self.lengths)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index):
        if self.lengths is None:
            return self.x[index], self.y[index]
        return self.x[index], self.y[index], self.lengths[index]

    def get_batch(self, indices: torch.Tensor):
        """``(x, y, lengths or None)`` for ``indices`` in one indexing operation."""
        lengths = None if self.lengths is None else self.lengths[indices]
        return self.x[indices], self.y[indices], lengths


def _as_tensor(value, name: str, dtype: torch.dtype) -> torch.Tensor:
    try:
        if isinstance(value, torch.Tensor):
            return value.detach().to(dtype)
        return torch.as_tensor(np.asarray(value), dtype=dtype)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InvalidParameterError(
            f"Invalid value for {name!r}: cannot convert {type(value).__name__} to a "
            f"{dtype} tensor ({exc}). Pass a numpy array or torch tensor."
        ) from exc


def _check_shapes(x: torch.Tensor, y: torch.Tensor, lengths: torch.Tensor | None) -> None:
    if x.ndim != 3:
        raise InvalidParameterError(
            f"Invalid value for 'x': expected shape (n, time, features), got {tuple(x.shape)}."
        )
    n, time = x.shape[:2]
    if y.shape != (n,):
        raise InvalidParameterError(
            f"Invalid value for 'y': expected shape ({n},) to match 'x' {tuple(x.shape)}, "
            f"got {tuple(y.shape)}. Give one label per sample."
        )
    if lengths is not None:
        if lengths.shape != (n,):
            raise InvalidParameterError(
                f"Invalid value for 'lengths': expected shape ({n},) to match 'x', "
                f"got {tuple(lengths.shape)}."
            )
        if n and (lengths.min() < 1 or lengths.max() > time):
            raise InvalidParameterError(
                f"Invalid value for 'lengths': values must lie in 1..{time} (the time axis "
                f"of 'x'), got {int(lengths.min())}..{int(lengths.max())}."
            )
    if n and y.min() < 0:
        raise InputDataError(f"'y' holds negative labels ({int(y.min())}); use 0 .. n_classes-1.")
    if not torch.isfinite(x).all():
        raise InputDataError(
            f"'x' holds {int((~torch.isfinite(x)).sum())} non-finite values; "
            "fill padding with 0 and clean NaNs before training."
        )


def as_dataset(data, name: str) -> Dataset:
    """A ``Dataset`` from a ``Dataset`` or a tuple ``(x, y)`` / ``(x, y, lengths)``.

    Raises
    ------
    InvalidParameterError
        If ``data`` is neither, naming ``name``; or if it is empty.
    """
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        data = SequenceDataset(*data)
    if not isinstance(data, Dataset) or not hasattr(data, "__len__"):
        raise InvalidParameterError(
            f"Invalid value for {name!r}: expected a torch Dataset with __len__ yielding "
            f"(x, y) or (x, y, length), or a tuple (x, y[, lengths]); got {type(data).__name__}."
        )
    if len(data) == 0:
        raise InvalidParameterError(f"Invalid value for {name!r}: the data set is empty.")
    return data


class EpochSampler:
    """Sample indices ``0..n-1``; shuffled with a generator seeded by ``seed + epoch``.

    The order is a pure function of ``(seed, epoch)``, as in
    ``torch.utils.data.DistributedSampler``, so resuming needs only the epoch number: no
    generator state is carried between epochs. With ``world_size > 1`` every rank draws the
    same permutation, cuts it into the same global batches as one process would, and takes
    the strided share ``batch[rank::world_size]`` of each (:meth:`local_batches`): the ranks'
    shares are disjoint and together are exactly one process's batches, so a run's steps
    (and a saved step count) mean the same in any number of processes.

    Parameters
    ----------
    n : int
        Number of samples.
    seed : int, default=0
    shuffle : bool, default=True
    rank, world_size : int, default=0, 1
        This process's rank among ``world_size`` processes.
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, *, rank: int = 0,
                 world_size: int = 1):
        if not 0 <= rank < world_size:
            raise InvalidParameterError(
                f"Invalid value for 'rank': {rank}. Expected 0 <= rank < world_size ({world_size})."
            )
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def local_batches(self, batch_size: int, start: int = 0) -> Iterator[tuple[torch.Tensor, int]]:
        """This rank's share of each global batch, from global batch ``start`` on.

        Yields
        ------
        indices : torch.Tensor of int64, shape (k,)
            ``batch[rank::world_size]``. When a (last) global batch has fewer samples than
            there are ranks, a rank with no share gets the batch's first index so that it
            still takes part in the step; ``n_real`` is then 0 and it must weigh it 0.
        n_real : int
            How many of ``indices`` are this rank's share.
        """
        order = torch.as_tensor(list(self), dtype=torch.long)
        for chunk in order.split(batch_size)[start:]:
            share = chunk[self.rank :: self.world_size]
            yield (share, len(share)) if len(share) else (chunk[:1], 0)


def iter_batches(dataset: Dataset, indices, batch_size: int, start: int = 0):
    """Yield ``(x, y, lengths or None)`` batches of ``indices``, skipping the first ``start``.

    ``x``: (batch, time, features) float, ``y``: (batch,) long, ``lengths``: (batch,) long.
    """
    indices = torch.as_tensor(list(indices), dtype=torch.long)
    for chunk in indices.split(batch_size)[start:]:
        yield fetch_batch(dataset, chunk)


def fetch_batch(dataset: Dataset, chunk: torch.Tensor):
    """``(x, y, lengths or None)`` of the items ``chunk`` (int64 tensor) of ``dataset``,
    through Subsets, in one ``get_batch`` call where the data set has one."""
    base, index = dataset, chunk
    while isinstance(base, Subset):
        index, base = torch.as_tensor(base.indices, dtype=torch.long)[index], base.dataset
    if hasattr(base, "get_batch"):  # one indexing operation, no per-item collate
        return base.get_batch(index)
    items = default_collate([dataset[i] for i in chunk.tolist()])
    if len(items) not in (2, 3):
        raise InputDataError(
            f"The data set yielded {len(items)}-tuples; expected (x, y) or (x, y, length)."
        )
    x, y = items[0].float(), items[1].long()
    lengths = items[2].long() if len(items) == 3 else None
    return x, y, lengths


def set_dataset_epoch(dataset: Dataset, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on ``dataset`` (or the data set inside Subsets) if it has one."""
    base = dataset
    while isinstance(base, Subset) and not hasattr(base, "set_epoch"):
        base = base.dataset
    if hasattr(base, "set_epoch"):
        base.set_epoch(epoch)


class RunCropDataset(Dataset):
    """Random windows of whole runs, drawn afresh every epoch: many samples per run.

    Item ``i`` is crop ``i % crops_per_run`` of run ``i // crops_per_run``: ``window``
    frames from a start drawn uniformly in ``0 .. length - window``. A run shorter than
    ``window`` gives the whole run, zero-padded, with its true length (beware: if run
    length differs between classes, it gives the class away). Optional Gaussian noise is
    added to the valid frames. Every crop is a pure function of ``(seed, epoch, i)``, as
    :class:`EpochSampler`'s order is of ``(seed, epoch)``, so resuming needs only the
    epoch; :func:`fmri_ica.training.fit` calls :meth:`set_epoch` at the start of each
    epoch. A data set passed as ``val`` stays at epoch 0: a fixed set of crops.

    Parameters
    ----------
    x : array-like, shape (n_runs, max_time, features)
        Whole runs, zero-padded after each run's length.
    y : array-like of int, shape (n_runs,)
        Class of each run.
    lengths : array-like of int, shape (n_runs,)
        Valid frames per run (``1 <= length <= max_time``).
    window : int
        Frames per crop.
    crops_per_run : int, default=16
        Crops per run and epoch (the data set has ``n_runs * crops_per_run`` items).
    seed : int, default=0
        Seeds the crop starts and the noise, with the epoch (and item).
    noise_std : float, default=0.0
        Standard deviation of Gaussian noise added to the crops' valid frames.

    Raises
    ------
    InvalidParameterError
        Bad shapes or parameter values (named in the message).
    InputDataError
        Non-finite inputs or negative labels.

    Examples
    --------
    >>> import numpy as np
    >>> data = RunCropDataset(np.zeros((3, 150, 20)), [0, 1, 2], [150, 120, 40], window=50)
    >>> data.set_epoch(1)
    >>> x, y, lengths = data.get_batch(torch.arange(len(data)))
    >>> tuple(x.shape), lengths.tolist()[-1]
    ((12, 50, 20), 40)
    """

    def __init__(self, x, y, lengths, *, window, crops_per_run=16, seed=0, noise_std=0.0):
        if lengths is None:
            raise InvalidParameterError(
                "Invalid value for 'lengths': None. RunCropDataset needs each run's number "
                "of valid frames, shape (n_runs,)."
            )
        x = _as_tensor(x, "x", torch.float32)
        self.y = _as_tensor(y, "y", torch.long)
        self.lengths = _as_tensor(lengths, "lengths", torch.long)
        _check_shapes(x, self.y, self.lengths)
        self.window = _check_count("window", window, 1)
        self.crops_per_run = _check_count("crops_per_run", crops_per_run, 1)
        self.seed = _check_count("seed", seed, 0)
        self.noise_std = _check_noise(noise_std)
        self.x = _pad_time(x, self.window)
        short = int((self.lengths < self.window).sum())
        if short:
            logger.warning(
                "%d of %d runs are shorter than the window of %d frames: their crops are "
                "the whole runs with their true lengths (length can give the class away).",
                short, len(self.y), self.window,
            )  # fmt: skip
        self.set_epoch(0)

    def __len__(self) -> int:
        return len(self.y) * self.crops_per_run

    def set_epoch(self, epoch: int) -> None:
        """Draw the crop starts of ``epoch`` (a pure function of ``seed`` and ``epoch``)."""
        self.epoch = _check_count("epoch", epoch, 0)
        rng = np.random.default_rng([self.seed, self.epoch])
        room = (self.lengths - self.window).clamp(min=0).numpy()
        starts = rng.integers(0, np.repeat(room, self.crops_per_run) + 1)
        self.starts = torch.as_tensor(starts, dtype=torch.long)
        self.noise_seeds = rng.integers(0, 2**63, size=len(self)).tolist()

    def __getitem__(self, index):
        x, y, lengths = self.get_batch(torch.as_tensor([int(index)]))
        return x[0], y[0], lengths[0]

    def get_batch(self, indices: torch.Tensor):
        """``(x (batch, window, features), y (batch,), lengths (batch,))`` for ``indices``."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        if indices.numel() and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"RunCropDataset index out of range 0..{len(self) - 1}.")
        runs = indices // self.crops_per_run
        crop_lengths = self.lengths[runs].clamp(max=self.window)
        x = self._crops(runs, self.starts[indices], crop_lengths)
        if self.noise_std > 0:
            x += self.noise_std * self._noise(indices, x.shape[2]) * _valid(crop_lengths, self.window)
        return x, self.y[runs], crop_lengths

    def _crops(self, runs, starts, crop_lengths) -> torch.Tensor:
        """(batch, window, features) crops of ``runs``, zero beyond ``crop_lengths``; a data
        set that keeps its runs elsewhere (e.g. memory-mapped) overrides this."""
        return _gather(self.x, runs, starts, crop_lengths, self.window)

    def _noise(self, indices: torch.Tensor, n_features: int) -> torch.Tensor:
        # One seed per item keeps an item's noise independent of its batch.
        noise = torch.empty(len(indices), self.window, n_features)
        generator = torch.Generator()
        for row, i in zip(noise, indices.tolist(), strict=True):
            torch.randn(row.shape, generator=generator.manual_seed(self.noise_seeds[i]), out=row)
        return noise


def sliding_windows(x, lengths, window: int, step: int):
    """Windows of ``window`` frames every ``step`` frames over whole runs.

    The last window of each run ends flush with the run's end, so every valid frame is in
    at least one window. A run shorter than ``window`` gives one window, the whole run
    zero-padded, with its true length.

    Parameters
    ----------
    x : array-like, shape (n_runs, max_time, features)
        Whole runs, zero-padded after each run's length.
    lengths : array-like of int, shape (n_runs,)
        Valid frames per run.
    window, step : int
        Window length and stride, in frames.

    Returns
    -------
    windows : ndarray, shape (n_windows, window, features), float32
        Zero after each window's length.
    lengths : ndarray, shape (n_windows,), int64
        Valid frames per window (``window``, or the run's length if shorter).
    run_index : ndarray, shape (n_windows,), int64
        The run each window comes from (windows of a run are contiguous, in time order).
    starts : ndarray, shape (n_windows,), int64
        First frame of each window in its run.

    Examples
    --------
    >>> import numpy as np
    >>> _, _, runs, starts = sliding_windows(np.ones((2, 9, 3)), [9, 4], window=5, step=3)
    >>> runs.tolist(), starts.tolist()
    ([0, 0, 0, 1], [0, 3, 4, 0])
    """
    x_t = _as_tensor(x, "x", torch.float32)
    run_lengths = _as_tensor(lengths, "lengths", torch.long)
    _check_shapes(x_t, torch.zeros(len(x_t), dtype=torch.long), run_lengths)
    window, step = _check_count("window", window, 1), _check_count("step", step, 1)
    starts = [_window_starts(int(n), window, step) for n in run_lengths.tolist()]
    run_index = torch.repeat_interleave(torch.as_tensor([len(s) for s in starts]))
    starts = torch.as_tensor(np.concatenate(starts), dtype=torch.long)
    crop_lengths = run_lengths[run_index].clamp(max=window)
    windows = _gather(_pad_time(x_t, window), run_index, starts, crop_lengths, window)
    return windows.numpy(), crop_lengths.numpy(), run_index.numpy(), starts.numpy()


def _window_starts(length: int, window: int, step: int) -> np.ndarray:
    last = max(length - window, 0)
    starts = np.arange(0, last + 1, step)
    return starts if starts[-1] == last else np.append(starts, last)


def _gather(x, runs, starts, crop_lengths, window: int) -> torch.Tensor:
    """Crops (len(runs), window, features) of ``x`` in one indexing operation, zero
    beyond each crop's length."""
    frames = starts[:, None] + torch.arange(window)
    return x[runs[:, None], frames] * _valid(crop_lengths, window)


def _valid(crop_lengths: torch.Tensor, window: int) -> torch.Tensor:
    """(batch, window, 1) float mask of the valid frames."""
    return (torch.arange(window) < crop_lengths[:, None]).unsqueeze(-1).float()


def _pad_time(x: torch.Tensor, window: int) -> torch.Tensor:
    """``x`` with zeros appended on the time axis up to ``window`` frames (if shorter)."""
    missing = window - x.shape[1]
    return torch.nn.functional.pad(x, (0, 0, 0, missing)) if missing > 0 else x


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidParameterError(
            f"Invalid value for {name!r}: {value!r}. Expected an integer >= {minimum}."
        )
    return int(value)


def _check_noise(value) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not np.isfinite(value) or value < 0:
        raise InvalidParameterError(
            f"Invalid value for 'noise_std': {value!r}. Expected a finite number >= 0 "
            "(the standard deviation of the input noise; 0 for none)."
        )
    return float(value)
