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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="HCP folder, fMRIPrep derivatives folder, or manifest .tsv")
    parser.add_argument(
        "--atlas",
        default="seitzman300",
        help="atlas name (see `fmri-ica atlases`) or a label/maps NIfTI path",
    )
    parser.add_argument(
        "--atlas-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="atlas option, e.g. n_regions=400 (repeatable)",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--layout", default="auto", choices=["auto", "hcp", "bids", "manifest"])
    parser.add_argument("--subject", nargs="+", metavar="LABEL", help="keep these subjects")
    parser.add_argument("--session", nargs="+", metavar="LABEL", help="keep these sessions")
    parser.add_argument("--task", nargs="+", metavar="NAME", help="keep these tasks")
    parser.add_argument("--run", nargs="+", metavar="LABEL", help="keep these runs")
    parser.add_argument("--space", help="fMRIPrep space, e.g. MNI152NLin2009cAsym:res-2")
    parser.add_argument("--t-r", type=float, help="repetition time (s) for every run")
    parser.add_argument(
        "--no-events",
        action="store_true",
        help="accept runs without events (no per-frame conditions)",
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
    from ..data.layouts import discover_runs
    from ..data.parcellation import parcellate

    runs = discover_runs(
        args.root,
        args.layout,
        subjects=args.subject,
        sessions=args.session,
        tasks=args.task,
        runs=args.run,
        space=args.space,
        t_r=args.t_r,
        require_events=not args.no_events,
    )
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
        atlas_options=_options(args.atlas_option),
        cache_dir=args.cache_dir,
        **options,
    )
    print(summary)
    return 0 if summary.ok else 1


def _options(items: list[str]) -> dict:
    import yaml

    from ..exceptions import InvalidParameterError

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidParameterError(f"--atlas-option expects KEY=VALUE; got {item!r}.")
        options[key.strip()] = yaml.safe_load(value)
    return options
