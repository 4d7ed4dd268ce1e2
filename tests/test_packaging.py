"""The project's set-up files agree with each other."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch", "isal": "python-isal"}


def _name_and_spec(requirement: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement)
    return match.group(1).lower().replace("_", "-"), match.group(2).replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_name_and_spec(r) for r in project["dependencies"])
    for extra in ("test", "fast"):
        wanted.update(_name_and_spec(r) for r in project["optional-dependencies"][extra])
    wanted["python"] = project["requires-python"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = dict(_name_and_spec(d) for d in env["dependencies"] if isinstance(d, str) and d != "pip")
    expected = {CONDA_NAMES.get(k, k): v for k, v in wanted.items()}
    assert conda == expected


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^```(?:bash|sh)\n(.+?)\n```", readme, flags=re.M | re.S)
    assert len(commands) >= 2, "README must start with the two set-up commands"
    test_command = commands[1].strip()
    assert test_command in (ROOT / ".ci" / "run").read_text()
    assert "torch==" in commands[0] and "torch==" in test_command


def test_readme_first_line_says_what_the_name_means():
    first = (ROOT / "README.md").read_text().splitlines()[0]
    assert "input-cell attention" in first and "not independent component analysis" in first


def test_cli_help_lists_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "fmri_ica.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "fmri-ica" in out


def test_atomic_writes_follow_the_umask_and_leave_nothing_on_failure(tmp_path):
    import os

    import pytest

    from fmri_ica._utils import atomic_path, write_json

    previous = os.umask(0o022)
    try:
        path = write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "b.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz")
        tmp.write_text("partial")
        raise RuntimeError("crash")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
