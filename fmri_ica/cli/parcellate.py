"""Extract region time series from every run of a data set (one TSV + JSON per run).

Finds the runs (HCP tree, fMRIPrep derivatives or manifest TSV), puts the atlas on each
run's grid and writes BIDS-derivatives-style outputs under --out:
sub-<s>/[ses-<x>/]func/<run>_atlas-<atlas>_timeseries.tsv (+ .json sidecar).
Finished runs are skipped on a re-run unless a parameter changed (or --overwrite).
A failed run is recorded (summary table, parcellate*_failures.tsv) and the others go on;
the exit code is 1 if any run failed.

--shard I/N processes runs I, I+N, I+2N... of the sorted list (I is 0-based: 0..N-1).
--shard auto reads SLURM_ARRAY_TASK_ID / _MIN / _STEP / _COUNT, so any --array range
works (see scripts/slurm_parcellate.sh). Array tasks may share --out: a lock file per
run keeps two tasks from writing the same run.

Examples:
    fmri-ica parcellate /data/HCP --atlas seitzman300 --out derivatives/ts --task MOTOR WM
    fmri-ica parcellate /data/fmriprep --atlas gm_kmeans --atlas-option n_regions=400 \
        --out ts --confounds-strategy simple --high-pass 0.008 --jobs 4
    fmri-ica parcellate runs.tsv --atlas my_labels.nii.gz --out ts --shard auto
"""

from __future__ import annotations

import argparse

from ._common import (
    add_atlas_option_argument,
    add_discovery_arguments,
    discover_from_args,
    parse_key_values,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--atlas",
        default="seitzman300",
        help="atlas name (see `fmri-ica atlases`) or a label/maps NIfTI path",
    )
    add_atlas_option_argument(parser)
    parser.add_argument("--out", required=True, help="output folder")
    add_discovery_arguments(
        parser,
        help={
            "task": "keep these tasks",
            "run": "keep these runs",
            "space": "fMRIPrep space, e.g. MNI152NLin2009cAsym:res-2",
            "t_r": "repetition time (s) for every run",
            "no_events": "accept runs without events (no per-frame conditions)",
        },
    )
    parser.add_argument("--shard", help="I/N (0-based I) or 'auto' (SLURM array)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel processes (default 1)")
    parser.add_argument("--high-pass", type=float, help="high-pass cut-off (Hz)")
    parser.add_argument("--low-pass", type=float, help="low-pass cut-off (Hz)")
    parser.add_argument("--no-detrend", action="store_true", help="do not remove linear trends")
    parser.add_argument(
        "--standardize",
        default="zscore_sample",
        choices=["zscore_sample", "psc", "none"],
        help="per-region scaling: z-score, percent signal change against "
        "fixation (needs events), or none (default zscore_sample)",
    )
    parser.add_argument(
        "--hrf-delay",
        type=float,
        default=0.0,
        help="seconds added to event onsets for per-frame labels (default 0)",
    )
    parser.add_argument(
        "--confounds-strategy",
        default="none",
        help="'none' (default), or a confounds strategy, e.g. 'simple'",
    )
    parser.add_argument("--cache-dir", help="atlas cache folder (default $FMRI_ICA_CACHE)")
    parser.add_argument("--overwrite", action="store_true", help="redo finished runs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data.parcellation import parcellate

    runs = discover_from_args(args)
    options = {
        "detrend": not args.no_detrend,
        "high_pass": args.high_pass,
        "low_pass": args.low_pass,
        "standardize": None if args.standardize == "none" else args.standardize,
    }
    strategy = None if args.confounds_strategy.lower() == "none" else args.confounds_strategy
    summary = parcellate(
        runs,
        args.atlas,
        args.out,
        shard=args.shard,
        n_jobs=args.jobs,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        hrf_delay=args.hrf_delay,
        confounds_strategy=strategy,
        atlas_options=parse_key_values(args.atlas_option),
        cache_dir=args.cache_dir,
        **options,
    )
    print(summary)
    return 0 if summary.ok else 1
