"""Inference and classification metrics for trained sequence classifiers."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from ..exceptions import InputDataError, InvalidParameterError
from .data import SequenceDataset, as_dataset, iter_batches, sliding_windows

__all__ = ["predict_logits", "evaluate", "evaluate_runs"]


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-free model)."""
    param = next(model.parameters(), None)
    return torch.device("cpu") if param is None else param.device


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Eval mode and no autograd inside; the model's previous mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidParameterError(
            f"Invalid value for 'batch_size': {batch_size!r}. Expected an integer >= 1."
        )
    return batch_size


def forward_all(model, dataset, batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (n, n_classes) and labels (n,), on the CPU, in data set order, in eval mode."""
    logits, labels = [], []
    with eval_mode(model):
        for x, y, lengths in iter_batches(dataset, range(len(dataset)), batch_size):
            # lengths stay on the CPU, where pack_padded_sequence wants them
            logits.append(model(x.to(device), lengths=lengths).float().cpu())
            labels.append(y)
    return torch.cat(logits), torch.cat(labels)


def loss_and_accuracy(logits, labels, class_weights=None) -> tuple[float, float]:
    """Cross-entropy as ``nn.CrossEntropyLoss(weight=class_weights)`` (mean), and accuracy."""
    check_labels(labels, logits.shape[1])
    weight = None if class_weights is None else class_weights.to(logits)
    loss = F.cross_entropy(logits, labels, weight=weight)
    accuracy = (logits.argmax(1) == labels).double().mean()
    return float(loss), float(accuracy)


def check_labels(labels: torch.Tensor, n_classes: int) -> None:
    if labels.numel() and int(labels.max()) >= n_classes:
        raise InputDataError(
            f"Labels go up to {int(labels.max())} but the model outputs {n_classes} classes; "
            "build the model with n_classes > max label, or relabel to 0 .. n_classes-1."
        )


def predict_logits(model, x, lengths=None, *, batch_size=256, device=None) -> torch.Tensor:
    """Logits of ``model`` on ``x``, in eval mode, without gradients.

    Parameters
    ----------
    model : torch.nn.Module
        Called as ``model(x, lengths=lengths)``.
    x : array-like, shape (n, time, features)
    lengths : array-like of int, shape (n,), optional
    batch_size : int, default=256
    device : str or torch.device, optional
        Where to run; None: wherever the model's parameters are. A different device
        moves the model there (in place).

    Returns
    -------
    torch.Tensor, shape (n, n_classes)
        float32 logits on the CPU (no softmax applied).
    """
    batch_size = _check_batch_size(batch_size)
    x_t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    dataset = SequenceDataset(x_t, torch.zeros(x_t.shape[0], dtype=torch.long), lengths)
    device = model_device(model) if device is None else torch.device(device)
    model.to(device)
    return forward_all(model, dataset, batch_size, device)[0]


def evaluate(model, data, *, batch_size=256, device=None, class_weights=None) -> dict:
    """Loss and classification metrics of ``model`` on ``data``, in eval mode.

    Parameters
    ----------
    model : torch.nn.Module
    data : Dataset or tuple (x, y[, lengths])
        See :class:`SequenceDataset`; ``x`` is (n, time, features).
    batch_size : int, default=256
    device : str or torch.device, optional
        None: wherever the model's parameters are.
    class_weights : array-like, shape (n_classes,), optional
        As in ``fit``: weights the loss only (accuracies are unweighted).

    Returns
    -------
    dict
        ``loss`` (mean cross-entropy), ``accuracy``, ``balanced_accuracy`` (mean recall over
        the classes present in the labels), ``precision``/``recall``/``f1`` (lists, one per
        class, 0 where undefined), ``confusion_matrix`` (nested lists, rows = true class,
        columns = predicted), ``n`` (samples) and ``n_classes``.
    """
    batch_size = _check_batch_size(batch_size)
    dataset = as_dataset(data, "data")
    device = model_device(model) if device is None else torch.device(device)
    model.to(device)
    logits, labels = forward_all(model, dataset, batch_size, device)
    weights = None if class_weights is None else torch.as_tensor(class_weights)
    return _scores(logits, labels, weights)


def _scores(logits: torch.Tensor, labels: torch.Tensor, weights=None) -> dict:
    """The metrics dict of :func:`evaluate` from logits (n, n_classes) and labels (n,)."""
    loss, accuracy = loss_and_accuracy(logits, labels, weights)
    n_classes = logits.shape[1]
    y_true, y_pred = labels.numpy(), logits.argmax(1).numpy()
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    precision, recall, f1 = _per_class_scores(confusion)
    present = confusion.sum(1) > 0
    return {
        "loss": loss,
        "accuracy": accuracy,
        "balanced_accuracy": float(recall[present].mean()),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "confusion_matrix": confusion.tolist(),
        "n": int(len(y_true)),
        "n_classes": int(n_classes),
    }


def evaluate_runs(model, x, y, lengths, *, window, step, batch_size=256, device=None) -> dict:
    """Window-level and run-level metrics of ``model`` on whole runs, in eval mode.

    Each run is cut into sliding windows (:func:`~fmri_ica.training.data.sliding_windows`:
    every ``step`` frames, the last flush with the run's end); each window is classified,
    and each run is predicted by the mean log-probability over its windows.

    Parameters
    ----------
    model : torch.nn.Module
        Called as ``model(x, lengths=lengths)`` on (batch, window, features) windows.
    x : array-like, shape (n_runs, max_time, features)
        Whole runs, zero-padded after each run's length.
    y : array-like of int, shape (n_runs,)
        Class of each run.
    lengths : array-like of int, shape (n_runs,)
        Valid frames per run.
    window, step : int
        Window length and stride, in frames (use the training window).
    batch_size : int, default=256
    device : str or torch.device, optional
        None: wherever the model's parameters are.

    Returns
    -------
    dict
        ``window_level`` and ``run_level``: dicts as returned by :func:`evaluate` (the
        run-level ``loss`` is the cross-entropy of the renormalised mean log-probabilities);
        ``n_windows``, ``n_runs``, ``windows_per_run`` (list of int),
        ``run_predictions`` (list of int, one per run), ``run_log_proba`` (nested list
        (n_runs, n_classes): mean log-probability over the run's windows), ``window`` and
        ``step``.

    Raises
    ------
    InvalidParameterError
        Bad shapes, ``window``, ``step`` or ``batch_size``.
    InputDataError
        Labels beyond the model's classes, non-finite inputs.
    """
    batch_size = _check_batch_size(batch_size)
    windows, window_lengths, run_index, _ = sliding_windows(x, lengths, window, step)
    labels = torch.as_tensor(np.asarray(y), dtype=torch.long)
    if labels.shape != (len(np.asarray(lengths)),):
        raise InvalidParameterError(
            f"Invalid value for 'y': expected one label per run, shape "
            f"({len(np.asarray(lengths))},) like 'lengths'; got {tuple(labels.shape)}."
        )
    run_index = torch.from_numpy(run_index)
    dataset = SequenceDataset(windows, labels[run_index], window_lengths)
    device = model_device(model) if device is None else torch.device(device)
    model.to(device)
    logits, window_labels = forward_all(model, dataset, batch_size, device)
    log_proba = F.log_softmax(logits.double(), dim=1)
    counts = torch.bincount(run_index, minlength=len(labels))
    run_log_proba = torch.zeros(len(labels), logits.shape[1], dtype=torch.float64)
    run_log_proba.index_add_(0, run_index, log_proba).div_(counts[:, None])
    return {
        "window_level": _scores(logits, window_labels),
        "run_level": _scores(run_log_proba, labels),
        "n_windows": int(len(run_index)),
        "n_runs": int(len(labels)),
        "windows_per_run": counts.tolist(),
        "run_predictions": run_log_proba.argmax(1).tolist(),
        "run_log_proba": run_log_proba.tolist(),
        "window": int(window),
        "step": int(step),
    }


def _per_class_scores(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 per class from a confusion matrix (rows = true class).

    Undefined values (no predictions / no samples of a class) are 0, as scikit-learn's
    ``zero_division=0``; computed here to spare ``evaluate`` a slow scikit-learn import.
    """
    hits = np.diag(confusion).astype(float)
    predicted, actual = confusion.sum(0), confusion.sum(1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    return precision, recall, f1
