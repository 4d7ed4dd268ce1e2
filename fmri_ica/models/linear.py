"""A linear reference: L2 logistic regression on flattened (time x region) windows.

A calibration study on fMRI-like data found this strong for both accuracy and maps
(../docs: EVALUATION.md), so reports show it next to the recurrent models: users see what
the recurrent model adds.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LinearBaseline"]


class LinearBaseline:
    """Multinomial logistic regression on windows flattened to ``time * region`` features.

    Parameters
    ----------
    C : float, default=0.1
        Inverse L2 strength (scikit-learn's ``C``).
    max_iter : int, default=2000
    seed : int, default=0

    Attributes
    ----------
    model_ : sklearn.linear_model.LogisticRegression
    shape_ : tuple (time, region)
    """

    def __init__(self, C: float = 0.1, max_iter: int = 2000, seed: int = 0):
        self.C = C
        self.max_iter = max_iter
        self.seed = seed

    def fit(self, x: np.ndarray, y: np.ndarray) -> LinearBaseline:
        """x: (n, time, region) windows of one length; y: (n,) class indices."""
        from sklearn.linear_model import LogisticRegression

        self.shape_ = x.shape[1:]
        self.model_ = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.seed)
        self.model_.fit(x.reshape(len(x), -1), y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class index per window, (n,)."""
        return self.model_.predict(x.reshape(len(x), -1))

    def weight_maps(self, n_classes: int | None = None) -> np.ndarray:
        """|weights| per class as (class, time, region) maps, row i for class index i.

        Classes absent from the training data (up to ``n_classes``) get all-zero maps; in a
        binary problem both classes share the one weight vector.
        """
        coef = np.abs(self.model_.coef_)
        seen = self.model_.classes_.astype(int)
        if coef.shape[0] == 1:
            coef = np.repeat(coef, 2, axis=0)
        maps = np.zeros((max(n_classes or 0, seen.max() + 1), coef.shape[1]))
        maps[seen] = coef
        return maps.reshape(len(maps), *self.shape_)
