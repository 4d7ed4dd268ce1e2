"""Stage outputs are verified, not trusted by existence; stages lock; failed runs count."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from _faults import assert_one_line_error
from _fixtures_layouts import make_hcp_tree

SAMPLES = ("--stage", "samples")


def _samples_equal(out, clean) -> None:
    with np.load(out / "samples" / "samples.npz") as a, np.load(clean / "samples" / "samples.npz") as b:
        assert a.files == b.files
        for key in b.files:
            np.testing.assert_array_equal(a[key], b[key])


def test_a_truncated_samples_file_is_redone_and_said_so(cli, pipeline_copy, tiny_pipeline, caplog):
    config, out = pipeline_copy
    npz = out / "samples" / "samples.npz"
    npz.write_bytes(npz.read_bytes()[:100])
    result = cli("run", config, "--output", out, *SAMPLES)
    assert result.code == 0, result.err
    assert any("samples.npz changed size" in r.getMessage() for r in caplog.records)
    _samples_equal(out, tiny_pipeline.parent / "out")


def test_a_downstream_stage_names_the_damaged_upstream_file(cli, pipeline_copy):
    config, out = pipeline_copy
    npz = out / "samples" / "samples.npz"
    npz.write_bytes(npz.read_bytes()[:100])
    line = assert_one_line_error(cli("run", config, "--output", out, "--stage", "train"), 3,
                                 "samples stage must run again", str(npz), "changed size")
    assert "--stage samples" in line


def test_a_tampered_file_of_the_same_size_and_time_is_found_by_verify(cli, pipeline_copy, tiny_pipeline):
    config, out = pipeline_copy
    folds = out / "samples" / "folds.json"
    stat = folds.stat()
    text = folds.read_text()
    folds.write_text(text.replace('"s1"', '"s9"', 1))
    os.utime(folds, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    marker = out / ".stages" / "samples.json"
    before = marker.read_text()
    assert cli("run", config, "--output", out, *SAMPLES).code == 0
    assert marker.read_text() == before  # size and time agree: trusted without --verify
    assert cli("run", config, "--output", out, *SAMPLES, "--verify").code == 0
    assert folds.read_text() == text  # re-done
    assert marker.read_text() != before


def test_a_half_written_marker_reruns_the_stage(cli, pipeline_copy, tiny_pipeline):
    config, out = pipeline_copy
    marker = out / ".stages" / "samples.json"
    marker.write_text(marker.read_text()[:20])
    result = cli("run", config, "--output", out, *SAMPLES)
    assert result.code == 0 and "Traceback" not in result.err
    assert json.loads(marker.read_text())["key"]
    _samples_equal(out, tiny_pipeline.parent / "out")


def test_a_copied_output_folder_is_not_recomputed(cli, pipeline_copy):
    """Markers hold paths relative to the output folder: a moved result stays finished."""
    config, out = pipeline_copy  # a copy of the tiny pipeline's output, run with --output
    before = {p: p.stat().st_mtime_ns for p in (out / "samples").iterdir()}
    result = cli("run", config, "--output", out, "--stage", "parcellate", *SAMPLES)
    assert result.code == 0, result.err
    assert {p: p.stat().st_mtime_ns for p in (out / "samples").iterdir()} == before
    summary = json.loads((out / "timeseries" / "parcellate_summary.json").read_text())
    assert summary["counts"]["done"] == 0 and summary["counts"]["skipped"] == 4


def test_a_stage_held_by_a_live_process_exits_busy(cli, pipeline_copy):
    config, out = pipeline_copy
    (out / ".stages" / "samples.json").unlink()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = out / ".stages" / "samples.lock"
        lock.write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename, "time": 0}))
        line = assert_one_line_error(cli("run", config, "--output", out, *SAMPLES), 5,
                                     "samples stage", f"pid {holder.pid}")
        assert "Wait for it" in line and not (out / ".stages" / "samples.json").exists()
        holder.kill()
        holder.wait()
        assert cli("run", config, "--output", out, *SAMPLES).code == 0  # a dead holder's lock
        assert not lock.exists()
    finally:
        holder.kill()


@pytest.fixture
def one_bad_run(tmp_path):
    """Three runs; one BOLD is 3D (found wrong while listing the data set)."""
    root = make_hcp_tree(tmp_path, subjects=("a", "b", "c"), dirs=("LR",))
    bold = root / "b" / "MNINonLinear" / "Results" / "tfMRI_MOTOR_LR" / "tfMRI_MOTOR_LR.nii.gz"
    img = nib.load(bold)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[..., 0], img.affine), bold)
    return root, bold


def test_a_run_found_wrong_at_discovery_fails_alone(cli, one_bad_run, tmp_path):
    root, bold = one_bad_run
    out = tmp_path / "ts"
    result = cli("parcellate", root, "--out", out, "--no-progress")
    assert result.code == 1 and "1 of 3 run(s) failed" in result.err and "--allow" not in result.out
    failures = (out / "parcellate_failures.tsv").read_text()
    assert "sub-b_task-MOTOR_run-LR" in failures and "(3D)" in failures and str(bold) in failures
    assert len(list(out.rglob("*_timeseries.tsv"))) == 2
    assert cli("parcellate", root, "--out", out, "--no-progress", "--allow-failures", "1").code == 0
    assert cli("parcellate", root, "--out", out, "--no-progress", "--allow-failures", "0.5").code == 0
    assert cli("parcellate", root, "--out", out, "--no-progress", "--allow-failures", "0.2").code == 1


def test_run_stops_when_runs_failed_unless_allowed(cli, one_bad_run, write_config, tmp_path):
    from _faults import labels_atlas, tiny_config

    root, bold = one_bad_run
    config = write_config(tiny_config(root, labels_atlas(tmp_path), tmp_path / "out"))
    line = assert_one_line_error(cli("run", config, "--stage", "parcellate"), 3,
                                 "1 of 3 run(s) failed", "allow_failures")
    assert "parcellate" in line and not (tmp_path / "out" / ".stages" / "parcellate.json").exists()
    assert cli("run", config, "--stage", "parcellate", "--allow-failures", "1").code == 0
    marker = json.loads((tmp_path / "out" / ".stages" / "parcellate.json").read_text())
    assert marker["failed"] == ["sub-b_task-MOTOR_run-LR"] and len(marker["outputs"]) == 2


def test_touched_bolds_in_a_moved_data_set_redo_nothing(cli, pipeline_copy, tmp_path):
    """A data set copied elsewhere with new file times: checksums say nothing changed, so
    no run is re-parcellated and the samples are not rebuilt."""
    import shutil

    import yaml

    config, out = pipeline_copy
    root = tmp_path / "moved"
    shutil.copytree(yaml.safe_load(config.read_text())["data"]["root"], root)
    for bold in root.rglob("tfMRI_*.nii.gz"):
        os.utime(bold)
    npz = out / "samples" / "samples.npz"
    before = npz.stat().st_mtime_ns
    result = cli("run", config, "--output", out, "--set", f"data.root={root}", "--stage", "parcellate", *SAMPLES)
    assert result.code == 0, result.err
    assert npz.stat().st_mtime_ns == before
