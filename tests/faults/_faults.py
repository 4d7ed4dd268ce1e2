"""Assertions and tiny inputs shared by the fault corpus."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from _fixtures_layouts import AFFINE


def assert_one_line_error(result, code: int, *names: str, command: str | None = None) -> str:
    """The command failed with ``code`` and one error line on stderr naming every ``names``
    (file, key, value), with no traceback and no NumPy repr; returns that line."""
    assert result.code == code, (result.code, result.err)
    assert "Traceback" not in result.err, result.err
    lines = [line for line in result.err.splitlines() if line.startswith("fmri-ica ")]
    assert len(lines) == 1, result.err
    line = lines[0]
    assert ": error: " in line or line.endswith(": interrupted"), line
    if command:
        assert line.startswith(f"fmri-ica {command}: "), line
    for name in names:
        assert str(name) in line, (name, line)
    assert "np.int" not in line and "np.float" not in line and "np.str" not in line, line
    return line


def labels_atlas(folder: Path) -> Path:
    """A 3-region label atlas on the (7, 8, 9) grid of the HCP fixture, with names."""
    data = np.zeros((7, 8, 9), np.int16)
    data[:3, :4] = 3
    data[3:, :4] = 7
    data[:, 4:, :5] = 9
    path = folder / "toy.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    pd.DataFrame({"index": [3, 7, 9], "name": ["front", "back", "top"]}).to_csv(
        folder / "toy.tsv", sep="\t", index=False)
    return path


def tiny_config(root: Path, atlas: Path, output: Path) -> dict:
    return {
        "output": str(output), "data": {"root": str(root)}, "atlas": {"name": str(atlas)},
        "samples": {"window": 10, "step": 5}, "crossval": {"folds": 2},
        "models": {"tiny": {"kind": "lstm", "hidden_size": 2}}, "training": {"epochs": 1},
        "sanity": {"n_untrained": 1, "n_boot": 10, "n_perm": 10},
    }
