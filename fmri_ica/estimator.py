"""Estimator-style Python API for notebooks: ``fit`` / ``predict`` / ``explain``.

>>> decoder = TaskDecoder("ica", epochs=30).fit(X_train, y_train, groups=subjects)  # doctest: +SKIP
>>> decoder.score(X_test, y_test)                                                   # doctest: +SKIP
>>> saliency = decoder.explain(X_test, y_test)     # (n, time, region)              # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._utils import seed_everything, write_json
from .exceptions import InvalidParameterError

__all__ = ["TaskDecoder"]


class TaskDecoder:
    """Classify (time x region) sequences with a recurrent model and explain its decisions.

    Parameters
    ----------
    model : str, default="ica"
        A kind of :func:`fmri_ica.models.build_model`: "ica" (input-cell attention),
        "lstm", "bilstm", "gru" or "self_attention".
    model_options : dict, optional
        Passed to ``build_model`` (e.g. ``hidden_size``, ``r``, ``d_a``, ``embedding``).
    epochs, lr, batch_size, patience : training options, see :func:`fmri_ica.training.fit`.
    val_fraction : float, default=0.2
        Share of the training data held out for early stopping when no validation set is
        given; whole groups (subjects) when ``groups`` is given to :meth:`fit`.
    seed : int, default=0
    device : str, optional
        None: CUDA if available, else CPU.
    out_dir : str or Path, optional
        Where training writes metrics and checkpoints.

    Attributes
    ----------
    classes_ : ndarray
        The class labels, in the order of the model's outputs.
    model_ : torch.nn.Module
        The trained network (best weights on the validation set).
    fit_result_ : fmri_ica.training.FitResult
    """

    def __init__(self, model="ica", *, model_options=None, epochs=60, lr=1e-3, batch_size=32,
                 patience=10, val_fraction=0.2, seed=0, device=None, out_dir=None, progress=True):
        self.model = model
        self.model_options = model_options
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.patience = patience
        self.val_fraction = val_fraction
        self.seed = seed
        self.device = device
        self.out_dir = out_dir
        self.progress = progress

    def fit(self, X, y, lengths=None, *, groups=None, validation_data=None) -> TaskDecoder:
        """Train on ``X`` (n, time, region) with labels ``y`` (n,).

        Parameters
        ----------
        X : array-like, (n, time, region)
        y : array-like, (n,)
            Class labels (any hashable values).
        lengths : array-like of int, (n,), optional
            Valid frames per sequence (the rest is padding).
        groups : array-like, (n,), optional
            Subject of each sample: the validation split then never shares a subject.
        validation_data : tuple (X_val, y_val[, lengths_val]), optional
            Used for early stopping instead of a split of the training data.
        """
        from .models import build_model
        from .training import fit

        X, lengths = _check_x(X, lengths)
        self.classes_, y_index = np.unique(np.asarray(y), return_inverse=True)
        if len(self.classes_) < 2:
            raise InvalidParameterError("'y' must hold at least two classes.")
        if validation_data is None:
            train_idx, val_idx = _validation_split(len(X), groups, self.val_fraction, self.seed)
            train = (X[train_idx], y_index[train_idx], lengths[train_idx])
            val = (X[val_idx], y_index[val_idx], lengths[val_idx])
        else:
            X_val, val_lengths = _check_x(validation_data[0], _third(validation_data))
            train, val = (X, y_index, lengths), (X_val, self._encode(validation_data[1]), val_lengths)
        seed_everything(self.seed)
        self.model_ = build_model(self.model, X.shape[2], len(self.classes_), **(self.model_options or {}))
        self.fit_result_ = fit(
            self.model_, train, val, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
            patience=self.patience, seed=self.seed, out_dir=self.out_dir, device=self.device,
            progress=self.progress,
        )
        return self

    def predict_proba(self, X, lengths=None) -> np.ndarray:
        """Class probabilities, (n, n_classes), columns in the order of ``classes_``."""
        import torch

        from .training import predict_logits

        X, lengths = _check_x(X, lengths)
        logits = predict_logits(self._fitted(), torch.from_numpy(X), torch.from_numpy(lengths))
        return torch.softmax(logits.double(), dim=1).numpy()

    def predict(self, X, lengths=None) -> np.ndarray:
        """Predicted class labels, (n,)."""
        index = self.predict_proba(X, lengths).argmax(axis=1)
        return self.classes_[index]

    def score(self, X, y, lengths=None) -> float:
        """Accuracy on ``X``, ``y``."""
        return float(np.mean(self.predict(X, lengths) == np.asarray(y)))

    def explain(self, X, y=None, lengths=None, *, method="gradient", **options) -> np.ndarray:
        """Saliency per time step and region, (n, time, region).

        ``y`` gives the class to explain per sample (default: the predicted class); the
        method and its options are those of :func:`fmri_ica.saliency.attribute`.
        """
        import torch

        from .saliency import attribute

        X, lengths = _check_x(X, lengths)
        target = self._encode(y) if y is not None else self.predict_proba(X, lengths).argmax(axis=1)
        device = next(self._fitted().parameters()).device  # CUDA when fit() found a GPU
        result = attribute(
            self.model_, torch.from_numpy(X).to(device),
            target=torch.from_numpy(np.asarray(target)).to(device),
            method=method, lengths=torch.from_numpy(lengths), **options,
        )
        return result.detach().cpu().numpy()

    def save(self, path) -> Path:
        """Write the model checkpoint and the decoder's parameters to the folder ``path``."""
        from .training import save_checkpoint

        path = Path(path)
        save_checkpoint(path, self._fitted())
        write_json(path / "decoder.json", {"params": self._params(), "classes": self.classes_.tolist()})
        return path

    @classmethod
    def load(cls, path) -> TaskDecoder:
        """Read a decoder written by :meth:`save` (weights loaded with ``weights_only=True``)."""
        from .training import load_model

        path = Path(path)
        meta = json.loads((path / "decoder.json").read_text())
        decoder = cls(**meta["params"])
        decoder.classes_ = np.asarray(meta["classes"])
        decoder.model_ = load_model(path)
        return decoder

    def _params(self) -> dict:
        names = ("model", "model_options", "epochs", "lr", "batch_size", "patience",
                 "val_fraction", "seed", "device", "progress")
        params = {name: getattr(self, name) for name in names}
        params["out_dir"] = str(self.out_dir) if self.out_dir else None
        return params

    def _fitted(self):
        if not hasattr(self, "model_"):
            raise InvalidParameterError("This TaskDecoder is not fitted yet: call fit() first.")
        return self.model_

    def _encode(self, y) -> np.ndarray:
        y = np.asarray(y)
        unknown = sorted(set(y.tolist()) - set(self.classes_.tolist()))
        if unknown:
            raise InvalidParameterError(
                f"Labels {unknown} were not seen in fit(); known classes: {self.classes_.tolist()}."
            )
        return np.searchsorted(self.classes_, y)


def _check_x(X, lengths):
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 3:
        raise InvalidParameterError(f"'X' must be (n, time, region); got shape {X.shape}.")
    lengths = (np.full(len(X), X.shape[1], dtype=np.int64) if lengths is None
               else np.asarray(lengths, dtype=np.int64))
    if lengths.shape != (len(X),) or lengths.min() < 1 or lengths.max() > X.shape[1]:
        raise InvalidParameterError(
            f"'lengths' must be {len(X)} integers in 1..{X.shape[1]}; got {lengths!r}."
        )
    return X, lengths


def _third(data):
    return data[2] if len(data) > 2 else None


def _validation_split(n, groups, fraction, seed):
    if not 0 < fraction < 1:
        raise InvalidParameterError(f"'val_fraction' must be in (0, 1); got {fraction}.")
    rng = np.random.default_rng(seed)
    if groups is None:
        order = rng.permutation(n)
        n_val = max(1, round(fraction * n))
        return np.sort(order[n_val:]), np.sort(order[:n_val])
    groups = np.asarray(groups)
    unique = rng.permutation(np.unique(groups))
    if len(unique) < 2:
        raise InvalidParameterError("'groups' must hold at least two groups to split by group.")
    val_groups = unique[: max(1, round(fraction * len(unique)))]
    in_val = np.isin(groups, val_groups)
    return np.flatnonzero(~in_val), np.flatnonzero(in_val)
