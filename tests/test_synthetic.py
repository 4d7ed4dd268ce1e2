"""The paper's synthetic box data sets: boxes, labels, masks, seeds."""

from __future__ import annotations

import numpy as np
import pytest

from fmri_ica.data import synthetic as S
from fmri_ica.exceptions import InvalidParameterError

DOCUMENTED = {
    "earlier": [((0, 30), (10, 90))],
    "middle": [((20, 80), (20, 80))],
    "latter": [((70, 100), (10, 90))],
    "3_earlier": [((0, 40), (0, 30)), ((0, 40), (35, 65)), ((0, 40), (70, 100))],
    "3_middle": [((25, 65), (0, 30)), ((25, 65), (35, 65)), ((25, 65), (70, 100))],
    "moving_30": [((30, 90), (20, 80))],
}


def _box_mask(box_list):
    mask = np.zeros((100, 100), dtype=bool)
    for (t0, t1), (f0, f1) in box_list:
        mask[t0:t1, f0:f1] = True
    return mask


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_masks_match_documented_boxes(name):
    data = S.make_dataset(name, 6, seed=1)
    assert data.x.shape == (6, 100, 100) and data.x.dtype == np.float32
    np.testing.assert_array_equal(
        data.mask, np.broadcast_to(_box_mask(DOCUMENTED[name]), data.mask.shape)
    )


def test_box_cells_carry_the_label_and_noise_elsewhere():
    data = S.make_dataset("earlier", 400, seed=0)
    sign = 2.0 * data.y - 1.0
    box_means = data.x[data.mask.astype(bool)].reshape(400, -1).mean(axis=1)
    np.testing.assert_allclose(box_means, sign, atol=0.1)  # 2400 N(y, 1) cells each
    outside = data.x[~data.mask]
    assert abs(outside.mean()) < 0.01 and abs(outside.std() - 1) < 0.01
    assert 150 < data.y.sum() < 250  # balanced labels


def test_mixed_uses_one_of_seven_boxes_per_sample():
    data = S.make_dataset("mixed", 70, seed=2)
    assert set(np.unique(data.box)) <= set(range(7)) and len(np.unique(data.box)) > 3
    for i in range(70):
        np.testing.assert_array_equal(data.mask[i], _box_mask([S.MIXED_BOXES[data.box[i]]]))
    assert S.MIXED_BOXES[6] == ((20, 80), (20, 80))


def test_seeded_and_split_sizes():
    a, b = S.make_dataset("middle", 5, seed=3), S.make_dataset("middle", 5, seed=3)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, S.make_dataset("middle", 5, seed=4).x)
    assert not np.array_equal(a.x, S.make_dataset("latter", 5, seed=3).x)  # name is in the seed
    train, test = S.make_split("moving_10", 20, 8, seed=0)
    assert (len(train), len(test)) == (20, 8) and not np.array_equal(train.x[:8], test.x)
    assert S.PAPER_SIZES["mixed"] == (8000, 1000) and S.PAPER_SIZES["moving_0"] == (1000, 200)
    assert S.PAPER_SIZES["3_middle"] == (1000, 300)


def test_bad_names_and_sizes():
    with pytest.raises(InvalidParameterError, match="Did you mean 'earlier'"):
        S.make_dataset("earlyer", 3)
    with pytest.raises(InvalidParameterError, match="n_samples"):
        S.make_dataset("earlier", 0)
    with pytest.raises(InvalidParameterError, match="n_time"):
        S.make_dataset("earlier", 3, n_time=50)


def test_quick_benchmark_input_cell_attention_beats_lstm_on_earlier(tmp_path):
    """The paper's claim at CI size: the LSTM's saliency vanishes before the early box."""
    from fmri_ica.benchmark.synthetic import run_synthetic_benchmark

    table = run_synthetic_benchmark(
        tmp_path, "quick", datasets=["earlier"], models=["lstm", "ica_mean"], progress=False
    )
    rows = table.set_index("model")
    assert (rows["status"] == "ok").all()
    assert rows.loc["ica_mean", "wjac"] > rows.loc["lstm", "wjac"] + 0.02
    assert rows.loc["lstm", "mass_last_10pct"] > 0.5  # vanishing: mass at the last steps
    assert rows.loc["ica_mean", "accuracy"] >= 0.9
    root = tmp_path / "quick"
    for name in ("results.csv", "results.json", "table.md", "benchmark.json", "saliency_maps.png"):
        assert (root / name).stat().st_size > 0
    assert "| LSTM | 0.0" in (root / "table.md").read_text()

    from fmri_ica.benchmark.synthetic import compare_methods

    methods = compare_methods(
        tmp_path, "quick", datasets=["earlier"], models=["lstm", "ica_mean"],
        methods=["gradient", "integrated_gradients"], n_samples=6,
    )  # fmt: skip
    assert (methods["status"] == "ok").all() and len(methods) == 4
    ig = methods[methods["method"] == "integrated_gradients"].set_index("model")
    assert ig.loc["ica_mean", "mass_last_10pct"] < ig.loc["lstm", "mass_last_10pct"]
    assert (root / "methods.md").read_text().count("| Earlier |") == 4


def test_benchmark_resumes_and_records_failures(tmp_path, monkeypatch):
    import json

    from fmri_ica.benchmark import synthetic as B

    B.run_synthetic_benchmark(
        tmp_path, "quick", datasets=["latter"], models=["lstm"], progress=False
    )
    cell = tmp_path / "quick" / "cells" / "latter__lstm.json"
    first = json.loads(cell.read_text())

    def broken(root, profile, dataset, model, *args):
        if model == "bilstm":
            raise RuntimeError("boom")
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(B, "_run_cell", broken)
    table = B.run_synthetic_benchmark(
        tmp_path, "quick", datasets=["latter"], models=["lstm", "bilstm"], progress=False
    )
    assert json.loads(cell.read_text()) == first  # skipped, unchanged
    status = dict(zip(table["model"], table["status"], strict=True))
    assert status == {"lstm": "ok", "bilstm": "failed"}
    assert "boom" in table.set_index("model").loc["bilstm", "error"]
    assert "failed" in (tmp_path / "quick" / "table.md").read_text()


def test_stop_at_training_accuracy_rule(tmp_path):
    """The authors' rule: stop at the first epoch with 100% training accuracy."""
    import torch

    from fmri_ica.benchmark.synthetic import _train
    from fmri_ica.models import build_model

    data = S.make_dataset("latter", 120, seed=0)
    train = (data.x[:100], data.y[:100])
    val = (data.x[100:], data.y[100:])
    options = {"epochs": 8, "lr": 1e-2, "batch_size": 20, "patience": None}
    runs = {}
    for stop in (1.0, None):
        torch.manual_seed(0)
        net = build_model("lstm", 100, 2, hidden_size=4, dropout=0.0)
        common = {"seed": 0, "device": "cpu", "progress": False}
        runs[stop] = _train(net, train, val, options, stop, out_dir=tmp_path / str(stop), **common)
    stopped = runs[1.0].history
    assert stopped[-1]["train_acc"] == 1.0 and len(stopped) < 8
    assert all(r["train_acc"] < 1.0 for r in stopped[:-1])
    assert len(runs[None].history) == 8
    # resumed epoch by epoch == one uninterrupted run, up to the stopping epoch
    assert [r["train_loss"] for r in stopped] == [
        r["train_loss"] for r in runs[None].history[: len(stopped)]
    ]
