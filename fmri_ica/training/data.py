"""Data sets and batching for the trainer: padded sequences in memory, seeded shuffling."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, default_collate

from ..exceptions import InputDataError, InvalidParameterError

__all__ = ["SequenceDataset", "EpochSampler", "as_dataset", "iter_batches"]


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
    ``torch.utils.data.DistributedSampler`` (which can replace it under DDP), so resuming
    needs only the epoch number: no generator state is carried between epochs.
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())


def iter_batches(dataset: Dataset, indices, batch_size: int, start: int = 0):
    """Yield ``(x, y, lengths or None)`` batches of ``indices``, skipping the first ``start``.

    ``x``: (batch, time, features) float, ``y``: (batch,) long, ``lengths``: (batch,) long.
    """
    indices = torch.as_tensor(list(indices), dtype=torch.long)
    for chunk in indices.split(batch_size)[start:]:
        yield _fetch(dataset, chunk)


def _fetch(dataset: Dataset, chunk: torch.Tensor):
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, SequenceDataset):
        chunk, dataset = torch.as_tensor(dataset.indices)[chunk], dataset.dataset
    if isinstance(dataset, SequenceDataset):  # one indexing operation, no per-item collate
        return dataset.get_batch(chunk)
    items = default_collate([dataset[i] for i in chunk.tolist()])
    if len(items) not in (2, 3):
        raise InputDataError(
            f"The data set yielded {len(items)}-tuples; expected (x, y) or (x, y, length)."
        )
    x, y = items[0].float(), items[1].long()
    lengths = items[2].long() if len(items) == 3 else None
    return x, y, lengths
