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

Forms. ``mean``: ``(1/r) sum_k q_tk sum_{s<=t} p_sk x_s``, computed in chunks of C
steps (dense causal product inside a chunk, running sums across chunks; one chunk up to
128 steps, else C in 24-64 from a cost model): O(T N (C + 2r)) work, O(T N) memory, a
hand-written backward. ``matrix``: ``W vec(M_t) / ||M_t||`` hop by hop, time-major,
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
        bottom, top = torch.aminmax(detached, dim=1, keepdim=True)  # one pass
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


def _chunked_mean(x, p, q, chunk: int | None = None):
    """``(1/r) sum_k q_tk sum_{s<=t} p_sk x_s``: (batch, time, N), chunk by chunk.

    Within a chunk of C steps the causal weights are a dense (C x C) product; earlier
    chunks enter through their running sums ``sum_s p_sk x_s`` (r x N per chunk), as in
    chunked linear attention. Cost O(T N (C + 2r)) instead of O(T^2 N) for one
    (T x T) mixing matrix. ``chunk=None``: :func:`_chunk_size`.
    """
    batch, n_steps, n_features = x.shape
    r = p.shape[2]
    size = min(chunk or _chunk_size(n_steps, r), n_steps)
    n_chunks = -(-n_steps // size)
    pad = n_chunks * size - n_steps
    if pad:  # p = 0 on the extra steps: they add nothing
        x, p, q = (torch.nn.functional.pad(v, (0, 0, 0, pad)) for v in (x, p, q))
    # (batch * chunks, C, .): one batched GEMM per term; 1/r folded into the small q
    xc = x.reshape(batch * n_chunks, size, n_features)
    pc, qc = p.reshape(batch * n_chunks, size, r), (q / r).reshape(batch * n_chunks, size, r)
    out = _ChunkedMean.apply(xc, pc, qc, n_chunks)
    out = out.view(batch, n_chunks * size, n_features)
    return out[:, :n_steps] if pad else out


def _chunk_size(n_steps: int, r: int) -> int:
    """Steps per chunk: one chunk up to 128 steps, else the cheapest of 24-96 steps.

    A chunk of C steps costs ~C + 2r multiply-adds per step and feature (the dense block,
    the running sums in and out) plus a fixed cost per chunk (small GEMMs run slowly and
    every chunk is a few more kernel calls), here worth 2000 steps' multiply-adds. Padding
    the last chunk copies ``x``, the factors and the output (and makes the output a strided
    view the recurrent layer copies again): worth 60 multiply-adds per step, so a chunk size
    that divides T wins when there is one near the best. Measured on 1 thread with the
    recurrent layer that reads the output (B = 32, H = 128, r = 20; medians of 15 paired
    repeats): at T = 284, 71 steps (4 chunks) ran 5% faster than 41 (7 chunks, 3 padded
    steps) at N = 300 (interquartile range 1.5-11%), and the same at N = 100.
    """
    if n_steps <= 128:
        return n_steps

    def cost(size):
        n_chunks = -(-n_steps // size)
        padded = n_chunks * size
        copies = 60 * n_steps if padded > n_steps else 0
        return padded * (size + 2 * r) + 2000 * n_chunks + copies

    return min(range(24, 97), key=cost)


class _ChunkedMean(torch.autograd.Function):
    """Chunked causal mix with a hand-written backward: no pads, cats or cumsum copies.

    Shapes: xc (B n, C, N), pc and qc (B n, C, r) for n chunks per sequence -> (B n, C, N).
    ``mix`` (B n, C, C) and the running sums ``before`` (B, n, r, N) are kept for the
    backward pass: O(T (C + r N / C)) per sequence, less than ``x`` itself.
    """

    @staticmethod
    def forward(ctx, xc, pc, qc, n_chunks):
        mix = torch.bmm(qc, pc.transpose(1, 2)).tril_()
        out = torch.bmm(mix, xc)
        before = None
        if n_chunks > 1:
            sums = torch.bmm(pc.transpose(1, 2), xc).unflatten(0, (-1, n_chunks))
            before = _exclusive_sums(sums, reverse=False)
            out.baddbmm_(qc, before.flatten(0, 1))
        ctx.n_chunks = n_chunks
        ctx.save_for_backward(xc, pc, qc, mix, before)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        xc, pc, qc, mix, before = ctx.saved_tensors
        grad = grad.contiguous()
        grad_mix = torch.bmm(grad, xc.transpose(1, 2)).tril_()
        grad_x = torch.bmm(mix.transpose(1, 2), grad) if ctx.needs_input_grad[0] else None
        grad_q = torch.bmm(grad_mix, pc)
        grad_p = torch.bmm(grad_mix.transpose(1, 2), qc)
        if before is not None:
            grad_q.baddbmm_(grad, before.flatten(0, 1).transpose(1, 2))
            grad_before = torch.bmm(qc.transpose(1, 2), grad).unflatten(0, (-1, ctx.n_chunks))
            # the running sum of chunk j reaches every later chunk: a suffix sum
            grad_sums = _exclusive_sums(grad_before, reverse=True).flatten(0, 1)
            if grad_x is not None:
                grad_x.baddbmm_(pc, grad_sums)
            grad_p.baddbmm_(xc, grad_sums.transpose(1, 2))
        return grad_x, grad_p, grad_q, None


def _exclusive_sums(sums, reverse: bool):
    """Sums over the chunks strictly before (after, ``reverse``) each one: (B, n, r, N).

    A loop of slice adds: ``torch.cumsum`` over a middle dimension is ~5x slower here, and
    flip/cat would copy.
    """
    out = torch.empty_like(sums)
    n_chunks = sums.shape[1]
    order = range(n_chunks - 1, -1, -1) if reverse else range(n_chunks)
    previous = None
    for j in order:
        if previous is None:
            out[:, j].zero_()
        else:
            torch.add(out[:, previous], sums[:, previous], out=out[:, j])
        previous = j
    return out


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

    Works time-major inside: (T, B, N) buffers reused hop by hop, so a prefix sum steps
    over contiguous (B, N) slabs (:func:`_prefix_sum_`), GEMMs accumulate in place, and
    the gates come out time-major, the layout the fused recurrence reads (no copy there).
    The adjoint of a prefix sum is a suffix sum: the same loop run backwards, so nothing
    is flipped. Work for an input that needs no gradient (frozen weights in saliency, the
    data in training) is skipped.
    """

    @staticmethod
    def forward(ctx, x, p, q, w):
        x, p, q = (v.transpose(0, 1).contiguous() for v in (x, p, q))
        n_steps, batch, n_features = x.shape
        gates = x.new_zeros(n_steps * batch, w.shape[1])
        sq_norm = x.new_zeros(n_steps, batch)
        block = torch.empty_like(x)
        for k in range(w.shape[0]):
            _hop_block(x, p[..., k, None], q[..., k, None], out=block)
            gates.addmm_(block.view(-1, n_features), w[k].T)
            sq_norm += torch.linalg.vector_norm(block, dim=-1).square_()
        ctx.save_for_backward(x, p, q, w)
        return gates.view(n_steps, batch, -1).transpose(0, 1), sq_norm.T

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_gates, grad_sq_norm):
        x, p, q, w = ctx.saved_tensors  # time-major
        need_x, _, _, need_w = ctx.needs_input_grad
        n_features = x.shape[2]
        flat_grad = grad_gates.transpose(0, 1).reshape(-1, grad_gates.shape[2])
        twice_grad_norm = 2 * grad_sq_norm.T[..., None]
        grad_x = torch.zeros_like(x) if need_x else None
        grad_p, grad_q = torch.empty_like(p), torch.empty_like(q)
        grad_w = torch.empty_like(w) if need_w else None
        block, grad_m, product = (torch.empty_like(x) for _ in range(3))
        for k in range(w.shape[0]):
            p_k, q_k = p[..., k, None], q[..., k, None]
            _hop_block(x, p_k, q_k, out=block)
            if need_w:
                torch.mm(flat_grad.T, block.view(-1, n_features), out=grad_w[k])
            torch.mm(flat_grad, w[k], out=grad_m.view(-1, n_features))
            grad_m.addcmul_(twice_grad_norm, block)
            # dL/dq = grad_m . u = (grad_m . m) / q
            torch.mul(grad_m, block, out=product)
            torch.sum(product, -1, out=grad_q[..., k]).div_(q[..., k])
            _prefix_sum_(grad_m.mul_(q_k), reverse=True)
            torch.mul(grad_m, x, out=product)
            torch.sum(product, -1, out=grad_p[..., k])
            if need_x:
                grad_x.addcmul_(p_k, grad_m)
        grad_x = grad_x.transpose(0, 1) if need_x else None
        return grad_x, grad_p.transpose(0, 1), grad_q.transpose(0, 1), grad_w


def _hop_block(x, p_k, q_k, out):
    """``M_k = q_k * cumsum_t(p_k * x)`` into ``out``: (T, B, N); p_k, q_k: (T, B, 1)."""
    torch.mul(x, p_k, out=out)
    return _prefix_sum_(out).mul_(q_k)


def _prefix_sum_(values, reverse: bool = False):
    """Cumulative sum over time (dim 0) in place; ``reverse``: from the last step back.

    On the CPU a loop of slab adds: 2-3x faster than ``torch.cumsum`` (whose CPU kernel
    walks each (batch, feature) column with a stride) and needs no flip for the reverse.
    Elsewhere, and under ``torch.compile`` (which would unroll the loop), ``cumsum``.
    """
    if values.device.type != "cpu" or torch.compiler.is_compiling():
        if reverse:
            return values.copy_(values.flip(0).cumsum(0).flip(0))
        return values.cumsum_(0)
    n_steps = values.shape[0]
    if reverse:
        for t in range(n_steps - 2, -1, -1):
            values[t].add_(values[t + 1])
    else:
        for t in range(1, n_steps):
            values[t].add_(values[t - 1])
    return values
