"""Saliency with the model in float32 agrees with float64, without copying the model."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn

from fmri_ica.models import build_model
from fmri_ica.saliency import attribute

MODELS = [
    ("ica", {"embedding": "mean", "r": 5, "d_a": 8}),
    ("ica", {"embedding": "matrix", "r": 5, "d_a": 8}),
    ("lstm", {}),
]
METHODS = [
    ("gradient", {}),
    ("gradient", {"output": "log_probability"}),
    ("smoothgrad", {"nt_samples": 3}),
    ("integrated_gradients", {"n_steps": 6, "output": "probability"}),
]


def _normalised(maps):
    return maps / maps.abs().flatten(1).amax(1)[:, None, None]


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 31, 23, generator=gen)
    return x, torch.tensor([31, 17, 31, 5, 26, 31])


@pytest.mark.parametrize(("kind", "options"), MODELS, ids=["ica-mean", "ica-matrix", "lstm"])
@pytest.mark.parametrize(("method", "extra"), METHODS,
                         ids=["gradient", "gradient-logp", "smoothgrad", "ig-probability"])
def test_float32_maps_and_rankings_match_float64(data, kind, options, method, extra):
    torch.manual_seed(0)
    model = build_model(kind, 23, 4, hidden_size=12, **options)
    x, lengths = data
    fast = attribute(model, x, method=method, lengths=lengths, **extra)
    exact = attribute(model, x, method=method, lengths=lengths, dtype=torch.float64, **extra)
    assert fast.dtype == exact.dtype == torch.float64
    # within 1e-5 of each sample's largest entry (about 3e-7 is seen)
    assert (_normalised(fast) - _normalised(exact)).abs().max() <= 1e-5
    top = [maps.abs().sum(1).topk(5, dim=1).indices.sort(1).values for maps in (fast, exact)]
    assert torch.equal(*top)  # the 5 most salient regions of each sample


def test_float64_runs_without_copying_or_changing_the_model(data, monkeypatch):
    torch.manual_seed(0)
    model = build_model("ica", 23, 4, hidden_size=12, r=5, d_a=8).train()
    before = {name: (p.data_ptr(), p.dtype, p.clone()) for name, p in model.named_parameters()}

    def no_copy(*args, **kwargs):
        raise AssertionError("the model was deep-copied")

    monkeypatch.setattr(copy, "deepcopy", no_copy)
    x, lengths = data
    attribute(model, x, lengths=lengths, dtype=torch.float64)
    assert model.training
    for name, p in model.named_parameters():
        ptr, dtype, value = before[name]
        assert p.data_ptr() == ptr and p.dtype == dtype and torch.equal(p, value), name
        assert p.grad is None, name


class _Saturated(nn.Module):
    """tanh'(15) is 4e-13 in float64 but exactly 0 in float32 (tanh(15) rounds to 1)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1e-3))

    def forward(self, x, lengths=None):
        h = torch.tanh(self.scale * x.sum(dim=(1, 2)) + 15.0)
        return torch.stack([h, -h], dim=1)


def test_maps_that_underflow_in_float32_are_redone_in_float64(data, caplog):
    model, x = _Saturated(), data[0][:3]
    with caplog.at_level(logging.INFO, logger="fmri_ica.saliency.methods"):
        fast = attribute(model, x, target=0)
    assert "Recomputing 3 sample(s) in float64" in caplog.text
    exact = attribute(model, x, target=0, dtype=torch.float64)
    assert (exact.flatten(1).amax(1) > 0).all()
    torch.testing.assert_close(fast, exact)
