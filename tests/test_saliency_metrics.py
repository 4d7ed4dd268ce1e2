"""Saliency metrics against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fmri_ica.exceptions import InputDataError, InvalidParameterError
from fmri_ica.saliency import metrics as M

# One sample, 2 time steps x 3 features.
SAL = np.array([[[0.0, 0.5, 1.0], [0.25, 0.0, 0.0]]])
MASK = np.array([[1, 1, 0], [0, 0, 0]])


def test_minmax_scale_per_sample_and_absolute():
    sal = np.array([[[-4.0, 2.0], [1.0, 0.0]], [[3.0, 3.0], [3.0, 3.0]]])
    scaled = M.minmax_scale(sal)
    np.testing.assert_allclose(scaled[0], [[1.0, 0.5], [0.25, 0.0]])
    np.testing.assert_array_equal(scaled[1], 0)  # constant map -> zeros
    np.testing.assert_allclose(M.minmax_scale(sal, absolute=False)[0], [[0, 1], [5 / 6, 4 / 6]])


def test_weighted_jaccard_and_euclidean_by_hand():
    # min: 0 + .5 + 0 + 0 + 0 + 0 = .5 ; max: 1 + 1 + 1 + .25 + 0 + 0 = 3.25
    np.testing.assert_allclose(M.weighted_jaccard(SAL, MASK), [0.5 / 3.25])
    # ref - sal = [1, .5, -1, -.25, 0, 0]; ||.||^2 = 1 + .25 + 1 + .0625 ; ||ref|| = sqrt(2)
    np.testing.assert_allclose(M.euclidean_distance(SAL, MASK), [np.sqrt(2.3125) / np.sqrt(2)])
    assert M.weighted_jaccard(MASK[None] * 1.0, MASK)[0] == 1.0
    assert M.euclidean_distance(MASK[None] * 1.0, MASK)[0] == 0.0


def test_auroc_auprc_precision_at_mask_size_by_hand():
    # positives {0, .5}, negatives {1, .25, 0, 0}: pairs won: 0 vs (1,.25,0,0) -> 0 + 0 + .5 + .5;
    # .5 vs ... -> 0 + 1 + 1 + 1  => 4 / 8
    np.testing.assert_allclose(M.auroc(SAL, MASK), [0.5])
    # ranking: 1 (neg), .5 (pos), .25 (neg), then ties at 0 (1 pos among 3) -> AP = .5*.5 + .5*(2/6)
    np.testing.assert_allclose(M.auprc(SAL, MASK), [0.5 * 0.5 + 0.5 * 2 / 6])
    # top-2 cells: 1.0 (f2, not in mask), .5 (in mask) -> 1/2
    np.testing.assert_allclose(M.precision_at_mask_size(SAL, MASK), [0.5])


def test_saliency_over_time_and_mass_in_last():
    sal = np.zeros((2, 4, 2))
    sal[0, :, 0] = [1, 1, 1, 1]
    sal[1, :, 1] = [0, 1, 3, -4]  # absolute values: 0, 1, 3, 4
    np.testing.assert_allclose(M.saliency_over_time(sal), [[0.25] * 4, [0, 0.125, 0.375, 0.5]])
    np.testing.assert_allclose(M.saliency_over_time(sal, n_bins=2), [[0.5, 0.5], [0.125, 0.875]])
    np.testing.assert_allclose(M.mass_in_last(sal, 0.25), [0.25, 0.5])
    # Padding: sample 1 of length 3 -> shares 0, 1/4, 3/4 and nothing after.
    curve = M.saliency_over_time(sal, lengths=np.array([4, 3]))
    np.testing.assert_allclose(curve[1], [0, 0.25, 0.75, 0])
    np.testing.assert_allclose(M.mass_in_last(sal, 0.34, lengths=[4, 3]), [0.25, 0.75])


def test_top_k_shares_and_region_precision():
    sal = np.arange(12, dtype=float).reshape(1, 4, 3)  # largest cells at the last step
    # top 25% = 3 cells = all of time step 3
    np.testing.assert_allclose(M.top_k_share_in_time(sal, [0, 0, 1, 1], k=0.25), [1.0])
    np.testing.assert_allclose(M.top_k_share_in_time(sal, [1, 1, 0, 0], k=0.5), [0.0])
    # top 50% = 6 cells = steps 2 and 3; features {0} hold 2 of them
    np.testing.assert_allclose(M.top_k_share_in_features(sal, [0], k=0.5), [2 / 6])
    np.testing.assert_allclose(M.top_k_share_in_features(sal, [False, True, True], k=0.5), [4 / 6])
    # column sums 18, 22, 26: top-2 regions are features 2 and 1
    np.testing.assert_allclose(M.region_precision_at_k(sal, [1], k=2), [0.5])
    np.testing.assert_allclose(M.region_precision_at_k(sal, [0], k=2), [0.0])
    # lengths: only steps 0-1 count -> top 3 of 6 valid cells = 3, 4, 5 -> all step 1
    np.testing.assert_allclose(M.top_k_share_in_time(sal, [0, 1, 0, 0], k=0.5, lengths=[2]), [1.0])


class FirstCell(nn.Module):
    """Predicts class 1 iff x[:, 0, 0] > 0: only one cell matters."""

    def forward(self, x, lengths=None):
        score = x[:, 0, 0]
        return torch.stack([-score, score], dim=1)


def test_removal_test_top_cells_hurt_random_cells_do_not():
    torch.manual_seed(0)
    x = torch.randn(40, 5, 4)
    x[:, 0, 0] = torch.where(torch.arange(40) % 2 == 0, 2.0, -2.0)
    y = (x[:, 0, 0] > 0).long()
    saliency = np.zeros(x.shape)
    saliency[:, 0, 0] = 1.0  # the true explanation
    rows = M.removal_test(FirstCell(), x, y, saliency, fractions=(0.05,), baseline=0.0, n_random=2)
    row = rows[0]
    assert row["accuracy"] == 1.0
    assert row["accuracy_top"] == 0.5  # x00 = 0 -> ties go to class 0: half wrong
    assert row["drop_top"] == 0.5 and row["drop_random"] < row["drop_top"]


def test_metric_errors():
    with pytest.raises(InputDataError, match="does not match"):
        M.weighted_jaccard(SAL, np.ones((3, 3)))
    with pytest.raises(InputDataError, match="empty"):
        M.euclidean_distance(SAL, np.zeros((2, 3)))
    with pytest.raises(InvalidParameterError, match="'k'"):
        M.top_k_share_in_time(SAL, [1, 0], k=0)
