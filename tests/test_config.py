"""Config files: defaults, both formats, and errors that say what to fix."""

from __future__ import annotations

import pytest

from fmri_ica.config import DEFAULTS, config_hash, load_config
from fmri_ica.exceptions import InputDataError, InvalidParameterError


def test_yaml_and_toml_give_the_same_config(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "output: out\ndata:\n  root: scans\n  tasks: [MOTOR, WM]\n"
        "models:\n  mine: {kind: ica, hidden_size: 8}\ntraining:\n  epochs: 3\n"
    )
    (tmp_path / "c.toml").write_text(
        'output = "out"\n[data]\nroot = "scans"\ntasks = ["MOTOR", "WM"]\n'
        '[models.mine]\nkind = "ica"\nhidden_size = 8\n[training]\nepochs = 3\n'
    )
    yaml_config, toml_config = load_config(tmp_path / "c.yaml"), load_config(tmp_path / "c.toml")
    assert yaml_config == toml_config
    assert yaml_config["data"]["root"] == str(tmp_path / "scans")  # relative to the file
    assert yaml_config["output"] == str(tmp_path / "out")
    assert yaml_config["models"] == {"mine": {"kind": "ica", "hidden_size": 8}}  # replaces defaults
    assert yaml_config["training"]["lr"] == DEFAULTS["training"]["lr"]  # defaults kept


def test_unknown_key_suggests_the_right_one(tmp_path):
    (tmp_path / "c.yaml").write_text("training:\n  epoch: 3\n")
    with pytest.raises(InvalidParameterError, match=r"training\.epoch.*Did you mean 'epochs'"):
        load_config(tmp_path / "c.yaml")


def test_missing_or_broken_file_names_it(tmp_path):
    with pytest.raises(InputDataError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.toml").write_text("[data\n")
    with pytest.raises(InputDataError, match="bad.toml"):
        load_config(tmp_path / "bad.toml")
    (tmp_path / "c.yaml").write_text("training: 3\n")
    with pytest.raises(InvalidParameterError, match="section"):
        load_config(tmp_path / "c.yaml")


def test_hash_changes_with_content_only():
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_command_line_overrides_change_one_model_value(tmp_path):
    from fmri_ica.cli import build_parser
    from fmri_ica.cli._common import load_config_from_args

    (tmp_path / "c.yaml").write_text("models:\n  ica: {kind: ica, hidden_size: 8}\n  lstm: {kind: lstm}\n")
    args = build_parser().parse_args(
        ["run", str(tmp_path / "c.yaml"), "--set", "models.ica.hidden_size=128", "--set", "training.epochs=2"]
    )
    config = load_config_from_args(args)
    assert config["models"] == {"ica": {"kind": "ica", "hidden_size": 128}, "lstm": {"kind": "lstm"}}
    assert config["training"]["epochs"] == 2
    args = build_parser().parse_args(["run", str(tmp_path / "c.yaml"), "--set", "training.epoch=2"])
    with pytest.raises(InvalidParameterError, match="Did you mean 'epochs'"):
        load_config_from_args(args)


def test_a_model_may_set_its_own_input_noise_and_a_bad_one_is_named():
    config = load_config(None, {"models": {"m": {"kind": "gru", "input_noise": "0.5"}}})
    assert config["models"]["m"]["input_noise"] == 0.5
    with pytest.raises(InvalidParameterError, match=r"models\.m\.input_noise"):
        load_config(None, {"models": {"m": {"kind": "ica", "input_noise": -1}}})
    with pytest.raises(InvalidParameterError, match="input_noise"):  # listed among the options
        load_config(None, {"models": {"m": {"kind": "lstm", "input_nois": 1}}})
