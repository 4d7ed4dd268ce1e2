"""Simulated HCP task fMRI with known ground truth.

:func:`simulate_hcp` writes a data set in the HCP layout (``<subject>/MNINonLinear/
Results/tfMRI_<TASK>_<DIR>/...``) with the 7 HCP tasks, block designs that mimic each
task's real structure, and a task signal planted in known atlas regions. It is the data
of the demo and of the end-to-end tests; ``ground_truth.json`` says where and when the
signal is.

The model, in percent of a brain-shaped baseline intensity ``B`` (about 1000):

    y(t, v) = B_v * (1 + [a_v x(t) + n_r(t) + d_r(t) + g(t) + e_v(t)] / 100) + m(t) . c_v

with ``x`` the run's block EVs (:func:`block_evs`) through a subject-specific SPM HRF
(frames sampled mid-TR, as :mod:`fmri_ica.data.events` labels them), ``a_v`` the
planted amplitude of voxel ``v`` (its region's amplitude times a smooth per-subject
spatial weight; zero outside planted regions), ``n_r`` AR(1) noise of the voxel's
region ``r``, ``d_r`` slow drift, ``g`` a global AR(1) signal, ``e_v`` white voxel
noise, ``m`` the 6 rigid motion parameters (written to ``Movement_Regressors.txt``) and
``c_v`` the intensity change a small rigid displacement causes at ``v`` (the baseline's
gradient), so that motion confound regression has something real to remove.

Signals are generated per region and painted into voxels with one label lookup, which
keeps a 4 mm run at a fraction of a second; writing the compressed NIfTI dominates.

``activation="blobs"`` drops the atlas altogether, because no analysis atlas matches a
real activation: each task drives smooth Gaussian blobs around MNI centres, jittered,
rescaled and given its own HRF time scale per subject, and the region terms
``n_r + d_r`` become spatially smooth noise (random smooth fields with AR(1) time
courses and drift). :func:`planted_regions_for_atlas` then says which regions of any
analysis atlas the blobs fall in.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import atomic_path, check_option, package_versions, write_json, write_text
from .._utils import progress as _progress
from ..exceptions import InputDataError, InvalidParameterError

__all__ = [
    "HCP_EVS",
    "HCP_FRAMES",
    "HCP_TASKS",
    "SHORT_FRAMES",
    "SimulationResult",
    "block_evs",
    "directory_size",
    "hcp_grid",
    "on_frames",
    "planted_regions_for_atlas",
    "simulate_events",
    "simulate_hcp",
]

logger = logging.getLogger(__name__)

HCP_TASKS = ("EMOTION", "GAMBLING", "LANGUAGE", "MOTOR", "RELATIONAL", "SOCIAL", "WM")
#: Frames per run of the HCP S1200 release (TR 0.72 s).
HCP_FRAMES = {
    "EMOTION": 176,
    "GAMBLING": 253,
    "LANGUAGE": 316,
    "MOTOR": 284,
    "RELATIONAL": 232,
    "SOCIAL": 274,
    "WM": 405,
}
_WM_STIMULI = ("body", "faces", "places", "tools")
#: EV file names of each task, in the order HCP lists them.
HCP_EVS = {
    "EMOTION": ("fear", "neut"),
    "GAMBLING": ("win", "loss", "win_event", "loss_event", "neut_event"),
    "LANGUAGE": ("story", "math"),
    "MOTOR": ("cue", "lf", "rf", "lh", "rh", "t"),
    "RELATIONAL": ("relation", "match"),
    "SOCIAL": ("mental", "rnd", "mental_resp", "other_resp"),
    "WM": tuple(f"{b}_{s}" for b in ("0bk", "2bk") for s in _WM_STIMULI)
    + tuple(f"{b}_{o}" for b in ("0bk", "2bk") for o in ("cor", "err", "nlr"))
    + ("all_bk_cor", "all_bk_err"),
}
#: Common run length of ``frames="short"``: one length for all tasks, so that run length
#: cannot give the task away (EVALUATION.md).
SHORT_FRAMES = 100
HCP_T_R = 0.72
HCP_DIRECTIONS = ("LR", "RL")

# The HCP 2 mm grid: 91 x 109 x 91, affine diag(-2, 2, 2), origin (90, -126, -72).
_HCP_ORIGIN = np.array([90.0, -126.0, -72.0])
_HCP_EXTENT = np.array([180.0, 216.0, 180.0])

# Noise model, relative to ``noise`` (the std of a region's AR(1) noise, in % signal).
_AR_PHI = 0.5  # lag-1 autocorrelation of region noise at the frame rate
_GLOBAL_STD = 0.3
_DRIFT_STD = 0.5
_VOXEL_STD = 1.0
_BASELINE = 1000.0
_QUANTUM = 1.0 / 16  # intensities are rounded to 1/16: exact in float32, smaller files
_DEFAULT_ATLAS = "gm_kmeans"
_ACTIVATIONS = ("regions", "blobs")
# Blobs mode: smooth noise is this many random fields (per run) of this smoothness, each
# with its own AR(1) course; enough fields that the noise is not low-rank in practice.
_NOISE_FIELDS = 32
_NOISE_FWHM = 12.0
_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
_SPM_PEAK_S = 5.0  # time to peak of SPM's canonical HRF
_GREY = 0.5  # grey-matter probability of the voxels that may hold a blob centre


# --------------------------------------------------------------------------- designs


@dataclass(frozen=True)
class _Design:
    """Block structure of one HCP task (durations in seconds)."""

    blocks: tuple[str, ...]  # block EVs; each cycle shows every one once, shuffled
    block_s: dict[str, float]
    gap_s: float  # instruction / cue interval before each block
    fix_s: float  # fixation block length...
    fix_every: int  # ...after every this many blocks (0: none)
    cue: str = ""  # EV of the cue shown during the gap (MOTOR)
    trial_s: float = 0.0  # trials within blocks (event EVs), 0: none


_DESIGNS = {
    "EMOTION": _Design(("fear", "neut"), {"fear": 18.0, "neut": 18.0}, 3.0, 0.0, 0),
    "GAMBLING": _Design(("win", "loss"), {"win": 28.0, "loss": 28.0}, 1.0, 15.0, 1, trial_s=3.5),
    "LANGUAGE": _Design(("story", "math"), {"story": 26.0, "math": 16.0}, 2.0, 0.0, 0),
    "MOTOR": _Design(
        ("lf", "rf", "lh", "rh", "t"), dict.fromkeys(("lf", "rf", "lh", "rh", "t"), 12.0), 3.0,
        15.0, 3, cue="cue",
    ),
    "RELATIONAL": _Design(("relation", "match"), {"relation": 16.0, "match": 16.0}, 1.0, 16.0, 2),
    "SOCIAL": _Design(("mental", "rnd"), {"mental": 23.0, "rnd": 23.0}, 1.0, 15.0, 1),
    "WM": _Design(
        tuple(f"{b}_{s}" for b in ("2bk", "0bk") for s in _WM_STIMULI),
        dict.fromkeys((f"{b}_{s}" for b in ("2bk", "0bk") for s in _WM_STIMULI), 25.0),
        2.5, 15.0, 2, trial_s=2.5,
    ),
}


def simulate_events(task: str, duration: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw one run's HCP-like block design.

    Blocks follow the task's real structure (block and fixation lengths, cues, trial
    events); their order is shuffled and onsets, block and fixation lengths are
    jittered, so that no two runs share a design.

    Parameters
    ----------
    task : str
        One of :data:`HCP_TASKS`.
    duration : float
        Run length in seconds; a block that would end after it is cut at the end.
    rng : numpy.random.Generator

    Returns
    -------
    dict of str to ndarray, shape (n_events, 3)
        Every EV of the task (:data:`HCP_EVS`), as FSL rows (onset s, duration s,
        amplitude); an EV with no events is an empty (0, 3) array, as in HCP.
    """
    task = check_option("task", task, HCP_TASKS)
    design = _DESIGNS[task]
    events: dict[str, list] = {name: [] for name in HCP_EVS[task]}
    t = rng.uniform(4.0, 10.0)  # initial fixation
    order: list[str] = []
    n_blocks = 0
    while True:
        if not order:
            order = list(rng.permutation(design.blocks))
        name = order.pop(0)
        gap = design.gap_s * rng.uniform(0.8, 1.2)
        length = design.block_s[name] * rng.uniform(0.9, 1.1)
        onset = t + gap
        if onset + 2.0 > duration:
            break
        length = min(length, duration - onset)
        if design.cue:
            events[design.cue].append((t, gap, 1.0))
        events[name].append((onset, length, 1.0))
        _add_trials(task, name, onset, length, design.trial_s, rng, events)
        t = onset + length
        n_blocks += 1
        if design.fix_every and n_blocks % design.fix_every == 0:
            t += design.fix_s * rng.uniform(0.85, 1.15)
    return {
        name: np.asarray(rows, dtype=float).reshape(-1, 3).round(3)
        for name, rows in events.items()
    }


def _add_trials(task, block, onset, length, trial_s, rng, events) -> None:
    """Trial-level EVs inside a block: gambling outcomes, WM accuracy, social responses."""
    if task == "SOCIAL":  # one judgement right after each clip
        mental = rng.random() < (0.85 if block == "mental" else 0.15)
        events["mental_resp" if mental else "other_resp"].append(
            (onset + length, rng.uniform(0.5, 2.0), 1.0)
        )
        return
    if not trial_s:
        return
    n_trials = int(length // trial_s)
    if task == "GAMBLING":
        # a reward block is mostly wins, a loss block mostly losses (HCP: 6 of 8)
        main = "win_event" if block == "win" else "loss_event"
        other = "loss_event" if block == "win" else "win_event"
        names = rng.choice([main, other, "neut_event"], size=n_trials, p=[0.75, 0.125, 0.125])
    else:  # WM: correct, error or no response; errors are rare, so some files stay empty
        back = block.split("_")[0]
        outcome = rng.choice(["cor", "err", "nlr"], size=n_trials, p=[0.9, 0.07, 0.03])
        names = [f"{back}_{o}" for o in outcome]
        for i, o in enumerate(outcome):
            if o != "nlr":
                events[f"all_bk_{o}"].append((onset + i * trial_s, 2.0, 1.0))
    for i, name in enumerate(names):
        events[name].append((onset + i * trial_s, 2.0 if task == "WM" else trial_s, 1.0))


def block_evs(task: str) -> tuple[str, ...]:
    """The EVs that carry the task response: blocks (and MOTOR's cues), not the trial
    or response events nested in or between them (as ``events.HCP_BLOCK_EVS``)."""
    design = _DESIGNS[check_option("task", task, HCP_TASKS)]
    return tuple(name for name in HCP_EVS[task] if name in design.blocks or name == design.cue)


def _union(events: dict[str, np.ndarray]) -> np.ndarray:
    """Merged intervals during which any EV is on; shape (n, 2): start, end (s)."""
    rows = np.concatenate([r for r in events.values() if r.size] or [np.zeros((0, 3))])
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    merged: list[list[float]] = []
    for onset, duration, _ in rows:
        if merged and onset <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], onset + duration)
        else:
            merged.append([onset, onset + duration])
    return np.asarray(merged, dtype=float).reshape(-1, 2)


def _frame_times(n_frames: int, t_r: float) -> np.ndarray:
    """Acquisition time of each frame: the middle of its TR (the events module's default)."""
    return (np.arange(n_frames) + 0.5) * t_r


def on_frames(events: dict[str, np.ndarray], n_frames: int, t_r: float) -> np.ndarray:
    """Frames acquired while any of ``events`` is on.

    Parameters
    ----------
    events : dict of str to ndarray, shape (n_events, 3)
        FSL rows per EV; pass the block EVs (:func:`block_evs`) for task-ON frames.
    n_frames : int
    t_r : float

    Returns
    -------
    ndarray of bool, shape (n_frames,)
        True where the frame time ``(i + 0.5) * t_r`` lies in ``[onset, onset +
        duration)``, as :func:`fmri_ica.data.events.frame_conditions` labels frames.
    """
    times = _frame_times(n_frames, t_r)
    on = np.zeros(n_frames, dtype=bool)
    for start, end in _union(events):
        on |= (times >= start) & (times < end)
    return on


def _regressor(events, n_frames: int, t_r: float, hrf_onset: float,
               stretch: float = 1.0) -> np.ndarray:
    """The union of ``events`` convolved with an SPM HRF delayed by ``hrf_onset`` s.

    ``stretch`` scales the HRF's time axis (peak ~5 s x stretch, wider when later); the
    kernel keeps unit sum, so a long block still plateaus at 1.

    Returns
    -------
    ndarray, shape (n_frames,)
        About 1 during a long block, 0 at rest.
    """
    from nilearn.glm.first_level import compute_regressor, spm_hrf

    blocks = _union(events)
    if blocks.size == 0:
        return np.zeros(n_frames)
    condition = np.vstack([blocks[:, 0], blocks[:, 1] - blocks[:, 0], np.ones(len(blocks))])

    def delayed_spm(t_r, oversampling=50, time_length=32.0, onset=0.0):
        # sampling the canonical HRF at dt / stretch stretches it in time by `stretch`
        return spm_hrf(t_r / stretch, oversampling, time_length / stretch,
                       (onset + hrf_onset) / stretch)

    regressor, _ = compute_regressor(condition, [delayed_spm], _frame_times(n_frames, t_r), oversampling=20)
    return regressor[:, 0]


# --------------------------------------------------------------------------- grid, atlas


def hcp_grid(voxel_size: float = 2.0) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the HCP MNI grid at ``voxel_size`` mm.

    At 2 mm this is HCP's 91 x 109 x 91 grid (affine diag(-2, 2, 2), origin
    (90, -126, -72)); coarser grids keep the same first voxel and field of view, so
    world coordinates match.

    Returns
    -------
    shape : tuple of int
    affine : ndarray, shape (4, 4)
    """
    shape = tuple(int(n) for n in np.floor(_HCP_EXTENT / voxel_size + 1e-6) + 1)
    affine = np.diag([-voxel_size, voxel_size, voxel_size, 1.0])
    affine[:3, 3] = _HCP_ORIGIN
    return shape, affine


@dataclass
class _Brain:
    """Everything about the grid shared by all runs."""

    affine: np.ndarray
    mask: np.ndarray  # (x, y, z) bool
    labels: np.ndarray  # (n_voxels,) atlas label of each mask voxel, 0 = none
    label_img: Any  # atlas image on the grid
    regions: Any  # DataFrame, index = label
    baseline: np.ndarray  # (n_voxels,)
    motion_coef: np.ndarray  # (n_voxels, 6) intensity change per mm / degree
    atlas_info: dict = field(default_factory=dict)
    grey: np.ndarray | None = None  # (n_voxels,) grey-matter probability
    coords: np.ndarray | None = None  # (n_voxels, 3) MNI mm


def _brain(voxel_size: float, atlas, atlas_options: dict) -> _Brain:
    """The grid's brain; ``atlas=None`` (blobs mode) builds none of an atlas."""
    if atlas is None or isinstance(atlas, (str, os.PathLike)):  # reuse within a process
        return _cached_brain(voxel_size, None if atlas is None else str(atlas),
                             json.dumps(atlas_options, sort_keys=True))
    return _make_brain(voxel_size, atlas, atlas_options)


@lru_cache(maxsize=4)
def _cached_brain(voxel_size: float, atlas: str | None, options: str) -> _Brain:
    return _make_brain(voxel_size, atlas, json.loads(options))


def _make_brain(voxel_size: float, atlas, atlas_options: dict) -> _Brain:
    import nibabel as nib
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_gm_template
    from nilearn.image import resample_img
    from scipy.ndimage import gaussian_filter

    shape, affine = hcp_grid(voxel_size)

    def to_grid(img, interpolation):
        return resample_img(
            img, target_affine=affine, target_shape=shape, interpolation=interpolation,
            force_resample=True, copy_header=True,
        ).get_fdata()

    mask = to_grid(load_mni152_brain_mask(resolution=2), "nearest") > 0
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), affine)
    if atlas is None:
        label_img, regions, atlas_info = None, None, {}
        label_vol = np.zeros(shape, dtype=np.int64)
    else:
        label_img, regions, atlas_info = _atlas_on_grid(atlas, atlas_options, mask_img)
        label_vol = np.asarray(label_img.dataobj).astype(np.int64)
    # EPI-like baseline: bright inside, grey matter a little brighter, soft edges
    grey = np.clip(to_grid(load_mni152_gm_template(resolution=2), "linear"), 0, 1)
    soft = gaussian_filter(mask.astype(float), sigma=3.0 / voxel_size)
    volume = _BASELINE * soft * (0.9 + 0.2 * grey)
    gradient = np.stack(np.gradient(volume), axis=-1)[mask] / np.diag(affine)[:3]  # per mm
    coords = nib.affines.apply_affine(affine, np.argwhere(mask))
    position = coords - coords.mean(axis=0)
    coef = np.concatenate(
        [-gradient, -np.cross(position, gradient) * np.pi / 180], axis=1
    )
    brain = _Brain(
        affine=affine, mask=mask, labels=label_vol[mask], label_img=label_img, regions=regions,
        baseline=volume[mask], motion_coef=coef, atlas_info=atlas_info, grey=grey[mask],
        coords=coords,
    )
    for array in (brain.affine, brain.mask, brain.labels, brain.baseline, brain.motion_coef,
                  brain.grey, brain.coords):
        array.flags.writeable = False  # shared by the runs (and cached): never modified
    return brain


def _atlas_on_grid(atlas, options: dict, mask_img):
    """Label image on the grid, region table (index = label value) and a description."""
    import nibabel as nib
    import pandas as pd
    from nilearn.image import resample_to_img

    if isinstance(atlas, (str, os.PathLike)):
        from .atlases import load_atlas

        loaded = load_atlas(atlas, target_img=mask_img, mask_img=mask_img, **options)
        if loaded.kind != "labels":
            raise InvalidParameterError(
                f"Invalid value for 'atlas': {str(atlas)!r} is a {loaded.kind!r} atlas; the "
                "simulator plants signals in the regions of a label atlas (e.g. 'gm_kmeans')."
            )
        regions = loaded.labels.set_index("index") if "index" in loaded.labels else loaded.labels
        info = {"name": loaded.name, "kind": loaded.kind, "options": loaded.options,
                "checksum": loaded.checksum}
        return loaded.img, regions, info
    img = resample_to_img(atlas, mask_img, interpolation="nearest", force_resample=True,
                          copy_header=True)
    data = np.rint(np.asarray(img.dataobj)).astype(np.int32) * np.asarray(mask_img.dataobj)
    present = np.unique(data[data > 0])
    regions = pd.DataFrame({"name": [f"region_{i}" for i in present]}, index=present)
    return nib.Nifti1Image(data, mask_img.affine), regions, {"name": "label image", "options": {}}


# --------------------------------------------------------------------------- signals


def _ar1(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Stationary AR(1) noise along axis 0 with lag-1 correlation ``_AR_PHI``."""
    from scipy.signal import lfilter

    innovations = rng.standard_normal(shape) * std * np.sqrt(1 - _AR_PHI**2)
    innovations[0] /= np.sqrt(1 - _AR_PHI**2)  # start in the stationary distribution
    return lfilter([1.0], [1.0, -_AR_PHI], innovations, axis=0)


def _drift(rng: np.random.Generator, n_frames: int, n_regions: int, std: float) -> np.ndarray:
    """Slow drift: random linear and quadratic trends, shape (n_frames, n_regions)."""
    t = np.linspace(-1, 1, n_frames)
    basis = np.stack([t, 1.5 * t**2 - 0.5], axis=1)  # Legendre P1, P2
    return basis @ rng.normal(0, std, size=(2, n_regions))


def _motion(rng: np.random.Generator, n_frames: int, scale: float) -> np.ndarray:
    """HCP Movement_Regressors: 3 translations (mm) and 3 rotations (degrees), then their
    backward differences; shape (n_frames, 12).

    Head position is mean-reverting (AR(1), phi = 0.7 per frame, lightly smoothed) rather than
    a random walk: a random walk's slow wander correlates with block designs by chance
    (|r| up to 0.6 over 100 frames), so regressing it out would remove the task signal too.
    """
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import lfilter

    steps = rng.normal(0, 0.05 * scale, size=(n_frames, 6))
    position = gaussian_filter1d(lfilter([1.0], [1.0, -0.7], steps, axis=0), sigma=1.0, axis=0)
    position -= position[0]  # HCP parameters are relative to the first (reference) volume
    derivative = np.diff(position, axis=0, prepend=position[:1])
    return np.concatenate([position, derivative], axis=1)


# --------------------------------------------------------------------------- main


@dataclass(frozen=True)
class SimulationResult:
    """What :func:`simulate_hcp` made.

    Attributes
    ----------
    path : Path
        The data set root (an HCP tree; ``fmri-ica`` reads it with ``layout="hcp"``).
    ground_truth : dict
        The content of ``<path>/ground_truth.json``.
    """

    path: Path
    ground_truth: dict


def simulate_hcp(
    out_dir: str | os.PathLike,
    *,
    n_subjects: int = 24,
    tasks: tuple[str, ...] | list[str] = HCP_TASKS,
    directions: tuple[str, ...] | list[str] = HCP_DIRECTIONS,
    frames: str | int = "short",
    voxel_size: float = 6.0,
    t_r: float = HCP_T_R,
    signal: float = 3.0,
    noise: float = 1.0,
    motion: float = 1.0,
    n_task_regions: int = 10,
    n_shared_regions: int = 5,
    region_keep: float = 1.0,
    atlas=_DEFAULT_ATLAS,
    atlas_options: dict | None = None,
    activation: str = "regions",
    blob_fwhm: float = 12.0,
    jitter_mm: float = 4.0,
    amplitude_sd: float = 0.2,
    hrf_peak_sd: float = 0.5,
    seed: int = 0,
    overwrite: bool = False,
    n_jobs: int = 2,
    progress: bool = True,
) -> SimulationResult:
    """Write a simulated HCP task-fMRI data set with known ground truth.

    Each task drives its own ``n_task_regions`` atlas regions (disjoint between tasks)
    and ``n_shared_regions`` regions shared by all tasks, through the run's block design
    (:func:`simulate_events`) convolved with a subject-specific SPM HRF. Noise is
    AR(1) per region, slow drift, a global signal, white voxel noise and the intensity
    change caused by rigid head motion (see the module docstring).

    With ``activation="blobs"`` the signal and the noise follow no atlas, so that no
    analysis atlas matches the truth (the harder, honest setting): each task drives
    ``n_task_regions`` Gaussian blobs (FWHM ``blob_fwhm``) around MNI centres drawn once
    from grey-matter voxels of the grid (seeded, disjoint between tasks, at least
    2 x ``blob_fwhm`` apart; plus ``n_shared_regions`` centres shared by all tasks).
    Per subject each centre moves by ``jitter_mm`` (normal, per axis), its amplitude is
    scaled by a lognormal factor (log-std ``amplitude_sd``, mean 1) and its HRF is
    stretched in time (peak ~5 s, std ``hrf_peak_sd`` s; a later peak is also wider),
    on top of the subject's HRF delay. The region noise becomes spatially smooth: per
    run 32 random Gaussian-smoothed fields (FWHM 12 mm), each with its own AR(1) course
    and drift, scaled to a voxel std of ``noise``; white voxel noise, the global signal
    and motion are as in regions mode. A 4 mm run of 405 frames takes ~0.45 s of
    compute before compression (regions mode: ~0.3 s).

    Parameters
    ----------
    out_dir : path
        Data set root; created if needed.
    n_subjects : int, default=24
        Subjects ``100001``, ``100002``, ...; adding subjects leaves earlier ones
        byte-identical (each subject, task and run has its own random stream).
    tasks : sequence of str, default=HCP_TASKS
        Any of the 7 HCP tasks.
    directions : sequence of str, default=("LR", "RL")
        Phase-encoding directions: one run each.
    frames : "short", "hcp" or int, default="short"
        Frames per run: ``"short"`` gives every task :data:`SHORT_FRAMES` frames (so
        run length does not reveal the task), ``"hcp"`` HCP's own lengths
        (:data:`HCP_FRAMES`), an int that many.
    voxel_size : float, default=6.0
        Isotropic voxel size (mm) of the MNI grid (:func:`hcp_grid`); 2.0 is HCP's grid.
        The default keeps the demo set fast (writing compressed NIfTI dominates the
        time, which grows with the number of voxels); 4.0 gives finer maps.
    t_r : float, default=0.72
        Repetition time (s).
    signal : float, default=3.0
        Mean plateau of the task response in planted regions (blobs mode: at the blob
        centres), in units of ``noise``; 0 gives a noise-only control with the same
        designs and noise. With the defaults (24 subjects, 100 frames, subject splits
        60/20/20), 3.0 is where both an LSTM and input-cell attention learn the 7 tasks
        (test accuracy ~0.75 and ~0.95, a linear model on the flattened windows 1.0);
        at 2.0 they reach ~0.55 and ~0.75. The calibration study (EVALUATION.md) needed
        ~120 subjects at 1.0-1.5. Blobs mode is much harder at the same ``signal``
        (jitter, HRF variability, regions that miss the blobs). Measured per run on a
        4 mm grid with HCP run lengths and the other defaults (2-3 subjects x 7 tasks x
        2 runs, detrended), the correlation with the canonical task regressor of the
        ``seitzman300`` regions whose centre lies within 10 mm of a planted centre is
        0.08, 0.15, 0.22, 0.27, 0.32, 0.36 (+/- ~0.1 between runs) at ``signal`` 1, 2,
        3, 4, 5, 6; that of 5 mm spheres at the population centres 0.14, 0.28, 0.39,
        0.48, 0.55, 0.60; regions > 30 mm from any centre 0.00. So the default 3.0 is
        the "realistic hard" level (~0.2 per run), and ~6 the easier one (~0.35).
    noise : float, default=1.0
        Standard deviation of a region's AR(1) noise, in percent of the baseline.
    motion : float, default=1.0
        Scale of head motion: at 1.0 the head moves by about 0.1 mm / degree around its
        mean position (mean-reverting, as for a still HCP subject); 0 gives no motion.
    n_task_regions, n_shared_regions : int, default=10, 5
        Planted regions per task, and regions responding to every task's blocks.
    region_keep : float, default=1.0
        Probability that a planted region responds in a given subject.
    atlas : str, path or Niimg-like, default="gm_kmeans"
        Label atlas whose regions are planted: a name or file for
        :func:`fmri_ica.data.atlases.load_atlas`, or a 3D label image. Its labels on
        the grid are saved as ``ground_truth_atlas.nii.gz``. The default full-coverage
        grey-matter parcellation gives every region many voxels, so the signal also
        shows through other atlases (e.g. ``seitzman300`` spheres inside planted parcels).
    atlas_options : dict, optional
        Options for :func:`~fmri_ica.data.atlases.load_atlas` (e.g. ``n_regions``).
        ``atlas`` and ``atlas_options`` are ignored in blobs mode.
    activation : {"regions", "blobs"}, default="regions"
        Where the task signal and the structured noise live: in the parcels of ``atlas``
        (the demo's setting), or in atlas-free blobs and smooth noise fields (above).
    blob_fwhm : float, default=12.0
        Blobs mode: FWHM (mm) of each activation blob; at least ``voxel_size``.
    jitter_mm : float, default=4.0
        Blobs mode: std (mm, per axis) of a centre's per-subject displacement.
    amplitude_sd : float, default=0.2
        Blobs mode: log-std of a centre's per-subject (and per-task) amplitude factor.
    hrf_peak_sd : float, default=0.5
        Blobs mode: std (s) of the HRF's time to peak, per subject and centre.
    seed : int, default=0
    overwrite : bool, default=False
        Rewrite finished runs. Without it, finished runs are skipped, and a different
        set of parameters for an existing data set is an error.
    n_jobs : int, default=2
        Runs simulated at once (threads). Results do not depend on it.
    progress : bool, default=True
        Show a progress bar.

    Returns
    -------
    SimulationResult

    Raises
    ------
    InvalidParameterError
        For a bad parameter, or parameters that differ from those of the data set
        already in ``out_dir`` (without ``overwrite``).

    Notes
    -----
    Next to the subject folders: ``ground_truth_atlas.nii.gz`` (the planted atlas on
    the data grid), ``ground_truth_regions.tsv`` (its regions),
    ``ground_truth_amplitude.nii.gz`` (one volume per task: the population amplitude
    of each voxel's region, 0 where nothing responds) and ``ground_truth.json``:
    ``parameters``, ``seed``, ``versions``, ``grid``, ``atlas`` (name, options,
    checksum), ``shared_regions``; per task ``evs``, ``block_evs``, ``n_frames``,
    ``planted_regions`` / ``planted_names`` (atlas label values / names),
    ``region_amplitudes`` (label -> % signal change); per subject its HRF delay,
    intensity and ``region_amplitudes`` per task; per run (``runs``) the BOLD path,
    ``on_frames`` (frames whose mid-TR time falls in a block EV), ``on_frames_hrf``
    (frames where the subject's HRF-convolved design is above half its peak),
    ``amplitude`` (the run's mean planted amplitude), ``planted_amplitudes`` and
    ``empty_evs``; ``complete`` is false until every run is written. It describes the
    subjects and tasks of the latest call.

    Blobs mode writes no atlas files; instead ``ground_truth_activation.nii.gz`` (one
    volume per task: the population amplitude map, sum of its own and the shared
    blobs at their population centres, no jitter) and in ``ground_truth.json``:
    ``activation`` ("blobs"), ``blob_fwhm_mm``, ``activation_image``,
    ``shared_centres_mm`` / ``shared_amplitudes``; per task ``centres_mm`` (population
    MNI centres, (n_task_regions, 3)) and ``amplitudes`` (% signal change), with
    ``planted_regions`` / ``planted_names`` empty (use
    :func:`planted_regions_for_atlas` for an analysis atlas); per subject
    ``shared_centres_mm`` and ``shared_hrf_peak_s`` and per task its jittered
    ``centres_mm``, ``amplitudes``, ``hrf_peak_s`` and ``shared_amplitudes``; per run
    ``amplitude`` is the mean of the subject's task amplitudes.

    Examples
    --------
    >>> from fmri_ica.data.simulate import planted_regions_for_atlas, simulate_hcp
    >>> sim = simulate_hcp("sim", activation="blobs", frames="hcp", voxel_size=4.0,
    ...                    signal=1.0)  # doctest: +SKIP
    >>> planted = planted_regions_for_atlas(sim.path, "seitzman300")  # doctest: +SKIP
    """
    params = _check_params(
        n_subjects=n_subjects, tasks=tasks, directions=directions, frames=frames,
        voxel_size=voxel_size, t_r=t_r, signal=signal, noise=noise, motion=motion,
        n_task_regions=n_task_regions, n_shared_regions=n_shared_regions,
        region_keep=region_keep, atlas=atlas, atlas_options=atlas_options, seed=seed,
        activation=activation, blob_fwhm=blob_fwhm, jitter_mm=jitter_mm,
        amplitude_sd=amplitude_sd, hrf_peak_sd=hrf_peak_sd,
    )
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs < 1:
        raise InvalidParameterError(
            f"Invalid value for 'n_jobs': {n_jobs!r}. Expected an integer >= 1."
        )
    out = Path(out_dir)
    _check_existing(out, params, overwrite)
    blobs = params.get("activation") == "blobs"
    brain = _brain(float(voxel_size), None if blobs else atlas, params["atlas_options"])
    plan = _plan_blobs(brain, params) if blobs else _plan_regions(brain, params)
    subjects = [str(100001 + i) for i in range(params["n_subjects"])]
    runs = [
        (s, task, d) for s in range(len(subjects)) for task in params["tasks"]
        for d in params["directions"]
    ]
    truth = (_blob_truth_header if blobs else _truth_header)(params, brain, plan)
    # written first, so that a re-run after an interruption checks its parameters
    write_json(out / "ground_truth.json", {**truth, "complete": False})
    make_subject = _blob_subject if blobs else _subject
    subject_info = {subjects[s]: make_subject(params, plan, brain, s)
                    for s in range(len(subjects))}
    written = 0
    # numpy and zlib release the GIL: threads overlap one run's compression with the next
    pool = ThreadPoolExecutor(max_workers=n_jobs)
    try:
        jobs = [
            pool.submit(_run, out, brain, params, plan, subject_info[subjects[s]], subjects[s],
                        s, task, direction, overwrite)
            for s, task, direction in runs
        ]
        for job in _progress(jobs, desc="simulate", enabled=progress, unit="run"):
            record, done = job.result()
            truth["runs"].append(record)
            written += not done
    finally:  # on an error or Ctrl-C, finish the runs in progress and drop the others
        pool.shutdown(wait=True, cancel_futures=True)
    truth["subjects"] = {
        sid: _json_blob_subject(info, plan) if blobs else _json_subject(info)
        for sid, info in subject_info.items()
    }
    (_write_blob_truth_images if blobs else _write_truth_images)(out, brain, plan, params)
    truth["complete"] = True
    write_json(out / "ground_truth.json", truth)
    logger.info("Simulated %d runs (%d written, %d already done) in %s", len(runs), written,
                len(runs) - written, out)
    return SimulationResult(out, truth)


def _check_params(**p) -> dict:
    """Validate and normalise the parameters; return the ones that define the data."""

    def integer(name, low):
        value = p[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InvalidParameterError(
                f"Invalid value for {name!r}: {value!r}. Expected an integer >= {low}."
            )
        return int(value)

    def number(name, low, high=np.inf, low_open=False):
        value = p[name]
        ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
        if not ok or not (low < value <= high if low_open else low <= value <= high):
            bound = f"> {low}" if low_open else f">= {low}"
            raise InvalidParameterError(
                f"Invalid value for {name!r}: {value!r}. Expected a number {bound}"
                + (f" and <= {high}." if np.isfinite(high) else ".")
            )
        return float(value)

    tasks = [str(t).upper() for t in ([p["tasks"]] if isinstance(p["tasks"], str) else p["tasks"])]
    directions = [str(d).upper() for d in
                  ([p["directions"]] if isinstance(p["directions"], str) else p["directions"])]
    if not tasks or not directions:
        raise InvalidParameterError("'tasks' and 'directions' must each name at least one.")
    for task in tasks:
        check_option("tasks", task, HCP_TASKS)
    for direction in directions:
        check_option("directions", direction, HCP_DIRECTIONS)
    frames = p["frames"]
    if isinstance(frames, str) and frames.isdigit():
        frames = int(frames)
    if isinstance(frames, str):
        check_option("frames", frames, ("short", "hcp"))
    else:
        p["frames"] = frames
        frames = integer("frames", 10)
    atlas = p["atlas"]
    atlas = str(atlas) if isinstance(atlas, (str, os.PathLike)) else "label image"
    options = dict(p["atlas_options"] or {})
    activation = check_option("activation", p["activation"], _ACTIVATIONS)
    blob = {
        "activation": activation,
        "blob_fwhm": number("blob_fwhm", 0.0, 60.0, low_open=True),
        "jitter_mm": number("jitter_mm", 0.0, 30.0),
        "amplitude_sd": number("amplitude_sd", 0.0, 2.0),
        "hrf_peak_sd": number("hrf_peak_sd", 0.0, 2.0),
    }
    voxel_size = number("voxel_size", 1.0, 16.0)
    if activation == "blobs" and blob["blob_fwhm"] < voxel_size:
        raise InvalidParameterError(
            f"Invalid value for 'blob_fwhm': {p['blob_fwhm']} mm is smaller than the "
            f"voxel size ({voxel_size} mm), so blobs would fall between voxels. Use "
            "blob_fwhm >= voxel_size."
        )
    params = {
        "n_subjects": integer("n_subjects", 1),
        "tasks": sorted(set(tasks), key=HCP_TASKS.index),
        "directions": sorted(set(directions), key=HCP_DIRECTIONS.index),
        "frames": frames,
        "voxel_size": voxel_size,
        "t_r": number("t_r", 0.0, 10.0, low_open=True),
        "signal": number("signal", 0.0),
        "noise": number("noise", 0.0, low_open=True),
        "motion": number("motion", 0.0),
        "n_task_regions": integer("n_task_regions", 1),
        "n_shared_regions": integer("n_shared_regions", 0),
        "region_keep": number("region_keep", 0.0, 1.0, low_open=True),
        "atlas": atlas,
        "atlas_options": options,
        "seed": integer("seed", 0),
    }
    if activation == "regions":  # the keys of data sets made before blobs mode existed
        return params
    return {**params, "atlas": None, "atlas_options": {}, **blob}


# Parameters that may change between calls on the same data set.
_EXTENSIBLE = ("n_subjects", "tasks", "directions")


def _check_existing(out: Path, params: dict, overwrite: bool) -> None:
    path = out / "ground_truth.json"
    if overwrite or not path.exists():
        return
    try:
        old = json.loads(path.read_text())["parameters"]
    except (ValueError, KeyError) as error:
        raise InputDataError(
            f"{path} is not a simulator ground truth ({error}). Choose another output "
            "folder, or pass overwrite=True (--overwrite)."
        ) from error
    keys = list(params) + [k for k in old if k not in params]
    changed = [k for k in keys if k not in _EXTENSIBLE and old.get(k) != params.get(k)]
    if changed:
        details = ", ".join(f"{k}: {old.get(k)!r} -> {params.get(k)!r}" for k in changed)
        raise InvalidParameterError(
            f"{out} already holds a simulation with other parameters ({details}). Use "
            "another output folder, the same parameters, or overwrite=True (--overwrite)."
        )


def _rng(params: dict, *key: int) -> np.random.Generator:
    """An independent stream per purpose/subject/task/run (SeedSequence spawn keys)."""
    return np.random.default_rng(np.random.SeedSequence(params["seed"], spawn_key=key))


def _plan_regions(brain: _Brain, params: dict) -> dict:
    """Choose the planted regions of every HCP task (disjoint) and the shared ones.

    The choice covers all 7 tasks whatever ``tasks`` is, so that simulating a subset
    of tasks plants the same regions.
    """
    counts = np.bincount(brain.labels, minlength=int(brain.labels.max()) + 1)
    present = np.array([lab for lab in brain.regions.index if lab < counts.size and counts[lab]])
    # prefer regions big enough to survive resampling to another atlas
    big = present[counts[present] >= max(2, np.median(counts[present]) / 2)]
    needed = len(HCP_TASKS) * params["n_task_regions"] + params["n_shared_regions"]
    if big.size < needed:
        raise InvalidParameterError(
            f"The atlas has {big.size} usable regions on the {params['voxel_size']} mm grid; "
            f"planting {params['n_task_regions']} per task for 7 tasks plus "
            f"{params['n_shared_regions']} shared needs {needed}. Lower 'n_task_regions' or "
            "use a finer grid / an atlas with more regions."
        )
    rng = _rng(params, 0)
    chosen = rng.permutation(big)[:needed]
    n = params["n_task_regions"]
    amplitude = rng.uniform(0.75, 1.25, size=needed) * params["signal"] * params["noise"]
    plan = {"shared": chosen[len(HCP_TASKS) * n:], "task": {}, "amplitude": {}}
    for k, task in enumerate(HCP_TASKS):
        plan["task"][task] = chosen[k * n:(k + 1) * n]
    plan["amplitude"] = dict(zip(chosen.tolist(), amplitude.tolist(), strict=True))
    return plan


def _subject(params: dict, plan: dict, brain: _Brain, s: int) -> dict:
    """Per-subject variability: HRF delay, intensity, amplitudes, spatial weights."""
    rng = _rng(params, 1, s)
    info = {
        "hrf_onset_s": float(rng.uniform(0.0, 1.5)),
        "intensity": float(rng.uniform(0.9, 1.1)),
        "tasks": {},
    }
    for task in HCP_TASKS:
        regions = np.concatenate([plan["task"][task], plan["shared"]])
        scale = float(rng.uniform(0.8, 1.2))
        jitter = rng.uniform(0.85, 1.15, size=regions.size)
        keep = rng.random(regions.size) < params["region_keep"]
        amps = [plan["amplitude"][r] * scale * j * k for r, j, k in
                zip(regions.tolist(), jitter, keep, strict=True)]
        info["tasks"][task] = {"scale": scale, "amplitudes": dict(zip(regions.tolist(), amps,
                                                                      strict=True))}
    info["weights"] = _spatial_weights(brain, rng)  # last: the draws above need no grid
    return info


def _json_subject(info: dict) -> dict:
    return {
        "hrf_onset_s": info["hrf_onset_s"],
        "intensity": info["intensity"],
        "tasks": {
            task: {"scale": t["scale"],
                   "region_amplitudes": {str(r): a for r, a in t["amplitudes"].items()}}
            for task, t in info["tasks"].items()
        },
    }


def _spatial_weights(brain: _Brain, rng: np.random.Generator) -> np.ndarray:
    """Smooth per-subject weights (mean 1, ~0.5-1.5) of the task signal over voxels."""
    from scipy.ndimage import gaussian_filter

    field_ = rng.standard_normal(brain.mask.shape)
    sigma = 6.0 / abs(brain.affine[0, 0])
    field_ = gaussian_filter(field_, sigma=sigma)[brain.mask]
    return np.clip(1.0 + 0.25 * field_ / field_.std(), 0.3, 1.7)


# --------------------------------------------------------------------------- blobs mode


def _plan_blobs(brain: _Brain, params: dict) -> dict:
    """Choose the blob centres of every HCP task and the shared ones, and their amplitudes.

    Centres are grey-matter voxel centres of the grid, drawn in a seeded random order
    and kept when at least 2 x ``blob_fwhm`` from those kept before. As in regions mode
    the choice covers all 7 tasks whatever ``tasks`` is.
    """
    n = params["n_task_regions"]
    needed = len(HCP_TASKS) * n + params["n_shared_regions"]
    rng = _rng(params, 4)
    candidates = brain.coords[brain.grey >= _GREY]
    min_sq = (2.0 * params["blob_fwhm"]) ** 2
    centres = np.empty((needed, 3))
    found = 0
    for point in candidates[rng.permutation(len(candidates))]:
        if found and np.min(np.sum((centres[:found] - point) ** 2, axis=1)) < min_sq:
            continue
        centres[found] = point
        found += 1
        if found == needed:
            break
    if found < needed:
        raise InvalidParameterError(
            f"Only {found} blob centres fit in grey matter at least 2 x blob_fwhm = "
            f"{2 * params['blob_fwhm']} mm apart; planting {n} per task for 7 tasks plus "
            f"{params['n_shared_regions']} shared needs {needed}. Lower 'n_task_regions' / "
            "'n_shared_regions' or 'blob_fwhm'."
        )
    amplitude = rng.uniform(0.75, 1.25, size=needed) * params["signal"] * params["noise"]
    return {
        "centres": centres,
        "amplitude": amplitude,
        "task": {task: np.arange(k * n, (k + 1) * n) for k, task in enumerate(HCP_TASKS)},
        "shared": np.arange(len(HCP_TASKS) * n, needed),
    }


def _blob_subject(params: dict, plan: dict, brain: _Brain, s: int) -> dict:
    """Per-subject variability in blobs mode: HRF delay and time scale, intensity, jittered
    centres, amplitudes (lognormal, mean 1, per task and centre; ``region_keep``)."""
    rng = _rng(params, 1, s)
    n_centres = len(plan["centres"])
    info = {
        "hrf_onset_s": float(rng.uniform(0.0, 1.5)),
        "intensity": float(rng.uniform(0.9, 1.1)),
        "centres": plan["centres"] + rng.normal(0.0, params["jitter_mm"], (n_centres, 3)),
        "stretch": np.clip(
            1.0 + rng.normal(0.0, params["hrf_peak_sd"], n_centres) / _SPM_PEAK_S, 0.5, 1.5
        ),
        "tasks": {},
    }
    sd = params["amplitude_sd"]
    for task in HCP_TASKS:
        ids = np.concatenate([plan["task"][task], plan["shared"]])
        gain = np.exp(rng.normal(-0.5 * sd**2, sd, ids.size))
        keep = rng.random(ids.size) < params["region_keep"]
        info["tasks"][task] = {"ids": ids, "amplitudes": plan["amplitude"][ids] * gain * keep}
    return info


def _json_blob_subject(info: dict, plan: dict) -> dict:
    shared = plan["shared"]
    peak = info["stretch"] * _SPM_PEAK_S
    tasks = {}
    for task, t in info["tasks"].items():
        n = plan["task"][task].size
        tasks[task] = {
            "centres_mm": info["centres"][plan["task"][task]].tolist(),
            "amplitudes": t["amplitudes"][:n].tolist(),
            "hrf_peak_s": peak[plan["task"][task]].tolist(),
            "shared_amplitudes": t["amplitudes"][n:].tolist(),
        }
    return {
        "hrf_onset_s": info["hrf_onset_s"],
        "intensity": info["intensity"],
        "shared_centres_mm": info["centres"][shared].tolist(),
        "shared_hrf_peak_s": peak[shared].tolist(),
        "tasks": tasks,
    }


def _blobs(coords: np.ndarray, centres: np.ndarray, fwhm: float) -> np.ndarray:
    """Unit-peak Gaussian blobs, shape (n_centres, n_points), at ``coords`` (n_points, 3)."""
    from scipy.spatial.distance import cdist

    sigma = fwhm / _FWHM_PER_SIGMA
    return np.exp(cdist(centres, coords, "sqeuclidean") / (-2.0 * sigma**2))


def _blob_data(brain, params, info, task, events, n_frames, rng):
    """Blobs mode: % signal change (n_frames, n_voxels) float32 and motion (n_frames, 12)."""
    f32 = np.float32
    noise = params["noise"]
    data = rng.standard_normal((n_frames, brain.coords.shape[0]), dtype=f32)
    data *= f32(_VOXEL_STD * noise)
    data += _smooth_noise(rng, brain, n_frames, noise)
    moves = _motion(rng, n_frames, params["motion"])
    ids, amplitudes = info["tasks"][task]["ids"], info["tasks"][task]["amplitudes"]
    live = amplitudes != 0  # signal 0 or region_keep: nothing to add
    if live.any():
        blocks = {name: events[name] for name in block_evs(task)}
        courses = np.stack([
            _regressor(blocks, n_frames, params["t_r"], info["hrf_onset_s"], info["stretch"][i])
            for i in ids[live]
        ], axis=1)
        maps = amplitudes[live, None] * _blobs(brain.coords, info["centres"][ids[live]],
                                               params["blob_fwhm"])
        data += courses.astype(f32) @ maps.astype(f32)
    return data, moves


def _smooth_noise(rng, brain: _Brain, n_frames: int, noise: float) -> np.ndarray:
    """Spatially smooth AR(1) noise with drift plus a global signal, (n_frames, n_voxels).

    ``_NOISE_FIELDS`` white fields smoothed to ``_NOISE_FWHM``, each scaled to unit std
    over the brain and weighted by its own AR(1) + drift course, so a voxel's std is
    about ``noise`` and nearby voxels share their noise, whatever the atlas.
    """
    from scipy.ndimage import gaussian_filter

    sigma = _NOISE_FWHM / _FWHM_PER_SIGMA / abs(brain.affine[0, 0])
    fields = rng.standard_normal((_NOISE_FIELDS, *brain.mask.shape), dtype=np.float32)
    fields = gaussian_filter(fields, sigma=(0, sigma, sigma, sigma), truncate=3.0)
    fields = fields[:, brain.mask]
    fields /= fields.std(axis=1, keepdims=True) * np.float32(np.sqrt(_NOISE_FIELDS))
    courses = _ar1(rng, (n_frames, _NOISE_FIELDS), noise)
    courses += _drift(rng, n_frames, _NOISE_FIELDS, _DRIFT_STD * noise)
    smooth = courses.astype(np.float32) @ fields
    smooth += _ar1(rng, (n_frames, 1), _GLOBAL_STD * noise).astype(np.float32)
    return smooth


def _n_frames(params: dict, task: str) -> int:
    frames = params["frames"]
    return {"short": SHORT_FRAMES, "hcp": HCP_FRAMES[task]}.get(frames, frames)


def _run_dir(out: Path, subject: str, task: str, direction: str) -> Path:
    name = f"tfMRI_{task}_{direction}"
    return out / subject / "MNINonLinear" / "Results" / name


def _run(out, brain, params, plan, info, subject, s, task, direction, overwrite):
    """Simulate and write one run (unless done); return its ground-truth record and
    whether it was already done."""
    k, d = HCP_TASKS.index(task), HCP_DIRECTIONS.index(direction)
    n_frames, t_r = _n_frames(params, task), params["t_r"]
    events = simulate_events(task, n_frames * t_r, _rng(params, 2, s, k, d))
    blocks = {name: events[name] for name in block_evs(task)}
    regressor = _regressor(blocks, n_frames, t_r, info["hrf_onset_s"])
    folder = _run_dir(out, subject, task, direction)
    bold = folder / f"{folder.name}.nii.gz"
    done = bold.exists() and not overwrite
    if not done:
        _write_run(folder, brain, params, info, task, events, regressor, _rng(params, 3, s, k, d))
    if params.get("activation") == "blobs":
        amplitude = float(np.mean(info["tasks"][task]["amplitudes"][:plan["task"][task].size]))
        planted = {}
    else:
        amplitudes = info["tasks"][task]["amplitudes"]
        amplitude = info["tasks"][task]["scale"] * params["signal"] * params["noise"]
        planted = {str(r): amplitudes[r] for r in plan["task"][task].tolist()}
    record = {
        "subject": subject,
        "task": task,
        "direction": direction,
        "bold": str(bold.relative_to(out)),
        "n_frames": n_frames,
        "on_frames": np.flatnonzero(on_frames(blocks, n_frames, t_r)).tolist(),
        "on_frames_hrf": np.flatnonzero(regressor >= 0.5 * max(regressor.max(), 1e-12)).tolist(),
        "amplitude": amplitude,
        "planted_amplitudes": planted,
        "empty_evs": [name for name, rows in events.items() if rows.size == 0],
    }
    return record, done


def _write_run(folder, brain, params, info, task, events, regressor, rng) -> None:
    import nibabel as nib

    if params.get("activation") == "blobs":
        data, moves = _blob_data(brain, params, info, task, events, regressor.size, rng)
    else:
        data, moves = _region_data(brain, params, info, task, regressor, rng)
    f32 = np.float32
    baseline = (brain.baseline * info["intensity"]).astype(f32)
    data *= baseline / f32(100)
    data += baseline
    data += moves[:, :6].astype(f32) @ (brain.motion_coef * info["intensity"]).astype(f32).T
    data /= f32(_QUANTUM)
    np.round(data, out=data)
    data *= f32(_QUANTUM)

    for name, rows in events.items():
        text = "".join(f"{o:.3f}\t{du:.3f}\t{a:.1f}\n" for o, du, a in rows)
        write_text(folder / "EVs" / f"{name}.txt", text)
    write_text(folder / "EVs" / "Sync.txt", "0.0\n")  # HCP's scanner sync time, not an EV
    write_text(folder / "Movement_Regressors.txt",
               "".join("  ".join(f"{v: .6f}" for v in row) + "\n" for row in moves))
    mask_img = nib.Nifti1Image(brain.mask.astype(np.uint8), brain.affine)
    _save(mask_img, folder / "brainmask_fs.2.nii.gz")
    _save_masked(brain, baseline, folder / f"{folder.name}_SBRef.nii.gz")
    # last: its presence marks the run done
    _save_masked(brain, data, folder / f"{folder.name}.nii.gz", t_r=params["t_r"])


def _region_data(brain, params, info, task, regressor, rng):
    """Regions mode: % signal change (n_frames, n_voxels) float32 and motion (n_frames, 12)."""
    n_frames = regressor.size
    n_regions = int(brain.labels.max()) + 1
    amplitude = np.zeros(n_regions)
    for region, value in info["tasks"][task]["amplitudes"].items():
        amplitude[region] = value
    voxel_amp = amplitude[brain.labels] * info["weights"]
    # region-level noise (column 0: voxels outside the atlas get none)
    regional = _ar1(rng, (n_frames, n_regions), params["noise"])
    regional += _drift(rng, n_frames, n_regions, _DRIFT_STD * params["noise"])
    regional[:, 0] = 0.0
    regional += _ar1(rng, (n_frames, 1), _GLOBAL_STD * params["noise"])  # global signal
    moves = _motion(rng, n_frames, params["motion"])
    # float32 and in place: a 2 mm HCP-length run is 405 x 230k voxels
    f32 = np.float32
    data = rng.standard_normal((n_frames, brain.labels.size), dtype=f32)  # % signal change
    data *= f32(_VOXEL_STD * params["noise"])
    data += regional.astype(f32)[:, brain.labels]
    data += np.outer(regressor.astype(f32), voxel_amp.astype(f32))
    return data, moves


def _save_masked(brain: _Brain, values: np.ndarray, path: Path, t_r: float | None = None):
    """Write float32 ``values`` inside the brain mask as a .nii.gz, one frame at a time.

    Parameters
    ----------
    values : ndarray, shape (n_frames, n_voxels) or (n_voxels,)
        Mask voxels in ``np.nonzero(brain.mask)`` order; 1D gives a 3D image.
    t_r : float, optional
        Written to ``pixdim[4]`` (4D images).

    The file equals ``nib.save`` of the full volume (a test checks the bytes) but never
    holds the 4D array: a 2 mm HCP-length run would need 1.5 GB for it, twice.
    """
    import nibabel as nib

    frames = values[None] if values.ndim == 1 else values
    shape = brain.mask.shape + (() if values.ndim == 1 else (len(values),))
    # a zero-stride stand-in gives nibabel the shape and dtype without allocating the data
    img = nib.Nifti1Image(np.broadcast_to(np.float32(0), shape), brain.affine)
    img.header.set_xyzt_units("mm", "sec")
    if t_r is not None:
        img.header["pixdim"][4] = t_r
    img.update_header()
    header = img.header.copy()
    header.set_data_offset(352)  # 348-byte header + 4-byte empty extension flag
    header["scl_slope"], header["scl_inter"] = 1.0, 0.0  # what nibabel writes for float32
    volume = np.zeros(brain.mask.shape, dtype=np.float32, order="F")
    compressor = _compressor()
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(compressor.compress(header.binaryblock + b"\0" * 4))
        for frame in frames:
            volume[brain.mask] = frame
            handle.write(compressor.compress(volume.tobytes("F")))
        handle.write(compressor.flush())


def _save(img, path: Path) -> None:
    """Write a small image as .nii.gz atomically (same compression as the runs)."""
    compressor = _compressor()
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(compressor.compress(img.to_bytes()))
        handle.write(compressor.flush())


def _compressor():
    """gzip with zlib's run-length strategy: the format ``nib.save`` writes, about twice
    as fast on noisy float data at the same size; mtime 0, so the same image always
    gives the same bytes."""
    return zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS, 9, zlib.Z_RLE)


def _truth_header(params: dict, brain: _Brain, plan: dict) -> dict:
    regions = brain.regions

    def names(labels):
        return [str(regions.loc[r, "name"]) if "name" in regions else str(r) for r in labels]

    shared = plan["shared"].tolist()
    return {
        **_truth_common(params, brain),
        "atlas": {
            **brain.atlas_info,
            "image": "ground_truth_atlas.nii.gz",
            "regions": "ground_truth_regions.tsv",
            "n_regions": int(len(regions)),
        },
        "amplitude_image": "ground_truth_amplitude.nii.gz",
        "shared_regions": shared,
        "shared_names": names(shared),
        "tasks": {
            task: {
                "evs": list(HCP_EVS[task]),
                "block_evs": list(block_evs(task)),
                "n_frames": _n_frames(params, task),
                "planted_regions": plan["task"][task].tolist(),
                "planted_names": names(plan["task"][task].tolist()),
                "shared_regions": shared,
                "region_amplitudes": {
                    str(r): plan["amplitude"][r] for r in plan["task"][task].tolist() + shared
                },
            }
            for task in params["tasks"]
        },
        "runs": [],
    }


def _write_truth_images(out: Path, brain: _Brain, plan: dict, params: dict) -> None:
    """The atlas on the grid, its region table, and a volume of planted amplitudes per task."""
    import nibabel as nib

    _save(nib.Nifti1Image(np.asarray(brain.label_img.dataobj).astype(np.int32), brain.affine),
          out / "ground_truth_atlas.nii.gz")
    table = brain.regions.copy()
    table.index.name = "index"
    with atomic_path(out / "ground_truth_regions.tsv") as tmp:
        table.to_csv(tmp, sep="\t")
    n_regions = int(brain.labels.max()) + 1
    maps = np.zeros((len(params["tasks"]), brain.labels.size), dtype=np.float32)
    for j, task in enumerate(params["tasks"]):
        amplitude = np.zeros(n_regions)
        for r in plan["task"][task].tolist() + plan["shared"].tolist():
            amplitude[r] = plan["amplitude"][r]
        maps[j] = amplitude[brain.labels]
    _save_masked(brain, maps, out / "ground_truth_amplitude.nii.gz")


def _truth_common(params: dict, brain: _Brain) -> dict:
    """The ground truth's header fields of both activation modes, in their order."""
    return {
        "simulator": "fmri_ica.data.simulate.simulate_hcp",
        "parameters": params,
        "seed": params["seed"],
        "versions": package_versions(),
        "t_r": params["t_r"],
        "grid": {"shape": list(brain.mask.shape), "affine": brain.affine.tolist()},
    }


def _blob_truth_header(params: dict, brain: _Brain, plan: dict) -> dict:
    shared = plan["shared"]
    return {
        **_truth_common(params, brain),
        "activation": "blobs",
        "blob_fwhm_mm": params["blob_fwhm"],
        "activation_image": "ground_truth_activation.nii.gz",
        "shared_regions": [],
        "shared_names": [],
        "shared_centres_mm": plan["centres"][shared].tolist(),
        "shared_amplitudes": plan["amplitude"][shared].tolist(),
        "tasks": {
            task: {
                "evs": list(HCP_EVS[task]),
                "block_evs": list(block_evs(task)),
                "n_frames": _n_frames(params, task),
                "planted_regions": [],  # atlas-specific: see planted_regions_for_atlas
                "planted_names": [],
                "shared_regions": [],
                "region_amplitudes": {},
                "centres_mm": plan["centres"][plan["task"][task]].tolist(),
                "amplitudes": plan["amplitude"][plan["task"][task]].tolist(),
            }
            for task in params["tasks"]
        },
        "runs": [],
    }


def _write_blob_truth_images(out: Path, brain: _Brain, plan: dict, params: dict) -> None:
    """One volume per task: its and the shared blobs at the population centres."""
    blobs = _blobs(brain.coords, plan["centres"], params["blob_fwhm"]) * plan["amplitude"][:, None]
    maps = np.stack([
        blobs[np.concatenate([plan["task"][task], plan["shared"]])].sum(axis=0)
        for task in params["tasks"]
    ]).astype(np.float32)
    _save_masked(brain, maps, out / "ground_truth_activation.nii.gz")


def planted_regions_for_atlas(
    ground_truth_dir: str | os.PathLike,
    atlas,
    *,
    fraction: float = 0.2,
    include_shared: bool = False,
) -> dict[str, dict[str, list]]:
    """The regions of an analysis label atlas that a simulated task activates.

    A region counts as planted for a task when the mean population activation over its
    voxels is at least ``fraction`` of that task's peak activation. The population
    activation is rebuilt on the ground-truth grid: in blobs mode the task's blobs at
    their population centres (no jitter) with their population amplitudes; in regions
    mode the planted regions of the simulator's own atlas with their amplitudes. The
    atlas is resampled to that grid (nearest neighbour), so any label atlas in MNI space
    works; a region with no voxel on the grid is never planted.

    Parameters
    ----------
    ground_truth_dir : path
        A data set written by :func:`simulate_hcp` (holds ``ground_truth.json``).
    atlas : Atlas, Niimg-like, str or path
        A label atlas: an :class:`~fmri_ica.data.atlases.Atlas` (e.g. from
        :func:`~fmri_ica.data.atlases.load_atlas`), a 3D label image (0 = background),
        or a name / file for :func:`~fmri_ica.data.atlases.load_atlas`.
    fraction : float, default=0.2
        Threshold in (0, 1], relative to the task's peak (the maximum of its map). A
        region's mean is what its time series carries, and small blobs between sparse
        regions leave little of it: with the blobs defaults (FWHM 12 mm, 10 centres per
        task, 4 mm grid; the nearest ``seitzman300`` region centre lies a median 10 mm
        from a blob centre) ``seitzman300`` gets 0-1 regions per task at 0.5, 2-7 at
        0.2 and 5-15 at 0.1; the 200 larger ``gm_kmeans`` parcels 0-1 at 0.2 and 4-8 at
        0.1. Lower it for coarse atlases; 0.5 suits regions-mode truth and big blobs.
    include_shared : bool, default=False
        Also count the blobs / regions that respond to every task. The default keeps
        what tells the tasks apart, as ``planted_names`` does in regions mode.

    Returns
    -------
    dict of str to dict
        Per simulated task: ``"labels"``, the planted label values (ascending ints), and
        ``"names"``, their names in the atlas's labels table (None for a bare image).
        Both lists are empty when the task has no activation (``signal=0``).

    Raises
    ------
    InputDataError
        If ``ground_truth.json`` is missing or not a simulator's, or ``atlas`` is not a
        3D label atlas.
    InvalidParameterError
        If ``fraction`` is not in (0, 1].

    Examples
    --------
    >>> planted = planted_regions_for_atlas("sim", "seitzman300")  # doctest: +SKIP
    >>> planted["MOTOR"]["names"][:3]  # doctest: +SKIP
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
        0 < fraction <= 1
    ):
        raise InvalidParameterError(
            f"Invalid value for 'fraction': {fraction!r}. Expected a number in (0, 1]."
        )
    root = Path(ground_truth_dir)
    truth = _read_truth(root)
    shape = tuple(truth["grid"]["shape"])
    affine = np.asarray(truth["grid"]["affine"], dtype=float)
    labels, names = _labels_on_grid(atlas, shape, affine)
    values, inverse = np.unique(labels.ravel(), return_inverse=True)
    counts = np.bincount(inverse)
    result = {}
    for task, activation in _population_maps(root, truth, shape, affine, include_shared):
        peak = activation.max()
        if peak <= 0:
            result[task] = {"labels": [], "names": [] if names is not None else None}
            continue
        means = np.bincount(inverse, weights=activation.ravel()) / counts
        chosen = [int(v) for v, m in zip(values, means, strict=True)
                  if v != 0 and m >= fraction * peak]
        result[task] = {
            "labels": chosen,
            "names": None if names is None else [names.get(v, str(v)) for v in chosen],
        }
    return result


def _read_truth(root: Path) -> dict:
    path = root / "ground_truth.json"
    try:
        truth = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        truth = {"error": repr(error)}
    if not isinstance(truth, dict) or not {"grid", "tasks"} <= set(truth):
        raise InputDataError(
            f"Cannot read a simulator ground truth from {path} "
            f"({truth.get('error', 'no grid / tasks')}). Pass the folder that simulate_hcp "
            "(`fmri-ica simulate`) wrote."
        )
    return truth


def _labels_on_grid(atlas, shape, affine) -> tuple[np.ndarray, dict | None]:
    """Integer labels (shape ``shape``) of ``atlas`` on the grid, and label -> name."""
    import nibabel as nib
    from nilearn.image import load_img, resample_img

    from .atlases import Atlas, load_atlas

    if isinstance(atlas, (str, os.PathLike)):  # a catalogue name, or a file (+ names TSV)
        grid = nib.Nifti1Image(np.zeros(shape, dtype=np.uint8), affine)
        atlas = load_atlas(str(atlas), target_img=grid)
    names = None
    if isinstance(atlas, Atlas):
        if atlas.kind != "labels":
            raise InputDataError(
                f"Atlas {atlas.name!r} is a {atlas.kind!r} atlas; planted regions need a "
                "label atlas (3D, one integer per region)."
            )
        names = dict(zip(atlas.labels["index"].astype(int), atlas.labels["name"].astype(str),
                         strict=True))
        atlas = atlas.img
    img = load_img(atlas)
    if len(img.shape) != 3:
        raise InputDataError(
            f"'atlas' must be a 3D label image; got shape {img.shape}. A probabilistic "
            "(4D) atlas has no regions to count as planted."
        )
    on_grid = resample_img(img, target_affine=affine, target_shape=shape,
                           interpolation="nearest", force_resample=True, copy_header=True)
    return np.rint(np.asarray(on_grid.dataobj)).astype(np.int64), names


def _population_maps(root: Path, truth: dict, shape, affine, include_shared: bool):
    """Yield (task, population activation of shape ``shape``) for each simulated task."""
    import nibabel as nib

    if truth.get("activation") == "blobs":
        coords = nib.affines.apply_affine(affine, np.indices(shape).reshape(3, -1).T)
        for task, info in truth["tasks"].items():
            centres, amplitudes = list(info["centres_mm"]), list(info["amplitudes"])
            if include_shared:
                centres += truth["shared_centres_mm"]
                amplitudes += truth["shared_amplitudes"]
            blobs = _blobs(coords, np.asarray(centres).reshape(-1, 3), truth["blob_fwhm_mm"])
            yield task, (np.asarray(amplitudes) @ blobs).reshape(shape)
        return
    atlas = np.asarray(nib.load(root / truth["atlas"]["image"]).dataobj).astype(np.int64)
    for task, info in truth["tasks"].items():
        regions = info["planted_regions"] + (truth["shared_regions"] if include_shared else [])
        amplitude = np.zeros(int(atlas.max()) + 1)
        for region in regions:
            amplitude[region] = info["region_amplitudes"][str(region)]
        yield task, amplitude[atlas]


def directory_size(path: str | os.PathLike) -> int:
    """Total size in bytes of the files under ``path``."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())

