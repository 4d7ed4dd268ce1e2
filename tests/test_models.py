"""Models: the vectorised input-cell attention equals the step loop; contracts hold."""

from __future__ import annotations

import io
import json

import pytest
import torch

from fmri_ica.exceptions import InputDataError, InvalidParameterError
from fmri_ica.models import (
    MODEL_KINDS,
    InputCellAttentionClassifier,
    build_model,
    model_from_config,
    reference_forward,
)
from fmri_ica.models.attention import _factors

F64 = torch.float64


def _model(kind="ica", n_features=11, n_classes=3, seed=0, **options):
    torch.manual_seed(seed)
    return build_model(kind, n_features, n_classes, **options).to(F64).eval()


def _inputs(batch, n_steps, n_features, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n_steps, n_features, generator=gen, dtype=F64)


def _logits_and_grads(forward, model, x, lengths):
    """Logits and the gradients of their (weighted) sum w.r.t. x and every parameter."""
    x = x.clone().requires_grad_(True)
    logits = forward(model, x, lengths)
    weights = torch.linspace(-1, 2, logits.numel(), dtype=logits.dtype).view_as(logits)
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad((logits * weights).sum(), [x, *params], allow_unused=True)
    return logits.detach(), grads


def _fast(model, x, lengths):
    return model(x, lengths)


def _assert_same(model, x, lengths, tol=1e-10):
    fast, fast_grads = _logits_and_grads(_fast, model, x, lengths)
    slow, slow_grads = _logits_and_grads(reference_forward, model, x, lengths)
    assert (fast - slow).abs().max() <= tol
    for g_fast, g_slow in zip(fast_grads, slow_grads, strict=True):
        g_fast = torch.zeros(()) if g_fast is None else g_fast
        g_slow = torch.zeros(()) if g_slow is None else g_slow
        assert (g_fast - g_slow).abs().max() <= tol


ICA_VARIANTS = [
    {"cell_type": c, "embedding": e} for c in ("lstm", "gru", "rnn") for e in ("mean", "matrix")
] + [
    {"cell_type": "lstm", "embedding": "matrix", "bidirectional": True, "num_layers": 2},
    {"cell_type": "gru", "embedding": "mean", "bidirectional": True},
]


@pytest.mark.parametrize("options", ICA_VARIANTS, ids=lambda o: "-".join(map(str, o.values())))
def test_vectorised_equals_step_loop_small(options):
    model = _model(r=4, d_a=5, hidden_size=6, **options)
    x = _inputs(5, 23, 11)
    _assert_same(model, x, torch.tensor([23, 4, 1, 17, 9]))


@pytest.mark.parametrize("options", ICA_VARIANTS[-2:], ids=["lstm-matrix-bi-2", "gru-mean-bi"])
def test_vectorised_equals_step_loop_unpadded(options):
    # with no padding the recurrence skips packing: a separate code path
    model = _model(r=3, d_a=4, hidden_size=5, **options)
    _assert_same(model, _inputs(3, 13, 11), None)


@pytest.mark.parametrize(
    ("embedding", "cell_type", "n_steps", "n_features"),
    [("mean", "lstm", 300, 360), ("matrix", "gru", 120, 360), ("matrix", "lstm", 300, 40)],
)
def test_vectorised_equals_step_loop_large(embedding, cell_type, n_steps, n_features):
    model = _model(n_features=n_features, r=20, d_a=50, hidden_size=4,
                   embedding=embedding, cell_type=cell_type)
    x = _inputs(2, n_steps, n_features)
    _assert_same(model, x, torch.tensor([n_steps, n_steps // 3]))


@pytest.mark.parametrize("kind", ["lstm", "bilstm", "gru", "self_attention"])
def test_baselines_equal_step_loop(kind):
    model = _model(kind, hidden_size=6, **({"r": 3, "d_a": 4} if kind == "self_attention" else {}))
    _assert_same(model, _inputs(4, 15, 11), torch.tensor([15, 2, 7, 1]))


def test_first_step_is_a_plain_cell_fed_x0():
    model = _model(r=5, d_a=4, hidden_size=6, embedding="mean")
    cell = torch.nn.LSTMCell(11, 6).to(F64)
    cell.load_state_dict({k[:-3]: v for k, v in model.rnn.state_dict().items()})
    x = _inputs(3, 8, 11)
    h, _ = cell(x[:, 0])
    expected = model.head(h)
    assert torch.allclose(model(x, torch.ones(3, dtype=torch.long)), expected, atol=1e-12)
    assert torch.allclose(model(x[:, :1]), expected, atol=1e-12)


@pytest.mark.parametrize("embedding", ["mean", "matrix"])
@pytest.mark.parametrize("score_scale", [1.0, 1000.0])
def test_attention_is_causal(embedding, score_scale):
    model = _model(r=3, d_a=4, hidden_size=5, embedding=embedding)
    with torch.no_grad():
        model.attention.w2.weight.mul_(score_scale)
    x = _inputs(2, 12, 11)
    later = x.clone()
    later[:, 7:] = 50 * torch.randn_like(later[:, 7:])
    valid = torch.ones(2, 12, dtype=torch.bool)
    attention = model.attention
    if embedding == "mean":
        before, after = attention.mean_embedding(x, valid), attention.mean_embedding(later, valid)
    else:
        weight = model.rnn.weight_ih_l0
        before = attention.matrix_gates(x, valid, weight)
        after = attention.matrix_gates(later, valid, weight)
    assert torch.allclose(before[:, :7], after[:, :7], atol=1e-12)
    assert not torch.allclose(before[:, 7:], after[:, 7:])


def test_attention_weights_are_causal_convex_mixes():
    model = _model(r=3, d_a=4)
    weights = model.attention.weights(_inputs(2, 9, 11), torch.ones(2, 9, dtype=torch.bool))
    assert weights.shape == (2, 3, 9, 9)
    assert torch.all(weights.triu(1) == 0)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3, 9, dtype=F64))


@pytest.mark.parametrize(
    ("kind", "options"),
    [("ica", {"embedding": "mean"}), ("ica", {"embedding": "matrix", "bidirectional": True}),
     ("bilstm", {}), ("self_attention", {})],
)
def test_padding_changes_nothing(kind, options):
    model = _model(kind, hidden_size=5, **options)
    x, lengths = _inputs(3, 10, 11), torch.tensor([10, 4, 6])
    garbage = x.clone()
    garbage[1, 4:] = float("nan")
    garbage[2, 6:] = 1e30
    clean, (grad_clean, *_) = _logits_and_grads(_fast, model, x, lengths)
    dirty, (grad_dirty, *_) = _logits_and_grads(_fast, model, garbage, lengths)
    assert torch.equal(clean, dirty)
    assert torch.equal(grad_clean, grad_dirty)
    assert torch.all(grad_dirty[1, 4:] == 0) and torch.all(grad_dirty[2, 6:] == 0)
    assert grad_dirty[1, :4].abs().sum() > 0


@pytest.mark.parametrize("embedding", ["mean", "matrix"])
def test_huge_scores_stay_finite_and_exact(embedding):
    model = _model(r=4, d_a=5, hidden_size=6, embedding=embedding)
    with torch.no_grad():
        model.attention.w2.weight.mul_(1000.0)  # score ranges of ~1e3 per hop
    x, lengths = _inputs(3, 200, 11), torch.tensor([200, 50, 1])
    scores = model.attention.scores(x)
    assert (scores.amax(1) - scores.amin(1)).max() > 500
    valid = torch.ones(3, 200, dtype=torch.bool)
    assert _factors(scores, valid) is None  # the exact fallback
    _assert_same(model, x, lengths)
    expected = reference_forward(model, x, lengths)
    x32 = x.float().requires_grad_(True)
    logits = model.float()(x32, lengths)
    logits.sum().backward()
    assert torch.isfinite(logits).all() and torch.isfinite(x32.grad).all()
    assert torch.allclose(logits.double(), expected, atol=1e-4)


def test_float32_fast_path_near_its_limit_matches_float64():
    model = _model(r=4, d_a=5, hidden_size=6, embedding="matrix")
    with torch.no_grad():
        model.attention.w2.weight.mul_(12.0 / model.attention.w2.weight.abs().sum(1).max())
    x = _inputs(2, 150, 11) * 10
    scores = model.attention.scores(x).float()
    valid = torch.ones(2, 150, dtype=torch.bool)
    assert _factors(scores, valid) is not None  # the fast path
    expected = reference_forward(model, x)
    got = model.float()(x.float())
    assert torch.isfinite(got).all()
    assert torch.allclose(got.double(), expected, atol=1e-4)


def test_bilstm_reads_forward_last_step_and_backward_first_step():
    model = _model("bilstm", hidden_size=5)
    x, lengths = _inputs(3, 9, 11), torch.tensor([9, 3, 6])
    logits = model(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        out, _ = model.rnn(x[b : b + 1, :n])
        state = torch.cat([out[0, n - 1, :5], out[0, 0, 5:]])
        assert torch.allclose(logits[b], model.head(state), atol=1e-12)


def test_training_mode_backpropagates_to_every_parameter():
    model = build_model("ica", 11, 3, embedding="matrix", r=3, d_a=4, hidden_size=5).train()
    model(torch.randn(4, 7, 11), torch.tensor([7, 3, 5, 1])).logsumexp(1).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "kind", ["ica", "lstm", "bilstm", "gru", "self_attention"]
)
def test_config_and_state_dict_round_trip(kind, tmp_path):
    options = {"embedding": "matrix", "cell_type": "gru", "r": 3} if kind == "ica" else {}
    model = build_model(kind, 11, 4, hidden_size=6, **options).eval()
    config = json.loads(json.dumps(model.config))
    assert set(config) == {"kind", "n_features", "n_classes", *MODEL_KINDS[kind]}
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    rebuilt = model_from_config(config).eval()
    rebuilt.load_state_dict(torch.load(path, weights_only=True))
    x = torch.randn(2, 5, 11)
    assert torch.equal(model(x), rebuilt(x))


def test_state_dict_keys_are_the_documented_ones():
    model = build_model("ica", 11, 4, embedding="matrix", r=3, hidden_size=6)
    keys = set(model.state_dict())
    assert {"attention.w1.weight", "attention.w1.bias", "attention.w2.weight",
            "attention.w2.bias", "rnn.weight_ih_l0", "head.weight", "head.bias"} <= keys
    assert model.rnn.weight_ih_l0.shape == (4 * 6, 3 * 11)
    assert isinstance(model.rnn, torch.nn.LSTM)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    assert set(torch.load(buffer, weights_only=True)) == keys


def test_defaults_and_paper_settings():
    model = build_model("ica", 100, 2)
    assert isinstance(model, InputCellAttentionClassifier)
    assert model.config["hidden_size"] == 64 and model.config["r"] == 20
    paper = build_model("ica", 100, 2, hidden_size=5, embedding="matrix")
    assert paper.rnn.hidden_size == 5 and paper.rnn.weight_ih_l0.shape == (20, 2000)
    assert torch.all(paper.rnn.bias_hh_l0 == 0) and paper.attention.w1.bias.abs().sum() == 0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: build_model("lstn", 10, 2), "Did you mean 'lstm'"),
        (lambda: build_model("ica", 10, 2, hiden_size=3), "Did you mean 'hidden_size'"),
        (lambda: build_model("lstm", 10, 2, r=3), "'r'"),
        (lambda: build_model("ica", 10, 2, embedding="flat"), "'embedding'"),
        (lambda: build_model("ica", 10, 2, cell_type="grru"), "Did you mean 'gru'"),
        (lambda: build_model("ica", 10, 2, hidden_size=0), "'hidden_size'"),
        (lambda: build_model("gru", 10, 2, dropout=1.5), "'dropout'"),
        (lambda: build_model("ica", 10, 1), "'n_classes'"),
        (lambda: model_from_config({"n_features": 3}), "'kind'"),
    ],
)
def test_build_model_errors(call, match):
    with pytest.raises(InvalidParameterError, match=match):
        call()


def test_bad_inputs_are_explained():
    model = build_model("ica", 10, 2, r=2, hidden_size=3)
    with pytest.raises(InputDataError, match="10"):
        model(torch.randn(2, 5, 9))
    with pytest.raises(InputDataError, match="float"):
        model(torch.ones(2, 5, 10, dtype=torch.long))
    with pytest.raises(InvalidParameterError, match="lengths"):
        model(torch.randn(2, 5, 10), torch.tensor([5, 6]))
    with pytest.raises(InvalidParameterError, match="lengths"):
        model(torch.randn(2, 5, 10), torch.tensor([5]))
    with pytest.raises(InvalidParameterError, match="eval"):
        reference_forward(model.train(), torch.randn(2, 5, 10))


def _direct_mean(x, p, q):
    """(1/r) sum_k q_tk sum_{s<=t} p_sk x_s through a (B, T, r, N) prefix sum."""
    return (q[..., None] * torch.cumsum(p[..., None] * x[:, :, None, :], dim=1)).mean(2)


@pytest.mark.parametrize("chunk", [1, 3, 7, 10, 23, None])
@pytest.mark.parametrize("x_needs_grad", [True, False])
def test_chunked_mean_equals_the_prefix_sum_for_any_chunk(chunk, x_needs_grad):
    # chunks of 3 and 7 pad the 23 steps; 1 and 23 are the extremes; None the default
    from fmri_ica.models.attention import _chunked_mean

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 23, 5, generator=gen, dtype=F64).requires_grad_(x_needs_grad)
    s = torch.randn(2, 23, 4, generator=gen, dtype=F64, requires_grad=True)
    weights = torch.randn(2, 23, 5, generator=gen, dtype=F64)
    results = []
    for mean in (_direct_mean, lambda *a: _chunked_mean(*a, chunk=chunk)):
        p = torch.exp(s)
        out = mean(x, p, 1 / torch.cumsum(p, dim=1))
        inputs = [x, s] if x_needs_grad else [s]
        results.append((out, *torch.autograd.grad((out * weights).sum(), inputs)))
    for expected, got in zip(*results, strict=True):
        assert (expected - got).abs().max() <= 1e-12


@pytest.mark.parametrize("cell_type", ["lstm", "gru"])
def test_matrix_form_gradients_without_weight_gradients(cell_type):
    # saliency freezes the weights, training feeds data that needs no gradient: the
    # matrix form skips that work, and what it still computes must not change
    model = _model(r=4, d_a=5, hidden_size=6, embedding="matrix", cell_type=cell_type)
    x, lengths = _inputs(3, 40, 11), torch.tensor([40, 17, 3])
    _, (grad_x, *grad_params) = _logits_and_grads(_fast, model, x, lengths)
    model.requires_grad_(False)
    x_frozen = x.clone().requires_grad_(True)
    model(x_frozen, lengths).mul(torch.linspace(-1, 2, 9, dtype=F64).view(3, 3)).sum().backward()
    assert (x_frozen.grad - grad_x).abs().max() <= 1e-14
    model.requires_grad_(True)
    weights = torch.linspace(-1, 2, 9, dtype=F64).view(3, 3)
    data_grads = torch.autograd.grad((model(x, lengths) * weights).sum(), list(model.parameters()))
    for expected, got in zip(grad_params, data_grads, strict=True):
        assert (expected - got).abs().max() <= 1e-14


@pytest.mark.parametrize("reverse", [False, True])
def test_prefix_sum_loop_equals_cumsum(reverse):
    from fmri_ica.models.attention import _prefix_sum_

    values = _inputs(9, 3, 4)  # time-major (T, B, N)
    expected = values.flip(0).cumsum(0).flip(0) if reverse else values.cumsum(0)
    assert (_prefix_sum_(values.clone(), reverse=reverse) - expected).abs().max() <= 1e-14
