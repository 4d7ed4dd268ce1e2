"""Held-out scores of run classifiers: per window, per run, and pooled over folds.

A run is predicted from all its windows (the mean log-probability over them), so a model
that reads windows and a reference that reads one run-aligned window are both scored per
run. Pooled scores carry percentile-bootstrap intervals over *subjects* (runs of one subject
are not independent).
"""

from __future__ import annotations

import numpy as np

__all__ = ["pooled_scores", "run_level_scores", "scores_from_predictions"]


def run_level_scores(model, windows, *, batch_size: int = 256, device=None) -> dict:
    """Scores of ``model`` on ``windows`` (a SampleSet of windows with their ``runs``).

    Returns JSON-ready numbers: ``window_accuracy``, ``window_balanced_accuracy``,
    ``n_windows``, the run-level scores of :func:`scores_from_predictions` and ``runs``
    (run, subject, label, predicted class, mean log-probabilities) for pooling.
    """
    import torch

    from .evaluation import predict_logits

    logits = predict_logits(model, windows.x, windows.lengths, batch_size=batch_size, device=device)
    log_p = torch.log_softmax(logits.double(), dim=1).cpu().numpy()
    window_pred = log_p.argmax(axis=1)
    n_classes = len(windows.classes)
    runs = []
    # a "run" is a run's windows of one label (condition labels: several per run)
    for run, label in dict.fromkeys(zip(windows.runs.tolist(), windows.y.tolist(), strict=True)):
        index = np.flatnonzero((windows.runs == run) & (windows.y == label))
        mean = log_p[index].mean(axis=0)
        runs.append({"run": run, "subject": str(windows.subjects[index[0]]),
                     "label": int(label), "pred": int(mean.argmax()),
                     "log_prob": np.round(mean, 6).tolist()})
    window_scores = scores_from_predictions(windows.y, window_pred, n_classes)
    return {
        "window_accuracy": window_scores["accuracy"],
        "window_balanced_accuracy": window_scores["balanced_accuracy"],
        "n_windows": len(windows),
        **_run_scores(runs, n_classes),
        "runs": runs,
    }


def scores_from_predictions(y, pred, n_classes: int) -> dict:
    """Accuracy, balanced accuracy (mean recall over classes present), per-class precision /
    recall / F1 and the confusion matrix (rows: true class)."""
    from .evaluation import _per_class_scores

    y, pred = np.asarray(y, dtype=int), np.asarray(pred, dtype=int)
    confusion = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(confusion, (y, pred), 1)
    precision, recall, f1 = _per_class_scores(confusion)
    present = confusion.sum(axis=1) > 0
    return {
        "accuracy": float(np.mean(y == pred)) if y.size else float("nan"),
        "balanced_accuracy": float(np.mean(np.asarray(recall)[present])) if present.any() else float("nan"),
        "precision": np.asarray(precision, dtype=float).tolist(),
        "recall": np.asarray(recall, dtype=float).tolist(),
        "f1": np.asarray(f1, dtype=float).tolist(),
        "confusion_matrix": confusion.tolist(),
        "n": int(y.size),
    }


def _run_scores(runs: list[dict], n_classes: int) -> dict:
    scores = scores_from_predictions([r["label"] for r in runs], [r["pred"] for r in runs], n_classes)
    return {"run_accuracy": scores["accuracy"], "run_balanced_accuracy": scores["balanced_accuracy"],
            "n_runs": scores["n"], **{k: scores[k] for k in ("precision", "recall", "f1", "confusion_matrix")}}


def pooled_scores(fold_scores: list[dict], classes: list[str], *, n_boot: int = 2000,
                  seed: int = 0, level: float = 0.95) -> dict:
    """Pool :func:`run_level_scores` of the folds (each subject tested once).

    ``accuracy`` / ``balanced_accuracy`` are the run-level figures (what the report shows);
    ``run_accuracy_ci`` and ``run_balanced_accuracy_ci`` resample subjects with replacement.
    ``fold_run_accuracy`` lists each fold's own figure.
    """
    runs = [r for fold in fold_scores for r in fold["runs"]]
    n_classes = len(classes)
    pooled = _run_scores(runs, n_classes)
    n_windows = sum(f["n_windows"] for f in fold_scores)
    window_acc = sum(f["window_accuracy"] * f["n_windows"] for f in fold_scores) / n_windows
    low, high = _bootstrap(runs, n_classes, n_boot, seed, level)
    return {
        "accuracy": pooled["run_accuracy"], "balanced_accuracy": pooled["run_balanced_accuracy"],
        **pooled,
        "run_accuracy_ci": low[0:1] + high[0:1], "run_balanced_accuracy_ci": low[1:2] + high[1:2],
        "window_accuracy": float(window_acc), "n_windows": int(n_windows),
        "n_subjects": len({r["subject"] for r in runs}), "chance": 1.0 / n_classes,
        "fold_run_accuracy": [f["run_accuracy"] for f in fold_scores],
        "ci_level": level, "ci_method": "percentile bootstrap over subjects",
        "runs": runs,
    }


def _bootstrap(runs: list[dict], n_classes: int, n_boot: int, seed: int, level: float):
    """(low, high) lists of [accuracy, balanced accuracy] over subject resamples."""
    subjects = sorted({r["subject"] for r in runs})
    by_subject = {s: [r for r in runs if r["subject"] == s] for s in subjects}
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        chosen = rng.choice(len(subjects), size=len(subjects), replace=True)
        sample = [r for i in chosen for r in by_subject[subjects[i]]]
        s = _run_scores(sample, n_classes)
        stats.append((s["run_accuracy"], s["run_balanced_accuracy"]))
    stats = np.asarray(stats)
    alpha = (1 - level) / 2
    return (np.quantile(stats, alpha, axis=0).tolist(), np.quantile(stats, 1 - alpha, axis=0).tolist())
