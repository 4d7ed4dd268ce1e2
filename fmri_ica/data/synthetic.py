"""The synthetic box data sets of Ismail et al. (NeurIPS 2019), with their masks.

Each sample is ``n_time x n_features`` (100 x 100) of N(0, 1) noise; the label y is
-1 or +1 with equal probability (stored as class 0 / 1), and the cells of the
sample's informative box(es) are drawn from N(y, 1) instead. Box ranges are
half-open ``[start, stop)`` in (time, feature):

============== ================================================ ============
name           boxes (time; features)                           train / test
============== ================================================ ============
earlier        t 0-30; f 10-90                                  1000 / 300
middle         t 20-80; f 20-80                                 1000 / 300
latter         t 70-100; f 10-90                                1000 / 300
3_earlier      t 0-40; f 0-30, 35-65, 70-100 (three boxes)      1000 / 300
3_middle       t 25-65; f 0-30, 35-65, 70-100 (three boxes)     1000 / 300
mixed          one of 7 boxes per sample (:data:`MIXED_BOXES`)  8000 / 1000
moving_S       t S-(S+60); f 20-80, S in 0, 10, 20, 30, 40      1000 / 200
============== ================================================ ============
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from .._utils import check_option
from ..exceptions import InvalidParameterError

__all__ = [
    "DATASETS",
    "DISPLAY_NAMES",
    "MIXED_BOXES",
    "PAPER_SIZES",
    "SyntheticData",
    "boxes",
    "make_dataset",
    "make_split",
]

Box = tuple[tuple[int, int], tuple[int, int]]

_BANDS = ((0, 30), (35, 65), (70, 100))
MIXED_BOXES: tuple[Box, ...] = (
    ((5, 65), (5, 65)),
    ((5, 65), (35, 95)),
    ((5, 65), (20, 80)),
    ((35, 95), (5, 65)),
    ((35, 95), (35, 95)),
    ((35, 95), (20, 80)),
    ((20, 80), (20, 80)),
)
MOVING_STARTS = (0, 10, 20, 30, 40)
_FIXED: dict[str, tuple[Box, ...]] = {
    "earlier": (((0, 30), (10, 90)),),
    "middle": (((20, 80), (20, 80)),),
    "latter": (((70, 100), (10, 90)),),
    "3_earlier": tuple(((0, 40), band) for band in _BANDS),
    "3_middle": tuple(((25, 65), band) for band in _BANDS),
}
for _start in MOVING_STARTS:
    _FIXED[f"moving_{_start}"] = (((_start, _start + 60), (20, 80)),)

DATASETS = ("earlier", "middle", "latter", "3_earlier", "3_middle", "mixed") + tuple(
    f"moving_{s}" for s in MOVING_STARTS
)
DISPLAY_NAMES = {
    "earlier": "Earlier",
    "middle": "Middle",
    "latter": "Latter",
    "3_earlier": "3 Earlier",
    "3_middle": "3 Middle",
    "mixed": "Mixed",
    **{f"moving_{s}": f"Moving {s}" for s in MOVING_STARTS},
}
PAPER_SIZES = {name: (1000, 300) for name in _FIXED}
PAPER_SIZES.update({f"moving_{s}": (1000, 200) for s in MOVING_STARTS})
PAPER_SIZES["mixed"] = (8000, 1000)


@dataclass(frozen=True)
class SyntheticData:
    """One synthetic data set.

    Attributes
    ----------
    name : str
    x : ndarray (samples, time, features), float32
    y : ndarray (samples,), int64 in {0, 1} (paper labels -1 -> 0, +1 -> 1)
    mask : ndarray (samples, time, features), bool: the informative cells
    box : ndarray (samples,), int: index of the sample's box in :data:`MIXED_BOXES`
        (``mixed``), else 0
    seed : int
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray
    box: np.ndarray
    seed: int

    def __len__(self) -> int:
        return len(self.y)


def boxes(name: str) -> tuple[Box, ...]:
    """The box(es) of a data set as ((t0, t1), (f0, f1)), half-open.

    For ``mixed``: the 7 alternatives, one of which each sample gets.
    """
    check_option("name", name, DATASETS)
    return MIXED_BOXES if name == "mixed" else _FIXED[name]


def make_dataset(
    name: str, n_samples: int, *, seed: int = 0, n_time: int = 100, n_features: int = 100
) -> SyntheticData:
    """Draw ``n_samples`` samples of a paper data set.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    n_samples : int
    seed : int, default=0
        The same (name, n_samples, seed) always gives the same data.
    n_time, n_features : int, default=100
        The boxes are defined on 100 x 100; both must be at least 100.

    Returns
    -------
    SyntheticData
    """
    check_option("name", name, DATASETS)
    if not isinstance(n_samples, int) or n_samples < 1:
        raise InvalidParameterError(
            f"Invalid value for 'n_samples': {n_samples!r}. Use an int >= 1."
        )
    if n_time < 100 or n_features < 100:
        raise InvalidParameterError(
            f"'n_time' and 'n_features' must be >= 100 (the paper's boxes span 0-100); "
            f"got {n_time} and {n_features}."
        )
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    x = rng.standard_normal((n_samples, n_time, n_features)).astype(np.float32)
    y = rng.integers(0, 2, n_samples)
    options = boxes(name)
    if name == "mixed":
        chosen = rng.integers(0, len(options), n_samples)
        per_sample = [(options[c],) for c in chosen]
    else:
        chosen = np.zeros(n_samples, dtype=int)
        per_sample = [options] * n_samples
    mask = np.zeros(x.shape, dtype=bool)
    for i, sample_boxes in enumerate(per_sample):
        for (t0, t1), (f0, f1) in sample_boxes:
            mask[i, t0:t1, f0:f1] = True
    # Box cells are N(y, 1): shift the noise by the label mean (-1 or +1).
    x += mask * (2.0 * y[:, None, None] - 1.0).astype(np.float32)
    return SyntheticData(name, x, y.astype(np.int64), mask, chosen, seed)


def make_split(
    name: str, n_train: int | None = None, n_test: int | None = None, *, seed: int = 0
) -> tuple[SyntheticData, SyntheticData]:
    """Independent train and test sets; sizes default to the paper's (:data:`PAPER_SIZES`)."""
    check_option("name", name, DATASETS)
    default_train, default_test = PAPER_SIZES[name]
    train = make_dataset(name, n_train or default_train, seed=2 * seed)
    test = make_dataset(name, n_test or default_test, seed=2 * seed + 1)
    return train, test
