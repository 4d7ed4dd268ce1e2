"""Windows, labels, subject splits and training-only scaling."""

from __future__ import annotations

import numpy as np
import pytest

from fmri_ica.data.samples import SampleSet, Standardizer, build_samples, split_by_subject
from fmri_ica.exceptions import InputDataError, InvalidParameterError


def _run(subject, task, n_frames, n_regions=5, seed=0, conditions=None):
    rng = np.random.default_rng(seed)
    series = rng.standard_normal((n_frames, n_regions)).astype(np.float32)
    task_on = (np.arange(n_frames) // 5) % 2 == 1
    sidecar = {
        "subject": subject, "task": task, "run": "LR", "t_r": 0.72,
        "labels": [{"index": i + 1, "name": f"r{i}"} for i in range(n_regions)],
        "task_on": task_on.astype(int).tolist(),
        "conditions": conditions or [("c" if on else "") for on in task_on],
    }
    return series, sidecar


def test_one_window_per_run_keeps_frames_and_labels():
    runs = [_run("01", "MOTOR", 30), _run("01", "WM", 40, seed=1), _run("02", "MOTOR", 25, seed=2)]
    samples = build_samples(runs, window=20, start=3)
    assert samples.x.shape == (3, 20, 5)
    assert samples.classes == ["MOTOR", "WM"]
    assert samples.y.tolist() == [0, 1, 0]
    np.testing.assert_array_equal(samples.x[1], runs[1][0][3:23])
    np.testing.assert_array_equal(samples.task_on[0], np.asarray(runs[0][1]["task_on"][3:23], bool))
    assert samples.starts.tolist() == [3, 3, 3]
    assert samples.lengths.tolist() == [20, 20, 20]


def test_sliding_windows_and_frame_stride():
    series, sidecar = _run("01", "MOTOR", 50)
    samples = build_samples([(series, sidecar)], window=10, step=7, frame_stride=2)
    # 25 kept frames (0, 2, ..., 48), onsets 0, 7, 14 -> 3 windows
    assert len(samples) == 3
    np.testing.assert_array_equal(samples.x[1], series[14:34:2])
    assert samples.t_r == pytest.approx(1.44)


def test_short_runs_are_left_out_or_padded():
    runs = [_run("01", "MOTOR", 30), _run("02", "WM", 12, seed=3)]
    assert len(build_samples(runs, window=20)) == 1
    padded = build_samples(runs, window=20, pad_short=True)
    assert padded.lengths.tolist() == [20, 12]
    assert np.all(padded.x[1, 12:] == 0) and not padded.task_on[1, 12:].any()


def test_condition_labels_use_majority_of_on_frames():
    conditions = ["", "a", "a", "b", "b", "b", "", ""] * 3
    series, sidecar = _run("01", "MOTOR", 24, conditions=conditions)
    sidecar["task_on"] = [int(c != "") for c in conditions]
    samples = build_samples([(series, sidecar)], label="condition", window=8, step=8)
    assert samples.classes == ["b"] and len(samples) == 3


def test_bad_parameters_name_themselves():
    runs = [_run("01", "MOTOR", 30)]
    with pytest.raises(InvalidParameterError, match="window"):
        build_samples(runs, window=0)
    with pytest.raises(InvalidParameterError, match="classes"):
        build_samples(runs, window=10, classes=["MOTOR", "LANGUGE"])
    with pytest.raises(InvalidParameterError, match="Did you mean 'task'"):
        build_samples(runs, label="tsk")
    with pytest.raises(InputDataError, match="window"):
        build_samples(runs, window=100)


def test_split_by_subject_never_shares_a_subject_and_is_seeded():
    runs = [_run(f"{s:02d}", task, 20, seed=s) for s in range(10) for task in ("A", "B")]
    samples = build_samples(runs, window=10)
    splits = split_by_subject(samples, seed=3)
    groups = [set(samples.subjects[idx]) for idx in splits.values()]
    assert sum(len(g) for g in groups) == 10
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert [len(g) for g in groups] == [6, 2, 2]
    for idx in splits.values():  # stratified: both classes in every split
        assert set(samples.y[idx]) == {0, 1}
    again = split_by_subject(samples, seed=3)
    assert all(np.array_equal(splits[k], again[k]) for k in splits)
    assert not np.array_equal(split_by_subject(samples, seed=4)["test"], splits["test"])


def test_standardizer_uses_training_statistics_and_ignores_padding():
    runs = [_run("01", "A", 30), _run("02", "A", 15, seed=5)]
    samples = build_samples(runs, window=20, pad_short=True)
    scaler = Standardizer().fit(samples.subset([0]))
    out = scaler.transform(samples)
    np.testing.assert_allclose(out.x[0].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(out.x[0].std(axis=0), 1, atol=1e-5)
    assert np.all(out.x[1, 15:] == 0)
    restored = Standardizer.from_dict(scaler.to_dict())
    np.testing.assert_array_equal(restored.transform(samples).x, out.x)


def test_save_load_round_trip(tmp_path):
    samples = build_samples([_run("01", "A", 30), _run("02", "B", 30, seed=1)], window=12)
    path = samples.save(tmp_path / "samples.npz")
    loaded = SampleSet.load(path)
    for name in ("x", "y", "lengths", "task_on", "subjects", "runs", "starts"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(samples, name))
    assert loaded.classes == samples.classes and loaded.t_r == samples.t_r
