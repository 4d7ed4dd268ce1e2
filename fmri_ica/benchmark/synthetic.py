"""The synthetic saliency benchmark of Ismail et al. (NeurIPS 2019), Table 1.

For every (profile, data set, model) cell: draw the data set (:mod:`fmri_ica.data.synthetic`),
standardise every (time, feature) cell on the training part, carve a validation split
from the training set (model selection never sees the test set), train, then compute
the paper's saliency |d p_true / d x| on the test split and score it against the box
mask: weighted Jaccard (WJac), relative Euclidean distance (Euc), AUROC, AUPRC,
precision at the mask size, and where in time the saliency mass lies.
:func:`compare_methods` then scores other attribution methods on the same models.

Profiles: ``quick`` (tiny, for CI), ``paper`` (the authors' sizes, hyper-parameters and
stopping rule) and ``strong`` (a setting where every model trains): :data:`PROFILES`.

Every cell is its own resumable unit: ``<out>/<profile>/cells/<data set>__<model>.json``
(+ ``.npz`` with the mean saliency map and curve) is written atomically when the cell
finishes; a re-run skips finished cells and resumes an interrupted training; a failing
cell is recorded (``status: "failed"``) and the others go on.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from pathlib import Path

import numpy as np

from .._utils import atomic_path, check_option, package_versions, seed_everything, write_json
from .._utils import write_text as _write_text
from ..data.synthetic import DATASETS, DISPLAY_NAMES, make_split

logger = logging.getLogger(__name__)

__all__ = [
    "COMPARE_OPTIONS",
    "MODELS",
    "PAPER_TABLE1",
    "PROFILES",
    "compare_methods",
    "format_methods_table",
    "format_table",
    "plot_benchmark",
    "run_cell",
    "run_synthetic_benchmark",
    "write_summary",
]

#: Benchmark model name -> (build_model kind, fixed options, display name).
MODELS = {
    "lstm": ("lstm", {}, "LSTM"),
    "bilstm": ("bilstm", {}, "Bi-LSTM"),
    "self_attention": ("self_attention", {}, "LSTM + self-attention"),
    "ica_matrix": ("ica", {"embedding": "matrix"}, "LSTM + input-cell attention (matrix)"),
    "ica_mean": ("ica", {"embedding": "mean"}, "LSTM + input-cell attention (mean)"),
}
_ATTENTION_MODELS = ("self_attention", "ica_matrix", "ica_mean")

_TABLE1_SETS = ("earlier", "middle", "latter", "mixed", "3_earlier", "3_middle")
_ALL_SETS = ("earlier", "middle", "latter", "3_earlier", "3_middle", "mixed") + tuple(
    d for d in DATASETS if d.startswith("moving")
)

#: Profiles: data sizes (None = the paper's), model and training settings.
PROFILES = {
    "quick": {
        "datasets": ("earlier", "latter"),
        "n_train": 160,
        "n_test": 60,
        "model": {"hidden_size": 8, "r": 4, "d_a": 16, "dropout": 0.0},
        "train": {"epochs": 4, "lr": 1e-2, "batch_size": 40, "patience": None},
        "stop_at_train_accuracy": None,
        "forget_bias": 0.0,
    },
    # The authors' settings: hidden 5, r 20, d_a 50, dropout 0.1, Adam 1e-3, batch 50,
    # and their stopping rule: stop at the first epoch with 100% training accuracy
    # (they checked every 3 steps and kept the checkpoint best on *test* accuracy; we
    # keep the weights best on a validation split). Networks trained on past that
    # point saturate and their gradient maps turn away from the box (docs/results-synthetic.md).
    "paper": {
        "datasets": _ALL_SETS,
        "n_train": None,
        "n_test": None,
        "model": {"hidden_size": 5, "r": 20, "d_a": 50, "dropout": 0.1},
        "train": {"epochs": 40, "lr": 1e-3, "batch_size": 50, "patience": 5},
        "stop_at_train_accuracy": 1.0,
        "forget_bias": 0.0,
    },
    # A setting where every model learns the boxes, so saliency differences are not
    # just untrained networks: wider (32), and the LSTM forget-gate bias starts at 3
    # (forget gate ~0.95) in every model, without which a plain LSTM stays at chance on
    # the Earlier box (Jozefowicz et al. 2015 recommend a positive forget bias).
    "strong": {
        "datasets": _ALL_SETS,
        "n_train": None,
        "n_test": None,
        "model": {"hidden_size": 32, "r": 20, "d_a": 50, "dropout": 0.1},
        "train": {"epochs": 20, "lr": 3e-3, "batch_size": 50, "patience": 3},
        "stop_at_train_accuracy": 1.0,
        "forget_bias": 3.0,
    },
}
_VAL_SHARE = 0.1
_REFERENCE_FIT = 900

#: Table 1 of the paper: (WJac, Euc, test accuracy %).
PAPER_TABLE1 = {
    "lstm": {
        "earlier": (0.000, 1.006, 53.4), "middle": (0.000, 1.003, 98.6),
        "latter": (0.019, 0.985, 100.0), "mixed": (0.000, 1.003, 49.1),
        "3_earlier": (0.000, 1.003, 52.2), "3_middle": (0.000, 1.004, 51.8),
    },
    "bilstm": {
        "earlier": (0.000, 1.004, 50.7), "middle": (0.000, 1.003, 53.2),
        "latter": (0.013, 0.990, 100.0), "mixed": (0.000, 1.002, 51.5),
        "3_earlier": (0.000, 1.003, 51.3), "3_middle": (0.000, 1.003, 51.3),
    },
    "self_attention": {
        "earlier": (0.048, 0.973, 100.0), "middle": (0.048, 0.963, 100.0),
        "latter": (0.045, 0.973, 100.0), "mixed": (0.060, 0.953, 100.0),
        "3_earlier": (0.025, 0.985, 100.0), "3_middle": (0.075, 0.939, 99.9),
    },
    "ica": {
        "earlier": (0.103, 0.914, 100.0), "middle": (0.124, 0.891, 100.0),
        "latter": (0.110, 0.903, 100.0), "mixed": (0.104, 0.912, 77.6),
        "3_earlier": (0.108, 0.903, 100.0), "3_middle": (0.106, 0.905, 100.0),
    },
}  # fmt: skip
_N_BINS = 10


def _profile(profile: str) -> dict:
    check_option("profile", profile, PROFILES)
    return PROFILES[profile]


def run_synthetic_benchmark(
    out_dir,
    profile: str = "quick",
    *,
    datasets=None,
    models=None,
    seed: int = 0,
    device=None,
    progress: bool = True,
):
    """Run (or resume) every cell of a profile, then write the tables and figures.

    Parameters
    ----------
    out_dir : str or Path
        Results go to ``out_dir/<profile>/``: ``cells/`` (one JSON + NPZ per cell),
        ``results.csv``, ``results.json``, ``table.md``, ``saliency_maps.png``,
        ``saliency_time.png`` and ``benchmark.json`` (parameters and versions).
    profile : {"quick", "paper", "strong"}, default="quick"
    datasets, models : sequence of str, optional
        Subsets of the profile's data sets and of :data:`MODELS`.
    seed : int, default=0
        Seeds data, initialisation and training; recorded per cell.
    device : str, optional
        Torch device; None picks CUDA if available.
    progress : bool, default=True

    Returns
    -------
    pandas.DataFrame
        One row per cell (finished, failed or missing).
    """
    settings = _profile(profile)
    datasets = list(datasets or settings["datasets"])
    models = list(models or MODELS)
    for name in datasets:
        check_option("datasets", name, DATASETS)
    for name in models:
        check_option("models", name, MODELS)
    root = Path(out_dir) / profile
    write_json(
        root / "benchmark.json",
        {"profile": profile, "settings": settings, "datasets": datasets, "models": models,
         "seed": seed, "validation_share": _VAL_SHARE, "versions": package_versions()},
    )  # fmt: skip
    started = time.time()
    for dataset in datasets:
        for model in models:
            run_cell(root, profile, dataset, model, seed=seed, device=device, progress=progress)
    logger.info("benchmark %s: %.0f s", profile, time.time() - started)
    return write_summary(root, datasets, models)


def _cell_path(root: Path, dataset: str, model: str) -> Path:
    return root / "cells" / f"{dataset}__{model}.json"


def run_cell(root, profile, dataset, model, *, seed=0, device=None, progress=True) -> dict:
    """Train and score one (data set, model) cell; skip it if already finished.

    Returns the cell's record (also written to ``cells/<dataset>__<model>.json``). A
    failure is recorded with ``status: "failed"`` and its traceback, not raised.
    """
    import json

    root = Path(root)
    path = _cell_path(root, dataset, model)
    if path.exists():
        record = json.loads(path.read_text())
        if record.get("status") == "ok" and record.get("seed") == seed:
            if record.get("settings") == json.loads(json.dumps(_profile(profile))):
                return record
            logger.info("cell %s / %s: settings changed, recomputing", dataset, model)
    record = {"profile": profile, "dataset": dataset, "model": model, "seed": seed,
              "settings": _profile(profile)}  # fmt: skip
    started = time.time()
    try:
        record.update(_run_cell(root, profile, dataset, model, seed, device, progress))
        record["status"] = "ok"
    except Exception as error:  # a failing cell must not stop the benchmark
        logger.exception("cell %s / %s failed", dataset, model)
        record.update(status="failed", error=f"{type(error).__name__}: {error}",
                      traceback=traceback.format_exc())  # fmt: skip
    record["seconds"] = time.time() - started
    record["versions"] = package_versions()
    write_json(path, record)
    return record


def _settings_key(settings: dict) -> str:
    """Short digest of a profile's settings: a changed profile never resumes an old fit."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]


def _train(net, train, val, options, stop_at, *, out_dir, seed, device, progress):
    """``fit``; with ``stop_at``, one epoch at a time (resuming) until an epoch's
    training accuracy reaches it: the authors' rule (they stop at 100% training
    accuracy), which keeps the network from saturating. The weights kept are the
    best on validation loss up to that epoch."""
    from ..training import fit

    common = {"out_dir": out_dir, "resume": True, "seed": seed, "device": device}
    if stop_at is None:
        return fit(net, train, val, progress=progress, **common, **options)
    for epochs in range(1, options["epochs"] + 1):
        result = fit(net, train, val, progress=False, **common, **{**options, "epochs": epochs})
        if result.stopped_early or result.history[-1]["train_acc"] >= stop_at:
            break
    return result


def _train_options(train: dict, n_fit: int) -> dict:
    """The profile's epoch budget is for the 900 training samples of the 1000-sample
    sets; larger sets (Mixed: 7200) get the same number of updates, at least 3 epochs."""
    options = dict(train)
    if n_fit > _REFERENCE_FIT:
        scale = _REFERENCE_FIT / n_fit
        options["epochs"] = max(3, round(train["epochs"] * scale))
        if train["patience"] is not None:
            options["patience"] = max(1, round(train["patience"] * scale))
    return options


def _set_forget_bias(net, value: float) -> None:
    """Initial forget-gate bias of every LSTM in ``net`` (0 keeps the model's own init)."""
    from torch import nn

    if not value:
        return
    for module in net.modules():
        if isinstance(module, nn.LSTM):
            hidden = module.hidden_size
            for name, param in module.named_parameters():
                if name.startswith("bias_ih"):
                    param.data[hidden : 2 * hidden] = value  # gate order i, f, g, o


def _standardise(train, *others):
    mean = train.mean(axis=0, keepdims=True)
    std = train.std(axis=0, keepdims=True)
    std[std == 0] = 1.0
    return [((a - mean) / std).astype(np.float32) for a in (train, *others)]


def _run_cell(root, profile, dataset, model, seed, device, progress) -> dict:
    import torch

    from ..models import build_model
    from ..saliency import attribute
    from ..training import evaluate

    settings = _profile(profile)
    (x_fit, y_fit), (x_val, y_val), (x_test, test) = _splits(settings, dataset, seed)

    kind, fixed, _ = MODELS[model]
    options = dict(settings["model"])
    if model not in _ATTENTION_MODELS:
        options = {k: v for k, v in options.items() if k not in ("r", "d_a")}
    options.update(fixed)
    seed_everything(seed)
    net = build_model(kind, x_fit.shape[2], 2, **options)
    _set_forget_bias(net, settings["forget_bias"])
    train_options = _train_options(settings["train"], len(y_fit))
    t0 = time.time()
    result = _train(
        net, (x_fit, y_fit), (x_val, y_val), train_options, settings["stop_at_train_accuracy"],
        out_dir=_fit_dir(root, settings, dataset, model),
        seed=seed, device=device, progress=progress,
    )  # fmt: skip
    train_seconds = time.time() - t0
    test_x, test_y = torch.from_numpy(x_test), torch.from_numpy(test.y)
    scores = evaluate(net, (test_x, test_y))

    t0 = time.time()
    dev = next(net.parameters()).device
    sal = attribute(net, test_x.to(dev), test_y.to(dev), method="gradient", batch_size=100)
    record = {
        "n_train": len(y_fit), "n_val": len(y_val), "n_test": len(test),
        "model_options": options, "train_options": train_options,
        "best_epoch": result.best_epoch, "epochs_run": len(result.history),
        "val_accuracy": result.best_val_accuracy, "accuracy": scores["accuracy"],
        "train_seconds": train_seconds,
    }  # fmt: skip
    record.update(_score(sal.cpu().numpy(), test.mask, root, dataset, model))
    record["saliency_seconds"] = time.time() - t0
    return record


def _splits(settings: dict, dataset: str, seed: int):
    """(x_fit, y_fit), (x_val, y_val), (x_test, test data set): standardised on x_fit."""
    train, test = make_split(dataset, settings["n_train"], settings["n_test"], seed=seed)
    order = np.random.default_rng(seed).permutation(len(train))
    n_val = max(2, int(round(_VAL_SHARE * len(train))))
    val_idx, fit_idx = order[:n_val], order[n_val:]
    x_fit, x_val, x_test = _standardise(train.x[fit_idx], train.x[val_idx], test.x)
    return (x_fit, train.y[fit_idx]), (x_val, train.y[val_idx]), (x_test, test)


def _fit_dir(root: Path, settings: dict, dataset: str, model: str) -> Path:
    return Path(root) / "fits" / f"{dataset}__{model}__{_settings_key(settings)}"


def _metrics(scaled: np.ndarray, mask: np.ndarray) -> dict:
    """Per-sample metrics of min-max scaled maps, as arrays (samples,)."""
    from ..saliency import metrics as M

    return {
        "wjac": M.weighted_jaccard(scaled, mask),
        "euc": M.euclidean_distance(scaled, mask),
        "auroc": M.auroc(scaled, mask),
        "auprc": M.auprc(scaled, mask),
        "precision_at_mask": M.precision_at_mask_size(scaled, mask),
        "mass_last_10pct": M.mass_in_last(scaled, 0.1),
    }


def _score(saliency: np.ndarray, mask: np.ndarray, root: Path, dataset: str, model: str) -> dict:
    """Per-sample metrics averaged over the test set; saves mean map and curves."""
    from ..saliency import metrics as M

    scaled = M.minmax_scale(saliency)
    curve = M.saliency_over_time(scaled)
    binned = M.saliency_over_time(scaled, n_bins=_N_BINS)
    scores = _metrics(scaled, mask)
    with atomic_path(_cell_path(root, dataset, model).with_suffix(".npz")) as tmp:
        np.savez_compressed(
            tmp, mean_map=scaled.mean(axis=0).astype(np.float32),
            mean_curve=curve.mean(axis=0), mean_mask=mask.mean(axis=0).astype(np.float32),
        )  # fmt: skip
    out = {name: float(np.nanmean(values)) for name, values in scores.items()}
    out["wjac_std"] = float(np.std(scores["wjac"]))
    out["time_bins"] = binned.mean(axis=0).tolist()
    return out


#: Settings of the attribution methods in :func:`compare_methods` (cheap but fair).
COMPARE_OPTIONS = {
    "gradient": {},
    "input_x_gradient": {},
    "integrated_gradients": {"n_steps": 32, "internal_batch_size": 512},
    "smoothgrad": {"nt_samples": 16},
    "gradient_shap": {"n_samples": 16},
    "occlusion": {"window": (10, 10)},
    "tsr": {},
}


def compare_methods(
    out_dir, profile, *, datasets, models, methods, n_samples=50, n_tsr=5, seed=0, device=None
):
    """Score several attribution methods on the models a benchmark run trained.

    Uses the weights of finished cells (``fits/.../best``) and the first ``n_samples``
    test samples (``n_tsr`` for ``tsr``, which costs ~0.45 T N gradients per sample).
    Each (data set, model, method) is written to ``methods/<...>.json`` and skipped
    when present. Returns a DataFrame of the requested rows; ``methods.csv`` and
    ``methods.md`` list every method scored so far in this profile.
    """
    import json

    import pandas as pd
    import torch

    from ..saliency import attribute
    from ..saliency import metrics as M
    from ..training import load_model

    settings = _profile(profile)
    root = Path(out_dir) / profile
    rows = []
    for dataset in datasets:
        _, _, (x_test, test) = _splits(settings, dataset, seed)
        for model in models:
            best = _fit_dir(root, settings, dataset, model) / "best"
            for method in methods:
                check_option("methods", method, COMPARE_OPTIONS)
                path = root / "methods" / f"{dataset}__{model}__{method}.json"
                if path.exists():
                    rows.append(json.loads(path.read_text()))
                    continue
                record = {"dataset": dataset, "model": model, "method": method}
                try:
                    net = load_model(best, map_location=device or "cpu")
                    n = n_tsr if method == "tsr" else n_samples
                    x = torch.from_numpy(x_test[:n]).to(next(net.parameters()).device)
                    y = torch.from_numpy(test.y[:n]).to(x.device)
                    t0 = time.time()
                    options = {"seed": seed, **COMPARE_OPTIONS[method]}
                    sal = attribute(net, x, y, method=method, batch_size=64, **options)
                    scaled = M.minmax_scale(sal.cpu().numpy())
                    scores = _metrics(scaled, test.mask[:n])
                    record.update({k: float(np.nanmean(v)) for k, v in scores.items()})
                    record.update(status="ok", n_samples=n, seconds=time.time() - t0)
                except Exception as error:  # recorded; the others go on
                    logger.exception("method %s on %s / %s failed", method, dataset, model)
                    record.update(status="failed", error=f"{type(error).__name__}: {error}")
                write_json(path, record)
                rows.append(record)
    # the summary files hold every method scored so far, not only this call's
    done = [json.loads(p.read_text()) for p in sorted((root / "methods").glob("*.json"))]
    everything = pd.DataFrame(done)
    with atomic_path(root / "methods.csv") as tmp:
        everything.to_csv(tmp, index=False)
    _write_text(root / "methods.md", format_methods_table(everything))
    return pd.DataFrame(rows)


def format_methods_table(table) -> str:
    """Markdown: one row per (data set, model, method) with WJac, Euc, AUROC, AUPRC,
    precision at the mask size and the saliency share in the last 10% of steps."""
    keys = ("wjac", "euc", "auroc", "auprc", "precision_at_mask", "mass_last_10pct")
    lines = [
        "| data set | model | method | WJac | Euc | AUROC | AUPRC | prec@mask | last 10% | n |",
        "|---" * 10 + "|",
    ]
    for _, r in table.iterrows():
        if r.get("status") != "ok":
            values = [str(r.get("status"))] + [""] * (len(keys) - 1) + [""]
        else:
            values = [f"{r[k]:.3f}" for k in keys] + [str(int(r["n_samples"]))]
        name = MODELS[r["model"]][2]
        lines.append(
            f"| {DISPLAY_NAMES[r['dataset']]} | {name} | {r['method']} | "
            + " | ".join(values)
            + " |"
        )
    return "\n".join(lines) + "\n"


def write_summary(root, datasets, models):
    """Collect the cell records into results.csv / .json, table.md and the figures."""
    import json

    import pandas as pd

    root = Path(root)
    rows = []
    for dataset in datasets:
        for model in models:
            path = _cell_path(root, dataset, model)
            record = {"dataset": dataset, "model": model, "status": "missing"}
            if path.exists():
                record = json.loads(path.read_text())
            rows.append(record)
    write_json(root / "results.json", rows)
    table = pd.DataFrame(rows)
    flat = table.drop(columns=[c for c in ("traceback", "versions") if c in table], errors="ignore")
    with atomic_path(root / "results.csv") as tmp:
        flat.to_csv(tmp, index=False)
    _write_text(root / "table.md", format_table(table))
    try:
        plot_benchmark(root, datasets, models)
    except Exception:  # a figure must not lose the numbers
        logger.exception("plotting failed")
    return table


def _fmt(values) -> str:
    wjac, euc, acc = values
    return f"{wjac:.3f}/{euc:.3f}/{acc:.1f}"


#: The line above :func:`format_table`'s table: what the three numbers of a cell are.
TABLE_LEGEND = (
    "Each cell: WJac / Euc / accuracy (%): weighted Jaccard of saliency and box (higher is "
    "better) / relative Euclidean distance (lower is better) / test accuracy."
)


def format_table(results) -> str:
    """Markdown table in the layout of the paper's Table 1: WJac/Euc/accuracy % per cell.

    A legend line (:data:`TABLE_LEGEND`) comes first. Under each model, the paper's
    numbers (where the paper has them) in italics.
    """
    present = list(dict.fromkeys(results["dataset"]))
    datasets = [d for d in _TABLE1_SETS if d in present] + [
        d for d in present if d not in _TABLE1_SETS
    ]
    header = "| model | " + " | ".join(DISPLAY_NAMES[d] for d in datasets) + " |"
    lines = [header, "|---" * (len(datasets) + 1) + "|"]
    has_paper = False
    for model in dict.fromkeys(results["model"]):
        cells = []
        for dataset in datasets:
            row = results[(results["model"] == model) & (results["dataset"] == dataset)]
            if row.empty or row.iloc[0].get("status") != "ok":
                status = "missing" if row.empty else row.iloc[0].get("status")
                cells.append(str(status))
            else:
                r = row.iloc[0]
                cells.append(_fmt((r["wjac"], r["euc"], 100 * r["accuracy"])))
        lines.append(f"| {MODELS[model][2]} | " + " | ".join(cells) + " |")
        paper = PAPER_TABLE1.get("ica" if model.startswith("ica") else model)
        if paper:
            has_paper = True
            ref = [f"*{_fmt(paper[d])}*" if d in paper else "" for d in datasets]
            lines.append("| *paper* | " + " | ".join(ref) + " |")
    legend = TABLE_LEGEND + (" *paper*: Ismail et al. 2019, Table 1." if has_paper else "")
    return legend + "\n\n" + "\n".join(lines) + "\n"


def plot_benchmark(root, datasets, models) -> list[Path]:
    """Mean saliency map per model per data set, and saliency-over-time curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(root)
    loaded = {}
    for d in datasets:
        for m in models:
            path = _cell_path(root, d, m).with_suffix(".npz")
            if path.exists():
                loaded[d, m] = dict(np.load(path))
    if not loaded:
        return []
    fig = _saliency_maps_figure(loaded, datasets, models)
    maps = root / "saliency_maps.png"
    with atomic_path(maps) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)

    n_cols = min(4, len(datasets))
    n_rows = math.ceil(len(datasets) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.2 * n_cols, 2.4 * n_rows), squeeze=False)
    for k, d in enumerate(datasets):
        ax = axes.flat[k]
        for m in models:
            if (d, m) in loaded:
                # log scale: a flat curve (0.01 per step) and a vanishing one both show
                ax.semilogy(np.maximum(loaded[d, m]["mean_curve"], 1e-6), label=MODELS[m][2], lw=1)
        ax.axhline(1 / len(loaded[next(iter(loaded))]["mean_curve"]), color="0.6", lw=0.5, ls=":")
        ax.set_title(DISPLAY_NAMES[d], fontsize=8)
        ax.set_xlabel("time step", fontsize=7)
        ax.set_ylabel("share of saliency", fontsize=7)
    for ax in list(axes.flat)[len(datasets) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=5)
    fig.tight_layout()
    curves = root / "saliency_time.png"
    with atomic_path(curves) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return [maps, curves]


def _saliency_maps_figure(loaded: dict, datasets, models):
    """Grid of mean maps: a row per data set, the box mask then one column per model.

    Each image is divided by its own maximum (saliency scales differ by orders of
    magnitude between models), so one colour bar (0 to 1) reads for all of them.
    ``loaded[dataset, model]`` holds ``mean_mask`` and ``mean_map``: (time, features).
    """
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(datasets), len(models) + 1
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(2.2 * n_cols + 0.8, 2.0 * n_rows + 0.4),
        squeeze=False,
        layout="constrained",
    )
    shown = None
    for i, d in enumerate(datasets):
        for j, m in enumerate([None, *models]):
            ax = axes[i, j]
            data = next((v for (dd, _), v in loaded.items() if dd == d), None)
            if m is None:
                image = None if data is None else data["mean_mask"]
                title = "box (mean mask)"
            else:
                image = loaded.get((d, m), {}).get("mean_map")
                title = MODELS[m][2].replace("LSTM + ", "").replace("input-cell attention", "ICA")
            ax.set_xticks([])
            ax.set_yticks([])
            if image is not None:
                image = np.asarray(image, dtype=float)
                peak = image.max()
                # features on the y axis, time on the x axis, as in the paper's figures
                shown = ax.imshow(
                    image.T / peak if peak > 0 else image.T,
                    aspect="auto",
                    cmap="gray",
                    vmin=0,
                    vmax=1,
                )
                n_steps, n_features = image.shape
                ax.set_xticks([0, n_steps - 1])
                ax.set_yticks([0, n_features - 1])
                ax.tick_params(labelsize=6, length=2, labelbottom=i == n_rows - 1, labelleft=j == 0)
            if i == 0:
                ax.set_title(title, fontsize=7)
            if j == 0:
                ax.set_ylabel(f"{DISPLAY_NAMES[d]}\nfeature", fontsize=7)
            if i == n_rows - 1:
                ax.set_xlabel("time step", fontsize=7)
    if shown is not None:
        bar = fig.colorbar(shown, ax=axes, shrink=min(1.0, 3 / n_rows), aspect=30)
        bar.set_label("mean saliency (box: mean mask) / its maximum", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    return fig
