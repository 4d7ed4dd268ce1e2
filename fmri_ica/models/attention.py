"""Input-cell attention (Ismail et al., NeurIPS 2019), computed for all time steps at once.

At step ``t`` the cell sees ``M_t = A_t X_t``: for each of ``r`` hops, a softmax over the
past steps ``s <= t`` of the scores ``S_s = W2 tanh(W1 x_s + b1) + b2``. The scores depend
on ``x_s`` only (never on the hidden state), so every ``M_t`` can be built before the
recurrence from causal prefix sums -- O(T) tensor work instead of the research code's
O(T^2) Python loop over ``t``.

Numerics. The exact weights are ``A[k, t, s] = exp(S_sk - L_tk)`` with
``L_tk = logcumsumexp_s(S_sk)``. We factor them as ``q_tk * p_sk`` with
``p_sk = exp(S_sk - c_k)`` and ``q_tk = 1 / sum_{s<=t} p_sk``, where ``c_k`` is the
midpoint of the hop's score range over the valid steps of each sequence. Then
``p`` lies in ``[exp(-range/2), exp(range/2)]`` and ``q`` below ``exp(range/2)``, so nothing
(nor the ``1/Z^2`` of the backward pass) overflows or leaves the normal floating-point
range while ``range <= log(finfo.max) / 2`` (44 in float32, 354 in float64). The scores
are bounded by the tanh, and Xavier-initialised or trained weights stay far below that.
When a batch does exceed it, we switch to an exact per-hop evaluation of
``exp(S_sk - L_tk)`` (never a shifted product), recomputed in the backward pass instead
of stored: slower, equally exact, never inf/NaN.

Host syncs. Whether a batch can exceed the limit is first decided from the weights alone:
``range <= 2 ||W2_k||_1`` because the tanh lies in [-1, 1]. That bound is read from the
device once per change of ``w2.weight`` (its version counter), not per batch; only when it
exceeds the limit are the batch's scores read. So with trained or initial weights of the
usual size, and ``lengths=None``, the forward pass never waits for the device.

Forms. ``mean``: ``(1/r) sum_k q_tk sum_{s<=t} p_sk x_s``, computed in chunks of 32
steps (dense causal product inside a chunk, running sums across chunks):
O(T N (C + 2r)) work, O(T N) memory. ``matrix``: ``W vec(M_t) / ||M_t||`` hop by hop,
see :meth:`InputCellAttention.matrix_gates`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["InputCellAttention"]

#: eps of torch.nn.functional.normalize; the reference loop uses the same.
NORM_EPS = 1e-12


class InputCellAttention(nn.Module):
    """Causal multi-hop attention over the inputs, for every time step at once.

    Parameters
    ----------
    n_features : int
        N, the width of each input vector ``x_t``.
    r : int, default=20
        Number of attention hops (rows of ``M_t``).
    d_a : int, default=50
        Width of the hidden layer of the scoring MLP.

    Attributes
    ----------
    w1 : torch.nn.Linear
        ``N -> d_a`` (state_dict keys ``w1.weight``, ``w1.bias``).
    w2 : torch.nn.Linear
        ``d_a -> r``.
    """

    def __init__(self, n_features: int, r: int = 20, d_a: int = 50):
        super().__init__()
        self.n_features, self.r, self.d_a = n_features, r, d_a
        self.w1 = nn.Linear(n_features, d_a)
        self.w2 = nn.Linear(d_a, r)
        self._bound_key: tuple | None = None
        self._bound = math.inf

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Scores ``S``: (batch, time, r) for ``x``: (batch, time, N)."""
        return self.w2(torch.tanh(self.w1(x)))

    # torch.compile cannot trace the version counter: it runs this eagerly (a graph break).
    @torch.compiler.disable
    def score_range_bound(self) -> float:
        """An upper bound on every hop's score range, for any input: ``2 max_k ||W2_k||_1``.

        Read from the device once per change of ``w2.weight`` (keyed on the tensor and its
        version counter, which in-place updates under ``torch.no_grad()``, optimisers and
        ``load_state_dict`` advance; writes through ``.data`` do not, so avoid those).
        """
        w = self.w2.weight
        if not isinstance(w, nn.Parameter):  # e.g. a parametrisation: a new tensor per call
            return float(2 * w.detach().abs().sum(1).max())
        key = (id(w), w.data_ptr(), w._version, w.dtype, w.device)
        if key != self._bound_key:
            self._bound = float(2 * w.detach().abs().sum(1).max())
            self._bound_key = key
        return self._bound

    def weights(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The explicit attention weights ``A``: (batch, r, time, time), zero above the diagonal.

        O(T^2 r) memory: meant for inspection and plots, not for the forward pass.
        """
        s = self.scores(x)
        log_z = torch.logcumsumexp(s, dim=1)
        causal = _causal_mask(x.shape[1], x.device)
        logits = s.transpose(1, 2)[:, :, None, :] - log_z.transpose(1, 2)[:, :, :, None]
        return torch.exp(logits.masked_fill(~causal, -math.inf))

    def mean_embedding(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of the ``r`` rows of every ``M_t``.

        Parameters
        ----------
        x : torch.Tensor
            (batch, time, N), zero at padded steps.
        valid : torch.Tensor or None, default=None
            (batch, time) bool, True at the valid steps (a prefix of each sequence);
            None when every step is valid.

        Returns
        -------
        torch.Tensor
            (batch, time, N); rows at padded steps are finite but meaningless.
        """
        s = self.scores(x)
        factors = _factors(s, valid, self.score_range_bound())
        if factors is not None:
            return _chunked_mean(x, *factors)
        log_z = torch.logcumsumexp(s, dim=1)
        mixing = checkpoint(_stable_mean_mixing, s, log_z, use_reentrant=False)
        return mixing @ x

    def matrix_gates(
        self, x: torch.Tensor, valid: torch.Tensor | None, weight: torch.Tensor
    ) -> torch.Tensor:
        """``W vec(M_t) / max(||M_t||, eps)`` for every t, without forming ``M``.

        Parameters
        ----------
        x : torch.Tensor
            (batch, time, N), zero at padded steps.
        valid : torch.Tensor or None
            (batch, time) bool; None when every step is valid.
        weight : torch.Tensor
            (G, r * N): the gate weights acting on the flattened (row-major) ``M_t``.

        Returns
        -------
        torch.Tensor
            (batch, time, G).

        Notes
        -----
        ``W vec(M_t) = sum_k W_k M_tk`` and ``||M_t||^2 = sum_k ||M_tk||^2`` with
        ``M_tk = q_tk * cumsum_s(p_sk x_s)``. A custom autograd function walks the hops,
        keeping one (batch, time, N) block alive at a time and recomputing it (a cheap
        cumsum) in the backward pass, so neither (batch, time, r, N) nor
        (batch, r, time, time) is ever stored; the norm comes from the same block at
        O(T N) per hop, cheaper than the O(T^2 N) Gram-matrix route.
        """
        s = self.scores(x)
        w = weight.reshape(weight.shape[0], self.r, self.n_features).transpose(0, 1)
        factors = _factors(s, valid, self.score_range_bound())
        if factors is not None:
            gates, sq_norm = _MatrixGates.apply(x, *factors, w)
        else:
            log_z = torch.logcumsumexp(s, dim=1)
            gates, sq_norm = 0.0, 0.0
            for k in range(self.r):
                g_k, n_k = checkpoint(
                    _stable_hop, s[..., k], log_z[..., k], x, w[k], use_reentrant=False
                )
                gates, sq_norm = gates + g_k, sq_norm + n_k
        # clamp before sqrt: a zero norm (all-zero input) gets a finite gradient.
        norm = torch.sqrt(sq_norm.clamp_min(NORM_EPS**2))
        return gates / norm[..., None]

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}, r={self.r}, d_a={self.d_a}"


def _factors(s, valid, bound: float = math.inf):
    """``(p, q)`` with ``A[k,t,s] = q_tk p_sk``, or None when the score range is too wide.

    Padded steps come after the valid ones, so they never enter a valid step's prefix;
    they are left out of the range so that padding cannot change the numerics.
    ``valid=None``: no padding. ``bound``: a known upper bound on the range (from the
    weights); when it is within the limit the scores are not read (no host sync).
    """
    big = torch.finfo(s.dtype).max
    limit = math.log(big) / 2
    detached = s.detach()
    if valid is None:
        top, bottom = detached.amax(1, keepdim=True), detached.amin(1, keepdim=True)
    else:
        mask = valid[..., None]
        top = detached.masked_fill(~mask, -big).amax(1, keepdim=True)
        bottom = detached.masked_fill(~mask, big).amin(1, keepdim=True)
    # 1% for the rounding of the scores themselves
    if not bound * 1.01 <= limit and bool(((top - bottom) > limit).any()):
        return None
    centre = (top + bottom) / 2  # any constant is exact: no gradient through it
    p = torch.exp(s - centre)
    # 1 / cumsum(p) = exp(c - L): the cumsum is >= exp(-range/2), so neither it nor the
    # 1/Z^2 of its gradient can overflow within the range limit.
    return p, 1.0 / torch.cumsum(p, dim=1)


def _chunked_mean(x, p, q, chunk: int = 32):
    """``(1/r) sum_k q_tk sum_{s<=t} p_sk x_s``: (batch, time, N), chunk by chunk.

    Within a chunk of C steps the causal weights are a dense (C x C) product; earlier
    chunks enter through their running sums ``sum_s p_sk x_s`` (r x N per chunk), as in
    chunked linear attention. Cost O(T N (C + 2r)) instead of O(T^2 N) for one
    (T x T) mixing matrix.
    """
    batch, n_steps, n_features = x.shape
    r = p.shape[2]
    size = min(chunk, n_steps)
    n_chunks = -(-n_steps // size)
    pad = n_chunks * size - n_steps
    if pad:  # p = 0 on the extra steps: they add nothing
        x, p, q = (torch.nn.functional.pad(v, (0, 0, 0, pad)) for v in (x, p, q))
    # (batch * chunks, C, .): one batched GEMM per term; 1/r folded into the small q
    xc = x.reshape(batch * n_chunks, size, n_features)
    pc, qc = p.reshape(batch * n_chunks, size, r), (q / r).reshape(batch * n_chunks, size, r)
    out = (qc @ pc.transpose(1, 2)).tril_() @ xc
    if n_chunks > 1:
        sums = (pc.transpose(1, 2) @ xc).unflatten(0, (batch, n_chunks))  # (B, n, r, N)
        before = torch.cat([torch.zeros_like(sums[:, :1]), sums[:, :-1].cumsum(1)], dim=1)
        out = torch.baddbmm(out, qc, before.flatten(0, 1))  # fused add
    return out.reshape(batch, n_chunks * size, n_features)[:, :n_steps]


def _causal_mask(n_steps: int, device) -> torch.Tensor:
    return torch.ones(n_steps, n_steps, dtype=torch.bool, device=device).tril()


def _stable_mean_mixing(s, log_z):
    """(1/r) sum_k exp(S_sk - L_tk) for s <= t: (batch, time, time), no shifted products."""
    causal = _causal_mask(s.shape[1], s.device)
    total = 0.0
    for k in range(s.shape[2]):
        logits = s[:, None, :, k] - log_z[:, :, None, k]
        total = total + torch.exp(logits.masked_fill(~causal, -math.inf))
    return total / s.shape[2]


def _stable_hop(s_k, log_z_k, x, w_k):
    """Gate contribution (batch, time, G) and ||M_tk||^2 (batch, time) of one hop."""
    causal = _causal_mask(s_k.shape[1], s_k.device)
    mixing = torch.exp((s_k[:, None, :] - log_z_k[:, :, None]).masked_fill(~causal, -math.inf))
    m_k = mixing @ x
    return m_k @ w_k.T, m_k.pow(2).sum(-1)


class _MatrixGates(torch.autograd.Function):
    """``(sum_k M_k W_k^T, sum_k ||M_k||^2)`` with ``M_k = q_k * cumsum(p_k * x)``.

    Shapes: x (B, T, N), p and q (B, T, r), w (r, G, N) -> (B, T, G), (B, T).
    """

    @staticmethod
    def forward(ctx, x, p, q, w):
        gates = x.new_zeros(x.shape[0], x.shape[1], w.shape[1])
        sq_norm = x.new_zeros(x.shape[:2])
        for k in range(w.shape[0]):
            _, m_k = _hop_block(x, p, q, k)
            gates += m_k @ w[k].T
            sq_norm += m_k.pow(2).sum(-1)
        ctx.save_for_backward(x, p, q, w)
        return gates, sq_norm

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_gates, grad_sq_norm):
        x, p, q, w = ctx.saved_tensors
        grad_x = torch.zeros_like(x)
        grad_p, grad_q, grad_w = torch.zeros_like(p), torch.zeros_like(q), torch.zeros_like(w)
        flat_grad = grad_gates.flatten(0, 1)
        for k in range(w.shape[0]):
            u_k, m_k = _hop_block(x, p, q, k)
            grad_w[k] = flat_grad.T @ m_k.flatten(0, 1)
            grad_m = grad_gates @ w[k] + 2 * grad_sq_norm[..., None] * m_k
            grad_q[..., k] = (grad_m * u_k).sum(-1)
            # adjoint of a prefix sum over time is a suffix sum
            suffix = (q[..., k, None] * grad_m).flip(1).cumsum(1).flip(1)
            grad_p[..., k] = (suffix * x).sum(-1)
            grad_x += p[..., k, None] * suffix
        return grad_x, grad_p, grad_q, grad_w


def _hop_block(x, p, q, k):
    u_k = torch.cumsum(p[..., k, None] * x, dim=1)
    return u_k, q[..., k, None] * u_k
