"""Group inference on saliency maps: where does a trained model's map exceed its null's?

Per subject, the difference ``trained - null`` of two (time bin, region) maps; across
subjects, a one-sample t statistic per cell, with p-values from sign flips (under the null
hypothesis a subject's difference is symmetric about zero, so flipping its sign gives an
equally likely data set: exact and free of normality assumptions), false discovery rate
control across cells (Benjamini-Hochberg) and the max-statistic family-wise p-value.
:func:`write_group_maps` paints the results onto the brain with JSON sidecars.
"""

from __future__ import annotations

import hashlib
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import false_discovery_control, norm

from .._utils import check_option
from ..exceptions import InputDataError, InvalidParameterError
from .projection import _entity, _n_regions, _write_with_sidecar, write_regions_img

__all__ = ["GroupTestResult", "NORMALISATIONS", "group_saliency_test", "sign_flip_test",
           "write_group_maps"]

TAILS = ("greater", "less", "two-sided")
#: How each subject's map is scaled before the difference is taken.
NORMALISATIONS = {
    "mass": "each subject's map divided by its sum over all cells (a share of saliency mass)",
    "zscore": "each subject's map z-scored over its cells (mean 0, standard deviation 1)",
    "none": "raw values",
}
# Sign-flip rows evaluated at once: bounds memory at ~ this many float64 per block.
_BLOCK_VALUES = 1 << 22


@dataclass
class GroupTestResult:
    """A sign-flip test per cell; arrays have the cells' shape (e.g. (time_bin, region)).

    Attributes
    ----------
    t : ndarray
        One-sample t statistic of the differences (mean / (sd / sqrt(n)), sd with n - 1).
    p : ndarray
        Sign-flip p-value, ``#{flips with statistic >= observed} / n_permutations``
        (the identity counts, so ``p >= 1 / n_permutations``).
    q : ndarray
        Benjamini-Hochberg adjusted p-values across all cells.
    z : ndarray
        ``norm.isf(p)`` (signed ``sign(t) * norm.isf(p / 2)`` for two-sided tests), with
        ``p`` capped at ``1 - 1 / (2 n_permutations)`` so that ``z`` stays finite.
    p_fwer : ndarray
        Family-wise p-value from the maximum statistic over cells.
    significant : ndarray of bool
        ``q <= alpha``.
    n_subjects, n_permutations : int
    exact : bool
        True when all ``2 ** n_subjects`` sign patterns were enumerated.
    tail : str
    alpha : float
        FDR level.
    method : str
        A sentence saying what was tested.
    """

    t: np.ndarray
    p: np.ndarray
    q: np.ndarray
    z: np.ndarray
    p_fwer: np.ndarray
    significant: np.ndarray
    n_subjects: int
    n_permutations: int
    exact: bool
    tail: str
    alpha: float
    method: str
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts and settings (no arrays)."""
        return {
            "method": self.method, "tail": self.tail, "alpha": self.alpha,
            "n_subjects": self.n_subjects, "n_permutations": self.n_permutations,
            "exact": self.exact, "n_cells": int(self.p.size),
            "n_significant": int(self.significant.sum()),
            "min_p_fwer": float(self.p_fwer.min()), "max_z": float(self.z.max()), **self.extra,
        }


def sign_flip_test(
    diff, n_perm: int = 10000, seed: int = 0, tail: str = "greater", *, alpha: float = 0.05
) -> GroupTestResult:
    """One-sample sign-flip permutation test of paired differences, per cell.

    Parameters
    ----------
    diff : array-like, shape (subject, *cells)
        Per-subject paired differences (trained minus null), at least 2 subjects.
    n_perm : int, default=10000
        Sign patterns. When ``2 ** n_subjects <= n_perm`` all patterns are enumerated
        (exact p-values); otherwise the identity plus ``n_perm - 1`` random patterns.
    seed : int, default=0
    tail : {"greater", "less", "two-sided"}, default="greater"
        ``"greater"``: trained above null.
    alpha : float, default=0.05
        FDR level for ``significant``.

    Returns
    -------
    GroupTestResult

    Raises
    ------
    InputDataError
        Fewer than 2 subjects, or non-finite values.
    InvalidParameterError
        Bad ``n_perm``, ``seed``, ``tail`` or ``alpha``.
    """
    check_option("tail", tail, TAILS)
    d = np.asarray(diff, dtype=np.float64)
    if d.ndim < 2 or d.shape[0] < 2 or d.size == 0:
        raise InputDataError(
            f"'diff' must have shape (subject, *cells) with at least 2 subjects; got {d.shape}."
        )
    if not np.isfinite(d).all():
        raise InputDataError("'diff' holds NaN or infinite values; drop or fill those cells first.")
    _check_int("n_perm", n_perm, 1)
    _check_int("seed", seed, 0)
    if not 0 < alpha < 1:
        raise InvalidParameterError(f"Invalid value for 'alpha': {alpha!r}. Use a number in (0, 1).")
    n, cells = d.shape[0], d.shape[1:]
    flat = d.reshape(n, -1)
    signs, exact = _sign_patterns(n, int(n_perm), int(seed))
    orient = {"greater": 1.0, "less": -1.0, "two-sided": None}[tail]
    t_obs = _t_from_sums(flat.sum(0), (flat**2).sum(0), n)
    stat_obs = np.abs(t_obs) if orient is None else orient * t_obs
    count = np.zeros(flat.shape[1])
    count_max = np.zeros(flat.shape[1])
    sum_sq = (flat**2).sum(0)  # invariant under sign flips
    block = max(1, _BLOCK_VALUES // flat.shape[1])
    for start in range(0, len(signs), block):
        t_flip = _t_from_sums(signs[start : start + block] @ flat, sum_sq, n)
        stat = np.abs(t_flip) if orient is None else orient * t_flip
        count += (stat >= stat_obs).sum(0)
        count_max += (stat.max(axis=1)[:, None] >= stat_obs).sum(0)
    n_total = len(signs)
    p, p_fwer = count / n_total, count_max / n_total
    q = false_discovery_control(p, method="bh")
    capped = np.minimum(p, 1 - 0.5 / n_total)
    z = norm.isf(capped) if orient is not None else np.sign(t_obs) * norm.isf(capped / 2)
    method = (f"sign-flip test of the one-sample t ({tail}) across {n} subjects, "
              f"{'exact (all' if exact else 'random ('}{n_total} sign patterns), "
              f"Benjamini-Hochberg FDR {alpha:g} over {flat.shape[1]} cells")
    return GroupTestResult(
        t=t_obs.reshape(cells), p=p.reshape(cells), q=q.reshape(cells), z=z.reshape(cells),
        p_fwer=p_fwer.reshape(cells), significant=(q <= alpha).reshape(cells), n_subjects=n,
        n_permutations=n_total, exact=exact, tail=tail, alpha=float(alpha), method=method,
    )


def group_saliency_test(
    trained,
    null,
    *,
    normalise: str = "mass",
    n_perm: int = 10000,
    seed: int = 0,
    tail: str = "greater",
    alpha: float = 0.05,
) -> GroupTestResult:
    """Where does the trained model's saliency exceed the null model's, across subjects?

    Parameters
    ----------
    trained, null : array-like, shape (subject, time_bin, region)
        Per-subject maps of one class, same subjects in the same order (for several
        nulls, pass their mean).
    normalise : {"mass", "zscore", "none"}, default="mass"
        Applied to each subject's map separately before the difference
        (:data:`NORMALISATIONS`). ``"mass"`` divides by the map's sum, so the test asks
        where the trained model puts a larger *share* of its saliency and overall scale
        differences between models (a confident network's small gradients) do not count;
        it needs non-negative maps with a positive sum.
    n_perm, seed, tail, alpha
        As in :func:`sign_flip_test`.

    Returns
    -------
    GroupTestResult
        ``extra["normalise"]`` records the normalisation.
    """
    check_option("normalise", normalise, NORMALISATIONS)
    a = _maps(trained, "trained")
    b = _maps(null, "null")
    if a.shape != b.shape:
        raise InputDataError(
            f"'trained' and 'null' must have the same shape (subject, time_bin, region); got "
            f"{a.shape} and {b.shape}."
        )
    diff = _normalised(a, normalise, "trained") - _normalised(b, normalise, "null")
    result = sign_flip_test(diff, n_perm=n_perm, seed=seed, tail=tail, alpha=alpha)
    result.method = f"{result.method}; maps normalised: {NORMALISATIONS[normalise]}"
    result.extra["normalise"] = normalise
    return result


def write_group_maps(
    out_dir: str | os.PathLike,
    result: GroupTestResult,
    atlas,
    *,
    model: str,
    class_name: str,
    t_r_bin: float | None = None,
    null: str | None = None,
    space: str | None = None,
    prefix: str = "",
    bin_edges_frames=None,
    frames: Any = None,
    extra: dict[str, Any] | None = None,
) -> list[Path]:
    """Write the z, -log10 p and FDR-thresholded z maps of a group test as NIfTI files.

    Files in ``out_dir`` (``[space-<s>_]`` and ``[null-<n>_]`` only when given)::

        <prefix>_task-<class>_[space-<s>_]atlas-<a>_model-<m>_[null-<n>_]stat-z_saliency.nii.gz
        ..._stat-logp_saliency.nii.gz                 -log10(p), uncorrected
        ..._stat-z_thresh-fdr05_saliency.nii.gz       z where q <= alpha, else 0

    (``fdr05`` spells ``alpha``: 0.01 gives ``fdr01``). Each image has one volume per
    time bin, with ``pixdim[4] = t_r_bin`` seconds, or is 3D for a single bin; the atlas
    affine and grid; voxels outside every region are 0. Each has a JSON sidecar saying
    what the values are (statistic, test, null, normalisation, number of subjects,
    FDR level and number of significant cells, bins and frames).

    Parameters
    ----------
    out_dir : path
    result : GroupTestResult
        From :func:`group_saliency_test` with cells (time_bin, region) or (region,).
    atlas : Atlas
        Regions in the order of the result's last axis (see
        :mod:`fmri_ica.saliency.projection`).
    model, class_name : str
        Model name and the class (task) tested.
    t_r_bin : float, optional
        Seconds between time bins (``pixdim[4]``); required with more than one bin.
    null : str, optional
        Which null the trained model was compared with (e.g. ``"untrained"``).
    space : str, optional
        Template space, e.g. ``MNI152NLin6Asym``.
    prefix : str, default=""
        Leading entities (e.g. ``group``).
    bin_edges_frames : sequence of int, optional
        Frame edges of the bins, for the sidecar.
    frames : JSON-serialisable, optional
        Which run frames the maps cover, for the sidecar.
    extra : dict, optional
        More sidecar fields.

    Returns
    -------
    list of Path
        The three images.
    """
    z = np.asarray(result.z)
    values = z[None] if z.ndim == 1 else z
    n_regions = _n_regions(atlas)
    if values.ndim != 2 or values.shape[1] != n_regions:
        raise InputDataError(
            f"'result' must have cells (time_bin, region) or (region,) with {n_regions} "
            f"regions (the atlas table's rows); got cells of shape {z.shape}."
        )
    n_bins = values.shape[0]
    if n_bins > 1 and (t_r_bin is None or not np.isfinite(t_r_bin) or t_r_bin <= 0):
        raise InvalidParameterError(
            f"Invalid value for 't_r_bin': {t_r_bin!r}. With {n_bins} time bins, pass the "
            "seconds between bins (it becomes the images' pixdim[4])."
        )
    reshape = (lambda a: np.asarray(a).reshape(n_bins, n_regions)[0]) if n_bins == 1 else (
        lambda a: np.asarray(a).reshape(n_bins, n_regions))
    threshold = f"fdr{f'{result.alpha:.10f}'.rstrip('0').split('.')[1]}"
    parts = [prefix] if prefix else []
    parts.append(f"task-{_entity(class_name, 'class name')}")
    if space:
        parts.append(f"space-{_entity(space, 'space')}")
    parts += [f"atlas-{_entity(getattr(atlas, 'name', 'atlas'), 'atlas name')}",
              f"model-{_entity(model, 'model')}"]
    if null:
        parts.append(f"null-{_entity(null, 'null')}")
    stem = "_".join(parts)
    common = {
        "Model": model, "Class": class_name, "Null": null, "Atlas": getattr(atlas, "name", "atlas"),
        "Space": space, "Test": result.method, "Tail": result.tail,
        "Normalisation": result.extra.get("normalise"),
        "NSubjects": result.n_subjects, "NPermutations": result.n_permutations,
        "Exact": result.exact, "FDRMethod": "Benjamini-Hochberg", "FDRLevel": result.alpha,
        "NSignificantCells": int(np.sum(result.significant)), "NTimeBins": n_bins,
        "BinSpacingSeconds": None if n_bins == 1 else float(t_r_bin),
        "BinEdgesFrames": None if bin_edges_frames is None else list(map(int, bin_edges_frames)),
        "Frames": frames, **dict(extra or {}),
    }
    jobs = [
        ("stat-z", "z score of the sign-flip p-value (norm.isf(p), uncorrected)", result.z),
        ("stat-logp", "-log10 of the uncorrected sign-flip p-value", -np.log10(result.p)),
        (f"stat-z_thresh-{threshold}",
         f"z score where the Benjamini-Hochberg q <= {result.alpha:g}, else 0",
         np.where(result.significant, result.z, 0.0)),
    ]
    paths = []
    for entities, description, data in jobs:
        data = reshape(data)
        fields = {**common, "Description": description,
                  "ValuesSHA256": hashlib.sha256(np.ascontiguousarray(data, np.float32)).hexdigest()}
        path = Path(out_dir) / f"{stem}_{entities}_saliency.nii.gz"
        paths.append(_write_with_sidecar(
            path, fields,
            lambda p, v=data: write_regions_img(p, v, atlas, t_r=None if n_bins == 1 else t_r_bin),
        ))
    return paths


# ------------------------------------------------------------------------- internals
def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidParameterError(
            f"Invalid value for {name!r}: {value!r}. Expected an integer >= {minimum}."
        )


def _sign_patterns(n: int, n_perm: int, seed: int) -> tuple[np.ndarray, bool]:
    """(k, n) rows of +-1: all 2**n patterns if k allows, else the identity + random ones."""
    if n < 31 and 2**n <= n_perm:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
        return 1.0 - 2.0 * bits, True  # row 0 is the identity
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(n_perm, n))
    signs[0] = 1.0
    return signs, False


def _t_from_sums(sums: np.ndarray, sum_sq: np.ndarray, n: int) -> np.ndarray:
    """One-sample t from sums and sums of squares; +-inf for a constant non-zero cell, 0 for
    an all-zero cell."""
    mean = sums / n
    var = np.maximum(sum_sq - n * mean**2, 0.0) / (n - 1)
    se = np.sqrt(var / n)
    scale = np.maximum(np.sqrt(sum_sq / n), np.finfo(float).tiny)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / se
    # rounding leaves a tiny variance in constant cells: call them constant
    constant = se <= 1e-12 * scale
    return np.where(constant, np.sign(mean) * np.where(mean == 0, 0.0, np.inf), t)


def _maps(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[0] < 2:
        raise InputDataError(
            f"{name!r} must be per-subject maps of shape (subject, time_bin, region) with at "
            f"least 2 subjects; got shape {arr.shape}. Add a time_bin axis of 1 for 2-D maps."
        )
    if not np.isfinite(arr).all():
        raise InputDataError(f"{name!r} holds NaN or infinite values; drop or fill them first.")
    return arr


def _normalised(maps: np.ndarray, how: str, name: str) -> np.ndarray:
    flat = maps.reshape(len(maps), -1)
    if how == "mass":
        totals = flat.sum(axis=1)
        if np.any(flat < 0) or np.any(totals <= 0):
            raise InputDataError(
                f"normalise='mass' needs non-negative {name!r} maps with a positive sum per "
                "subject; take absolute values, or use normalise='zscore'."
            )
        return maps / totals[:, None, None]
    if how == "zscore":
        sd = flat.std(axis=1)
        if np.any(sd == 0):
            raise InputDataError(f"normalise='zscore': a subject's {name!r} map is constant.")
        return (maps - flat.mean(axis=1)[:, None, None]) / sd[:, None, None]
    return maps
