"""Fault corpus, diagnoses: each input fault is reported as what it is, naming the file
(not permission denied as a corrupt file, an unreadable folder as an empty one, ...)."""

from __future__ import annotations

import builtins
import errno
import os
import pathlib

import numpy as np
import pytest
from _faults import assert_one_line_error, labels_atlas
from _fixtures_layouts import make_hcp_tree, write_fsl_ev, write_movement

from fmri_ica.exceptions import InputDataError


def _deny(monkeypatch, module, name: str, target, original):
    """``module.name`` raises PermissionError for ``target`` (we run as root, whom chmod
    does not stop), and calls ``original`` for every other path."""
    target = str(target)

    def refuse(path, *args, **kwargs):
        if os.fspath(path) == target:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), target)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(module, name, refuse, raising=False)


@pytest.fixture
def hcp(tmp_path):
    root = make_hcp_tree(tmp_path, dirs=("LR",))
    return root, root / "100307" / "MNINonLinear" / "Results" / "tfMRI_MOTOR_LR"


def test_unreadable_bold_is_permission_denied_not_corrupt(cli, hcp, monkeypatch):
    import fmri_ica.data.layouts as layouts

    root, run = hcp
    bold = run / "tfMRI_MOTOR_LR.nii.gz"
    _deny(monkeypatch, layouts, "open", bold, builtins.open)
    line = assert_one_line_error(cli("runs", root), 3, str(bold), "permission denied")
    assert "corrupt" not in line and "re-download" not in line


def test_unreadable_evs_folder_is_not_an_empty_one(hcp, monkeypatch):
    from fmri_ica.data.events import read_events
    from fmri_ica.data.layouts import discover_runs

    _, run = hcp
    _deny(monkeypatch, os, "listdir", run / "EVs", os.listdir)
    with pytest.raises(InputDataError) as error:
        read_events(discover_runs(hcp[0])[0])
    message = str(error.value)
    assert f"Cannot list the EVs folder {run / 'EVs'}" in message and "Permission denied" in message
    assert "holds no EV" not in message


def test_evs_folder_without_ev_files_is_still_called_empty(hcp):
    from fmri_ica.data.events import read_events
    from fmri_ica.data.layouts import discover_runs

    _, run = hcp
    for path in (run / "EVs").iterdir():
        path.unlink()
    with pytest.raises(InputDataError, match="holds no EV .txt files"):
        read_events(discover_runs(hcp[0])[0])


def test_unreadable_ev_file_names_it(hcp, monkeypatch):
    from fmri_ica.data.events import read_fsl_ev

    _, run = hcp
    _deny(monkeypatch, pathlib.Path, "read_text", run / "EVs" / "cue.txt", pathlib.Path.read_text)
    with pytest.raises(InputDataError, match=r"Cannot read the EV file .*cue\.txt: Permission denied"):
        read_fsl_ev(run / "EVs" / "cue.txt")


def test_empty_motion_file_is_empty_not_one_column(hcp):
    from fmri_ica.data.confounds import read_hcp_movement

    path = hcp[1] / "Movement_Regressors.txt"
    path.write_text("")
    with pytest.raises(InputDataError) as error:
        read_hcp_movement(path)
    assert f"{path} is empty" in str(error.value) and "columns" not in str(error.value)
    path.write_text("\n  \n")
    with pytest.raises(InputDataError, match="is empty"):
        read_hcp_movement(path)


def test_nan_in_motion_file_names_the_file_and_lines(hcp):
    from fmri_ica.data.confounds import read_hcp_movement

    path = write_movement(hcp[1] / "Movement_Regressors.txt")
    lines = path.read_text().splitlines()
    lines[2] = " ".join(["nan"] + lines[2].split()[1:])
    lines[6] = " ".join(lines[6].split()[:-1] + ["inf"])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputDataError) as error:
        read_hcp_movement(path)
    assert str(path) in str(error.value) and "line(s) 3, 7" in str(error.value)


def test_unreadable_motion_file_names_it(hcp, monkeypatch):
    from fmri_ica.data.confounds import read_hcp_movement

    path = hcp[1] / "Movement_Regressors.txt"
    _deny(monkeypatch, pathlib.Path, "read_text", path, pathlib.Path.read_text)
    with pytest.raises(InputDataError, match=r"Cannot read the movement regressors .*: Permission denied"):
        read_hcp_movement(path)


def test_event_rows_are_plain_numbers(tmp_path):
    from fmri_ica.data.events import read_fsl_ev

    path = write_fsl_ev(tmp_path / "cue.txt", [(0, 1, 1), (2, 1, 1), (4, -1, 1)])
    with pytest.raises(InputDataError) as error:
        read_fsl_ev(path)
    assert str(error.value).endswith("negative duration in row(s) [3].")
    path.write_text("0 1 1\nnan 1 1\n")
    with pytest.raises(InputDataError) as error:
        read_fsl_ev(path)
    assert "row(s) [2]" in str(error.value) and "np." not in str(error.value)


def test_one_run_with_another_tr_is_named(tiny_pipeline):
    import json

    from fmri_ica.data.parcellation import load_timeseries
    from fmri_ica.data.samples import build_samples

    out = tiny_pipeline.parent / "out"
    paths = json.loads((out / ".stages" / "parcellate.json").read_text())["outputs"]
    runs = [load_timeseries(out / p) for p in paths]  # recorded relative to the output folder
    odd = runs[2][1]
    odd["t_r"] = 2.0
    with pytest.raises(InputDataError) as error:
        build_samples(runs, window=10, step=5)
    message = str(error.value)
    assert odd["source_bold"] in message and "2 s" in message and "0.72 s" in message
    assert all(sidecar["source_bold"] not in message for _, sidecar in runs if sidecar is not odd)


def test_parcellate_reports_each_fault_as_what_it_is(cli, tmp_path, monkeypatch):
    """Three broken runs among four: exit 1, the others done, each reason in the failures table."""
    import pandas as pd

    root = make_hcp_tree(tmp_path, subjects=("a", "b", "c", "d"), dirs=("LR",))
    runs = {s: root / s / "MNINonLinear" / "Results" / "tfMRI_MOTOR_LR" for s in "abcd"}
    (runs["a"] / "Movement_Regressors.txt").write_text("")
    motion = runs["b"] / "Movement_Regressors.txt"
    motion.write_text(motion.read_text().replace("\n", "\nnan " + "0 " * 11 + "\n", 1)
                      .rsplit("\n", 2)[0] + "\n")
    _deny(monkeypatch, os, "listdir", runs["c"] / "EVs", os.listdir)
    result = cli("parcellate", root, "--out", tmp_path / "ts", "--atlas", labels_atlas(tmp_path),
                 "--no-progress")
    assert result.code == 1 and "Traceback" not in result.err
    failures = pd.read_csv(tmp_path / "ts" / "parcellate_failures.tsv", sep="\t")
    reasons = dict(zip(failures["run"], failures["reason"], strict=True))
    assert set(reasons) == {"sub-a_task-MOTOR_run-LR", "sub-b_task-MOTOR_run-LR", "sub-c_task-MOTOR_run-LR"}
    assert "Movement_Regressors.txt is empty" in reasons["sub-a_task-MOTOR_run-LR"]
    assert f"{motion} holds NaN" in reasons["sub-b_task-MOTOR_run-LR"]
    assert "Cannot list the EVs folder" in reasons["sub-c_task-MOTOR_run-LR"]
    assert np.all(["np." not in r for r in reasons.values()])


def test_unreadable_data_root_is_not_an_unknown_layout(cli, hcp, monkeypatch):
    root, _ = hcp
    _deny(monkeypatch, os, "listdir", root, os.listdir)
    line = assert_one_line_error(cli("runs", root), 3, str(root), "permission denied")
    assert "Cannot tell the layout" not in line
