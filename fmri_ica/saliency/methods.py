"""Attribution methods for recurrent classifiers on (batch, time, features) inputs.

One entry point, :func:`attribute`, shaped like captum's ``attribute``. Every method
except TSR is a thin wrapper around captum; what we add is what recurrent models on
long sequences need:

- the model runs in eval mode (dropout off) with cuDNN disabled, because backward
  through a cuDNN RNN in eval mode fails on GPU; the caller's training flag and dtype
  are restored/untouched afterwards;
- ``lengths`` travel to the model through ``additional_forward_args``, and padded steps
  (``t >= length``) get exactly zero attribution;
- samples are processed in chunks of ``batch_size`` so memory stays bounded;
- the paper's saliency, |d p_target / d x|, is safe in float32: the softmax (or
  log-softmax) and its gradient are taken in float64 from the logits and rescaled per
  sample before the float32 backward pass, because the plain float32 gradient of a
  confident network underflows to exactly 0 (see :class:`ModelOutput`).

DeepLift and DeepLiftShap are deliberately not offered: captum's rules cannot see
inside LSTM/GRU gates, so on ``nn.LSTM`` DeepLift silently equals Input x Gradient and
loses its completeness property (see docs/saliency.md).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

from .._utils import check_option, progress
from ..exceptions import InputDataError, InvalidParameterError

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "OUTPUTS", "ModelOutput", "attribute", "tsr"]

METHODS = (
    "gradient",
    "input_x_gradient",
    "integrated_gradients",
    "smoothgrad",
    "gradient_shap",
    "occlusion",
    "tsr",
)
OUTPUTS = ("probability", "logit", "log_probability")

# Which model output each method explains by default. The paper's saliency (and its
# smoothed version) is the gradient of the softmax probability; the path and
# perturbation methods explain the logit, as in captum's own examples.
_DEFAULT_OUTPUT = {
    "gradient": "probability",
    "smoothgrad": "probability",
    "input_x_gradient": "logit",
    "integrated_gradients": "logit",
    "gradient_shap": "logit",
    "occlusion": "logit",
}

# Options each method accepts (beyond the common ones), with their defaults.
_METHOD_OPTIONS = {
    "gradient": {},
    "input_x_gradient": {},
    "integrated_gradients": {
        "baselines": 0.0,
        "n_steps": 50,
        "internal_batch_size": None,
        "return_convergence_delta": False,
    },
    "smoothgrad": {"nt_samples": 25, "stdevs": 0.5, "nt_samples_batch_size": None},
    "gradient_shap": {"baselines": None, "n_samples": 20, "stdevs": 0.09},
    "occlusion": {
        "window": (5, 5),
        "strides": None,
        "baselines": 0.0,
        "perturbations_per_eval": 16,
    },
}


class ModelOutput(nn.Module):
    """Wrap a classifier so that its forward returns the quantity to explain.

    Parameters
    ----------
    model : nn.Module
        ``model(x, lengths=None) -> logits (batch, classes)``. Never modified.
    output : {"probability", "logit", "log_probability"}, default="probability"
    dtype : torch.dtype, optional
        The dtype the model runs in; None: its own. Another dtype runs it on parameters
        cast once, here (``torch.func.functional_call``), without copying the model.

    Notes
    -----
    For ``probability`` and ``log_probability`` the forward pass takes inputs of any
    float dtype and returns float64: the logits are cast to float64 and the softmax (or
    log-softmax) taken there. Its backward pass computes the logits' gradient in float64,
    in a form without cancellation (``p_y sum_{j != y} p_j`` rather than
    ``p_y (1 - p_y)``), divides it by its largest entry per sample, runs the model's
    backward pass in the model's dtype, and multiplies the input gradient back in
    float64. So a confident network, whose softmax gradient lies far below float32's
    range (e^-300 for a logit margin of 300), still gets its saliency map at float32
    cost: equal to float64's within float32 rounding of the sample's largest entry
    (~1e-6), its overall scale within the rounding of the float32 logits (the exponential
    of the margin's error: ~1e-4 at a margin of 300).
    """

    def __init__(self, model: nn.Module, output: str = "probability", dtype=None):
        super().__init__()
        self.model = model
        self.output = check_option("output", output, OUTPUTS)
        param = next(iter(model.parameters()), None)
        own = param.dtype if param is not None else torch.get_default_dtype()
        self.dtype = own if dtype is None else dtype
        if not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point:
            raise InvalidParameterError(
                f"Invalid value for 'dtype': {dtype!r}. Use a floating torch.dtype, e.g. "
                "torch.float64."
            )
        # Cast once per wrapper (one attribution call), not per chunk; detached: the
        # parameters' gradients are never wanted here.
        self._cast = None
        if self.dtype != own:
            self._cast = {
                name: t.detach().to(self.dtype) if t.is_floating_point() else t
                for name, t in [*model.named_parameters(), *model.named_buffers()]
            }
        #: dtype of the inputs given to captum (that of the returned attributions).
        self.input_dtype = self.dtype if self.output == "logit" else torch.float64

    def logits(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The model's logits (batch, classes) for ``x`` (batch, time, features)."""
        args = (x.to(self.dtype),) if lengths is None else (x.to(self.dtype), lengths)
        if self._cast is None:
            return self.model(*args)
        return torch.func.functional_call(self.model, self._cast, args)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if self.output == "logit":
            return self.logits(x, lengths)
        scale = _Scale()
        logits = self.logits(_RescaledCast.apply(x, self.dtype, scale), lengths)
        return _SoftmaxHead.apply(logits, self.output == "log_probability", scale)


class _Scale:
    """Per-sample factors (batch,) set by :class:`_SoftmaxHead`'s backward pass."""

    value: torch.Tensor | None = None


class _RescaledCast(torch.autograd.Function):
    """``x.to(dtype)``; the backward pass casts back and multiplies by the head's scale."""

    @staticmethod
    def forward(ctx, x, dtype, scale):
        ctx.scale, ctx.x_dtype = scale, x.dtype
        return x.to(dtype, copy=True)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        grad = grad.to(ctx.x_dtype)
        factor = ctx.scale.value
        if factor is not None:
            if factor.shape[0] != grad.shape[0]:
                raise InvalidParameterError(
                    f"The model returned {factor.shape[0]} rows of logits for {grad.shape[0]}"
                    " samples; saliency needs one row per sample."
                )
            grad = grad * factor.to(grad.dtype).reshape(-1, *[1] * (grad.dim() - 1))
        return grad, None, None


class _SoftmaxHead(torch.autograd.Function):
    """(log-)softmax in float64, whose gradient reaches the logits rescaled per sample."""

    @staticmethod
    def forward(ctx, logits, log, scale):
        log_p = torch.log_softmax(logits.double(), dim=-1)
        ctx.save_for_backward(log_p)
        ctx.log, ctx.scale, ctx.logits_dtype = log, scale, logits.dtype
        return log_p if log else log_p.exp()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (log_p,) = ctx.saved_tensors
        p, grad = log_p.exp(), grad.double()
        # sum_j over classes, written so that 1 - p_y is never formed (it rounds to 0)
        if ctx.log:  # g_i - p_i sum_j g_j = sum_j (g_i p_j - p_i g_j)
            grad = (grad[:, :, None] * p[:, None, :] - p[:, :, None] * grad[:, None, :]).sum(-1)
        else:  # p_i (g_i - sum_j p_j g_j) = p_i sum_j p_j (g_i - g_j)
            grad = p * (p[:, None, :] * (grad[:, :, None] - grad[:, None, :])).sum(-1)
        factor = grad.abs().amax(dim=-1)
        factor = torch.where(factor > 0, factor, torch.ones_like(factor))
        ctx.scale.value = factor
        return (grad / factor[:, None]).to(ctx.logits_dtype), None, None


def attribute(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | torch.Tensor | None = None,
    method: str = "gradient",
    lengths: torch.Tensor | None = None,
    *,
    output: str | None = None,
    dtype: torch.dtype | None = None,
    batch_size: int = 64,
    seed: int = 0,
    show_progress: bool = False,
    **options,
):
    """Attribute a recurrent classifier's decision to every (time, feature) cell.

    Parameters
    ----------
    model : nn.Module
        ``model(x, lengths=None) -> logits``, x: (batch, time, features). Never
        modified or copied (another ``dtype`` runs it on cast parameters); its
        training flag is restored.
    inputs : Tensor, shape (batch, time, features)
    target : int, Tensor of shape (batch,), or None
        Class to explain per sample; None explains the predicted class.
    method : str, default="gradient"
        One of :data:`METHODS`:

        - ``gradient``: |d output / d x| (the paper's saliency, output = probability);
        - ``input_x_gradient``: x * d output / d x (captum InputXGradient);
        - ``integrated_gradients``: captum IntegratedGradients; options ``baselines``
          (default 0), ``n_steps`` (50), ``internal_batch_size``,
          ``return_convergence_delta`` (then ``(attributions, delta)`` is returned,
          delta of shape (batch,));
        - ``smoothgrad``: captum NoiseTunnel over |gradient|; options ``nt_samples``
          (25), ``stdevs`` (0.5, in input units: inputs are assumed z-scored),
          ``nt_samples_batch_size``;
        - ``gradient_shap``: captum GradientShap; options ``baselines`` (a
          (k, time, features) background set; default a single all-zero sequence),
          ``n_samples`` (20), ``stdevs`` (0.09, as in Ismail et al. 2020);
        - ``occlusion``: captum Occlusion with (time, feature) windows; options
          ``window`` ((5, 5)), ``strides`` (default = window), ``baselines`` (0),
          ``perturbations_per_eval`` (16);
        - ``tsr``: temporal saliency rescaling (see :func:`tsr`); options
          ``base_method`` ("gradient"), ``time_quantile`` (0.55),
          ``feature_default`` (0.1), ``baseline`` (0.0), plus the base method's.
    lengths : Tensor of shape (batch,), optional
        Valid length of each sequence; steps ``t >= length`` get zero attribution.
    output : {"probability", "logit", "log_probability"}, optional
        Model output to explain. Default: probability for ``gradient`` and
        ``smoothgrad`` (as in the paper), logit for the others.
    dtype : torch.dtype, optional
        The dtype the model runs in. Default: its own (float32 for trained models):
        for the probability and the log-probability this is safe, because their
        gradient is taken in float64 and rescaled per sample before the model's
        backward pass (see :class:`ModelOutput`); a sample whose map still comes out
        all zero (e.g. saturated gates underflowing in float32) is recomputed with the
        model in float64. ``torch.float64`` runs the whole model in float64, on
        parameters cast once per call (no copy of the model).
    batch_size : int, default=64
        Samples per chunk; bounds memory (for TSR: perturbed copies per chunk).
    seed : int, default=0
        Seeds the noise of ``smoothgrad`` and ``gradient_shap``.
    show_progress : bool, default=False
        Show a progress bar over chunks.

    Returns
    -------
    Tensor, shape (batch, time, features)
        Attributions on the inputs' device: float64 for the probability and the
        log-probability (their gradients can lie below float32's range), else in the
        dtype the model runs in.

    Raises
    ------
    InvalidParameterError
        Unknown method, option or output; bad target, lengths or batch size.
    InputDataError
        ``inputs`` is not a 3-D floating tensor.
    """
    check_option("method", method, METHODS)
    x, lengths = _check_inputs(inputs, lengths)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidParameterError(
            f"Invalid value for 'batch_size': {batch_size!r}. Use an int >= 1."
        )
    if method == "tsr":
        return tsr(
            model,
            x,
            target,
            lengths,
            output=output,
            dtype=dtype,
            batch_size=batch_size,
            seed=seed,
            show_progress=show_progress,
            **options,
        )
    opts = _resolve_options(method, options)
    output = check_option("output", output or _DEFAULT_OUTPUT[method], OUTPUTS)
    with _prepared(model, output, dtype) as wrapped:
        targets = _resolve_target(wrapped, x, target, lengths, batch_size)
        x = x.to(wrapped.input_dtype)
        chunks, deltas = [], []
        starts = range(0, x.shape[0], batch_size)
        for start in progress(starts, desc=f"saliency[{method}]", enabled=show_progress):
            stop = start + batch_size
            sub_len = None if lengths is None else lengths[start:stop]
            result = _attribute_checked(
                wrapped, method, x[start:stop], targets[start:stop], sub_len, opts, seed + start
            )
            if isinstance(result, tuple):
                result, delta = result
                deltas.append(delta.detach())
            chunks.append(result.detach())
        attributions = _zero_padding(torch.cat(chunks).contiguous(), lengths)
    if opts.get("return_convergence_delta"):
        return attributions, torch.cat(deltas)
    return attributions


def tsr(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    *,
    base_method: str = "gradient",
    time_quantile: float = 0.55,
    feature_default: float = 0.1,
    baseline: float = 0.0,
    output: str | None = None,
    dtype: torch.dtype | None = None,
    batch_size: int = 64,
    seed: int = 0,
    show_progress: bool = False,
    **options,
) -> torch.Tensor:
    """Temporal saliency rescaling (Ismail et al., NeurIPS 2020), batched.

    Step 1, time relevance: for every valid time step t, set x[t, :] to ``baseline``
    and score t by sum |A(x) - A(x with t masked)| over all cells, where A is the
    ``base_method`` attribution; min-max scale the scores over time.
    Step 2, feature relevance: for the time steps whose scaled score exceeds its
    ``time_quantile`` quantile, set each single cell x[t, i] to ``baseline`` and score
    feature i the same way; min-max scale over features. Other time steps get
    ``feature_default`` for every feature. The map is time score x feature score.
    The defaults (0.55 quantile, 0.1) are those of the authors' code
    (github.com/ayaabdelsalam91/TS-Interpretability-Benchmark, ``getTwoStepRescaling``).

    The masked copies are attributed many at a time (``batch_size`` copies per
    call) instead of one by one. The cost per sample is still
    1 + T + ceil((1 - time_quantile) * T) * N base attributions (about 0.45 T N):
    for T = N = 100 that is ~4,600 gradients per sample; use it on a few samples.

    Parameters
    ----------
    model, inputs, target, lengths, output, batch_size, seed, show_progress
        As in :func:`attribute`; ``inputs`` (batch, time, features).
    dtype : torch.dtype, optional
        The dtype the model runs in. Default float64 (unlike :func:`attribute`): the
        scores are sums of differences between the maps of nearly equal inputs, which
        float32 rounding (about 1e-7 of the largest entry, per cell) would swamp for the
        cells that matter little.
    base_method : str, default="gradient"
        Any :data:`METHODS` entry except ``tsr``.
    time_quantile : float in [0, 1), default=0.55
    feature_default : float, default=0.1
    baseline : float, default=0.0
        Value a masked cell takes (0 = the mean of z-scored data).
    **options
        Options of the base method.

    Returns
    -------
    Tensor, shape (batch, time, features)
        Non-negative relevance; zero on padded steps.
    """
    check_option("base_method", base_method, [m for m in METHODS if m != "tsr"])
    if not 0.0 <= time_quantile < 1.0:
        raise InvalidParameterError(
            f"Invalid value for 'time_quantile': {time_quantile!r}. Use a number in [0, 1)."
        )
    x, lengths = _check_inputs(inputs, lengths)
    output = check_option("output", output or _DEFAULT_OUTPUT[base_method], OUTPUTS)
    opts = _resolve_options(base_method, options)
    if opts.get("return_convergence_delta"):
        raise InvalidParameterError(
            "'return_convergence_delta' is not available with method 'tsr'."
        )
    with _prepared(model, output, torch.float64 if dtype is None else dtype) as wrapped:
        targets = _resolve_target(wrapped, x, target, lengths, batch_size)
        x = x.to(wrapped.input_dtype)

        def attr(batch, tgt, lens):
            out = _attribute_checked(wrapped, base_method, batch, tgt, lens, opts, seed)
            return _zero_padding(out.detach(), lens)

        maps = []
        for i in progress(range(x.shape[0]), desc="saliency[tsr]", enabled=show_progress):
            n_valid = x.shape[1] if lengths is None else int(lengths[i])
            sample_len = None if lengths is None else lengths[i : i + 1]
            maps.append(
                _tsr_one(
                    attr,
                    x[i],
                    targets[i],
                    sample_len,
                    n_valid,
                    batch_size,
                    time_quantile,
                    feature_default,
                    baseline,
                )
            )
    return torch.stack(maps).contiguous()


def _tsr_one(attr, x, target, length, n_valid, batch_size, quantile, default, baseline):
    """TSR map of one sample x: (time, features)."""
    n_time, n_feat = x.shape
    reference = attr(x[None], target[None], length)[0]

    def relevance(cells: list[tuple[slice | int, slice | int]]) -> torch.Tensor:
        scores = []
        for start in range(0, len(cells), batch_size):
            part = cells[start : start + batch_size]
            copies = x.expand(len(part), n_time, n_feat).clone()
            for k, (t, f) in enumerate(part):
                copies[k, t, f] = baseline
            lens = None if length is None else length.expand(len(part))
            masked = attr(copies, target.expand(len(part)), lens)
            scores.append((masked - reference).abs().sum(dim=(1, 2)))
        return torch.cat(scores)

    time_scores = _minmax_1d(relevance([(t, slice(None)) for t in range(n_valid)]))
    threshold = torch.quantile(time_scores, quantile)
    feature_scores = torch.full((n_valid, n_feat), float(default), dtype=x.dtype, device=x.device)
    chosen = torch.nonzero(time_scores > threshold).flatten().tolist()
    if chosen:
        cells = [(t, f) for t in chosen for f in range(n_feat)]
        scores = relevance(cells).reshape(len(chosen), n_feat)
        feature_scores[chosen] = torch.stack([_minmax_1d(row) for row in scores])
    result = torch.zeros_like(x)
    result[:n_valid] = time_scores[:, None] * feature_scores
    return result


def _minmax_1d(values: torch.Tensor) -> torch.Tensor:
    span = values.max() - values.min()
    if span <= 0:
        return torch.zeros_like(values)
    return (values - values.min()) / span


def _attribute_checked(wrapped, method, x, target, lengths, opts, seed):
    """:func:`_attribute_chunk`; samples whose map underflowed to all zeros are redone in
    float64 (a float64 map that is all zero too is kept)."""
    result = _attribute_chunk(wrapped, method, x, target, lengths, opts, seed)
    if (isinstance(result, tuple) or method == "occlusion" or wrapped.output == "logit"
            or wrapped.dtype == torch.float64):
        return result
    dead = torch.nonzero(result.flatten(1).abs().amax(dim=1) == 0).flatten()
    if len(dead):
        logger.info("Recomputing %d sample(s) in float64: their %s map underflowed in %s.",
                    len(dead), method, wrapped.dtype)
        exact = ModelOutput(wrapped.model, wrapped.output, torch.float64)
        sub_len = None if lengths is None else lengths[dead.cpu()]
        result = result.clone()
        result[dead] = _attribute_chunk(
            exact, method, x[dead], target[dead], sub_len, opts, seed
        ).to(result.dtype)
    return result


def _attribute_chunk(wrapped, method, x, target, lengths, opts, seed):
    """Run one captum method on a chunk; returns attributions (and delta for IG)."""
    from captum.attr import (
        GradientShap,
        InputXGradient,
        IntegratedGradients,
        NoiseTunnel,
        Occlusion,
        Saliency,
    )

    extra = None if lengths is None else (lengths,)
    if method != "occlusion":
        x = x.detach().requires_grad_()  # captum warns (and copies) otherwise
    common = {"target": target, "additional_forward_args": extra}
    if method == "gradient":
        return Saliency(wrapped).attribute(x, abs=True, **common)
    if method == "input_x_gradient":
        return InputXGradient(wrapped).attribute(x, **common)
    if method == "integrated_gradients":
        return IntegratedGradients(wrapped).attribute(
            x,
            baselines=_as_baseline(opts["baselines"], x),
            n_steps=opts["n_steps"],
            internal_batch_size=opts["internal_batch_size"],
            return_convergence_delta=opts["return_convergence_delta"],
            **common,
        )
    with _seeded(seed, x.device):
        if method == "smoothgrad":
            return NoiseTunnel(Saliency(wrapped)).attribute(
                x,
                nt_type="smoothgrad",
                nt_samples=opts["nt_samples"],
                nt_samples_batch_size=opts["nt_samples_batch_size"],
                stdevs=opts["stdevs"],
                abs=True,
                **common,
            )
        if method == "gradient_shap":
            background = opts["baselines"]
            if background is None:
                background = torch.zeros_like(x[:1])
            background = torch.as_tensor(background).to(dtype=x.dtype, device=x.device)
            if background.dim() != 3 or background.shape[1:] != x.shape[1:]:
                raise InvalidParameterError(
                    "Invalid 'baselines' for gradient_shap: expected a (k, time, features) "
                    f"background set matching inputs {tuple(x.shape[1:])}, got {tuple(background.shape)}."
                )
            return GradientShap(wrapped).attribute(
                x,
                baselines=background.contiguous(),
                n_samples=opts["n_samples"],
                stdevs=opts["stdevs"],
                **common,
            )
    # occlusion
    window = tuple(int(w) for w in opts["window"])
    strides = window if opts["strides"] is None else tuple(int(s) for s in opts["strides"])
    if len(window) != 2 or len(strides) != 2 or min(window + strides) < 1:
        raise InvalidParameterError(
            f"Invalid 'window'/'strides' for occlusion: {window}/{strides}. "
            "Use two positive ints (time steps, features)."
        )
    return Occlusion(wrapped).attribute(
        x,
        sliding_window_shapes=window,
        strides=strides,
        baselines=_as_baseline(opts["baselines"], x),
        perturbations_per_eval=opts["perturbations_per_eval"],
        **common,
    )


def _as_baseline(baseline, x):
    if isinstance(baseline, torch.Tensor):
        return baseline.to(dtype=x.dtype, device=x.device).expand_as(x).contiguous()
    return float(baseline)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Reproducible captum noise without disturbing the caller's RNG state."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _prepared(model: nn.Module, output: str, dtype):
    """The eval-mode wrapped model with cuDNN off; restores the caller's training flag."""
    wrapped = ModelOutput(model, output, dtype)
    was_training = model.training
    model.eval()
    try:
        # cuDNN RNN backward refuses eval mode; the native kernels do not.
        with torch.backends.cudnn.flags(enabled=False):
            yield wrapped
    finally:
        model.train(was_training)


def _resolve_options(method: str, options: dict) -> dict:
    allowed = _METHOD_OPTIONS[method]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        names = ", ".join(map(repr, allowed)) or "none"
        raise InvalidParameterError(
            f"Unknown option(s) {', '.join(map(repr, unknown))} for method {method!r}. "
            f"Allowed: {names}."
        )
    return {**allowed, **options}


def _check_inputs(inputs, lengths):
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 3 or not inputs.is_floating_point():
        shape = tuple(inputs.shape) if hasattr(inputs, "shape") else type(inputs).__name__
        raise InputDataError(
            f"'inputs' must be a floating tensor of shape (batch, time, features); got {shape}."
        )
    if lengths is None:
        return inputs.detach(), None
    lengths = torch.as_tensor(lengths).long().cpu()
    if lengths.shape != (inputs.shape[0],):
        raise InvalidParameterError(
            f"'lengths' must have shape ({inputs.shape[0]},) (one per sample); got {tuple(lengths.shape)}."
        )
    if (lengths < 1).any() or (lengths > inputs.shape[1]).any():
        raise InvalidParameterError(
            f"'lengths' must lie in [1, {inputs.shape[1]}] (the time axis); got "
            f"min {int(lengths.min())}, max {int(lengths.max())}."
        )
    return inputs.detach(), lengths


def _resolve_target(wrapped, x, target, lengths, batch_size) -> torch.Tensor:
    n = x.shape[0]
    if target is None:
        preds = []
        with torch.no_grad():
            for start in range(0, n, batch_size):
                sub_len = None if lengths is None else lengths[start : start + batch_size]
                preds.append(wrapped.logits(x[start : start + batch_size], sub_len).argmax(dim=-1))
        return torch.cat(preds).to(x.device)
    if isinstance(target, int) and not isinstance(target, bool):
        return torch.full((n,), target, dtype=torch.long, device=x.device)
    target = torch.as_tensor(target)
    if target.shape != (n,) or target.is_floating_point():
        raise InvalidParameterError(
            f"'target' must be an int, None, or an integer tensor of shape ({n},); "
            f"got {target.dtype} of shape {tuple(target.shape)}."
        )
    return target.long().to(x.device)


def _zero_padding(attributions: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    if lengths is None:
        return attributions
    steps = torch.arange(attributions.shape[1], device=attributions.device)
    valid = steps[None, :] < lengths.to(attributions.device)[:, None]
    return attributions * valid[:, :, None].to(attributions.dtype)
