"""Tests of fmri_ica.saliency.group: sign-flip calibration, power, normalisation, images."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from fmri_ica.exceptions import InputDataError, InvalidParameterError
from fmri_ica.saliency.group import group_saliency_test, sign_flip_test, write_group_maps

BINS, REGIONS = 3, 5  # unequal on purpose


@pytest.mark.parametrize(("n_subjects", "n_perm"), [(10, 2000), (13, 300)])
def test_sign_flip_keeps_false_positives_at_alpha_on_null_data(n_subjects, n_perm):
    """200 null data sets: FWER of 'any FDR-significant cell' and per-cell rate <= 0.05."""
    rng = np.random.default_rng(0)
    any_hit, cell_hits, cells = 0, 0, 0
    for i in range(200):
        diff = rng.standard_normal((n_subjects, BINS, REGIONS))
        res = sign_flip_test(diff, n_perm=n_perm, seed=i)
        any_hit += bool(res.significant.any())
        cell_hits += int((res.p <= 0.05).sum())
        cells += res.p.size
    assert res.exact == (n_subjects == 10)
    # no evidence that either rate exceeds 0.05 (one-sided binomial tests)
    assert binomtest(any_hit, 200, 0.05, alternative="greater").pvalue > 0.01
    assert binomtest(cell_hits, cells, 0.05, alternative="greater").pvalue > 0.01
    # and the p-values are not trivially conservative (uniform under the null)
    assert cell_hits / cells > 0.03


def test_sign_flip_finds_a_planted_region():
    rng = np.random.default_rng(1)
    diff = rng.standard_normal((12, BINS, REGIONS))
    diff[:, 1, [1, 3]] += 1.5
    res = sign_flip_test(diff, n_perm=5000)
    planted = np.zeros((BINS, REGIONS), bool)
    planted[1, [1, 3]] = True
    assert res.significant[planted].all() and res.significant[~planted].sum() <= 1
    assert np.all(res.p_fwer[planted] < 0.05) and np.all(res.z[planted] > 2)
    assert np.all(res.p_fwer[~planted] > 0.05)
    assert res.exact and res.n_permutations == 2**12 and res.p.min() >= 1 / 2**12
    # the other tail does not see them; a two-sided test does
    assert not sign_flip_test(diff, n_perm=5000, tail="less").significant[planted].any()
    assert sign_flip_test(diff, n_perm=5000, tail="two-sided").significant[planted].all()


def test_group_test_ignores_each_subjects_scale_with_mass_normalisation():
    rng = np.random.default_rng(2)
    null = rng.random((9, BINS, REGIONS)) + 0.5
    trained = null * rng.uniform(0.9, 1.1, null.shape)
    trained[:, 0, 2] *= 3  # the trained model puts more of its mass in one cell
    res = group_saliency_test(trained, null, n_perm=1000)
    scaled = group_saliency_test(trained * rng.uniform(1e-3, 1e3, (9, 1, 1)), null, n_perm=1000)
    np.testing.assert_allclose(scaled.t, res.t)
    assert res.significant[0, 2] and res.significant.sum() == 1
    assert "divided by its sum" in res.method and res.n_subjects == 9
    with pytest.raises(InputDataError, match="non-negative"):
        group_saliency_test(trained - 1, null)
    with pytest.raises(InvalidParameterError, match="normalise"):
        group_saliency_test(trained, null, normalise="max")
    with pytest.raises(InputDataError, match="same shape"):
        group_saliency_test(trained[:, :2], null)


@pytest.fixture
def atlas(make_atlas, affine):
    rng = np.random.default_rng(3)
    data = rng.choice(np.arange(REGIONS + 1), size=(7, 8, 9)).astype(np.int16)
    table = pd.DataFrame({"index": np.arange(1, REGIONS + 1), "name": list("abcde")})
    return make_atlas(nib.Nifti1Image(data, affine), table)


def test_write_group_maps_images_and_sidecars(tmp_path, atlas, affine):
    rng = np.random.default_rng(4)
    null = rng.random((12, BINS, REGIONS)) + 0.5
    trained = null.copy()
    trained[:, 2, 4] *= 4
    res = group_saliency_test(trained, null, n_perm=5000, alpha=0.01)
    paths = write_group_maps(tmp_path, res, atlas, model="ica-lstm", class_name="MOTOR",
                             t_r_bin=7.2, null="untrained", bin_edges_frames=[0, 10, 20, 30])
    names = [p.name for p in paths]
    stem = "task-MOTOR_atlas-tiny_model-icalstm_null-untrained"
    assert names == [f"{stem}_stat-z_saliency.nii.gz", f"{stem}_stat-logp_saliency.nii.gz",
                     f"{stem}_stat-z_thresh-fdr01_saliency.nii.gz"]
    labels = np.asarray(atlas.img.dataobj)
    for path, values in zip(paths, [res.z, -np.log10(res.p), np.where(res.significant, res.z, 0)],
                            strict=True):
        img = nib.load(path)
        assert img.shape == (7, 8, 9, BINS)
        np.testing.assert_allclose(img.affine, affine)
        assert img.header["pixdim"][4] == pytest.approx(7.2)
        voxel = np.argwhere(labels == 5)[0]
        np.testing.assert_allclose(img.get_fdata()[tuple(voxel)], values[:, 4], rtol=1e-6)
        side = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
        params = side["Parameters"]
        assert params["NSubjects"] == 12 and params["FDRLevel"] == 0.01
        assert params["Normalisation"] == "mass" and params["Null"] == "untrained"
        assert params["BinSpacingSeconds"] == 7.2 and params["NTimeBins"] == BINS
    thresholded = nib.load(paths[2]).get_fdata()
    assert np.count_nonzero(thresholded[labels == 5][:, 2]) > 0
    assert np.count_nonzero(thresholded[..., :2]) == 0
    # one time bin gives 3D images; several bins without a spacing is an error
    one = group_saliency_test(trained[:, 2:], null[:, 2:], n_perm=500)
    img = nib.load(write_group_maps(tmp_path / "one", one, atlas, model="m", class_name="c")[0])
    assert img.shape == (7, 8, 9)
    with pytest.raises(InvalidParameterError, match="t_r_bin"):
        write_group_maps(tmp_path, res, atlas, model="m", class_name="c")
