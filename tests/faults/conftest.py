"""Fixtures of the fault corpus: the CLI run in-process, and a tiny parcellated data set."""

from __future__ import annotations

import json
import os
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
def cli(capsys, request):
    """``cli(*argv)``: ``fmri-ica -q ARGV`` in this process -> Result(code, out, err).

    With FMRI_ICA_FAULT_TABLE=FILE every call appends (test, exit code, error line) to FILE as
    JSON lines: the corpus table of the closing notes (``tests/faults/table.py`` prints it)."""
    from fmri_ica.cli import main

    def run(*argv) -> Result:
        capsys.readouterr()
        try:
            code = main(["-q", *map(str, argv)])
        except SystemExit as stop:
            code = stop.code
        out, err = capsys.readouterr()
        _record(request.node.nodeid, argv, code, err)
        return Result(code, out, err)

    return run


def _record(test: str, argv, code, err: str) -> None:
    target = os.environ.get("FMRI_ICA_FAULT_TABLE")
    if target:
        line = next((x for x in err.splitlines() if x.startswith("fmri-ica ")), "")
        with open(target, "a") as handle:
            handle.write(json.dumps({"test": test, "command": str(argv[0]) if argv else "",
                                     "code": code, "message": line}) + "\n")


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
