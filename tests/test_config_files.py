"""Configs written by fmri_ica can be run again: YAML round trip, JSON files, the demo's."""

from __future__ import annotations

import json
import shutil

import pytest

from fmri_ica.cli import build_parser
from fmri_ica.cli._common import load_config_from_args
from fmri_ica.cli.demo import demo_config
from fmri_ica.config import load_config, write_config
from fmri_ica.exceptions import InvalidParameterError


@pytest.mark.parametrize("quick", [False, True])
def test_demo_config_round_trips_through_fmri_ica_run(tmp_path, quick):
    out = tmp_path / "demo"
    config = demo_config(out, seed=3, quick=quick)
    path = write_config(config, out / "config.yaml")
    assert load_config(path) == config
    # exactly what `fmri-ica run demo/config.yaml` reads
    args = build_parser().parse_args(["run", str(path)])
    assert load_config_from_args(args) == config


def test_written_config_moves_with_its_folder(tmp_path):
    """output and data.root inside the folder are stored relative to it."""
    config = demo_config(tmp_path / "a")
    write_config(config, tmp_path / "a" / "config.yaml")
    shutil.move(tmp_path / "a", tmp_path / "b")
    moved = load_config(tmp_path / "b" / "config.yaml")
    assert moved["output"] == str((tmp_path / "b").resolve())
    assert moved["data"]["root"] == str((tmp_path / "b" / "data").resolve())
    assert {k: v for k, v in moved.items() if k not in ("output", "data")} == {
        k: v for k, v in config.items() if k not in ("output", "data")
    }


def test_paths_outside_the_folder_stay_absolute(tmp_path):
    config = load_config(None, {"output": str(tmp_path / "out"), "data": {"root": "/data/HCP"}})
    path = write_config(config, tmp_path / "configs" / "c.yml")
    assert load_config(path) == config
    assert "root: /data/HCP" in path.read_text()


def test_json_configs_load(tmp_path):
    (tmp_path / "plain.json").write_text(json.dumps({"training": {"epochs": 2}}))
    assert load_config(tmp_path / "plain.json")["training"]["epochs"] == 2
    # the record every pipeline run writes to OUTPUT/config.json
    config = load_config(None, {"output": str(tmp_path), "training": {"epochs": 7}})
    (tmp_path / "config.json").write_text(json.dumps({"config": config, "versions": {"x": "1"}}))
    assert load_config(tmp_path / "config.json") == config


def test_json_config_with_unknown_key_is_refused(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"trainig": {"epochs": 2}}))
    with pytest.raises(InvalidParameterError, match="Did you mean 'training'"):
        load_config(tmp_path / "c.json")


def test_write_config_needs_a_yaml_name(tmp_path):
    with pytest.raises(InvalidParameterError, match="'path'"):
        write_config(load_config(), tmp_path / "c.json")
