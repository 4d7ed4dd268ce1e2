"""Null models for saliency maps and a plain verdict: does training change the map?

Sanity checks after Adebayo et al. (NeurIPS 2018, "Sanity checks for saliency maps"). On
fMRI-like data the time curve of an input-cell attention model's saliency is produced by
the architecture alone: untrained networks draw the same "when" (docs/EVALUATION.md). So
every map or curve is shown beside maps of null models that learned nothing:

- :func:`initial_model` / :func:`reinitialized`: the same architecture, freshly
  initialised (a new seed), or the model's own initial weights (an ``init/`` checkpoint);
- :func:`cascading_randomization`: copies re-initialised cumulatively from the output
  layer down to the input (``head``, then ``rnn``, then ``attention`` for input-cell
  attention), as in Adebayo et al.;
- :func:`permuted_labels`: labels permuted within each subject, to train a model that
  cannot learn the class mapping shared across subjects (the data-randomisation test).

Maps are compared per subject, with uncertainty from a bootstrap over subjects:
:func:`map_similarity` (Spearman correlation of the subject-mean maps),
:func:`profile_distance` (total-variation distance of the mean time profiles) and
:func:`split_half_reliability` (how reproducible one model's map is across subjects).

The verdict rule (:func:`sanity_verdict`)
-----------------------------------------
Similarity ``s`` is the Spearman correlation of subject-mean maps (``measure="map"``) or
the overlap ``1 - TV`` of the subject-mean time profiles (``measure="profile"``). Let

- ``S`` = similarity of the trained map to the null maps (mean over null models), with a
  percentile bootstrap CI ``[lo, hi]`` over subjects (one resample shared by all maps);
- ``R`` = the trained map's split-half reliability: the median over random halves of
  subjects of ``s(half 1 mean, half 2 mean)``, **not** Spearman-Brown corrected (half means
  are noisier than the full means behind ``S``: a low ceiling, so "yes" is conservative);
- ``n_j`` = how typical null ``j`` is: its mean similarity to the other nulls (two or more
  nulls). ``N_min`` and ``N_med`` are their minimum and median.

Then:

- ``"inconclusive"`` if ``R < min_reliability`` (default 0.5): the trained map is not
  reproducible across subjects, so its similarity to anything means little; likewise if
  ``N_med < min_reliability``: the nulls disagree with each other (random input-cell
  attention networks draw unrelated region x time maps), so there is no null map;
- ``"yes"`` if there are two or more nulls and ``hi < min(R, N_min)``: the trained map is
  reliably less similar to the nulls than to itself, and less typical of them than any
  null is of the others -- training drew something the nulls do not;
- ``"no"`` if ``S >= min(R, N_med)`` (``R`` alone for one null): the trained map is as
  similar to the nulls as to itself, or as the nulls are to one another;
- ``"inconclusive"`` otherwise.

Why a single null can never give "yes": any change of weights changes a recurrent
network's map in the same way for every subject, so a subject bootstrap finds *some*
difference from one null even for a model trained on pure noise (on toy data, an
input-cell attention model trained 2-5 epochs on noise kept a region x time Spearman of
only 0.04-0.14 with its own initial weights, at a split-half reliability of 0.95). Only the
spread between several nulls shows how much a difference that means nothing can be. The
CI covers subject sampling, not the draw of the nulls: use several (five or more; random
re-initialisations are cheap), and nulls trained like the model (permuted labels) when
the question is whether the map reflects the task rather than training as such.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import numbers
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from .._utils import check_option
from ..exceptions import InputDataError, InvalidParameterError
from ..models import model_from_config

__all__ = [
    "CASCADE_ORDER",
    "Estimate",
    "cascading_randomization",
    "initial_model",
    "map_similarity",
    "permuted_labels",
    "profile_distance",
    "reinitialized",
    "sanity_verdict",
    "split_half_reliability",
]

#: Layers of each model kind from the output down to the input (cascading order).
CASCADE_ORDER: dict[str, tuple[str, ...]] = {
    "ica": ("head", "rnn", "attention"),
    "self_attention": ("head", "attention", "rnn"),  # its attention reads the RNN states
    "lstm": ("head", "rnn"),
    "bilstm": ("head", "rnn"),
    "gru": ("head", "rnn"),
}

MEASURES = ("map", "profile")
# Bootstrap means computed at once: bounds memory at ~ this many float64 per chunk.
_CHUNK_VALUES = 1 << 22


# ----------------------------------------------------------------------------- nulls
def initial_model(source: Mapping[str, Any] | str | os.PathLike, seed: int = 0) -> nn.Module:
    """A model of the same architecture before training.

    Parameters
    ----------
    source : dict or path
        A model ``config`` (see :func:`fmri_ica.models.build_model`): a fresh model is
        built with its weights drawn from ``seed``. Or a checkpoint folder (the trainer's
        ``init/``, written by :func:`fmri_ica.training.save_checkpoint`): the model's own
        initial weights, loaded as saved (``seed`` is ignored).
    seed : int, default=0
        Seeds the initialisation; the caller's torch RNG state is left untouched.

    Returns
    -------
    torch.nn.Module
        On the CPU, in eval mode.

    Raises
    ------
    InvalidParameterError
        ``source`` is neither a config nor a path, or ``seed`` is not an int >= 0.
    InputDataError
        The checkpoint folder lacks ``model.pt`` or ``model.json``.
    """
    if isinstance(source, (str, os.PathLike)):
        from ..training.checkpoint import load_model  # saliency needs training only here

        return load_model(Path(source)).eval()
    if not isinstance(source, Mapping):
        raise InvalidParameterError(
            f"Invalid value for 'source': {type(source).__name__}. Pass a model config (dict, "
            "the model's .config) or the path of an init/ checkpoint folder."
        )
    with _seeded(_check_seed(seed)):
        model = model_from_config(dict(source))
    return model.eval()


def reinitialized(model: nn.Module, seed: int = 0) -> nn.Module:
    """A fresh copy of ``model``'s architecture with newly drawn weights.

    Models from :func:`fmri_ica.models.build_model` are rebuilt from ``model.config``, so
    the weights follow the architecture's own initialisation. Other models are deep-copied
    and every submodule with a ``reset_parameters`` method is reset.

    Parameters
    ----------
    model : torch.nn.Module
        Never modified.
    seed : int, default=0
        Seeds the new weights (the caller's torch RNG state is left untouched).

    Returns
    -------
    torch.nn.Module
        Same device and dtype as ``model``, in eval mode.
    """
    seed = _check_seed(seed)
    param = next(iter(model.parameters()), None)
    config = getattr(model, "config", None)
    with _seeded(seed):
        if isinstance(config, Mapping) and config.get("kind") in CASCADE_ORDER:
            fresh = model_from_config(dict(config))
        else:
            fresh = copy.deepcopy(model)
            for module in fresh.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
    if param is not None:
        fresh = fresh.to(device=param.device, dtype=param.dtype)
    return fresh.eval()


def cascading_randomization(
    model: nn.Module, seed: int = 0, layers: Sequence[str] | None = None
) -> list[tuple[str, nn.Module]]:
    """Copies of ``model`` re-initialised cumulatively from the output layer to the input.

    Step ``k`` re-initialises ``layers[:k]`` and keeps the trained weights of the rest
    (Adebayo et al. 2018, cascading randomisation). The new weights of a layer are those
    of :func:`reinitialized` ``(model, seed)``, so they have the architecture's own scale
    and a layer keeps the same random weights in every later step; the last step
    re-initialises every listed layer (for our models: all of them).

    Parameters
    ----------
    model : torch.nn.Module
        A trained model; never modified.
    seed : int, default=0
        Seeds the new weights.
    layers : sequence of str, optional
        Submodule names from the output down to the input. Default: from
        :data:`CASCADE_ORDER` by ``model.config["kind"]`` (``ica``: head, rnn, attention).

    Returns
    -------
    list of (str, torch.nn.Module)
        One entry per step, named by the layer the step reached (``"head"``, ``"rnn"``,
        ``"attention"``): the model named ``"rnn"`` has a new head *and* a new rnn (that
        layer and every layer above it). Models in eval mode.

    Raises
    ------
    InvalidParameterError
        A layer name that is not a submodule with parameters, or no ``layers`` for a model
        whose kind is unknown.
    """
    layers = _cascade_layers(model, layers)
    fresh = reinitialized(model, seed)
    steps, current = [], copy.deepcopy(model).eval()
    for name in layers:
        current = copy.deepcopy(current)
        current.get_submodule(name).load_state_dict(fresh.get_submodule(name).state_dict())
        steps.append((name, current.eval()))
    return steps


def _cascade_layers(model: nn.Module, layers: Sequence[str] | None) -> list[str]:
    if layers is None:
        kind = (getattr(model, "config", None) or {}).get("kind")
        if kind not in CASCADE_ORDER:
            raise InvalidParameterError(
                f"Cannot tell the layer order of a model of kind {kind!r}. Pass 'layers': its "
                "submodule names from the output down to the input, e.g. ['head', 'rnn']."
            )
        layers = CASCADE_ORDER[kind]
    layers = list(layers)
    names = {name for name, module in model.named_modules() if name and next(module.parameters(), None) is not None}
    bad = [name for name in layers if name not in names]
    if bad or not layers or len(set(layers)) != len(layers):
        raise InvalidParameterError(
            f"Invalid value for 'layers': {layers!r} ({bad or 'empty or repeated'}). Use "
            f"distinct submodules with parameters, among {sorted(names)}."
        )
    return layers


def permuted_labels(y, subjects, n_classes: int, seed: int = 0, *, balanced: bool = True):
    """Labels permuted within each subject: subject ``s``'s class ``c`` becomes ``pi_s(c)``.

    Every sample of class ``c`` of subject ``s`` gets the same new label, so class balance
    and the structure within a subject stay; the label mapping shared across subjects is
    gone. A model trained on these labels must score at chance on held-out subjects.

    Parameters
    ----------
    y : array-like of int, shape (n_samples,)
        Class indices in ``[0, n_classes)``.
    subjects : array-like, shape (n_samples,)
        Subject of each sample.
    n_classes : int
        Number of classes (at least 2).
    seed : int, default=0
    balanced : bool, default=True
        Draw the permutations as rows of a random Latin square, dealt to the subjects in
        random order, so that across subjects each class is sent to every label equally
        often (up to ``n_subjects mod n_classes``). With independent random permutations
        and few subjects, a net mapping can survive by chance (two classes, six subjects:
        at least 5 of 6 subjects keep the same mapping 22% of the time) and be learned.
        The balance holds over the subjects passed: permute the training and the
        validation subjects in separate calls.

    Returns
    -------
    y_perm : ndarray of int64, shape (n_samples,)

    Raises
    ------
    InvalidParameterError
        Bad ``n_classes`` or ``seed``; labels out of range; lengths that differ.
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, numbers.Integral) or n_classes < 2:
        raise InvalidParameterError(
            f"Invalid value for 'n_classes': {n_classes!r}. Expected an integer >= 2."
        )
    y, subjects = np.asarray(y), np.asarray(subjects)
    if y.ndim != 1 or subjects.shape != y.shape:
        raise InvalidParameterError(
            f"'y' and 'subjects' must be 1-D of the same length; got shapes {y.shape} and "
            f"{subjects.shape}."
        )
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes):
        raise InvalidParameterError(
            f"'y' must hold class indices in [0, {n_classes}); got dtype {y.dtype}, "
            f"range [{y.min()}, {y.max()}]."
        )
    rng = np.random.default_rng(_check_seed(seed))
    ids, inverse = np.unique(subjects, return_inverse=True)
    if balanced:
        rows = (rng.permutation(n_classes)[:, None] + np.arange(n_classes)) % n_classes
        square = rng.permutation(n_classes)[rows].T  # Latin square: row k, column c
        deal = rng.permutation(np.arange(len(ids)) % n_classes)
        perms = square[deal]
    else:
        perms = np.stack([rng.permutation(n_classes) for _ in ids]) if len(ids) else None
    if perms is None:
        return y.astype(np.int64)
    return perms[inverse, y].astype(np.int64)


# ------------------------------------------------------------------------ similarity
@dataclass(frozen=True)
class Estimate:
    """A statistic of subject-mean maps with a percentile bootstrap CI over subjects."""

    value: float
    ci_low: float
    ci_high: float
    confidence: float
    n_subjects: int
    n_boot: int
    statistic: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def map_similarity(a, b, n_boot: int = 1000, seed: int = 0, *, confidence: float = 0.95) -> Estimate:
    """Spearman correlation of two subject-mean maps, with a bootstrap CI over subjects.

    Parameters
    ----------
    a, b : array-like, shape (subject, ...)
        Per-subject maps of two models, same subjects in the same order, e.g.
        (subject, time, region) or (subject, region). Cells are ranked as one vector.
    n_boot : int, default=1000
        Bootstrap resamples of subjects (the same resample for ``a`` and ``b``).
    seed : int, default=0
    confidence : float, default=0.95
        Coverage of the percentile interval.

    Returns
    -------
    Estimate
        ``statistic="spearman"``; NaN where a mean map is constant.
    """
    a, b = _paired(a, b)
    return _bootstrap(_spearman, [a], [b], n_boot, seed, confidence, "spearman")


def profile_distance(a, b, n_boot: int = 1000, seed: int = 0, *, confidence: float = 0.95) -> Estimate:
    """Total-variation distance of two mean time profiles, with a bootstrap CI over subjects.

    Each subject's profile is divided by its sum (so it sums to 1), the profiles are
    averaged over subjects, and the distance is ``0.5 * sum_t |p_a(t) - p_b(t)|``: the
    share of saliency mass that would have to move in time to turn one curve into the
    other (0 = same curve, 1 = disjoint). It is biased upwards by noise: compare it with
    the split-half distance of each model (:func:`split_half_reliability`), not with 0.

    Parameters
    ----------
    a, b : array-like, shape (subject, time)
        Non-negative per-subject saliency over time (e.g. summed over regions).
    n_boot, seed, confidence
        As in :func:`map_similarity`.

    Returns
    -------
    Estimate
        ``statistic="total_variation"``.
    """
    a, b = _paired(_profiles(a, "a"), _profiles(b, "b"))
    return _bootstrap(_tv_distance, [a], [b], n_boot, seed, confidence, "total_variation")


def split_half_reliability(
    a, *, measure: str = "map", n_splits: int = 100, seed: int = 0, spearman_brown: bool = False
) -> float:
    """How reproducible a model's subject-mean map is: agreement of two halves of subjects.

    Subjects are split at random into two halves (``n // 2`` and the rest); the statistic
    compares the two half means; the median over ``n_splits`` splits is returned.

    Parameters
    ----------
    a : array-like, shape (subject, ...)
        Per-subject maps of one model (at least 4 subjects).
    measure : {"map", "profile"}, default="map"
        ``"map"``: Spearman correlation. ``"profile"``: overlap ``1 - TV`` of the time
        profiles (``a`` is (subject, time), each profile normalised to sum 1).
    n_splits : int, default=100
    seed : int, default=0
    spearman_brown : bool, default=False
        Correct a Spearman reliability to the full sample size, ``2 r / (1 + r)``. Only for
        ``measure="map"``; :func:`sanity_verdict` uses the uncorrected value.

    Returns
    -------
    float
    """
    check_option("measure", measure, MEASURES)
    a = _profiles(a, "a") if measure == "profile" else _subject_array(a, "a")
    n = a.shape[0]
    if n < 4:
        raise InputDataError(f"Split-half reliability needs at least 4 subjects; got {n}.")
    if spearman_brown and measure != "map":
        raise InvalidParameterError("'spearman_brown' applies to measure='map' only.")
    rng = np.random.default_rng(_check_seed(seed))
    flat = a.reshape(n, -1)
    values = []
    for _ in range(_check_count("n_splits", n_splits)):
        order = rng.permutation(n)
        half1, half2 = flat[order[: n // 2]].mean(0), flat[order[n // 2 :]].mean(0)
        values.append(_similarity(measure)(half1[None], half2[None])[0])
    r = float(np.nanmedian(values))
    return 2 * r / (1 + r) if spearman_brown else r


# --------------------------------------------------------------------------- verdict
def sanity_verdict(
    trained,
    nulls,
    *,
    measure: str = "map",
    n_boot: int = 1000,
    n_splits: int = 100,
    seed: int = 0,
    confidence: float = 0.95,
    min_reliability: float = 0.5,
) -> dict[str, Any]:
    """Does the trained model's map differ from its null models' maps? Rule: module doc.

    Parameters
    ----------
    trained : array-like, shape (subject, ...)
        Per-subject maps of the trained model: (subject, time, region) or (subject, region)
        for ``measure="map"``, (subject, time) non-negative for ``measure="profile"``.
    nulls : array-like of the same shape, or a sequence of them
        Per-subject maps of one or more null models (re-initialised, initial weights,
        cascading steps, permuted labels) on the same subjects.
    measure : {"map", "profile"}, default="map"
    n_boot : int, default=1000
        Bootstrap resamples of subjects.
    n_splits : int, default=100
        Random splits for the split-half reliability.
    seed : int, default=0
    confidence : float, default=0.95
    min_reliability : float, default=0.5
        Below this split-half reliability (or median null typicality) the verdict is
        ``"inconclusive"``.

    Returns
    -------
    dict
        ``differs`` ("yes", "no" or "inconclusive"), ``reason`` (one sentence),
        ``measure``, ``statistic``, ``similarity`` and ``ci`` (trained vs nulls),
        ``reliability`` (R), ``null_typicality`` (``n_j`` per null) and
        ``null_similarity`` (their median; both None for one null), ``confidence``,
        ``min_reliability``, ``n_subjects``, ``n_nulls``, ``rule``; for profiles also
        ``distance`` and ``distance_ci`` (total variation, ``1 - s``).
    """
    check_option("measure", measure, MEASURES)
    prepare = _profiles if measure == "profile" else _subject_array
    trained = prepare(trained, "trained")
    null_list = _null_list(nulls, trained.shape, prepare)
    if not 0 <= min_reliability <= 1:
        raise InvalidParameterError(
            f"Invalid value for 'min_reliability': {min_reliability!r}. Use a number in [0, 1]."
        )
    sim = _similarity(measure)
    est = _bootstrap(sim, [trained] * len(null_list), null_list, n_boot, seed, confidence,
                     "spearman" if measure == "map" else "overlap")
    reliability = split_half_reliability(trained, measure=measure, n_splits=n_splits, seed=seed)
    typical = _typicality(sim, null_list)
    differs = _decide(est, reliability, typical, min_reliability)
    out = {
        "differs": differs,
        "reason": _reason(differs, measure, est, reliability, typical, min_reliability),
        "measure": measure,
        "statistic": est.statistic,
        "similarity": est.value,
        "ci": [est.ci_low, est.ci_high],
        "reliability": reliability,
        "null_typicality": None if typical is None else typical.tolist(),
        "null_similarity": None if typical is None else float(np.median(typical)),
        "confidence": confidence,
        "min_reliability": min_reliability,
        "n_subjects": est.n_subjects,
        "n_nulls": len(null_list),
        "rule": "inconclusive if reliability < min_reliability; yes if >= 2 nulls and "
        "ci[1] < min(reliability, min(null_typicality)); no if similarity >= "
        "min(reliability, median(null_typicality)); else inconclusive",
    }
    if measure == "profile":
        out["distance"], out["distance_ci"] = 1 - est.value, [1 - est.ci_high, 1 - est.ci_low]
    return out


def _typicality(sim, nulls: list[np.ndarray]) -> np.ndarray | None:
    """Each null's mean similarity to the other nulls (None for a single null)."""
    if len(nulls) < 2:
        return None
    means = np.stack([n.reshape(len(n), -1).mean(0) for n in nulls])
    pair = np.ones((len(means), len(means)))
    for i, j in itertools.combinations(range(len(means)), 2):
        pair[i, j] = pair[j, i] = sim(means[i][None], means[j][None])[0]
    return (pair.sum(axis=1) - 1) / (len(means) - 1)


def _decide(est: Estimate, reliability: float, typical, min_reliability: float) -> str:
    if not reliability >= min_reliability:  # NaN counts as unreliable
        return "inconclusive"
    if typical is not None and not np.median(typical) >= min_reliability:
        return "inconclusive"  # the nulls disagree: there is no null map to resemble
    if typical is not None and est.ci_high < min(reliability, typical.min()):
        return "yes"
    no_level = reliability if typical is None else min(reliability, np.median(typical))
    return "no" if est.value >= no_level else "inconclusive"


def _reason(differs, measure, est, reliability, typical, min_reliability) -> str:
    what = "map" if measure == "map" else "time profile"
    stat = "Spearman" if measure == "map" else "overlap"
    got = f"{stat} {est.value:.2f}, {est.confidence:.0%} CI {est.ci_low:.2f} to {est.ci_high:.2f}"
    own = f"its own split-half reliability ({reliability:.2f})"
    if typical is None:
        spread = ""
    else:
        spread = (f" and the nulls' similarity to each other ({typical.min():.2f} to "
                  f"{typical.max():.2f})")
    if differs == "yes":
        return (f"The trained {what} is less similar to the null models ({got}) than {own}"
                f"{spread}: training drew something the null models do not.")
    if differs == "no":
        return (f"The trained {what} is as similar to the null models ({got}) as {own}"
                f"{spread} allow: the null models draw the same {what}.")
    if not reliability >= min_reliability:
        return (f"The trained {what} is not reproducible across subjects (split-half {stat} "
                f"{reliability:.2f} < {min_reliability:.2f}), so it cannot be compared with "
                "the null models.")
    if typical is not None and not np.median(typical) >= min_reliability:
        return (f"The null models' {what}s disagree with each other (similarity "
                f"{typical.min():.2f} to {typical.max():.2f}), so there is no null {what} to "
                f"compare the trained one with ({got}).")
    if typical is None:
        return (f"The trained {what} differs from the one null model ({got}; split-half "
                f"{reliability:.2f}), but one "
                "null cannot show whether another draw of weights would differ as much: "
                "pass several null models.")
    return (f"The trained {what}'s similarity to the null models ({got}) lies between what "
            f"would show a difference and what would show none ({own}{spread}).")


# ------------------------------------------------------------------------- internals
@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch inside; the caller's CPU RNG state is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InvalidParameterError(f"Invalid value for 'seed': {seed!r}. Expected an int >= 0.")
    return int(seed)


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidParameterError(f"Invalid value for {name!r}: {value!r}. Expected an int >= 1.")
    return int(value)


def _subject_array(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim < 2 or arr.shape[0] < 2 or arr.size == 0:
        raise InputDataError(
            f"{name!r} must be per-subject maps of shape (subject, ...) with at least 2 "
            f"subjects and one cell; got shape {arr.shape}."
        )
    if not np.isfinite(arr).all():
        raise InputDataError(f"{name!r} holds NaN or infinite values; fix the maps first.")
    return arr


def _profiles(values, name: str) -> np.ndarray:
    arr = _subject_array(values, name)
    if arr.ndim != 2:
        raise InputDataError(
            f"{name!r} must be time profiles of shape (subject, time); got {arr.shape}. Sum "
            "a (subject, time, region) map over regions first."
        )
    totals = arr.sum(axis=1, keepdims=True)
    if np.any(arr < 0) or np.any(totals <= 0):
        raise InputDataError(
            f"{name!r}: each subject's profile must be non-negative with a positive sum "
            "(saliency magnitudes); take the absolute value of signed attributions."
        )
    return arr / totals


def _paired(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _subject_array(a, "a"), _subject_array(b, "b")
    if a.shape != b.shape:
        raise InputDataError(
            f"'a' and 'b' must have the same shape (same subjects and cells); got {a.shape} "
            f"and {b.shape}."
        )
    return a, b


def _null_list(nulls, shape, prepare) -> list[np.ndarray]:
    if isinstance(nulls, np.ndarray) or torch.is_tensor(nulls):
        nulls = [nulls]
    out = [prepare(n, f"nulls[{i}]") for i, n in enumerate(nulls)]
    bad = [i for i, n in enumerate(out) if n.shape != shape]
    if not out or bad:
        raise InputDataError(
            f"'nulls' must be one or more maps of the trained maps' shape {shape}; "
            f"{'none given' if not out else f'nulls{bad} differ'}."
        )
    return out


def _similarity(measure: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return _spearman if measure == "map" else (lambda p, q: 1 - _tv_distance(p, q))


def _spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Spearman correlation of (k, cells) arrays (Pearson of ranks)."""
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denom = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ra * rb).sum(axis=1) / denom, np.nan)


def _tv_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise total variation of (k, time) mean profiles (each row sums to 1)."""
    return 0.5 * np.abs(p - q).sum(axis=1)


def _bootstrap(stat, lefts, rights, n_boot, seed, confidence, name) -> Estimate:
    """Mean over pairs of ``stat(mean left_i, mean right_i)``, bootstrapped over subjects.

    Each resample of subjects is a weight vector (counts / n), shared by all maps.
    """
    n_boot = _check_count("n_boot", n_boot)
    if not 0 < confidence < 1:
        raise InvalidParameterError(
            f"Invalid value for 'confidence': {confidence!r}. Use a number in (0, 1)."
        )
    n = lefts[0].shape[0]
    flats = [(x.reshape(n, -1), y.reshape(n, -1)) for x, y in zip(lefts, rights, strict=True)]
    rng = np.random.default_rng(_check_seed(seed))
    draws = rng.integers(0, n, size=(n_boot, n))
    weights = np.stack([np.bincount(row, minlength=n) for row in draws]) / n
    full = np.full((1, n), 1.0 / n)
    chunk = max(1, _CHUNK_VALUES // flats[0][0].shape[1])

    def evaluate(w: np.ndarray) -> np.ndarray:
        """Statistic for each row of subject weights ``w``: (k, n) -> (k,)."""
        out = np.zeros(len(w))
        for x, y in flats:
            for i in range(0, len(w), chunk):
                out[i : i + chunk] += stat(w[i : i + chunk] @ x, w[i : i + chunk] @ y)
        return out / len(flats)

    value = float(evaluate(full)[0])
    boot = evaluate(weights)
    tail = 100 * (1 - confidence) / 2
    low, high = np.nanpercentile(boot, [tail, 100 - tail]) if np.isfinite(boot).any() else (
        np.nan, np.nan)
    return Estimate(value, float(low), float(high), float(confidence), n, n_boot, name)
