"""Fault corpus, checkpoints: a crafted pickle is refused unread with a message that never
suggests loading it unsafely; truncated or mismatched files name the file (exit 3)."""

from __future__ import annotations

import json

import pytest
import torch
from _faults import assert_one_line_error

from fmri_ica.exceptions import InputDataError

REFUSED = "it contains code objects or types that are not plain tensors (not a fmri_ica checkpoint?)"


class _Payload:
    """Unpickling this would write ``path``: proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('pwned')",))


class _Stop(Exception):
    pass


def _stop(*args, **kwargs):
    raise _Stop


@pytest.fixture
def fold_dir(cli, pipeline_copy, monkeypatch):
    """(config, output, fold 0's trained/ folder) as the train stage leaves them when
    stopped just before training: the next run resumes from trained/training_state.pt."""
    import fmri_ica.training

    config, out = pipeline_copy
    with monkeypatch.context() as patch:
        patch.setattr(fmri_ica.training, "fit", _stop)
        with pytest.raises(_Stop):
            cli("run", config, "--output", out, "--stage", "train")
    folder = out / "models" / "tiny" / "fold-0" / "trained"
    folder.mkdir(parents=True)
    return config, out, folder


def test_crafted_training_state_is_refused_through_the_cli(cli, fold_dir, tmp_path):
    config, out, folder = fold_dir
    torch.save({"params": _Payload(tmp_path / "pwned")}, folder / "training_state.pt")
    result = cli("run", config, "--output", out, "--stage", "train")
    line = assert_one_line_error(result, 3, f"refused to load {folder / 'training_state.pt'}: {REFUSED}")
    assert "weights_only" not in result.err
    assert not (tmp_path / "pwned").exists()
    assert not (out / ".stages" / "train-tiny.json").exists()
    assert "Traceback" not in line


def test_truncated_training_state_names_the_file_through_the_cli(cli, fold_dir):
    config, out, folder = fold_dir
    torch.save({"epoch": torch.zeros(1000)}, folder / "training_state.pt")
    raw = (folder / "training_state.pt").read_bytes()
    (folder / "training_state.pt").write_bytes(raw[: len(raw) // 2])
    result = cli("run", config, "--output", out, "--stage", "train")
    assert_one_line_error(result, 3, str(folder / "training_state.pt"), "truncated or damaged")


@pytest.fixture
def checkpoint(tmp_path):
    from fmri_ica.models import build_model
    from fmri_ica.training import save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "best", build_model("lstm", 3, 2, hidden_size=2))


def _load_error(folder) -> InputDataError:
    from fmri_ica.cli import exit_status
    from fmri_ica.training import load_model

    with pytest.raises(InputDataError) as error:
        load_model(folder)
    assert exit_status(error.value) == 3
    assert "\n" not in str(error.value) and "weights_only" not in str(error.value)
    assert "weights_only" not in str(error.value.__cause__)  # not even with --debug
    return error.value


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_crafted_model_is_refused_unread(checkpoint, tmp_path, how):
    import pickle

    payload = {"lstm.weight_ih_l0": _Payload(tmp_path / "pwned")}
    if how == "pickle":
        (checkpoint / "model.pt").write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, checkpoint / "model.pt")
    error = _load_error(checkpoint)
    assert str(error).startswith(f"refused to load {checkpoint / 'model.pt'}: {REFUSED}")
    assert not (tmp_path / "pwned").exists()


def test_crafted_decoder_is_refused(checkpoint, tmp_path):
    from fmri_ica import TaskDecoder

    (checkpoint / "decoder.json").write_text(json.dumps({"params": {}, "classes": ["a", "b"]}))
    torch.save({"w": _Payload(tmp_path / "pwned")}, checkpoint / "model.pt")
    with pytest.raises(InputDataError, match="refused to load"):
        TaskDecoder.load(checkpoint)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_truncated_model_names_the_file(checkpoint, keep):
    raw = (checkpoint / "model.pt").read_bytes()
    (checkpoint / "model.pt").write_bytes(raw[: int(len(raw) * keep)])
    error = _load_error(checkpoint)
    assert str(checkpoint / "model.pt") in str(error) and "truncated or damaged" in str(error)


def test_sidecar_that_disagrees_with_the_weights(checkpoint):
    sidecar = json.loads((checkpoint / "model.json").read_text())
    sidecar["config"]["hidden_size"] = 5
    (checkpoint / "model.json").write_text(json.dumps(sidecar))
    error = _load_error(checkpoint)
    assert str(checkpoint / "model.pt") in str(error) and str(checkpoint / "model.json") in str(error)
    assert "do not fit" in str(error)


def test_sidecar_that_is_not_json(checkpoint):
    (checkpoint / "model.json").write_text('{"config": {"kind": "ls')
    error = _load_error(checkpoint)
    assert str(checkpoint / "model.json") in str(error) and "not valid JSON" in str(error)


def test_sidecar_with_an_impossible_model(checkpoint):
    sidecar = json.loads((checkpoint / "model.json").read_text())
    sidecar["config"]["kind"] = "transformer"
    (checkpoint / "model.json").write_text(json.dumps(sidecar))
    error = _load_error(checkpoint)
    assert str(checkpoint / "model.json") in str(error) and "'transformer'" in str(error)


def test_intact_checkpoint_still_loads(checkpoint):
    from fmri_ica.training import load_model

    model = load_model(checkpoint)
    assert model(torch.zeros(1, 4, 3), torch.tensor([4])).shape == (1, 2)
