"""Saliency figures of merit against the design and the ground truth, on hand-made maps."""

from __future__ import annotations

import numpy as np
import pytest

from fmri_ica.data.samples import SampleSet
from fmri_ica.saliency.scoring import accuracy_gate, planted_masks, saliency_metrics


def _test_set(n_time=10, n_regions=4):
    """Two classes A, B; A is ON in the first half of the window, B in the second half."""
    y = np.array([0, 0, 1, 1])
    task_on = np.zeros((4, n_time), dtype=bool)
    task_on[y == 0, : n_time // 2] = True
    task_on[y == 1, n_time // 2:] = True
    return SampleSet(
        x=np.zeros((4, n_time, n_regions), np.float32), y=y, lengths=np.full(4, n_time),
        task_on=task_on, subjects=np.array(["1", "1", "2", "2"]), runs=np.array(["a", "b", "c", "d"]),
        starts=np.zeros(4, int), classes=["A", "B"], region_names=[f"r{i}" for i in range(n_regions)],
        t_r=1.0,
    )


TRUTH = {"tasks": {"A": {"planted_names": ["r0"]}, "B": {"planted_names": ["r3", "gone"]}}}


def test_a_map_on_the_planted_cells_of_the_on_frames_scores_perfectly():
    test = _test_set()
    saliency = np.full((4, 10, 4), 0.01)
    for i, (label, on) in enumerate(zip(test.y, test.task_on, strict=True)):
        saliency[i, on, 0 if label == 0 else 3] = 1.0  # 5 cells = 12.5% of 40 > top 10% (4 cells)
    m = saliency_metrics(saliency, test, 0.1, TRUTH)
    assert m["on_share"]["mean"] == 1.0
    assert m["on_share_mismatched"]["mean"] == 0.0  # the other class is ON in the other half
    assert m["on_share_chance"] == 0.5
    assert m["planted_share"]["mean"] == 1.0 and m["planted_share_chance"] == 0.25
    assert m["region_precision"]["mean"] == 1.0 and m["region_precision_chance"] == 0.25
    np.testing.assert_allclose(sum(m["curve_mean"]), 1.0)
    # per sample: 5 ON steps of 1.03 and 5 OFF steps of 0.04; A ends OFF, B ends ON
    assert m["mass_last_10pct"]["mean"] == pytest.approx(np.mean([0.04 / 5.35, 1.03 / 5.35]))


def test_a_map_that_only_looks_at_the_end_is_called_so():
    test = _test_set()
    saliency = np.zeros((4, 10, 4))
    saliency[:, -1, :] = 1.0
    m = saliency_metrics(saliency, test, 0.1, None)
    assert m["mass_last_10pct"]["mean"] == 1.0
    assert m["on_share"]["mean"] == 0.5  # class B is ON at the end, class A is not
    assert "planted_share" not in m


def test_planted_masks_ignore_unknown_regions_and_missing_tasks():
    masks = planted_masks(TRUTH, ["A", "B"], ["r0", "r1", "r2", "r3"])
    assert masks.tolist() == [[True, False, False, False], [False, False, False, True]]
    assert planted_masks(TRUTH, ["A", "C"], ["r0"]) is None
    assert planted_masks(None, ["A"], ["r0"]) is None


def test_accuracy_gate_is_halfway_from_chance():
    assert accuracy_gate({"balanced_accuracy": 0.6}, list("ABCD"))["reliable"] is False
    gate = accuracy_gate({"balanced_accuracy": 0.63}, list("ABCD"))
    assert gate["reliable"] and gate["reliability_threshold"] == pytest.approx(0.625)


def test_region_precision_skips_classes_without_planted_regions():
    from fmri_ica.saliency.scoring import planted_region_metrics

    truth = {"tasks": {"A": {"planted_names": ["r0", "r1"]}, "B": {"planted_names": []}}}
    maps = np.zeros((2, 3, 4))
    maps[0, :, :2] = 1.0  # class A's map peaks on its planted regions
    metrics = planted_region_metrics(maps, ["A", "B"], ["r0", "r1", "r2", "r3"], truth)
    assert metrics["region_precision"] == {"mean": 1.0, "A": 1.0}
    assert metrics["region_precision_chance"] == 0.5
