"""Parcellation: region time series equal nilearn's, bad inputs, and the batch runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from _fixtures_layouts import AFFINE, make_hcp_tree, truncate
from nilearn.maskers import NiftiLabelsMasker, NiftiMapsMasker

from fmri_ica.cli import main as cli_main
from fmri_ica.data.atlases import load_atlas
from fmri_ica.data.parcellation import (
    extract_timeseries,
    find_timeseries,
    load_timeseries,
    parcellate,
    parse_shard,
)
from fmri_ica.exceptions import InputDataError, InvalidParameterError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One atlas cache for the session (both atlas test modules): built atlases are reused."""
    path = tmp_path_factory.getbasetemp() / "atlas_cache"
    path.mkdir(exist_ok=True)
    return path


def bold(data, affine, t_r=2.0) -> nib.Nifti1Image:
    img = nib.Nifti1Image(np.asarray(data, np.float32), affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = t_r
    return img


def labels_atlas(tmp_path, affine=AFFINE, shape=(7, 8, 9)) -> Path:
    """A 3-region label atlas with a names TSV (stem.tsv next to it)."""
    data = np.zeros(shape, np.int16)
    data[:3, :4] = 3
    data[3:, :4] = 7
    data[:, 4:, :5] = 9
    path = tmp_path / "toy.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    names = pd.DataFrame(
        {"index": [3, 7, 9], "name": ["front", "back", "top"], "network": ["a", "a", "b"]}
    )
    names.to_csv(tmp_path / "toy.tsv", sep="\t", index=False)
    return path


def coarse_mni_bold(rng, voxel=12.0, n_frames=24) -> nib.Nifti1Image:
    shape = tuple(int(np.ceil(s / voxel)) + 1 for s in (180.0, 216.0, 180.0))
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = [-90.0, -126.0, -72.0]
    return bold(rng.standard_normal((*shape, n_frames)) + 100.0, affine)


OPTIONS = {"t_r": 2.0, "detrend": True, "standardize": "zscore_sample", "high_pass": 0.02}
# nilearn keeps region means of float32 data in float32 (~1e-5 of a mean of 100); ours
# are float64. After detrending and z-scoring that leaves differences up to ~1e-4.
TOL = {"rtol": 1e-5, "atol": 2e-4}


def nilearn_reference(atlas, img, **kwargs):
    if atlas.kind == "maps":
        masker = NiftiMapsMasker(maps_img=atlas.img, **kwargs)
    else:
        masker = NiftiLabelsMasker(labels_img=atlas.img, **kwargs)
    return masker.fit_transform(img)


# --------------------------------------------------------------------------- equals nilearn


@pytest.mark.parametrize("name", ["seitzman300", "gm_kmeans"])
def test_builtin_atlases_equal_nilearn_masker(name, rng, cache):
    img = coarse_mni_bold(rng)
    options = {"n_regions": 20} if name == "gm_kmeans" else {}
    atlas = load_atlas(name, target_img=img, cache_dir=cache, **options)
    out = extract_timeseries(img, atlas, **OPTIONS)
    assert out.dtype == np.float32 and out.shape == (24, atlas.n_regions)
    np.testing.assert_allclose(out, nilearn_reference(atlas, img, **OPTIONS), **TOL)


def test_user_labels_atlas_equals_nilearn_masker_with_confounds_and_sample_mask(
    tmp_path, img_4d, rng
):
    atlas = load_atlas(labels_atlas(tmp_path, affine=img_4d.affine))
    confounds = rng.standard_normal((20, 2))
    keep = np.arange(1, 20)  # 19 frames: the filter's minimum
    out = extract_timeseries(img_4d, atlas, confounds=confounds, sample_mask=keep, **OPTIONS)
    expected = NiftiLabelsMasker(labels_img=atlas.img, **OPTIONS).fit_transform(
        img_4d, confounds=confounds, sample_mask=keep
    )
    assert out.shape == (19, 3)
    np.testing.assert_allclose(out, expected, **TOL)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_label_means_equal_nilearns_region_means(dtype, rng, affine):
    from nilearn.regions import img_to_signals_labels

    from fmri_ica.data.parcellation import label_means

    labels = rng.integers(0, 6, size=(7, 8, 9)).astype(np.int32)
    labels[labels == 4] = 0  # a gap in the label values
    data = (rng.standard_normal((7, 8, 9, 150)) * 3 + 100).astype(dtype)
    expected, ids, _ = img_to_signals_labels(
        nib.Nifti1Image(data, affine), nib.Nifti1Image(labels, affine)
    )
    index = np.array([5, 1, 3, 2])  # any column order
    out = label_means(data, labels, index, chunk=64)  # 150 frames: a partial last chunk
    columns = [list(ids).index(i) for i in index]
    rtol = 1e-12 if dtype == np.float64 else 1e-6  # nilearn stores float32 means
    np.testing.assert_allclose(out, expected[:, columns], rtol=rtol)


def test_user_maps_atlas_equals_nilearn_masker(tmp_path, img_4d, rng):
    maps = np.abs(rng.standard_normal((7, 8, 9, 4))).astype(np.float32)
    nib.save(nib.Nifti1Image(maps, img_4d.affine), tmp_path / "maps.nii.gz")
    atlas = load_atlas(tmp_path / "maps.nii.gz")
    out = extract_timeseries(img_4d, atlas, **OPTIONS)
    np.testing.assert_allclose(
        out, nilearn_reference(atlas, img_4d, **OPTIONS), rtol=1e-5, atol=1e-5
    )


def test_atlas_on_another_grid_is_resampled_like_nilearn_does(tmp_path, rng):
    atlas = load_atlas(labels_atlas(tmp_path))  # 3 mm grid
    fine = AFFINE.copy()
    fine[:3, :3] /= 2  # data on a 1.5 mm grid over the same box
    img = bold(rng.standard_normal((14, 16, 18, 20)) + 50, fine)
    out = extract_timeseries(img, atlas, standardize=None, detrend=False)
    expected = NiftiLabelsMasker(labels_img=atlas.img, standardize=None).fit_transform(img)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_flipped_orientation_data_gives_the_same_time_series(tmp_path, img_4d):
    atlas = load_atlas(labels_atlas(tmp_path, affine=img_4d.affine))
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = img_4d.shape[0] - 1
    flipped = bold(np.asarray(img_4d.dataobj)[::-1], img_4d.affine @ flip)
    a = extract_timeseries(img_4d, atlas, **OPTIONS)
    b = extract_timeseries(flipped, atlas, **OPTIONS)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_atlas_that_misses_the_data_is_an_error(tmp_path, img_4d):
    far = img_4d.affine.copy()
    far[:3, 3] += 400
    atlas = load_atlas(labels_atlas(tmp_path, affine=far))
    with pytest.raises(InputDataError, match="do not overlap"):
        extract_timeseries(img_4d, atlas, t_r=2.0)


# --------------------------------------------------------------------------- normalisation


def test_percent_signal_change_against_fixation(tmp_path, affine, rng):
    atlas = load_atlas(labels_atlas(tmp_path, affine=affine))
    task_on = np.zeros(30, bool)
    task_on[[5, 6, 7, 8, 20, 21, 22]] = True
    data = np.full((7, 8, 9, 30), 200.0) + rng.standard_normal((7, 8, 9, 30)) * 0.01
    data[..., task_on] *= 1.05  # +5 % while ON
    img = bold(data, affine)
    out = extract_timeseries(img, atlas, standardize="psc", detrend=False, task_on=task_on, t_r=2.0)
    np.testing.assert_allclose(out[task_on].mean(0), 5.0, atol=0.05)
    np.testing.assert_allclose(out[~task_on].mean(0), 0.0, atol=1e-4)
    # The same formula written out on nilearn's raw region means.
    raw = NiftiLabelsMasker(labels_img=atlas.img, standardize=None).fit_transform(img)
    base = raw[~task_on].mean(0)
    np.testing.assert_allclose(out, 100 * (raw - base) / base, rtol=1e-4, atol=1e-4)


def test_psc_needs_task_on_and_booleans_are_refused(tmp_path, img_4d):
    atlas = load_atlas(labels_atlas(tmp_path, affine=img_4d.affine))
    with pytest.raises(InvalidParameterError, match="needs the run's task-ON frames"):
        extract_timeseries(img_4d, atlas, standardize="psc", t_r=2.0)
    with pytest.raises(InvalidParameterError, match="'standardize'.*Allowed"):
        extract_timeseries(img_4d, atlas, standardize=True, t_r=2.0)


# --------------------------------------------------------------------------- bad input


def save(img, path) -> Path:
    nib.save(img, path)
    return path


@pytest.fixture
def toy(tmp_path):
    return load_atlas(labels_atlas(tmp_path))


def test_3d_image_is_refused_naming_the_file(tmp_path, toy):
    path = save(nib.Nifti1Image(np.ones((7, 8, 9), np.float32), AFFINE), tmp_path / "vol.nii.gz")
    with pytest.raises(InputDataError, match=r"vol.nii.gz has shape \(7, 8, 9\).*4D"):
        extract_timeseries(path, toy, t_r=2.0)


def test_nan_voxels_are_counted(tmp_path, toy, rng):
    data = rng.standard_normal((7, 8, 9, 20)) + 100
    data[0, 0, :3, 4] = np.nan
    data[1, 1, 1, :] = np.inf
    path = save(bold(data, AFFINE), tmp_path / "nan.nii.gz")
    with pytest.raises(
        InputDataError, match=r"4 voxels \(23 values\) are NaN or infinite in .*nan.nii.gz"
    ):
        extract_timeseries(path, toy, t_r=2.0)


def test_all_zero_and_constant_runs(tmp_path, toy):
    zero = save(bold(np.zeros((7, 8, 9, 20)), AFFINE), tmp_path / "zero.nii.gz")
    with pytest.raises(InputDataError, match="zero.nii.gz is all zeros"):
        extract_timeseries(zero, toy, t_r=2.0)
    flat = np.repeat(np.arange(504, dtype=float).reshape(7, 8, 9, 1), 20, axis=3)
    constant = save(bold(flat, AFFINE), tmp_path / "flat.nii.gz")
    with pytest.raises(InputDataError, match="flat.nii.gz is constant over time"):
        extract_timeseries(constant, toy, t_r=2.0)


def test_too_few_frames_for_the_filter_says_the_minimum(tmp_path, toy, rng):
    short = save(bold(rng.standard_normal((7, 8, 9, 25)) + 100, AFFINE), tmp_path / "short.nii.gz")
    with pytest.raises(
        InputDataError,
        match=r"short.nii.gz has 25 frames \(after sample_mask\).*band-pass needs at least 34",
    ):
        extract_timeseries(short, toy, t_r=2.0, high_pass=0.01, low_pass=0.1)
    assert extract_timeseries(short, toy, t_r=2.0, high_pass=0.01).shape == (25, 3)
    with pytest.raises(InputDataError, match="needs at least 19"):
        extract_timeseries(
            save(bold(rng.standard_normal((7, 8, 9, 18)), AFFINE), tmp_path / "s.nii"),
            toy,
            t_r=2.0,
            low_pass=0.1,
        )


def test_filter_without_repetition_time(tmp_path, toy, rng):
    img = bold(rng.standard_normal((7, 8, 9, 20)) + 100, AFFINE, t_r=0.0)
    with pytest.raises(InvalidParameterError, match="pass t_r"):
        extract_timeseries(img, toy, high_pass=0.01)


def test_unreadable_file(tmp_path, toy):
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(b"\x1f\x8b junk")
    with pytest.raises(InputDataError, match="junk.nii.gz"):
        extract_timeseries(path, toy, t_r=2.0)


# --------------------------------------------------------------------------- batch


@pytest.fixture
def hcp(tmp_path):
    root = make_hcp_tree(tmp_path, subjects=("100307", "100408"), dirs=("LR", "RL"))
    from fmri_ica.data.layouts import discover_runs

    return discover_runs(root), labels_atlas(tmp_path)


def test_parcellate_writes_time_series_and_sidecars(hcp, tmp_path):
    runs, atlas_path = hcp
    out = tmp_path / "out"
    summary = parcellate(runs, str(atlas_path), out, progress=False, t_r=None,
                         confounds_strategy=None, high_pass=None)  # extract_timeseries' defaults
    assert summary.ok and len(summary.done) == 4
    files = find_timeseries(out)
    assert [f.name for f in files][0] == "sub-100307_task-MOTOR_run-LR_atlas-toy_timeseries.tsv"
    assert files[0].parent == out / "sub-100307" / "func"
    data, sidecar = load_timeseries(files[0])
    run = runs[0]
    expected = extract_timeseries(run, load_atlas(atlas_path), t_r=run.t_r, task_on=None)
    np.testing.assert_array_equal(data, expected)  # float32 round-trips through the TSV
    assert [label["name"] for label in sidecar["labels"]] == ["front", "back", "top"]
    assert sidecar["n_frames_total"] == 20 and sidecar["frames_kept"] == list(range(20))
    assert len(sidecar["conditions"]) == 20 and set(sidecar["task_on"]) == {0, 1}
    assert sidecar["conditions"][3] == "lf" and sidecar["conditions"][-1] == ""
    from fmri_ica._utils import sha256_file

    assert sidecar["source_bold_sha256"] == sha256_file(run.bold)
    assert sidecar["t_r"] == pytest.approx(0.72) and "nilearn" in sidecar["versions"]
    summary_json = json.loads((out / "parcellate_summary.json").read_text())
    assert summary_json["counts"] == {"done": 4, "skipped": 0, "failed": 0}


def test_rerun_skips_and_changed_parameter_reruns(hcp, tmp_path):
    runs, atlas_path = hcp
    out = tmp_path / "out"
    parcellate(runs[:2], str(atlas_path), out, progress=False)
    first = [f.stat().st_mtime_ns for f in find_timeseries(out)]
    again = parcellate(runs[:2], str(atlas_path), out, progress=False)
    assert again.done == [] and len(again.skipped) == 2
    assert [f.stat().st_mtime_ns for f in find_timeseries(out)] == first
    changed = parcellate(runs[:2], str(atlas_path), out, progress=False, high_pass=0.05)
    assert len(changed.done) == 2
    assert (
        json.loads(find_timeseries(out)[0].with_suffix(".json").read_text())["parameters"][
            "extract"
        ]["high_pass"]
        == 0.05
    )
    assert (
        len(
            parcellate(
                runs[:2], str(atlas_path), out, progress=False, high_pass=0.05, overwrite=True
            ).done
        )
        == 2
    )


def test_psc_in_the_batch_uses_the_events(hcp, tmp_path):
    runs, atlas_path = hcp
    summary = parcellate(
        runs[:1], str(atlas_path), tmp_path / "o", progress=False, standardize="psc", detrend=False
    )
    assert summary.ok
    data, sidecar = load_timeseries(find_timeseries(tmp_path / "o")[0])
    off = np.asarray(sidecar["task_on"]) == 0
    np.testing.assert_allclose(data[off].mean(0), 0.0, atol=1e-3)


def test_shards_split_the_sorted_runs(hcp, tmp_path, monkeypatch):
    runs, atlas_path = hcp
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) == (0, 1)
    for bad in ("4/4", "1of4", "-1/2"):
        with pytest.raises(InvalidParameterError, match="shard"):
            parse_shard(bad)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_STEP", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    assert parse_shard("auto") == (2, 3)  # --array=1-5:2, third task
    summary = parcellate(
        list(reversed(runs)), str(atlas_path), tmp_path / "o", shard="1/2", progress=False
    )
    keys = sorted(r.key for r in runs)
    assert summary.done == [keys[1], keys[3]]
    assert (tmp_path / "o" / "parcellate_shard-1-of-2_summary.json").is_file()


def test_a_failed_run_is_recorded_and_the_others_complete(hcp, tmp_path):
    runs, atlas_path = hcp
    truncate(runs[1].bold)
    summary = parcellate(runs, str(atlas_path), tmp_path / "o", progress=False)
    assert summary.failed == [runs[1].key] and len(summary.done) == 3 and not summary.ok
    failures = pd.read_csv(tmp_path / "o" / "parcellate_failures.tsv", sep="\t")
    assert failures["run"].tolist() == [runs[1].key]
    assert "truncated" in failures["reason"][0] and str(runs[1].bold) in failures["reason"][0]
    assert len(find_timeseries(tmp_path / "o")) == 3
    assert runs[1].key in str(summary) and "3 done, 0 skipped, 1 failed" in str(summary)


def test_unwritable_output_folder_is_an_error_up_front(hcp, tmp_path):
    runs, atlas_path = hcp
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(InvalidParameterError, match="Output folder .*a_file/out cannot be written"):
        parcellate(runs, str(atlas_path), blocker / "out", progress=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_output_folder_is_an_error_up_front(hcp, tmp_path):
    runs, atlas_path = hcp
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(InvalidParameterError, match="cannot be written"):
            parcellate(runs, str(atlas_path), out, progress=False)
    finally:
        out.chmod(0o755)


def test_a_live_lock_makes_the_run_skip_and_a_dead_one_is_taken_over(hcp, tmp_path):
    import socket

    from fmri_ica.data.parcellation import timeseries_path

    runs, atlas_path = hcp
    out = tmp_path / "o"
    lock = timeseries_path(out, runs[0], "toy").with_suffix(".lock")
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    token = {"pid": holder.pid, "host": socket.gethostname(), "time": time.time()}
    try:
        lock.write_text(json.dumps(token))
        summary = parcellate(runs[:1], str(atlas_path), out, progress=False)
        assert summary.done == [] and "locked by pid" in summary.rows[0]["reason"]
    finally:
        holder.kill()
        holder.wait()
    summary = parcellate(runs[:1], str(atlas_path), out, progress=False)  # holder is dead now
    assert summary.done == [runs[0].key] and not lock.exists()


def test_a_lock_from_another_host_is_stale_once_no_longer_refreshed(hcp, tmp_path):
    from fmri_ica.data.parcellation import timeseries_path

    runs, atlas_path = hcp
    out = tmp_path / "o"
    lock = timeseries_path(out, runs[0], "toy").with_suffix(".lock")
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": 1, "host": "node-elsewhere", "time": time.time() - 100}))
    os.utime(lock, (time.time() - 100, time.time() - 100))
    assert parcellate(runs[:1], str(atlas_path), out, progress=False).done == []
    summary = parcellate(runs[:1], str(atlas_path), out, progress=False, stale_lock_s=60)
    assert summary.done == [runs[0].key]


def test_a_held_lock_is_refreshed(tmp_path):
    from fmri_ica.data.parcellation import _RunLock

    path = tmp_path / "x.lock"
    with _RunLock(path, stale_s=0.4):
        os.utime(path, (0, 0))
        time.sleep(0.3)  # the heartbeat (every 0.1 s) touches it again
        assert time.time() - path.stat().st_mtime < 0.4
    assert not path.exists()


@pytest.mark.slow  # two fresh interpreters: ~20 s on a loaded 2-core machine
def test_two_processes_share_an_output_folder(hcp, tmp_path):
    runs, atlas_path = hcp
    root = runs[0].bold.parents[4]
    # Both processes start together and each run takes >= 0.5 s, so they collide on locks.
    script = textwrap.dedent(
        f"""
        import json, pathlib, sys, time
        from fmri_ica.data import parcellation
        from fmri_ica.data.layouts import discover_runs
        slow = parcellation._parcellate_one
        def one(*args):
            time.sleep(0.5)
            return slow(*args)
        parcellation._parcellate_one = one
        runs = discover_runs({str(root)!r})
        pathlib.Path({str(tmp_path)!r}, "ready_" + sys.argv[1]).touch()
        while not pathlib.Path({str(tmp_path)!r}, "go").exists():
            time.sleep(0.02)
        s = parcellation.parcellate(runs, {str(atlas_path)!r}, {str(tmp_path / "o")!r},
                                    progress=False)
        print(json.dumps(s.rows))
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(i)], stdout=subprocess.PIPE, cwd=REPO)
        for i in range(2)
    ]
    deadline = time.time() + 120
    while not all((tmp_path / f"ready_{i}").exists() for i in range(2)):
        assert time.time() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    (tmp_path / "go").touch()
    rows = [row for p in procs for row in json.loads(p.communicate(timeout=120)[0])]
    assert all(p.returncode == 0 for p in procs)
    done = sorted(r["run"] for r in rows if r["status"] == "done")
    assert done == sorted(r.key for r in runs)  # each run written exactly once
    assert not [r for r in rows if r["status"] == "failed"]
    assert any("locked by" in r["reason"] for r in rows)  # they did collide
    for path in find_timeseries(tmp_path / "o"):
        load_timeseries(path)  # complete and consistent
    assert not list((tmp_path / "o").rglob("*.lock"))


@pytest.mark.slow  # starts a process pool: ~15 s on a loaded 2-core machine
def test_two_jobs_equal_one_job(hcp, tmp_path):
    runs, atlas_path = hcp
    parcellate(runs, str(atlas_path), tmp_path / "one", progress=False)
    summary = parcellate(runs, str(atlas_path), tmp_path / "two", n_jobs=2, progress=False)
    assert len(summary.done) == 4
    one, two = find_timeseries(tmp_path / "one"), find_timeseries(tmp_path / "two")
    assert [p.name for p in one] == [p.name for p in two]
    for a, b in zip(one, two, strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_builtin_atlas_by_name_in_the_batch(hcp, tmp_path, cache):
    runs, _ = hcp
    with pytest.warns(UserWarning, match="are dropped"):
        summary = parcellate(
            runs[:1],
            "gm_kmeans",
            tmp_path / "o",
            atlas_options={"n_regions": 20},
            cache_dir=cache,
            progress=False,
        )
    # The 7x8x9 3 mm test grid covers only a corner of the brain: most parcels are dropped.
    assert summary.ok, summary
    data, sidecar = load_timeseries(find_timeseries(tmp_path / "o", atlas="gm_kmeans")[0])
    assert data.shape[1] == len(sidecar["labels"]) == 20 - len(sidecar["atlas"]["dropped"])


# --------------------------------------------------------------------------- CLI


def test_cli_parcellate_and_exit_code(hcp, tmp_path, capsys):
    runs, atlas_path = hcp
    root = runs[0].bold.parents[4]
    args = [
        "parcellate",
        str(root),
        "--atlas",
        str(atlas_path),
        "--out",
        str(tmp_path / "o"),
        "--task",
        "MOTOR",
        "--no-progress",
    ]
    assert cli_main(args) == 0
    assert "4 done, 0 skipped, 0 failed" in capsys.readouterr().out
    broken = nib.load(runs[0].bold)
    data = broken.get_fdata()
    data[0, 0, 0, 0] = np.nan  # passes discovery (header only), fails parcellation
    nib.save(nib.Nifti1Image(data.astype(np.float32), broken.affine, broken.header), runs[0].bold)
    assert cli_main([*args, "--overwrite"]) == 1
    assert "1 failed" in capsys.readouterr().out


def test_cli_atlases_lists_and_builds(tmp_path, capsys):
    assert cli_main(["atlases"]) == 0
    assert "seitzman300" in capsys.readouterr().out
    target = tmp_path / "t.nii.gz"
    nib.save(coarse_mni_bold(np.random.default_rng(0), voxel=16.0, n_frames=2), target)
    code = cli_main(
        [
            "atlases",
            "build",
            "power264",
            "--target",
            str(target),
            "--cache-dir",
            str(tmp_path / "c"),
            "--save",
            str(tmp_path / "p"),
        ]
    )
    assert code == 0 and json.loads(capsys.readouterr().out)["n_regions"] <= 264
    assert nib.load(tmp_path / "p.nii.gz").shape == nib.load(target).shape[:3]


def test_atlas_object_and_confounds_in_the_batch(hcp, tmp_path):
    from fmri_ica.data.confounds import read_hcp_movement

    runs, atlas_path = hcp
    atlas = load_atlas(atlas_path)
    summary = parcellate(
        runs[:1], atlas, tmp_path / "o", confounds_strategy="simple", progress=False, high_pass=None
    )
    assert summary.ok, summary
    data, sidecar = load_timeseries(find_timeseries(tmp_path / "o", atlas="toy")[0])
    assert sidecar["parameters"]["confounds_strategy"] == "simple"
    movement = read_hcp_movement(runs[0].confounds)
    expected = extract_timeseries(runs[0], atlas, confounds=movement - movement.mean(axis=0))
    np.testing.assert_array_equal(data, expected)
    without = extract_timeseries(runs[0], atlas)
    assert np.abs(data - without).max() > 1e-3  # the confounds were regressed out


def test_an_atlas_that_cannot_be_had_fails_before_any_run(hcp, tmp_path):
    from fmri_ica.exceptions import AtlasUnavailableError

    runs, _ = hcp
    with pytest.raises(AtlasUnavailableError, match="schaefer2018"):
        parcellate(
            runs,
            "schaefer2018",
            tmp_path / "o",
            atlas_options={"data_dir": str(tmp_path)},
            progress=False,
        )
    with pytest.raises(InputDataError, match="Cannot read atlas file"):
        parcellate(runs, str(tmp_path / "missing.nii.gz"), tmp_path / "o", progress=False)
    assert find_timeseries(tmp_path / "o") == []


def test_parcellate_cleans_like_the_pipeline_by_default(hcp, tmp_path):
    from fmri_ica.config import DEFAULTS

    runs, atlas_path = hcp
    parcellate(runs[:1], str(atlas_path), tmp_path / "a", progress=False)
    explicit = {key: DEFAULTS["parcellation"][key] for key in ("detrend", "standardize", "high_pass", "low_pass")}
    parcellate(runs[:1], str(atlas_path), tmp_path / "b", progress=False,
               confounds_strategy=DEFAULTS["parcellation"]["confounds_strategy"], **explicit)
    a, b = find_timeseries(tmp_path / "a")[0], find_timeseries(tmp_path / "b")[0]
    assert a.read_bytes() == b.read_bytes()
