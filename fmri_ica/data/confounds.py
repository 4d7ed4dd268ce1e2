"""Nuisance regressors of a run: HCP movement files and fMRIPrep confounds via nilearn."""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .._utils import check_option
from ..exceptions import InputDataError, InvalidParameterError
from .runs import Run

__all__ = ["HCP_MOVEMENT_COLUMNS", "FMRIPREP_STRATEGIES", "load_run_confounds", "read_hcp_movement"]

logger = logging.getLogger(__name__)

_MOTION = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
#: Column names given to HCP's Movement_Regressors.txt (mm, degrees, then their derivatives),
#: named as fMRIPrep names the same quantities.
HCP_MOVEMENT_COLUMNS = _MOTION + tuple(f"{m}_derivative1" for m in _MOTION)
#: nilearn presets we accept (ICA-AROMA needs the AROMA-denoised BOLD: use nilearn directly).
FMRIPREP_STRATEGIES = ("simple", "scrubbing", "compcor")


def read_hcp_movement(path: str | os.PathLike) -> pd.DataFrame:
    """Read an HCP ``Movement_Regressors.txt``.

    Returns
    -------
    DataFrame, shape (n_frames, 12)
        Columns :data:`HCP_MOVEMENT_COLUMNS`.

    Raises
    ------
    InputDataError
        Missing, unreadable or empty file, non-numeric content, NaN or infinite values, or
        a column count other than 12 (e.g. the 6-column ``Movement_Regressors_dt.txt`` or
        ``Movement_AbsoluteRMS.txt``).
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"Movement regressors not found: {path}")
    try:
        text = path.read_text()
    except OSError as error:
        raise InputDataError(
            f"Cannot read the movement regressors {path}: {error.strerror or error}. Check the "
            "file's permissions."
        ) from error
    except UnicodeDecodeError as error:
        raise InputDataError(f"{path} is not a text table of numbers ({error.reason}).") from error
    if not text.strip():
        raise InputDataError(
            f"{path} is empty; HCP Movement_Regressors.txt holds one row of 12 numbers per "
            "frame. Re-copy it from the HCP release, or set parcellation.confounds_strategy "
            "to null (--confounds-strategy none) to go without motion regressors."
        )
    try:
        values = np.loadtxt(io.StringIO(text), ndmin=2, dtype=float)
    except ValueError as error:
        raise InputDataError(f"{path} is not a numeric table: {error}") from error
    bad = ~np.isfinite(values)
    if bad.any():
        rows = (np.flatnonzero(bad.any(axis=1)) + 1).tolist()
        raise InputDataError(
            f"{path} holds NaN or infinite values in {len(rows)} row(s) (line(s) "
            f"{', '.join(map(str, rows[:5]))}{', ...' if len(rows) > 5 else ''}): re-copy it "
            "from the HCP release, or set parcellation.confounds_strategy to null."
        )
    if values.shape[1] != len(HCP_MOVEMENT_COLUMNS):
        raise InputDataError(
            f"{path} has {values.shape[1]} columns; HCP Movement_Regressors.txt has 12 "
            "(3 translations in mm, 3 rotations in degrees, and their 6 derivatives). "
            "Is this the right file?"
        )
    return pd.DataFrame(values, columns=list(HCP_MOVEMENT_COLUMNS))


def load_run_confounds(
    run: Run,
    strategy: str | tuple | list | None = "simple",
    **kwargs,
) -> tuple[pd.DataFrame | None, np.ndarray | None]:
    """Confound regressors and the sample mask of a run.

    Parameters
    ----------
    run : Run
    strategy : str, tuple of str or None, default="simple"
        fMRIPrep runs: a nilearn preset (``"simple"``, ``"scrubbing"``, ``"compcor"``;
        :func:`nilearn.interfaces.fmriprep.load_confounds_strategy`) or a tuple of
        components (``("motion", "wm_csf")``;
        :func:`nilearn.interfaces.fmriprep.load_confounds`). ``"simple"`` (24 motion
        terms, white matter and CSF means, cosine drift terms; only non-steady-state
        volumes dropped) is the default because it keeps the frames aligned with the
        task labels; ``"scrubbing"`` drops high-motion frames too.
        HCP runs: ``"simple"`` gives the 12 movement columns, demeaned (HCP ships no
        tissue signals); other strategies are refused. None: no confounds.
    **kwargs
        Passed to nilearn (e.g. ``motion="basic"``, ``fd_threshold=0.3``).

    Returns
    -------
    confounds : DataFrame of shape (n_frames, n_confounds), or None
    sample_mask : ndarray of int or None
        Indices of the frames to keep (None: keep all), for nilearn maskers.

    Raises
    ------
    InputDataError
        No confounds file, or the file lacks what the strategy needs, or its row
        count differs from the run's frame count.
    """
    if strategy is None:
        return None, None
    if run.confounds is None:
        raise InputDataError(
            f"Run {run.key} has no confounds file; pass strategy=None to go without confounds."
        )
    path = Path(run.confounds)
    if path.name.startswith("Movement_Regressors") or run.layout == "hcp":
        if strategy != "simple" or kwargs:
            raise InvalidParameterError(
                f"Invalid value for 'strategy': {strategy!r} with {path.name}: HCP runs have only "
                "the 12 movement regressors; use strategy='simple' (or None)."
            )
        confounds = read_hcp_movement(path)
        confounds, sample_mask = confounds - confounds.mean(axis=0), None
    else:
        confounds, sample_mask = _fmriprep_confounds(run, path, strategy, kwargs)
    n_frames = (run.extra.get("shape") or [None] * 4)[3]
    if n_frames is not None and len(confounds) != n_frames:
        raise InputDataError(
            f"{path} has {len(confounds)} rows but {run.bold} has {n_frames} frames. "
            "Is this the confounds file of another run?"
        )
    return confounds, sample_mask


def _fmriprep_confounds(run: Run, path: Path, strategy, kwargs):
    from nilearn.interfaces.fmriprep import load_confounds, load_confounds_strategy

    if isinstance(strategy, str):
        check_option("strategy", strategy, FMRIPREP_STRATEGIES)
    if not path.is_file():
        raise InputDataError(f"Confounds file not found: {path}")
    # nilearn finds the confounds from the BOLD's name. Give it a private folder holding
    # only this run's files under canonical names, so manifest runs with any names work
    # and a stray second confounds file next to the BOLD cannot make it ambiguous.
    with tempfile.TemporaryDirectory(prefix="fmri_ica_confounds_") as tmp:
        stem = "sub-x_task-x"  # fixed: labels with '_' or '-' would confuse BIDS parsing
        bold = Path(tmp) / f"{stem}_desc-preproc_bold.nii.gz"
        bold.touch()
        _link(path, Path(tmp) / f"{stem}_desc-confounds_timeseries.tsv")
        sidecar = path.with_suffix(".json")
        if sidecar.is_file():
            _link(sidecar, Path(tmp) / f"{stem}_desc-confounds_timeseries.json")
        try:
            if isinstance(strategy, str):
                confounds, sample_mask = load_confounds_strategy(str(bold), strategy, **kwargs)
            else:
                confounds, sample_mask = load_confounds(
                    str(bold), strategy=tuple(strategy), **kwargs
                )
        except (ValueError, TypeError) as error:
            raise InputDataError(
                f"Cannot load confounds from {path} with strategy {strategy!r}: {error}"
            ) from error
        except Exception as error:
            # nilearn signals absent columns with KeyError or its MissingConfoundError.
            if isinstance(error, KeyError):
                missing = error.args[0] if error.args else error
            elif type(error).__name__ == "MissingConfoundError":
                missing = error.params + error.keywords
            else:
                raise
            raise InputDataError(
                f"{path} lacks the columns strategy {strategy!r} needs: {missing}. Choose "
                "another strategy (e.g. a tuple of components) or regenerate the confounds."
            ) from error
    logger.debug("%s: %d confounds, sample_mask %s", path, confounds.shape[1], sample_mask)
    return confounds, sample_mask


def _link(src: Path, dst: Path) -> None:
    try:
        os.symlink(src.resolve(), dst)
    except OSError:  # file systems without symlinks
        shutil.copyfile(src, dst)
