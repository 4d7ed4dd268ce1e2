"""Extract region time series from every run of a data set (one TSV + JSON per run).

Finds the runs (HCP tree, fMRIPrep derivatives or manifest TSV), puts the atlas on each
run's grid and writes BIDS-derivatives-style outputs under --out:
sub-<s>/[ses-<x>/]func/<run>_atlas-<atlas>_timeseries.tsv (+ .json sidecar).
Finished runs are skipped on a re-run unless a parameter changed (or --overwrite).
The cleaning defaults are the pipeline's (`parcellation` in fmri_ica/config.py), so
`fmri-ica parcellate` and `fmri-ica run` clean alike unless told otherwise.
A failed run (including one whose files are found wrong while listing the data set) is
recorded (summary table, parcellate*_failures.tsv) and the others go on; the exit code is 1
if more runs failed than --allow-failures accepts (default: none).
A run is finished for the content of its inputs: edited events or confounds, or a replaced
BOLD, redo it. A BOLD is compared by size and time, and by checksum when its time changed
(always with --verify).

--shard I/N processes runs I, I+N, I+2N... of the sorted list (I is 0-based: 0..N-1).
--shard auto reads SLURM_ARRAY_TASK_ID / _MIN / _STEP / _COUNT, so any --array range
works (see scripts/slurm_parcellate.sh). Array tasks may share --out: a lock file per
run keeps two tasks from writing the same run.

Examples:
    fmri-ica parcellate /data/HCP --atlas seitzman300 --out derivatives/ts --task MOTOR WM
    fmri-ica parcellate /data/fmriprep --atlas gm_kmeans --atlas-option n_regions=400 \
        --out ts --confounds-strategy scrubbing --high-pass 0.01 --jobs 4
    fmri-ica parcellate runs.tsv --out ts --confounds-strategy none --high-pass none
    fmri-ica parcellate runs.tsv --atlas my_labels.nii.gz --out ts --shard auto
"""

from __future__ import annotations

import argparse
import sys

from ..config import DEFAULTS
from ._common import (
    add_allow_failures_argument,
    add_atlas_option_argument,
    add_discovery_arguments,
    add_verify_argument,
    discover_from_args,
    parse_key_values,
)

#: The pipeline's cleaning settings: the single source of this command's defaults.
_CLEANING = DEFAULTS["parcellation"]


def _none_text(value) -> str:
    """A default as typed on the command line (None -> ``none``)."""
    return "none" if value is None else str(value)


def _frequency(text: str) -> float | None:
    """``--high-pass`` / ``--low-pass``: a frequency in Hz, or ``none``."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a frequency in Hz or 'none'; got {text!r}"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--atlas",
        default=DEFAULTS["atlas"]["name"],
        help="atlas name (see `fmri-ica atlases`) or a label/maps NIfTI path "
        "(default: %(default)s)",
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
    parser.add_argument(
        "--jobs",
        type=int,
        default=_CLEANING["jobs"],
        help="parallel processes (default: %(default)s)",
    )
    parser.add_argument(
        "--high-pass",
        type=_frequency,
        default=_CLEANING["high_pass"],
        metavar="HZ",
        help=f"high-pass cut-off in Hz, or 'none' (default: {_none_text(_CLEANING['high_pass'])})",
    )
    parser.add_argument(
        "--low-pass",
        type=_frequency,
        default=_CLEANING["low_pass"],
        metavar="HZ",
        help=f"low-pass cut-off in Hz, or 'none' (default: {_none_text(_CLEANING['low_pass'])})",
    )
    parser.add_argument(
        "--detrend",
        action=argparse.BooleanOptionalAction,
        default=_CLEANING["detrend"],
        help="remove linear trends (default: %(default)s)",
    )
    parser.add_argument(
        "--standardize",
        default=_none_text(_CLEANING["standardize"]),
        choices=["zscore_sample", "psc", "none"],
        help="per-region scaling: z-score, percent signal change against "
        "fixation (needs events), or none (default: %(default)s)",
    )
    parser.add_argument(
        "--hrf-delay",
        type=float,
        default=_CLEANING["hrf_delay"],
        help="seconds added to event onsets for per-frame labels (default: %(default)s)",
    )
    parser.add_argument(
        "--confounds-strategy",
        default=_none_text(_CLEANING["confounds_strategy"]),
        help="confound regression: 'simple' (HCP: the 12 movement regressors), 'scrubbing' or "
        "'compcor' (fMRIPrep), or 'none' (default: %(default)s)",
    )
    parser.add_argument(
        "--engine",
        default=_CLEANING["engine"],
        choices=["auto", "stream", "nilearn"],
        help="'auto' streams .nii/.nii.gz files frame by frame (same numbers, a fraction of "
        "the memory); 'nilearn' loads each run whole (default: %(default)s)",
    )
    parser.add_argument("--cache-dir", help="atlas cache folder (default $FMRI_ICA_CACHE)")
    parser.add_argument("--overwrite", action="store_true", help="redo finished runs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_allow_failures_argument(parser)
    parser.set_defaults(allow_failures=_CLEANING["allow_failures"])
    add_verify_argument(parser)


def cleaning_options(args: argparse.Namespace) -> dict:
    """The parsed cleaning options as ``parcellation`` config values (``none`` -> None)."""
    strategy = args.confounds_strategy
    return {
        "standardize": None if args.standardize == "none" else args.standardize,
        "detrend": args.detrend,
        "high_pass": args.high_pass,
        "low_pass": args.low_pass,
        "confounds_strategy": None if strategy.lower() == "none" else strategy,
        "hrf_delay": args.hrf_delay,
        "jobs": args.jobs,
        "allow_failures": args.allow_failures,
        "engine": args.engine,
    }


def run(args: argparse.Namespace) -> int:
    from ..data.parcellation import parcellate, too_many_failures

    runs = discover_from_args(args, keep_failed=True)
    options = cleaning_options(args)
    allow = options.pop("allow_failures")
    summary = parcellate(
        runs,
        args.atlas,
        args.out,
        shard=args.shard,
        n_jobs=options.pop("jobs"),
        overwrite=args.overwrite,
        progress=not args.no_progress,
        hrf_delay=options.pop("hrf_delay"),
        confounds_strategy=options.pop("confounds_strategy"),
        atlas_options=parse_key_values(args.atlas_option),
        cache_dir=args.cache_dir,
        verify=args.verify,
        **options,
    )
    print(summary)
    problem = too_many_failures(summary, allow)
    if problem:
        print(f"fmri-ica parcellate: {problem}", file=sys.stderr)
    return 1 if problem else 0
