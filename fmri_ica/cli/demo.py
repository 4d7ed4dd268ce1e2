"""Run the whole pipeline on a small simulated HCP-style data set (the main demo).

Simulates task fMRI for the 7 HCP tasks with known ground truth (which regions respond
to which task, and when), parcellates it, trains the input-cell attention LSTM and a plain
LSTM with 3-fold subject-grouped cross-validation (and each beside a copy trained on
permuted labels), computes their saliency and their null models' on held-out subjects,
projects it onto the brain as 4D NIfTI maps across time, and writes an HTML report. About 5
minutes on 2 CPU cores; re-running skips finished work. torch runs one thread per process
(--threads): on an idle 2-core machine a second thread saved 17% of a training epoch and
nothing of `--quick`, but with a second demo running it made `--quick` 1.8x slower, and
with other work on the cores 2.2x. The demo's data plant the signal in the parcels of the
analysis atlas at high SNR: an easy case. `fmri-ica benchmark fmri` tests harder ones.

Everything goes under --out (default ./fmri_ica_demo, about 0.9 GB, most of it the
simulated images in data/): report.html, maps/, models/, saliency/, timeseries/, and
config.yaml, the demo's full configuration: `fmri-ica run OUT/config.yaml` re-runs it, and
a copy with other settings runs them on the same data.

Examples:
    fmri-ica demo
    fmri-ica demo --out my_demo --subjects 40
    fmri-ica demo --quick          # a minute-long smoke run (tiny, not a finding)
"""

from __future__ import annotations

import json
from pathlib import Path

from ._common import add_threads_argument

#: The demo's configuration on top of the pipeline defaults (fmri_ica.config.DEFAULTS).
DEMO = {
    "atlas": {"name": "gm_kmeans", "options": {"n_regions": 100}},
    "parcellation": {"high_pass": None, "jobs": 2},
    "samples": {"window": 60, "step": 20},
    "crossval": {"folds": 3},
    "models": {
        "ica-lstm": {"kind": "ica", "hidden_size": 32, "r": 10, "d_a": 32, "embedding": "mean",
                     "dropout": 0.3, "input_noise": 1.0},
        "lstm": {"kind": "lstm", "hidden_size": 32, "dropout": 0.3},
    },
    "training": {"epochs": 16, "batch_size": 32, "crops_per_run": 3},
    "sanity": {"n_untrained": 3, "n_perm": 2000},
    "report": {"animation": False},  # the GIFs cost about a minute; report.animation adds them
}
QUICK = {
    "training": {"epochs": 3},
    "samples": {"window": 20, "step": 10},
    "sanity": {"n_boot": 200, "n_perm": 200},
    "report": {"surface": False, "animation": False},
}


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="fmri_ica_demo",
                        help="output folder, created if needed (default: ./%(default)s)")
    parser.add_argument("--subjects", type=int, default=24, help="simulated subjects (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulation and training")
    parser.add_argument("--quick", action="store_true",
                        help="tiny data and few epochs: checks that everything runs, in about a minute")
    add_threads_argument(parser, "1, as the pipeline's")


def demo_config(out, *, seed: int = 0, quick: bool = False) -> dict:
    """The demo's full pipeline configuration, its data under ``out/data``.

    Parameters
    ----------
    out : path
        The demo's output folder.
    seed : int, default=0
    quick : bool, default=False
        Apply the ``--quick`` settings.

    Returns
    -------
    dict
        Every key of :data:`fmri_ica.config.DEFAULTS`, as ``fmri-ica run`` would read it.
    """
    from ..config import load_config, merge_config

    out = Path(out).resolve()
    config = load_config(None, DEMO)
    if quick:
        config = merge_config(config, QUICK)
    return merge_config(config, {
        "output": str(out), "seed": seed,
        "data": {"root": str(out / "data"), "layout": "hcp"},
    })


def run(args) -> int:
    from ..config import write_config
    from ..data.simulate import simulate_hcp
    from ..pipeline import run_pipeline

    out = Path(args.out).resolve()
    subjects = min(args.subjects, 6) if args.quick else args.subjects
    config = demo_config(out, seed=args.seed, quick=args.quick)
    if args.threads is not None:
        config["threads"] = args.threads
    # Written first, so that an interrupted demo can be finished with `fmri-ica run`.
    write_config(config, out / "config.yaml")
    atlas = config["atlas"]
    simulate_hcp(config["data"]["root"], n_subjects=subjects, frames=40 if args.quick else "short",
                 seed=args.seed, atlas=atlas["name"], atlas_options=atlas["options"])
    workspace = run_pipeline(config)
    print(json.dumps({
        "report": str(workspace.report), "maps": str(workspace.root / "maps"),
        "figures": str(workspace.figures), "data": config["data"]["root"],
        "config": str(out / "config.yaml"),
    }, indent=2))
    print(f"\nOpen the report: {workspace.report}")
    print(f"Re-run or change it: fmri-ica run {out / 'config.yaml'}")
    return 0
