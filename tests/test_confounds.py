"""Confounds: HCP movement regressors and fMRIPrep confounds through nilearn."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
from _fixtures_layouts import fmriprep_confounds, make_bids_tree, make_hcp_tree, write_movement

from fmri_ica.data.confounds import HCP_MOVEMENT_COLUMNS, load_run_confounds, read_hcp_movement
from fmri_ica.data.layouts import discover_runs
from fmri_ica.exceptions import InputDataError, InvalidParameterError

_MOTION24 = {
    f"{m}{s}"
    for m in ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
    for s in ("", "_derivative1", "_power2", "_derivative1_power2")
}


def test_read_hcp_movement(tmp_path):
    path = write_movement(tmp_path / "Movement_Regressors.txt", n_frames=15)
    table = read_hcp_movement(path)
    assert table.shape == (15, 12)
    assert list(table.columns) == list(HCP_MOVEMENT_COLUMNS)
    np.testing.assert_allclose(table.to_numpy(), np.loadtxt(path))


def test_read_hcp_movement_wrong_column_count_names_the_file(tmp_path):
    path = write_movement(tmp_path / "Movement_Regressors_dt.txt", n_columns=6)
    with pytest.raises(InputDataError, match=r"Movement_Regressors_dt\.txt has 6 columns.*12"):
        read_hcp_movement(path)


def test_hcp_run_confounds_are_demeaned_movement(tmp_path):
    run = discover_runs(make_hcp_tree(tmp_path, dirs=("LR",)))[0]
    confounds, sample_mask = load_run_confounds(run)
    raw = np.loadtxt(run.confounds)
    np.testing.assert_allclose(confounds.to_numpy(), raw - raw.mean(axis=0), atol=1e-12)
    assert sample_mask is None
    with pytest.raises(InvalidParameterError, match="12 movement regressors"):
        load_run_confounds(run, "scrubbing")
    assert load_run_confounds(run, None) == (None, None)


def test_fmriprep_simple_strategy(tmp_path):
    deriv, _ = make_bids_tree(tmp_path, n_frames=20, n_non_steady=2)
    run = discover_runs(deriv)[0]
    confounds, sample_mask = load_run_confounds(run)
    assert set(confounds.columns) == _MOTION24 | {"csf", "white_matter", "cosine00", "cosine01"}
    assert len(confounds) == 20 and np.isfinite(confounds.to_numpy()).all()
    np.testing.assert_allclose(confounds.to_numpy()[sample_mask].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_array_equal(sample_mask, np.arange(2, 20))  # non-steady-state dropped


def test_fmriprep_components_and_kwargs(tmp_path):
    deriv, _ = make_bids_tree(tmp_path, n_non_steady=0)
    run = discover_runs(deriv)[0]
    confounds, sample_mask = load_run_confounds(run, ("motion", "global_signal"), motion="basic")
    assert set(confounds.columns) == {
        "trans_x",
        "trans_y",
        "trans_z",
        "rot_x",
        "rot_y",
        "rot_z",
        "global_signal",
    }
    assert sample_mask is None


def test_fmriprep_missing_columns_name_the_file(tmp_path):
    deriv, _ = make_bids_tree(tmp_path)
    run = discover_runs(deriv)[0]
    table = fmriprep_confounds(20).drop(columns=["csf"])
    table.to_csv(run.confounds, sep="\t", index=False, na_rep="n/a")
    with pytest.raises(
        InputDataError, match=r"desc-confounds_timeseries\.tsv lacks.*'simple'.*csf"
    ):
        load_run_confounds(run)
    with pytest.raises(InvalidParameterError, match="Did you mean 'simple'"):
        load_run_confounds(run, "simpel")


def test_fmriprep_compcor_needs_the_json_sidecar(tmp_path):
    deriv, _ = make_bids_tree(tmp_path)
    run = discover_runs(deriv)[0]
    run.confounds.with_suffix(".json").unlink()
    assert load_run_confounds(run)[0].shape[0] == 20  # simple does not need the JSON
    with pytest.raises(InputDataError, match="json"):
        load_run_confounds(run, "compcor")


def test_confounds_any_file_name_and_row_count_check(tmp_path):
    deriv, _ = make_bids_tree(tmp_path, n_frames=20)
    run = discover_runs(deriv)[0]
    renamed = tmp_path / "my_confounds.tsv"
    shutil.copy(run.confounds, renamed)
    manifest_run = replace(run, confounds=renamed, layout="manifest")
    a, mask_a = load_run_confounds(manifest_run)
    b, mask_b = load_run_confounds(run)
    np.testing.assert_allclose(a.to_numpy(), b[a.columns].to_numpy())
    np.testing.assert_array_equal(mask_a, mask_b)
    fmriprep_confounds(25).to_csv(renamed, sep="\t", index=False, na_rep="n/a")
    with pytest.raises(InputDataError, match=r"my_confounds\.tsv has 25 rows but .* has 20 frames"):
        load_run_confounds(manifest_run)
