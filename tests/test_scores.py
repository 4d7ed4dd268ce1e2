"""Run-level scores pooled over folds, with bootstrap intervals over subjects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmri_ica.data.samples import SampleSet, windows_from_runs
from fmri_ica.training.scores import pooled_scores, run_level_scores, scores_from_predictions


class _FirstFeature(torch.nn.Module):
    """Logits (2 classes) = (-mean of feature 0, +mean of feature 0) over the valid steps."""

    def forward(self, x, lengths=None):
        mean = x[..., 0].mean(dim=1)
        return torch.stack([-mean, mean], dim=1)


def _runs(values, labels, subjects, length=12):
    n = len(values)
    x = np.zeros((n, length, 2), np.float32)
    for i, v in enumerate(values):
        x[i, :, 0] = v
    return SampleSet(x=x, y=np.asarray(labels), lengths=np.full(n, length), task_on=np.zeros((n, length), bool),
                     subjects=np.asarray(subjects), runs=np.asarray([f"r{i}" for i in range(n)]),
                     starts=np.zeros(n, int), classes=["A", "B"], region_names=["a", "b"], t_r=1.0)


def test_sliding_windows_cover_every_frame_and_keep_run_identity():
    runs = _runs([1.0, -1.0], [1, 0], ["s1", "s2"])
    runs.lengths[1] = 7
    windows = windows_from_runs(runs, 5, 3)
    covered = {run: set() for run in ("r0", "r1")}
    for run, start, length in zip(windows.runs, windows.starts, windows.lengths, strict=True):
        covered[run] |= set(range(start, start + length))
    assert covered == {"r0": set(range(12)), "r1": set(range(7))}
    assert set(windows.y[windows.runs == "r0"]) == {1}


def test_run_prediction_is_the_mean_log_probability_of_its_windows():
    runs = _runs([1.0, -1.0, 1.0], [1, 0, 0], ["s1", "s1", "s2"])
    runs.x[2, :9, 0] = -0.2  # run 2: most windows say class 0, one window strongly says 1
    runs.x[2, 9:, 0] = 5.0
    scores = run_level_scores(_FirstFeature(), windows_from_runs(runs, 3, 3))
    by_run = {r["run"]: r for r in scores["runs"]}
    assert by_run["r0"]["pred"] == 1 and by_run["r1"]["pred"] == 0
    assert by_run["r2"]["pred"] == 1  # the mean log-probability, not a majority vote
    assert scores["run_accuracy"] == pytest.approx(2 / 3)
    assert scores["window_accuracy"] == pytest.approx(11 / 12)


def test_pooled_scores_give_an_interval_over_subjects_that_contains_the_estimate():
    rng = np.random.default_rng(0)
    folds = []
    for k in range(3):
        runs = [{"run": f"{k}-{i}", "subject": f"s{k}{i // 4}", "label": i % 2,
                 "pred": int(rng.random() < 0.8) if i % 2 else int(rng.random() > 0.8)} for i in range(16)]
        correct = np.mean([r["label"] == r["pred"] for r in runs])
        folds.append({"runs": runs, "n_windows": 16, "window_accuracy": correct, "run_accuracy": correct})
    pooled = pooled_scores(folds, ["A", "B"], n_boot=500, seed=1)
    low, high = pooled["run_accuracy_ci"]
    assert low < pooled["accuracy"] < high and 0.5 < pooled["accuracy"] < 1
    assert pooled["n_subjects"] == 12 and pooled["n_runs"] == 48
    assert pooled_scores(folds, ["A", "B"], n_boot=500, seed=1) == pooled  # seeded


def test_balanced_accuracy_ignores_absent_classes():
    scores = scores_from_predictions([0, 0, 1, 1], [0, 1, 1, 1], 3)
    assert scores["accuracy"] == 0.75 and scores["balanced_accuracy"] == pytest.approx(0.75)
    assert np.asarray(scores["confusion_matrix"]).sum() == 4
