"""Baselines of the paper: LSTM, Bi-LSTM, GRU and LSTM + structured self-attention."""

from __future__ import annotations

import torch
from torch import nn

from ._common import init_weights, last_layer_state, make_rnn, prepare_inputs, run_rnn

__all__ = ["RecurrentClassifier", "SelfAttentionClassifier"]


class RecurrentClassifier(nn.Module):
    """A fused LSTM / GRU / RNN read out at the last valid step of each sequence.

    Parameters
    ----------
    n_features, n_classes : int
        Input width N and number of logits.
    cell_type : {"lstm", "gru", "rnn"}, default="lstm"
    hidden_size : int, default=64
    num_layers : int, default=1
    dropout : float, default=0.1
        On the input, the read-out and between stacked layers.
    bidirectional : bool, default=False
        Read out the forward state at the last valid step next to the backward state at
        step 0 (both have then seen the whole sequence).

    Attributes
    ----------
    rnn : torch.nn.LSTM, GRU or RNN
    head : torch.nn.Linear
    """

    def __init__(self, n_features: int, n_classes: int, *, cell_type: str = "lstm",
                 hidden_size: int = 64, num_layers: int = 1, dropout: float = 0.1,
                 bidirectional: bool = False):
        super().__init__()
        self.n_features, self.cell_type = n_features, cell_type
        self.n_dirs = 2 if bidirectional else 1
        self.rnn = make_rnn(cell_type, n_features, hidden_size, num_layers, dropout,
                            bidirectional)
        self.head = nn.Linear(self.n_dirs * hidden_size, n_classes)
        self.dropout = nn.Dropout(dropout)
        init_weights(self)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (batch, n_classes) for ``x``: (batch, time, N), ``lengths``: (batch,)."""
        x, lengths, _ = prepare_inputs(x, lengths, self.n_features)
        _, h_n = run_rnn(self.rnn, self.dropout(x), lengths)
        return self.head(self.dropout(last_layer_state(h_n, self.n_dirs)))


class SelfAttentionClassifier(nn.Module):
    """LSTM + structured self-attention over its hidden states (Lin et al., ICLR 2017).

    ``A = softmax_t(W_s2 tanh(W_s1 H^T))`` (r hops, no biases, padded steps masked); the
    r attended states ``A H`` are averaged into one vector for the linear head.

    Parameters
    ----------
    n_features, n_classes : int
    r : int, default=20
    d_a : int, default=50
    hidden_size : int, default=64
    num_layers : int, default=1
    dropout : float, default=0.1
    bidirectional : bool, default=False
        Lin et al. used a BiLSTM; the paper's baseline is "LSTM + self-attention".

    Attributes
    ----------
    rnn : torch.nn.LSTM
    attention : torch.nn.Module
        With ``w1`` (Linear dirs*H -> d_a) and ``w2`` (Linear d_a -> r), bias-free.
    head : torch.nn.Linear
    """

    def __init__(self, n_features: int, n_classes: int, *, r: int = 20, d_a: int = 50,
                 hidden_size: int = 64, num_layers: int = 1, dropout: float = 0.1,
                 bidirectional: bool = False):
        super().__init__()
        self.n_features, self.cell_type = n_features, "lstm"
        self.n_dirs = 2 if bidirectional else 1
        width = self.n_dirs * hidden_size
        self.rnn = make_rnn("lstm", n_features, hidden_size, num_layers, dropout, bidirectional)
        self.attention = nn.Module()
        self.attention.w1 = nn.Linear(width, d_a, bias=False)
        self.attention.w2 = nn.Linear(d_a, r, bias=False)
        self.head = nn.Linear(width, n_classes)
        self.dropout = nn.Dropout(dropout)
        init_weights(self)

    def weights(self, states: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Attention (batch, time, r) over ``states``: (batch, time, dirs*H); 0 at padding."""
        scores = self.attention.w2(torch.tanh(self.attention.w1(states)))
        return torch.softmax(scores.masked_fill(~valid[..., None], float("-inf")), dim=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (batch, n_classes) for ``x``: (batch, time, N), ``lengths``: (batch,)."""
        x, lengths, valid = prepare_inputs(x, lengths, self.n_features)
        states, _ = run_rnn(self.rnn, self.dropout(x), lengths, outputs=True)
        attended = torch.einsum("btr,btd->bd", self.weights(states, valid), states)
        return self.head(self.dropout(attended / self.attention.w2.out_features))
