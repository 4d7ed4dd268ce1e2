"""Fault corpus, configuration: every value is checked when the config is read, before any
work, and a bad one is one line naming the key, the value given and what is allowed (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from _faults import assert_one_line_error

# (case, YAML text, what the error line must name)
BAD = [
    ("lr negative", "training: {lr: -0.001}", ["'training.lr'", "-0.001", "> 0"]),
    ("lr zero", "training: {lr: 0}", ["'training.lr'", "> 0"]),
    ("lr not a number", "training: {lr: fast}", ["'training.lr'", "'fast'"]),
    ("lr nan", "training: {lr: .nan}", ["'training.lr'", "nan"]),
    ("seed a word", "seed: zero", ["'seed'", "'zero'", "integer >= 0"]),
    ("seed negative", "seed: -1", ["'seed'", "-1"]),
    ("seed fraction", "seed: 1.5", ["'seed'", "1.5"]),
    ("seed bool", "seed: true", ["'seed'", "True"]),
    ("split one string", 'samples: {split: "0.6,0.2,0.2"}', ["'samples.split'", "'0.6,0.2,0.2'", "[0.6, 0.2, 0.2]"]),
    ("split sum 0.9", "samples: {split: [0.5, 0.2, 0.2]}", ["'samples.split'", "summing to 1"]),
    ("split two numbers", "samples: {split: [0.6, 0.4]}", ["'samples.split'", "three"]),
    ("split a zero", "samples: {split: [0.8, 0, 0.2]}", ["'samples.split'", "positive"]),
    ("jobs zero", "parcellation: {jobs: 0}", ["'parcellation.jobs'", "0", ">= 1"]),
    ("model without kind", "models: {mine: {hidden_size: 8}}", ["'mine'", "'kind'", "models.mine.kind", "'lstm'"]),
    ("model kind unknown", "models: {mine: {kind: lstmm}}", ["'models.mine.kind'", "'lstmm'", "Did you mean 'lstm'"]),
    ("model option unknown", "models: {mine: {kind: ica, hiden_size: 8}}", ["'models.mine.hiden_size'", "Did you mean 'hidden_size'"]),
    ("model option of another kind", "models: {mine: {kind: lstm, r: 4}}", ["'models.mine.r'", "'lstm'"]),
    ("model dropout 1", "models: {mine: {kind: gru, dropout: 1}}", ["'models.mine.dropout'", "[0, 1)"]),
    ("model hidden_size 0", "models: {mine: {kind: lstm, hidden_size: 0}}", ["'models.mine.hidden_size'", ">= 1"]),
    ("model embedding unknown", "models: {mine: {kind: ica, embedding: max}}", ["'models.mine.embedding'", "'mean'", "'matrix'"]),
    ("model not a mapping", "models: {mine: lstm}", ["'models.mine'", "'lstm'", "'kind'"]),
    ("no models", "models: {}", ["'models'"]),
    ("model named linear", "models: {linear: {kind: lstm}}", ["'linear'"]),
    ("saliency method unknown", "saliency: {method: gradients}", ["'saliency.method'", "'gradients'", "Did you mean 'gradient'"]),
    ("top_k zero", "saliency: {top_k: 0}", ["'saliency.top_k'", "(0, 1]"]),
    ("top_k above 1", "saliency: {top_k: 1.5}", ["'saliency.top_k'", "1.5", "(0, 1]"]),
    ("top_k percent", 'saliency: {top_k: "10%"}', ["'saliency.top_k'", "'10%'"]),
    ("n_bins zero", "saliency: {n_bins: 0}", ["'saliency.n_bins'", ">= 1"]),
    ("per_subject not bool", "saliency: {per_subject: 2}", ["'saliency.per_subject'", "true or false"]),
    ("epochs zero", "training: {epochs: 0}", ["'training.epochs'", ">= 1"]),
    ("epochs fraction", "training: {epochs: 2.5}", ["'training.epochs'", "2.5"]),
    ("batch_size quoted", 'training: {batch_size: "32"}', ["'training.batch_size'", "'32'"]),
    ("weight_decay negative", "training: {weight_decay: -0.1}", ["'training.weight_decay'", ">= 0"]),
    ("selection unknown", "training: {selection: best_val}", ["'training.selection'", "'best'", "'last'"]),
    ("patience with selection last", "training: {patience: 3, selection: last}", ["'training.patience'", "'last'"]),
    ("selection best without validation", "training: {selection: best}\ncrossval: {val_folds: 0}",
     ["'training.selection'", "'crossval.val_folds'"]),
    ("folds 1", "crossval: {folds: 1}", ["'crossval.folds'", ">= 2"]),
    ("folds too few for validation", "crossval: {folds: 2, val_folds: 1}", ["'crossval.folds'", "at least 3"]),
    ("device a number", "training: {device: 0}", ["'training.device'", "'cuda:1'"]),
    ("layout unknown", "data: {layout: hpc}", ["'data.layout'", "Did you mean 'hcp'"]),
    ("t_r zero", "data: {t_r: 0}", ["'data.t_r'", "> 0"]),
    ("tasks a mapping", "data: {tasks: {MOTOR: 1}}", ["'data.tasks'", "list of labels"]),
    ("standardize unknown", "parcellation: {standardize: zscore}", ["'parcellation.standardize'", "'zscore_sample'"]),
    ("high_pass above low_pass", "parcellation: {high_pass: 0.1, low_pass: 0.01}",
     ["'parcellation.high_pass'", "'parcellation.low_pass'"]),
    ("confounds strategy unknown", "parcellation: {confounds_strategy: aroma}",
     ["'parcellation.confounds_strategy'", "'scrubbing'"]),
    ("window zero", "samples: {window: 0}", ["'samples.window'", ">= 1"]),
    ("mode unknown", "samples: {mode: window}", ["'samples.mode'", "Did you mean 'windows'"]),
    ("label condition with runs", "samples: {label: condition, mode: runs}", ["'samples.mode'", "'samples.label'"]),
    ("fdr 1", "sanity: {fdr: 1}", ["'sanity.fdr'", "(0, 1)"]),
    ("n_perm zero", "sanity: {n_perm: 0}", ["'sanity.n_perm'", ">= 1"]),
    ("report flag a number", "report: {surface: 1}", ["'report.surface'", "true or false"]),
    ("output a number", "output: 5", ["'output'", "5"]),
    ("unknown key", "training: {epoch: 3}", ["'training.epoch'", "Did you mean 'epochs'"]),
    ("value where a section belongs", "training: 3", ["'training'", "section"]),
]


@pytest.mark.parametrize(("case", "text", "names"), BAD, ids=[case for case, _, _ in BAD])
def test_bad_value_fails_at_once_naming_the_key(cli, write_config, tmp_path, case, text, names):
    path = write_config(text + f"\noutput: {tmp_path / 'out'}\n" if "output:" not in text else text)
    result = cli("run", path)
    assert_one_line_error(result, 2, *names, command="run")
    assert not (tmp_path / "out").exists()  # failed before any work, nothing written


def test_bad_value_from_set_fails_naming_the_key(cli, write_config, tmp_path):
    path = write_config({"output": str(tmp_path / "out")})
    result = cli("run", path, "--set", "saliency.top_k=2", "--stage", "samples")
    assert_one_line_error(result, 2, "'saliency.top_k'", "2")
    assert not (tmp_path / "out").exists()


def _accepted(cli, path, *options, out):
    """The config passed validation: the run got as far as the samples stage, which needs a
    parcellation (exit 3), and recorded its config."""
    result = cli("run", path, "--stage", "samples", *options)
    assert_one_line_error(result, 3, "parcellate")
    return json.loads((out / "config.json").read_text())["config"]


@pytest.mark.parametrize("text", ["lr: 1e-3", "lr: '1e-3'", "lr: 1.0e-3", "lr: 0.001"])
def test_yaml_numbers_are_accepted_in_every_spelling(cli, write_config, tmp_path, text):
    path = write_config(f"output: {tmp_path / 'out'}\ntraining:\n  {text}\n")
    config = _accepted(cli, path, out=tmp_path / "out")
    assert config["training"]["lr"] == 0.001 and isinstance(config["training"]["lr"], float)


def test_set_option_number_is_accepted(cli, write_config, tmp_path):
    path = write_config({"output": str(tmp_path / "out")})
    config = _accepted(cli, path, "--set", "training.lr=1e-4", "--set", "training.epochs=5.0",
                       out=tmp_path / "out")
    assert config["training"]["lr"] == 1e-4 and config["training"]["epochs"] == 5
    assert type(config["training"]["epochs"]) is int


def test_valid_values_are_left_as_written(write_config, tmp_path):
    """Validation converts only what it must: stage keys hash these values."""
    from fmri_ica.config import DEFAULTS, load_config

    path = write_config({"training": {"lr": 1, "weight_decay": 0}, "samples": {"split": [0.5, 0.25, 0.25]}})
    config = load_config(path)
    assert config["training"]["lr"] == 1 and type(config["training"]["lr"]) is int
    assert config["samples"]["split"] == [0.5, 0.25, 0.25]
    assert load_config() == DEFAULTS


def test_numpy_values_are_shown_as_plain_numbers():
    import numpy as np

    from fmri_ica.config import load_config
    from fmri_ica.exceptions import InvalidParameterError

    with pytest.raises(InvalidParameterError) as error:
        load_config(None, {"samples": {"split": np.array([0.5, 0.2, 0.2])}})
    assert "[0.5, 0.2, 0.2]" in str(error.value) and "np." not in str(error.value)
    with pytest.raises(InvalidParameterError) as error:
        load_config(None, {"training": {"epochs": np.int64(0)}})
    assert "'training.epochs': 0." in str(error.value)


def test_pipeline_validates_a_config_given_as_a_dict(tmp_path):
    from fmri_ica.config import load_config
    from fmri_ica.exceptions import InvalidParameterError
    from fmri_ica.pipeline import run_pipeline

    config = load_config(None, {"output": str(tmp_path / "out")})
    config["saliency"]["method"] = "saliency"
    with pytest.raises(InvalidParameterError, match="'saliency.method'"):
        run_pipeline(config, stages=("samples",))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["missing", "unparsable", "a list"])
def test_unusable_config_file_is_an_input_error_naming_it(cli, tmp_path, case):
    path = tmp_path / "c.yaml"
    if case == "unparsable":
        path.write_text("training: {lr: [\n")
    elif case == "a list":
        path.write_text("- 1\n- 2\n")
    assert_one_line_error(cli("run", path), 3, "c.yaml")


def test_static_choices_match_the_modules_that_own_them():
    """config.py keeps copies (no torch at config time); they must not drift."""
    from fmri_ica import config
    from fmri_ica.data.confounds import FMRIPREP_STRATEGIES
    from fmri_ica.data.layouts import LAYOUTS
    from fmri_ica.data.parcellation import STANDARDIZE
    from fmri_ica.models import factory
    from fmri_ica.saliency.methods import METHODS

    assert config.MODEL_KINDS == factory.MODEL_KINDS
    assert config.MODEL_CHOICES == factory._CHOICES
    assert config.SALIENCY_METHODS == tuple(METHODS)
    assert config.LAYOUTS == LAYOUTS
    assert config.STANDARDIZE == STANDARDIZE
    assert config.CONFOUND_STRATEGIES == FMRIPREP_STRATEGIES


def test_every_model_option_value_the_config_accepts_builds(tmp_path):
    """What validation lets through, the model factory accepts."""
    from fmri_ica.config import MODEL_KINDS, load_config
    from fmri_ica.models import build_model

    for kind, options in MODEL_KINDS.items():
        spec = {"kind": kind, **options, "hidden_size": 3}
        config = load_config(None, {"models": {"m": spec}})
        settings = dict(config["models"]["m"])
        build_model(settings.pop("kind"), 4, 2, **settings)


def test_reading_a_config_does_not_import_torch(tmp_path):
    code = ("import sys, fmri_ica.config as c; c.load_config(None, {'training': {'lr': '1e-3'}}); "
            "sys.exit('torch' in sys.modules or 'nibabel' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
