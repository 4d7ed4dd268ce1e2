"""Pieces shared by every classifier: input checks, packed recurrence, read-out, init."""

from __future__ import annotations

import torch
from torch import _VF, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..exceptions import InputDataError, InvalidParameterError

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
#: Gate rows per hidden unit (i, f, g, o / r, z, n / one).
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
_FUSED = {"lstm": _VF.lstm, "gru": _VF.gru, "rnn": _VF.rnn_tanh}


def prepare_inputs(x, lengths, n_features: int):
    """Check ``x`` and ``lengths``; trim to the longest sequence and zero the padding.

    Parameters
    ----------
    x : torch.Tensor
        (batch, time, n_features), floating point.
    lengths : torch.Tensor or None
        (batch,) integers in [1, time]; None means every sequence is full.

    Returns
    -------
    x : torch.Tensor
        (batch, max(lengths), n_features), exactly zero at padded steps (so garbage or
        NaN there can reach neither outputs nor gradients).
    lengths : torch.Tensor or None
        (batch,) int64 on the CPU (what packing wants); None when no sequence is padded.
    valid : torch.Tensor
        (batch, max(lengths)) bool, on the device of ``x``.

    Notes
    -----
    ``lengths`` are read here only, on the CPU (where packing wants them), never a value
    on the device; with ``lengths=None`` nothing is read at all, so the forward pass that
    follows has no host sync on its fast path (CUDA graphs, ``torch.compile``).
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 3 or not x.is_floating_point():
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputDataError(
            f"Model input 'x' must be a float tensor (batch, time, features); got {got}."
        )
    if x.shape[2] != n_features:
        raise InputDataError(
            f"Model input 'x' has {x.shape[2]} features but the model was built for "
            f"{n_features}; rebuild the model or select the right atlas/regions."
        )
    batch = x.shape[0]
    lengths, n_steps = _check_lengths(lengths, batch, x.shape[1])
    x = x[:, :n_steps]
    if lengths is None:
        return x, None, torch.ones(batch, n_steps, dtype=torch.bool, device=x.device)
    device_lengths = lengths.to(x.device, non_blocking=True)
    valid = torch.arange(n_steps, device=x.device)[None, :] < device_lengths[:, None]
    x = torch.where(valid[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
    return x, lengths, valid


# Reads the (CPU) lengths: torch.compile runs it eagerly, as one graph break.
@torch.compiler.disable
def _check_lengths(lengths, batch: int, n_steps: int):
    """``(lengths or None, steps to keep)``: None when no sequence is shorter than the rest."""
    if lengths is None:
        return None, n_steps
    lengths = torch.as_tensor(lengths)
    if lengths.shape != (batch,) or lengths.is_floating_point():
        raise InvalidParameterError(
            f"'lengths' must be an integer tensor of shape ({batch},); got "
            f"{tuple(lengths.shape)} {lengths.dtype}."
        )
    lengths = lengths.to("cpu", torch.long)
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > n_steps):
        raise InvalidParameterError(
            f"'lengths' must lie in [1, {n_steps}] (the time axis of 'x'); got "
            f"min {int(lengths.min())}, max {int(lengths.max())}."
        )
    n_steps = int(lengths.max()) if batch else n_steps
    return (lengths if bool((lengths < n_steps).any()) else None), n_steps


def make_rnn(cell_type: str, input_size: int, hidden_size: int, num_layers: int,
             dropout: float, bidirectional: bool) -> nn.RNNBase:
    """A batch-first fused torch RNN; ``dropout`` acts between stacked layers only."""
    return CELLS[cell_type](
        input_size, hidden_size, num_layers=num_layers, batch_first=True,
        dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional,
    )


def run_rnn(rnn: nn.RNNBase, inputs: torch.Tensor, lengths: torch.Tensor,
            input_weights: list[torch.Tensor] | None = None, outputs: bool = False):
    """Run ``rnn`` over the valid steps only; return (outputs, final hidden states).

    Parameters
    ----------
    rnn : torch.nn.LSTM, GRU or RNN
        Batch-first.
    inputs : torch.Tensor
        (batch, time, F).
    lengths : torch.Tensor or None
        (batch,) on the CPU; None (nothing padded) skips packing without reading them.
    input_weights : list of torch.Tensor, optional
        Replacements for ``weight_ih_l0`` (and ``weight_ih_l0_reverse``), each (G, F):
        lets the first layer take pre-projected gate inputs, which ``nn.RNNBase.forward``
        cannot (it checks ``F == input_size``). We then call the same fused kernel it
        calls (``torch._VF``) with the module's other weights.
    outputs : bool, default=False
        Also return the last layer's outputs.

    Returns
    -------
    outputs : torch.Tensor or None
        (batch, time, dirs * H), zero at padded steps.
    h_n : torch.Tensor
        (num_layers * num_directions, batch, H), in the input's batch order; for a
        direction run forward it is the state at the last valid step.
    """
    n_steps = inputs.shape[1]
    # Packing sorts and copies the batch: skip it when nothing is padded.
    packed = lengths is not None and _any_shorter(lengths, n_steps)
    if packed:
        inputs = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
    if input_weights is None:
        out, h_n = rnn(inputs)
    else:
        out, h_n = _run_fused(rnn, inputs, input_weights)
    if isinstance(h_n, tuple):
        h_n = h_n[0]
    if outputs and packed:
        out = pad_packed_sequence(out, batch_first=True, total_length=n_steps)[0]
    return (out if outputs else None), h_n


@torch.compiler.disable
def _any_shorter(lengths, n_steps: int) -> bool:
    return bool((lengths < n_steps).any())


def _run_fused(rnn, inputs, input_weights):
    names = ["weight_ih_l0", "weight_ih_l0_reverse"][: len(input_weights)]
    replace = dict(zip(names, input_weights, strict=True))
    # by name, not rnn._flat_weights: that list goes stale under torch.func.functional_call
    weights = [replace.get(n, getattr(rnn, n)) for n in rnn._flat_weights_names]
    kind = "lstm" if isinstance(rnn, nn.LSTM) else "gru" if isinstance(rnn, nn.GRU) else "rnn"
    if kind == "rnn" and rnn.nonlinearity != "tanh":
        raise InvalidParameterError("Only tanh nn.RNN cells are supported.")
    is_packed = isinstance(inputs, PackedSequence)
    data = inputs.data if is_packed else inputs
    batch = int(inputs.batch_sizes[0]) if is_packed else inputs.shape[0]
    n_dirs = 2 if rnn.bidirectional else 1
    h0 = data.new_zeros(rnn.num_layers * n_dirs, batch, rnn.hidden_size)
    hx = (h0, h0) if kind == "lstm" else h0
    settings = (rnn.bias, rnn.num_layers, float(rnn.dropout), rnn.training, rnn.bidirectional)
    if not is_packed:
        result = _FUSED[kind](data, hx, weights, *settings, True)  # batch_first
        return result[0], result[1]
    result = _FUSED[kind](data, inputs.batch_sizes, hx, weights, *settings)
    out = PackedSequence(result[0], inputs.batch_sizes, inputs.sorted_indices,
                         inputs.unsorted_indices)
    return out, result[1].index_select(1, inputs.unsorted_indices)


def last_layer_state(h_n: torch.Tensor, n_dirs: int) -> torch.Tensor:
    """(layers * dirs, batch, H) -> (batch, dirs * H): forward then backward direction."""
    return h_n[-n_dirs:].transpose(0, 1).reshape(h_n.shape[1], -1)


def init_weights(module: nn.Module) -> None:
    """Xavier-uniform weight matrices and zero biases, as in the authors' code."""
    for name, param in module.named_parameters():
        if "bias" in name:
            nn.init.zeros_(param)
        elif param.ndim >= 2:
            nn.init.xavier_uniform_(param)
