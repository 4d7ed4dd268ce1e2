"""The notebook API: fit / predict / explain on a learnable toy problem."""

from __future__ import annotations

import numpy as np
import pytest

from fmri_ica.estimator import TaskDecoder
from fmri_ica.exceptions import InvalidParameterError
from fmri_ica.models.linear import LinearBaseline


def _toy(n=120, t=12, r=5, seed=0):
    """Class 'on' has a bump in region 2 during early steps 1-4; 'off' is noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, t, r)).astype(np.float32)
    y = np.array(["off", "on"])[rng.integers(0, 2, n)]
    x[y == "on", 1:5, 2] += 2.0
    groups = np.repeat(np.arange(n // 4), 4)
    return x, y, groups


@pytest.fixture(scope="module")
def decoder():
    x, y, groups = _toy()
    return TaskDecoder(
        "ica",
        model_options={"hidden_size": 8, "r": 4, "d_a": 8},
        epochs=40,
        lr=1e-2,
        patience=8,
        progress=False,
    ).fit(x, y, groups=groups)


def test_fit_predict_and_score_on_held_out_data(decoder):
    x, y, _ = _toy(n=80, seed=1)
    assert decoder.score(x, y) >= 0.9
    proba = decoder.predict_proba(x)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert set(decoder.predict(x)) <= {"off", "on"}


def test_explain_points_at_the_informative_cells(decoder):
    x, y, _ = _toy(n=40, seed=2)
    saliency = decoder.explain(x[y == "on"], y[y == "on"])
    assert saliency.shape == x[y == "on"].shape
    mean = saliency.mean(axis=0)
    assert mean[1:5, 2].mean() > 3 * np.delete(mean, 2, axis=1).mean()


def test_save_load_gives_identical_predictions(decoder, tmp_path):
    x, _, _ = _toy(n=20, seed=3)
    loaded = TaskDecoder.load(decoder.save(tmp_path / "decoder"))
    np.testing.assert_array_equal(loaded.predict_proba(x), decoder.predict_proba(x))


def test_bad_inputs_are_named(decoder):
    with pytest.raises(InvalidParameterError, match="'X'"):
        decoder.predict(np.zeros((3, 4)))
    with pytest.raises(InvalidParameterError, match="'lengths'"):
        decoder.predict(np.zeros((2, 12, 5)), lengths=[3, 13])
    with pytest.raises(InvalidParameterError, match="not seen"):
        decoder.explain(np.zeros((1, 12, 5)), ["maybe"])
    with pytest.raises(InvalidParameterError, match="'X' has 4 regions.*fitted on 5"):
        decoder.predict(np.zeros((2, 12, 4)))
    with pytest.raises(InvalidParameterError, match="not fitted"):
        TaskDecoder().predict(np.zeros((1, 2, 3)))
    x = np.zeros((3, 12, 5))
    with pytest.raises(InvalidParameterError, match=r"'y' must be one label per sample, shape \(3,\)"):
        TaskDecoder().fit(x, ["on", "off"])
    with pytest.raises(InvalidParameterError, match="'y': continuous values"):
        TaskDecoder().fit(x, [0.5, 1.0, 2.0])
    with pytest.raises(InvalidParameterError, match="'X'.*none of them 0"):
        TaskDecoder().fit(np.zeros((3, 12, 0)), ["on", "off", "on"])


def test_linear_baseline_learns_and_its_map_finds_the_cells():
    x, y, _ = _toy(n=200)
    labels = (y == "on").astype(int)
    baseline = LinearBaseline(C=0.1).fit(x[:150], labels[:150])
    assert np.mean(baseline.predict(x[150:]) == labels[150:]) >= 0.9
    maps = baseline.weight_maps()
    assert maps.shape == (2, 12, 5)
    assert maps[1, 1:5, 2].mean() > 3 * np.delete(maps[1], 2, axis=1).mean()
