"""Recurrent classifiers with input-cell attention, and the paper's baselines.

Checkpoint contract: ``model.config`` (a JSON-serialisable dict) plus
``model.state_dict()``; rebuild with ``model_from_config(config)`` then
``load_state_dict``. Stable state_dict keys: ``attention.w1.*`` (Linear N -> d_a),
``attention.w2.*`` (Linear d_a -> r), ``rnn.*`` (the torch.nn.LSTM/GRU/RNN, batch-first)
and ``head.*`` (Linear). Every model maps ``x``: (batch, time, features) and optional
``lengths``: (batch,) to logits (batch, n_classes).
"""

from .attention import InputCellAttention
from .baselines import RecurrentClassifier, SelfAttentionClassifier
from .classifiers import InputCellAttentionClassifier
from .factory import MODEL_KINDS, build_model, model_from_config
from .reference import reference_forward

__all__ = [
    "MODEL_KINDS",
    "InputCellAttention",
    "InputCellAttentionClassifier",
    "RecurrentClassifier",
    "SelfAttentionClassifier",
    "build_model",
    "model_from_config",
    "reference_forward",
]
