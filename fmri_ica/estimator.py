"""Estimator-style Python API for notebooks: ``fit`` / ``predict`` / ``explain``.

>>> decoder = TaskDecoder("ica", epochs=30).fit(X_train, y_train, groups=subjects)  # doctest: +SKIP
>>> decoder.score(X_test, y_test)                                                   # doctest: +SKIP
>>> saliency = decoder.explain(X_test, y_test)     # (n, time, region)              # doctest: +SKIP

:class:`TaskDecoder` follows scikit-learn's estimator conventions, so ``clone``,
``cross_val_score`` and ``GridSearchCV`` accept it, without inheriting from
``sklearn.base.BaseEstimator``: importing scikit-learn would nearly double the time to
import fmri_ica (and to start the CLI), so it is imported only where it is needed.
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path

import numpy as np

from ._threads import resolve_threads, torch_threads
from ._utils import check_option, seed_everything, write_json
from .exceptions import InvalidParameterError

__all__ = ["TaskDecoder"]


class TaskDecoder:
    """Classify (time x region) sequences with a recurrent model and explain its decisions.

    A scikit-learn classifier for 3-D inputs: ``clone``, ``get_params`` / ``set_params``,
    ``cross_val_score`` and ``GridSearchCV`` work with it (fit it with ``groups`` to keep
    subjects out of the early-stopping split: ``cross_val_score(..., params={"groups":
    subjects})``).

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
        Seeds the validation split, the initial weights and the shuffling: on the CPU two
        fits on the same data give identical models.
    device : str, optional
        None: CUDA if available, else CPU.
    out_dir : str or Path, optional
        Where training writes metrics and checkpoints. A folder holding a run is not
        overwritten, so leave this None for cross-validation and grid searches, which fit
        many times.
    progress : bool, default=True
        A progress bar over the epochs.
    threads : int, "auto" or None, default=1
        torch's intra-op threads while fitting, predicting and explaining; the caller's
        setting is restored afterwards. "auto": ``SLURM_CPUS_PER_TASK``, else the CPUs
        this process may use; None: torch's current setting. One thread suits these
        small recurrent models: a second saves little on an idle machine and costs many
        times over on a busy one.

    Attributes
    ----------
    classes_ : ndarray, (n_classes,)
        The class labels, in the order of the model's outputs.
    model_ : torch.nn.Module
        The trained network (best weights on the validation set).
    fit_result_ : fmri_ica.training.FitResult

    Notes
    -----
    Before :meth:`fit`, ``predict`` and friends raise an error that is both an
    :class:`~fmri_ica.exceptions.InvalidParameterError` and scikit-learn's
    ``NotFittedError``.
    """

    # scikit-learn < 1.6 reads this in ``is_classifier``; later versions read the tags.
    _estimator_type = "classifier"

    def __init__(self, model="ica", *, model_options=None, epochs=60, lr=1e-3, batch_size=32,
                 patience=10, val_fraction=0.2, seed=0, device=None, out_dir=None, progress=True,
                 threads=1):
        # Parameters only, stored unchanged: scikit-learn's clone() relies on it.
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
        self.threads = threads

    def fit(self, X, y, lengths=None, *, groups=None, validation_data=None) -> TaskDecoder:
        """Train on ``X`` (n, time, region) with labels ``y`` (n,).

        Parameters
        ----------
        X : array-like, (n, time, region)
        y : array-like, (n,)
            Class labels (any sortable values), at least two distinct ones.
        lengths : array-like of int, (n,), optional
            Valid frames per sequence (the rest is padding).
        groups : array-like, (n,), optional
            Subject of each sample: the validation split then never shares a subject.
        validation_data : tuple (X_val, y_val[, lengths_val]), optional
            Used for early stopping instead of a split of the training data.

        Returns
        -------
        self : TaskDecoder
            Fitted.

        Raises
        ------
        InvalidParameterError
            A parameter or input with a bad value or shape (named in the message).
        """
        from .models import build_model
        from .models.factory import MODEL_KINDS
        from .training import fit

        check_option("model", self.model, MODEL_KINDS)
        resolve_threads(self.threads)
        if self.model_options is not None and not isinstance(self.model_options, dict):
            raise InvalidParameterError(
                "Invalid value for 'model_options': expected a dict such as "
                f"{{'hidden_size': 64}} or None; got {type(self.model_options).__name__}."
            )
        X, lengths = _check_x(X, lengths)
        y = _check_labels("y", y, len(X))
        if y.dtype.kind in "fc" and not np.array_equal(y, np.round(y)):
            raise InvalidParameterError(
                "Invalid value for 'y': continuous values (or NaN / infinity), e.g. "
                f"{y[y != np.round(y)][0]!r}; TaskDecoder is a classifier: pass class labels."
            )
        classes, y_index = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise InvalidParameterError(
                f"'y' must hold at least two classes; got one class, {classes.tolist()}."
            )
        if validation_data is None:
            if groups is not None:
                groups = _check_labels("groups", groups, len(X))
            train_idx, val_idx = _validation_split(len(X), groups, self.val_fraction, self.seed)
            train = (X[train_idx], y_index[train_idx], lengths[train_idx])
            val = (X[val_idx], y_index[val_idx], lengths[val_idx])
        else:
            X_val, val_lengths = _check_x(validation_data[0], _third(validation_data))
            y_val = _check_labels("validation_data[1]", validation_data[1], len(X_val))
            train, val = (X, y_index, lengths), (X_val, _encode(classes, y_val), val_lengths)
        with torch_threads(self.threads):
            seed_everything(self.seed)
            model = build_model(self.model, X.shape[2], len(classes), **(self.model_options or {}))
            fit_result = fit(
                model, train, val, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                patience=self.patience, seed=self.seed, out_dir=self.out_dir, device=self.device,
                progress=self.progress,
            )
        # Set together at the end, so a failed refit leaves no mix of old and new state.
        self.classes_, self.model_, self.fit_result_ = classes, model, fit_result
        return self

    def predict_proba(self, X, lengths=None) -> np.ndarray:
        """Class probabilities, (n, n_classes), columns in the order of ``classes_``."""
        import torch

        from .training import predict_logits

        model = self._fitted()
        X, lengths = _check_x(X, lengths, n_regions=_n_regions(model))
        with torch_threads(self.threads):
            logits = predict_logits(model, torch.from_numpy(X), torch.from_numpy(lengths))
        return torch.softmax(logits.double(), dim=1).numpy()

    def predict(self, X, lengths=None) -> np.ndarray:
        """Predicted class labels, (n,)."""
        index = self.predict_proba(X, lengths).argmax(axis=1)
        return self.classes_[index]

    def score(self, X, y, lengths=None) -> float:
        """Accuracy on ``X``, ``y`` (the score that scikit-learn's model selection uses)."""
        return float(np.mean(self.predict(X, lengths) == np.asarray(y)))

    def explain(self, X, y=None, lengths=None, *, method="gradient", **options) -> np.ndarray:
        """Saliency per time step and region, (n, time, region).

        ``y`` gives the class to explain per sample (default: the predicted class); the
        method and its options are those of :func:`fmri_ica.saliency.attribute`.
        """
        import torch

        from .saliency import attribute

        model = self._fitted()
        X, lengths = _check_x(X, lengths, n_regions=_n_regions(model))
        if y is None:
            target = self.predict_proba(X, lengths).argmax(axis=1)
        else:
            target = _encode(self.classes_, _check_labels("y", y, len(X)))
        device = next(model.parameters()).device  # CUDA when fit() found a GPU
        with torch_threads(self.threads):
            result = attribute(
                model, torch.from_numpy(X).to(device),
                target=torch.from_numpy(np.asarray(target)).to(device),
                method=method, lengths=torch.from_numpy(lengths), **options,
            )
        return result.detach().cpu().numpy()

    def save(self, path) -> Path:
        """Write the model checkpoint and the decoder's parameters to the folder ``path``."""
        from .training import save_checkpoint

        path = Path(path)
        save_checkpoint(path, self._fitted())
        params = self.get_params(deep=False)
        params["out_dir"] = str(self.out_dir) if self.out_dir else None
        write_json(path / "decoder.json", {"params": params, "classes": self.classes_.tolist()})
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

    # scikit-learn's estimator API (what BaseEstimator would provide)

    @classmethod
    def _get_param_names(cls) -> list[str]:
        parameters = inspect.signature(cls.__init__).parameters.values()
        return [p.name for p in parameters if p.name != "self"]

    def get_params(self, deep=True) -> dict:
        """The parameters given to ``__init__`` (or :meth:`set_params`), by name.

        ``deep`` is accepted for scikit-learn; no parameter holds an estimator, so there
        are no nested ``name__parameter`` entries.
        """
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params) -> TaskDecoder:
        """Set parameters by name, unchecked until :meth:`fit`; returns ``self``.

        Raises
        ------
        InvalidParameterError
            For a name that is not a parameter of ``__init__``.
        """
        names = self._get_param_names()
        for name in params:
            check_option("parameter of TaskDecoder", name, names)
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = inspect.signature(type(self).__init__).parameters
        changed = [f"{name}={value!r}" for name, value in self.get_params(deep=False).items()
                   if repr(value) != repr(defaults[name].default)]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_") and hasattr(self, "classes_")

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        return Tags(
            estimator_type="classifier",
            target_tags=TargetTags(required=True),
            classifier_tags=ClassifierTags(),
            input_tags=InputTags(two_d_array=False, three_d_array=True),
        )

    def _more_tags(self) -> dict:  # scikit-learn < 1.6
        return {"X_types": ["3darray"], "requires_y": True}

    def _fitted(self):
        if not self.__sklearn_is_fitted__():
            raise _not_fitted_error("This TaskDecoder is not fitted yet: call fit() first.")
        return self.model_


def _check_x(X, lengths, n_regions=None):
    if np.iscomplexobj(X):
        raise InvalidParameterError("Complex data not supported in 'X'; pass real values.")
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 3 or 0 in X.shape:
        raise InvalidParameterError(
            f"'X' must be (n, time, region), none of them 0; got shape {X.shape}."
        )
    if n_regions is not None and X.shape[2] != n_regions:
        raise InvalidParameterError(
            f"'X' has {X.shape[2]} regions (last axis); this decoder was fitted on {n_regions}."
        )
    if not X.flags.writeable:  # e.g. joblib's memmaps in parallel cross-validation
        X = X.copy()  # torch.from_numpy warns on read-only arrays
    lengths = (np.full(len(X), X.shape[1], dtype=np.int64) if lengths is None
               else np.asarray(lengths, dtype=np.int64))
    if lengths.shape != (len(X),) or lengths.min() < 1 or lengths.max() > X.shape[1]:
        raise InvalidParameterError(
            f"'lengths' must be {len(X)} integers in 1..{X.shape[1]}; got {lengths!r}."
        )
    return X, lengths


def _check_labels(name, labels, n):
    if labels is None:
        raise InvalidParameterError(
            f"TaskDecoder requires {name} to be passed, but the target {name} is None."
        )
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise InvalidParameterError(
            f"{name!r} must be one label per sample, shape ({n},); got shape {labels.shape}."
        )
    return labels


def _encode(classes, y) -> np.ndarray:
    unknown = sorted(set(y.tolist()) - set(classes.tolist()))
    if unknown:
        raise InvalidParameterError(
            f"Labels {unknown} were not seen in fit(); known classes: {classes.tolist()}."
        )
    return np.searchsorted(classes, y)


def _n_regions(model):
    return getattr(model, "config", {}).get("n_features")


def _not_fitted_error(message):
    return _not_fitted_error_class()(message)


@functools.cache
def _not_fitted_error_class() -> type:
    # Built on first use: importing scikit-learn up front would slow every import.
    try:
        from sklearn.exceptions import NotFittedError as SklearnNotFitted
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        SklearnNotFitted = AttributeError  # scikit-learn's is a ValueError and an AttributeError

    class NotFittedError(InvalidParameterError, SklearnNotFitted):
        """An estimator used before ``fit``: also scikit-learn's ``NotFittedError``."""

        def __reduce__(self):  # picklable, e.g. from a joblib worker
            return _not_fitted_error, self.args

    return NotFittedError


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
