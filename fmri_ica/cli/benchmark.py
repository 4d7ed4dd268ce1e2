"""Run benchmarks that print tables of measured figures.

  fmri-ica benchmark synthetic --profile quick|paper|strong --out DIR
  fmri-ica benchmark fmri --out DIR [--snr 4 6 8] [--subjects 10 16] [--seeds 0 1 2]

'fmri' sweeps simulated fMRI whose activations do not follow the analysis atlas (blobs at
MNI coordinates, jittered per subject, real HCP run lengths) over SNR x cohort size x seed,
with cross-validation, null models and voxel-space localisation; writes DIR/table.md,
DIR/results.json and one folder per cell (resumable).

'synthetic' reproduces Table 1 of Ismail et al. (NeurIPS 2019): LSTM, Bi-LSTM,
LSTM + self-attention and input-cell attention LSTM (matrix and mean embedding) on
the paper's box data sets; prints WJac / Euc / accuracy per model per data set and
writes DIR/<profile>/ results.csv, results.json, table.md, saliency_maps.png,
saliency_time.png and benchmark.json. Each (data set, model) cell is saved as it
finishes; re-running the same command skips finished cells. --methods then scores
other attribution methods on the trained models (methods.csv, methods.md)."""

from __future__ import annotations

import argparse

from ._common import add_threads_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    syn = sub.add_parser(
        "synthetic",
        help="the paper's synthetic box data sets (Table 1)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    syn.add_argument(
        "--profile",
        default="quick",
        help="quick (tiny, for CI), paper (the authors' sizes, hidden 5) or strong "
        "(every model trains); default: quick",
    )
    syn.add_argument("--out", required=True, help="output folder (results go to OUT/<profile>/)")
    syn.add_argument("--datasets", nargs="+", help="subset of data sets (default: the profile's)")
    syn.add_argument("--models", nargs="+", help="subset of models (default: all five)")
    syn.add_argument("--seed", type=int, default=0, help="seed of data and training; default 0")
    syn.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    add_threads_argument(syn, "1, as the pipeline's")
    syn.add_argument("--no-progress", action="store_true", help="hide progress bars")
    syn.add_argument(
        "--methods",
        nargs="+",
        help="afterwards, score these attribution methods on the trained models "
        "(gradient input_x_gradient integrated_gradients smoothgrad gradient_shap "
        "occlusion tsr); writes OUT/<profile>/methods.csv and methods.md",
    )
    syn.add_argument(
        "--method-samples", type=int, default=50, help="test samples per method; default 50"
    )
    syn.add_argument(
        "--tsr-samples", type=int, default=5, help="test samples for tsr (costly); default 5"
    )
    _add_fmri(sub)


def _add_fmri(sub) -> None:
    fmri = sub.add_parser(
        "fmri",
        help="simulated fMRI off the atlas: SNR x cohort size x seed, with null models",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fmri.add_argument("--out", required=True, help="output folder")
    fmri.add_argument("--snr", nargs="+", type=float, default=[4.0, 6.0, 8.0],
                      help="simulated signal levels (peak blob amplitude / noise std); default 4 6 8")
    fmri.add_argument("--subjects", nargs="+", type=int, default=[10, 16],
                      help="cohort sizes; default 10 16")
    fmri.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="default 0 1 2")
    fmri.add_argument("--voxel-size", type=float, default=5.0, help="simulation grid (mm); default 5")
    fmri.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="pipeline setting, e.g. --set training.epochs=20 or --set threads=2 "
                      "(repeatable)")
    fmri.add_argument("--models", nargs="+", metavar="NAME",
                      help="keep only these of the configured models (default: all: ica-lstm lstm)")
    fmri.add_argument("--drop-data", action="store_true",
                      help="delete each cell's simulated images once it is summarised")


def _run_fmri(args: argparse.Namespace) -> int:
    from ..benchmark.fmri import format_table, run_fmri_benchmark
    from ._common import parse_set_options

    rows = run_fmri_benchmark(args.out, snr=args.snr, n_subjects=args.subjects, seeds=args.seeds,
                              voxel_size=args.voxel_size, overrides=parse_set_options(args.set),
                              models=args.models, keep_data=not args.drop_data)
    print(format_table(rows), end="")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.benchmark == "fmri":
        return _run_fmri(args)
    from .._threads import DEFAULT_THREADS, set_torch_threads
    from ..benchmark.synthetic import (
        compare_methods,
        format_methods_table,
        format_table,
        run_synthetic_benchmark,
    )

    set_torch_threads(DEFAULT_THREADS if args.threads is None else args.threads, "--threads")
    results = run_synthetic_benchmark(
        args.out,
        args.profile,
        datasets=args.datasets,
        models=args.models,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
    )
    print(format_table(results), end="")
    if args.methods:
        done = results[results["status"] == "ok"]
        table = compare_methods(
            args.out,
            args.profile,
            datasets=list(dict.fromkeys(done["dataset"])),
            models=list(dict.fromkeys(done["model"])),
            methods=args.methods,
            n_samples=args.method_samples,
            n_tsr=args.tsr_samples,
            seed=args.seed,
            device=args.device,
        )
        print(format_methods_table(table), end="")
    failed = results[results["status"] != "ok"]
    for _, row in failed.iterrows():
        print(f"cell {row['dataset']} / {row['model']}: {row['status']} {row.get('error', '')}")
    return 1 if len(failed) else 0
