"""End to end on a tiny simulated HCP set: every stage, its outputs, and skip-if-done."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import yaml

from fmri_ica.cli import main
from fmri_ica.data.simulate import simulate_hcp

TASKS = ["MOTOR", "WM"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    return simulate_hcp(root / "data", n_subjects=4, tasks=TASKS, frames=36, voxel_size=8.0,
                        atlas="gm_kmeans", atlas_options={"n_regions": 24}, seed=1,
                        n_task_regions=2, n_shared_regions=1,
                        progress=False, n_jobs=1)


@pytest.fixture(scope="module")
def run_dir(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    config = {
        "output": "result",
        "data": {"root": str(dataset.path), "layout": "hcp"},
        "atlas": {"name": "gm_kmeans", "options": {"n_regions": 24}},
        "parcellation": {"high_pass": None},
        "samples": {"window": 24, "start": 2, "split": [0.5, 0.25, 0.25]},
        "models": {"ica-lstm": {"kind": "ica", "hidden_size": 4, "r": 2, "d_a": 4},
                   "lstm": {"kind": "lstm", "hidden_size": 4}},
        "training": {"epochs": 2, "patience": 1},
        "saliency": {"n_bins": 2, "per_subject": True},
        "report": {"surface": False, "animation": False},
    }
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["-q", "run", str(out / "config.yaml")]) == 0
    return out / "result"


def test_outputs_are_valid_nifti_on_the_data_grid(run_dir, dataset):
    bold = nib.load(next(dataset.path.glob("*/MNINonLinear/Results/tfMRI_MOTOR_LR/tfMRI_MOTOR_LR.nii.gz")))
    maps = sorted((run_dir / "maps" / "ica-lstm").glob("group_*_class-MOTOR_stat-saliency_bold.nii.gz"))
    assert len(maps) == 1
    img = nib.load(maps[0])
    assert img.shape == (*bold.shape[:3], 24)
    np.testing.assert_allclose(img.affine, bold.affine)
    assert img.header.get_zooms()[3] == pytest.approx(0.72, abs=1e-5)
    assert img.header.get_xyzt_units() == ("mm", "sec")
    data = np.asarray(img.dataobj)
    assert np.isfinite(data).all() and data.max() > 0
    sidecar = json.loads(maps[0].with_name(maps[0].name.replace(".nii.gz", ".json")).read_text())
    assert "ica-lstm" in json.dumps(sidecar) and "gradient" in json.dumps(sidecar)
    for model in ("lstm", "linear"):
        assert len(list((run_dir / "maps" / model).glob("group_*_stat-saliencymean_statmap.nii.gz"))) == 2
    test_subjects = json.loads((run_dir / "samples" / "splits.json").read_text())["test"]["subjects"]
    per_subject = sorted((run_dir / "maps" / "ica-lstm").glob("sub-*_class-WM_stat-saliency_bold.nii.gz"))
    assert [p.name.split("_")[0] for p in per_subject] == [f"sub-{s}" for s in test_subjects]
    assert (run_dir / "models" / "ica-lstm" / "confusion_test.png").stat().st_size > 0


def test_models_metrics_and_splits_are_written(run_dir):
    splits = json.loads((run_dir / "samples" / "splits.json").read_text())
    subjects = [set(s["subjects"]) for s in splits.values()]
    assert sum(map(len, subjects)) == 4 and len(set.union(*subjects)) == 4
    for model in ("ica-lstm", "lstm"):
        evaluation = json.loads((run_dir / "models" / model / "evaluation.json").read_text())
        assert evaluation["classes"] == TASKS
        assert 0 <= evaluation["test"]["accuracy"] <= 1
        metrics = json.loads((run_dir / "saliency" / model / "metrics.json").read_text())
        assert len(metrics["curve_mean"]) == 24
        assert np.isclose(sum(metrics["curve_mean"]), 1.0)
        assert {"on_share", "on_share_mismatched", "removal", "planted_share"} <= set(metrics)


def test_report_renders_with_every_model(run_dir):
    html = (run_dir / "report.html").read_text()
    for text in ("When does each model look?", "ica-lstm", "lstm", "linear", "MOTOR", "WM",
                 "planted (ground truth)"):
        assert text in html
    assert "http://" not in html.replace("http://www.w3.org", "")


def test_rerun_skips_everything_and_changes_nothing(run_dir, caplog):
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and ".stages" not in str(p)}
    caplog.set_level("INFO", logger="fmri_ica")
    assert main(["run", str(run_dir.parent / "config.yaml")]) == 0
    skipped = [r.message for r in caplog.records if r.message.startswith("Skipping")]
    assert len(skipped) >= 6
    after = {p: p.stat().st_mtime_ns for p in before}
    logs = {"config.json", "parcellate_summary.json", "parcellate_failures.tsv"}  # rewritten per run
    changed = [p for p in before if before[p] != after[p] and p.name not in logs]
    assert not changed


def test_a_stage_refuses_upstream_outputs_made_with_other_parameters(run_dir, capsys):
    config = str(run_dir.parent / "config.yaml")
    assert main(["-q", "train", config, "--set", "samples.window=20"]) == 1
    error = capsys.readouterr().err
    assert "samples stage has not been run with the current parameters" in error


def test_narrowing_the_data_leaves_earlier_runs_out(run_dir):
    out = run_dir.parent / "narrow"
    config = str(run_dir.parent / "config.yaml")
    shutil.copytree(run_dir / "timeseries", out / "timeseries")  # finished runs of all tasks
    assert main(["-q", "run", config, "--output", str(out), "--stage", "parcellate",
                 "--stage", "samples", "--set", "data.tasks=[WM]", "--set", "samples.classes=null"]) == 0
    marker = json.loads((out / ".stages" / "samples.json").read_text())
    assert marker["classes"] == ["WM"]
