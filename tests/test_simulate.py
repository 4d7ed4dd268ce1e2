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


# --------------------------------------------------------------------------- blobs mode

BLOBS = dict(tasks=("MOTOR", "WM"), directions=("LR",), frames=30, voxel_size=8.0, signal=2.0,
             progress=False, n_jobs=1, activation="blobs", blob_fwhm=16.0, jitter_mm=4.0,
             n_task_regions=3, n_shared_regions=1)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """2 subjects x MOTOR, WM x LR, 30 frames, 8 mm; and its signal-0 control."""
    root = tmp_path_factory.mktemp("blobs")
    return (simulate_hcp(root / "signal", n_subjects=2, **BLOBS),
            simulate_hcp(root / "control", n_subjects=2, **{**BLOBS, "signal": 0.0}))


def _bold(result, run):
    return np.asarray(nib.load(result.path / run["bold"]).dataobj, dtype=np.float64)


def _world(img):
    """World coordinates (mm) of every voxel, shape img.shape[:3] + (3,)."""
    ijk = np.indices(img.shape[:3]).reshape(3, -1).T
    return nib.affines.apply_affine(img.affine, ijk).reshape(*img.shape[:3], 3)


def test_blobs_peak_at_each_subjects_jittered_centres(blobs):
    signal, control = blobs
    truth = signal.ground_truth
    img = nib.load(signal.path / truth["runs"][0]["bold"])
    world = _world(img)
    mask = np.asarray(nib.load(signal.path / truth["runs"][0]["bold"].replace(
        "tfMRI_MOTOR_LR.nii.gz", "brainmask_fs.2.nii.gz")).dataobj) > 0
    checked = 0
    for run, run0 in zip(truth["runs"], control.ground_truth["runs"], strict=True):
        # same seed, same noise: the difference is the task response alone
        response = (_bold(signal, run) - _bold(control, run0)).std(axis=-1)
        subject = truth["subjects"][run["subject"]]
        centres = np.array(subject["tasks"][run["task"]]["centres_mm"]
                           + subject["shared_centres_mm"])
        population = np.array(truth["tasks"][run["task"]]["centres_mm"])
        assert 0 < np.linalg.norm(centres[:3] - population, axis=1).mean() < 20  # jittered
        distance = np.linalg.norm(world[..., None, :] - centres, axis=-1).min(axis=-1)
        assert response[distance > 3 * 16].max() < 0.02 * response.max()  # nothing far away
        # the response follows blobs (FWHM 16 mm) at the subject's centres, not the population's
        to_population = np.linalg.norm(world[..., None, :] - np.array(
            population.tolist() + truth["shared_centres_mm"]), axis=-1).min(axis=-1)
        fit = [np.corrcoef(response[mask], np.exp(-d[mask] ** 2 / (2 * (16 / 2.3548) ** 2)))[0, 1]
               for d in (distance, to_population)]
        assert fit[0] > 0.9 and fit[0] > fit[1] + 0.1
        for centre in centres:
            to_centre = np.linalg.norm(world - centre, axis=-1)
            if (to_centre[mask] > 6).all():  # jittered out of the brain
                continue
            near = np.where(to_centre <= 16, response, -1)
            peak = np.unravel_index(np.argmax(near), near.shape)
            assert to_centre[peak] <= 8.0  # within a voxel of the subject's centre
            checked += 1
    assert checked >= 10


def test_blobs_ground_truth_is_atlas_free_and_consistent(blobs):
    signal, control = blobs
    truth = signal.ground_truth
    assert truth["activation"] == "blobs" and truth["blob_fwhm_mm"] == 16.0
    assert not (signal.path / "ground_truth_atlas.nii.gz").exists()
    centres = np.array([c for t in ("MOTOR", "WM") for c in truth["tasks"][t]["centres_mm"]]
                       + truth["shared_centres_mm"])
    assert centres.shape == (7, 3)
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1)[np.triu_indices(7, 1)]
    assert gaps.min() >= 2 * 16.0  # disjoint, at least 2 FWHM apart
    for task in ("MOTOR", "WM"):
        assert truth["tasks"][task]["planted_regions"] == []
        assert truth["tasks"][task]["planted_names"] == []
    image = nib.load(signal.path / truth["activation_image"])
    assert image.shape == (*hcp_grid(8.0)[0], 2)
    world = _world(image)
    volumes = np.asarray(image.dataobj)
    for j, task in enumerate(("MOTOR", "WM")):
        for centre, amplitude in zip(truth["tasks"][task]["centres_mm"],
                                     truth["tasks"][task]["amplitudes"], strict=True):
            voxel = np.unravel_index(np.argmin(np.linalg.norm(world - centre, axis=-1)),
                                     world.shape[:3])
            assert volumes[voxel + (j,)] == pytest.approx(amplitude, rel=0.01)  # population peak
        for other in truth["tasks"]["WM" if task == "MOTOR" else "MOTOR"]["centres_mm"]:
            voxel = np.unravel_index(np.argmin(np.linalg.norm(world - other, axis=-1)),
                                     world.shape[:3])
            assert volumes[voxel + (j,)] < 0.05 * volumes[..., j].max()  # not this task's
    # the signal-0 control: same centres, no activation at all, same noise far from blobs
    assert control.ground_truth["tasks"]["MOTOR"]["centres_mm"] == truth["tasks"]["MOTOR"][
        "centres_mm"]
    assert not np.asarray(nib.load(control.path / truth["activation_image"]).dataobj).any()
    assert all(run["amplitude"] == 0 for run in control.ground_truth["runs"])
    assert all(run["amplitude"] > 0 for run in truth["runs"])


def test_blob_noise_is_spatially_smooth(blobs):
    _, control = blobs
    run = control.ground_truth["runs"][0]
    data = _bold(control, run)
    mask = data.std(axis=-1) > 0
    idx = np.argwhere(mask)
    rng = np.random.default_rng(0)
    close, far = [], []
    for i in rng.choice(len(idx), 200, replace=False):
        a = tuple(idx[i])
        b = (a[0] + 1, a[1], a[2])  # the neighbour 8 mm away
        c = tuple(idx[rng.integers(len(idx))])
        if mask[b] and np.linalg.norm(np.subtract(a, c)) * 8 > 60:
            close.append(np.corrcoef(data[a], data[b])[0, 1])
            far.append(np.corrcoef(data[a], data[c])[0, 1])
    assert np.mean(close) > 0.25
    assert np.mean(close) > np.mean(far) + 0.2


def test_blobs_are_reproducible_and_seeded(blobs, tmp_path):
    signal, _ = blobs
    small = {**BLOBS, "tasks": ("WM",)}
    again = simulate_hcp(tmp_path / "again", n_subjects=1, **small)
    other = simulate_hcp(tmp_path / "other", n_subjects=1, **{**small, "seed": 1})
    name = "100001/MNINonLinear/Results/tfMRI_WM_LR/tfMRI_WM_LR.nii.gz"
    assert (again.path / name).read_bytes() == (signal.path / name).read_bytes()
    assert (other.path / name).read_bytes() != (signal.path / name).read_bytes()
    assert again.ground_truth["tasks"]["WM"] == signal.ground_truth["tasks"]["WM"]
    assert other.ground_truth["tasks"]["WM"]["centres_mm"] != signal.ground_truth["tasks"][
        "WM"]["centres_mm"]
    with pytest.raises(InvalidParameterError, match="activation"):
        simulate_hcp(again.path, n_subjects=1, **{**small, "activation": "regions"})


def _spheres(shape, affine, centres, radius=6.0):
    """A label image: label i + 1 = the voxels within ``radius`` mm of centres[i]."""
    ijk = np.indices(shape).reshape(3, -1).T
    world = nib.affines.apply_affine(affine, ijk)
    labels = np.zeros(len(world), dtype=np.int32)
    for i, centre in enumerate(centres):
        labels[np.linalg.norm(world - centre, axis=1) <= radius] = i + 1
    return nib.Nifti1Image(labels.reshape(shape), affine)


def test_planted_regions_for_atlas_finds_the_regions_covering_centres(blobs):
    import pandas as pd

    from fmri_ica.data.atlases import Atlas
    from fmri_ica.data.simulate import planted_regions_for_atlas

    signal, control = blobs
    tasks = signal.ground_truth["tasks"]
    spheres = [tasks["MOTOR"]["centres_mm"][0], [0.0, -200.0, 0.0],  # nowhere near the brain
               tasks["WM"]["centres_mm"][1], signal.ground_truth["shared_centres_mm"][0]]
    shape, affine = hcp_grid(4.0)  # another grid than the data's: resampled to it
    img = _spheres(shape, affine, spheres)
    planted = planted_regions_for_atlas(signal.path, img)
    assert planted == {"MOTOR": {"labels": [1], "names": None},
                       "WM": {"labels": [3], "names": None}}
    assert planted_regions_for_atlas(signal.path, img, include_shared=True)["WM"]["labels"] == [
        3, 4]
    names = pd.DataFrame({"index": [1, 2, 3, 4], "name": ["m1", "far", "wm2", "shared"]})
    atlas = Atlas("hand", "labels", img, names)
    assert planted_regions_for_atlas(signal.path, atlas)["MOTOR"] == {"labels": [1],
                                                                      "names": ["m1"]}
    assert planted_regions_for_atlas(control.path, atlas)["MOTOR"] == {"labels": [],
                                                                       "names": []}
    with pytest.raises(InvalidParameterError, match="fraction"):
        planted_regions_for_atlas(signal.path, img, fraction=0.0)


def test_planted_regions_for_atlas_in_regions_mode_gives_the_planted_regions(dataset, tmp_path):
    from fmri_ica.data.simulate import planted_regions_for_atlas
    from fmri_ica.exceptions import InputDataError

    truth = dataset.ground_truth
    atlas = dataset.path / truth["atlas"]["image"]
    planted = planted_regions_for_atlas(dataset.path, nib.load(atlas))
    for task in ("MOTOR", "WM"):
        assert planted[task]["labels"] == sorted(truth["tasks"][task]["planted_regions"])
    with pytest.raises(InputDataError, match="ground_truth.json"):
        planted_regions_for_atlas(tmp_path, nib.load(atlas))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"activation": "blob"}, "Did you mean 'blobs'"),
        ({"blob_fwhm": 4.0}, "blob_fwhm"),
        ({"blob_fwhm": -1.0}, "blob_fwhm"),
        ({"jitter_mm": -1.0}, "jitter_mm"),
        ({"amplitude_sd": "big"}, "amplitude_sd"),
        ({"hrf_peak_sd": 5.0}, "hrf_peak_sd"),
        ({"n_task_regions": 12}, "n_task_regions"),
    ],
)
def test_bad_blob_parameters_raise_clear_errors(tmp_path, kwargs, message):
    with pytest.raises(InvalidParameterError, match=message):
        simulate_hcp(tmp_path / "bad", n_subjects=1, **{**BLOBS, **kwargs})


def test_cli_writes_a_blobs_data_set(tmp_path):
    from fmri_ica.cli import main

    out = tmp_path / "cli"
    code = main(["simulate", str(out), "--subjects", "1", "--tasks", "EMOTION", "--directions",
                 "LR", "--frames", "20", "--voxel-size", "8", "--no-progress",
                 "--activation", "blobs", "--blob-fwhm", "16", "--jitter-mm", "2",
                 "--task-regions", "2", "--shared-regions", "0"])
    assert code == 0
    truth = json.loads((out / "ground_truth.json").read_text())
    assert truth["parameters"]["jitter_mm"] == 2.0 and truth["blob_fwhm_mm"] == 16.0
    assert len(truth["tasks"]["EMOTION"]["centres_mm"]) == 2
    assert (out / "ground_truth_activation.nii.gz").exists()
