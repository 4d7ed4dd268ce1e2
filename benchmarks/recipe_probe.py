"""One fold of a finished run, trained again with a changed recipe and several model seeds.

The pipeline's ``seed`` also draws the folds and the crops, so a recipe change measured with
one pipeline run mixes the recipe's effect with one model seed's luck. This script keeps the
run's data, folds and standardisation (``fmri_ica.pipeline.load_fold``) and its scoring (a run
is predicted by the mean log-probability of its windows, ``samples.step`` apart), trains the
run's model with ``--set`` overrides for each of ``--model-seeds``, and prints one JSON line per
seed plus a summary: run accuracy on the fold's test subjects, the final training accuracy,
and the linear reference on the same fold (the first window of each run, as the pipeline fits it).

    python benchmarks/recipe_probe.py RUN_DIR --fold 0 --model-seeds 0 1 2 \\
        --set models.ica-lstm.input_noise=1.0
    python benchmarks/recipe_probe.py RUN_DIR --model lstm --set training.crops_per_run=4

``RUN_DIR`` is a finished ``samples`` stage of ``fmri-ica run`` (its ``config.json`` gives the
recipe that ``--set`` changes). One torch thread (``--threads``); nothing is written to
``RUN_DIR``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fmri_ica.cli._common import parse_set_options
from fmri_ica.config import load_config, merge_config, validate_config
from fmri_ica.pipeline import (
    Workspace,
    _first_windows,
    _fit,
    _run_scores,
    eval_windows,
    fit_linear,
    load_fold,
)


def probe(config: dict, name: str, data: dict, seed: int) -> dict:
    config = merge_config(config, {"seed": seed})
    train, test = data["train"], eval_windows(config, data["test"])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recipe_probe_") as out:
        val = eval_windows(config, data["val"]) if len(data["val"]) else _first_windows(config, train)
        result = _fit(config, name, train, val, Path(out))
        scores = _run_scores(Path(out) / config["training"]["selection"], test)
    return {"model": name, "model_seed": seed, "run_accuracy": scores["run_accuracy"],
            "train_accuracy": result.history[-1]["train_acc"],
            "seconds": round(time.perf_counter() - started, 1)}


def linear_reference(config: dict, data: dict) -> float | None:
    """The pipeline's linear reference on the fold: its run accuracy."""
    fitted = fit_linear(config, data)
    if fitted is None:
        return None
    _, test, pred = fitted
    return float(np.mean(pred == np.asarray(test.y)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--model", default=None, help="a model of the run's config (default: the first)")
    parser.add_argument("--model-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    stored = json.loads((args.run_dir / "config.json").read_text())["config"]
    # --set changes one value of a model, as on fmri-ica's command line
    config = validate_config(merge_config(load_config(None, stored), parse_set_options(args.overrides),
                                          replace_free_form=False))
    name = args.model or next(iter(config["models"]))
    data = load_fold(Workspace(args.run_dir), args.fold)
    rows = []
    for seed in args.model_seeds:
        rows.append(probe(config, name, data, seed))
        print(json.dumps(rows[-1]), flush=True)
    accuracies = [r["run_accuracy"] for r in rows]
    print(json.dumps({"fold": args.fold, "set": args.overrides, "model": name,
                      "mean_run_accuracy": statistics.mean(accuracies),
                      "spread": max(accuracies) - min(accuracies),
                      "linear_reference": linear_reference(config, data)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
