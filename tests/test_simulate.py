"""The simulator writes a correct HCP tree whose planted regions carry the task signal."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from fmri_ica.data.simulate import (
    HCP_EVS,
    HCP_FRAMES,
    HCP_TASKS,
    block_evs,
    hcp_grid,
    on_frames,
    simulate_events,
    simulate_hcp,
)
from fmri_ica.exceptions import InvalidParameterError

SMALL = dict(tasks=("MOTOR", "WM"), frames=40, voxel_size=8.0, signal=2.0, progress=False,
             n_jobs=1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """3 subjects x MOTOR, WM x LR, RL; 40 frames on an 8 mm grid."""
    return simulate_hcp(tmp_path_factory.mktemp("sim") / "hcp", n_subjects=3, **SMALL)


def _run_dir(root, subject, task, direction):
    return root / subject / "MNINonLinear" / "Results" / f"tfMRI_{task}_{direction}"


def _read_events(folder, task):
    events = {}
    for name in HCP_EVS[task]:
        text = (folder / "EVs" / f"{name}.txt").read_text()
        rows = [line.split() for line in text.splitlines() if line.strip()]
        events[name] = np.array(rows, dtype=float).reshape(-1, 3)
    return events


def _regressor(events, task, n_frames, t_r=0.72):
    """The task's block EVs through nilearn's SPM HRF: the reference task time course."""
    from nilearn.glm.first_level import compute_regressor

    rows = np.concatenate([events[name] for name in block_evs(task) if events[name].size])
    regressor, _ = compute_regressor(rows.T, "spm", (np.arange(n_frames) + 0.5) * t_r)
    return regressor[:, 0]


def _region_correlations(root, run, truth):
    """Correlation of every atlas region's mean signal (nilearn masker) with the design."""
    from nilearn.maskers import NiftiLabelsMasker

    atlas = nib.load(root / truth["atlas"]["image"])
    labels = np.unique(np.asarray(atlas.dataobj))
    labels = labels[labels > 0]
    signals = NiftiLabelsMasker(atlas, standardize=None).fit_transform(root / run["bold"])
    folder = (root / run["bold"]).parent
    reference = _regressor(_read_events(folder, run["task"]), run["task"], run["n_frames"])
    centred = signals - signals.mean(axis=0)
    ref = reference - reference.mean()
    r = centred.T @ ref / np.sqrt((centred**2).sum(axis=0) * (ref**2).sum())
    return labels, r


@pytest.mark.parametrize("n_frames", [None, 1, 5])
def test_streamed_nifti_writer_equals_nibabel(rng, tmp_path, n_frames):
    import gzip

    from fmri_ica.data.simulate import _Brain, _save_masked

    shape, affine = hcp_grid(16.0)
    mask = rng.random(shape) < 0.3
    values = rng.standard_normal((mask.sum(),) if n_frames is None else (n_frames, mask.sum()))
    values = values.astype(np.float32)
    brain = _Brain(affine, mask, None, None, None, None, None)
    _save_masked(brain, values, tmp_path / "x.nii.gz", t_r=None if n_frames is None else 0.72)
    full = np.zeros(shape + (() if n_frames is None else (n_frames,)), dtype=np.float32)
    full[mask] = values.T
    img = nib.Nifti1Image(full, affine)
    img.header.set_xyzt_units("mm", "sec")
    if n_frames is not None:
        img.header["pixdim"][4] = 0.72
    assert gzip.decompress((tmp_path / "x.nii.gz").read_bytes()) == img.to_bytes()


def test_hcp_grid_matches_hcp_and_keeps_world_coordinates():
    shape, affine = hcp_grid(2.0)
    assert shape == (91, 109, 91)
    expected = np.diag([-2.0, 2, 2, 1])
    expected[:3, 3] = (90, -126, -72)
    np.testing.assert_array_equal(affine, expected)
    shape4, affine4 = hcp_grid(4.0)
    assert shape4 == (46, 55, 46)
    # voxel k of the 4 mm grid is voxel 2k of HCP's grid
    ijk = np.array([[3, 7, 11, 1]]).T
    np.testing.assert_allclose(affine4 @ ijk, affine @ (ijk * [[2], [2], [2], [1]]))


@pytest.mark.parametrize("task", HCP_TASKS)
def test_events_mimic_hcp_designs(task):
    duration = HCP_FRAMES[task] * 0.72
    events = simulate_events(task, duration, np.random.default_rng(1))
    assert tuple(events) == HCP_EVS[task]
    rows = np.concatenate([r for r in events.values() if r.size])
    assert rows.shape[1] == 3
    assert (rows[:, 0] >= 0).all() and (rows[:, 1] > 0).all()
    assert (rows[:, 0] + rows[:, 1] <= duration + 1e-6).all()
    blocks = {name: events[name] for name in block_evs(task)}
    on = on_frames(blocks, HCP_FRAMES[task], 0.72)
    assert not on[0]  # every run starts with fixation
    assert 0.4 < on.mean() < 0.95
    other = simulate_events(task, duration, np.random.default_rng(2))
    assert not np.array_equal(on, on_frames(other, HCP_FRAMES[task], 0.72))  # jittered


def test_motor_design_has_hcp_block_structure():
    events = simulate_events("MOTOR", HCP_FRAMES["MOTOR"] * 0.72, np.random.default_rng(0))
    movements = [events[name] for name in ("lf", "rf", "lh", "rh", "t")]
    assert 8 <= sum(len(m) for m in movements) <= 12  # HCP: 10 movement blocks per run
    assert all(10 <= d <= 13.5 for m in movements for d in m[:-1, 1])  # ~12 s blocks
    assert len(events["cue"]) == sum(len(m) for m in movements)  # a cue before each


def test_layout_matches_hcp(dataset):
    root, truth = dataset.path, dataset.ground_truth
    shape, affine = hcp_grid(8.0)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["100001", "100002", "100003"]
    empty = 0
    for run in truth["runs"]:
        folder = _run_dir(root, run["subject"], run["task"], run["direction"])
        img = nib.load(folder / f"{folder.name}.nii.gz")
        assert img.shape == (*shape, 40)
        assert img.get_data_dtype() == np.float32
        np.testing.assert_allclose(img.affine, affine)
        assert img.header.get_zooms()[3] == pytest.approx(0.72)
        assert img.header.get_xyzt_units() == ("mm", "sec")
        mask = nib.load(folder / "brainmask_fs.2.nii.gz")
        assert mask.shape == shape
        data = np.asarray(img.dataobj)
        inside = np.asarray(mask.dataobj) > 0
        assert data[inside].mean() > 500 and (data[~inside] == 0).all()
        motion = np.loadtxt(folder / "Movement_Regressors.txt")
        assert motion.shape == (40, 12)
        np.testing.assert_allclose(motion[1:, 6:], np.diff(motion[:, :6], axis=0), atol=2e-6)
        for name in HCP_EVS[run["task"]]:
            text = (folder / "EVs" / f"{name}.txt").read_text()
            if not text.strip():
                empty += 1
                continue
            assert np.loadtxt(folder / "EVs" / f"{name}.txt", ndmin=2).shape[1] == 3
    assert empty > 0  # HCP has empty EV files (e.g. WM errors); so do we


def test_ground_truth_matches_files(dataset):
    root, truth = dataset.path, dataset.ground_truth
    assert json.loads((root / "ground_truth.json").read_text()) == truth
    assert truth["complete"] is True
    assert truth["parameters"]["seed"] == 0 and "numpy" in truth["versions"]
    atlas = np.asarray(nib.load(root / truth["atlas"]["image"]).dataobj)
    planted = [set(truth["tasks"][t]["planted_regions"]) for t in ("MOTOR", "WM")]
    shared = set(truth["shared_regions"])
    assert len(planted[0]) == len(planted[1]) == 10 and len(shared) == 5
    assert not planted[0] & planted[1] and not (planted[0] | planted[1]) & shared
    assert (planted[0] | planted[1] | shared) <= set(np.unique(atlas).tolist())
    assert len(truth["runs"]) == 3 * 2 * 2
    for run in truth["runs"]:
        folder = (root / run["bold"]).parent
        events = _read_events(folder, run["task"])
        blocks = {name: events[name] for name in block_evs(run["task"])}
        assert run["on_frames"] == np.flatnonzero(on_frames(blocks, 40, 0.72)).tolist()
        assert run["empty_evs"] == [n for n, rows in events.items() if rows.size == 0]
        # the HRF-delayed ON frames lag the boxcar
        assert np.mean(run["on_frames_hrf"]) > np.mean(run["on_frames"])
        subject = truth["subjects"][run["subject"]]["tasks"][run["task"]]
        assert set(map(int, subject["region_amplitudes"])) == planted[0 if run["task"] == "MOTOR"
                                                                      else 1] | shared
    amplitude = nib.load(root / truth["amplitude_image"])
    assert amplitude.shape == (*atlas.shape, 2)
    for j, task in enumerate(("MOTOR", "WM")):
        expected = np.isin(atlas, sorted(set(truth["tasks"][task]["planted_regions"]) | shared))
        np.testing.assert_array_equal(np.asarray(amplitude.dataobj)[..., j] > 0, expected)


def test_project_readers_see_the_ground_truth(dataset):
    from fmri_ica.data.confounds import read_hcp_movement
    from fmri_ica.data.events import default_conditions, frame_conditions, read_events
    from fmri_ica.data.layouts import discover_runs

    runs = discover_runs(dataset.path, "hcp")
    truth = {(r["subject"], r["task"], r["direction"]): r for r in dataset.ground_truth["runs"]}
    assert sorted((r.subject, r.task, r.run) for r in runs) == sorted(truth)
    for run in runs:
        assert run.t_r == pytest.approx(0.72) and run.mask is not None
        assert read_hcp_movement(run.confounds).shape == (40, 12)
        events = read_events(run)
        _, task_on = frame_conditions(events, 40, run.t_r,
                                      conditions=default_conditions(run, events))
        assert np.flatnonzero(task_on).tolist() == truth[run.subject, run.task, run.run][
            "on_frames"]


def test_planted_regions_carry_the_task_signal(dataset):
    root, truth = dataset.path, dataset.ground_truth
    for task in ("MOTOR", "WM"):
        planted_r, other_r = [], []
        for run in (r for r in truth["runs"] if r["task"] == task):
            labels, r = _region_correlations(root, run, truth)
            planted = np.isin(labels, truth["tasks"][task]["planted_regions"])
            other = ~planted & ~np.isin(labels, truth["shared_regions"])
            planted_r.append(r[planted].mean())
            other_r.append(r[other].mean())
        assert np.mean(planted_r) > 0.4, task
        assert np.mean(planted_r) > np.mean(other_r) + 0.3, task


def test_same_seed_same_data_and_adding_subjects_or_tasks_changes_nothing(dataset, tmp_path):
    smaller = simulate_hcp(tmp_path / "two", n_subjects=2, **{**SMALL, "tasks": ("WM",)})
    for subject in ("100001", "100002"):
        for direction in ("LR", "RL"):
            a = _run_dir(dataset.path, subject, "WM", direction)
            b = _run_dir(smaller.path, subject, "WM", direction)
            for name in (f"{a.name}.nii.gz", "Movement_Regressors.txt", "EVs/0bk_body.txt"):
                assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert smaller.ground_truth["tasks"]["WM"] == dataset.ground_truth["tasks"]["WM"]


def test_rerun_skips_finished_runs_and_refuses_other_parameters(dataset):
    bold = dataset.path / dataset.ground_truth["runs"][0]["bold"]
    before = bold.stat().st_mtime_ns
    again = simulate_hcp(dataset.path, n_subjects=3, **SMALL)
    assert bold.stat().st_mtime_ns == before
    assert again.ground_truth["runs"] == dataset.ground_truth["runs"]
    with pytest.raises(InvalidParameterError, match="signal"):
        simulate_hcp(dataset.path, n_subjects=3, **{**SMALL, "signal": 0.5})


def test_interrupted_simulation_resumes_with_the_same_parameters_only(tmp_path, monkeypatch):
    import fmri_ica.data.simulate as simulate

    real = simulate._run
    calls = []

    def crash_on_second_run(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(simulate, "_run", crash_on_second_run)
    small = {**SMALL, "tasks": ("EMOTION",), "directions": ("LR",), "frames": 20}
    with pytest.raises(KeyboardInterrupt):
        simulate_hcp(tmp_path / "sim", n_subjects=2, **small)
    assert json.loads((tmp_path / "sim" / "ground_truth.json").read_text())["complete"] is False
    with pytest.raises(InvalidParameterError, match="signal"):
        simulate_hcp(tmp_path / "sim", n_subjects=2, **{**small, "signal": 1.0})
    monkeypatch.setattr(simulate, "_run", real)
    result = simulate_hcp(tmp_path / "sim", n_subjects=2, **small)
    assert result.ground_truth["complete"] and len(result.ground_truth["runs"]) == 2


def test_zero_signal_is_a_noise_only_control(dataset, tmp_path):
    control = simulate_hcp(tmp_path / "control", n_subjects=1,
                           **{**SMALL, "tasks": ("MOTOR",), "signal": 0.0})
    truth = dataset.ground_truth
    atlas = np.asarray(nib.load(dataset.path / truth["atlas"]["image"]).dataobj)
    responding = np.isin(atlas, truth["tasks"]["MOTOR"]["planted_regions"]
                         + truth["shared_regions"])
    for run in control.ground_truth["runs"]:
        assert run["amplitude"] == 0
        with_signal = np.asarray(nib.load(dataset.path / run["bold"]).dataobj)
        without = np.asarray(nib.load(control.path / run["bold"]).dataobj)
        # same noise: the data differ only in the responding regions...
        changed = (with_signal != without).any(axis=-1)
        assert changed.any() and not (changed & ~responding).any()
        # ...and only by the task response, so the control has none left
        difference = (with_signal - without)[responding].mean(axis=0)
        events = _read_events((dataset.path / run["bold"]).parent, "MOTOR")
        assert np.corrcoef(difference, _regressor(events, "MOTOR", 40))[0, 1] > 0.9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tasks": ("MOTR",)}, "Did you mean 'MOTOR'"),
        ({"frames": "shrt"}, "Did you mean 'short'"),
        ({"frames": 5}, "frames"),
        ({"voxel_size": 0.0}, "voxel_size"),
        ({"directions": ("LR", "AP")}, "directions"),
        ({"n_task_regions": 40}, "n_task_regions"),
    ],
)
def test_bad_parameters_raise_clear_errors(tmp_path, kwargs, message):
    params = {**SMALL, **kwargs}
    with pytest.raises(InvalidParameterError, match=message):
        simulate_hcp(tmp_path / "bad", n_subjects=1, **params)


def test_cli_writes_a_data_set(tmp_path, caplog):
    from fmri_ica.cli import main

    out = tmp_path / "cli"
    code = main(["simulate", str(out), "--subjects", "1", "--tasks", "EMOTION", "--directions",
                 "LR", "--frames", "20", "--voxel-size", "8", "--no-progress", "--seed", "3"])
    assert code == 0
    img = nib.load(_run_dir(out, "100001", "EMOTION", "LR") / "tfMRI_EMOTION_LR.nii.gz")
    assert img.shape[-1] == 20
    assert json.loads((out / "ground_truth.json").read_text())["seed"] == 3


def test_cli_defaults_are_the_library_defaults():
    import argparse
    import inspect

    from fmri_ica.cli import simulate as cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = vars(parser.parse_args(["out"]))
    names = {"subjects": "n_subjects", "task_regions": "n_task_regions",
             "shared_regions": "n_shared_regions", "jobs": "n_jobs"}
    defaults = {k: p.default for k, p in inspect.signature(simulate_hcp).parameters.items()}
    for option, value in args.items():
        name = names.get(option, option)
        if name in defaults:
            expected = defaults[name]
            assert value == (list(expected) if isinstance(expected, tuple) else expected), option
