"""Write a simulated HCP task-fMRI data set with known ground truth.

The data set has the HCP layout (<OUT>/<subject>/MNINonLinear/Results/tfMRI_<TASK>_<DIR>/)
with the 7 HCP tasks, HCP-like block designs (EVs/*.txt), Movement_Regressors.txt and a
task signal planted in known atlas regions; <OUT>/ground_truth.json says which regions
and frames carry it. Finished runs are skipped when the command is run again.

With --activation blobs the signal follows no atlas: smooth blobs around MNI centres,
jittered per subject, in spatially smooth noise; ground_truth.json records the centres
and ground_truth_activation.nii.gz the population activation (see
fmri_ica.data.simulate.planted_regions_for_atlas for the regions of an analysis atlas).

Examples:
    fmri-ica simulate demo_data
    fmri-ica simulate demo_data --subjects 40 --frames hcp --voxel-size 2
    fmri-ica simulate control --signal 0      # noise-only control: models must stay at chance
    fmri-ica simulate hard --activation blobs --frames hcp --voxel-size 4 --subjects 16
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)

_TASKS = ("EMOTION", "GAMBLING", "LANGUAGE", "MOTOR", "RELATIONAL", "SOCIAL", "WM")


def _frames(value: str):
    if value in ("short", "hcp"):
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid --frames {value!r}: expected 'short', 'hcp' or a number of frames"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="output folder (the data set root)")
    parser.add_argument("--subjects", type=int, default=24, help="number of subjects (default 24)")
    parser.add_argument("--tasks", nargs="+", default=list(_TASKS), metavar="TASK",
                        help="HCP tasks to simulate (default: all 7)")
    parser.add_argument("--directions", nargs="+", default=["LR", "RL"], metavar="DIR",
                        help="runs per task, by phase-encoding direction (default: LR RL)")
    parser.add_argument("--frames", type=_frames, default="short",
                        help="'short' (100 frames for every task, the default), 'hcp' (HCP's "
                        "own run lengths) or a number of frames")
    parser.add_argument("--voxel-size", type=float, default=6.0, metavar="MM",
                        help="voxel size of the MNI grid in mm (default 6; 2 = HCP's grid)")
    parser.add_argument("--t-r", type=float, default=0.72, metavar="S",
                        help="repetition time in seconds (default 0.72)")
    parser.add_argument("--signal", type=float, default=3.0,
                        help="task response in planted regions, in units of the noise std "
                        "(default 3.0; 0 = noise-only control)")
    parser.add_argument("--noise", type=float, default=1.0,
                        help="region noise std in percent signal change (default 1.0)")
    parser.add_argument("--motion", type=float, default=1.0,
                        help="scale of the head-motion random walks (default 1.0)")
    parser.add_argument("--task-regions", type=int, default=10, metavar="N",
                        help="planted regions (blobs: centres) per task (default 10)")
    parser.add_argument("--shared-regions", type=int, default=5, metavar="N",
                        help="regions (blobs: centres) responding to every task (default 5)")
    parser.add_argument("--atlas", default="gm_kmeans",
                        help="label atlas whose regions are planted (default gm_kmeans; "
                        "ignored with --activation blobs)")
    blobs = parser.add_argument_group("atlas-free activation (--activation blobs)")
    blobs.add_argument("--activation", choices=("regions", "blobs"), default="regions",
                       help="'regions': signal and region noise in the parcels of --atlas "
                       "(default); 'blobs': Gaussian blobs around MNI centres in spatially "
                       "smooth noise, so that no analysis atlas matches the truth")
    blobs.add_argument("--blob-fwhm", type=float, default=12.0, metavar="MM",
                       help="FWHM of each activation blob in mm (default 12; >= --voxel-size)")
    blobs.add_argument("--jitter-mm", type=float, default=4.0, metavar="MM",
                       help="std of each centre's per-subject shift, per axis, in mm (default 4)")
    blobs.add_argument("--amplitude-sd", type=float, default=0.2, metavar="SD",
                       help="log-std of each centre's per-subject amplitude factor (default 0.2)")
    blobs.add_argument("--hrf-peak-sd", type=float, default=0.5, metavar="S",
                       help="std of the HRF time to peak per subject and centre, in seconds "
                       "(default 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--jobs", type=int, default=2, help="runs simulated at once (default 2)")
    parser.add_argument("--overwrite", action="store_true",
                        help="rewrite finished runs (and allow other parameters in OUT)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data.simulate import directory_size, simulate_hcp

    result = simulate_hcp(
        args.out,
        n_subjects=args.subjects,
        tasks=args.tasks,
        directions=args.directions,
        frames=args.frames,
        voxel_size=args.voxel_size,
        t_r=args.t_r,
        signal=args.signal,
        noise=args.noise,
        motion=args.motion,
        n_task_regions=args.task_regions,
        n_shared_regions=args.shared_regions,
        atlas=args.atlas,
        activation=args.activation,
        blob_fwhm=args.blob_fwhm,
        jitter_mm=args.jitter_mm,
        amplitude_sd=args.amplitude_sd,
        hrf_peak_sd=args.hrf_peak_sd,
        seed=args.seed,
        overwrite=args.overwrite,
        n_jobs=args.jobs,
        progress=not args.no_progress,
    )
    size = directory_size(result.path) / 2**20
    logger.info("Simulated data set: %s (%d runs, %.1f MiB); ground truth in %s",
                result.path, len(result.ground_truth["runs"]), size,
                result.path / "ground_truth.json")
    return 0
