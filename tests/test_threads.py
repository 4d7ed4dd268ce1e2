"""The ``threads`` setting reaches torch (pipeline, CLI, TaskDecoder), and bad values are named."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import fmri_ica.models
import fmri_ica.pipeline
import fmri_ica.training
from fmri_ica._threads import check_threads, resolve_threads
from fmri_ica.cli import build_parser
from fmri_ica.cli._common import load_config_from_args
from fmri_ica.config import load_config
from fmri_ica.estimator import TaskDecoder
from fmri_ica.exceptions import InvalidParameterError


@pytest.fixture
def one_thread():
    """The caller's setting (1, as conftest keeps it), put back whatever a test does."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _toy(n=24, t=9, r=5):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, t, r)).astype(np.float32), np.arange(n) % 2


def _threads_per_forward(monkeypatch) -> list[int]:
    """torch's threads at every forward pass of the models TaskDecoder builds."""
    seen: list[int] = []
    real = fmri_ica.models.build_model

    def build(*args, **kwargs):
        model = real(*args, **kwargs)
        model.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
        return model

    monkeypatch.setattr(fmri_ica.models, "build_model", build)
    return seen


def test_decoder_runs_on_its_threads_and_restores_the_callers(monkeypatch, one_thread):
    seen = _threads_per_forward(monkeypatch)
    x, y = _toy()
    decoder = TaskDecoder("lstm", model_options={"hidden_size": 4}, epochs=2, batch_size=8,
                          device="cpu", progress=False, threads=2).fit(x, y)
    assert seen and set(seen) == {2}  # training and validation
    assert torch.get_num_threads() == 1
    seen.clear()
    decoder.predict(x)
    decoder.explain(x[:3])
    assert seen and set(seen) == {2}
    assert torch.get_num_threads() == 1
    assert decoder.get_params()["threads"] == 2
    seen.clear()
    decoder.set_params(threads=None).predict(x)  # None: torch's own setting
    assert seen and set(seen) == {1}


def test_decoder_restores_threads_when_training_fails(monkeypatch, one_thread):
    def broken(*args, **kwargs):
        assert torch.get_num_threads() == 2
        raise RuntimeError("training failed")

    monkeypatch.setattr(fmri_ica.training, "fit", broken)
    with pytest.raises(RuntimeError, match="training failed"):
        TaskDecoder("lstm", epochs=1, progress=False, threads=2).fit(*_toy())
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("bad", [0, -2, 1.5, "many", True])
def test_decoder_names_a_bad_threads_value(bad, one_thread):
    with pytest.raises(InvalidParameterError, match=r"'threads'.*positive integer"):
        TaskDecoder("lstm", epochs=1, progress=False, threads=bad).fit(*_toy())
    assert torch.get_num_threads() == 1


def test_pipeline_trains_on_the_configured_threads(monkeypatch, tmp_path, one_thread):
    seen = []
    monkeypatch.setattr(fmri_ica.pipeline, "train_stage",
                        lambda *args, **kwargs: seen.append(torch.get_num_threads()))
    config = load_config(None, {"output": str(tmp_path), "threads": 2})
    fmri_ica.pipeline.run_pipeline(config, stages=("train",))
    assert seen == [2]


@pytest.mark.parametrize("bad", [0, "many", -1])
def test_pipeline_names_a_bad_threads_value(bad, tmp_path, one_thread):
    config = load_config(None, {"output": str(tmp_path)})
    config["threads"] = bad
    with pytest.raises(InvalidParameterError, match="'threads'"):
        fmri_ica.pipeline.run_pipeline(config, stages=("train",))
    assert torch.get_num_threads() == 1


def test_parcellate_only_runs_check_threads_too(tmp_path, one_thread):
    # such a run leaves torch unimported when it can, but checks the value all the same
    config = load_config(None, {"output": str(tmp_path)})
    config["threads"] = 0
    with pytest.raises(InvalidParameterError, match="'threads'"):
        fmri_ica.pipeline.run_pipeline(config, stages=("parcellate",))


def test_auto_follows_slurm_then_the_affinity_mask(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert resolve_threads("auto") == 3
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert resolve_threads("auto") == len(os.sched_getaffinity(0))
    assert resolve_threads(4) == 4 and resolve_threads("4") == 4
    assert check_threads("threads", "auto") == "auto"
    with pytest.raises(InvalidParameterError, match=r"'threads': 0 \(in a.yaml\)"):
        check_threads("threads", 0, " (in a.yaml)")


def test_cli_threads_option_overrides_the_config(monkeypatch, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(f"output: {tmp_path / 'out'}\n")
    parser = build_parser()
    assert load_config_from_args(parser.parse_args(["train", str(path)]))["threads"] == 1
    args = parser.parse_args(["run", str(path), "--threads", "2"])
    assert load_config_from_args(args)["threads"] == 2
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    args = parser.parse_args(["explain", str(path), "--threads", "auto"])
    assert load_config_from_args(args)["threads"] == 3
    assert parser.parse_args(["demo", "--threads", "2"]).threads == 2


@pytest.mark.parametrize("bad", ["0", "two", "-1"])
def test_cli_names_a_bad_threads_value(bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["run", "config.yaml", "--threads", bad])
    assert exit_info.value.code == 2
    assert "--threads" in capsys.readouterr().err
