"""A forward pass fit for GPUs: no host syncs on the fast path, and torch.compile works.

torch.compile runs with the ``aot_eager`` backend in the fast set: it traces forward and
backward through AOTAutograd (custom autograd functions, checkpointing, graph breaks) as
inductor does, in seconds; inductor also generates and compiles C++ (about a minute per
model on 2 cores), so that variant is marked slow.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fmri_ica.models import build_model, reference_forward

MODELS = [
    ("ica", {"embedding": "mean", "r": 3, "d_a": 4}),
    ("ica", {"embedding": "matrix", "r": 3, "d_a": 4}),
    ("lstm", {}),
]
IDS = ["ica-mean", "ica-matrix", "lstm"]


class _ValueReads(TorchDispatchMode):
    """Counts reads of a tensor's value by the host (``bool()``, ``int()``, ``.item()``)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def _model(kind, options, dtype=torch.float32):
    torch.manual_seed(0)
    return build_model(kind, 11, 3, hidden_size=5, **options).to(dtype).eval()


@pytest.mark.parametrize(("kind", "options"), MODELS + [("self_attention", {})],
                         ids=IDS + ["self-attention"])
def test_unpadded_forward_and_backward_read_no_tensor_value(kind, options):
    model = _model(kind, options)
    x = torch.randn(4, 13, 11, requires_grad=True)
    model(x)  # the first call reads the score bound of the weights, once
    with _ValueReads() as reads:
        model(x).sum().backward()
    assert reads.count == 0


@pytest.mark.parametrize("embedding", ["mean", "matrix"])
def test_score_bound_follows_in_place_weight_updates(embedding):
    # The bound is cached per weight version: after an in-place update that widens the
    # scores beyond float32's fast-path limit, the exact fallback must be chosen again.
    model = _model("ica", {"embedding": embedding, "r": 3, "d_a": 4}, torch.float64)
    x, lengths = torch.randn(3, 60, 11, dtype=torch.float64), torch.tensor([60, 20, 1])
    model(x, lengths)
    assert model.attention.score_range_bound() < 20
    with torch.no_grad():
        model.attention.w2.weight.mul_(1000.0)
    assert model.attention.score_range_bound() > 1000
    expected = reference_forward(model, x, lengths)
    assert (model(x, lengths) - expected).abs().max() <= 1e-10
    logits = model.float()(x.float(), lengths)
    assert torch.isfinite(logits).all()
    assert torch.allclose(logits.double(), expected, atol=1e-4)


def _compare_compiled(backend, kind, options):
    model = _model(kind, options)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend)
    x = torch.randn(4, 13, 11)
    for lengths in (None, torch.tensor([13, 5, 9, 1])):
        x_eager, x_compiled = x.clone().requires_grad_(), x.clone().requires_grad_()
        eager = model(x_eager, lengths)
        eager.sum().backward()
        out = compiled(x_compiled, lengths)
        out.sum().backward()
        torch.testing.assert_close(out, eager)
        torch.testing.assert_close(x_compiled.grad, x_eager.grad)
    torch._dynamo.reset()


@pytest.mark.parametrize(("kind", "options"), MODELS, ids=IDS)
def test_torch_compile_matches_eager(kind, options):
    _compare_compiled("aot_eager", kind, options)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "options"), MODELS, ids=IDS)
def test_torch_compile_inductor_matches_eager(kind, options):
    _compare_compiled("inductor", kind, options)
