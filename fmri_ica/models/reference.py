"""A plain step-by-step implementation of every classifier, for tests and benchmarks.

It follows the research code's structure: a Python loop over time that recomputes the
attention over the whole prefix at every step (O(T^2)), then the textbook cell equations,
with the parameters of the fast model. Slow on purpose: it is the specification.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..exceptions import InvalidParameterError
from ._common import prepare_inputs
from .attention import NORM_EPS
from .baselines import RecurrentClassifier, SelfAttentionClassifier
from .classifiers import InputCellAttentionClassifier

__all__ = ["reference_forward"]


def reference_forward(model, x: torch.Tensor, lengths: torch.Tensor | None = None):
    """Logits (batch, n_classes) of ``model`` computed one time step at a time.

    Parameters
    ----------
    model : InputCellAttentionClassifier, RecurrentClassifier or SelfAttentionClassifier
        In eval mode (dropout is not modelled).
    x : torch.Tensor
        (batch, time, features).
    lengths : torch.Tensor, optional
        (batch,) valid steps per sequence; None means all.

    Raises
    ------
    InvalidParameterError
        If ``model`` is in training mode or of an unknown class.
    """
    if model.training:
        raise InvalidParameterError("reference_forward needs model.eval(): it has no dropout.")
    x, lengths, valid = prepare_inputs(x, lengths, model.n_features)
    if isinstance(model, InputCellAttentionClassifier):
        inputs = _attention_embeddings(model, x)
    elif isinstance(model, RecurrentClassifier | SelfAttentionClassifier):
        inputs = x
    else:
        raise InvalidParameterError(f"reference_forward does not know {type(model).__name__}.")
    outputs, finals = _stack(model.rnn, model.cell_type, inputs, valid)
    if isinstance(model, SelfAttentionClassifier):
        weights = model.weights(outputs, valid)
        return model.head(torch.einsum("btr,btd->bd", weights, outputs) / weights.shape[2])
    return model.head(torch.cat(finals, dim=1))


def _attention_embeddings(model, x):
    """The cell input at every step: (batch, time, N) or (batch, time, r*N)."""
    attention, steps = model.attention, []
    for t in range(x.shape[1]):
        prefix = x[:, : t + 1]
        weights = torch.softmax(attention.scores(prefix), dim=1)  # (B, t+1, r)
        m_t = torch.einsum("bsk,bsn->bkn", weights, prefix)
        if model.embedding == "mean":
            steps.append(m_t.mean(dim=1))
        else:
            steps.append(F.normalize(m_t.flatten(1), dim=1, eps=NORM_EPS))
    return torch.stack(steps, dim=1)


def _stack(rnn, cell_type, inputs, valid):
    """Run all layers and directions; return last-layer outputs and final states."""
    finals = []
    for layer in range(rnn.num_layers):
        outputs, finals = [], []
        for suffix in ["", "_reverse"][: 2 if rnn.bidirectional else 1]:
            params = [getattr(rnn, f"{n}_l{layer}{suffix}")
                      for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            seq = _reverse_valid(inputs, valid) if suffix else inputs
            out, final = _run_direction(cell_type, params, seq, valid, rnn.hidden_size)
            outputs.append(_reverse_valid(out, valid) if suffix else out)
            finals.append(final)
        inputs = torch.cat(outputs, dim=2)
    return inputs, finals


def _run_direction(cell_type, params, seq, valid, hidden_size):
    batch = seq.shape[0]
    h = seq.new_zeros(batch, hidden_size)
    c = seq.new_zeros(batch, hidden_size)
    outs = []
    for t in range(seq.shape[1]):
        h_new, c_new = _cell(cell_type, params, seq[:, t], h, c)
        keep = valid[:, t, None]
        h, c = torch.where(keep, h_new, h), torch.where(keep, c_new, c)
        outs.append(torch.where(keep, h, torch.zeros_like(h)))
    return torch.stack(outs, dim=1), h


def _cell(cell_type, params, x_t, h, c):
    w_ih, w_hh, b_ih, b_hh = params
    gi, gh = x_t @ w_ih.T + b_ih, h @ w_hh.T + b_hh
    if cell_type == "lstm":
        i, f, g, o = (gi + gh).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    if cell_type == "gru":
        r_i, z_i, n_i = gi.chunk(3, dim=1)
        r_h, z_h, n_h = gh.chunk(3, dim=1)
        r, z = torch.sigmoid(r_i + r_h), torch.sigmoid(z_i + z_h)
        n = torch.tanh(n_i + r * n_h)
        return (1 - z) * n + z * h, c
    return torch.tanh(gi + gh), c


def _reverse_valid(seq, valid):
    """Reverse each sequence within its valid prefix; padding stays in place."""
    lengths = valid.sum(dim=1, keepdim=True)
    steps = torch.arange(seq.shape[1], device=seq.device)[None, :]
    index = torch.where(valid, lengths - 1 - steps, steps)
    return seq.gather(1, index[..., None].expand_as(seq))
