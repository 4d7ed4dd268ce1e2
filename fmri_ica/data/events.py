"""Task events: read HCP EV files and BIDS events.tsv; label each frame of a run.

Frame-time convention
---------------------
Frame ``k`` (0-based) is taken to be acquired at ``(k + slice_time_ref) * t_r`` seconds
after the first volume starts, with ``slice_time_ref=0.5`` by default: the middle of
the volume's acquisition, the average time of its slices (HCP data are not slice-time
corrected; fMRIPrep corrects to the middle of the TR). A frame belongs to an event when
``onset + hrf_delay <= time < onset + duration + hrf_delay`` (half-open, so back-to-back
blocks never share a frame, and a zero-duration event labels no frame).

Overlaps
--------
When several events cover a frame, the event that started **last** wins (what is on
screen now: a block that starts while a cue is still on takes over). Events starting at
the same time are ranked by the order of ``conditions`` (earlier wins; alphabetical when
``conditions`` is None). HCP also ships trial-level EVs inside blocks (``win_event``,
``0bk_cor``, ``mental_resp``...); select block conditions with ``conditions=`` (see
:func:`default_conditions`), or they would win inside every block.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..exceptions import InputDataError, InvalidParameterError
from .runs import Run

__all__ = [
    "HCP_BLOCK_EVS",
    "HCP_TRIAL_EVS",
    "default_conditions",
    "frame_conditions",
    "frame_times",
    "read_events",
    "read_fsl_ev",
]

logger = logging.getLogger(__name__)

_KINDS = ("0bk", "2bk")
_CATEGORIES = ("body", "faces", "places", "tools")
#: HCP EVs that mark blocks (what a frame-level classifier should learn), per task.
HCP_BLOCK_EVS = {
    "EMOTION": ("fear", "neut"),
    "GAMBLING": ("win", "loss"),
    "LANGUAGE": ("story", "math"),
    "MOTOR": ("cue", "lf", "rf", "lh", "rh", "t"),
    "RELATIONAL": ("relation", "match"),
    "SOCIAL": ("mental", "rnd"),
    "WM": tuple(f"{k}_{c}" for k in _KINDS for c in _CATEGORIES),
}
#: HCP EVs that mark single trials or responses inside blocks.
HCP_TRIAL_EVS = {
    "EMOTION": (),
    "GAMBLING": ("win_event", "loss_event", "neut_event"),
    "LANGUAGE": (),
    "MOTOR": (),
    "RELATIONAL": (),
    "SOCIAL": ("mental_resp", "other_resp"),
    "WM": tuple(f"{k}_{r}" for k in _KINDS for r in ("cor", "err", "nlr"))
    + ("all_bk_cor", "all_bk_err"),
}
# HCP EVs folders also hold Sync.txt (one number: the scanner sync time), not an EV.
_NOT_EVS = {"sync"}
_COLUMNS = ["onset", "duration", "trial_type"]


def read_fsl_ev(path: str | os.PathLike) -> pd.DataFrame:
    """Read an FSL 3-column EV file.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    DataFrame
        Columns ``onset``, ``duration`` (seconds) and ``amplitude``; no rows for an
        empty file (HCP ships empty EVs, e.g. when a subject made no errors).

    Raises
    ------
    InputDataError
        Missing file, non-numeric content, not 3 columns, negative duration.
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"EV file not found: {path}")
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        raise InputDataError(
            f"Cannot read the EV file {path}: {error.strerror or error}. Check its permissions."
        ) from error
    if not text.strip():
        return pd.DataFrame({"onset": [], "duration": [], "amplitude": []}, dtype=float)
    try:
        values = np.loadtxt(path, ndmin=2, dtype=float)
    except ValueError as error:
        raise InputDataError(
            f"EV file {path} is not numeric FSL 3-column format (onset duration amplitude): {error}"
        ) from error
    if values.shape[1] != 3:
        raise InputDataError(
            f"EV file {path} has {values.shape[1]} columns; FSL 3-column format "
            "(onset, duration, amplitude) needs 3."
        )
    frame = pd.DataFrame(values, columns=["onset", "duration", "amplitude"])
    _check_timing(frame, path)
    return frame


def _check_timing(frame: pd.DataFrame, path) -> None:
    bad = ~np.isfinite(frame[["onset", "duration"]].to_numpy(dtype=float)).all(axis=1)
    if bad.any():
        raise InputDataError(
            f"{path}: onset/duration missing or not finite in row(s) {(np.flatnonzero(bad) + 1).tolist()}."
        )
    negative = frame["duration"].to_numpy() < 0
    if negative.any():
        raise InputDataError(
            f"{path}: negative duration in row(s) {(np.flatnonzero(negative) + 1).tolist()}."
        )


def read_events(run: Run) -> pd.DataFrame:
    """Events of a run: an HCP ``EVs`` folder or a BIDS ``events.tsv``.

    Parameters
    ----------
    run : Run
        ``run.events`` is a folder of FSL EV files (the file stem is the
        ``trial_type``; ``Sync.txt`` is skipped) or a tab-separated file with ``onset``
        and ``duration`` and usually ``trial_type`` (when absent, every event gets the
        task name).

    Returns
    -------
    DataFrame
        ``onset``, ``duration``, ``trial_type`` (and ``amplitude`` when the source has
        it), sorted by onset then trial type. ``attrs["conditions"]`` lists every
        condition, including HCP EVs whose file was empty; ``attrs["source"]`` maps
        each condition to its file.

    Raises
    ------
    InputDataError
        The run has no events, or a file is missing or malformed.
    """
    if run.events is None:
        raise InputDataError(
            f"Run {run.key} has no events (run.events is None); its frames cannot be labelled. "
            "Provide an EVs folder / events.tsv (or a manifest 'events' column)."
        )
    path = Path(run.events)
    if path.is_dir():
        frame, sources = _read_ev_folder(path)
    elif path.is_file():
        frame, sources = _read_events_tsv(path, run.task)
    else:
        raise InputDataError(f"Events of run {run.key} not found: {path}")
    frame = frame.sort_values(["onset", "trial_type"], kind="stable").reset_index(drop=True)
    frame.attrs["conditions"] = sorted(sources)
    frame.attrs["source"] = sources
    return frame


def _read_ev_folder(folder: Path) -> tuple[pd.DataFrame, dict]:
    try:  # glob would see an unreadable folder as an empty one
        names = os.listdir(folder)
    except OSError as error:
        raise InputDataError(
            f"Cannot list the EVs folder {folder}: {error.strerror or error}. Check its "
            "permissions (reading it needs r and x, e.g. chmod u+rx)."
        ) from error
    files = sorted(folder / n for n in names  # as glob("*.txt"): no hidden files
                   if n.endswith(".txt") and not n.startswith(".") and Path(n).stem.lower() not in _NOT_EVS)
    if not files:
        raise InputDataError(f"EVs folder {folder} holds no EV .txt files.")
    parts, sources = [], {}
    for path in files:
        ev = read_fsl_ev(path)
        ev.insert(2, "trial_type", path.stem)
        parts.append(ev)
        sources[path.stem] = str(path)
    frame = pd.concat(parts, ignore_index=True)
    frame["trial_type"] = frame["trial_type"].astype(str)
    return frame[["onset", "duration", "trial_type", "amplitude"]], sources


def _read_events_tsv(path: Path, task: str) -> tuple[pd.DataFrame, dict]:
    try:
        table = pd.read_csv(path, sep="\t", na_values=["n/a"])
    except Exception as error:
        raise InputDataError(f"Cannot read events file {path} as a TSV: {error}") from error
    missing = [c for c in ("onset", "duration") if c not in table.columns]
    if missing:
        raise InputDataError(
            f"Events file {path} lacks column(s) {missing}; it has {list(table.columns)}. "
            "BIDS events need onset and duration (seconds) and usually trial_type."
        )
    if "trial_type" not in table.columns:
        logger.info("%s has no trial_type column; every event is %r", path, task)
        table["trial_type"] = task
    table["trial_type"] = table["trial_type"].fillna("n/a").astype(str)
    columns = _COLUMNS + (["amplitude"] if "amplitude" in table.columns else [])
    frame = table[columns].copy()
    try:
        frame[["onset", "duration"]] = frame[["onset", "duration"]].astype(float)
    except ValueError as error:
        raise InputDataError(f"{path}: onset/duration are not numbers: {error}") from error
    _check_timing(frame, path)
    return frame, {t: str(path) for t in frame["trial_type"].unique()}


def default_conditions(run: Run, events: pd.DataFrame) -> list[str]:
    """The conditions that label frames by default.

    HCP runs: the block EVs of the task (:data:`HCP_BLOCK_EVS`), which leaves out the
    trial-level EVs nested in blocks (only those the EVs folder holds). Other runs,
    or HCP runs with none of the known block EVs: every ``trial_type`` present.
    """
    present = sorted(
        set(events.attrs.get("conditions", [])) | set(events["trial_type"].astype(str))
    )
    if run.layout == "hcp":
        blocks = [c for c in HCP_BLOCK_EVS.get(run.task.upper(), ()) if c in present]
        if blocks:
            return blocks
    return present


def frame_times(n_frames: int, t_r: float, slice_time_ref: float = 0.5) -> np.ndarray:
    """Acquisition time (s) of each frame: ``(k + slice_time_ref) * t_r``; shape (n_frames,)."""
    return (np.arange(n_frames) + slice_time_ref) * t_r


def frame_conditions(
    events: pd.DataFrame,
    n_frames: int,
    t_r: float,
    *,
    hrf_delay: float = 0.0,
    slice_time_ref: float = 0.5,
    conditions: list[str] | tuple[str, ...] | None = None,
    rest_label: str = "fixation",
    strict: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Label every frame of a run with the condition on screen (see the module notes).

    Parameters
    ----------
    events : DataFrame
        ``onset``, ``duration``, ``trial_type`` (from :func:`read_events`).
    n_frames : int
        Frames in the run.
    t_r : float
        Repetition time, seconds.
    hrf_delay : float, default=0.0
        Seconds added to every onset, to account for the haemodynamic lag (4-6 s is
        typical when labels should follow the BOLD response).
    slice_time_ref : float, default=0.5
        Where in its TR a frame is taken to be acquired (0 = start, 0.5 = middle).
    conditions : sequence of str, optional
        The trial types that label frames, in tie-break order; others are ignored.
        Default: every trial type in ``events``.
    rest_label : str, default="fixation"
        Label of frames no selected event covers.
    strict : bool, default=True
        An event that starts after the run has ended is an error naming its file when
        True; when False it is dropped with a warning. Events that start inside the run
        but end after it always give a warning (the frames inside are labelled).

    Returns
    -------
    labels : ndarray of str, shape (n_frames,)
    task_on : ndarray of bool, shape (n_frames,)
        True where a selected event covers the frame.

    Raises
    ------
    InvalidParameterError
        Bad ``n_frames``/``t_r``/``slice_time_ref``, or a condition not in ``events``.
    InputDataError
        Missing columns; an event starting after the end of the run (``strict``).
    """
    _check_frame_args(n_frames, t_r, hrf_delay, slice_time_ref)
    missing = [c for c in _COLUMNS if c not in events.columns]
    if missing:
        raise InputDataError(f"events lack column(s) {missing}; they have {list(events.columns)}.")
    known = sorted(set(events.attrs.get("conditions", [])) | set(events["trial_type"].astype(str)))
    if conditions is None:
        conditions = known
    conditions = [str(c) for c in conditions]
    for condition in conditions:
        if condition not in known:
            from .._utils import check_option

            check_option("conditions", condition, known)
    rank = {c: i for i, c in enumerate(conditions)}
    selected = events[events["trial_type"].astype(str).isin(rank)]
    selected = _drop_outside(selected, n_frames * t_r, strict, events.attrs.get("source", {}))

    times = frame_times(n_frames, t_r, slice_time_ref)
    labels = np.full(n_frames, rest_label, dtype=object)
    on = np.zeros(n_frames, dtype=bool)
    # Ascending onset, and among equal onsets the top-ranked last, so it is written last.
    order = sorted(
        zip(
            selected["onset"], selected["duration"], selected["trial_type"].astype(str), strict=True
        ),
        key=lambda e: (e[0], -rank[e[2]]),
    )
    for onset, duration, condition in order:
        start = onset + hrf_delay
        covered = (times >= start) & (times < start + duration)
        labels[covered] = condition
        on |= covered
    return labels.astype(str), on


def _check_frame_args(n_frames, t_r, hrf_delay, slice_time_ref) -> None:
    if int(n_frames) != n_frames or n_frames < 1:
        raise InvalidParameterError(
            f"Invalid value for 'n_frames': {n_frames!r}. Expected an integer >= 1."
        )
    if not (np.isfinite(t_r) and t_r > 0):
        raise InvalidParameterError(f"Invalid value for 't_r': {t_r!r}. Expected seconds > 0.")
    if not np.isfinite(hrf_delay):
        raise InvalidParameterError(
            f"Invalid value for 'hrf_delay': {hrf_delay!r}. Expected seconds."
        )
    if not 0 <= slice_time_ref <= 1:
        raise InvalidParameterError(
            f"Invalid value for 'slice_time_ref': {slice_time_ref!r}. Expected a fraction of the TR in [0, 1]."
        )


def _drop_outside(
    events: pd.DataFrame, run_end: float, strict: bool, sources: dict
) -> pd.DataFrame:
    """Handle events beyond the run: error/drop those starting after it, warn on overhang."""
    onset = events["onset"].to_numpy(dtype=float)
    end = onset + events["duration"].to_numpy(dtype=float)
    after = onset >= run_end
    if after.any():
        rows = events[after]
        names = sorted({sources.get(t, "events") for t in rows["trial_type"].astype(str)})
        message = (
            f"{int(after.sum())} event(s) start at or after the end of the run ({run_end:g} s = "
            f"n_frames x t_r): onsets {rows['onset'].tolist()[:5]} in {', '.join(names)}. "
            "Are these the events of another run, or is t_r wrong?"
        )
        if strict:
            raise InputDataError(message + " Pass strict=False to drop them.")
        warnings.warn(message + " Dropped.", UserWarning, stacklevel=3)
        events = events[~after]
        end = end[~after]
    overhang = end > run_end + 1e-9
    if overhang.any():
        rows = events[overhang]
        names = sorted({sources.get(t, "events") for t in rows["trial_type"].astype(str)})
        warnings.warn(
            f"{int(overhang.sum())} event(s) run past the end of the run ({run_end:g} s) in "
            f"{', '.join(names)}; only their frames inside the run are labelled.",
            UserWarning,
            stacklevel=3,
        )
    return events
