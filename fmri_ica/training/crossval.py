"""Subject-wise cross-validation folds: every subject tested once, never in two roles.

On small cohorts (10-16 subjects) one fixed train/validation/test split says little: a
test set of 3 subjects is noise. Rotating the test group over all subjects uses each
subject's data for testing exactly once, and keeps subjects apart within each fold.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..exceptions import InputDataError, InvalidParameterError

__all__ = ["subject_folds", "fold_table"]

ROLES = ("train", "val", "test")


def subject_folds(
    subjects, n_folds: int = 5, *, seed: int = 0, n_val_folds: int = 1
) -> list[dict[str, np.ndarray]]:
    """Sample indices of ``n_folds`` subject-wise train/validation/test folds.

    The distinct subjects are shuffled with ``seed`` and dealt into ``n_folds`` groups
    whose sizes differ by at most one. Fold ``k`` tests group ``k``, validates on the
    next ``n_val_folds`` groups (``k + 1 .. k + n_val_folds``, modulo ``n_folds``) and
    trains on the others. So every subject is tested in exactly one fold and no subject
    plays two roles in a fold.

    Parameters
    ----------
    subjects : array-like, shape (n_samples,)
        Subject label of each sample (e.g. ``SampleSet.subjects``).
    n_folds : int, default=5
        Number of folds (and of subject groups); at least ``n_val_folds + 2``.
    seed : int, default=0
        Seeds the shuffling of subjects (``numpy.random.default_rng``).
    n_val_folds : int, default=1
        Subject groups used for validation in each fold; 0 gives empty ``val`` arrays.

    Returns
    -------
    list of dict of str -> ndarray of int
        One dict per fold with keys ``train``, ``val``, ``test``: sorted sample indices.

    Raises
    ------
    InvalidParameterError
        ``n_folds``, ``n_val_folds`` or ``seed`` out of range, or ``subjects`` not 1-D.
    InputDataError
        Fewer distinct subjects than ``n_folds`` (each group needs one).

    Examples
    --------
    >>> folds = subject_folds(["a", "a", "b", "c", "d"], n_folds=3, seed=0)
    >>> sorted(int(i) for fold in folds for i in fold["test"])
    [0, 1, 2, 3, 4]
    """
    labels = _check_subjects(subjects)
    _check_int("n_val_folds", n_val_folds, 0)
    _check_int("n_folds", n_folds, n_val_folds + 2, " (n_val_folds + 2: test, validation, train)")
    _check_int("seed", seed, 0)
    groups = _subject_groups(labels, n_folds, seed, n_val_folds)
    folds = []
    for k in range(n_folds):
        roles = _group_roles(k, n_folds, n_val_folds)
        folds.append({role: _samples_of(labels, groups, roles[role]) for role in ROLES})
    return folds


def fold_table(subjects, folds: list[dict[str, np.ndarray]]) -> list[dict]:
    """The subjects and sample counts of each fold, JSON-ready (write it next to outputs).

    Parameters
    ----------
    subjects : array-like, shape (n_samples,)
        The subject labels ``folds`` was built from.
    folds : list of dict
        As returned by :func:`subject_folds` (any dict of role -> sample indices).

    Returns
    -------
    list of dict
        Per fold: ``fold`` (0-based), then for each role its sorted subject labels
        (``train``, ``val``, ``test``: lists of str) and ``n_samples`` (dict role -> int).

    Examples
    --------
    >>> subjects = ["a", "b", "c", "d"]
    >>> fold_table(subjects, subject_folds(subjects, 4))[0]["n_samples"]
    {'train': 2, 'val': 1, 'test': 1}
    """
    labels = _check_subjects(subjects)
    table = []
    for k, fold in enumerate(folds):
        row: dict = {"fold": k}
        for role, index in fold.items():
            index = np.asarray(index, dtype=np.int64)
            if index.size and (index.min() < 0 or index.max() >= len(labels)):
                raise InvalidParameterError(
                    f"Invalid value for 'folds': fold {k} {role!r} holds sample index "
                    f"{int(index.max())}, but 'subjects' has {len(labels)} samples. Pass the "
                    "subjects the folds were built from."
                )
            row[role] = sorted(np.unique(labels[index]).tolist())
        row["n_samples"] = {role: int(len(index)) for role, index in fold.items()}
        table.append(row)
    return table


def _check_subjects(subjects) -> np.ndarray:
    labels = np.asarray(subjects).astype(str)
    if labels.ndim != 1:
        raise InvalidParameterError(
            f"Invalid value for 'subjects': expected one label per sample, shape (n_samples,); "
            f"got shape {labels.shape}."
        )
    return labels


def _check_int(name: str, value, minimum: int, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidParameterError(
            f"Invalid value for {name!r}: {value!r}. Expected an integer >= {minimum}{why}."
        )


def _subject_groups(labels, n_folds: int, seed: int, n_val_folds: int) -> list[np.ndarray]:
    unique = np.unique(labels)
    if len(unique) < n_folds:
        raise InputDataError(
            f"subject_folds needs at least {n_folds} subjects for n_folds={n_folds} (one "
            f"subject group per fold, {n_val_folds} for validation, one for testing and the "
            f"rest for training); found {len(unique)}. Lower 'n_folds' to at most "
            f"{len(unique)} or add subjects."
        )
    order = np.random.default_rng(seed).permutation(unique)
    return np.array_split(order, n_folds)


def _samples_of(labels: np.ndarray, groups: list[np.ndarray], chosen: list[int]) -> np.ndarray:
    members = [groups[g] for g in chosen]
    if not members:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.isin(labels, np.concatenate(members)))


def _group_roles(k: int, n_folds: int, n_val_folds: int) -> dict[str, list[int]]:
    val = [(k + 1 + j) % n_folds for j in range(n_val_folds)]
    train = [g for g in range(n_folds) if g != k and g not in val]
    return {"train": train, "val": val, "test": [k]}
