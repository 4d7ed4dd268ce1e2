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
    return simulate_hcp(root / "data", n_subjects=6, tasks=TASKS, frames="hcp", voxel_size=8.0,
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
        "samples": {"window": 24, "step": 24, "start": 2},
        "crossval": {"folds": 3},
        "models": {"ica-lstm": {"kind": "ica", "hidden_size": 4, "r": 2, "d_a": 4},
                   "lstm": {"kind": "lstm", "hidden_size": 4}},
        "training": {"epochs": 2, "crops_per_run": 2},
        "saliency": {"n_bins": 2, "per_subject": True},
        "sanity": {"n_untrained": 2, "n_boot": 50, "n_perm": 100},
        "report": {"surface": False, "animation": False},
    }
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["-q", "run", str(out / "config.yaml")]) == 0
    return out / "result"


def _sidecar(path):
    return json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())


def test_outputs_are_valid_nifti_on_the_data_grid_in_run_time(run_dir, dataset):
    bold = nib.load(next(dataset.path.glob("*/MNINonLinear/Results/tfMRI_MOTOR_LR/tfMRI_MOTOR_LR.nii.gz")))
    for task, n_frames in (("MOTOR", 284), ("WM", 405)):  # each class its own run length
        maps = sorted((run_dir / "maps" / "ica-lstm").glob(f"group_*_class-{task}_stat-saliency_bold.nii.gz"))
        assert len(maps) == 1
        img = nib.load(maps[0])
        assert img.shape == (*bold.shape[:3], n_frames)
        np.testing.assert_allclose(img.affine, bold.affine)
        assert img.header.get_zooms()[3] == pytest.approx(0.72, abs=1e-5)
        assert img.header.get_xyzt_units() == ("mm", "sec")
        data = np.asarray(img.dataobj)
        before = data[..., :2]  # frames before 'start': no window covers them
        assert np.all(np.isnan(before) | (before == 0)) and np.isnan(before).any()
        assert np.isfinite(data[..., 2:]).all() and np.nanmax(data) > 0
        sidecar = _sidecar(maps[0])["Parameters"]
        assert sidecar["Frames"] == [0, n_frames] and sidecar["UncoveredFrames"] == [[0, 2]]
        assert "ica-lstm" in json.dumps(sidecar) and "gradient" in json.dumps(sidecar)
    for model in ("lstm", "linear"):
        assert len(list((run_dir / "maps" / model).glob("group_*_stat-saliencymean_statmap.nii.gz"))) == 2
    subjects = sorted(s for fold in json.loads((run_dir / "samples" / "folds.json").read_text())["folds"]
                      for s in fold["test"])
    per_subject = sorted((run_dir / "maps" / "ica-lstm").glob("sub-*_class-WM_stat-saliency_bold.nii.gz"))
    assert [p.name.split("_")[0] for p in per_subject] == [f"sub-{s}" for s in subjects]
    assert (run_dir / "models" / "ica-lstm" / "confusion_test.png").stat().st_size > 0


def test_time_binned_maps_carry_the_bin_spacing(run_dir):
    binned = next((run_dir / "maps" / "ica-lstm").glob("group_*_class-WM_timebins-2_stat-saliency_statmap.nii.gz"))
    assert nib.load(binned).header.get_zooms()[3] == pytest.approx(405 / 2 * 0.72, rel=0.02)


def test_group_tests_are_written_as_nifti_with_sidecars(run_dir):
    folder = run_dir / "maps" / "ica-lstm" / "group-tests"
    for null in ("untrained", "permuted"):
        for task in TASKS:
            z = next(folder.glob(f"group_task-{task}_*null-{null}_stat-z_saliency.nii.gz"))
            assert np.isfinite(np.asarray(nib.load(z).dataobj)).all()
            assert _sidecar(z)
            assert next(folder.glob(f"group_task-{task}_*null-{null}_stat-z_thresh-fdr05_saliency.nii.gz"))


def test_models_metrics_and_folds_are_written(run_dir):
    folds = json.loads((run_dir / "samples" / "folds.json").read_text())["folds"]
    tested = [s for fold in folds for s in fold["test"]]
    assert len(tested) == 6 and len(set(tested)) == 6  # every subject tested exactly once
    for fold in folds:
        assert not set(fold["train"]) & (set(fold["val"]) | set(fold["test"]))
    for model in ("ica-lstm", "lstm"):
        evaluation = json.loads((run_dir / "models" / model / "evaluation.json").read_text())
        assert evaluation["classes"] == TASKS
        test = evaluation["test"]
        assert 0 <= test["accuracy"] <= 1 and test["n_runs"] == 6 * 2 * 2
        assert test["run_accuracy_ci"][0] <= test["accuracy"] <= test["run_accuracy_ci"][1]
        assert 0 <= evaluation["permuted"]["accuracy"] <= 1
        for k in range(3):
            assert (run_dir / "models" / model / f"fold-{k}" / "trained" / "init" / "model.pt").is_file()
        metrics = json.loads((run_dir / "saliency" / model / "metrics.json").read_text())
        assert len(metrics["curve_mean"]) == 24
        assert np.isclose(sum(metrics["curve_mean"]), 1.0)
        assert {"on_share", "on_share_mismatched", "removal", "planted_share", "sanity"} <= set(metrics)
        sanity = metrics["sanity"]
        assert sanity["n_subjects"] == 6
        assert {"untrained", "permuted", "cascade-head", "cascade-rnn"} <= set(sanity["nulls"])
        assert sanity["verdicts"]["untrained"]["differs"] in ("yes", "no", "inconclusive")


def test_report_renders_with_every_model(run_dir):
    html = (run_dir / "report.html").read_text()
    for text in ("ica-lstm", "lstm", "linear", "MOTOR", "WM", "planted (ground truth)",
                 "Are these maps evidence?", "these maps differ from an untrained network&#x27;s"):
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
    assert main(["-q", "train", config, "--set", "samples.window=20"]) == 3
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


def test_switching_the_permuted_label_null_on_trains_only_the_null(run_dir):
    import torch

    out = run_dir.parent / "null-later"
    config = str(run_dir.parent / "config.yaml")
    shutil.copytree(run_dir / "timeseries", out / "timeseries")
    stages = ["--stage", "parcellate", "--stage", "samples", "--stage", "train"]
    assert main(["-q", "run", config, "--output", str(out), *stages,
                 "--set", "sanity.permuted_labels=false"]) == 0
    fold = out / "models" / "ica-lstm" / "fold-0"
    assert not (fold / "permuted").exists()
    assert "permuted" not in json.loads((out / "models" / "ica-lstm" / "evaluation.json").read_text())
    weights = {p: p.stat().st_mtime_ns for p in (fold / "trained").rglob("*.pt")}
    result = (fold / "trained" / "fit_result.json").read_text()

    assert main(["-q", "run", config, "--output", str(out), *stages]) == 0
    assert {p: p.stat().st_mtime_ns for p in weights} == weights  # not trained again
    assert (fold / "trained" / "fit_result.json").read_text() == result
    assert (fold / "permuted" / "last" / "model.pt").is_file()
    evaluation = json.loads((out / "models" / "ica-lstm" / "evaluation.json").read_text())
    assert evaluation["permuted"]["run_accuracy"] >= 0
    # the same model as a run that had the null on from the start
    for name in ("trained", "permuted"):
        a = torch.load(fold / name / "last" / "model.pt", weights_only=True)
        b = torch.load(run_dir / "models" / "ica-lstm" / "fold-0" / name / "last" / "model.pt", weights_only=True)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_models_own_input_noise_overrides_the_training_setting_for_that_model_alone(run_dir):
    import torch

    config = str(run_dir.parent / "config.yaml")
    stages = ["--stage", "parcellate", "--stage", "samples", "--stage", "train"]

    def train(name, *sets):
        out = run_dir.parent / name
        shutil.copytree(run_dir / "timeseries", out / "timeseries")
        args = [a for s in ("sanity.permuted_labels=false", *sets) for a in ("--set", s)]
        assert main(["-q", "run", config, "--output", str(out), *stages, *args]) == 0
        return out

    def weights(out, model):
        return torch.load(out / "models" / model / "fold-0" / "trained" / "last" / "model.pt", weights_only=True)

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    quiet = train("noise-none")
    own = train("noise-own", "models.ica-lstm.input_noise=1.0")
    everyone = train("noise-all", "training.input_noise=1.0")
    assert same(weights(own, "ica-lstm"), weights(everyone, "ica-lstm"))
    assert not same(weights(own, "ica-lstm"), weights(quiet, "ica-lstm"))
    assert same(weights(own, "lstm"), weights(quiet, "lstm"))  # no noise of its own: training's 0
    assert not same(weights(everyone, "lstm"), weights(quiet, "lstm"))
