"""Localisation scores for maps in brain space: is a map's top where the activation was?

:func:`share_near_centres` scores a 3D map (a projected saliency map, a linear model's
weights) against activation centres in MNI mm, such as those ``simulate_hcp(...,
activation="blobs")`` records in ``ground_truth.json``; it needs no atlas, so it also
compares maps made with different atlases. :func:`region_precision` scores one value per
region against a list of planted region names (e.g. from
:func:`fmri_ica.data.simulate.planted_regions_for_atlas`).

Both take the top of the map by value (pass ``abs`` of a signed map to rank by
magnitude) and resolve ties at the cut-off by their expectation under a random order:
the tied items count in proportion to the places left. So a constant or all-zero map
scores exactly chance, whatever the order of voxels or regions.
:func:`fmri_ica.saliency.metrics.region_precision_at_k` breaks such ties by region order
instead (and ranks |saliency| of (batch, time, features) maps); both agree on maps
without ties.
"""

from __future__ import annotations

import math

import numpy as np

from ..exceptions import InputDataError, InvalidParameterError

__all__ = ["region_precision", "share_near_centres"]


def _top_share(values: np.ndarray, relevant: np.ndarray, n_top: int) -> float:
    """Expected share of ``relevant`` items among the ``n_top`` largest ``values``, ties at
    the cut-off taken in random order."""
    threshold = np.partition(values, values.size - n_top)[values.size - n_top]
    above = values > threshold
    tied = values == threshold
    hits = relevant[above].sum() + (n_top - above.sum()) * relevant[tied].mean()
    return float(hits / n_top)


def _fraction(name: str, value) -> float:
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    if not ok or not (0 < value <= 1):
        raise InvalidParameterError(
            f"Invalid value for {name!r}: {value!r}. Expected a number in (0, 1]."
        )
    return float(value)


def _volume(img, name: str):
    """3D float data and affine of a Niimg-like (a 4D image with one volume is accepted)."""
    from nilearn.image import load_img

    try:
        img = load_img(img)
    except (TypeError, ValueError, FileNotFoundError) as error:
        raise InputDataError(f"Cannot read {name!r} as an image: {error}") from error
    data = np.asarray(img.get_fdata(dtype=np.float64))
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputDataError(
            f"{name!r} must be a 3D image (one map); got shape {data.shape}. Score each "
            "volume of a 4D image separately (nilearn.image.index_img)."
        )
    return img, data


def _in_mask(img, data: np.ndarray, mask_img) -> np.ndarray:
    if mask_img is None:
        inside = np.isfinite(data) & (data != 0)
        return inside if inside.any() else np.ones(data.shape, dtype=bool)
    from nilearn.image import resample_to_img

    mask, _ = _volume(mask_img, "mask_img")
    if mask.shape[:3] != data.shape or not np.allclose(mask.affine, img.affine, atol=1e-4):
        mask = resample_to_img(mask, img, interpolation="nearest", force_resample=True,
                               copy_header=True)
    inside = np.asarray(mask.dataobj).reshape(data.shape) > 0
    if not inside.any():
        raise InputDataError(
            "'mask_img' has no voxel inside the map's field of view; give a brain mask in the "
            "map's space."
        )
    return inside


def share_near_centres(
    img,
    centres_mm,
    *,
    radius_mm: float = 12.0,
    top: float = 0.05,
    mask_img=None,
) -> dict:
    """Share of a map's top voxels that lie near activation centres, and its chance level.

    Parameters
    ----------
    img : Niimg-like
        A 3D map (or 4D with one volume), ranked by value: pass ``abs`` of a signed map.
    centres_mm : array-like, shape (n_centres, 3)
        Centres in the world (MNI mm) coordinates of ``img``'s affine, e.g. a task's
        ``centres_mm`` from a blobs simulation's ``ground_truth.json``.
    radius_mm : float, default=12.0
        A voxel is "near" when its centre is within this distance of any centre.
    top : float, default=0.05
        Fraction in (0, 1] of the in-mask voxels taken as the map's top
        (``ceil(top * n_voxels)`` voxels, at least 1).
    mask_img : Niimg-like, optional
        Voxels to score (resampled to ``img``'s grid, nearest). Default: the finite,
        non-zero voxels of ``img`` (all voxels when there are none). Pass the brain mask
        to compare maps on the same footing: the chance level depends on the mask.

    Returns
    -------
    dict
        ``share``: share of the top voxels near a centre, in [0, 1] (voxels tied with
        the last place count in proportion, so a constant or all-zero map scores
        ``chance``); ``chance``: share of all in-mask voxels near a centre (what a
        random map scores on average); ``lift``: ``share / chance`` (NaN when no voxel is
        near a centre); ``n_top`` and ``n_voxels``.

    Raises
    ------
    InvalidParameterError
        ``top`` not in (0, 1], ``radius_mm`` not positive, ``centres_mm`` not (n, 3)
        with n >= 1.
    InputDataError
        An unreadable or non-3D image, NaN / inf inside the mask, or a mask that misses
        the map.

    Examples
    --------
    >>> truth = json.load(open("sim/ground_truth.json"))  # doctest: +SKIP
    >>> share_near_centres(map_img, truth["tasks"]["MOTOR"]["centres_mm"])  # doctest: +SKIP
    {'share': 0.54, 'chance': 0.05, 'lift': 10.8, 'n_top': 1468, 'n_voxels': 29398}
    """
    import nibabel as nib
    from scipy.spatial import cKDTree

    top = _fraction("top", top)
    ok = isinstance(radius_mm, (int, float, np.number)) and not isinstance(radius_mm, bool)
    if not ok or not radius_mm > 0:
        raise InvalidParameterError(
            f"Invalid value for 'radius_mm': {radius_mm!r}. Expected a number > 0 (mm)."
        )
    centres = np.asarray(centres_mm, dtype=float)
    if centres.ndim == 1 and centres.size == 3:
        centres = centres[None]
    if centres.ndim != 2 or centres.shape[1] != 3 or len(centres) == 0:
        raise InvalidParameterError(
            f"'centres_mm' must have shape (n_centres, 3) with n_centres >= 1 (x, y, z in "
            f"mm); got shape {centres.shape}."
        )
    img, data = _volume(img, "img")
    inside = _in_mask(img, data, mask_img)
    values = data[inside]
    if not np.isfinite(values).all():
        raise InputDataError(
            f"'img' has {int((~np.isfinite(values)).sum())} NaN / inf voxels inside the mask; "
            "fill them (e.g. np.nan_to_num) or mask them out."
        )
    coords = nib.affines.apply_affine(img.affine, np.argwhere(inside))
    distance, _ = cKDTree(centres).query(coords)
    near = distance <= radius_mm
    n_top = max(1, math.ceil(top * values.size - 1e-9))
    share = _top_share(values, near, n_top)
    chance = float(near.mean())
    return {
        "share": share,
        "chance": chance,
        "lift": share / chance if chance > 0 else float("nan"),
        "n_top": n_top,
        "n_voxels": int(values.size),
    }


def region_precision(values, region_names, planted_names, k: int | None = None) -> float:
    """Region-level precision@k: the share of the k highest regions that are planted.

    Parameters
    ----------
    values : array-like, shape (n_regions,)
        One score per region (e.g. a class map summed over time), ranked by value.
    region_names : sequence of str, length n_regions
        The regions, in the order of ``values``.
    planted_names : iterable of str
        The relevant regions; names not in ``region_names`` are ignored.
    k : int, optional
        How many top regions to take, 1..n_regions. Default: the number of planted
        regions present (precision at the mask size, free of a ceiling).

    Returns
    -------
    float
        In [0, 1]; regions tied with the k-th place count in proportion, so a constant
        map scores the chance level ``n_planted / n_regions``. NaN when no planted name
        is among ``region_names`` (nothing to find, e.g. a ``signal=0`` control).

    Raises
    ------
    InputDataError
        ``values`` not 1D, not matching ``region_names``, or not finite.
    InvalidParameterError
        ``k`` outside 1..n_regions.
    """
    scores = np.asarray(values, dtype=float)
    names = [str(n) for n in region_names]
    if scores.ndim != 1 or scores.size != len(names):
        raise InputDataError(
            f"'values' must have shape (n_regions,) = ({len(names)},) to match "
            f"'region_names'; got {scores.shape}."
        )
    if not np.isfinite(scores).all():
        raise InputDataError("'values' has NaN / inf; fill or drop those regions first.")
    relevant = np.isin(names, [str(n) for n in planted_names])
    if k is None:
        k = int(relevant.sum())
        if k == 0:
            return float("nan")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(names):
        raise InvalidParameterError(
            f"Invalid value for 'k': {k!r}. Use an integer in 1..{len(names)} (the number of "
            "regions), or None for the number of planted regions."
        )
    if not relevant.any():
        return float("nan")
    return _top_share(scores, relevant, int(k))
