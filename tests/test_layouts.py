"""Run discovery (HCP, fMRIPrep/BIDS, manifest), BOLD validation and the `runs` CLI."""

from __future__ import annotations

import gzip
import json
import logging
import shutil

import nibabel as nib
import numpy as np
import pytest
from _fixtures_layouts import (
    AFFINE,
    make_bids_tree,
    make_hcp_tree,
    make_manifest,
    truncate,
    write_bold,
)

from fmri_ica.data.layouts import check_finite, detect_layout, discover_runs, validate_bold
from fmri_ica.exceptions import InputDataError, InvalidParameterError

# --------------------------------------------------------------------------- HCP


def test_hcp_discovers_every_run_with_companions(tmp_path):
    root = make_hcp_tree(tmp_path, subjects=("100408", "100307"), tasks=("WM", "MOTOR"))
    runs = discover_runs(root)
    assert [r.key for r in runs] == sorted(r.key for r in runs)
    assert len(runs) == 8
    r = runs[0]
    assert r.key == "sub-100307_task-MOTOR_run-LR"
    folder = root / "100307" / "MNINonLinear" / "Results" / "tfMRI_MOTOR_LR"
    assert r.bold == folder / "tfMRI_MOTOR_LR.nii.gz"
    assert r.events == folder / "EVs"
    assert r.confounds == folder / "Movement_Regressors.txt"
    assert r.mask == folder / "brainmask_fs.2.nii.gz"
    assert r.layout == "hcp"
    assert r.t_r == pytest.approx(0.72, abs=1e-9)
    assert r.extra["shape"] == [7, 8, 9, 20]
    assert discover_runs(root) == runs  # deterministic


def test_hcp_single_subject_folder_and_optional_files(tmp_path):
    root = make_hcp_tree(tmp_path, dirs=("LR",), with_mask=False, with_movement=False)
    runs = discover_runs(root / "100307", "hcp")
    assert [r.key for r in runs] == ["sub-100307_task-MOTOR_run-LR"]
    assert runs[0].mask is None and runs[0].confounds is None


def test_hcp_tr_in_milliseconds_is_converted(tmp_path):
    root = make_hcp_tree(tmp_path, dirs=("LR",))
    bold = discover_runs(root)[0].bold
    write_bold(bold, n_frames=20, t_r=0.8, time_unit="msec")
    assert discover_runs(root)[0].t_r == pytest.approx(0.8)


def test_hcp_header_without_tr_needs_override(tmp_path, caplog):
    root = make_hcp_tree(tmp_path, dirs=("LR",), t_r=None)
    with pytest.raises(InputDataError, match="No repetition time.*t_r"):
        discover_runs(root)
    runs = discover_runs(root, t_r=0.72)
    assert runs[0].t_r == 0.72 and runs[0].extra["t_r_source"] == "override"


def test_hcp_missing_evs_folder(tmp_path):
    root = make_hcp_tree(tmp_path, dirs=("LR",), with_evs=False)
    evs = root / "100307" / "MNINonLinear" / "Results" / "tfMRI_MOTOR_LR" / "EVs"
    with pytest.raises(InputDataError, match=str(evs)):
        discover_runs(root)
    assert discover_runs(root, require_events=False)[0].events is None


def test_hcp_missing_bold_names_the_path(tmp_path):
    root = make_hcp_tree(tmp_path)
    bold = discover_runs(root)[1].bold
    bold.unlink()
    with pytest.raises(InputDataError, match=str(bold)):
        discover_runs(root)
    # Filtering the broken run out leaves a working selection.
    assert len(discover_runs(root, runs="LR")) == 1


# --------------------------------------------------------------------------- filters


def test_filters_accept_prefixes_and_any_case_for_tasks(tmp_path):
    root = make_hcp_tree(tmp_path, subjects=("100307", "100408"), tasks=("MOTOR", "WM"))
    runs = discover_runs(root, subjects=["sub-100408"], tasks="motor", runs=["RL"])
    assert [r.key for r in runs] == ["sub-100408_task-MOTOR_run-RL"]
    assert len(discover_runs(root, tasks=["wm", "MOTOR"], subjects="100307")) == 4


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"subjects": "100308"}, r"'subjects'.*'100307', '211720'.*Did you mean '100307'"),
        ({"tasks": "MOTR"}, r"'tasks'.*Did you mean 'MOTOR'"),
        ({"runs": "AP"}, r"'runs'.*'LR', 'RL'"),
    ],
)
def test_unknown_filter_value_lists_what_exists(tmp_path, kwargs, pattern):
    root = make_hcp_tree(tmp_path, subjects=("211720", "100307"))
    with pytest.raises(InvalidParameterError, match=pattern):
        discover_runs(root, **kwargs)


def test_unknown_layout_and_undetectable_root(tmp_path):
    with pytest.raises(InvalidParameterError, match="'layout'.*Did you mean 'bids'"):
        discover_runs(tmp_path, "bidss")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputDataError, match="Cannot tell the layout"):
        discover_runs(tmp_path / "empty")
    _, raw = make_bids_tree(tmp_path)
    with pytest.raises(
        InputDataError, match="raw BIDS data set: did you mean .*derivatives/fmriprep"
    ):
        discover_runs(raw)
    with pytest.raises(InvalidParameterError, match="'space' applies to the BIDS layout only"):
        discover_runs(make_hcp_tree(tmp_path), space="MNI152NLin6Asym")


# --------------------------------------------------------------------------- BIDS


def test_bids_discovers_runs_sessions_and_raw_events(tmp_path):
    deriv, raw = make_bids_tree(
        tmp_path, subjects=("02", "01"), runs=("1", "2"), sessions=("pre", None)
    )
    assert detect_layout(deriv) == "bids"
    runs = discover_runs(deriv)
    assert len(runs) == 8
    r = next(r for r in runs if r.key == "sub-01_ses-pre_task-motor_run-2")
    func = "sub-01/ses-pre/func/sub-01_ses-pre_task-motor_run-2"
    assert r.events == raw / f"{func}_events.tsv"
    assert r.confounds == deriv / f"{func}_desc-confounds_timeseries.tsv"
    assert r.mask == deriv / f"{func}_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz"
    assert (r.subject, r.session, r.task, r.run, r.layout) == ("01", "pre", "motor", "2", "bids")
    assert r.t_r == 2.0 and "sidecar" in r.extra["t_r_source"]
    assert [
        r.key for r in discover_runs(deriv, sessions="ses-pre", subjects="2", runs="run-1")
    ] == ["sub-02_ses-pre_task-motor_run-1"]


@pytest.mark.parametrize("where", ["raw", "derivatives", "top"])
def test_bids_sidecar_tr_mismatch_is_an_error_unless_overridden(tmp_path, where, caplog):
    deriv, _ = make_bids_tree(tmp_path, t_r=2.0, sidecar_t_r=1.5, sidecar_in=where)
    with pytest.raises(
        InputDataError, match=r"TR mismatch.*desc-preproc_bold.*says 2 s.*says 1\.5 s"
    ):
        discover_runs(deriv)
    with caplog.at_level(logging.WARNING, logger="fmri_ica"):
        runs = discover_runs(deriv, t_r=1.5)
    assert runs[0].t_r == 1.5
    assert "replaces the header TR 2" in caplog.text


def test_bids_tr_from_header_when_no_sidecar(tmp_path):
    deriv, _ = make_bids_tree(tmp_path, t_r=1.25, sidecar_in=None)
    run = discover_runs(deriv)[0]
    assert run.t_r == 1.25 and run.extra["t_r_source"] == "header"


def test_bids_tr_from_sidecar_when_header_has_none(tmp_path):
    deriv, _ = make_bids_tree(tmp_path, t_r=None, sidecar_t_r=0.8)
    assert discover_runs(deriv)[0].t_r == 0.8


def test_bids_several_spaces_need_a_choice(tmp_path):
    deriv, _ = make_bids_tree(tmp_path, spaces=("MNI152NLin2009cAsym", "T1w"))
    with pytest.raises(InvalidParameterError, match="several spaces.*'MNI152NLin2009cAsym', 'T1w'"):
        discover_runs(deriv)
    runs = discover_runs(deriv, space="T1w")
    assert len(runs) == 1 and "_space-T1w_" in runs[0].bold.name
    with pytest.raises(InvalidParameterError, match="Did you mean 'T1w'"):
        discover_runs(deriv, space="T1")


def test_bids_resolutions_use_fmriprep_syntax(tmp_path):
    deriv, _ = make_bids_tree(tmp_path, res=("1", "2"))
    with pytest.raises(InvalidParameterError, match="res-1.*res-2"):
        discover_runs(deriv)
    with pytest.raises(InvalidParameterError, match="several resolutions"):
        discover_runs(deriv, space="MNI152NLin2009cAsym")
    runs = discover_runs(deriv, space="MNI152NLin2009cAsym:res-2")
    assert len(runs) == 1 and "_res-2_" in runs[0].bold.name
    assert runs[0].extra["space"] == "MNI152NLin2009cAsym:res-2"


def test_bids_events_from_explicit_raw_root(tmp_path):
    deriv, raw = make_bids_tree(tmp_path)
    moved = tmp_path / "elsewhere" / "fmriprep"
    shutil.move(deriv, moved)
    with pytest.raises(InputDataError, match="No events.tsv.*raw_root"):
        discover_runs(moved)
    run = discover_runs(moved, raw_root=raw)[0]
    assert run.events == raw / "sub-01/func/sub-01_task-motor_run-1_events.tsv"
    assert run.t_r == 2.0
    assert discover_runs(moved, require_events=False)[0].events is None


def test_bids_duplicate_runs_name_both_files(tmp_path):
    deriv, _ = make_bids_tree(tmp_path)
    bold = discover_runs(deriv)[0].bold
    other = bold.with_name(bold.name.replace("_run-1", "_acq-fast_run-1"))
    shutil.copy(bold, other)
    with pytest.raises(InputDataError, match=r"same run sub-01_task-motor_run-1") as info:
        discover_runs(deriv)
    assert str(bold) in str(info.value) and str(other) in str(info.value)


# --------------------------------------------------------------------------- manifest


def _manifest_rows(tmp_path, t_r=None):
    rows = []
    for i, sub in enumerate(("b", "a")):
        bold = write_bold(tmp_path / "data" / f"{sub}.nii.gz", n_frames=12, t_r=1.0, seed=i)
        events = tmp_path / "data" / f"{sub}_events.tsv"
        events.write_text("onset\tduration\ttrial_type\n0\t4\tgo\n")
        rows.append(
            {
                "bold": f"data/{bold.name}",
                "subject": sub,
                "task": "go",
                "events": f"data/{events.name}",
            }
        )
        if t_r is not None:
            rows[-1]["t_r"] = t_r
    return rows


def test_manifest_resolves_relative_paths_and_is_detected(tmp_path):
    path = make_manifest(tmp_path, _manifest_rows(tmp_path, t_r=1.0))
    assert detect_layout(path) == "manifest"
    runs = discover_runs(path)
    assert [r.key for r in runs] == ["sub-a_task-go", "sub-b_task-go"]
    assert runs[0].bold == tmp_path / "data" / "a.nii.gz"
    assert runs[0].events == tmp_path / "data" / "a_events.tsv"
    assert runs[0].t_r == 1.0 and runs[0].confounds is None and runs[0].layout == "manifest"
    assert discover_runs(None, manifest=path) == runs


def test_manifest_tr_mismatch_and_override(tmp_path):
    path = make_manifest(tmp_path, _manifest_rows(tmp_path, t_r=2.0))
    with pytest.raises(InputDataError, match=r"TR mismatch.*b\.nii\.gz.*says 1 s.*row 2 says 2 s"):
        discover_runs(path)
    assert discover_runs(path, t_r=2.0)[0].t_r == 2.0


def test_manifest_errors_name_row_and_file(tmp_path):
    rows = _manifest_rows(tmp_path)
    rows[0]["confounds"] = "data/missing.tsv"
    with pytest.raises(InputDataError, match=r"row 2: confounds file not found.*missing\.tsv"):
        discover_runs(make_manifest(tmp_path, rows))
    with pytest.raises(InputDataError, match=r"lacks column\(s\) \['task'\]"):
        discover_runs(make_manifest(tmp_path, [{"bold": "x.nii.gz", "subject": "a"}], "bad.tsv"))
    rows = _manifest_rows(tmp_path)
    rows[1]["subject"] = "b"
    with pytest.raises(InputDataError, match=r"same run sub-b_task-go.*b\.nii\.gz.*a\.nii\.gz"):
        discover_runs(make_manifest(tmp_path, rows, "dup.tsv"))


# --------------------------------------------------------------------------- validate_bold


def test_validate_bold_reports_header_info(tmp_path):
    path = write_bold(tmp_path / "b.nii.gz", shape=(7, 8, 9), n_frames=11, t_r=0.72)
    info = validate_bold(path, deep=True)
    assert info.shape == (7, 8, 9, 11) and info.n_frames == 11
    np.testing.assert_allclose(info.affine, AFFINE)
    assert info.t_r == 0.72 and info.dtype == np.float32


@pytest.mark.parametrize("fraction", [0.02, 0.5, 0.98])
def test_validate_bold_truncated_gzip(tmp_path, fraction):
    path = truncate(write_bold(tmp_path / "b.nii.gz", n_frames=30), fraction)
    with pytest.raises(InputDataError, match=r"b\.nii\.gz.*re-download or re-copy"):
        validate_bold(path)


def test_validate_bold_truncated_plain_nifti(tmp_path):
    path = truncate(write_bold(tmp_path / "b.nii", n_frames=30), 0.7)
    with pytest.raises(InputDataError, match=r"truncated.*re-download or re-copy"):
        validate_bold(path)


def test_validate_bold_deep_catches_corruption_inside_a_complete_file(tmp_path):
    path = tmp_path / "b.nii.gz"
    write_bold(path, n_frames=30)
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(raw))
    validate_bold(path)  # the cheap check trusts the trailer
    with pytest.raises(InputDataError, match="re-download or re-copy"):
        validate_bold(path, deep=True)


def test_validate_bold_rejects_3d_and_missing(tmp_path):
    path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((7, 8, 9), "float32"), AFFINE), path)
    with pytest.raises(InputDataError, match=r"mask\.nii\.gz has shape \(7, 8, 9\) \(3D\)"):
        validate_bold(path)
    with pytest.raises(InputDataError, match="not found"):
        validate_bold(tmp_path / "nope.nii.gz")


def test_validate_bold_multi_member_gzip_is_accepted(tmp_path):
    # Parallel compressors may write several gzip members; the trailer then holds only
    # the last member's size and the slow path must confirm the file is whole.
    path = write_bold(tmp_path / "b.nii.gz", n_frames=9)
    data = gzip.decompress(path.read_bytes())
    half = len(data) // 2
    path.write_bytes(gzip.compress(data[:half]) + gzip.compress(data[half:]))
    assert validate_bold(path).n_frames == 9


def test_check_finite_counts_bad_voxels(rng):
    data = rng.standard_normal((7, 8, 9, 5))
    check_finite(data)
    data[1, 2, 3, :2] = np.nan
    data[4, 5, 6, 0] = np.inf
    with pytest.raises(InputDataError, match=r"2 voxels \(3 values\).*in run\.nii\.gz"):
        check_finite(data, "run.nii.gz")
    signals = np.zeros((10, 4))
    signals[3, 1] = np.nan
    with pytest.raises(InputDataError, match="1 regions"):
        check_finite(signals)


# --------------------------------------------------------------------------- CLI


def test_cli_lists_runs_as_table_and_json(tmp_path, capsys):
    from fmri_ica.cli import main

    root = make_hcp_tree(tmp_path, subjects=("100307", "100408"))
    assert main(["runs", str(root), "--task", "motor", "--subject", "100408"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "subject",
        "session",
        "task",
        "run",
        "t_r",
        "frames",
        "events",
        "confounds",
        "mask",
    ]
    assert out[1].split() == ["100408", "-", "MOTOR", "LR", "0.72", "20", "yes", "yes", "yes"]
    assert out[-1] == "2 run(s)"
    assert main(["runs", str(root), "--run", "RL", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["key"] for r in rows] == [
        "sub-100307_task-MOTOR_run-RL",
        "sub-100408_task-MOTOR_run-RL",
    ]
    assert main(["runs", str(root), "--subject", "999"]) == 2
    assert "Present: '100307', '100408'" in capsys.readouterr().err
