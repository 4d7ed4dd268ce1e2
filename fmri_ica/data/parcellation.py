"""Region time series: one BOLD run + an atlas -> (frames, regions), and the batch around it.

:func:`extract_timeseries` is the one swappable step (nilearn's labels / maps maskers);
:func:`parcellate` runs it over many runs with sharding, a process pool, per-run locks,
skip-if-done and a failure log; :func:`load_timeseries` and :func:`find_timeseries` read
the results back.

Output layout (BIDS-derivatives style), per run::

    <out_dir>/sub-<s>/[ses-<x>/]func/<run.key>_atlas-<atlas>_timeseries.tsv
    <out_dir>/sub-<s>/[ses-<x>/]func/<run.key>_atlas-<atlas>_timeseries.json

The TSV has one column per region (the region names) and one row per kept frame,
written with 9 significant digits, enough to round-trip float32. The JSON sidecar is
written last: a run counts as finished only when it exists and its
``parameters_sha256`` matches the current parameters, so an unchanged re-run skips and a
changed parameter re-runs. ``<atlas>`` is the atlas name with non-alphanumerics removed
(``gm_kmeans`` -> ``gmkmeans``); one output folder holds one atlas configuration.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from .. import __version__
from .._locks import FileLock as _RunLock
from .._utils import (
    atomic_path,
    check_option,
    package_versions,
    sha256_file,
    write_json,
    write_text,
)
from .._utils import progress as _progress
from ..config import DEFAULTS
from ..exceptions import InputDataError, InvalidParameterError, OutputBusyError
from ..provenance import content_sha256, fingerprint, stale_reason
from .atlases import Atlas, list_atlases, load_atlas
from .runs import Run

__all__ = [
    "STANDARDIZE",
    "Summary",
    "extract_timeseries",
    "find_timeseries",
    "label_means",
    "load_timeseries",
    "parcellate",
    "parse_shard",
    "timeseries_path",
]

logger = logging.getLogger(__name__)

#: Allowed ``standardize`` values. ``"psc"``: percent signal change against the run's
#: OFF (fixation) frames, so that task-ON frames keep their meaning (see EVALUATION.md).
STANDARDIZE = ("zscore_sample", "psc", None)
#: Allowed ``engine`` values of :func:`extract_timeseries` (and :func:`parcellate`).
ENGINES = ("auto", "stream", "nilearn")
# nilearn's Butterworth filter (order 5, filtfilt) needs more than `padlen` frames.
_MIN_FRAMES = {"one": 19, "band": 34}
_SIDECAR_VERSION = 1
# extract_timeseries options a batch passes on (defaults filled in, so that leaving an
# option out and giving its default hash the same): the pipeline's, so that parcellate(),
# `fmri-ica parcellate` and `fmri-ica run` clean alike by default.
_EXTRACT_DEFAULTS = {
    **{key: DEFAULTS["parcellation"][key] for key in ("detrend", "standardize", "high_pass", "low_pass")},
    "t_r": None,
}


# --------------------------------------------------------------------------- one run


def extract_timeseries(
    run_or_img: Run | str | os.PathLike | nib.Nifti1Image,
    atlas: Atlas,
    *,
    confounds=None,
    sample_mask=None,
    t_r: float | None = None,
    detrend: bool = True,
    standardize: str | None = "zscore_sample",
    high_pass: float | None = None,
    low_pass: float | None = None,
    mask_img=None,
    task_on=None,
    engine: str = "auto",
    provenance: dict | None = None,
) -> np.ndarray:
    """Region time series of one 4D BOLD run.

    Parameters
    ----------
    run_or_img : Run, path or Nifti1Image
        The 4D BOLD image (a :class:`Run` gives its ``bold`` and ``t_r``).
    atlas : Atlas
        Put on the data grid first (:meth:`Atlas.resample_to`); regions that vanish
        there are dropped with a warning. The output columns follow
        ``atlas.resample_to(img, mask_img).labels`` (``atlas.labels`` when none vanish).
    confounds : DataFrame, array (n_frames, n_confounds) or path, optional
        Regressed out by nilearn (with the same filters as the signals).
    sample_mask : array of int or bool, optional
        Frames to keep (e.g. from :func:`fmri_ica.data.confounds.load_run_confounds`).
    t_r : float, optional
        Repetition time (s). Default: ``run.t_r``, else the NIfTI header. Needed for
        ``high_pass``/``low_pass``.
    detrend : bool, default=True
    standardize : {"zscore_sample", "psc", None}, default="zscore_sample"
        ``"psc"``: ``100 * (x - mean_OFF(x)) / mean_OFF(raw)`` per region, where OFF
        frames are the kept frames with ``task_on == 0`` and ``raw`` is the region mean
        before detrending / filtering. Needs ``task_on`` and raw (positive) intensities.
    high_pass, low_pass : float, optional
        Butterworth cut-offs (Hz). One needs >= 19 frames, both >= 34.
    mask_img : Niimg-like, optional
        Brain mask: atlas voxels outside it are ignored. A run's own mask (``run.mask``)
        is not applied unless given here, so that every run keeps the same regions.
    task_on : array of bool, shape (n_frames,), optional
        Task-ON frames of the whole run (for ``"psc"``).
    engine : {"auto", "stream", "nilearn"}, default="auto"
        ``"stream"``: one pass over the file, a few frames at a time
        (:mod:`fmri_ica.data.streaming`; on an HCP run ~8x less CPU than nilearn's masker
        and ~25 MB instead of ~2.8 GB, the same numbers: benchmarks/bench_parcellation.py).
        ``"nilearn"``: load the whole run,
        then nilearn's maskers (maps) or :func:`label_means` (labels). ``"auto"``:
        ``"stream"`` for a ``.nii`` / ``.nii.gz`` path with a labels or maps atlas,
        else ``"nilearn"`` (images in memory, odd layouts).
    provenance : dict, optional
        Filled in place with ``"engine"`` (the one used) and ``"sha256"``: the hex
        SHA-256 of the BOLD file's bytes as stored (``None`` for an image in memory).
        The streaming engine computes it in its pass; the other reads the file again.

    Returns
    -------
    ndarray of float32, shape (n_kept_frames, n_regions)

    Raises
    ------
    InputDataError
        Unreadable file, not 4D, NaN/inf voxels, an all-zero or constant run, too few
        frames for the filter, an atlas outside the field of view.
    InvalidParameterError
        Bad ``standardize``, ``engine``, ``t_r``, ``confounds`` length or ``task_on``;
        ``engine="stream"`` for an input it cannot stream.
    """
    check_option("standardize", standardize, STANDARDIZE)
    check_option("engine", engine, ENGINES)
    img, source, streamed = _load_bold(run_or_img, atlas, engine)
    n_frames = img.shape[3]
    t_r = _resolve_t_r(t_r, run_or_img, img)
    _check_filter(len(kept_frames(n_frames, sample_mask)), t_r, high_pass, low_pass, source)
    if not streamed:  # the stream checks its content as it reads it
        _check_content(np.asanyarray(img.dataobj), source)
    if confounds is not None and len(_as_frame(confounds)) != n_frames:
        raise InvalidParameterError(
            f"'confounds' has {len(_as_frame(confounds))} rows but {source} has {n_frames} frames."
        )
    atlas = atlas.resample_to(img, mask_img)
    clean = {"detrend": detrend, "high_pass": high_pass, "low_pass": low_pass, "t_r": t_r}
    scale = None if standardize == "psc" else standardize
    raw = _stream_raw(source, atlas, provenance) if streamed else None
    if provenance is not None and not streamed:
        in_memory = isinstance(run_or_img, nib.spatialimages.SpatialImage)
        provenance.update(engine="nilearn", sha256=None if in_memory else sha256_file(source))
    with _filter_errors(source):
        if raw is None and atlas.kind == "labels":
            # Same numbers as NiftiLabelsMasker (tested), ~20x faster on HCP runs.
            raw = label_means(
                np.asanyarray(img.dataobj),
                np.asanyarray(atlas.img.dataobj),
                atlas.labels["index"].to_numpy(),
            )
        if raw is not None:
            signals = _clean(
                raw, standardize=scale, confounds=confounds, sample_mask=sample_mask, **clean
            )
        else:
            raw = None
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*[Ss]tandardiz.*")
                signals = atlas.masker(standardize=scale, **clean).fit_transform(
                    img, confounds=confounds, sample_mask=sample_mask
                )
    if standardize == "psc":
        kept = kept_frames(n_frames, sample_mask)
        if raw is None:
            raw = atlas.masker().fit_transform(img)
        off = _off_frames(task_on, n_frames, kept)
        signals = _percent_signal_change(signals, raw[kept], off, source)
    if signals.shape[1] != atlas.n_regions:  # nilearn dropped a region we did not expect
        raise InputDataError(
            f"{source}: got {signals.shape[1]} region signals for {atlas.n_regions} atlas regions."
        )
    return np.asarray(signals, dtype=np.float32)


def label_means(
    data: np.ndarray, labels: np.ndarray, index: np.ndarray, chunk: int = 64
) -> np.ndarray:
    """Mean signal of each label: what nilearn's ``img_to_signals_labels`` computes.

    nilearn runs ``scipy.ndimage.mean`` once per frame over the whole volume; gathering
    the labelled voxels once and summing them per label (in float64, like ndimage) gives
    the same values in a fraction of the time.

    Parameters
    ----------
    data : ndarray, shape (X, Y, Z, T)
    labels : ndarray of int, shape (X, Y, Z)
        0 = background.
    index : ndarray of int, shape (R,)
        Label values, in output column order; each must have >= 1 voxel.
    chunk : int, default=64
        Frames gathered at a time (bounds the float64 copy).

    Returns
    -------
    ndarray of float64, shape (T, R)
    """
    labels = np.asarray(labels).reshape(data.shape[:3])
    inside = np.isin(labels, index)
    voxel_labels = labels[inside]
    order = np.argsort(voxel_labels, kind="stable")
    sorted_labels = voxel_labels[order]
    starts = np.searchsorted(sorted_labels, np.sort(index))
    counts = np.diff(np.append(starts, len(sorted_labels)))
    out = np.empty((data.shape[3], len(index)))
    columns = np.searchsorted(np.sort(index), index)  # sorted label -> requested order
    for t0 in range(0, data.shape[3], chunk):
        block = np.asarray(data[..., t0 : t0 + chunk][inside], dtype=np.float64)[order]
        sums = np.add.reduceat(block, starts, axis=0) / counts[:, None]
        out[t0 : t0 + chunk] = sums[columns].T
    return out


def _clean(signals: np.ndarray, **kwargs) -> np.ndarray:
    """nilearn.signal.clean with the arguments a nilearn masker passes it."""
    from nilearn.signal import clean

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]tandardiz.*")  # constant regions
        return clean(signals, standardize_confounds=True, **kwargs)


def kept_frames(n_frames: int, sample_mask=None) -> np.ndarray:
    """Indices of the frames a ``sample_mask`` (indices or booleans) keeps."""
    frames = np.arange(n_frames)
    return frames if sample_mask is None else frames[np.asarray(sample_mask)]


def _load_bold(run_or_img, atlas=None, engine="nilearn") -> tuple[nib.Nifti1Image, str, bool]:
    """(image, name for messages, streamed).

    Streamed (see ``engine`` of :func:`extract_timeseries`): the image as loaded, its
    data untouched. Otherwise its data in memory (float32).
    """
    if isinstance(run_or_img, nib.spatialimages.SpatialImage):
        img, source = run_or_img, "the input image"
        if img.ndim != 4:
            raise InputDataError(f"The input image has shape {img.shape}; a 4D BOLD is needed.")
        if engine != "nilearn":
            _stream_refusal(engine, source, "it is an image in memory")
    else:
        from .layouts import validate_bold

        path = Path(run_or_img.bold if isinstance(run_or_img, Run) else run_or_img)
        source = str(path)
        validate_bold(path)  # missing, unreadable, truncated, not 4D: clear errors
        img = nib.load(path)
        if engine != "nilearn":
            from .streaming import stream_reason

            reason = stream_reason(path)
            if reason is None and atlas.kind not in ("labels", "maps"):
                reason = f"its atlas is of kind {atlas.kind!r}"
            if reason is None:
                return img, source, True
            _stream_refusal(engine, source, reason)
    try:
        data = img.get_fdata(dtype=np.float32)
    except Exception as error:  # nibabel/gzip raise many kinds for damaged files
        raise InputDataError(f"Cannot read the voxel data of {source}: {error}") from error
    out = nib.Nifti1Image(data, img.affine, img.header)
    out.set_data_dtype(np.float32)
    return out, source, False


def _stream_refusal(engine: str, source: str, reason: str) -> None:
    """engine="stream" must stream; "auto" falls back to the in-memory path."""
    if engine == "stream":
        raise InvalidParameterError(
            f"engine='stream' cannot stream {source}: {reason}. Use engine='auto' (which "
            "falls back to loading it) or engine='nilearn'."
        )
    logger.debug("Not streaming %s: %s", source, reason)


def _stream_raw(source: str, atlas: Atlas, provenance: dict | None) -> np.ndarray:
    """Raw region signals (frames, regions) float64 from one pass over the file.

    ``atlas`` is on the file's grid. The pass makes the content checks of
    :func:`_check_content` and, when ``provenance`` is asked for, the file's SHA-256.
    """
    from .streaming import LabelsReducer, MapsReducer, stream_signals

    data = np.asanyarray(atlas.img.dataobj)
    if atlas.kind == "labels":
        reducer = LabelsReducer(data, atlas.labels["index"].to_numpy())
    else:
        reducer = MapsReducer(data)
    result = stream_signals(source, reducer, checksum=provenance is not None)
    if provenance is not None:
        provenance.update(engine="stream", sha256=result.sha256)
    return result.signals


def _resolve_t_r(t_r, run_or_img, img) -> float | None:
    if t_r is None and isinstance(run_or_img, Run):
        t_r = run_or_img.t_r
    if t_r is None:
        from .layouts import header_t_r

        t_r = header_t_r(img.header)
    if t_r is not None and not (np.isfinite(t_r) and t_r > 0):
        raise InvalidParameterError(f"Invalid value for 't_r': {t_r!r}. Expected seconds > 0.")
    return None if t_r is None else float(t_r)


def _check_filter(n_frames, t_r, high_pass, low_pass, source) -> None:
    """n_frames: frames kept after sample_mask (nilearn filters after censoring)."""
    filters = [f for f in (high_pass, low_pass) if f is not None]
    if not filters:
        return
    if t_r is None:
        raise InvalidParameterError(
            f"high_pass/low_pass need the repetition time, and {source} has none in its "
            "header: pass t_r (seconds)."
        )
    need = _MIN_FRAMES["band" if len(filters) == 2 else "one"]
    if n_frames < need:
        raise InputDataError(
            f"{source} has {n_frames} frames (after sample_mask); the Butterworth "
            f"{'band-pass' if len(filters) == 2 else 'filter'} needs at least {need}. Filter "
            "whole runs (then cut windows), or drop high_pass/low_pass."
        )


def _check_content(data: np.ndarray, source: str) -> None:
    from .layouts import check_finite

    check_finite(data, source)
    if not data.any():
        raise InputDataError(f"{source} is all zeros: an empty or failed preprocessing output.")
    if (data.max(axis=3) == data.min(axis=3)).all():
        raise InputDataError(
            f"{source} is constant over time in every voxel: no signal to extract. "
            "Is it a repeated single volume?"
        )


def _as_frame(confounds) -> pd.DataFrame:
    if isinstance(confounds, (str, os.PathLike)):
        return pd.read_csv(confounds, sep="\t")
    return pd.DataFrame(
        np.asarray(confounds) if not isinstance(confounds, pd.DataFrame) else confounds
    )


@contextlib.contextmanager
def _filter_errors(source: str):
    """nilearn's Butterworth 'padlen' ValueError, as a message naming the file."""
    try:
        yield
    except ValueError as error:
        found = re.search(r"padlen, which is (\d+)", str(error))
        if found:
            raise InputDataError(
                f"{source}: too few frames for the Butterworth filter (it needs more than "
                f"{found.group(1)}): filter whole runs, or drop high_pass/low_pass."
            ) from error
        raise


def _off_frames(task_on, n_frames: int, kept: np.ndarray) -> np.ndarray:
    if task_on is None:
        raise InvalidParameterError(
            "standardize='psc' needs the run's task-ON frames (task_on, from its events) to "
            "know the fixation baseline; give events or choose standardize='zscore_sample'."
        )
    task_on = np.asarray(task_on, dtype=bool)
    if task_on.shape != (n_frames,):
        raise InvalidParameterError(
            f"'task_on' has shape {task_on.shape}; expected ({n_frames},), one per frame."
        )
    off = ~task_on[kept]
    if not off.any():
        raise InputDataError(
            "standardize='psc': the run has no OFF (fixation) frame among the kept frames, "
            "so there is no baseline. Use standardize='zscore_sample'."
        )
    return off


def _percent_signal_change(signals, raw, off, source) -> np.ndarray:
    """100 * (x - mean_OFF(x)) / mean_OFF(raw), per region. x, raw: (frames, regions)."""
    baseline = raw[off].mean(axis=0)
    if (baseline <= 1e-6 * np.abs(raw).max()).any():
        bad = int((baseline <= 1e-6 * np.abs(raw).max()).sum())
        raise InputDataError(
            f"{source}: {bad} region(s) have a mean OFF intensity <= 0, so percent signal "
            "change is undefined. 'psc' needs raw BOLD intensities (not demeaned or "
            "z-scored data); use standardize='zscore_sample'."
        )
    return 100.0 * (signals - signals[off].mean(axis=0)) / baseline


# --------------------------------------------------------------------------- batch


@dataclass
class Summary:
    """What :func:`parcellate` did: one row per run (key, status, reason, output, seconds).

    ``status`` is ``done``, ``skipped`` (``reason``: finished before, or locked by another
    process) or ``failed`` (``reason``: the error).
    """

    rows: list[dict] = field(default_factory=list)
    out_dir: Path | None = None

    def _keys(self, status: str) -> list[str]:
        return [r["run"] for r in self.rows if r["status"] == status]

    @property
    def done(self) -> list[str]:
        return self._keys("done")

    @property
    def skipped(self) -> list[str]:
        return self._keys("skipped")

    @property
    def failed(self) -> list[str]:
        return self._keys("failed")

    @property
    def ok(self) -> bool:
        return not self.failed

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["run", "status", "reason", "seconds", "output"])

    def __str__(self) -> str:
        counts = f"{len(self.done)} done, {len(self.skipped)} skipped, {len(self.failed)} failed"
        flat = [r for r in self.rows if r.get("constant_regions")]
        if flat:
            counts += (f"; {len(flat)} run(s) have regions with a constant signal (listed in "
                       "their sidecars' constant_regions)")
        if not self.rows:
            return f"parcellate: no runs ({counts})"
        shown = self.table()[["run", "status", "seconds", "reason"]].copy()
        shown["reason"] = shown["reason"].str.slice(0, 100)
        return f"{shown.to_string(index=False)}\n{counts}"


def parcellate(
    runs: Iterable[Run],
    atlas: str | Atlas = "seitzman300",
    out_dir: str | os.PathLike = "timeseries",
    *,
    shard: str | tuple[int, int] | None = None,
    n_jobs: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    hrf_delay: float = 0.0,
    confounds_strategy: str | Sequence[str] | None = DEFAULTS["parcellation"]["confounds_strategy"],
    atlas_options: dict | None = None,
    cache_dir: str | os.PathLike | None = None,
    stale_lock_s: float = 600.0,
    verify: bool = False,
    **extract_options,
) -> Summary:
    """Parcellate many runs into ``out_dir`` (see the module notes for the layout).

    Parameters
    ----------
    runs : iterable of Run
        Sorted by key before sharding.
    atlas : str or Atlas, default="seitzman300"
        A name or path for :func:`~fmri_ica.data.atlases.load_atlas` (built on each run's
        grid, cached), or an :class:`Atlas` (resampled to each run's grid).
    out_dir : path
    shard : "I/N", (I, N), "auto" or None
        Process runs ``I::N`` of the sorted list, ``I`` 0-based (0 <= I < N). ``"auto"``
        reads SLURM's array variables (see :func:`parse_shard`).
    n_jobs : int, default=1
        Processes (joblib); the outputs equal those of ``n_jobs=1``.
    overwrite : bool, default=False
        Redo finished runs.
    progress : bool, default=True
        A progress bar on stderr.
    hrf_delay : float, default=0.0
        Seconds added to event onsets for the sidecar's per-frame conditions / task_on.
    confounds_strategy : str, tuple or None, default="simple"
        None: no confound regression. Otherwise passed to
        :func:`fmri_ica.data.confounds.load_run_confounds`, whose ``sample_mask`` then
        selects the kept frames. The default is the pipeline's
        (``fmri_ica.config.DEFAULTS["parcellation"]``), as are those of
        ``**extract_options``.
    atlas_options : dict, optional
        Options for :func:`load_atlas` when ``atlas`` is a name.
    cache_dir : path, optional
        Atlas cache folder.
    stale_lock_s : float, default=600
        A run lock whose file has not been refreshed for this long is taken over (its
        holder refreshes it every ``stale_lock_s / 4`` s; on the same host a lock whose
        process is gone is taken over at once). SIGTERM releases the locks held.
    **extract_options
        ``detrend``, ``standardize``, ``high_pass``, ``low_pass``, ``t_r`` and
        ``engine`` for :func:`extract_timeseries` (defaults: the pipeline's, e.g.
        ``high_pass=0.008``; ``engine="auto"``).

    Returns
    -------
    Summary
        Also written to ``out_dir/parcellate[_shard-I-of-N]_summary.json``; failed runs
        are listed in ``out_dir/parcellate[_shard-I-of-N]_failures.tsv``.

    Raises
    ------
    InvalidParameterError
        Bad shard / option, or an output folder that cannot be written.
    AtlasUnavailableError, InputDataError
        The atlas cannot be downloaded or read (checked before any run).
    """
    out_dir = _writable_dir(out_dir)
    # "engine" changes the speed, not the numbers: only a given one enters the settings.
    unknown = set(extract_options) - set(_EXTRACT_DEFAULTS) - {"engine"}
    if unknown:
        raise InvalidParameterError(f"parcellate got unknown option(s): {sorted(unknown)}.")
    check_option("standardize", extract_options.get("standardize", _EXTRACT_DEFAULTS["standardize"]), STANDARDIZE)
    check_option("engine", extract_options.get("engine", "auto"), ENGINES)
    index, count = parse_shard(shard)
    selected = sorted(runs, key=lambda r: r.key)[index::count]
    spec = _AtlasSpec(atlas, dict(atlas_options or {}), cache_dir)
    spec.check()
    settings = {
        "extract": {**_EXTRACT_DEFAULTS, **extract_options},
        "hrf_delay": float(hrf_delay),
        "confounds_strategy": _jsonable(confounds_strategy),
    }
    task = {
        "spec": spec,
        "out_dir": out_dir,
        "settings": settings,
        "overwrite": overwrite,
        "stale_lock_s": stale_lock_s,
        "verify": bool(verify),
    }
    logger.info(
        "parcellate: %d run(s) (shard %d/%d), atlas %s", len(selected), index, count, spec.id
    )
    if n_jobs == 1 or len(selected) < 2:
        results = (_process_run(run, **task) for run in selected)
    else:
        from joblib import Parallel, delayed

        pool = Parallel(n_jobs=n_jobs, return_as="generator")
        results = pool(delayed(_process_run)(run, **task) for run in selected)
    bar = _progress(results, desc="parcellate", total=len(selected), enabled=progress, unit="run")
    with _sigterm_exits():
        rows = list(bar)
    summary = Summary(rows=rows, out_dir=out_dir)
    _write_summary(summary, out_dir, (index, count) if shard is not None else None, spec, settings)
    for row in summary.rows:
        if row["status"] == "failed":
            logger.warning("%s failed: %s", row["run"], row["reason"])
    logger.info("parcellate: %s", str(summary).splitlines()[-1])
    return summary


def too_many_failures(summary: Summary, allow: float = 0) -> str | None:
    """Why ``summary`` has more failed runs than ``allow`` accepts (None if it has not).

    ``allow``: a number of runs (>= 1), or a share of the runs (0 < allow < 1); 0: none.
    """
    n_failed, n_runs = len(summary.failed), len(summary.rows)
    limit = allow * n_runs if 0 < allow < 1 else allow
    if n_failed <= limit:
        return None
    where = Path(summary.out_dir) / "parcellate*_failures.tsv"
    return (f"{n_failed} of {n_runs} run(s) failed to parcellate (allowed: {allow:g}); the reasons "
            f"are in {where}. Fix them and run again (finished runs are skipped).")


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int]:
    """``(index, count)`` from ``"I/N"`` (0-based I), ``(I, N)``, ``"auto"`` or None.

    ``"auto"`` reads SLURM: ``index = (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) //
    SLURM_ARRAY_TASK_STEP`` and ``count = SLURM_ARRAY_TASK_COUNT``, so ``--array=0-9``,
    ``--array=1-10`` and ``--array=1-19:2`` all give shards 0..9 of 10. Outside a SLURM
    array, ``"auto"`` means no sharding.
    """
    if shard is None:
        return 0, 1
    if shard == "auto":
        env = os.environ
        if "SLURM_ARRAY_TASK_ID" not in env:
            logger.info("--shard auto outside a SLURM array job: processing every run")
            return 0, 1
        try:
            task_id = int(env["SLURM_ARRAY_TASK_ID"])
            first = int(env.get("SLURM_ARRAY_TASK_MIN", 0))
            step = int(env.get("SLURM_ARRAY_TASK_STEP", 1) or 1)
            count = int(env["SLURM_ARRAY_TASK_COUNT"])
        except (KeyError, ValueError) as error:
            raise InvalidParameterError(
                f"--shard auto needs SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT: {error}"
            ) from error
        index = (task_id - first) // step
    elif isinstance(shard, str):
        found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
        if not found:
            raise InvalidParameterError(
                f"Invalid value for 'shard': {shard!r}. Expected 'I/N' (0-based, e.g. '0/4') or 'auto'."
            )
        index, count = int(found.group(1)), int(found.group(2))
    else:
        index, count = (int(v) for v in shard)
    if not 0 <= index < count:
        raise InvalidParameterError(
            f"Invalid value for 'shard': index {index} of {count}. Shards are 0-based: "
            f"0 <= I < N (for N={count}: 0..{count - 1})."
        )
    return index, count


def timeseries_path(out_dir: str | os.PathLike, run: Run, atlas_name: str) -> Path:
    """``out_dir/sub-<s>/[ses-<x>/]func/<run.key>_atlas-<name>_timeseries.tsv``."""
    folder = Path(out_dir) / f"sub-{run.subject}"
    if run.session:
        folder = folder / f"ses-{run.session}"
    return folder / "func" / f"{run.key}_atlas-{_entity(atlas_name)}_timeseries.tsv"


def load_timeseries(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read a region time-series TSV (or its JSON sidecar path) back.

    Returns
    -------
    data : ndarray of float32, shape (frames_kept, n_regions)
    sidecar : dict
    """
    tsv = Path(path).with_suffix(".tsv")
    json_path = tsv.with_suffix(".json")
    try:
        sidecar = json.loads(json_path.read_text())
        table = pd.read_csv(tsv, sep="\t", dtype=np.float64)
    except (OSError, ValueError) as error:
        raise InputDataError(f"Cannot read time series {tsv} (+ .json): {error}") from error
    names = [label["name"] for label in sidecar.get("labels", [])]
    if names and list(table.columns) != names:
        raise InputDataError(f"{tsv}: its columns do not match the regions in {json_path.name}.")
    return table.to_numpy(np.float32), sidecar


def find_timeseries(out_dir: str | os.PathLike, atlas: str | None = None) -> list[Path]:
    """Finished time-series TSVs under ``out_dir`` (those with a sidecar), sorted."""
    pattern = f"*_atlas-{_entity(atlas) if atlas else '*'}_timeseries.tsv"
    found = Path(out_dir).glob(f"sub-*/**/func/{pattern}")
    return sorted(p for p in found if p.with_suffix(".json").is_file())


# --------------------------------------------------------------------------- batch internals


@dataclass
class _AtlasSpec:
    """How each worker gets the atlas on its run's grid (picklable)."""

    atlas: str | Atlas
    options: dict
    cache_dir: Any

    @property
    def id(self) -> str:
        return (
            self.atlas.name
            if isinstance(self.atlas, Atlas)
            else Path(str(self.atlas)).name.split(".")[0]
        )

    def identity(self) -> dict:
        if isinstance(self.atlas, Atlas):
            return {"atlas": self.atlas.name, "checksum": self.atlas.checksum}
        identity = {"atlas": str(self.atlas), "options": self.options}
        if Path(str(self.atlas)).is_file():  # a user atlas: its content, not just its name
            identity["sha256"] = sha256_file(self.atlas)
        return identity

    def check(self) -> None:
        """Fail once, before any run, for an atlas that cannot be had (file, download)."""
        if isinstance(self.atlas, Atlas):
            return
        catalogue = {e["name"]: e for e in list_atlases().to_dict("records")}
        entry = catalogue.get(str(self.atlas))
        if entry is None or not entry["offline"]:
            load_atlas(self.atlas, cache_dir=self.cache_dir, **self.options)

    def on_grid(self, bold: Path) -> Atlas:
        if isinstance(self.atlas, Atlas):
            return self.atlas.resample_to(nib.load(bold))
        return load_atlas(self.atlas, target_img=bold, cache_dir=self.cache_dir, **self.options)


def _process_run(run: Run, *, spec, out_dir, settings, overwrite, stale_lock_s, verify=False) -> dict:
    """Parcellate one run; never raises (a failure is a row of the summary)."""
    start = time.perf_counter()
    tsv = timeseries_path(out_dir, run, spec.id)
    row = {"run": run.key, "status": "done", "reason": "", "output": str(tsv)}
    try:
        if run.extra.get("error"):  # found wrong at discovery (discover_runs(keep_failed=True))
            raise InputDataError(run.extra["error"])
        param_hash = row["parameters_sha256"] = _parameters_sha256(run, spec, settings)
        if not overwrite and _finished(tsv, param_hash, run, verify):
            row.update(status="skipped", reason="finished before (same parameters)")
        else:
            with _RunLock(tsv.with_suffix(".lock"), stale_lock_s):
                if not overwrite and _finished(tsv, param_hash, run, verify):  # done while we waited
                    row.update(status="skipped", reason="finished by another process")
                else:
                    flat = _parcellate_one(run, spec, settings, tsv, param_hash)
                    row["constant_regions"] = len(flat)
                    if flat:
                        logger.warning("%s: %d region(s) have a constant signal (no brain voxels?): %s",
                                       run.key, len(flat), ", ".join(flat[:10]))
    except OutputBusyError as error:
        row.update(status="skipped", reason=str(error))
    except Exception as error:  # record and go on with the other runs
        logger.debug("parcellate %s failed", run.key, exc_info=True)
        row.update(status="failed", reason=f"{type(error).__name__}: {error}")
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row


def _parcellate_one(run: Run, spec: _AtlasSpec, settings: dict, tsv: Path, param_hash: str) -> list[str]:
    """Write one run's region time series and sidecar; return the regions with a flat signal."""
    from .layouts import validate_bold

    info = validate_bold(run.bold)
    extract = dict(settings["extract"])
    t_r = extract.pop("t_r", None) or run.t_r or info.t_r
    n_frames = info.n_frames
    conditions, task_on = _frame_labels(run, n_frames, t_r, settings["hrf_delay"])
    confounds, sample_mask = None, None
    if settings["confounds_strategy"] is not None:
        from .confounds import load_run_confounds

        confounds, sample_mask = load_run_confounds(run, settings["confounds_strategy"])
    atlas = spec.on_grid(Path(run.bold))
    read: dict = {}  # the engine used and the BOLD's checksum, from the same pass
    data = extract_timeseries(
        run,
        atlas,
        confounds=confounds,
        sample_mask=sample_mask,
        t_r=t_r,
        task_on=task_on,
        provenance=read,
        **extract,
    )
    kept = kept_frames(n_frames, sample_mask)
    bold_print = fingerprint(run.bold, sha256=read["sha256"])  # hashed as it was read
    flat = [name for name, f in zip(atlas.region_names, np.ptp(data, axis=0) == 0, strict=True) if f]
    # The sidecar marks a finished run: remove an old one before replacing its TSV.
    tsv.with_suffix(".json").unlink(missing_ok=True)
    with atomic_path(tsv) as tmp:
        frame = pd.DataFrame(data, columns=atlas.region_names)
        frame.to_csv(tmp, sep="\t", index=False, float_format="%.9g", lineterminator="\n")
    sidecar = {
        "Description": "Region time series (frames x regions) extracted by fmri_ica",
        "subject": run.subject,
        "session": run.session,
        "task": run.task,
        "run": run.run,
        "layout": run.layout,
        "source_bold": str(run.bold),
        "source_bold_sha256": bold_print["sha256"],
        "source_bold_fingerprint": bold_print,
        "engine": read["engine"],
        "timeseries_fingerprint": fingerprint(tsv),
        "t_r": t_r,
        "n_frames_total": n_frames,
        "frames_kept": kept.tolist(),
        "conditions": None if conditions is None else conditions[kept].tolist(),
        "task_on": None if task_on is None else task_on[kept].astype(int).tolist(),
        "atlas": {
            "name": atlas.name,
            "kind": atlas.kind,
            "options": atlas.options,
            "checksum": atlas.checksum,
            "space": atlas.space,
            "source": atlas.source,
            "citation": atlas.citation,
            "licence": atlas.licence,
            "dropped": atlas.dropped,
        },
        "labels": atlas.labels[["index", "name", "network"]].to_dict("records"),
        "constant_regions": flat,
        "parameters": {**settings, "extract": {**settings["extract"], "t_r": t_r}},
        "parameters_sha256": param_hash,
        "fmri_ica_version": __version__,
        "versions": package_versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "sidecar_version": _SIDECAR_VERSION,
    }
    write_json(tsv.with_suffix(".json"), sidecar)  # last: marks the run finished
    return flat


def _frame_labels(run: Run, n_frames: int, t_r, hrf_delay: float):
    """Per-frame condition names ("" = rest) and task_on, or (None, None) without events."""
    if run.events is None:
        return None, None
    from .events import default_conditions, frame_conditions, read_events

    if t_r is None:
        raise InputDataError(f"{run.bold} has no repetition time; pass t_r to label frames.")
    events = read_events(run)
    labels, on = frame_conditions(
        events,
        n_frames,
        t_r,
        hrf_delay=hrf_delay,
        rest_label="",
        conditions=default_conditions(run, events),
    )
    return np.asarray(labels, dtype=object), np.asarray(on, dtype=bool)


def _parameters_sha256(run: Run, spec: _AtlasSpec, settings: dict) -> str:
    """Hash of everything that determines the output but the BOLD's content: settings, atlas,
    the *content* of the events and confounds, the BOLD's size. No paths: a data set that
    moves keeps its finished runs. (The BOLD itself is checked by :func:`_finished`.)"""
    extract = {k: v for k, v in settings["extract"].items() if k != "engine"}  # same numbers
    payload = {
        "settings": {**settings, "extract": extract},
        "atlas": spec.identity(),
        "bold_size": Path(run.bold).stat().st_size,
        "events_sha256": content_sha256(run.events),
        "confounds_sha256": [content_sha256(p) for p in _confound_files(run)],
        "run_t_r": run.t_r,
        "sidecar_version": _SIDECAR_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _confound_files(run: Run) -> list[Path]:
    """The confounds file and its JSON sidecar (fMRIPrep keeps CompCor metadata there)."""
    if run.confounds is None:
        return []
    path = Path(run.confounds)
    companion = path.with_name(path.name.split(".")[0] + ".json")
    return [path] + ([companion] if companion.is_file() else [])


def _finished(tsv: Path, param_hash: str, run: Run | None = None, verify: bool = False) -> bool:
    """True when ``tsv`` was made with these parameters from this BOLD and is intact.

    The BOLD and the TSV are compared with the fingerprints the sidecar recorded (size and
    time; the checksum when the time changed, always with ``verify``). A BOLD copied
    elsewhere with its content unchanged counts as the same (its new time is recorded).
    """
    json_path = tsv.with_suffix(".json")
    if not (tsv.is_file() and json_path.is_file()):
        return False
    try:
        sidecar = json.loads(json_path.read_text())
    except (OSError, ValueError):
        return False
    if sidecar.get("parameters_sha256") != param_hash:
        return False
    recorded = sidecar.get("timeseries_fingerprint")
    if recorded is None or (reason := stale_reason(tsv, recorded, verify=verify)):
        logger.info("Re-doing %s: %s.", tsv.name, reason or "no fingerprint recorded")
        return False
    if run is None:
        return True
    bold = sidecar.get("source_bold_fingerprint")
    if bold is None or (reason := stale_reason(run.bold, bold, verify=verify)):
        logger.info("Re-doing %s: the BOLD %s.", tsv.name, reason or "has no fingerprint recorded")
        return False
    current = Path(run.bold).stat().st_mtime_ns
    if current != bold["mtime_ns"]:  # same content, new time: remember it, skip the checksum next time
        write_json(json_path, {**sidecar, "source_bold_fingerprint": {**bold, "mtime_ns": current}})
    return True


@contextlib.contextmanager
def _sigterm_exits():
    """Turn SIGTERM (SLURM time limit, scancel) into SystemExit so locks are released."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _writable_dir(out_dir) -> Path:
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_dir / ".write_test") as tmp:
            tmp.write_text("ok")
        (out_dir / ".write_test").unlink()
        next(out_dir.iterdir(), None)
    except OSError as error:
        raise InvalidParameterError(
            f"Output folder {out_dir} cannot be written or read ({error.strerror or error}). "
            "Choose another --out, or fix its permissions."
        ) from error
    return out_dir


def _write_summary(summary: Summary, out_dir: Path, shard, spec, settings) -> None:
    tag = "" if shard is None else f"_shard-{shard[0]}-of-{shard[1]}"
    table = summary.table()
    write_json(
        out_dir / f"parcellate{tag}_summary.json",
        {
            "atlas": spec.identity() | {"id": spec.id},
            "parameters": settings,
            "shard": shard,
            "counts": {s: len(summary._keys(s)) for s in ("done", "skipped", "failed")},
            "runs": summary.rows,
            "fmri_ica_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    failed = table[table["status"] == "failed"][["run", "reason", "output"]]
    write_text(out_dir / f"parcellate{tag}_failures.tsv", failed.to_csv(sep="\t", index=False))


def _entity(name: str) -> str:
    """A BIDS entity value: letters and digits only."""
    return re.sub(r"[^A-Za-z0-9]", "", Path(str(name)).name.split(".")[0]) or "atlas"


def _jsonable(value):
    if value is None or isinstance(value, str):
        return value
    return list(value)
