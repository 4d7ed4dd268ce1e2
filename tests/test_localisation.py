"""Voxel- and region-space localisation scores behave as their documentation says."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from fmri_ica.exceptions import InputDataError, InvalidParameterError
from fmri_ica.saliency.localisation import region_precision, share_near_centres

SHAPE = (21, 24, 19)  # unequal axes, so that an axis mix-up changes the answer
AFFINE = np.diag([-4.0, 4.0, 4.0, 1.0])
AFFINE[:3, 3] = (40.0, -50.0, -30.0)
CENTRES = np.array([[-8.0, 10.0, 6.0], [20.0, -22.0, 14.0]])


def _world():
    ijk = np.indices(SHAPE).reshape(3, -1).T
    return nib.affines.apply_affine(AFFINE, ijk).reshape(*SHAPE, 3)


def _img(data):
    return nib.Nifti1Image(np.asarray(data, dtype=np.float32), AFFINE)


def _near(radius=12.0):
    distance = np.linalg.norm(_world()[..., None, :] - CENTRES, axis=-1).min(axis=-1)
    return distance <= radius


def test_a_map_peaked_at_the_centres_scores_one():
    distance = np.linalg.norm(_world()[..., None, :] - CENTRES, axis=-1).min(axis=-1)
    result = share_near_centres(_img(1 + np.exp(-distance**2 / 50.0)), CENTRES, top=0.02)
    assert result["n_top"] < _near().sum()  # the top fits near the centres
    assert result["share"] == 1.0
    assert result["chance"] == pytest.approx(_near().mean())
    assert result["lift"] == pytest.approx(1.0 / result["chance"])
    assert result["n_voxels"] == np.prod(SHAPE)  # default mask: the non-zero voxels
    assert result["n_top"] == int(np.ceil(0.02 * np.prod(SHAPE)))


def test_a_map_peaked_elsewhere_scores_zero_and_axes_matter():
    elsewhere = np.array([-40.0, 30.0, 30.0])
    distance = np.linalg.norm(_world() - elsewhere, axis=-1)
    assert share_near_centres(_img(-distance), CENTRES)["share"] == 0.0
    # the same centres with x and y swapped are somewhere else
    peaked = np.exp(-np.linalg.norm(_world() - CENTRES[0], axis=-1) ** 2 / 50.0)
    assert share_near_centres(_img(peaked), CENTRES[:, [1, 0, 2]])["share"] < 0.5


def test_a_random_map_scores_near_chance():
    rng = np.random.default_rng(0)
    shares = [share_near_centres(_img(rng.random(SHAPE)), CENTRES)["share"] for _ in range(20)]
    chance = _near().mean()
    assert abs(np.mean(shares) - chance) < 0.02
    assert abs(np.mean(shares) - chance) < 3 * np.std(shares)


def test_all_zero_and_constant_maps_score_exactly_chance_in_the_mask():
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[2:19, 3:21, 2:17] = 1
    near = _near()[mask > 0].mean()
    for data in (np.zeros(SHAPE), np.full(SHAPE, 3.0)):
        result = share_near_centres(_img(data), CENTRES, mask_img=_img(mask))
        assert result["share"] == pytest.approx(near)
        assert result["chance"] == pytest.approx(near) and result["lift"] == pytest.approx(1.0)
        assert result["n_voxels"] == mask.sum()


def test_ties_at_the_cut_off_count_in_proportion():
    data = np.zeros(SHAPE)
    near = _near()
    data[near] = 1.0  # every near voxel tied at the top, more of them than the top 1%
    result = share_near_centres(_img(data), CENTRES, top=0.01, mask_img=_img(np.ones(SHAPE)))
    assert result["share"] == 1.0
    # a top twice the near voxels: they fill half of it, tied far zeros the rest
    result = share_near_centres(_img(data), CENTRES, top=2 * near.sum() / data.size,
                                mask_img=_img(np.ones(SHAPE)))
    assert result["n_top"] == 2 * near.sum()
    assert result["share"] == pytest.approx(0.5)
    # a tied top group with near and far voxels: each counts in proportion
    data[near] = 0.0
    data[~near] = -1.0
    data[np.unravel_index(np.flatnonzero(~near)[:10], SHAPE)] = 0.0  # 10 far voxels tied
    result = share_near_centres(_img(data), CENTRES, top=0.01, mask_img=_img(np.ones(SHAPE)))
    tied_near = near.sum() / (near.sum() + 10)
    assert result["share"] == pytest.approx(tied_near)


def test_mask_on_another_grid_is_resampled():
    coarse = np.diag([-8.0, 8.0, 8.0, 1.0])
    coarse[:3, 3] = AFFINE[:3, 3]
    mask = nib.Nifti1Image(np.ones((11, 12, 10), dtype=np.uint8), coarse)
    result = share_near_centres(_img(np.zeros(SHAPE)), CENTRES, mask_img=mask)
    assert result["n_voxels"] > 0.8 * np.prod(SHAPE)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"top": 0.0}, InvalidParameterError, "top"),
        ({"top": 1.5}, InvalidParameterError, "top"),
        ({"radius_mm": 0}, InvalidParameterError, "radius_mm"),
        ({"centres_mm": np.zeros((2, 2))}, InvalidParameterError, "centres_mm"),
        ({"centres_mm": np.zeros((0, 3))}, InvalidParameterError, "centres_mm"),
        ({"img": nib.Nifti1Image(np.zeros((*SHAPE, 2), np.float32), AFFINE)}, InputDataError,
         "3D"),
        ({"img": _img(np.full(SHAPE, np.nan))}, InputDataError, "NaN"),
        ({"mask_img": _img(np.zeros(SHAPE))}, InputDataError, "mask_img"),
    ],
)
def test_share_near_centres_rejects_bad_input(kwargs, error, message):
    args = {"img": _img(np.ones(SHAPE)), "centres_mm": CENTRES, **kwargs}
    with pytest.raises(error, match=message):
        share_near_centres(args.pop("img"), args.pop("centres_mm"), **args)


NAMES = [f"r{i}" for i in range(10)]


def test_region_precision_equals_region_precision_at_k_without_ties():
    from fmri_ica.saliency.metrics import region_precision_at_k

    rng = np.random.default_rng(1)
    planted = ["r1", "r4", "r7"]
    for k in (1, 3, 5):
        values = rng.random(10)
        expected = region_precision_at_k(values[None, None, :], np.isin(NAMES, planted), k)[0]
        assert region_precision(values, NAMES, planted, k) == pytest.approx(expected)


def test_region_precision_at_mask_size_ties_and_missing_names():
    values = np.zeros(10)
    values[[1, 4]] = 2.0
    planted = ["r1", "r4", "r7", "not_in_atlas"]
    # k = 3 planted names present; the third place goes to one of 8 tied zeros, 1 planted
    assert region_precision(values, NAMES, planted) == pytest.approx((2 + 1 / 8) / 3)
    assert region_precision(np.zeros(10), NAMES, planted, 5) == pytest.approx(0.3)  # chance
    assert np.isnan(region_precision(values, NAMES, ["elsewhere"]))
    with pytest.raises(InvalidParameterError, match="'k'"):
        region_precision(values, NAMES, planted, 11)
    with pytest.raises(InputDataError, match="region_names"):
        region_precision(values[:9], NAMES, planted)
