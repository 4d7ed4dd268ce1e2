"""Score every attribution method on a finished pipeline run with a known ground truth.

Loads the trained models of one cross-validation fold (``--fold``, default 0) and that fold's
held-out windows of an output folder (e.g. the demo's), computes saliency with each method, and prints, per model and method: accuracy, the share
of the top-k cells in the last 10% of steps, the task-ON share (with the mismatched
baseline), the share of the top-k cells in planted regions and region-level precision at
the number of planted regions (class-mean maps), with chance levels, plus the seconds each
method took. The linear baseline's |weights| are scored the same way.

    python benchmarks/fmri_saliency_methods.py fmri_ica_demo --methods gradient input_x_gradient
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from fmri_ica.config import load_config
from fmri_ica.pipeline import Workspace, eval_windows, load_fold
from fmri_ica.saliency import attribute
from fmri_ica.saliency.scoring import saliency_metrics
from fmri_ica.training import load_model

METHODS = ("gradient", "input_x_gradient", "integrated_gradients", "smoothgrad", "gradient_shap")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="a pipeline output folder with ground truth")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--top-k", type=float, default=0.1)
    parser.add_argument("--fold", type=int, default=0, help="cross-validation fold; default 0")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = json.loads((args.output / "config.json").read_text())["config"]
    config = load_config(None, config)
    ws = Workspace(args.output.resolve())
    test = eval_windows(config, load_fold(ws, args.fold)["test"])
    truth_path = Path(config["data"]["root"]) / "ground_truth.json"
    truth = json.loads(truth_path.read_text())
    x, y, lengths = (torch.from_numpy(a) for a in (test.x, test.y, test.lengths))

    print("| model | method | test window acc | last-10% mass | ON share (mismatched, chance) "
          "| planted share (chance) | region precision (chance) | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for name in config["models"]:
        fold = ws.fold_dir(name, args.fold)
        model = load_model(fold / "trained" / config["training"]["selection"])
        accuracy = json.loads((fold / "evaluation.json").read_text())["test"]["window_accuracy"]
        for method in args.methods:
            start = time.perf_counter()
            sal = attribute(model, x, target=y, method=method, lengths=lengths)
            seconds = time.perf_counter() - start
            sal = np.abs(sal.detach().numpy())
            m = saliency_metrics(sal, test, args.top_k, truth, seed=config["seed"])
            print(f"| {name} | {method} | {accuracy:.3f} | {m['mass_last_10pct']['mean']:.3f} "
                  f"| {m['on_share']['mean']:.3f} ({m['on_share_mismatched']['mean']:.3f}, "
                  f"{m['on_share_chance']:.3f}) | {m['planted_share']['mean']:.3f} "
                  f"({m['planted_share_chance']:.3f}) | {m['region_precision']['mean']:.3f} "
                  f"({m['region_precision_chance']:.3f}) | {seconds:.1f} |", flush=True)
    linear = ws.saliency_dir("linear") / "metrics.json"
    if linear.is_file():
        m = json.loads(linear.read_text())
        print(f"| linear | weights | {m['test_accuracy']:.3f} | — | — | — "
              f"| {m['region_precision']['mean']:.3f} ({m['region_precision_chance']:.3f}) | — |")


if __name__ == "__main__":
    main()
