"""Attribution methods: correctness against slow references, batching, padding, state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fmri_ica.exceptions import InputDataError, InvalidParameterError
from fmri_ica.saliency import attribute, tsr

N_TIME, N_FEAT, N_CLASS = 7, 5, 3


class TinyLSTM(nn.Module):
    """The models' contract: model(x, lengths=None) -> logits; reads the last valid step."""

    def __init__(self, n_features=N_FEAT, n_classes=N_CLASS, hidden=6, dropout=0.0, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.rnn = nn.LSTM(n_features, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x, lengths=None):
        out, _ = self.rnn(x)
        if lengths is None:
            last = out[:, -1]
        else:
            last = out[torch.arange(x.shape[0]), lengths.to(x.device) - 1]
        return self.head(self.drop(last))


class LastStep(TinyLSTM):
    """Ignores lengths, so padded steps do influence it: zeroing must be explicit."""

    def forward(self, x, lengths=None):
        return super().forward(x, None)


@pytest.fixture
def x():
    torch.manual_seed(1)
    return torch.randn(4, N_TIME, N_FEAT)


@pytest.fixture
def model():
    return TinyLSTM()


def test_gradient_matches_finite_differences(model, x):
    target = torch.tensor([0, 1, 2, 1])
    sal = attribute(model, x, target, method="gradient")
    assert sal.shape == x.shape and sal.dtype == torch.float64
    ref = model.double()  # a local reference copy is fine: the fixture is per-test
    xd, eps = x.double(), 1e-6
    for i, t, f in [(0, 0, 0), (1, 3, 2), (2, 6, 4), (3, 5, 1)]:
        plus, minus = xd.clone(), xd.clone()
        plus[i, t, f] += eps
        minus[i, t, f] -= eps
        with torch.no_grad():
            p_plus = torch.softmax(ref(plus[i : i + 1]), -1)[0, target[i]]
            p_minus = torch.softmax(ref(minus[i : i + 1]), -1)[0, target[i]]
        numeric = abs(float(p_plus - p_minus)) / (2 * eps)
        assert sal[i, t, f].item() == pytest.approx(numeric, rel=1e-5, abs=1e-10)


@pytest.mark.parametrize(
    "method, options",
    [
        ("gradient", {}),
        ("input_x_gradient", {}),
        ("integrated_gradients", {"n_steps": 8}),
        ("occlusion", {"window": (2, 3), "strides": (1, 2)}),
    ],
)
def test_batched_equals_per_sample(model, x, method, options):
    lengths = torch.tensor([7, 3, 5, 1])
    whole = attribute(model, x, method=method, lengths=lengths, batch_size=3, **options)
    single = torch.cat(
        [
            attribute(
                model,
                x[i : i + 1],
                method=method,
                lengths=lengths[i : i + 1],
                batch_size=1,
                **options,
            )
            for i in range(len(x))
        ]
    )
    torch.testing.assert_close(whole, single)  # dtype-aware tolerances


def test_integrated_gradients_completeness(model, x):
    target = torch.tensor([2, 0, 1, 1])
    attr, delta = attribute(
        model,
        x,
        target,
        method="integrated_gradients",
        output="probability",
        n_steps=100,
        internal_batch_size=64,
        return_convergence_delta=True,
    )
    wrapped = lambda v: torch.softmax(model.double()(v), -1)[torch.arange(4), target]  # noqa: E731
    with torch.no_grad():
        gap = wrapped(x.double()) - wrapped(torch.zeros_like(x, dtype=torch.float64))
    torch.testing.assert_close(attr.sum(dim=(1, 2)), gap, rtol=1e-3, atol=1e-5)
    assert delta.shape == (4,) and delta.abs().max() < 1e-4


@pytest.mark.parametrize(
    "method, options",
    [
        ("gradient", {}),
        ("integrated_gradients", {"n_steps": 4}),
        ("smoothgrad", {"nt_samples": 3}),
        ("gradient_shap", {"n_samples": 3}),
        ("occlusion", {"window": (2, 2)}),
        ("tsr", {}),
    ],
)
def test_padded_steps_get_zero(x, method, options):
    model = LastStep()
    lengths = torch.tensor([7, 2, 4, 5])
    attr = attribute(model, x, method=method, lengths=lengths, **options)
    for i, length in enumerate(lengths):
        assert torch.all(attr[i, length:] == 0)
        assert attr[i, :length].abs().sum() > 0


def test_model_state_is_restored_and_dropout_off(x):
    model = TinyLSTM(dropout=0.5).train()
    first = attribute(model, x, target=0)
    second = attribute(model, x, target=0)
    torch.testing.assert_close(first, second)  # dropout off: deterministic
    assert model.training
    assert next(model.parameters()).dtype == torch.float32
    logits_attr = attribute(model, x, target=0, method="input_x_gradient")
    assert logits_attr.dtype == torch.float32  # logit methods keep the model's dtype


@pytest.mark.parametrize("output", ["probability", "log_probability"])
def test_float32_saliency_survives_softmax_underflow(x, output):
    model, one = TinyLSTM(n_classes=2), x[:1]
    with torch.no_grad():
        model.head.bias.zero_()
        margin = (model(one)[0, 0] - model(one)[0, 1]).abs()
        model.head.weight.mul_(300.0 / margin)  # logit margin 300: p = 1 - e^-300
    target = model(one).argmax(-1)
    # what the float64 head avoids: the plain float32 gradient is exactly zero
    plain = one.clone().requires_grad_()
    torch.softmax(model(plain), -1)[0, target].sum().backward()
    assert plain.grad.abs().sum() == 0
    fast = attribute(model, one, target, output=output)  # the model stays float32
    exact = attribute(model, one, target, output=output, dtype=torch.float64)
    assert fast.abs().sum() > 0 and fast.dtype == torch.float64
    assert 0 < exact.abs().max() < 1e-100 if output == "probability" else 0 < exact.abs().max()
    # Per sample the scale differs by exp(rounding of the float32 logit margin), ~1e-4
    # at a margin of 300; the map itself (what the min-max scaled saliency shows) agrees.
    torch.testing.assert_close(fast / fast.abs().max(), exact / exact.abs().max(),
                               rtol=1e-4, atol=1e-5)


def test_default_target_is_predicted_class(model, x):
    predicted = model(x).argmax(-1)
    torch.testing.assert_close(attribute(model, x), attribute(model, x, predicted))


def test_noise_methods_are_seeded(model, x):
    a = attribute(model, x, method="smoothgrad", nt_samples=4, seed=3)
    b = attribute(model, x, method="smoothgrad", nt_samples=4, seed=3)
    c = attribute(model, x, method="smoothgrad", nt_samples=4, seed=4)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    background = torch.randn(6, N_TIME, N_FEAT)
    shap = attribute(model, x, method="gradient_shap", baselines=background, seed=1)
    assert shap.shape == x.shape and shap.is_contiguous()


def _naive_tsr(model, x, target, quantile=0.55, default=0.1):
    """One masked copy at a time: the definition, without batching."""

    def grad(v):  # float64, as tsr: float32 rounding would differ by batch size
        return attribute(model, v[None], target[None], batch_size=1, dtype=torch.float64)[0]

    ref = grad(x)
    n_time, n_feat = x.shape
    time_rel = torch.zeros(n_time, dtype=torch.float64)
    for t in range(n_time):
        masked = x.clone()
        masked[t, :] = 0
        time_rel[t] = (grad(masked) - ref).abs().sum()
    time_rel = (time_rel - time_rel.min()) / (time_rel.max() - time_rel.min())
    threshold = torch.quantile(time_rel, quantile)
    out = torch.zeros(n_time, n_feat, dtype=torch.float64)
    for t in range(n_time):
        feat = torch.full((n_feat,), default, dtype=torch.float64)
        if time_rel[t] > threshold:
            for f in range(n_feat):
                masked = x.clone()
                masked[t, f] = 0
                feat[f] = (grad(masked) - ref).abs().sum()
            feat = (feat - feat.min()) / (feat.max() - feat.min())
        out[t] = time_rel[t] * feat
    return out


def test_tsr_matches_naive_loop(model, x):
    target = torch.tensor([1, 0, 2, 1])
    fast = tsr(model, x[:2], target[:2], batch_size=4)
    for i in range(2):
        torch.testing.assert_close(fast[i], _naive_tsr(model, x[i], target[i]))
    assert (fast >= 0).all()


def test_errors_name_the_parameter(model, x):
    with pytest.raises(InvalidParameterError, match="Did you mean 'gradient'"):
        attribute(model, x, method="gradients")
    with pytest.raises(InvalidParameterError, match="n_step"):
        attribute(model, x, method="integrated_gradients", n_step=3)
    with pytest.raises(InputDataError, match="batch, time, features"):
        attribute(model, x[0])
    with pytest.raises(InvalidParameterError, match="lengths"):
        attribute(model, x, lengths=torch.tensor([8, 1, 1, 1]))
    with pytest.raises(InvalidParameterError, match="target"):
        attribute(model, x, target=torch.tensor([0, 1]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (cuDNN RNN backward)")
def test_cudnn_rnn_in_eval_mode_on_gpu(x):
    model = TinyLSTM(dropout=0.3).cuda().eval()
    lengths = torch.tensor([7, 3, 5, 2])
    sal = attribute(model, x.cuda(), method="gradient", lengths=lengths)
    assert sal.is_cuda and not model.training
    cpu = attribute(model.cpu(), x, method="gradient", lengths=lengths)
    torch.testing.assert_close(sal.cpu(), cpu, rtol=1e-6, atol=1e-12)
