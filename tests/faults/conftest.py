"""Fixtures of the fault corpus: the CLI run in-process, and a tiny parcellated data set."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from _faults import labels_atlas, tiny_config
from _fixtures_layouts import make_hcp_tree


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """``cli(*argv)``: ``fmri-ica -q ARGV`` in this process -> Result(code, out, err)."""
    from fmri_ica.cli import main

    def run(*argv) -> Result:
        capsys.readouterr()
        try:
            code = main(["-q", *map(str, argv)])
        except SystemExit as stop:
            code = stop.code
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


@pytest.fixture
def write_config(tmp_path):
    """``write_config(text_or_dict, name="c.yaml")`` -> path (a YAML text is written as is)."""

    def write(content, name: str = "c.yaml") -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
        return path

    return write


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """Parcellate and samples stages done on 2 subjects x 2 tasks of 20 frames (a few
    seconds); returns the config path. Copy the output before changing it."""
    from fmri_ica.cli import main

    folder = tmp_path_factory.mktemp("tiny")
    root = make_hcp_tree(folder, subjects=("s1", "s2"), tasks=("MOTOR", "WM"), dirs=("LR",))
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(root, labels_atlas(folder), folder / "out")))
    assert main(["-q", "run", str(config), "--stage", "parcellate", "--stage", "samples"]) == 0
    return config


@pytest.fixture
def pipeline_copy(tiny_pipeline, tmp_path):
    """A private copy of the tiny pipeline's output: (config path, output folder)."""
    out = tmp_path / "out"
    shutil.copytree(tiny_pipeline.parent / "out", out)
    return tiny_pipeline, out
