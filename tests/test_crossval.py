"""Tests of fmri_ica.training.crossval: subject-wise folds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fmri_ica.exceptions import InputDataError, InvalidParameterError
from fmri_ica.training import fold_table, subject_folds


def cohort(n_subjects=13, seed=0):
    """Per-sample subject labels: unequal sample counts per subject, shuffled order."""
    gen = np.random.default_rng(seed)
    labels = np.repeat([f"sub-{i:02d}" for i in range(n_subjects)], gen.integers(1, 6, n_subjects))
    return gen.permutation(labels)


@pytest.mark.parametrize(("n_folds", "n_val_folds"), [(5, 1), (4, 2), (3, 0)])
def test_every_subject_is_tested_once_and_never_in_two_roles(n_folds, n_val_folds):
    subjects = cohort()
    folds = subject_folds(subjects, n_folds, seed=3, n_val_folds=n_val_folds)
    assert len(folds) == n_folds
    tested = np.concatenate([fold["test"] for fold in folds])
    assert sorted(tested.tolist()) == list(range(len(subjects)))  # each sample tested once
    for k, fold in enumerate(folds):
        assert set(fold) == {"train", "val", "test"}
        # the three roles cover every sample, and no subject is in two of them
        assert sorted(np.concatenate(list(fold.values())).tolist()) == list(range(len(subjects)))
        roles = {role: set(subjects[index]) for role, index in fold.items()}
        assert not roles["train"] & roles["val"] and not roles["train"] & roles["test"]
        assert not roles["val"] & roles["test"]
        assert len(roles["test"]) in (13 // n_folds, 13 // n_folds + 1)  # balanced groups
        assert (len(roles["val"]) == 0) == (n_val_folds == 0)
        # fold k validates on the groups fold k + 1 .. k + n_val_folds test
        later = [set(subjects[folds[(k + j) % n_folds]["test"]]) for j in range(1, n_val_folds + 1)]
        assert roles["val"] == set().union(*later)


def test_folds_are_seeded_and_ignore_sample_order():
    subjects = cohort()
    a, b = subject_folds(subjects, 4, seed=1), subject_folds(subjects, 4, seed=1)
    assert all(np.array_equal(x[r], y[r]) for x, y in zip(a, b, strict=True) for r in x)
    other = subject_folds(subjects, 4, seed=2)
    assert any(not np.array_equal(x["test"], y["test"]) for x, y in zip(a, other, strict=True))
    # Reordering the samples gives the same subject groups.
    order = np.random.default_rng(0).permutation(len(subjects))
    shuffled = subject_folds(subjects[order], 4, seed=1)
    for x, y in zip(a, shuffled, strict=True):
        assert set(subjects[x["test"]]) == set(subjects[order][y["test"]])


def test_too_few_subjects_and_bad_parameters_say_what_is_needed():
    with pytest.raises(InputDataError, match="at least 5 subjects.*found 4"):
        subject_folds(["a", "b", "c", "d"], 5)
    with pytest.raises(InvalidParameterError, match="'n_folds'.*>= 4"):
        subject_folds(cohort(), 3, n_val_folds=2)
    with pytest.raises(InvalidParameterError, match="'n_val_folds'"):
        subject_folds(cohort(), 5, n_val_folds=-1)
    with pytest.raises(InvalidParameterError, match="'subjects'"):
        subject_folds(np.zeros((4, 2)), 2)


def test_fold_table_lists_subjects_json_ready():
    subjects = cohort(7)
    folds = subject_folds(subjects, 3, seed=0)
    table = json.loads(json.dumps(fold_table(subjects, folds)))
    assert [row["fold"] for row in table] == [0, 1, 2]
    for row, fold in zip(table, folds, strict=True):
        for role in ("train", "val", "test"):
            assert row[role] == sorted(set(subjects[fold[role]]))
            assert row["n_samples"][role] == len(fold[role])
    with pytest.raises(InvalidParameterError, match="'folds'"):
        fold_table(subjects[:3], folds)
