"""Two jobs on one output, and jobs killed with SIGKILL: the outputs equal one clean run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from _faults import labels_atlas, tiny_config
from _fixtures_layouts import make_hcp_tree

STAGES = ("--stage", "parcellate", "--stage", "samples", "--stage", "train")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny data set, its config, and a clean uninterrupted run (with its wall time)."""
    folder = tmp_path_factory.mktemp("concurrency")
    root = make_hcp_tree(folder, subjects=("s1", "s2"), tasks=("MOTOR", "WM"), dirs=("LR",))
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(root, labels_atlas(folder), folder / "clean")))
    start = time.perf_counter()
    assert _launch(config, folder / "clean").wait(timeout=300) == 0
    return config, folder / "clean", time.perf_counter() - start


def _launch(config, out, stderr=subprocess.DEVNULL, stages=STAGES) -> subprocess.Popen:
    """``fmri-ica run CONFIG --output OUT`` with ``stages`` (empty: all) in a new process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FMRI_ICA_DEBUG": ""}
    return subprocess.Popen([sys.executable, "-m", "fmri_ica.cli", "-q", "run", str(config),
                             "--output", str(out), *stages],
                            stdout=subprocess.DEVNULL, stderr=stderr, env=env, text=True)


def _assert_same_outputs(out, clean) -> None:
    tsvs = sorted(p.relative_to(clean) for p in clean.rglob("*_timeseries.tsv"))
    assert tsvs and sorted(p.relative_to(out) for p in out.rglob("*_timeseries.tsv")) == tsvs
    for path in tsvs:
        assert (out / path).read_bytes() == (clean / path).read_bytes()
    with np.load(out / "samples" / "samples.npz") as a, np.load(clean / "samples" / "samples.npz") as b:
        for key in b.files:
            np.testing.assert_array_equal(a[key], b[key])
    evaluation = "models/tiny/evaluation.json"
    assert json.loads((out / evaluation).read_text()) == json.loads((clean / evaluation).read_text())
    for fold in sorted((clean / "models" / "tiny").glob("fold-*")):
        name = f"models/tiny/{fold.name}/trained/last/model.pt"
        mine = torch.load(out / name, weights_only=True)
        reference = torch.load(clean / name, weights_only=True)
        for key, value in reference.items():
            assert torch.equal(mine[key], value), (name, key)


def test_two_runs_on_one_output_give_the_outputs_of_one(setup, tmp_path):
    config, clean, _ = setup
    out = tmp_path / "shared"
    first, second = _launch(config, out, subprocess.PIPE), _launch(config, out, subprocess.PIPE)
    codes, errors = [], []
    for process in (first, second):
        _, err = process.communicate(timeout=300)
        codes.append(process.returncode)
        errors.append(err)
    assert set(codes) <= {0, 5} and 0 in codes, errors
    for code, err in zip(codes, errors, strict=True):
        if code == 5:  # the other holds a stage: one clear line, no traceback
            assert "another" in err.lower() and "Traceback" not in err, err
    assert _launch(config, out).wait(timeout=300) == 0  # finishes what the busy one left
    _assert_same_outputs(out, clean)


@pytest.mark.parametrize("share", [0.5] + [pytest.param(s, marks=pytest.mark.slow) for s in (0.15, 0.3, 0.65, 0.8, 0.95)])
def test_sigkill_then_resume_gives_the_outputs_of_a_clean_run(setup, tmp_path, share):
    """Killed (no chance to clean up) at a point of the run, then run again."""
    config, clean, seconds = setup
    out = tmp_path / "killed"
    process = _launch(config, out)
    time.sleep(share * seconds)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert _launch(config, out).wait(timeout=300) == 0
    assert not list(out.rglob("*.lock"))
    _assert_same_outputs(out, clean)


@pytest.fixture(scope="module")
def whole(setup):
    """The clean run of every stage (explain, project and report too) and its wall time."""
    config, clean, _ = setup
    out = clean.parent / "clean-all"
    start = time.perf_counter()
    assert _launch(config, out, stages=()).wait(timeout=600) == 0
    return config, out, time.perf_counter() - start


@pytest.mark.slow
@pytest.mark.parametrize("share", [0.2, 0.45, 0.7, 0.9])
def test_sigkill_anywhere_in_the_whole_pipeline_then_resume(whole, tmp_path, share):
    """Every stage, explain / project / report included: a killed run resumed equals a clean one."""
    import nibabel as nib

    config, clean, seconds = whole
    out = tmp_path / "killed"
    process = _launch(config, out, stages=())
    time.sleep(share * seconds)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert _launch(config, out, stages=()).wait(timeout=600) == 0
    _assert_same_outputs(out, clean)
    for path in sorted(clean.glob("saliency/**/*.npz")):
        with np.load(path) as b, np.load(out / path.relative_to(clean)) as a:
            for key in b.files:
                np.testing.assert_array_equal(a[key], b[key], err_msg=str(path))
    metrics = "saliency/tiny/metrics.json"
    assert json.loads((out / metrics).read_text()) == json.loads((clean / metrics).read_text())
    maps = sorted(clean.glob("maps/**/*.nii.gz"))
    assert maps and sorted(p.relative_to(out) for p in out.glob("maps/**/*.nii.gz")) == \
        [p.relative_to(clean) for p in maps]
    for path in maps:
        np.testing.assert_array_equal(np.asanyarray(nib.load(out / path.relative_to(clean)).dataobj),
                                      np.asanyarray(nib.load(path).dataobj), err_msg=str(path))
    assert (out / "report.html").is_file() and not list(out.rglob("*.lock"))
