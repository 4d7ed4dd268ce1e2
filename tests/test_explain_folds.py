"""The explain stage one fold at a time (SLURM array tasks), then pooled: the same outputs as
explaining every fold in one process."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from _fixtures_layouts import make_hcp_tree

from fmri_ica.cli import main
from fmri_ica.saliency import sanity

sys.path.insert(0, str(Path(__file__).parent / "faults"))
from _faults import labels_atlas, tiny_config


@pytest.fixture(scope="module")
def samples_done(tmp_path_factory):
    """3 subjects x 2 tasks, 2 folds, parcellated and cut into samples: (config, output)."""
    folder = tmp_path_factory.mktemp("explain_folds")
    root = make_hcp_tree(folder, subjects=("s1", "s2", "s3"), tasks=("MOTOR", "WM"), dirs=("LR",))
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(root, labels_atlas(folder), folder / "out")))
    assert main(["-q", "run", str(config), "--stage", "parcellate", "--stage", "samples"]) == 0
    return config, folder / "out"


def _stages(*names: str) -> list[str]:
    return [arg for name in names for arg in ("--stage", name)]


def _assert_same_saliency(out: Path, reference: Path) -> None:
    files = sorted(p.relative_to(reference) for p in (reference / "saliency").rglob("*")
                   if p.suffix in (".npz", ".npy") or p.name == "metrics.json")
    assert Path("saliency/tiny/metrics.json") in files and Path("saliency/tiny/class_maps.npz") in files
    assert sorted(p.relative_to(out) for p in (out / "saliency").rglob("*")
                  if p.suffix in (".npz", ".npy") or p.name == "metrics.json") == files
    for name in files:
        if name.suffix == ".json":
            assert json.loads((out / name).read_text()) == json.loads((reference / name).read_text())
        elif name.suffix == ".npy":
            np.testing.assert_array_equal(np.load(out / name), np.load(reference / name))
        else:
            with np.load(out / name) as mine, np.load(reference / name) as theirs:
                assert sorted(mine.files) == sorted(theirs.files), name
                for key in theirs.files:
                    np.testing.assert_array_equal(mine[key], theirs[key], err_msg=f"{name}: {key}")


def test_folds_explained_apart_then_pooled_equal_one_explain(samples_done, tmp_path, monkeypatch,
                                                          capsys):
    config, samples = samples_done
    folded, whole = tmp_path / "folded", tmp_path / "whole"
    shutil.copytree(samples, folded)
    shutil.copytree(samples, whole)
    marker = folded / ".stages" / "explain-tiny.json"

    # array task 0: trains and explains its own fold, before fold 1 is trained
    assert main(["-q", "run", str(config), "--output", str(folded), *_stages("train", "explain"),
                 "--fold", "0"]) == 0
    assert (folded / "saliency/tiny/fold-0/saliency.npy").is_file() and not marker.exists()
    assert not (folded / "saliency/tiny/fold-1").exists()
    assert not (folded / "saliency/tiny/metrics.json").exists()
    # a fold out of range, or not trained yet, is refused with what to run
    capsys.readouterr()
    assert main(["-q", "explain", str(config), "--output", str(folded), "--fold", "2"]) == 2
    assert "Invalid value for 'fold': 2. This run has 2 folds" in capsys.readouterr().err
    assert main(["-q", "explain", str(config), "--output", str(folded), "--fold", "1"]) == 3  # input data
    assert "run 'fmri-ica train CONFIG --fold 1'" in capsys.readouterr().err
    # array task 1, as SLURM runs it
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert main(["-q", "train", str(config), "--output", str(folded), "--fold", "auto"]) == 0
    assert main(["-q", "explain", str(config), "--output", str(folded), "--fold", "auto"]) == 0
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    assert (folded / ".stages" / "explain-fold-tiny-1.json").is_file() and not marker.exists()

    # the gather job pools: no saliency is computed again
    with monkeypatch.context() as patch:
        patch.setattr(sanity, "_explain_folds", lambda *a, **k: pytest.fail("fold explained again"))
        assert main(["-q", "run", str(config), "--output", str(folded), *_stages("train", "explain")]) == 0
    assert marker.is_file()

    assert main(["-q", "run", str(config), "--output", str(whole), *_stages("train", "explain")]) == 0
    _assert_same_saliency(folded, whole)
