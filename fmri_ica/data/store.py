"""A sample set on disk, read lazily: cohorts that do not fit in memory.

:func:`build_store` cuts the same samples as :func:`~fmri_ica.data.samples.build_samples`,
streaming over the runs (one run in memory at a time), into a folder::

    frames.f32   float32, (n_frames, n_regions), C order: every sample's valid frames, one
                 sample after another (no padding stored)
    task_on.u8   uint8, (n_frames,): task-block flag of each stored frame
    index.npy    structured (n_samples,): subject, run, start, length, label, offset
    store.json   classes, region names, TR, shapes, metadata: written last (the commit point)

Every file is written under a temporary name and renamed when complete. :class:`SampleStore`
reads samples (positioned reads; ``frames`` is the memory map) and pads them to a common length, so a store reads
back exactly as the in-memory :class:`~fmri_ica.data.samples.SampleSet`; its subsets are
index arrays over the same map. :class:`StoreDataset` (windows) and
:class:`StoreRunCropDataset` (random crops of whole runs) serve the trainer's batches,
standardised on the fly, equal to the in-memory path's.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .._utils import atomic_path, write_json
from ..exceptions import InputDataError, InvalidParameterError
from ..training.data import RunCropDataset, _check_count, _check_noise
from .samples import (
    RunChecks,
    SampleSet,
    Standardizer,
    _drop_empty,
    _windows,
    check_sample_options,
    resolve_classes,
)

__all__ = ["SampleStore", "StoreDataset", "StoreRunCropDataset", "build_store", "fit_standardizer",
           "standardize"]

logger = logging.getLogger(__name__)

FORMAT = 1
META, FRAMES, TASK_ON, INDEX = "store.json", "frames.f32", "task_on.u8", "index.npy"


def build_store(
    runs: Iterable[tuple[np.ndarray, dict]],
    path: str | Path,
    *,
    classes: Sequence[str] | None = None,
    label: str = "task",
    window: int | None = 100,
    start: int = 0,
    step: int | None = None,
    frame_stride: int = 1,
    pad_short: bool = False,
    empty_regions: str = "error",
    metadata: dict | None = None,
) -> SampleStore:
    """Write the samples of ``runs`` to a store folder, one run in memory at a time.

    Takes the parameters of :func:`~fmri_ica.data.samples.build_samples` and cuts the same
    samples, in the same order (``window=None``: whole runs; ``step``: sliding windows).

    Parameters
    ----------
    runs : iterable of (ndarray (frames, region), dict)
        Region time series with their sidecars; pass a generator, e.g.
        ``(load_timeseries(p) for p in find_timeseries(folder))``, so that only one run is
        read at a time.
    path : str or Path
        The store folder (created; a store already there is replaced).
    classes, label, window, start, step, frame_stride, pad_short, empty_regions
        As in :func:`~fmri_ica.data.samples.build_samples` (regions dropped by
        ``empty_regions="drop"`` stay in ``frames.f32`` and are left out when read).
    metadata : dict, optional
        JSON-serialisable notes kept in ``store.json``.

    Returns
    -------
    SampleStore

    Raises
    ------
    InputDataError
        No samples, runs with other regions or TRs than the first.
    InvalidParameterError
        Bad parameters, or ``classes`` naming a class without samples.
    """
    check_sample_options(label, window, start, step, frame_stride, empty_regions)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / META).unlink(missing_ok=True)  # no commit point while the files change
    rows, found, checks, offset = [], set(), RunChecks(), 0
    wanted = None if classes is None else set(classes)
    with atomic_path(path / FRAMES) as frames_tmp, atomic_path(path / TASK_ON) as task_tmp:
        with open(frames_tmp, "wb") as frames, open(task_tmp, "wb") as task_on:
            for series, sidecar in runs:
                checks.add(series, sidecar)
                for piece in _windows(series, sidecar, label, window, start, step, frame_stride, pad_short):
                    found.add(piece["label"])
                    if wanted is None or piece["label"] in wanted:
                        rows.append(_write_piece(piece, frames, task_on, offset))
                        offset += rows[-1][3]
    checks.finish(bool(rows))
    return _finish(path, rows, resolve_classes(found, classes), checks, empty_regions,
                   frame_stride, metadata)


def _write_piece(piece: dict, frames, task_on, offset: int) -> tuple:
    """Append one sample's frames and task flags; its index row (subject, run, start,
    length, label name, offset)."""
    x = np.ascontiguousarray(piece["x"], dtype=np.float32)
    frames.write(x.tobytes())
    task_on.write(np.asarray(piece["task_on"], dtype=np.uint8).tobytes())
    return piece["subject"], piece["run"], piece["start"], len(x), piece["label"], offset


def _finish(path, rows, classes, checks, empty_regions, frame_stride, metadata) -> SampleStore:
    width = max(1, *(len(r[0]) for r in rows)), max(1, *(len(r[1]) for r in rows))
    table = np.array(
        [(s, r, st, n, classes.index(lab), off) for s, r, st, n, lab, off in rows],
        dtype=[("subject", f"U{width[0]}"), ("run", f"U{width[1]}"), ("start", "i8"),
               ("length", "i8"), ("label", "i8"), ("offset", "i8")],
    )
    names, columns = checks.regions, None
    if checks.flat.any() and empty_regions != "keep":
        _, names = _drop_empty([], names, checks.flat, checks.n_runs, empty_regions)
        columns = np.flatnonzero(~checks.flat).tolist()
    with atomic_path(path / INDEX) as tmp:
        np.save(tmp, table, allow_pickle=False)
    write_json(path / META, {
        "format": FORMAT, "classes": classes, "region_names": names,
        "n_stored_regions": len(checks.regions), "columns": columns,
        "t_r": checks.t_r * frame_stride, "n_samples": len(table),
        "n_frames": int(table["length"].sum()), "time": int(table["length"].max()),
        "metadata": metadata or {},
    })
    return SampleStore(path)


class SampleStore:
    """A store written by :func:`build_store`, memory-mapped; or a subset of one (a view).

    Attributes
    ----------
    y, lengths, starts : ndarray, (n,) int64
    subjects, runs : ndarray, (n,) str
    classes, region_names : list of str
    t_r : float
    shape : tuple
        ``(n, time, region)`` of the padded samples, as ``SampleSet.x.shape``; ``time`` is
        the longest sample of the whole store (a subset keeps it).

    Parameters
    ----------
    path : str or Path
        The store folder.

    Raises
    ------
    InputDataError
        No finished store in ``path`` (``store.json`` missing), or files of the wrong size.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            meta = json.loads((self.path / META).read_text())
            table = np.load(self.path / INDEX, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise InputDataError(
                f"No finished sample store in {self.path} ({error}). Build it with build_store "
                "(a store whose build was interrupted has no store.json: build it again)."
            ) from error
        self.classes, self.region_names = list(meta["classes"]), list(meta["region_names"])
        self.t_r, self.metadata, self.time = float(meta["t_r"]), meta["metadata"], meta["time"]
        self._n_frames, self._stored = meta["n_frames"], meta["n_stored_regions"]
        self._columns = None if meta["columns"] is None else np.asarray(meta["columns"])
        _check_size(self.path / FRAMES, self._n_frames * self._stored * 4)
        _check_size(self.path / TASK_ON, self._n_frames)
        self._table = table
        self._positions = np.arange(len(table))
        self.scaler: Standardizer | None = None  # applied by read/crops/to_samples (a view's)
        self._files: dict = {}  # open lazily, shared by the views, one set per process

    def __getstate__(self) -> dict:  # picklable for DataLoader workers: files reopen there
        return {**self.__dict__, "_files": {}}

    @property
    def frames(self) -> np.memmap:
        """Every stored frame, (n_frames, stored region) float32, memory-mapped read-only (for
        random access; batches are read with positioned reads, which keep the resident memory
        flat). Regions left out by ``empty_regions="drop"`` are still there."""
        return np.memmap(self.path / FRAMES, dtype=np.float32, mode="r",
                         shape=(self._n_frames, self._stored))

    def _frame_rows(self, first: int, count: int) -> np.ndarray:
        """Frames ``first .. first + count - 1``, (count, region) float32, kept regions only."""
        rows = self._pread(FRAMES, first, count, np.float32, self._stored)
        return rows if self._columns is None else rows[:, self._columns]

    def _pread(self, name: str, first: int, count: int, dtype, width: int = 1) -> np.ndarray:
        """``count`` rows of ``width`` values from row ``first`` of file ``name``, by a
        positioned read (no memory map: pages read do not stay in this process)."""
        handle = self._files.get(name)
        if handle is None:
            handle = self._files[name] = open(self.path / name, "rb")
        size = np.dtype(dtype).itemsize * width
        data = os.pread(handle.fileno(), count * size, first * size)
        return np.frombuffer(data, dtype=dtype).reshape(count, width)

    def __len__(self) -> int:
        return len(self._positions)

    def _column(self, name: str) -> np.ndarray:
        return self._table[name][self._positions]

    y = property(lambda self: self._column("label"))
    lengths = property(lambda self: self._column("length"))
    starts = property(lambda self: self._column("start"))
    subjects = property(lambda self: self._column("subject"))
    runs = property(lambda self: self._column("run"))
    shape = property(lambda self: (len(self), self.time, len(self.region_names)))

    def subset(self, index) -> SampleStore:
        """The samples at ``index`` (integer positions or a boolean mask): a view that shares
        the memory map (no frames are copied)."""
        index = np.asarray(index)
        if index.dtype == bool:
            if index.shape != (len(self),):
                raise InvalidParameterError(
                    f"Invalid value for 'index': a boolean mask needs one value per sample "
                    f"({len(self)}); got shape {index.shape}."
                )
            index = np.flatnonzero(index)
        view = object.__new__(SampleStore)
        view.__dict__.update(self.__dict__)
        view._positions = self._positions[index.astype(np.int64)]
        return view

    def with_scaler(self, scaler: Standardizer | None) -> SampleStore:
        """A view of the same samples that :meth:`read`, :meth:`crops`, :meth:`to_samples` and
        the store datasets standardise with ``scaler`` (None: stored values), as
        ``scaler.transform`` would, on the fly (``fit_standardizer`` still sees stored values)."""
        view = self.subset(np.arange(len(self)))
        view.scaler = scaler
        return view

    def read(self, index, scaler: Standardizer | None = None,
             time: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Samples ``index``: ``x`` (k, time, region) float32, standardised with ``scaler``
        (default: the view's, see :meth:`with_scaler`), zero after each length, and
        ``task_on`` (k, time) bool. ``time`` (default: the store's) keeps only the first
        ``time`` frames of each sample (only those are read)."""
        rows = self._table[self._positions[np.asarray(index, dtype=np.int64)]]
        time = self.time if time is None else time
        lengths = np.minimum(rows["length"], time)
        x = np.zeros((len(rows), time, len(self.region_names)), dtype=np.float32)
        task_on = np.zeros((len(rows), time), dtype=bool)
        for i, (offset, length) in enumerate(zip(rows["offset"], lengths, strict=True)):
            x[i, :length] = self._frame_rows(offset, length)
            task_on[i, :length] = self._pread(TASK_ON, offset, length, np.uint8)[:, 0]
        return standardize(x, lengths, self.scaler if scaler is None else scaler), task_on

    def crops(self, index, starts, lengths, window: int,
              scaler: Standardizer | None = None) -> np.ndarray:
        """``x`` (k, window, region) float32: ``lengths[i]`` frames of sample ``index[i]`` from
        frame ``starts[i]`` on, standardised with ``scaler`` (default: the view's), zero
        after."""
        rows = self._table[self._positions[np.asarray(index, dtype=np.int64)]]
        x = np.zeros((len(rows), window, len(self.region_names)), dtype=np.float32)
        for i, (offset, start, length) in enumerate(zip(rows["offset"], starts, lengths, strict=True)):
            x[i, :length] = self._frame_rows(offset + start, length)
        return standardize(x, lengths, self.scaler if scaler is None else scaler)

    def task_on(self) -> np.ndarray:
        """Task-ON flags, (n, time) bool, padded like ``SampleSet.task_on``; no frame is read."""
        rows = self._table[self._positions]
        out = np.zeros((len(rows), self.time), dtype=bool)
        for i, (offset, length) in enumerate(zip(rows["offset"], rows["length"], strict=True)):
            out[i, :length] = self._pread(TASK_ON, offset, length, np.uint8)[:, 0]
        return out

    def to_samples(self, time: int | None = None) -> SampleSet:
        """The samples in memory, as :class:`~fmri_ica.data.samples.SampleSet` (small sets),
        standardised with the view's scaler if it has one; ``time``: only the first ``time``
        frames of each (e.g. one window per run), ``x`` (n, time, region)."""
        x, task_on = self.read(np.arange(len(self)), time=time)
        lengths = self.lengths if time is None else np.minimum(self.lengths, time)
        return SampleSet(
            x=x, y=self.y, lengths=lengths, task_on=task_on, subjects=self.subjects,
            runs=self.runs, starts=self.starts, classes=list(self.classes),
            region_names=list(self.region_names), t_r=self.t_r, metadata=dict(self.metadata),
        )

    def iter_frames(self, chunk_frames: int = 1 << 14):
        """Yield the valid frames of the samples as stored (not standardised), (k, region)
        float32 blocks of about ``chunk_frames`` frames, in sample order."""
        rows = self._table[self._positions]
        bounds = np.cumsum(rows["length"])
        first = 0
        while first < len(rows):
            last = max(int(np.searchsorted(bounds, bounds[first] - rows["length"][first]
                                           + chunk_frames, "right")), first + 1)
            yield np.concatenate([self._frame_rows(o, n) for o, n in
                                  zip(rows["offset"][first:last], rows["length"][first:last],
                                      strict=True)])
            first = last


def _check_size(path: Path, expected: int) -> None:
    size = path.stat().st_size if path.is_file() else -1
    if size != expected:
        raise InputDataError(
            f"{path} holds {size} bytes, expected {expected}: the store is incomplete or from "
            "another build. Build it again with build_store."
        )


def standardize(x: np.ndarray, lengths: np.ndarray, scaler: Standardizer | None) -> np.ndarray:
    """``x`` (k, time, region) z-scored as :meth:`Standardizer.transform` does (valid frames;
    zero after each length); ``x`` itself when ``scaler`` is None."""
    if scaler is None:
        return x
    if scaler.mean_ is None:
        raise InvalidParameterError("Standardizer is not fitted: call fit() on training samples.")
    valid = np.arange(x.shape[1])[None, :, None] < np.asarray(lengths)[:, None, None]
    return np.where(valid, (x - scaler.mean_) / scaler.scale_, 0.0).astype(np.float32)


def fit_standardizer(store: SampleStore, chunk_frames: int = 1 << 14) -> Standardizer:
    """A :class:`Standardizer` fitted on the stored valid frames of ``store`` (e.g. a fold's
    training subset), streaming in float64 blocks of ``chunk_frames`` frames (about
    ``chunk_frames x region x 8`` bytes, a few times over, at a time): equal to
    ``Standardizer().fit(store.to_samples())`` up to float32 rounding, in bounded memory."""
    count, mean, m2 = 0, 0.0, 0.0
    for block in store.iter_frames(chunk_frames):
        block = block.astype(np.float64)
        n, block_mean = len(block), block.mean(axis=0)
        block_m2 = ((block - block_mean) ** 2).sum(axis=0)
        delta, total = block_mean - mean, count + n
        mean = mean + delta * n / total  # Chan et al.'s merge of two (count, mean, M2)
        m2 = m2 + block_m2 + delta**2 * count * n / total
        count = total
    if not count:
        raise InputDataError("Cannot fit a Standardizer: the store subset has no frames.")
    std = np.sqrt(m2 / count)
    return Standardizer(np.asarray(mean, np.float32),
                        np.where(std > 0, std, 1.0).astype(np.float32))


class StoreDataset(Dataset):
    """The samples of a store (or a subset view) for :func:`~fmri_ica.training.fit`, read
    per batch and standardised on the fly: batches equal those of
    ``SequenceDataset(scaler.transform(samples).x, y, samples.lengths)``.

    Parameters
    ----------
    store : SampleStore
    y : array-like of int, shape (n,), optional
        Labels instead of the store's (e.g. permuted ones).
    scaler : Standardizer, optional
        Default: the view's (see :meth:`SampleStore.with_scaler`).
    """

    def __init__(self, store: SampleStore, y=None, scaler: Standardizer | None = None):
        self.store, self.scaler = store, scaler
        self.y = torch.as_tensor(np.asarray(store.y if y is None else y), dtype=torch.long)
        self.lengths = torch.as_tensor(store.lengths, dtype=torch.long)
        if self.y.shape != (len(store),):
            raise InvalidParameterError(
                f"Invalid value for 'y': expected shape ({len(store)},), got {tuple(self.y.shape)}."
            )

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index):
        x, y, lengths = self.get_batch(torch.as_tensor([int(index)]))
        return x[0], y[0], lengths[0]

    def get_batch(self, indices: torch.Tensor):
        """``(x (batch, time, region), y (batch,), lengths (batch,))`` for ``indices``."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        x, _ = self.store.read(indices.numpy(), self.scaler)
        return torch.from_numpy(x), self.y[indices], self.lengths[indices]


class StoreRunCropDataset(RunCropDataset):
    """Random crops of the whole runs of a store, as
    :class:`~fmri_ica.training.data.RunCropDataset` draws them (same starts, noise and
    batches for the same seed and epoch), read from the memory map per batch and
    standardised on the fly.

    Parameters
    ----------
    store : SampleStore
        Whole runs (``build_store(window=None)``), or a subset view of them.
    y : array-like of int, shape (n_runs,), optional
        Labels instead of the store's.
    window, crops_per_run, seed, noise_std
        As in :class:`~fmri_ica.training.data.RunCropDataset`.
    scaler : Standardizer, optional
        Default: the view's (see :meth:`SampleStore.with_scaler`).
    """

    def __init__(self, store: SampleStore, y=None, *, window, crops_per_run=16, seed=0,
                 noise_std=0.0, scaler: Standardizer | None = None):
        self.store, self.scaler = store, scaler
        self.y = torch.as_tensor(np.asarray(store.y if y is None else y), dtype=torch.long)
        self.lengths = torch.as_tensor(store.lengths, dtype=torch.long)
        self.window = _check_count("window", window, 1)
        self.crops_per_run = _check_count("crops_per_run", crops_per_run, 1)
        self.seed = _check_count("seed", seed, 0)
        self.noise_std = _check_noise(noise_std)
        self.set_epoch(0)

    def _crops(self, runs, starts, crop_lengths) -> torch.Tensor:
        return torch.from_numpy(self.store.crops(runs.numpy(), starts.numpy(), crop_lengths.numpy(),
                                                 self.window, scaler=self.scaler))
