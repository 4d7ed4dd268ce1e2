"""How much a saliency map says about the task: figures of merit against the design and
the ground truth, computed per model on held-out samples.

Following the calibration study (EVALUATION.md), every share comes with its chance level,
the task-ON share with a mismatched baseline (the same maps scored against another class's
ON frames), and a model's maps count as evidence only above an accuracy gate.
"""

from __future__ import annotations

import numpy as np

__all__ = ["accuracy_gate", "class_means", "planted_masks", "planted_region_metrics", "saliency_metrics"]


def accuracy_gate(scores: dict, classes: list[str]) -> dict:
    """Saliency of a model near chance is not evidence: flag it (EVALUATION.md)."""
    chance = 1.0 / len(classes)
    threshold = chance + 0.5 * (1 - chance)
    return {"balanced_accuracy": scores["balanced_accuracy"], "chance": chance,
            "reliable": scores["balanced_accuracy"] >= threshold, "reliability_threshold": threshold}


def saliency_metrics(saliency: np.ndarray, test, top_k: float, ground_truth: dict | None,
                     *, seed: int = 0, class_maps: np.ndarray | None = None) -> dict:
    """The report's saliency figures of merit for one model on the test samples.

    saliency: (n, time, region) non-negative. Returns JSON-ready numbers: the saliency-over-
    time curve, the mass in the last 10% of steps, the task-ON share of the top-k cells with
    its mismatched baseline (the same maps scored against other classes' ON frames) and
    chance level, and, with a ground truth, the shares in planted regions. ``class_maps``:
    :func:`class_means` of ``saliency`` if the caller has them already.
    """
    from . import metrics as m

    lengths = test.lengths
    curve = m.saliency_over_time(saliency, lengths=lengths)
    on_share = m.top_k_share_in_time(saliency, test.task_on, k=top_k, lengths=lengths)
    mismatched = m.top_k_share_in_time(saliency, _mismatched_on(test, seed), k=top_k, lengths=lengths)
    valid = np.arange(test.task_on.shape[1])[None, :] < lengths[:, None]
    result = {
        "n_samples": len(test), "top_k": top_k,
        "curve_mean": curve.mean(axis=0).tolist(), "curve_std": curve.std(axis=0).tolist(),
        "mass_last_10pct": _summary(m.mass_in_last(saliency, 0.1, lengths=lengths)),
        "on_share": _summary(on_share), "on_share_mismatched": _summary(mismatched),
        "on_share_chance": float(test.task_on[valid].mean()),
        "on_share_per_class": _per_class(on_share, test),
    }
    if class_maps is None:
        class_maps = class_means(saliency, test)
    result.update(planted_region_metrics(class_maps, test.classes,
                                          test.region_names, ground_truth))
    planted = planted_masks(ground_truth, test.classes, test.region_names)
    if planted is not None:
        share = m.top_k_share_in_features(saliency, planted[test.y], k=top_k, lengths=lengths)
        result["planted_share"] = _summary(share)
        result["planted_share_chance"] = float(planted[test.y].mean())
    return result


def _summary(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "std": float(values.std()), "n": int(values.size)}


def _per_class(values: np.ndarray, test) -> dict:
    return {c: float(values[test.y == i].mean()) for i, c in enumerate(test.classes) if np.any(test.y == i)}


def _mismatched_on(test, seed: int) -> np.ndarray:
    """Each sample's ON mask swapped for that of a random sample of another class."""
    rng = np.random.default_rng(seed)
    swapped = np.zeros_like(test.task_on)
    for i, label in enumerate(test.y):
        others = np.flatnonzero(test.y != label)
        swapped[i] = test.task_on[rng.choice(others)] if len(others) else test.task_on[i]
    return swapped


def class_means(saliency: np.ndarray, test) -> np.ndarray:
    """(class, time, region): mean of per-sample min-max scaled saliency over each class."""
    from .metrics import minmax_scale

    scaled = minmax_scale(saliency)
    return np.stack([
        scaled[test.y == c].mean(axis=0) if np.any(test.y == c) else np.zeros(scaled.shape[1:])
        for c in range(len(test.classes))
    ]).astype(np.float32)


def planted_masks(ground_truth: dict | None, classes: list[str], regions: list[str]):
    """(class, region) bool: the planted regions of each class's task, or None."""
    if not ground_truth:
        return None
    tasks = ground_truth.get("tasks", {})
    if not all(c in tasks for c in classes):
        return None
    index = {name: i for i, name in enumerate(regions)}
    masks = np.zeros((len(classes), len(regions)), dtype=bool)
    for c, task in enumerate(classes):
        for name in tasks[task].get("planted_names", []):
            if name in index:
                masks[c, index[name]] = True
    return masks if masks.any() else None


def planted_region_metrics(class_maps: np.ndarray, classes, regions, ground_truth) -> dict:
    """Region-level precision at the number of planted regions, per class and mean."""
    from .metrics import region_precision_at_k

    planted = planted_masks(ground_truth, classes, regions)
    if planted is None:
        return {}
    per_class = {}
    for c, task in enumerate(classes):
        k = int(planted[c].sum())
        if k:  # an activation can miss every region of a sparse atlas: nothing to score then
            per_class[task] = float(region_precision_at_k(class_maps[c:c + 1], planted[c], k)[0])
    scored = [c for c, task in enumerate(classes) if task in per_class]
    return {"region_precision": {"mean": float(np.mean(list(per_class.values()))), **per_class},
            "region_precision_chance": float(planted[scored].sum(axis=1).mean() / len(regions))}
