"""Saliency put back in run time: windows on the frames they cover, classes of their own length."""

from __future__ import annotations

import json

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from fmri_ica.data.samples import build_samples
from fmri_ica.exceptions import InputDataError, InvalidParameterError
from fmri_ica.saliency.runtime import (
    class_coverage,
    class_maps_in_run_time,
    read_class_maps,
    subject_class_maps_in_run_time,
    to_run_time,
    write_class_maps,
)

N_REGIONS = 3


def run(series, subject="01", task="A", run_id="1"):
    return series, {"subject": subject, "task": task, "run": run_id, "t_r": 0.72}


def frame_function(n_frames, shift=0.0):
    """(frames, region): a known function of run time, with an event at frames 17-19."""
    t = np.arange(n_frames, dtype=float)[:, None]
    values = np.hstack([np.sin(t / 5 + shift), 0.01 * t, np.zeros_like(t)]) + 1.0
    values[17:20, 2] = 5.0
    return values


def test_sliding_windows_land_on_their_run_frames():
    # Windows of 10 frames every 3 frames over a 40-frame run; saliency = f(run frame).
    truth = frame_function(40)
    samples = build_samples([run(truth)], window=10, step=3)
    assert samples.starts.tolist() == list(range(0, 31, 3))
    run_maps = to_run_time(samples.x, samples)
    (values,) = run_maps.maps
    assert values.shape == (40, N_REGIONS)
    assert_allclose(values, truth, rtol=1e-6)  # the event at frames 17-19, nowhere else
    assert np.flatnonzero(values[:, 2] > 2).tolist() == [17, 18, 19]
    expected_cover = [sum(s <= t < s + 10 for s in samples.starts) for t in range(40)]
    assert run_maps.coverage[0].tolist() == expected_cover
    assert run_maps.frames(len(values)) == [0, 40]


def test_each_frame_is_the_mean_of_the_windows_covering_it(rng):
    truth = frame_function(40)
    samples = build_samples([run(truth)], window=10, step=3)
    saliency = rng.random(samples.x.shape)  # windows disagree: weighting matters
    values = to_run_time(saliency, samples).maps[0]
    for frame in (0, 5, 17, 39):
        covering = [(i, frame - s) for i, s in enumerate(samples.starts) if s <= frame < s + 10]
        assert_allclose(values[frame], np.mean([saliency[i, k] for i, k in covering], axis=0))


def test_uncovered_frames_are_nan_and_reported():
    truth = frame_function(40)
    # Start at frame 2, windows of 10 every 5 frames: frames 0-1 and 37-39 are covered by none.
    samples = build_samples([run(truth)], window=10, step=5, start=2)
    run_maps = to_run_time(samples.x, samples, run_lengths={samples.runs[0]: 40})
    values = run_maps.maps[0]
    assert len(values) == 40
    missing = [0, 1, 37, 38, 39]
    assert np.isnan(values[missing]).all()
    assert_allclose(np.delete(values, missing, axis=0), np.delete(truth, missing, axis=0), rtol=1e-6)
    assert run_maps.uncovered()[(samples.runs[0], "A")].tolist() == missing
    with pytest.raises(InvalidParameterError, match="run_lengths"):
        to_run_time(samples.x, samples, run_lengths={samples.runs[0]: 30})


def test_frame_stride_rows_are_stride_frames_apart():
    truth = frame_function(41)
    samples = build_samples([run(truth)], window=5, step=2, start=1, frame_stride=2)
    run_maps = to_run_time(samples.x, samples, frame_stride=2)
    values = run_maps.maps[0]
    first, stop = run_maps.frames(len(values))
    assert first == 1 and run_maps.t_r == pytest.approx(1.44)
    assert_allclose(values, truth[first:stop:2], rtol=1e-6)  # row r = run frame 1 + 2 r
    samples.starts[1] += 1  # a window off the time grid of the others
    with pytest.raises(InputDataError, match="frame_stride"):
        to_run_time(samples.x, samples, frame_stride=2)


def test_whole_runs_keep_their_class_length_without_zero_tail():
    runs = [run(frame_function(40, shift=s), subject=str(s), task="A") for s in (1, 2)]
    runs += [run(frame_function(25, shift=s) * 2, subject=str(s), task="B") for s in (1, 2)]
    samples = build_samples(runs, window=None)
    assert samples.x.shape[1] == 40  # padded to the longest run
    run_maps = to_run_time(samples.x, samples)
    maps = class_maps_in_run_time(run_maps, samples)
    assert [m.shape for m in maps] == [(40, N_REGIONS), (25, N_REGIONS)]
    expected_b = frame_function(25, 1.0) + frame_function(25, 2.0)  # mean of 2 runs x 2
    assert_allclose(maps[1], expected_b, rtol=1e-6)
    assert np.all(maps[1][-5:] > 0.5)  # the tail is data, not zero padding

    per_subject = subject_class_maps_in_run_time(run_maps)
    assert sorted(per_subject) == ["1", "2"]
    assert_allclose(per_subject["2"][1], frame_function(25, 2.0) * 2, rtol=1e-6)
    coverage = class_coverage(run_maps)
    assert coverage[1]["n_runs"].tolist() == [2] * 25


def test_subject_maps_share_the_group_length_with_nan_where_missing():
    runs = [run(frame_function(40), subject="1"), run(frame_function(30), subject="2")]
    samples = build_samples(runs, window=None)
    per_subject = subject_class_maps_in_run_time(to_run_time(samples.x, samples))
    short = per_subject["2"][0]
    assert short.shape == (40, N_REGIONS)  # stackable across subjects
    assert np.isnan(short[30:]).all() and np.isfinite(short[:30]).all()
    group = class_maps_in_run_time(to_run_time(samples.x, samples))[0]
    assert_allclose(group[30:], frame_function(40)[30:], rtol=1e-6)  # NaN-aware: run 1 alone


def test_write_read_round_trip_keeps_ragged_maps_and_true_frames(tmp_path):
    runs = [run(frame_function(40), task="A"), run(frame_function(25), task="B")]
    samples = build_samples(runs, window=10, step=3)
    run_maps = to_run_time(samples.x, samples)
    maps = class_maps_in_run_time(run_maps)
    frames = [run_maps.frames(len(m)) for m in maps]
    coverage = [c["n_windows"] for c in class_coverage(run_maps)]
    write_class_maps(
        tmp_path, maps, classes=samples.classes, regions=samples.region_names, t_r=samples.t_r,
        frames=frames, aggregate="mean |gradient| over windows covering the frame, then over runs",
        scaling="none", subjects=["01"], n_windows=coverage, extra={"model": "toy"},
    )
    loaded, meta = read_class_maps(tmp_path)
    assert [m.shape for m in loaded] == [(40, N_REGIONS), (25, N_REGIONS)]
    for got, want in zip(loaded, maps, strict=True):
        assert_allclose(got, want, rtol=1e-6)
    assert meta["frames"] == [[0, 40], [0, 25]] == frames
    assert all(len(range(a, b, meta["frame_stride"])) == len(m)
               for (a, b), m in zip(meta["frames"], loaded, strict=True))
    assert meta["lengths"] == [40, 25] and meta["model"] == "toy" and meta["format_version"] == 2
    assert meta["n_windows"][0]["max"] == 4 and meta["n_windows"][1]["min"] == 1
    assert_array_equal(meta["n_windows_rows"][1], coverage[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["class_maps.json", "class_maps.npz"]


def test_write_rejects_frames_that_do_not_match_the_data(tmp_path):
    maps = [np.zeros((10, 2)), np.zeros((7, 2))]
    kw = dict(classes=["a", "b"], regions=["r1", "r2"], t_r=1.0, aggregate="mean",
              scaling="none", subjects=["01"])
    with pytest.raises(InvalidParameterError, match=r"frames\[1\].*7 rows"):
        write_class_maps(tmp_path, maps, frames=[[0, 10], [0, 10]], **kw)
    with pytest.raises(InvalidParameterError, match="One entry per class"):
        write_class_maps(tmp_path, maps, frames=[[0, 10]], **kw)
    assert not any(tmp_path.iterdir())


def test_old_format_still_loads(tmp_path, rng):
    # As written by the pipeline before run time: one padded (class, time, region) array.
    stacked = rng.random((2, 12, 4)).astype(np.float32)
    with open(tmp_path / "class_maps.npz", "wb") as handle:
        np.savez_compressed(handle, maps=stacked)
    (tmp_path / "class_maps.json").write_text(json.dumps({
        "shape": ["class", "time", "region"], "classes": ["a", "b"],
        "regions": ["r1", "r2", "r3", "r4"], "t_r": 0.72,
    }))
    maps, meta = read_class_maps(tmp_path)
    assert len(maps) == 2
    assert_array_equal(maps[1], stacked[1])
    assert meta["classes"] == ["a", "b"] and meta["t_r"] == 0.72
    assert meta["format_version"] == 1 and meta["frames"] is None and "not run time" in meta["aggregate"]


def test_bad_inputs_name_the_problem(tmp_path):
    samples = build_samples([run(frame_function(40))], window=10, step=3)
    with pytest.raises(InvalidParameterError, match="'saliency' must have shape"):
        to_run_time(samples.x[:, :5], samples)
    bad = samples.x.copy()
    bad[0, 3, 1] = np.nan
    with pytest.raises(InputDataError, match="NaN"):
        to_run_time(bad, samples)
    with pytest.raises(InvalidParameterError, match="frame_stride"):
        to_run_time(samples.x, samples, frame_stride=0)
    with pytest.raises(InputDataError, match="explain stage"):
        read_class_maps(tmp_path)
