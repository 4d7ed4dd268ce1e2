"""Recurrent classifiers whose cell reads input-cell attention embeddings."""

from __future__ import annotations

import torch
from torch import nn

from ._common import GATES, init_weights, last_layer_state, make_rnn, prepare_inputs, run_rnn
from .attention import InputCellAttention

__all__ = ["InputCellAttentionClassifier"]


class InputCellAttentionClassifier(nn.Module):
    """Input-cell attention in front of a fused LSTM / GRU / RNN, read out at the last step.

    ``M_t`` (r x N, see :class:`InputCellAttention`) replaces ``x_t`` in every gate of the
    first recurrent layer; the last valid step of each sequence feeds a linear head.

    Parameters
    ----------
    n_features : int
        N, input features (e.g. atlas regions).
    n_classes : int
        Number of output logits.
    cell_type : {"lstm", "gru", "rnn"}, default="lstm"
        The recurrent cell (``rnn`` is the tanh Elman cell).
    embedding : {"mean", "matrix"}, default="mean"
        How ``M_t`` enters the cell. ``"mean"``: the mean of its r rows, an N-vector
        (the authors' later code). ``"matrix"``: ``vec(M_t) / ||M_t||`` with gate weights
        ``G x (r N)`` (the paper and its released model). The matrix form never builds
        ``vec(M_t)``: it computes ``W_ih vec(M_t)`` hop by hop from prefix sums and feeds
        those pre-activations to the same fused kernel as ``rnn`` with an identity as
        first-layer input weight (one extra ``G x G`` product per step, small next to
        ``G x rN``), so the stored ``rnn.weight_ih_l0`` keeps its natural (G, r N) shape.
    r : int, default=20
        Attention hops.
    d_a : int, default=50
        Width of the attention MLP.
    hidden_size : int, default=64
        Units per recurrent layer (the paper used 5 on its synthetic data).
    num_layers : int, default=1
        Stacked recurrent layers; only the first reads the attention.
    dropout : float, default=0.1
        Dropout on the input ``x`` (before the attention), on the read-out, and between
        stacked layers.
    bidirectional : bool, default=False
        Also run the cell backwards in time over the same embeddings ``M_t``. The
        attention stays causal (``M_t`` sees ``x_0..x_t`` only); the read-out is the
        forward state at the last valid step next to the backward state at step 0.

    Attributes
    ----------
    attention : InputCellAttention
        state_dict keys ``attention.w1.*``, ``attention.w2.*``.
    rnn : torch.nn.LSTM, torch.nn.GRU or torch.nn.RNN
        Batch-first; ``rnn.weight_ih_l0`` is (G, N) or (G, r N).
    head : torch.nn.Linear
        (num_directions * hidden_size) -> n_classes.
    config : dict
        Set by :func:`fmri_ica.models.build_model`; rebuilds the model.
    """

    def __init__(self, n_features: int, n_classes: int, *, cell_type: str = "lstm",
                 embedding: str = "mean", r: int = 20, d_a: int = 50, hidden_size: int = 64,
                 num_layers: int = 1, dropout: float = 0.1, bidirectional: bool = False):
        super().__init__()
        self.n_features, self.cell_type, self.embedding = n_features, cell_type, embedding
        self.n_dirs = 2 if bidirectional else 1
        self.attention = InputCellAttention(n_features, r=r, d_a=d_a)
        width = n_features if embedding == "mean" else r * n_features
        self.rnn = make_rnn(cell_type, width, hidden_size, num_layers, dropout, bidirectional)
        self.head = nn.Linear(self.n_dirs * hidden_size, n_classes)
        self.dropout = nn.Dropout(dropout)
        init_weights(self)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (batch, n_classes) for ``x``: (batch, time, N), ``lengths``: (batch,)."""
        x, lengths, valid = prepare_inputs(x, lengths, self.n_features)
        x = self.dropout(x)
        valid = None if lengths is None else valid  # None: nothing padded, nothing to mask
        if self.embedding == "mean":
            _, h_n = run_rnn(self.rnn, self.attention.mean_embedding(x, valid), lengths)
        else:
            weights = [self.rnn.weight_ih_l0]
            if self.n_dirs == 2:
                weights.append(self.rnn.weight_ih_l0_reverse)
            gates = self.attention.matrix_gates(x, valid, torch.cat(weights))
            n_gates = GATES[self.cell_type] * self.rnn.hidden_size
            eye = torch.eye(n_gates, self.n_dirs * n_gates, dtype=x.dtype, device=x.device)
            # direction d reads its own block of the pre-activations
            identity = [eye.roll(d * n_gates, dims=1) for d in range(self.n_dirs)]
            _, h_n = run_rnn(self.rnn, gates, lengths, identity)
        return self.head(self.dropout(last_layer_state(h_n, self.n_dirs)))
