"""Builders of tiny on-disk data sets (HCP tree, fMRIPrep + raw BIDS, manifest) for tests.

Shapes are deliberately unequal (7, 8, 9) so that axis mix-ups fail. Other test modules
may import these: ``from _fixtures_layouts import make_hcp_tree`` (tests/ is on sys.path).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

AFFINE = np.array([[-3.0, 0, 0, 30.0], [0, 3.0, 0, -40.0], [0, 0, 3.0, -20.0], [0, 0, 0, 1.0]])

#: Default HCP MOTOR-like EVs (onset, duration, amplitude), fitting 20 frames x 0.72 s.
HCP_EVS = {
    "cue": [(0.0, 1.0, 1.0), (7.0, 1.0, 1.0)],
    "lf": [(1.5, 4.0, 1.0)],
    "rh": [(8.0, 4.0, 1.0)],
    "t": [],  # HCP ships some empty EV files
}

#: fMRIPrep confound columns that nilearn's "simple" strategy reads.
_MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]


def write_bold(
    path: str | Path,
    shape=(7, 8, 9),
    n_frames: int = 20,
    t_r: float | None = 0.72,
    time_unit: str = "sec",
    seed: int = 0,
) -> Path:
    """Write a random float32 4D image with pixdim[4] = t_r (in ``time_unit``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).standard_normal((*shape, n_frames)).astype("float32") + 100
    img = nib.Nifti1Image(data, AFFINE)
    img.header.set_xyzt_units("mm", time_unit)
    factor = {"sec": 1.0, "msec": 1e3, "usec": 1e6}[time_unit]
    img.header["pixdim"][4] = 0.0 if t_r is None else t_r * factor
    nib.save(img, path)
    return path


def write_mask(path: str | Path, shape=(7, 8, 9)) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.zeros(shape, dtype="uint8")
    data[1:-1, 1:-1, 1:-1] = 1
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return path


def truncate(path: str | Path, fraction: float = 0.5) -> Path:
    """Cut a file to ``fraction`` of its size (a half-copied download)."""
    path = Path(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * fraction)])
    return path


def write_fsl_ev(path: str | Path, rows) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{o:g}\t{d:g}\t{a:g}\n" for o, d, a in rows))
    return path


def write_movement(
    path: str | Path, n_frames: int = 20, n_columns: int = 12, seed: int = 0
) -> Path:
    path = Path(path)
    values = np.random.default_rng(seed).standard_normal((n_frames, n_columns)) * 0.1
    np.savetxt(path, values, fmt="%.6f", delimiter="  ")
    return path


def make_hcp_tree(
    tmp_path: str | Path,
    subjects=("100307",),
    tasks=("MOTOR",),
    dirs=("LR", "RL"),
    shape=(7, 8, 9),
    n_frames: int = 20,
    t_r: float | None = 0.72,
    evs: dict | None = None,
    with_evs: bool = True,
    with_mask: bool = True,
    with_movement: bool = True,
) -> Path:
    """An HCP tree ``<root>/<subject>/MNINonLinear/Results/tfMRI_<TASK>_<DIR>/``; returns root.

    Each run gets the BOLD, ``EVs/<name>.txt`` (``evs``, default :data:`HCP_EVS`) and
    ``Sync.txt`` as HCP ships them, ``Movement_Regressors.txt`` and ``brainmask_fs.2.nii.gz``.
    """
    root = Path(tmp_path) / "hcp"
    evs = HCP_EVS if evs is None else evs
    for i, subject in enumerate(subjects):
        for j, task in enumerate(tasks):
            for k, direction in enumerate(dirs):
                name = f"tfMRI_{task}_{direction}"
                run_dir = root / subject / "MNINonLinear" / "Results" / name
                write_bold(
                    run_dir / f"{name}.nii.gz", shape, n_frames, t_r, seed=100 * i + 10 * j + k
                )
                if with_evs:
                    for ev, rows in evs.items():
                        write_fsl_ev(run_dir / "EVs" / f"{ev}.txt", rows)
                    (run_dir / "EVs" / "Sync.txt").write_text("0.123\n")
                if with_mask:
                    write_mask(run_dir / "brainmask_fs.2.nii.gz", shape)
                if with_movement:
                    write_movement(run_dir / "Movement_Regressors.txt", n_frames)
    return root


def fmriprep_confounds(n_frames: int = 20, n_non_steady: int = 1, seed: int = 0):
    """A DataFrame with the columns fMRIPrep writes and nilearn's strategies read.

    Derivative columns start with NaN (as fMRIPrep's do); ``n_non_steady`` one-hot
    ``non_steady_state_outlier_XX`` columns flag the first volumes.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    columns = {}
    for base in [*_MOTION, "csf", "white_matter", "global_signal"]:
        x = rng.standard_normal(n_frames)
        d = np.r_[np.nan, np.diff(x)]
        columns[base] = x
        columns[f"{base}_derivative1"] = d
        columns[f"{base}_power2"] = x**2
        columns[f"{base}_derivative1_power2"] = d**2
    columns["framewise_displacement"] = np.r_[
        np.nan, np.abs(rng.standard_normal(n_frames - 1)) * 0.1
    ]
    columns["std_dvars"] = np.r_[np.nan, np.abs(rng.standard_normal(n_frames - 1))]
    t = np.arange(n_frames)
    for c in range(2):
        columns[f"cosine{c:02d}"] = np.cos(np.pi * (c + 1) * (t + 0.5) / n_frames)
    for c in range(n_non_steady):
        columns[f"non_steady_state_outlier{c:02d}"] = (t == c).astype(float)
    return pd.DataFrame(columns)


def make_bids_tree(
    tmp_path: str | Path,
    subjects=("01",),
    tasks=("motor",),
    runs=("1",),
    sessions=(None,),
    spaces=("MNI152NLin2009cAsym",),
    res=None,
    shape=(7, 8, 9),
    n_frames: int = 20,
    t_r: float | None = 2.0,
    sidecar_t_r: float | None = None,
    sidecar_in: str = "raw",
    with_events: bool = True,
    n_non_steady: int = 1,
) -> tuple[Path, Path]:
    """A raw BIDS data set with fMRIPrep derivatives at ``<ds>/derivatives/fmriprep``.

    Returns ``(derivatives_root, raw_root)``. ``sidecar_t_r`` (default ``t_r``) goes
    in the raw ``_bold.json`` (``sidecar_in="raw"``), the derivative's JSON
    (``"derivatives"``), the top-level ``task-<t>_bold.json`` (``"top"``) or nowhere
    (``None``). Events: two blocks of trial types ``left`` and ``right``.
    """
    import pandas as pd

    raw = Path(tmp_path) / "ds"
    deriv = raw / "derivatives" / "fmriprep"
    sidecar_t_r = t_r if sidecar_t_r is None else sidecar_t_r
    (raw / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (raw / "dataset_description.json").write_text(
        json.dumps({"Name": "tiny", "BIDSVersion": "1.8.0"})
    )
    seed = 0
    for sub in subjects:
        for ses in sessions:
            for task in tasks:
                for run in runs:
                    ent = f"sub-{sub}" + (f"_ses-{ses}" if ses else "") + f"_task-{task}"
                    ent += f"_run-{run}" if run else ""
                    rel = Path(f"sub-{sub}") / (f"ses-{ses}" if ses else "") / "func"
                    raw_func, der_func = raw / rel, deriv / rel
                    raw_func.mkdir(parents=True, exist_ok=True)
                    if with_events:
                        pd.DataFrame(
                            {
                                "onset": [2.0, 20.0],
                                "duration": [10.0, 10.0],
                                "trial_type": ["left", "right"],
                            }
                        ).to_csv(raw_func / f"{ent}_events.tsv", sep="\t", index=False)
                    sidecar = {"RepetitionTime": sidecar_t_r, "TaskName": task}
                    if sidecar_in == "raw":
                        (raw_func / f"{ent}_bold.json").write_text(json.dumps(sidecar))
                    elif sidecar_in == "top":
                        (raw / f"task-{task}_bold.json").write_text(json.dumps(sidecar))
                    for space in spaces:
                        for r in res or [None]:
                            sp = f"_space-{space}" + (f"_res-{r}" if r else "")
                            bold = der_func / f"{ent}{sp}_desc-preproc_bold.nii.gz"
                            write_bold(bold, shape, n_frames, t_r, seed=seed)
                            seed += 1
                            write_mask(der_func / f"{ent}{sp}_desc-brain_mask.nii.gz", shape)
                            if sidecar_in == "derivatives":
                                bold.with_name(bold.name.replace(".nii.gz", ".json")).write_text(
                                    json.dumps(sidecar)
                                )
                    confounds = fmriprep_confounds(n_frames, n_non_steady, seed=seed)
                    confounds.to_csv(
                        der_func / f"{ent}_desc-confounds_timeseries.tsv",
                        sep="\t",
                        index=False,
                        na_rep="n/a",
                    )
                    (der_func / f"{ent}_desc-confounds_timeseries.json").write_text(
                        json.dumps({c: {"Method": "fake"} for c in confounds.columns})
                    )
    return deriv, raw


def make_manifest(tmp_path: str | Path, rows: list[dict], name: str = "runs.tsv") -> Path:
    """Write a manifest TSV from dicts (columns: bold, subject, task, run, session,
    events, confounds, mask, t_r; missing keys are left empty). Returns its path."""
    import pandas as pd

    path = Path(tmp_path) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).fillna("").to_csv(path, sep="\t", index=False)
    return path
