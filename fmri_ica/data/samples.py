"""From parcellated runs to labelled sequences: windows, labels, subject splits, scaling.

A *sample* is a window of a run's region time series, ``(time, region)``, labelled by the
run's task (default) or by the condition that fills most of the window's task-ON frames.
Windows share one length by default, because run length alone gives the task away when
runs keep their natural lengths (each HCP task has its own frame count).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._utils import atomic_path, check_option, write_json
from ..exceptions import InputDataError, InvalidParameterError

logger = logging.getLogger(__name__)

__all__ = ["SampleSet", "Standardizer", "build_samples", "split_by_subject", "windows_from_runs"]


@dataclass
class SampleSet:
    """Labelled, padded sequences with their provenance.

    Attributes
    ----------
    x : ndarray, (n, time, region) float32
        Region time series, zero after each sample's length.
    y : ndarray, (n,) int64
        Class index into ``classes``.
    lengths : ndarray, (n,) int64
        Valid frames per sample.
    task_on : ndarray, (n, time) bool
        Frames inside a task block (from the events), False where unknown or padded.
    subjects, runs : ndarray, (n,) str
        Subject label and run key of each sample.
    starts : ndarray, (n,) int64
        First frame of the window in the (kept frames of the) run.
    classes : list of str
    region_names : list of str
    t_r : float
        Seconds between two samples' time steps (the run's TR times ``frame_stride``).
    """

    x: np.ndarray
    y: np.ndarray
    lengths: np.ndarray
    task_on: np.ndarray
    subjects: np.ndarray
    runs: np.ndarray
    starts: np.ndarray
    classes: list[str]
    region_names: list[str]
    t_r: float
    metadata: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: Sequence[int] | np.ndarray) -> SampleSet:
        """The samples at ``index`` (integer positions or a boolean mask; a copy), same
        classes and regions."""
        index = np.asarray(index)
        if index.dtype == bool:
            if index.shape != (len(self),):
                raise InvalidParameterError(
                    f"A boolean 'index' must have one value per sample ({len(self)}); got {index.shape}."
                )
            index = np.flatnonzero(index)
        index = index.astype(int)
        return SampleSet(
            x=self.x[index], y=self.y[index], lengths=self.lengths[index],
            task_on=self.task_on[index], subjects=self.subjects[index], runs=self.runs[index],
            starts=self.starts[index], classes=list(self.classes),
            region_names=list(self.region_names), t_r=self.t_r, metadata=dict(self.metadata),
        )

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` (arrays) with a ``.json`` sidecar (names, TR, metadata), atomically."""
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez_compressed(
                    handle, x=self.x, y=self.y, lengths=self.lengths, task_on=self.task_on,
                    subjects=self.subjects.astype(str), runs=self.runs.astype(str),
                    starts=self.starts,
                )
        write_json(path.with_suffix(".json"), {
            "classes": self.classes, "region_names": self.region_names, "t_r": self.t_r,
            "n_samples": len(self), "shape": list(self.x.shape), "metadata": self.metadata,
        })
        return path

    @classmethod
    def load(cls, path: str | Path) -> SampleSet:
        """Read a set written by :meth:`save`."""
        path = Path(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        with np.load(path, allow_pickle=False) as arrays:
            fields = {name: arrays[name] for name in arrays.files}
        return cls(**fields, classes=meta["classes"], region_names=meta["region_names"],
                   t_r=meta["t_r"], metadata=meta.get("metadata", {}))


def build_samples(
    runs: Iterable[tuple[np.ndarray, dict]],
    *,
    classes: Sequence[str] | None = None,
    label: str = "task",
    window: int | None = 100,
    start: int = 0,
    step: int | None = None,
    frame_stride: int = 1,
    pad_short: bool = False,
    empty_regions: str = "error",
) -> SampleSet:
    """Cut labelled windows out of parcellated runs.

    Parameters
    ----------
    runs : iterable of (ndarray (frames, region), dict)
        Region time series with their sidecars, as returned by
        :func:`fmri_ica.data.parcellation.load_timeseries`. The sidecar gives ``subject``,
        ``task``, ``t_r``, the region labels and, when the run had events, per-frame
        ``conditions`` and ``task_on``.
    classes : sequence of str, optional
        The classes, in this order. Default: every task (or condition) found, sorted.
        Samples of other classes are left out.
    label : {"task", "condition"}, default="task"
        ``task`` labels every window by its run's task; ``condition`` by the condition
        covering most of the window's task-ON frames (windows with no ON frame are left out).
    window : int or None, default=100
        Window length in frames (after ``frame_stride``). None keeps whole runs, padded to
        the longest with per-sample lengths (beware: length can give the task away).
    start : int, default=0
        First frame of the first window.
    step : int or None, default=None
        Stride between window onsets (sliding windows); None cuts one window per run.
    frame_stride : int, default=1
        Keep every ``frame_stride``-th frame (temporal decimation); the sample TR becomes
        ``t_r * frame_stride``.
    pad_short : bool, default=False
        Keep runs shorter than ``window`` (zero-padded, with their length); by default they
        are left out with a warning.
    empty_regions : {"error", "drop", "keep"}, default="error"
        What to do with regions whose signal is constant (no in-brain voxels: outside the
        brain or the field of view) in *every* run: an error naming them, drop them from
        every run (``region_names`` then lists the others), or keep the flat columns.
        Regions flat in some runs only are kept (the parcellation sidecars list them).

    Returns
    -------
    SampleSet
    """
    check_sample_options(label, window, start, step, frame_stride, empty_regions)
    pieces, state = [], RunChecks()
    for series, sidecar in runs:
        state.add(series, sidecar)
        pieces.extend(_windows(series, sidecar, label, window, start, step, frame_stride, pad_short))
    state.finish(bool(pieces))
    classes = resolve_classes({p["label"] for p in pieces}, classes)
    pieces = [p for p in pieces if p["label"] in classes]
    region_names = state.regions
    if state.flat.any() and empty_regions != "keep":
        pieces, region_names = _drop_empty(pieces, region_names, state.flat, state.n_runs, empty_regions)
    return _stack(pieces, classes, region_names, state.t_r * frame_stride)


def check_sample_options(label, window, start, step, frame_stride, empty_regions) -> None:
    """The options of :func:`build_samples` (and the sample store's), checked."""
    check_option("empty_regions", empty_regions, ("error", "drop", "keep"))
    check_option("label", label, ("task", "condition"))
    _check_positive("frame_stride", frame_stride)
    if window is not None:
        _check_positive("window", window)
    if step is not None:
        _check_positive("step", step)
    if start < 0:
        raise InvalidParameterError(f"'start' must be >= 0 frames; got {start}.")


class RunChecks:
    """What every run must share with the first (regions, TR), gathered run by run, and
    the regions whose signal is flat in every run so far."""

    def __init__(self):
        self.regions: list[str] | None = None
        self.t_rs: dict[float, list[str]] = {}
        self.flat: np.ndarray | None = None
        self.n_runs = 0

    def add(self, series: np.ndarray, sidecar: dict) -> None:
        names = _region_names(sidecar, series.shape[1])
        if self.regions is None:
            self.regions = names
        elif names != self.regions:
            raise InputDataError(
                f"Run {sidecar.get('source', sidecar.get('subject'))!r} has other regions than "
                "the first run: parcellate every run with the same atlas."
            )
        self.t_rs.setdefault(round(float(sidecar["t_r"]), 6), []).append(_run_name(sidecar))
        constant = np.ptp(series, axis=0) == 0 if len(series) else np.ones(series.shape[1], bool)
        self.flat = constant if self.flat is None else self.flat & constant
        self.n_runs += 1

    def finish(self, any_samples: bool) -> None:
        """Errors for no samples at all, or runs of different TRs."""
        if not any_samples:
            raise InputDataError("No samples: every run was shorter than the window or had no label.")
        if len(self.t_rs) > 1:
            raise InputDataError(_tr_mismatch(self.t_rs))

    @property
    def t_r(self) -> float:
        return next(iter(self.t_rs))


def resolve_classes(found: set, classes: Sequence[str] | None) -> list[str]:
    """``classes`` (checked: each must have samples), or every class ``found``, sorted."""
    found = sorted(found)
    classes = list(classes) if classes is not None else found
    unknown = sorted(set(classes) - set(found))
    if unknown:
        raise InvalidParameterError(
            f"Invalid value for 'classes': {unknown} have no samples. Found: {found}."
        )
    return classes


def _drop_empty(pieces, region_names, flat, n_runs, policy):
    """Leave out regions flat in every run (``policy`` "drop"), or say which they are."""
    empty = [name for name, f in zip(region_names, flat, strict=True) if f]
    if policy == "error" or len(empty) == len(region_names):
        raise InputDataError(
            f"{len(empty)} of {len(region_names)} atlas region(s) have a constant signal in every "
            f"one of the {n_runs} runs: {', '.join(empty[:10])}{' ...' if len(empty) > 10 else ''}. "
            "They have no voxels with brain signal (outside the brain or the field of view?). "
            "Check that the atlas and the images are in the same space, or leave these regions "
            "out of every run with samples.empty_regions: drop."
        )
    logger.warning("Leaving out %d region(s) with a constant signal in every run: %s",
                   len(empty), ", ".join(empty))
    keep = ~flat
    for piece in pieces:
        piece["x"] = piece["x"][:, keep]
    return pieces, [name for name, k in zip(region_names, keep, strict=True) if k]


def windows_from_runs(samples: SampleSet, window: int, step: int, *,
                      frame_stride: int = 1) -> SampleSet:
    """Sliding windows over whole runs, for evaluation and saliency in run time.

    Windows of ``window`` time steps start every ``step`` steps; a last window flush with
    the run's end is added when the steps do not reach it, so every frame is covered. A
    run shorter than the window gives one window of its own length.

    Parameters
    ----------
    samples : SampleSet
        Whole runs (``build_samples(window=None)``): ``x`` (run, time, region).
    window, step : int
        Window length and stride, in time steps.
    frame_stride : int, default=1
        Frames per time step: window ``starts`` are run frames, ``run start + k * stride``.

    Returns
    -------
    SampleSet
        ``x`` (n_windows, window, region); ``runs``, ``subjects`` and labels of their run.
    """
    _check_positive("window", window)
    _check_positive("step", step)
    index, offsets = [], []
    for i, length in enumerate(samples.lengths.tolist()):
        onsets = list(range(0, max(length - window, 0) + 1, step))
        if length > window and onsets[-1] != length - window:
            onsets.append(length - window)
        index += [i] * len(onsets)
        offsets += onsets
    index, offsets = np.asarray(index), np.asarray(offsets)
    steps = offsets[:, None] + np.arange(window)[None, :]
    lengths = np.minimum(samples.lengths[index] - offsets, window)
    valid = np.arange(window)[None, :] < lengths[:, None]
    clipped = np.minimum(steps, samples.x.shape[1] - 1)
    x = np.where(valid[..., None], samples.x[index[:, None], clipped], 0.0).astype(np.float32)
    task_on = samples.task_on[index[:, None], clipped] & valid
    return SampleSet(
        x=x, y=samples.y[index], lengths=lengths.astype(np.int64), task_on=task_on,
        subjects=samples.subjects[index], runs=samples.runs[index],
        starts=(samples.starts[index] + offsets * frame_stride).astype(np.int64),
        classes=list(samples.classes), region_names=list(samples.region_names), t_r=samples.t_r,
        metadata={**samples.metadata, "window": int(window), "step": int(step)},
    )


def _check_positive(name: str, value: int) -> None:
    if int(value) != value or value < 1:
        raise InvalidParameterError(f"{name!r} must be a positive integer; got {value!r}.")


def _run_name(sidecar: dict) -> str:
    """A run as messages name it: its BOLD file, else its key."""
    return str(sidecar.get("source_bold") or _run_key(sidecar))


def _tr_mismatch(t_rs: dict) -> str:
    """Name the runs whose TR differs from that of most runs."""
    usual = max(t_rs, key=lambda t: len(t_rs[t]))
    odd = [f"{name} ({t:g} s)" for t, names in sorted(t_rs.items()) if t != usual for name in names]
    more = f" and {len(odd) - 3} more" if len(odd) > 3 else ""
    return (f"Runs have different TRs: {len(t_rs[usual])} run(s) have {usual:g} s, but "
            f"{'; '.join(odd[:3])}{more} differ. Resample those runs to {usual:g} s, or leave "
            "them out (data.subjects / data.tasks / data.runs in the config).")


def _region_names(sidecar: dict, n_regions: int) -> list[str]:
    labels = sidecar.get("labels")
    if not labels:
        return [f"region_{i + 1:03d}" for i in range(n_regions)]
    names = [str(row["name"]) if isinstance(row, dict) else str(row) for row in labels]
    if len(names) != n_regions:
        raise InputDataError(
            f"Sidecar of {sidecar.get('source')!r} lists {len(names)} regions but the series "
            f"has {n_regions} columns."
        )
    return names


def _windows(series, sidecar, label, window, start, step, frame_stride, pad_short):
    """Yield dicts (x, task_on, label, start, length) for one run."""
    n_frames = len(series)
    task_on = np.asarray(sidecar.get("task_on") or np.zeros(n_frames), dtype=bool)
    conditions = np.asarray(sidecar.get("conditions") or [""] * n_frames, dtype=object)
    frames = np.arange(start, n_frames, frame_stride)
    length = window or len(frames)
    if len(frames) < length:
        if not pad_short:
            logger.warning("Left out %s: %d frames, fewer than the window of %d.",
                           _run_key(sidecar), len(frames), length)
            return
        onsets = [0]
    elif step is None:
        onsets = [0]
    else:
        onsets = range(0, len(frames) - length + 1, step)
    for onset in onsets:
        kept = frames[onset:onset + length]
        name = sidecar["task"] if label == "task" else _majority_condition(conditions[kept], task_on[kept])
        if name is None:
            continue
        yield {
            "x": series[kept], "task_on": task_on[kept], "label": name,
            "start": int(kept[0]), "subject": str(sidecar["subject"]), "run": _run_key(sidecar),
        }


def _majority_condition(conditions: np.ndarray, task_on: np.ndarray) -> str | None:
    names, counts = np.unique(conditions[task_on & (conditions != "")], return_counts=True)
    return str(names[np.argmax(counts)]) if len(names) else None


def _run_key(sidecar: dict) -> str:
    return sidecar.get("key") or "_".join(
        f"{k}-{sidecar[k]}" for k in ("subject", "session", "task", "run") if sidecar.get(k)
    )


def _stack(pieces, classes, region_names, t_r) -> SampleSet:
    n, width = len(pieces), len(region_names)
    longest = max(len(p["x"]) for p in pieces)
    x = np.zeros((n, longest, width), dtype=np.float32)
    task_on = np.zeros((n, longest), dtype=bool)
    for i, piece in enumerate(pieces):
        x[i, : len(piece["x"])] = piece["x"]
        task_on[i, : len(piece["x"])] = piece["task_on"]
    return SampleSet(
        x=x,
        y=np.array([classes.index(p["label"]) for p in pieces], dtype=np.int64),
        lengths=np.array([len(p["x"]) for p in pieces], dtype=np.int64),
        task_on=task_on,
        subjects=np.array([p["subject"] for p in pieces]),
        runs=np.array([p["run"] for p in pieces]),
        starts=np.array([p["start"] for p in pieces], dtype=np.int64),
        classes=list(classes), region_names=list(region_names), t_r=float(t_r),
    )


def split_by_subject(
    samples: SampleSet,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    *,
    seed: int = 0,
    names: Sequence[str] = ("train", "val", "test"),
) -> dict[str, np.ndarray]:
    """Split sample indices so that no subject is in two splits.

    Subjects are shuffled with ``seed`` and dealt to the splits in proportion to
    ``fractions`` (each split gets at least one subject); within a split, every class of
    its subjects is kept, so when subjects performed all tasks the splits are stratified.

    Returns
    -------
    dict of str -> ndarray of int
        Sample indices per split name.
    """
    fractions = np.asarray(fractions, dtype=float)
    if len(fractions) != len(names) or np.any(fractions <= 0):
        raise InvalidParameterError(
            f"'fractions' must be {len(names)} positive numbers for {list(names)}; got {list(fractions)}."
        )
    subjects = np.unique(samples.subjects)
    if len(subjects) < len(names):
        raise InputDataError(
            f"Need at least {len(names)} subjects to split by subject; found {len(subjects)}."
        )
    order = np.random.default_rng(seed).permutation(subjects)
    counts = _allocate(len(subjects), fractions / fractions.sum())
    bounds = np.concatenate([[0], np.cumsum(counts)])
    splits = {}
    for name, lo, hi in zip(names, bounds[:-1], bounds[1:], strict=True):
        splits[name] = np.flatnonzero(np.isin(samples.subjects, order[lo:hi]))
        missing = set(range(len(samples.classes))) - set(samples.y[splits[name]].tolist())
        if missing:
            logger.warning("Split %r has no samples of %s.", name,
                           [samples.classes[i] for i in sorted(missing)])
    return splits


def _allocate(n: int, shares: np.ndarray) -> np.ndarray:
    """Integer counts summing to n, each >= 1, closest to n * shares (largest remainder)."""
    counts = np.maximum(1, np.floor(shares * n).astype(int))
    while counts.sum() > n:
        counts[np.argmax(counts)] -= 1
    remainders = shares * n - counts
    while counts.sum() < n:
        i = int(np.argmax(remainders))
        counts[i] += 1
        remainders[i] -= 1
    return counts


@dataclass
class Standardizer:
    """Per-region z-scoring with statistics from the training samples only.

    Attributes ``mean_`` and ``scale_`` are (region,) float32 arrays set by :meth:`fit`.
    Padded frames are ignored when fitting and stay zero when transforming.
    """

    mean_: np.ndarray | None = None
    scale_: np.ndarray | None = None

    def fit(self, samples: SampleSet) -> Standardizer:
        valid = np.arange(samples.x.shape[1])[None, :] < samples.lengths[:, None]
        frames = samples.x[valid]
        self.mean_ = frames.mean(axis=0).astype(np.float32)
        std = frames.std(axis=0)
        self.scale_ = np.where(std > 0, std, 1.0).astype(np.float32)
        return self

    def transform(self, samples: SampleSet) -> SampleSet:
        if self.mean_ is None:
            raise InvalidParameterError("Standardizer is not fitted: call fit() on training samples.")
        out = samples.subset(np.arange(len(samples)))
        valid = np.arange(out.x.shape[1])[None, :, None] < out.lengths[:, None, None]
        out.x = np.where(valid, (out.x - self.mean_) / self.scale_, 0.0).astype(np.float32)
        return out

    def to_dict(self) -> dict:
        return {"mean": self.mean_.tolist(), "scale": self.scale_.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> Standardizer:
        return cls(np.asarray(data["mean"], np.float32), np.asarray(data["scale"], np.float32))
