"""Build any classifier by name; a JSON ``config`` plus a state dict is a checkpoint."""

from __future__ import annotations

import numbers
from typing import Any

from torch import nn

from .._utils import check_option
from ..exceptions import InvalidParameterError
from .baselines import RecurrentClassifier, SelfAttentionClassifier
from .classifiers import InputCellAttentionClassifier

__all__ = ["MODEL_KINDS", "build_model", "model_from_config"]

_RNN = {"hidden_size": 64, "num_layers": 1, "dropout": 0.1}
_ATTENTION = {"r": 20, "d_a": 50}

#: Every kind with its options and their defaults.
MODEL_KINDS: dict[str, dict[str, Any]] = {
    "ica": {"cell_type": "lstm", "embedding": "mean", **_ATTENTION, **_RNN,
            "bidirectional": False},
    "lstm": dict(_RNN),
    "bilstm": dict(_RNN),
    "gru": dict(_RNN),
    "self_attention": {**_ATTENTION, **_RNN, "bidirectional": False},
}

_CHOICES = {"cell_type": ("lstm", "gru", "rnn"), "embedding": ("mean", "matrix")}


def build_model(kind: str, n_features: int, n_classes: int, **options) -> nn.Module:
    """Build a classifier mapping (batch, time, n_features) to (batch, n_classes) logits.

    Parameters
    ----------
    kind : {"ica", "lstm", "bilstm", "gru", "self_attention"}
        ``"ica"`` is input-cell attention (:class:`InputCellAttentionClassifier`); the
        others are the paper's baselines.
    n_features : int
        Input width (regions).
    n_classes : int
        Number of logits (at least 2).
    **options
        The options of ``kind`` (see ``MODEL_KINDS[kind]`` for names and defaults):
        ``cell_type``, ``embedding``, ``r``, ``d_a``, ``hidden_size``, ``num_layers``,
        ``dropout``, ``bidirectional``.

    Returns
    -------
    torch.nn.Module
        With a JSON-serialisable ``config`` attribute for :func:`model_from_config`.

    Raises
    ------
    InvalidParameterError
        Unknown kind or option, or an option value out of range.

    Examples
    --------
    >>> model = build_model("ica", n_features=300, n_classes=7, r=20, hidden_size=5)
    >>> model.config["embedding"]
    'mean'
    """
    check_option("kind", kind, MODEL_KINDS)
    for name in options:
        check_option(f"option of model kind {kind!r}", name, MODEL_KINDS[kind])
    config = {"kind": kind, "n_features": n_features, "n_classes": n_classes,
              **MODEL_KINDS[kind], **options}
    _check_values(config)
    settings = {k: v for k, v in config.items() if k not in ("kind", "n_features", "n_classes")}
    if kind == "ica":
        model = InputCellAttentionClassifier(n_features, n_classes, **settings)
    elif kind == "self_attention":
        model = SelfAttentionClassifier(n_features, n_classes, **settings)
    else:
        cell = "gru" if kind == "gru" else "lstm"
        model = RecurrentClassifier(n_features, n_classes, cell_type=cell,
                                    bidirectional=kind == "bilstm", **settings)
    model.config = config
    return model


def model_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild a model (fresh weights) from its ``config``; then ``load_state_dict``."""
    if not isinstance(config, dict) or "kind" not in config:
        raise InvalidParameterError(
            f"A model config must be a dict with a 'kind' key; got {config!r}."
        )
    rest = {k: v for k, v in config.items() if k != "kind"}
    for key in ("n_features", "n_classes"):
        if key not in rest:
            raise InvalidParameterError(f"Model config lacks {key!r}: {config!r}.")
    return build_model(config["kind"], rest.pop("n_features"), rest.pop("n_classes"), **rest)


def _check_values(config: dict[str, Any]) -> None:
    for name, minimum in (("n_features", 1), ("n_classes", 2), ("r", 1), ("d_a", 1),
                          ("hidden_size", 1), ("num_layers", 1)):
        if name in config:
            value = config[name]
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
                    or value < minimum:
                raise InvalidParameterError(
                    f"Invalid value for {name!r}: {value!r}. Expected an integer >= {minimum}."
                )
            config[name] = int(value)
    dropout = config["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) \
            or not 0 <= dropout < 1:
        raise InvalidParameterError(
            f"Invalid value for 'dropout': {dropout!r}. Expected a number in [0, 1)."
        )
    config["dropout"] = float(dropout)
    if "bidirectional" in config and not isinstance(config["bidirectional"], bool):
        raise InvalidParameterError(
            f"Invalid value for 'bidirectional': {config['bidirectional']!r}. Expected a bool."
        )
    for name, allowed in _CHOICES.items():
        if name in config:
            check_option(name, config[name], allowed)
