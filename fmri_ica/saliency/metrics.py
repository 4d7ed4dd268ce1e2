"""Saliency metrics: agreement with a ground-truth mask, where in time the mass lies,
and whether the salient cells matter to the model (removal test).

Every function takes saliency maps of shape (batch, time, features) (NumPy arrays or
torch tensors) and returns one value per sample (shape (batch,)) unless stated
otherwise; average them yourself. Maps are compared after :func:`minmax_scale`, as
in Ismail et al. (NeurIPS 2019): per sample, |saliency| scaled to [0, 1] over all
time x feature cells.
"""

from __future__ import annotations

import math

import numpy as np

from ..exceptions import InputDataError, InvalidParameterError

__all__ = [
    "minmax_scale",
    "weighted_jaccard",
    "euclidean_distance",
    "auroc",
    "auprc",
    "precision_at_mask_size",
    "saliency_over_time",
    "mass_in_last",
    "top_k_share_in_time",
    "top_k_share_in_features",
    "region_precision_at_k",
    "removal_test",
]


def _array(values, name: str) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 3:
        raise InputDataError(
            f"{name!r} must have shape (batch, time, features); got {values.shape}."
        )
    return values


def _mask(mask, shape: tuple, name: str = "mask") -> np.ndarray:
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask, dtype=np.float64)
    try:
        return np.broadcast_to(mask, shape)
    except ValueError:
        raise InputDataError(
            f"{name!r} of shape {mask.shape} does not match saliency of shape {shape}; "
            "use (batch, time, features) or (time, features)."
        ) from None


def minmax_scale(saliency, absolute: bool = True) -> np.ndarray:
    """Per-sample min-max scaling to [0, 1] over all time x feature cells.

    Parameters
    ----------
    saliency : array, shape (batch, time, features)
    absolute : bool, default=True
        Take |saliency| first (the paper's convention).

    Returns
    -------
    ndarray (batch, time, features), float64
        A constant map becomes all zeros.
    """
    sal = _array(saliency, "saliency")
    if absolute:
        sal = np.abs(sal)
    low = sal.min(axis=(1, 2), keepdims=True)
    span = sal.max(axis=(1, 2), keepdims=True) - low
    return np.divide(sal - low, span, out=np.zeros_like(sal), where=span > 0)


def weighted_jaccard(saliency, mask) -> np.ndarray:
    """Weighted Jaccard sum(min(ref, sal)) / sum(max(ref, sal)); higher is better.

    ``saliency`` should already be scaled to [0, 1] (:func:`minmax_scale`).
    Returns (batch,).
    """
    sal = _array(saliency, "saliency")
    ref = _mask(mask, sal.shape)
    top = np.minimum(ref, sal).sum(axis=(1, 2))
    bottom = np.maximum(ref, sal).sum(axis=(1, 2))
    return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)


def euclidean_distance(saliency, mask) -> np.ndarray:
    """Relative Euclidean distance ||ref - sal||_2 / ||ref||_2; lower is better. (batch,)."""
    sal = _array(saliency, "saliency")
    ref = _mask(mask, sal.shape)
    norm = np.sqrt((ref**2).sum(axis=(1, 2)))
    if (norm == 0).any():
        raise InputDataError(
            "'mask' is empty for some sample: the Euclidean distance is undefined."
        )
    return np.sqrt(((ref - sal) ** 2).sum(axis=(1, 2))) / norm


def _per_sample_curve(saliency, mask, score) -> np.ndarray:
    sal = _array(saliency, "saliency")
    ref = _mask(mask, sal.shape) > 0
    values = np.full(sal.shape[0], np.nan)
    for i in range(sal.shape[0]):
        truth = ref[i].ravel()
        if truth.any() and not truth.all():
            values[i] = score(truth, sal[i].ravel())
    return values


def auroc(saliency, mask) -> np.ndarray:
    """Area under the ROC curve of saliency as a detector of the mask cells. (batch,).

    NaN for a sample whose mask is empty or full.
    """
    from sklearn.metrics import roc_auc_score

    return _per_sample_curve(saliency, mask, roc_auc_score)


def auprc(saliency, mask) -> np.ndarray:
    """Area under the precision-recall curve (average precision). (batch,); chance = mask share."""
    from sklearn.metrics import average_precision_score

    return _per_sample_curve(saliency, mask, average_precision_score)


def _top_cells(sal: np.ndarray, k: int) -> np.ndarray:
    """Boolean (batch, cells) marking each sample's k largest cells (stable on ties)."""
    flat = sal.reshape(sal.shape[0], -1)
    order = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    chosen = np.zeros(flat.shape, dtype=bool)
    np.put_along_axis(chosen, order, True, axis=1)
    return chosen


def precision_at_mask_size(saliency, mask) -> np.ndarray:
    """Share of the top-|mask| salient cells that lie in the mask (= recall there). (batch,).

    Free of the ceiling a fixed top-k% has when the mask is smaller than k%.
    """
    sal = _array(saliency, "saliency")
    ref = _mask(mask, sal.shape).reshape(sal.shape[0], -1) > 0
    flat = sal.reshape(sal.shape[0], -1)
    values = np.full(sal.shape[0], np.nan)
    for i in range(sal.shape[0]):
        k = int(ref[i].sum())
        if k:
            top = _top_cells(flat[i : i + 1], k)[0]
            values[i] = (top & ref[i]).sum() / k
    return values


def _valid_steps(shape: tuple, lengths) -> np.ndarray:
    n, n_time = shape[:2]
    if lengths is None:
        return np.ones((n, n_time), dtype=bool)
    lengths = np.asarray(lengths.cpu() if hasattr(lengths, "cpu") else lengths).astype(int)
    if lengths.shape != (n,):
        raise InvalidParameterError(f"'lengths' must have shape ({n},); got {lengths.shape}.")
    return np.arange(n_time)[None, :] < lengths[:, None]


def saliency_over_time(saliency, n_bins: int | None = None, lengths=None) -> np.ndarray:
    """Share of each sample's total |saliency| per time step (the "vanishing" curve).

    Parameters
    ----------
    saliency : array (batch, time, features)
    n_bins : int, optional
        Pool the valid steps of each sample into this many equal bins (so runs of
        different lengths are comparable); default: one value per time step.
    lengths : array (batch,), optional
        Valid lengths; padded steps are excluded.

    Returns
    -------
    ndarray (batch, time) or (batch, n_bins)
        Rows sum to 1 (0 for an all-zero map).
    """
    sal = np.abs(_array(saliency, "saliency")).sum(axis=2)
    sal = sal * _valid_steps(sal.shape, lengths)
    total = sal.sum(axis=1, keepdims=True)
    shares = np.divide(sal, total, out=np.zeros_like(sal), where=total > 0)
    if n_bins is None:
        return shares
    if n_bins < 1:
        raise InvalidParameterError(f"Invalid value for 'n_bins': {n_bins!r}. Use an int >= 1.")
    n_valid = _valid_steps(sal.shape, lengths).sum(axis=1)
    binned = np.zeros((sal.shape[0], n_bins))
    for i, length in enumerate(n_valid):
        edges = np.floor(np.linspace(0, length, n_bins + 1)).astype(int)
        cumulative = np.concatenate([[0.0], np.cumsum(shares[i, :length])])
        binned[i] = cumulative[edges[1:]] - cumulative[edges[:-1]]
    return binned


def mass_in_last(saliency, fraction: float = 0.1, lengths=None) -> np.ndarray:
    """Share of |saliency| in the last ``fraction`` of each sample's valid steps. (batch,).

    A flat map gives ``fraction``; an LSTM's vanishing saliency gives close to 1.
    """
    if not 0 < fraction <= 1:
        raise InvalidParameterError(f"Invalid value for 'fraction': {fraction!r}. Use (0, 1].")
    shares = saliency_over_time(saliency, lengths=lengths)
    n_valid = _valid_steps(shares.shape, lengths).sum(axis=1)
    values = np.empty(shares.shape[0])
    for i, length in enumerate(n_valid):
        start = length - max(1, int(round(fraction * length)))
        values[i] = shares[i, start:length].sum()
    return values


def _top_k_mask(saliency, k: float, lengths) -> np.ndarray:
    """(batch, time, features) bool: each sample's top ``k`` share of valid cells."""
    if not 0 < k <= 1:
        raise InvalidParameterError(f"Invalid value for 'k': {k!r}. Use a share in (0, 1].")
    sal = np.abs(_array(saliency, "saliency"))
    valid = np.broadcast_to(_valid_steps(sal.shape, lengths)[:, :, None], sal.shape)
    sal = np.where(valid, sal, -np.inf)
    chosen = np.zeros(sal.shape, dtype=bool).reshape(sal.shape[0], -1)
    for i in range(sal.shape[0]):
        n_top = max(1, math.ceil(k * valid[i].sum()))
        chosen[i] = _top_cells(sal[i : i + 1], n_top)[0]
    return chosen.reshape(sal.shape)


def top_k_share_in_time(saliency, time_mask, k: float = 0.1, lengths=None) -> np.ndarray:
    """Share of the top-k (fraction of cells) salient cells that fall in given time steps.

    The task-ON share of the fMRI experiment: ``time_mask`` marks ON frames.

    Parameters
    ----------
    saliency : array (batch, time, features)
    time_mask : array (batch, time) or (time,), bool
    k : float in (0, 1], default=0.1
    lengths : array (batch,), optional

    Returns
    -------
    ndarray (batch,)
    """
    top = _top_k_mask(saliency, k, lengths)
    where = np.asarray(time_mask.cpu() if hasattr(time_mask, "cpu") else time_mask, dtype=bool)
    where = _mask(where, top.shape[:2], "time_mask")[:, :, None] > 0
    return (top & where).sum(axis=(1, 2)) / top.sum(axis=(1, 2))


def top_k_share_in_features(saliency, features, k: float = 0.1, lengths=None) -> np.ndarray:
    """Share of the top-k salient cells that fall in the given features (planted regions).

    ``features``: indices, or a bool array (features,) or (batch, features). (batch,).
    """
    top = _top_k_mask(saliency, k, lengths)
    where = _feature_mask(features, top.shape)[:, None, :]
    return (top & where).sum(axis=(1, 2)) / top.sum(axis=(1, 2))


def _feature_mask(features, shape: tuple) -> np.ndarray:
    features = np.asarray(features.cpu() if hasattr(features, "cpu") else features)
    if features.dtype != bool:
        chosen = np.zeros(shape[2], dtype=bool)
        chosen[features.astype(int)] = True
        features = chosen
    return _mask(features, (shape[0], shape[2]), "features") > 0


def region_precision_at_k(saliency, features, k: int, lengths=None) -> np.ndarray:
    """Region-level precision@k: of the k features with the largest total |saliency|
    over time, the share that are relevant. (batch,).

    For maps aggregated over a class, pass them as a batch of one.
    """
    sal = np.abs(_array(saliency, "saliency"))
    if not 1 <= k <= sal.shape[2]:
        raise InvalidParameterError(
            f"Invalid value for 'k': {k!r}. Use 1..{sal.shape[2]} features."
        )
    sal = sal * _valid_steps(sal.shape, lengths)[:, :, None]
    totals = sal.sum(axis=1)
    relevant = _feature_mask(features, sal.shape)
    top = _top_cells(totals[:, :, None], k).reshape(totals.shape)
    return (top & relevant).sum(axis=1) / k


def removal_test(
    model,
    inputs,
    labels,
    saliency,
    fractions=(0.1, 0.2, 0.3, 0.4, 0.5),
    *,
    lengths=None,
    baseline: float = 0.0,
    n_random: int = 3,
    batch_size: int = 256,
    seed: int = 0,
) -> list[dict]:
    """Accuracy drop when each sample's top-k salient cells are set to ``baseline``,
    next to the drop for as many randomly chosen cells.

    Parameters
    ----------
    model : nn.Module
        ``model(x, lengths=None) -> logits``; evaluated in eval mode, no gradients.
    inputs : Tensor (batch, time, features)
    labels : Tensor (batch,)
    saliency : array (batch, time, features)
    fractions : sequence of float in (0, 1]
        Shares of the valid cells to remove.
    lengths : Tensor (batch,), optional
    baseline : float, default=0.0
        Replacement value (0 = the mean of z-scored data).
    n_random : int, default=3
        Random removals averaged per fraction.
    batch_size : int, default=256
    seed : int, default=0

    Returns
    -------
    list of dict
        One row per fraction: ``fraction``, ``accuracy`` (intact), ``accuracy_top``,
        ``accuracy_random``, ``drop_top``, ``drop_random``.
    """
    import torch

    x = inputs.detach()
    if tuple(saliency.shape) != tuple(x.shape):
        raise InputDataError(
            f"'saliency' shape {tuple(saliency.shape)} differs from 'inputs' shape {tuple(x.shape)}."
        )
    y = torch.as_tensor(labels).to(x.device)
    rng = np.random.default_rng(seed)

    def accuracy(drop: np.ndarray | None) -> float:
        data = x
        if drop is not None:
            data = x.masked_fill(torch.as_tensor(drop, device=x.device), baseline)
        return _accuracy(model, data, y, lengths, batch_size)

    rows, intact = [], accuracy(None)
    for fraction in fractions:
        top = _top_k_mask(saliency, fraction, lengths)
        random_acc = []
        for _ in range(n_random):
            random_acc.append(accuracy(_top_k_mask(rng.random(x.shape), fraction, lengths)))
        acc_top, acc_random = accuracy(top), float(np.mean(random_acc))
        rows.append(
            {
                "fraction": float(fraction),
                "accuracy": intact,
                "accuracy_top": acc_top,
                "accuracy_random": acc_random,
                "drop_top": intact - acc_top,
                "drop_random": intact - acc_random,
            }
        )
    return rows


def _accuracy(model, x, y, lengths, batch_size: int) -> float:
    import torch

    was_training = model.training
    model.eval()
    correct = 0
    try:
        with torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                part = slice(start, start + batch_size)
                args = () if lengths is None else (lengths[part],)
                logits = model(x[part], *args)
                correct += int((logits.argmax(dim=-1) == y[part]).sum())
    finally:
        model.train(was_training)
    return correct / x.shape[0]
