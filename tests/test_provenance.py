"""A finished run is finished for its inputs' *content*: edits redo it, moves and copies do not."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from _fixtures_layouts import make_hcp_tree
from test_parcellation import labels_atlas

from fmri_ica.data.layouts import discover_runs
from fmri_ica.data.parcellation import find_timeseries, load_timeseries, parcellate
from fmri_ica.provenance import content_sha256, fingerprint, stale_reason

OPTIONS = {"progress": False, "high_pass": None}


@pytest.fixture
def data(tmp_path):
    root = make_hcp_tree(tmp_path, subjects=("100307",), dirs=("LR",))
    return root, labels_atlas(tmp_path)


def _parcellate(root, atlas, out, **kw):
    summary = parcellate(discover_runs(root, keep_failed=True), str(atlas), out, **OPTIONS, **kw)
    assert summary.ok, summary.failed
    return summary


def _run_dir(root):
    return root / "100307" / "MNINonLinear" / "Results" / "tfMRI_MOTOR_LR"


def test_unchanged_inputs_are_skipped_and_a_moved_data_set_too(data, tmp_path):
    root, atlas = data
    out = tmp_path / "out"
    assert len(_parcellate(root, atlas, out).done) == 1
    assert len(_parcellate(root, atlas, out).skipped) == 1
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)  # new paths and new times, same content
    summary = _parcellate(moved, atlas, out)
    assert len(summary.skipped) == 1 and not summary.done


def test_edited_events_redo_the_run_and_restoring_them_redoes_it_again(data, tmp_path):
    root, atlas = data
    out = tmp_path / "out"
    _parcellate(root, atlas, out)
    before = load_timeseries(find_timeseries(out)[0])[1]["task_on"]
    evs = sorted((_run_dir(root) / "EVs").glob("*.txt"))
    originals = {p: p.read_text() for p in evs}
    for path in evs:
        if path.name != "Sync.txt":
            path.write_text("")  # emptied EVs: no task frames
    assert len(_parcellate(root, atlas, out).done) == 1
    assert sum(load_timeseries(find_timeseries(out)[0])[1]["task_on"]) == 0
    for path, text in originals.items():
        path.write_text(text)
    assert len(_parcellate(root, atlas, out).done) == 1
    assert load_timeseries(find_timeseries(out)[0])[1]["task_on"] == before


def test_edited_confounds_redo_the_run(data, tmp_path):
    root, atlas = data
    out = tmp_path / "out"
    _parcellate(root, atlas, out)
    motion = _run_dir(root) / "Movement_Regressors.txt"
    rows = np.loadtxt(motion)
    np.savetxt(motion, rows * 2.0)
    assert len(_parcellate(root, atlas, out).done) == 1


def test_a_bold_replaced_by_one_of_the_same_size(data, tmp_path):
    """New time: the checksum catches it. Same time (tampering): only --verify does."""
    root, atlas = data
    out = tmp_path / "out"
    _parcellate(root, atlas, out)
    bold = _run_dir(root) / "tfMRI_MOTOR_LR.nii.gz"
    original = bold.read_bytes()
    cut = len(original) - 200  # past the header: discovery still reads it
    same_size = original[:cut] + bytes(b ^ 0xFF for b in original[cut:cut + 100]) + original[cut + 100:]
    stat = bold.stat()
    bold.write_bytes(same_size)
    os.utime(bold, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # a tampered file keeps its time
    assert len(_parcellate(root, atlas, out).skipped) == 1
    summary = parcellate(discover_runs(root, keep_failed=True), str(atlas), out, verify=True, **OPTIONS)
    assert len(summary.failed) == 1  # re-read, found changed, re-done: the bytes are no NIfTI
    assert find_timeseries(out)  # a failed redo keeps the outputs of the original content
    bold.write_bytes(original)  # restored, with a new time: the checksum says unchanged
    assert len(_parcellate(root, atlas, out).skipped) == 1


def test_a_touched_bold_is_checked_once_by_checksum(data, tmp_path):
    root, atlas = data
    out = tmp_path / "out"
    _parcellate(root, atlas, out)
    bold = _run_dir(root) / "tfMRI_MOTOR_LR.nii.gz"
    os.utime(bold, ns=(1_000_000_000, 1_000_000_000))
    assert len(_parcellate(root, atlas, out).skipped) == 1
    sidecar = json.loads(find_timeseries(out)[0].with_suffix(".json").read_text())
    assert sidecar["source_bold_fingerprint"]["mtime_ns"] == 1_000_000_000


def test_a_damaged_time_series_file_is_redone(data, tmp_path):
    root, atlas = data
    out = tmp_path / "out"
    _parcellate(root, atlas, out)
    tsv = find_timeseries(out)[0]
    good = tsv.read_bytes()
    tsv.write_bytes(good[: len(good) // 2])  # cut short
    assert len(_parcellate(root, atlas, out).done) == 1
    assert tsv.read_bytes() == good


def test_stale_reason_names_what_changed(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"abc")
    recorded = fingerprint(path)
    assert stale_reason(path, recorded) is None
    path.write_bytes(b"abd")
    os.utime(path, ns=(recorded["mtime_ns"], recorded["mtime_ns"]))
    assert stale_reason(path, recorded) is None  # size and time agree: not re-read
    assert "content" in stale_reason(path, recorded, verify=True)
    path.write_bytes(b"abcd")
    assert "size" in stale_reason(path, recorded)
    path.unlink()
    assert "missing" in stale_reason(path, recorded)


def test_content_sha256_of_a_folder_covers_names_and_contents(tmp_path):
    folder = tmp_path / "EVs"
    folder.mkdir()
    (folder / "a.txt").write_text("1")
    first = content_sha256(folder)
    (folder / "a.txt").write_text("2")
    second = content_sha256(folder)
    (folder / "a.txt").rename(folder / "b.txt")
    assert len({first, second, content_sha256(folder)}) == 3
    assert content_sha256(None) is None


def test_regions_without_brain_signal_are_reported_and_refused_unless_dropped(data, tmp_path):
    """A label outside the brain: listed per run, an error at the samples stage, or dropped."""
    import nibabel as nib

    from fmri_ica.data.samples import build_samples
    from fmri_ica.exceptions import InputDataError

    root, atlas = data
    bold = _run_dir(root) / "tfMRI_MOTOR_LR.nii.gz"
    img = nib.load(bold)
    values = np.asanyarray(img.dataobj).copy()
    labels = np.asanyarray(nib.load(atlas).dataobj)
    values[labels == 7] = 0.0  # region "back" outside the brain: no signal
    nib.save(nib.Nifti1Image(values, img.affine, img.header), bold)
    out = tmp_path / "out"
    summary = _parcellate(root, atlas, out)
    assert summary.rows[0]["constant_regions"] == 1 and "constant signal" in str(summary)
    runs = [load_timeseries(p) for p in find_timeseries(out)]
    assert runs[0][1]["constant_regions"] == ["back"]
    with pytest.raises(InputDataError, match="back.*samples.empty_regions: drop"):
        build_samples(runs, window=10)
    dropped = build_samples(runs, window=10, empty_regions="drop")
    assert dropped.region_names == ["front", "top"] and dropped.x.shape[2] == 2
    np.testing.assert_array_equal(dropped.x, build_samples(runs, window=10, empty_regions="keep").x[..., [0, 2]])
