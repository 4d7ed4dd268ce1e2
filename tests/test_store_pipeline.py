"""``samples.store: true`` (a memory-mapped sample store, read lazily) gives the pipeline the
same folds, models and scores as the in-memory ``samples.npz``."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from _fixtures_layouts import AFFINE, make_hcp_tree

from fmri_ica.cli import main
from fmri_ica.config import load_config
from fmri_ica.data.store import SampleStore
from fmri_ica.pipeline import Workspace, _explain_linear, _first_windows, load_fold


def _atlas(folder):
    """Three named regions on the (7, 8, 9) grid of the HCP fixture."""
    data = np.zeros((7, 8, 9), np.int16)
    data[:3, :4], data[3:, :4], data[:, 4:, :5] = 3, 7, 9
    nib.save(nib.Nifti1Image(data, AFFINE), folder / "toy.nii.gz")
    pd.DataFrame({"index": [3, 7, 9], "name": ["front", "back", "top"]}).to_csv(
        folder / "toy.tsv", sep="\t", index=False)
    return folder / "toy.nii.gz"


MODES = {  # whole runs (new crops each epoch), no validation subjects (val: one window per
    # training run)
    "runs": {"samples": {"window": 10, "step": 5}, "crossval": {"folds": 3},
             "training": {"epochs": 2}},
    # fixed windows, one validation subject group
    "windows": {"samples": {"mode": "windows", "window": 8, "step": 4},
                "crossval": {"folds": 3, "val_folds": 1},
                "training": {"epochs": 1, "selection": "best"}},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hcp")
    root = make_hcp_tree(folder, subjects=("s1", "s2", "s3"), tasks=("MOTOR", "WM"),
                         dirs=("LR",), n_frames=24)
    return root, _atlas(folder), folder / "out"


@pytest.fixture(scope="module", params=sorted(MODES))
def outputs(request, data, tmp_path_factory):
    """(config, output folder) of the in-memory run and of the store run, through training;
    every run works in one output folder (parcellated once; the samples switch formats) and
    is copied after."""
    root, atlas, out = data
    folder = tmp_path_factory.mktemp(request.param)
    mode, done = MODES[request.param], []
    for store in (False, True):
        config = {
            "output": str(out), "data": {"root": str(root)},
            "atlas": {"name": str(atlas)}, "samples": {**mode["samples"], "store": store},
            "crossval": mode["crossval"], "models": {"tiny": {"kind": "lstm", "hidden_size": 3}},
            "training": {"min_epochs": 1, "batch_size": 4, "crops_per_run": 2, **mode["training"]},
            "report": {"linear_baseline": True},
        }
        path = folder / f"config-{store}.yaml"
        path.write_text(yaml.safe_dump(config))
        stages = ["--stage", "parcellate", "--stage", "samples", "--stage", "train"]
        assert main(["-q", "run", str(path), *stages]) == 0
        shutil.copytree(out, folder / f"store-{store}")
        done.append((load_config(path), folder / f"store-{store}"))
    return done


def _numbers_close(got, want, where="evaluation.json"):
    """Equal JSON, floats to 1e-5: the store's scalers are fitted in float64 blocks, the
    in-memory ones in float32 (measured: scalers 2e-7, weights 6e-8, log-probabilities 1e-6
    apart)."""
    if isinstance(want, dict):
        assert sorted(got) == sorted(want), where
        for key in want:
            _numbers_close(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            _numbers_close(a, b, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6), where
    else:
        assert got == want, where


def test_the_store_holds_the_samples_instead_of_samples_npz(outputs):
    (_, memory), (_, store) = outputs
    assert (memory / "samples" / "samples.npz").is_file()
    assert not (memory / "samples" / "store").exists()
    assert not (store / "samples" / "samples.npz").exists()
    assert len(SampleStore(store / "samples" / "store")) > 0
    folds = [json.loads((out / "samples" / "folds.json").read_text())["folds"] for out in (memory, store)]
    for a, b in zip(*folds, strict=True):
        assert {r: a[r] for r in ("train", "val", "test")} == {r: b[r] for r in ("train", "val", "test")}
        for key in ("mean", "scale"):
            np.testing.assert_allclose(b["standardizer"][key], a["standardizer"][key], rtol=1e-5, atol=1e-6)


def test_training_from_the_store_equals_training_in_memory(outputs):
    (_, memory), (_, store) = outputs
    for name in ["evaluation.json", *(f"fold-{k}/evaluation.json" for k in range(3))]:
        got = json.loads((store / "models" / "tiny" / name).read_text())
        want = json.loads((memory / "models" / "tiny" / name).read_text())
        _numbers_close(got, want, name)
    weights = sorted(p.relative_to(memory) for p in (memory / "models").rglob("model.pt"))
    assert any("permuted" in str(p) for p in weights) and any("trained" in str(p) for p in weights)
    assert weights == sorted(p.relative_to(store) for p in (store / "models").rglob("model.pt"))
    for path in weights:
        got = torch.load(store / path, weights_only=True)
        want = torch.load(memory / path, weights_only=True)
        assert list(got) == list(want)
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6, msg=f"{path}: {key}")


def test_fold_pieces_and_the_linear_reference_match(outputs):
    (config, memory), (_, store) = outputs
    for k in range(3):
        a, b = load_fold(Workspace(memory), k), load_fold(Workspace(store), k)
        assert isinstance(b["train"], SampleStore)  # lazy: read per batch
        np.testing.assert_array_equal(b["train"].subjects, a["train"].subjects)
        for role in ("val", "test"):
            np.testing.assert_allclose(b[role].x, a[role].x, rtol=1e-5, atol=1e-5)
        first = _first_windows(config, a["train"]), _first_windows(config, b["train"])
        np.testing.assert_allclose(first[1].x, first[0].x, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(first[1].lengths, first[0].lengths)
        np.testing.assert_array_equal(first[1].runs, first[0].runs)
    _numbers_close(_explain_linear(config, Workspace(store)), _explain_linear(config, Workspace(memory)),
                   "linear reference")


def test_the_report_reads_what_it_needs_from_the_store(outputs):
    """classes, t_r, labels, subjects and task-ON flags: the same as from samples.npz."""
    from fmri_ica.pipeline import _runs_for_report

    (_, memory), (_, store) = outputs
    a, b = _runs_for_report(Workspace(memory)), _runs_for_report(Workspace(store))
    assert b.classes == a.classes and b.t_r == a.t_r
    np.testing.assert_array_equal(b.y, a.y)
    np.testing.assert_array_equal(b.subjects, a.subjects)
    np.testing.assert_array_equal(b.task_on, a.task_on)
