"""Shared fixtures: tiny, deliberately unequal shapes so that axis mix-ups fail."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    """Keep torch on one thread (module fixtures included): tests run beside other work."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def affine():
    """A 3 mm grid affine with an unusual origin (not the identity)."""
    return np.array(
        [[-3.0, 0, 0, 30.0], [0, 3.0, 0, -40.0], [0, 0, 3.0, -20.0], [0, 0, 0, 1.0]]
    )


@pytest.fixture
def img_4d(rng, affine):
    """A (7, 8, 9, 20) float32 BOLD-like image with a 3 mm affine and TR 2.0 s."""
    import nibabel as nib

    data = rng.standard_normal((7, 8, 9, 20)).astype("float32") + 100.0
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 2.0
    return img


@dataclass
class TinyAtlas:
    """The attributes of fmri_ica.data.atlases.Atlas that plotting and projection use."""

    name: str
    kind: str
    img: object  # nibabel image
    labels: object  # pandas DataFrame: index, name, ...

    @property
    def n_regions(self):
        return len(self.labels)


@pytest.fixture
def make_atlas():
    """Factory ``make_atlas(img, labels, name="tiny", kind="labels")`` of stand-in atlases."""

    def make(img, labels, name="tiny", kind="labels"):
        return TinyAtlas(name, kind, img, labels)

    return make
