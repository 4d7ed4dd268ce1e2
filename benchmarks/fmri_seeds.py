"""Repeat training and explanation of a finished pipeline run over several seeds.

Saliency of input-cell attention varies between seeds much more than an LSTM's
(EVALUATION.md), so claims need distributions. For each seed this reuses the run's region
time series, draws a new subject split and initialisation, trains every configured model,
explains it, and finally prints mean ± SD over seeds of the figures of merit per model.

    python benchmarks/fmri_seeds.py fmri_ica_demo --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from fmri_ica.config import load_config, merge_config
from fmri_ica.pipeline import run_pipeline

FIGURES = {
    "test balanced accuracy": lambda m: m["balanced_accuracy"],
    "last-10% mass": lambda m: m["mass_last_10pct"]["mean"],
    "ON share": lambda m: m["on_share"]["mean"],
    "ON share, mismatched": lambda m: m["on_share_mismatched"]["mean"],
    "planted share": lambda m: m.get("planted_share", {}).get("mean", np.nan),
    "region precision": lambda m: m.get("region_precision", {}).get("mean", np.nan),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="a finished pipeline output folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--method", default=None, help="saliency method (default: the run's)")
    args = parser.parse_args()

    base = load_config(None, json.loads((args.output / "config.json").read_text())["config"])
    results: dict[str, list[dict]] = {}
    for seed in args.seeds:
        out = args.output / "seeds" / f"seed-{seed}"
        _reuse_parcellation(args.output, out)
        config = merge_config(base, {"seed": seed, "output": str(out),
                                     "report": {"linear_baseline": False}})
        if args.method:
            config = merge_config(config, {"saliency": {"method": args.method}})
        run_pipeline(config, stages=("parcellate", "samples", "train", "explain"))
        for name in config["models"]:
            results.setdefault(name, []).append(json.loads((out / "saliency" / name / "metrics.json").read_text()))
    method = args.method or base["saliency"]["method"]
    print(f"\n{len(args.seeds)} seeds {args.seeds}, saliency: {method}; mean ± SD over seeds\n")
    print("| model | " + " | ".join(FIGURES) + " |")
    print("|---|" + "---|" * len(FIGURES))
    for name, runs in results.items():
        cells = []
        for figure in FIGURES.values():
            values = np.array([figure(m) for m in runs], dtype=float)
            cells.append(f"{np.nanmean(values):.3f} ± {np.nanstd(values):.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    chance = results[next(iter(results))][0]
    print(f"\nchance: ON share {chance['on_share_chance']:.3f}, planted share "
          f"{chance.get('planted_share_chance', float('nan')):.3f}, region precision "
          f"{chance.get('region_precision_chance', float('nan')):.3f}")


def _reuse_parcellation(source: Path, out: Path) -> None:
    """Share the region time series (a link) and the stage marker saying they are done."""
    (out / ".stages").mkdir(parents=True, exist_ok=True)
    if not (out / "timeseries").exists():
        (out / "timeseries").symlink_to((source / "timeseries").resolve())
    shutil.copy(source / ".stages" / "parcellate.json", out / ".stages" / "parcellate.json")


if __name__ == "__main__":
    main()
