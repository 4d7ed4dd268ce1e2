"""Saliency in run time: per-window maps put back on the frames of the runs they came from.

A sample is a window of a run (:class:`fmri_ica.data.samples.SampleSet`): time step ``k``
of window ``i`` is frame ``starts[i] + k * frame_stride`` of its run (frames counted in
the run's kept frames, as ``starts`` are). Averaging maps over windows position by
position mixes windows that start anywhere in the run, and padding whole runs to the
longest run fills the shorter tasks' maps with zeros. Here instead:

1. :func:`to_run_time` adds each window's saliency to the run frames it covers; every
   frame is the mean over the windows covering it (coverage counts kept), and frames no
   window covers are NaN, not 0.
2. :func:`class_maps_in_run_time` (group) and :func:`subject_class_maps_in_run_time`
   (per subject) average the runs of each class frame by frame, ignoring NaN; each class
   keeps its own length (its longest run), with no zero tail.
3. :func:`write_class_maps` / :func:`read_class_maps` store such ragged per-class maps
   with a sidecar that says what the values are and which frames they cover; the reader
   also loads the older padded ``(class, time, region)`` files.

Map rows are time steps of ``frame_stride`` frames: row ``r`` of a run map is run frame
``frame_offset + r * frame_stride``, where ``frame_offset = starts % frame_stride`` (one
value for the whole sample set, as :func:`~fmri_ica.data.samples.build_samples` cuts it).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import atomic_path, write_json
from ..exceptions import InputDataError, InvalidParameterError

logger = logging.getLogger(__name__)

__all__ = [
    "RunMaps",
    "class_coverage",
    "class_maps_in_run_time",
    "read_class_maps",
    "subject_class_maps_in_run_time",
    "to_run_time",
    "write_class_maps",
]

FORMAT_VERSION = 2
_MAPS_FILE, _SIDECAR_FILE = "class_maps.npz", "class_maps.json"
_LEGACY_AGGREGATE = (
    "legacy file: values per window time step, averaged over the samples of a class (not "
    "run time; whole runs were zero-padded to the longest run)"
)


@dataclass
class RunMaps:
    """Saliency placed in run time: one map per (run, class) pair.

    A run holds windows of one class when samples are labelled by task; labelled by
    condition, its windows of each class make separate entries.

    Attributes
    ----------
    maps : list of ndarray, each (n_rows, region) float64
        Mean saliency of the windows covering each row; NaN where no window does.
    coverage : list of ndarray, each (n_rows,) int64
        Number of windows covering each row.
    runs, subjects : list of str
        Run key and subject of each entry.
    labels : ndarray, (n_entries,) int64
        Class index (into ``classes``) of each entry.
    classes : list of str
    t_r : float
        Seconds between two rows (the samples' TR, i.e. the run's TR times ``frame_stride``).
    frame_stride : int
        Run frames between two rows.
    frame_offset : int
        Run frame of row 0 (``0 <= frame_offset < frame_stride``).
    """

    maps: list[np.ndarray]
    coverage: list[np.ndarray]
    runs: list[str]
    subjects: list[str]
    labels: np.ndarray
    classes: list[str]
    t_r: float
    frame_stride: int = 1
    frame_offset: int = 0

    def __len__(self) -> int:
        return len(self.maps)

    def frames(self, n_rows: int) -> list[int]:
        """``[first, stop]``: the run frames of a map of ``n_rows`` rows, ``stop`` = last + 1,
        so that its rows are ``range(first, stop, frame_stride)``."""
        if n_rows <= 0:
            return [self.frame_offset, self.frame_offset]
        return [self.frame_offset, self.frame_offset + (n_rows - 1) * self.frame_stride + 1]

    def uncovered(self) -> dict[tuple[str, str], np.ndarray]:
        """Rows covered by no window, per (run, class) entry that has any."""
        return {
            (run, self.classes[label]): np.flatnonzero(count == 0)
            for run, label, count in zip(self.runs, self.labels, self.coverage, strict=True)
            if np.any(count == 0)
        }


def to_run_time(
    saliency,
    samples,
    *,
    frame_stride: int = 1,
    run_lengths: Mapping[str, int] | None = None,
) -> RunMaps:
    """Put per-window saliency back on the frames of each run.

    Every window adds its saliency to the run frames it covers; each frame of a run map is
    the mean over the windows that cover it. Frames no window covers (before the first
    window, after the last, or between windows when the step exceeds the window) are NaN
    and are logged.

    Parameters
    ----------
    saliency : array, shape (n, time, region)
        One map per sample of ``samples`` (e.g. ``|gradient|``, scaled as the caller
        wishes); steps beyond each sample's length are ignored.
    samples : SampleSet
        The windows: ``starts``, ``lengths``, ``runs``, ``subjects``, ``y``, ``classes``,
        ``t_r``.
    frame_stride : int, default=1
        Run frames between two time steps of a window, as given to ``build_samples``:
        step ``k`` of window ``i`` is run frame ``starts[i] + k * frame_stride``. Map rows
        are then time steps of ``frame_stride`` frames (see :class:`RunMaps`).
    run_lengths : dict of str -> int, optional
        Number of (kept) frames of each run, to give run maps the run's full length (the
        uncovered tail is NaN). Default: each map ends at the furthest covered frame.

    Returns
    -------
    RunMaps

    Raises
    ------
    InvalidParameterError
        If shapes disagree, ``frame_stride`` is not a positive integer, or a run is longer
        than its ``run_lengths`` entry says.
    InputDataError
        If windows of one run start at frames of different phase modulo ``frame_stride``,
        or the saliency has non-finite values.
    """
    saliency = _check_saliency(saliency, samples)
    stride = _positive_int("frame_stride", frame_stride)
    starts = np.asarray(samples.starts, dtype=np.int64)
    offsets = np.unique(starts % stride)
    if len(offsets) > 1:
        raise InputDataError(
            f"Window starts fall on different frames modulo 'frame_stride'={stride} "
            f"({offsets.tolist()}): they do not share one time grid. Pass the frame_stride "
            "the samples were built with."
        )
    offset = int(offsets[0]) if len(offsets) else 0
    rows = (starts - offset) // stride
    keys = list(dict.fromkeys(zip(samples.runs.tolist(), samples.y.tolist(), strict=True)))
    maps, coverage = [], []
    for run, label in keys:
        index = np.flatnonzero((samples.runs == run) & (samples.y == label))
        n_rows = _n_rows(run, rows[index] + samples.lengths[index], run_lengths, offset, stride)
        total, count = _accumulate(saliency, index, rows, samples.lengths, n_rows)
        with np.errstate(invalid="ignore", divide="ignore"):
            maps.append(np.where(count[:, None] > 0, total / count[:, None], np.nan))
        coverage.append(count)
    result = RunMaps(
        maps=maps, coverage=coverage, runs=[str(r) for r, _ in keys],
        subjects=[str(samples.subjects[samples.runs == r][0]) for r, _ in keys],
        labels=np.array([label for _, label in keys], dtype=np.int64),
        classes=list(samples.classes), t_r=float(samples.t_r),
        frame_stride=stride, frame_offset=offset,
    )
    _log_uncovered(result)
    return result


def _check_saliency(saliency, samples) -> np.ndarray:
    saliency = np.asarray(saliency)
    n, n_time = samples.x.shape[:2]
    if saliency.ndim != 3 or saliency.shape[:2] != (n, n_time):
        raise InvalidParameterError(
            f"'saliency' must have shape (n, time, region) = ({n}, {n_time}, region) like "
            f"samples.x; got {saliency.shape}."
        )
    valid = np.arange(n_time)[None, :] < np.asarray(samples.lengths)[:, None]
    if not np.all(np.isfinite(saliency[valid])):
        raise InputDataError(
            "'saliency' has NaN or infinite values within the samples' lengths; NaN is "
            "reserved for frames no window covers. Recompute the saliency in float64."
        )
    return saliency


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise InvalidParameterError(f"{name!r} must be a positive integer; got {value!r}.")
    return int(value)


def _n_rows(run: str, ends: np.ndarray, run_lengths, offset: int, stride: int) -> int:
    """Rows of a run map: the furthest covered row + 1, or the run's length in rows."""
    covered = int(ends.max())
    if run_lengths is None or run not in run_lengths:
        return covered
    n_frames = int(run_lengths[run])
    n_rows = len(range(offset, n_frames, stride))
    if n_rows < covered:
        raise InvalidParameterError(
            f"run_lengths[{run!r}] = {n_frames} frames, but its windows reach frame "
            f"{offset + (covered - 1) * stride}: give the run's number of kept frames."
        )
    return n_rows


def _accumulate(saliency, index, rows, lengths, n_rows) -> tuple[np.ndarray, np.ndarray]:
    """Sum of the windows' saliency per run row, and the number of windows per row."""
    total = np.zeros((n_rows, saliency.shape[2]), dtype=np.float64)
    count = np.zeros(n_rows, dtype=np.int64)
    for i in index:
        first, length = int(rows[i]), int(lengths[i])
        total[first : first + length] += saliency[i, :length]
        count[first : first + length] += 1
    return total, count


def _log_uncovered(run_maps: RunMaps) -> None:
    missing = run_maps.uncovered()
    if missing:
        n_rows = sum(len(m) for m in run_maps.maps)
        n_missing = sum(len(v) for v in missing.values())
        logger.debug(
            "%d of %d run frames (in %d of %d runs) are covered by no window; they are NaN.",
            n_missing, n_rows, len(missing), len(run_maps),
        )


def class_maps_in_run_time(run_maps: RunMaps, samples=None) -> list[np.ndarray]:
    """Per-class maps in run time: the mean over the runs of each class, frame by frame.

    Parameters
    ----------
    run_maps : RunMaps
        From :func:`to_run_time`.
    samples : SampleSet, optional
        If given, its classes must be those of ``run_maps`` (a consistency check).

    Returns
    -------
    maps : list of ndarray, one (n_rows_c, region) float64 per class
        Class ``c`` is as long as its longest run; each row is the mean over the runs that
        cover it (every run weighs the same, whatever its number of windows); NaN where no
        run does. A class without runs gets a (0, region) array.
    """
    _check_classes(run_maps, samples)
    lengths = _class_lengths(run_maps)
    return [_mean_of_runs(run_maps, run_maps.labels == c, lengths[c])
            for c in range(len(run_maps.classes))]


def subject_class_maps_in_run_time(run_maps: RunMaps, samples=None) -> dict[str, list[np.ndarray]]:
    """Per-subject, per-class maps in run time, for group statistics.

    Returns
    -------
    maps : dict of str -> list of ndarray
        ``maps[subject][c]``: (n_rows_c, region), the mean over the subject's runs of class
        ``c``. Every subject's map of class ``c`` has the group length of that class
        (:func:`class_maps_in_run_time`), NaN where the subject has no data, so that
        subjects' maps stack.
    """
    _check_classes(run_maps, samples)
    lengths = _class_lengths(run_maps)
    subjects = np.asarray(run_maps.subjects)
    return {
        str(subject): [
            _mean_of_runs(run_maps, (subjects == subject) & (run_maps.labels == c), lengths[c])
            for c in range(len(run_maps.classes))
        ]
        for subject in dict.fromkeys(run_maps.subjects)
    }


def class_coverage(run_maps: RunMaps) -> list[dict[str, np.ndarray]]:
    """Per class, how many windows and runs cover each row of its run-time map.

    Returns
    -------
    coverage : list of dict, one per class
        ``n_windows`` and ``n_runs``: (n_rows_c,) int64 arrays.
    """
    lengths = _class_lengths(run_maps)
    out = []
    for c in range(len(run_maps.classes)):
        windows = np.zeros(lengths[c], dtype=np.int64)
        runs = np.zeros(lengths[c], dtype=np.int64)
        for i in np.flatnonzero(run_maps.labels == c):
            count = run_maps.coverage[i]
            windows[: len(count)] += count
            runs[: len(count)] += count > 0
        out.append({"n_windows": windows, "n_runs": runs})
    return out


def _check_classes(run_maps: RunMaps, samples) -> None:
    if samples is not None and list(samples.classes) != list(run_maps.classes):
        raise InvalidParameterError(
            f"'samples' has classes {list(samples.classes)} but 'run_maps' was built with "
            f"{run_maps.classes}: pass the samples given to to_run_time."
        )


def _class_lengths(run_maps: RunMaps) -> list[int]:
    lengths = [0] * len(run_maps.classes)
    for label, values in zip(run_maps.labels, run_maps.maps, strict=True):
        lengths[label] = max(lengths[label], len(values))
    return lengths


def _mean_of_runs(run_maps: RunMaps, select: np.ndarray, n_rows: int) -> np.ndarray:
    """NaN-aware mean over the selected entries, padded with NaN to ``n_rows``."""
    n_regions = run_maps.maps[0].shape[1] if len(run_maps) else 0
    total = np.zeros((n_rows, n_regions))
    count = np.zeros((n_rows, n_regions))
    for i in np.flatnonzero(select):
        values = run_maps.maps[i]
        covered = np.isfinite(values)
        total[: len(values)] += np.where(covered, values, 0.0)
        count[: len(values)] += covered
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def write_class_maps(
    directory: str | os.PathLike,
    maps: Sequence[np.ndarray],
    *,
    classes: Sequence[str],
    regions: Sequence[str],
    t_r: float,
    frames: Sequence[Sequence[int]],
    aggregate: str,
    scaling: str,
    subjects: Sequence[str],
    frame_stride: int = 1,
    n_windows: Sequence[np.ndarray] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write per-class maps of their own lengths, with a sidecar that says what they are.

    Files, written atomically in ``directory``: ``class_maps.npz`` (``map_<c>``: the
    (n_rows_c, region) float32 map of class ``c``, NaN for uncovered rows; ``lengths``;
    ``n_windows_<c>`` if given) and ``class_maps.json``.

    Parameters
    ----------
    directory : path
    maps : list of array, each (n_rows_c, region)
        One map per class, in the order of ``classes``; lengths may differ.
    classes, regions : sequence of str
        Class names; region names (the maps' columns).
    t_r : float
        Seconds between two rows.
    frames : list of [first, stop]
        Per class, the run frames its rows stand for: ``range(first, stop, frame_stride)``
        must have one frame per row (:meth:`RunMaps.frames`).
    aggregate : str
        What a value is, e.g. ``"mean |gradient| over windows covering the frame, then
        over runs"``.
    scaling : str
        How each window's saliency was scaled before aggregating (e.g. ``"none"``,
        ``"per-window min-max to [0, 1]"``).
    subjects : sequence of str
        The subjects whose samples went into the maps.
    frame_stride : int, default=1
        Run frames between two rows.
    n_windows : list of array, each (n_rows_c,), optional
        Windows covering each row (:func:`class_coverage`); stored, and summarised in the
        sidecar.
    extra : dict, optional
        More sidecar fields (e.g. model, method, seed).

    Returns
    -------
    sidecar : Path
        The ``class_maps.json`` written.

    Raises
    ------
    InvalidParameterError
        If the per-class arguments disagree in number or ``frames`` disagree with a map's
        length.
    """
    directory = Path(directory)
    maps = [_check_map(m, len(regions), f"maps[{c}]") for c, m in enumerate(maps)]
    stride = _positive_int("frame_stride", frame_stride)
    _check_per_class(maps, classes, frames, n_windows)
    frames = [[int(a), int(b)] for a, b in frames]
    for c, (values, (first, stop)) in enumerate(zip(maps, frames, strict=True)):
        if len(range(first, stop, stride)) != len(values):
            raise InvalidParameterError(
                f"frames[{c}] = {[first, stop]} holds {len(range(first, stop, stride))} frames "
                f"at frame_stride={stride}, but maps[{c}] ({classes[c]!r}) has {len(values)} rows."
            )
    arrays = {f"map_{c}": m.astype(np.float32) for c, m in enumerate(maps)}
    arrays["lengths"] = np.array([len(m) for m in maps], dtype=np.int64)
    for c, counts in enumerate(n_windows or []):
        arrays[f"n_windows_{c}"] = np.asarray(counts, dtype=np.int64)
    with atomic_path(directory / _MAPS_FILE) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return write_json(directory / _SIDECAR_FILE, {
        "format_version": FORMAT_VERSION,
        "layout": "class_maps.npz: map_<c> (time, region) per class c, rows = run frames "
                  "range(frames[c][0], frames[c][1], frame_stride)",
        "classes": list(classes), "regions": list(regions), "t_r": float(t_r),
        "frame_stride": stride, "lengths": arrays["lengths"].tolist(), "frames": frames,
        "aggregate": aggregate, "scaling": scaling, "subjects": sorted(map(str, subjects)),
        "missing_values": "NaN: frames covered by no window (ignored by NaN-aware means)",
        "uncovered_frames": [int(np.sum(~np.isfinite(m).all(axis=1))) for m in maps],
        "n_windows": None if n_windows is None else [_summary(n) for n in n_windows],
        **dict(extra or {}),
    })


def _check_map(values, n_regions: int, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != n_regions:
        raise InvalidParameterError(
            f"{name!r} must have shape (time, region) with {n_regions} regions (one per name "
            f"in 'regions'); got {values.shape}."
        )
    return values


def _check_per_class(maps, classes, frames, n_windows) -> None:
    counts = {"classes": len(classes), "frames": len(frames)}
    if n_windows is not None:
        counts["n_windows"] = len(n_windows)
    wrong = {name: n for name, n in counts.items() if n != len(maps)}
    if wrong:
        raise InvalidParameterError(
            f"One entry per class is needed: 'maps' has {len(maps)}, but {wrong}."
        )
    for c, counts in enumerate(n_windows or []):
        if np.shape(counts) != (len(maps[c]),):
            raise InvalidParameterError(
                f"n_windows[{c}] must have one count per row of maps[{c}] ({len(maps[c])}); "
                f"got shape {np.shape(counts)}."
            )


def _summary(counts) -> dict[str, float]:
    counts = np.asarray(counts)
    if counts.size == 0:
        return {"min": 0, "median": 0.0, "max": 0, "uncovered": 0}
    return {"min": int(counts.min()), "median": float(np.median(counts)),
            "max": int(counts.max()), "uncovered": int(np.sum(counts == 0))}


def read_class_maps(directory: str | os.PathLike) -> tuple[list[np.ndarray], dict]:
    """Per-class maps and their sidecar, from :func:`write_class_maps` or the older format.

    The older format (one padded ``maps`` array (class, time, region) with a sidecar of
    classes, regions and t_r) is read as that many maps of the padded length; its sidecar
    gets ``format_version`` 1, ``frames`` None and an ``aggregate`` that says the time
    axis is the window's time step, not run time.

    Returns
    -------
    maps : list of ndarray, each (n_rows_c, region) float32
    meta : dict
        The sidecar; ``n_windows`` per-row counts, when stored, in ``meta["n_windows_rows"]``.

    Raises
    ------
    InputDataError
        If a file is missing, or the arrays disagree with the sidecar.
    """
    directory = Path(directory)
    paths = directory / _MAPS_FILE, directory / _SIDECAR_FILE
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise InputDataError(
            f"No class maps in {directory}: {missing} not found. Run the explain stage first."
        )
    meta = json.loads(paths[1].read_text())
    with np.load(paths[0], allow_pickle=False) as data:
        if "maps" in data.files:
            return _legacy(data["maps"], meta)
        arrays = {name: data[name] for name in data.files}
    n_classes = len(meta["classes"])
    maps = [arrays.get(f"map_{c}") for c in range(n_classes)]
    lengths = [None if m is None else len(m) for m in maps]
    if lengths != meta.get("lengths") or arrays["lengths"].tolist() != lengths:
        raise InputDataError(
            f"{paths[0]} holds maps of lengths {lengths} but {paths[1].name} lists "
            f"{meta.get('lengths')}: the files come from different runs (an interrupted "
            "write?). Re-run the explain stage."
        )
    if "n_windows_0" in arrays:
        meta["n_windows_rows"] = [arrays[f"n_windows_{c}"] for c in range(n_classes)]
    return maps, meta


def _legacy(stacked: np.ndarray, meta: dict) -> tuple[list[np.ndarray], dict]:
    maps = [np.asarray(m) for m in stacked]
    meta = {**meta, "format_version": 1, "lengths": [len(m) for m in maps], "frames": None,
            "frame_stride": None, "aggregate": _LEGACY_AGGREGATE, "scaling": "unknown (legacy file)",
            "subjects": None}
    return maps, meta
