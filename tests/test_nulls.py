"""Tests of fmri_ica.saliency.nulls: null models, permuted labels, similarity and verdicts."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch

from fmri_ica.exceptions import InputDataError, InvalidParameterError
from fmri_ica.models import build_model
from fmri_ica.saliency import attribute
from fmri_ica.saliency.nulls import (
    cascading_randomization,
    initial_model,
    map_similarity,
    permuted_labels,
    profile_distance,
    reinitialized,
    sanity_verdict,
    split_half_reliability,
)
from fmri_ica.training import fit, save_checkpoint

T, F, PER = 20, 6, 12  # time steps, features, samples per subject
ICA = {"r": 4, "d_a": 8, "hidden_size": 8}
QUICK = {"epochs": 10, "lr": 1e-2, "batch_size": 32, "patience": 3, "progress": False}


@pytest.fixture(autouse=True)
def _quiet(caplog):
    caplog.set_level(logging.ERROR)  # fit warns about early best epochs on these toys


def toy(amp, seed, n_subjects=10):
    """Two classes; class signal +-amp in features 1 and 4 at steps 6-11; 12 samples/subject."""
    gen = np.random.default_rng(seed)
    subjects = np.repeat(np.arange(n_subjects), PER)
    y = np.tile(np.arange(PER) % 2, n_subjects)
    x = gen.standard_normal((len(y), T, F)).astype("float32")
    x[:, 6:12, [1, 4]] += amp * (2 * y[:, None, None] - 1)
    return x, y, subjects


def train(kind, x, y, seed, train_mask, val_mask, val_y=None, **options):
    torch.manual_seed(seed)
    model = build_model(kind, F, 2, **options)
    val_y = y[val_mask] if val_y is None else val_y
    fit(model, (x[train_mask], y[train_mask]), (x[val_mask], val_y), seed=seed, **QUICK)
    return model


def accuracy(model, x, y):
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def subject_maps(model, x, y, subjects):
    """(subject, time, feature) mean |d p_y / d x| per subject."""
    sal = attribute(model, torch.from_numpy(x), target=torch.from_numpy(y)).numpy()
    return np.stack([sal[subjects == s].mean(0) for s in np.unique(subjects)])


@pytest.fixture(scope="module")
def trained_ica():
    x, y, subjects = toy(1.5, 0)
    return train("ica", x, y, 0, subjects < 7, subjects >= 7, **ICA)


def test_initial_and_reinitialized_models(trained_ica, tmp_path):
    state = torch.get_rng_state()
    a = reinitialized(trained_ica, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    b = initial_model(trained_ica.config, seed=3)
    c = initial_model(trained_ica.config, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["rnn.weight_ih_l0"], sc["rnn.weight_ih_l0"])
    assert not torch.equal(sa["rnn.weight_ih_l0"], trained_ica.state_dict()["rnn.weight_ih_l0"])
    # the trainer's init/ checkpoint: the model's own initial weights, as saved
    save_checkpoint(tmp_path / "init", c)
    loaded = initial_model(tmp_path / "init").state_dict()
    assert all(torch.equal(loaded[k], sc[k]) for k in sc)
    with pytest.raises(InvalidParameterError, match="source"):
        initial_model(42)


def test_cascading_randomization_is_cumulative_from_the_head(trained_ica):
    before = copy.deepcopy(trained_ica.state_dict())
    steps = cascading_randomization(trained_ica, seed=5)
    assert [name for name, _ in steps] == ["head", "rnn", "attention"]
    layers = [name for name, _ in steps]
    trained = trained_ica.state_dict()
    previous = trained
    for k, (_, model) in enumerate(steps):
        state = model.state_dict()
        for key, value in state.items():
            layer = key.split(".")[0]
            if layer in layers[: k + 1]:
                assert not torch.equal(value, trained[key]), key  # re-initialised
            else:
                assert torch.equal(value, trained[key]), key  # trained weights kept
            if layer in layers[:k]:
                assert torch.equal(value, previous[key]), key  # same draw as the step before
        previous = state
    fresh = reinitialized(trained_ica, seed=5).state_dict()
    assert all(torch.equal(previous[k], fresh[k]) for k in fresh)  # the architecture's init
    assert all(torch.equal(before[k], trained[k]) for k in before)  # the input is untouched
    with pytest.raises(InvalidParameterError, match="layers"):
        cascading_randomization(trained_ica, layers=["head", "decoder"])


def test_permuted_labels_is_a_balanced_bijection_per_subject():
    gen = np.random.default_rng(0)
    names = np.array(["s1", "s2", "s3", "s4", "s5", "s6"])
    subjects = np.repeat(names, 9)
    y = np.concatenate([gen.permutation(np.arange(9) % 3) for _ in names])
    y_perm = permuted_labels(y, subjects, 3, seed=1)
    maps = []
    for s in names:
        mask = subjects == s
        new = [np.unique(y_perm[mask & (y == c)]) for c in range(3)]
        assert all(len(v) == 1 for v in new)  # every sample of a class gets the same label
        maps.append([int(v[0]) for v in new])
        np.testing.assert_array_equal(np.bincount(y_perm[mask]), [3, 3, 3])  # balance kept
    maps = np.array(maps)  # (subject, class) -> new label
    assert all(sorted(row) == [0, 1, 2] for row in maps)  # a bijection per subject
    for c in range(3):  # balanced: each class goes to each label in 2 of the 6 subjects
        np.testing.assert_array_equal(np.bincount(maps[:, c], minlength=3), [2, 2, 2])
    assert len({tuple(row) for row in maps}) > 1  # not one shared relabelling
    np.testing.assert_array_equal(y_perm, permuted_labels(y, subjects, 3, seed=1))
    with pytest.raises(InvalidParameterError, match="'y'"):
        permuted_labels(y + 1, subjects, 3)


def test_permuted_label_models_are_at_chance_on_held_out_subjects():
    """Trained on subject-wise permuted labels (train and validation subjects permuted
    separately, so each split is balanced), the model cannot learn the shared mapping. One
    such model's held-out accuracy can still be far from 0.5 -- it reacts to the class
    signal in a random direction -- so chance is checked on the mean over seeds."""
    normal, permuted = [], []
    for seed in range(3):
        x, y, subjects = toy(1.5, seed, n_subjects=12)
        tr, va, te = subjects < 8, (subjects >= 8) & (subjects < 10), subjects >= 10
        normal.append(accuracy(train("ica", x, y, seed, tr, va, **ICA), x[te], y[te]))
        y_perm = y.copy()
        y_perm[tr] = permuted_labels(y[tr], subjects[tr], 2, seed=seed)
        y_perm[va] = permuted_labels(y[va], subjects[va], 2, seed=seed + 100)
        model = train("ica", x, y_perm, seed, tr, va, **ICA)
        permuted.append(accuracy(model, x[te], y[te]))
    assert min(normal) >= 0.9
    assert abs(np.mean(permuted) - 0.5) < 0.15


@pytest.mark.parametrize(("amp", "learnable"), [(2.0, True), (0.0, False)])
def test_verdict_says_yes_only_when_the_model_learned(amp, learnable):
    x, y, subjects = toy(amp, 0)
    model = train("lstm", x, y, 0, subjects < 7, subjects >= 7, hidden_size=8)
    held_out = accuracy(model, x[subjects >= 7], y[subjects >= 7])
    assert (held_out >= 0.9) == learnable
    trained = subject_maps(model, x, y, subjects)
    nulls = [subject_maps(reinitialized(model, s), x, y, subjects) for s in range(1, 6)]
    verdict = sanity_verdict(trained, nulls, measure="map", n_boot=300)
    assert verdict["n_nulls"] == 5 and verdict["n_subjects"] == 10
    assert (verdict["differs"] == "yes") == learnable, verdict["reason"]
    assert verdict["reason"].endswith(".") and "Spearman" in verdict["reason"]
    # one null can never show a difference: it cannot tell training from a new draw
    assert sanity_verdict(trained, nulls[0], n_boot=100)["differs"] != "yes"


def test_similarity_measures_and_their_intervals():
    gen = np.random.default_rng(0)
    base = gen.random((7, 9))  # (time, region)
    a = base + 0.3 * gen.random((12, 7, 9))
    b = base + 0.3 * gen.random((12, 7, 9))
    same = map_similarity(a, a, n_boot=200)
    assert same.value == pytest.approx(1) and same.ci_low == pytest.approx(1)
    close = map_similarity(a, b, n_boot=200)
    assert 0.8 < close.ci_low < close.ci_high <= 1 and close.value > 0.8
    other = map_similarity(a, gen.random((12, 7, 9)), n_boot=200)
    assert other.ci_low < 0.3 < close.ci_low
    # profiles: normalised per subject, so scale does not count; disjoint curves are 1 apart
    p = gen.random((12, 7))
    assert profile_distance(p, 5 * p, n_boot=50).value == pytest.approx(0)
    early, late = np.zeros((12, 7)), np.zeros((12, 7))
    early[:, :3], late[:, 4:] = 1, 1
    assert profile_distance(early, late, n_boot=50).value == pytest.approx(1)
    assert split_half_reliability(a) > 0.8 > 0.2 > split_half_reliability(gen.random((12, 7, 9)))
    corrected = split_half_reliability(a, spearman_brown=True)
    assert corrected > split_half_reliability(a)
    with pytest.raises(InputDataError, match="same shape"):
        map_similarity(a, b[:, :3])
    with pytest.raises(InputDataError, match="non-negative"):
        profile_distance(p - 1, p)
