"""Tests of fmri_ica.training: learning, determinism, exact resume, checkpoints, metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from fmri_ica._utils import package_versions
from fmri_ica.exceptions import InputDataError, InvalidParameterError
from fmri_ica.models import build_model
from fmri_ica.training import (
    RunCropDataset,
    SequenceDataset,
    TrainingInterrupted,
    evaluate,
    evaluate_runs,
    fit,
    load_model,
    predict_logits,
    save_checkpoint,
    sliding_windows,
)
from fmri_ica.training.data import iter_batches

T, F = 11, 6  # unequal on purpose


class TinyGRU(nn.Module):
    """The fmri_ica.models contract in a few lines: fast, for the loop's mechanics."""

    def __init__(self, n_features, n_classes, hidden=8, dropout=0.1):
        super().__init__()
        self.config = {"kind": "tiny_gru", "n_features": n_features, "n_classes": n_classes,
                       "hidden": hidden, "dropout": dropout}  # fmt: skip
        self.gru = nn.GRU(n_features, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)  # makes the torch RNG matter for resume
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x, lengths=None):
        out, _ = self.gru(self.drop(x))
        if lengths is None:
            last = out[:, -1]
        else:
            last = out[torch.arange(len(x)), lengths.to(out.device) - 1]
        return self.head(self.drop(last))


def make_model(seed=0, kind="tiny", **kw):
    """A seeded model: the tiny GRU above, or a small one from fmri_ica.models."""
    torch.manual_seed(seed)
    if kind == "tiny":
        return TinyGRU(F, 2, **kw)
    return build_model(kind, F, 2, hidden_size=6, **kw)


def box_data(n, seed):
    """Noise with a box (steps 2-6, features 1-4) of mean +1 or -1 by class; ragged lengths."""
    gen = np.random.default_rng(seed)
    y = gen.integers(0, 2, n)
    x = gen.standard_normal((n, T, F)).astype("float32")
    x[:, 2:7, 1:5] += 2 * y[:, None, None] - 1
    return x, y, gen.integers(8, T + 1, n)


def weights_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


QUICK = dict(epochs=4, lr=1e-2, batch_size=20, progress=False, patience=None)


@pytest.fixture(scope="module")
def toy():
    return box_data(120, 1), box_data(60, 2), box_data(200, 3)


@pytest.mark.parametrize(
    ("kind", "options"),
    [("ica", {"r": 4, "d_a": 8, "hidden_size": 8}), ("lstm", {"hidden_size": 8})],
)
def test_learns_toy_problem_and_noise_stays_at_chance(toy, kind, options):
    train, val, test = toy
    torch.manual_seed(0)
    model = build_model(kind, F, 2, **options)
    result = fit(model, train, val, epochs=10, lr=1e-2, batch_size=20, patience=3, progress=False)
    assert evaluate(model, test)["accuracy"] >= 0.9
    assert result.best_val_accuracy >= 0.9

    # Same inputs, labels unrelated to them: held-out accuracy must stay near 0.5.
    noise = [
        (x, np.random.default_rng(k).integers(0, 2, len(x)), l) for k, (x, _, l) in enumerate(toy)
    ]
    torch.manual_seed(0)
    model = build_model(kind, F, 2, **options)
    fit(model, noise[0], noise[1], epochs=10, lr=1e-2, batch_size=20, patience=3, progress=False)
    assert 0.35 <= evaluate(model, noise[2])["accuracy"] <= 0.65


def test_same_seed_is_bitwise_identical_and_seed_matters(toy):
    train, val, _ = toy
    runs = []
    for seed in (0, 0, 1):
        model = make_model()
        fit(model, train, val, seed=seed, **QUICK)
        runs.append(model)
    assert weights_equal(runs[0], runs[1])
    assert not weights_equal(runs[0], runs[2])


@pytest.mark.parametrize("kind", ["tiny", "ica"])
def test_resume_gives_the_uninterrupted_weights(toy, tmp_path, kind):
    train, val, _ = toy
    straight = make_model(kind=kind)
    ref = fit(straight, train, val, **{**QUICK, "epochs": 6}, out_dir=tmp_path / "a")

    model = make_model(kind=kind)
    first = fit(model, train, val, **{**QUICK, "epochs": 3}, out_dir=tmp_path / "b")
    assert len(first.history) == 3
    # A different start: everything must come from the saved state.
    resumed = make_model(seed=123, kind=kind)
    result = fit(resumed, train, val, **{**QUICK, "epochs": 6}, out_dir=tmp_path / "b", resume=True)
    assert weights_equal(resumed, straight)
    assert result.best_epoch == ref.best_epoch
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in result.history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in ref.history]
    for name in ("last", "best"):
        a = torch.load(tmp_path / "a" / name / "model.pt", weights_only=True)
        b = torch.load(tmp_path / "b" / name / "model.pt", weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a)
    # A finished run is not repeated: resuming again changes nothing.
    again = make_model(seed=7, kind=kind)
    fit(again, train, val, **{**QUICK, "epochs": 6}, out_dir=tmp_path / "b", resume=True)
    assert weights_equal(again, straight)


class SignallingDataset(torch.utils.data.Dataset):
    """Sends a signal to this process when item number ``at`` is fetched (as SLURM would)."""

    def __init__(self, x, y, lengths, at, signum=None):
        self.inner, self.at, self.calls = SequenceDataset(x, y, lengths), at, 0
        self.signum = signal.SIGUSR1 if signum is None else signum

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), self.signum)
        return self.inner[i]


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs POSIX signals")
def test_signal_saves_state_mid_epoch_and_resume_is_exact(toy, tmp_path, caplog):
    train, val, _ = toy
    params = {**QUICK, "epochs": 4}
    straight = make_model()
    fit(straight, train, val, **params)

    model = make_model()
    at = 120 + 2 * 20 + 5  # during the 3rd batch of the 2nd epoch
    with pytest.raises(TrainingInterrupted) as info, caplog.at_level("WARNING"):
        fit(model, SignallingDataset(*train, at=at), val, **params, out_dir=tmp_path)
    assert info.value.code == 128 + signal.SIGUSR1
    assert "Received SIGUSR1" in caplog.text and "resume=True" in caplog.text
    state = torch.load(tmp_path / "training_state.pt", weights_only=True)
    assert (state["progress"]["epoch"], state["progress"]["step"]) == (1, 3)
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # handler removed again

    resumed = make_model(seed=5)
    result = fit(resumed, train, val, **params, out_dir=tmp_path, resume=True)
    assert weights_equal(resumed, straight)
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs POSIX signals")
def test_signal_during_the_last_validation_finishes_the_run_then_exits(toy, tmp_path):
    train, val, _ = toy
    params = {**QUICK, "epochs": 2}
    straight = make_model()
    fit(straight, train, val, **params)
    model = make_model()
    with pytest.raises(TrainingInterrupted):
        fit(model, train, SignallingDataset(*val, at=60 + 5), **params, out_dir=tmp_path)
    assert weights_equal(model, straight)  # best weights restored before exiting
    assert json.loads((tmp_path / "fit_result.json").read_text())["history"][-1]["epoch"] == 2
    again = make_model(seed=3)
    result = fit(again, train, val, **params, out_dir=tmp_path, resume=True)  # nothing to do
    assert weights_equal(again, straight) and len(result.history) == 2


@pytest.mark.slow  # a fresh interpreter importing torch: ~10 s on a loaded 2-core machine
@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs POSIX signals")
def test_sigterm_exits_the_process_with_a_clear_message(tmp_path):
    # A real process, as under SLURM: the signal arrives while a batch is being fetched.
    script = f"""
import os, signal, torch
from torch import nn
from fmri_ica._utils import configure_logging
from fmri_ica.training import fit

class Data(torch.utils.data.Dataset):
    def __init__(self):
        self.x, self.y, self.calls = torch.randn(60, 5, 3), torch.arange(60) % 2, 0
    def __len__(self):
        return 60
    def __getitem__(self, i):
        self.calls += 1
        if self.calls == 25:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.x[i], self.y[i]

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru, self.head = nn.GRU(3, 4, batch_first=True), nn.Linear(4, 2)
    def forward(self, x, lengths=None):
        return self.head(self.gru(x)[0][:, -1])

configure_logging(1)
data = Data()
fit(Model(), data, (data.x, data.y), epochs=50, batch_size=10, progress=False,
    out_dir={str(tmp_path)!r})
print("not reached")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert "not reached" not in proc.stdout
    assert "Received SIGTERM" in proc.stderr and "resume=True" in proc.stderr
    state = torch.load(tmp_path / "training_state.pt", weights_only=True)
    assert (state["progress"]["epoch"], state["progress"]["step"]) == (0, 3)


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("ica", {"embedding": "matrix", "r": 3, "d_a": 5, "hidden_size": 6}),
        ("bilstm", {"hidden_size": 6}),
        ("self_attention", {"r": 3, "d_a": 5, "hidden_size": 6}),
    ],
)
def test_checkpoint_round_trip(toy, tmp_path, kind, options):
    train, val, test = toy
    torch.manual_seed(0)
    model = build_model(kind, F, 2, **options)
    fit(model, train, val, **{**QUICK, "epochs": 2})
    save_checkpoint(tmp_path / "ck", model, epoch=2, extra={"training": {"lr": 0.01}})
    loaded = load_model(tmp_path / "ck")
    assert not loaded.training and loaded.config == model.config
    x, _, lengths = test
    assert torch.equal(predict_logits(model, x, lengths), predict_logits(loaded, x, lengths))
    sidecar = json.loads((tmp_path / "ck" / "model.json").read_text())
    assert sidecar["config"] == model.config
    assert sidecar["epoch"] == 2 and sidecar["training"] == {"lr": 0.01}
    assert sidecar["versions"] == package_versions()
    state = torch.load(tmp_path / "ck" / "model.pt", weights_only=True)
    assert set(state) == set(model.state_dict())
    with pytest.raises(InputDataError, match="model.pt"):
        load_model(tmp_path)


def test_fit_checkpoints_load_with_weights_only(toy, tmp_path):
    train, val, _ = toy
    torch.manual_seed(0)
    model = build_model("gru", F, 2, hidden_size=8)
    result = fit(model, train, val, **QUICK, out_dir=tmp_path)
    best = load_model(tmp_path / "best")
    assert weights_equal(best, model)  # fit returns the best weights
    state = torch.load(tmp_path / "training_state.pt", weights_only=True)
    assert state["progress"]["epoch"] == 4 and "optimizer" in state and "rng" in state
    summary = json.loads((tmp_path / "fit_result.json").read_text())
    assert summary["best_epoch"] == result.best_epoch and summary["params"]["lr"] == 0.01
    with pytest.raises(InvalidParameterError, match="out_dir"):
        fit(make_model(), train, val, **QUICK, out_dir=tmp_path)  # would overwrite a run
    with pytest.raises(InvalidParameterError, match="'lr'"):
        fit(make_model(), train, val, **{**QUICK, "lr": 0.1}, out_dir=tmp_path, resume=True)


def test_early_stopping_restores_best_weights(toy, tmp_path):
    # Labels unrelated to the inputs and a high learning rate: validation loss rises soon.
    x, _, lengths = toy[0]
    y = np.random.default_rng(0).integers(0, 2, len(x))
    xv, _, lv = toy[1]
    val = (xv, np.random.default_rng(1).integers(0, 2, len(xv)), lv)
    model = make_model(hidden=16, dropout=0.0)
    result = fit(model, (x, y, lengths), val, epochs=60, lr=3e-2, batch_size=20, patience=3,
                 progress=False, out_dir=tmp_path)  # fmt: skip
    assert result.stopped_early
    assert len(result.history) == result.best_epoch + 3 < 60
    assert result.best_val_loss == min(r["val_loss"] for r in result.history)
    assert result.best_val_loss < result.history[-1]["val_loss"]
    assert evaluate(model, val)["loss"] == pytest.approx(result.best_val_loss, rel=1e-6)

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == len(result.history)
    keys = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    assert all(set(r) == keys for r in records)
    assert [r["epoch"] for r in records] == list(range(1, len(records) + 1))
    assert [r["val_loss"] for r in records] == [r["val_loss"] for r in result.history]


def test_monitor_val_accuracy_picks_the_most_accurate_epoch(toy):
    train, val, _ = toy
    result = fit(make_model(), train, val, **QUICK, monitor="val_accuracy")
    accs = [r["val_acc"] for r in result.history]
    assert result.best_val_accuracy == max(accs)
    assert result.history[result.best_epoch - 1]["val_acc"] == max(accs)


class TableModel(nn.Module):
    """Returns preset logits: feature 0 of the first step holds the sample index."""

    def __init__(self, logits):
        super().__init__()
        self.table = nn.Parameter(torch.as_tensor(logits, dtype=torch.float32))

    def forward(self, x, lengths=None):
        return self.table[x[:, 0, 0].long()]


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_evaluate_matches_sklearn(rng):
    from sklearn.metrics import (
        balanced_accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    n, k = 53, 4
    logits = rng.standard_normal((n, k)) * 2
    y = rng.integers(0, k - 1, n)  # class 3 never occurs: zero_division must hold
    x = np.zeros((n, 3, 2), "float32")
    x[:, 0, 0] = np.arange(n)
    metrics = evaluate(TableModel(logits), (x, y), batch_size=7)
    pred = logits.argmax(1)
    assert metrics["n"] == n and metrics["n_classes"] == k
    assert metrics["accuracy"] == pytest.approx(np.mean(pred == y))
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert metrics["confusion_matrix"] == confusion_matrix(y, pred, labels=range(k)).tolist()
    p, r, f, _ = precision_recall_fscore_support(y, pred, labels=range(k), zero_division=0)
    assert np.allclose(metrics["precision"], p) and np.allclose(metrics["recall"], r)
    assert np.allclose(metrics["f1"], f)
    expected = nn.CrossEntropyLoss()(torch.as_tensor(logits), torch.as_tensor(y))
    assert metrics["loss"] == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(InputDataError, match="classes"):
        evaluate(TableModel(logits[:, :2]), (x, y))


def test_predict_logits_is_eval_mode_and_batch_independent(toy):
    x, _, lengths = toy[2]
    model = make_model(dropout=0.5).train()
    a = predict_logits(model, x, lengths, batch_size=7)
    b = predict_logits(model, x, lengths, batch_size=256)
    assert model.training  # mode restored
    assert a.shape == (len(x), 2) and not a.requires_grad
    torch.testing.assert_close(a, b)
    with torch.no_grad():
        direct = model.eval()(torch.as_tensor(x), lengths=torch.as_tensor(lengths))
    torch.testing.assert_close(a, direct)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lr": -1e-3}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"epochs": 0}, "epochs"),
        ({"patience": 0}, "patience"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"grad_clip": 0.0}, "grad_clip"),
        ({"monitor": "val_los"}, "monitor"),
        ({"class_weights": [1.0, -1.0]}, "class_weights"),
        ({"device": "nonsense"}, "device"),
        ({"resume": True}, "out_dir"),
    ],
)
def test_bad_parameters_name_the_parameter(toy, kwargs, name):
    train, val, _ = toy
    with pytest.raises(InvalidParameterError, match=f"'?{name}'?"):
        fit(make_model(), train, val, **{**QUICK, **kwargs})


def test_bad_data_name_the_parameter(toy):
    x, y, lengths = toy[0]
    with pytest.raises(InvalidParameterError, match="'y'"):
        SequenceDataset(x, y[:-1])
    with pytest.raises(InvalidParameterError, match="'lengths'"):
        SequenceDataset(x, y, lengths[:-1])
    with pytest.raises(InvalidParameterError, match="'lengths'"):
        SequenceDataset(x, y, np.full(len(y), T + 1))
    with pytest.raises(InvalidParameterError, match="'x'"):
        SequenceDataset(x[0], y)
    with pytest.raises(InvalidParameterError, match="'train'"):
        fit(make_model(), x, toy[1], **QUICK)
    with pytest.raises(InputDataError, match="classes"):
        fit(make_model(), (x, y + 5), toy[1], **QUICK)


def test_subsets_and_plain_datasets_give_the_same_batches(toy):
    x, y, lengths = toy[0]
    full = SequenceDataset(x, y, lengths)
    pick = [5, 0, 17, 3, 99, 42, 8]
    subset = torch.utils.data.Subset(full, pick)
    plain = SequenceDataset(x[pick], y[pick], lengths[pick])
    per_item = [full[i] for i in pick]
    for a, b in zip(
        iter_batches(subset, range(7), 3), iter_batches(plain, range(7), 3), strict=True
    ):
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    batch = next(iter_batches(_ItemDataset(per_item), range(7), 7))
    assert all(
        torch.equal(u, v) for u, v in zip(batch, plain.get_batch(torch.arange(7)), strict=True)
    )


class _ItemDataset(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_class_weights_change_the_loss(toy):
    train, val, _ = toy
    a, b = make_model(), make_model()
    ra = fit(a, train, val, **QUICK)
    rb = fit(b, train, val, **QUICK, class_weights=[1.0, 3.0])
    assert not weights_equal(a, b)
    # The validation loss (and so early stopping) uses the same weights as training.
    weighted = evaluate(b, val, class_weights=[1.0, 3.0])["loss"]
    assert weighted == pytest.approx(rb.best_val_loss, rel=1e-6)
    assert evaluate(b, val)["loss"] != pytest.approx(weighted, rel=1e-3)
    assert ra.history[0]["train_loss"] != rb.history[0]["train_loss"]


# --- whole runs: random crops, sliding windows, run-level evaluation ----------------------


def tagged_runs(n_runs=9, time=23, features=4, short=(2, 5)):
    """Runs whose frames say where they come from: feature 0 = run, 1 = frame, 2 = 1.

    Lengths are unequal; runs in ``short`` are shorter than a window of 8.
    """
    lengths = np.random.default_rng(0).integers(12, time + 1, n_runs)
    lengths[list(short)] = [5, 8 - 1]
    x = np.zeros((n_runs, time, features), "float32")
    for r, n in enumerate(lengths):
        x[r, :n, 0], x[r, :n, 1], x[r, :n, 2] = r, np.arange(n), 1
    x[:, :, 3] = np.random.default_rng(1).standard_normal((n_runs, time))  # padding too
    return x, np.arange(n_runs) % 3, lengths


def all_items(data):
    return data.get_batch(torch.arange(len(data)))


def test_run_crops_lie_inside_their_run_and_short_runs_are_whole():
    x, y, lengths = tagged_runs()
    data = RunCropDataset(x, y, lengths, window=8, crops_per_run=3, seed=4)
    assert len(data) == 27
    for epoch in (0, 5):
        data.set_epoch(epoch)
        crops, labels, crop_lengths = all_items(data)
        assert crops.shape == (27, 8, 4)
        runs = np.repeat(np.arange(9), 3)
        assert labels.tolist() == y[runs].tolist()
        assert crop_lengths.tolist() == np.minimum(lengths[runs], 8).tolist()
        for crop, run, n in zip(crops.numpy(), runs, crop_lengths.tolist(), strict=True):
            assert (crop[:n, 0] == run).all() and (crop[:n, 2] == 1).all()
            frames = crop[:n, 1]
            assert (np.diff(frames) == 1).all() and 0 <= frames[0] <= lengths[run] - n
            assert not crop[n:].any()  # zero after the crop's length (even x's padding)
        short = np.isin(runs, [2, 5])
        assert (crops[short][:, 0, 1] == 0).all()  # a short run is taken whole
    # Over epochs, the starts reach both ends of each run's room (uniform on 0..length-8).
    starts = []
    for epoch in range(40):
        data.set_epoch(epoch)
        starts.append(all_items(data)[0][:, 0, 1].numpy().reshape(9, 3))
    starts = np.concatenate(starts, axis=1)
    assert (starts.min(1) == 0).all()
    assert starts.max(1).tolist() == np.maximum(lengths - 8, 0).tolist()


def test_run_crops_are_a_function_of_seed_and_epoch_only():
    x, y, lengths = tagged_runs()
    make = lambda seed: RunCropDataset(x, y, lengths, window=8, crops_per_run=2, seed=seed,  # noqa: E731
                                       noise_std=0.5)  # fmt: skip
    a, b, c = make(1), make(1), make(2)
    for data in (a, b, c):
        data.set_epoch(3)
    b.set_epoch(0)  # visiting another epoch first changes nothing
    b.set_epoch(3)
    assert all(torch.equal(u, v) for u, v in zip(all_items(a), all_items(b), strict=True))
    assert not torch.equal(all_items(a)[0], all_items(c)[0])
    before = all_items(a)[0]
    a.set_epoch(4)
    assert not torch.equal(all_items(a)[0], before)
    # An item does not depend on its batch: per item, in a Subset, in any order.
    a.set_epoch(3)
    pick = [11, 0, 7, 3]
    subset = torch.utils.data.Subset(a, pick)
    batch = next(iter_batches(subset, range(4), 4))
    assert torch.equal(batch[0], before[pick])
    assert torch.equal(a[7][0], before[7])
    # Noise only on valid frames, and it is noise (not the signal).
    crops, _, crop_lengths = all_items(a)
    valid = torch.arange(8)[None, :] < crop_lengths[:, None]
    assert not crops[~valid].any()
    clean = RunCropDataset(x, y, lengths, window=8, crops_per_run=2, seed=1)
    clean.set_epoch(3)
    residual = (crops - all_items(clean)[0])[valid]
    assert 0.4 < float(residual.std()) < 0.6


def test_run_crop_dataset_rejects_bad_parameters():
    x, y, lengths = tagged_runs()
    for kwargs, name in [({"window": 0}, "window"), ({"crops_per_run": 0}, "crops_per_run"),
                         ({"noise_std": -1.0}, "noise_std"), ({"seed": -1}, "seed")]:  # fmt: skip
        with pytest.raises(InvalidParameterError, match=name):
            RunCropDataset(x, y, lengths, **{"window": 8, **kwargs})
    with pytest.raises(InvalidParameterError, match="'lengths'"):
        RunCropDataset(x, y, None, window=8)


class SignallingCrops(RunCropDataset):
    """Sends SIGUSR1 to this process on the ``at``-th batch fetched."""

    def __init__(self, *args, at, **kwargs):
        super().__init__(*args, **kwargs)
        self.at, self.calls = at, 0

    def get_batch(self, indices):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGUSR1)
        return super().get_batch(indices)


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs POSIX signals")
def test_resume_mid_epoch_with_crops_is_bitwise_exact(tmp_path):
    gen = np.random.default_rng(0)
    lengths = gen.integers(10, 16, 30)
    y = gen.integers(0, 2, 30)
    x = gen.standard_normal((30, 15, F)).astype("float32") + y[:, None, None]
    x[np.arange(15)[None, :] >= lengths[:, None]] = 0
    options = dict(window=8, crops_per_run=4, seed=2, noise_std=0.3)  # 120 items, 6 batches
    val = (x[:10, :8], y[:10], np.full(10, 8))
    params = {**QUICK, "epochs": 3}
    straight_data = RunCropDataset(x, y, lengths, **options)
    straight = make_model()
    fit(straight, straight_data, val, **params)
    assert straight_data.epoch == 2  # fit moved the crops on every epoch

    model = make_model()
    with pytest.raises(TrainingInterrupted):  # during the 3rd batch of the 2nd epoch
        fit(model, SignallingCrops(x, y, lengths, at=9, **options), val, **params, out_dir=tmp_path)
    state = torch.load(tmp_path / "training_state.pt", weights_only=True)
    assert (state["progress"]["epoch"], state["progress"]["step"]) == (1, 3)
    resumed = make_model(seed=9)  # a fresh data set, at epoch 0: fit must set it
    fit(resumed, RunCropDataset(x, y, lengths, **options), val, **params, out_dir=tmp_path,
        resume=True)  # fmt: skip
    assert weights_equal(resumed, straight)


def test_sliding_windows_cover_every_frame_and_end_flush():
    x, _, lengths = tagged_runs()
    windows, win_lengths, runs, starts = sliding_windows(x, lengths, window=8, step=3)
    assert windows.shape == (len(runs), 8, 4) and windows.dtype == np.float32
    assert (np.diff(runs) >= 0).all() and set(runs.tolist()) == set(range(9))
    for r, n in enumerate(lengths):
        mine = runs == r
        covered = np.zeros(n, bool)
        for w, start, m in zip(windows[mine], starts[mine], win_lengths[mine], strict=True):
            assert m == min(n, 8) and np.array_equal(w[:m], x[r, start : start + m])
            assert not w[m:].any()
            covered[start : start + m] = True
        assert covered.all()
        assert starts[mine][-1] + win_lengths[mine][-1] == n  # the last window ends with the run
        assert (np.diff(starts[mine]) <= 3).all()
    with pytest.raises(InvalidParameterError, match="'step'"):
        sliding_windows(x, lengths, window=8, step=0)


class FirstFrame(nn.Module):
    """Logits = the first frame of each window (features = classes)."""

    def forward(self, x, lengths=None):
        return x[:, 0, :]


def test_evaluate_runs_averages_log_probabilities_over_windows():
    x = np.zeros((3, 9, 2), "float32")
    x[0, [0, 3, 6]] = [[0.1, 0], [0.1, 0], [0, 10]]  # 2 weak votes for 0, one strong for 1
    x[1, [0, 2]] = [[3, 0], [0, 1]]  # length 5: windows start at 0 and 2 (flush)
    x[2, 0] = [1, 0]  # length 2: one short window
    y, lengths = np.array([1, 0, 1]), np.array([9, 5, 2])
    scores = evaluate_runs(FirstFrame(), x, y, lengths, window=3, step=3, batch_size=4)
    assert scores["n_windows"] == 6 and scores["n_runs"] == 3
    assert scores["windows_per_run"] == [3, 2, 1]
    assert scores["run_predictions"] == [1, 0, 0]  # run 0: a majority vote would say 0
    expected = [
        torch.log_softmax(torch.tensor(rows, dtype=torch.float64), 1).mean(0)
        for rows in ([[0.1, 0], [0.1, 0], [0, 10]], [[3, 0], [0, 1]], [[1, 0]])
    ]
    np.testing.assert_allclose(scores["run_log_proba"], torch.stack(expected).numpy())
    runs = scores["run_level"]
    assert runs["accuracy"] == pytest.approx(2 / 3)
    assert runs["balanced_accuracy"] == pytest.approx(0.75)
    assert runs["confusion_matrix"] == [[1, 0], [1, 1]]
    windows = scores["window_level"]
    assert windows["accuracy"] == pytest.approx(2 / 6) and windows["n"] == 6
    assert windows["confusion_matrix"] == [[1, 1], [3, 1]]
    with pytest.raises(InvalidParameterError, match="'y'"):
        evaluate_runs(FirstFrame(), x, y[:2], lengths, window=3, step=3)


# --- model selection ------------------------------------------------------------------------


def test_selection_last_keeps_the_final_weights(toy, tmp_path):
    train, val, _ = toy
    # Validation labels flipped: the validation loss is best early, the last epoch is worse.
    val = (val[0], 1 - val[1], val[2])
    params = {**QUICK, "epochs": 8, "lr": 3e-2}
    best = make_model()
    chosen = fit(best, train, val, **params, out_dir=tmp_path / "best")
    assert chosen.selection == "best" and chosen.selected_epoch == chosen.best_epoch < 8
    last = make_model()
    result = fit(last, train, val, **params, selection="last", out_dir=tmp_path / "last")
    assert result.selected_epoch == 8 and result.best_epoch == chosen.best_epoch
    assert not result.early_best
    last_ck = torch.load(tmp_path / "last" / "last" / "model.pt", weights_only=True)
    assert all(torch.equal(last.state_dict()[k], last_ck[k]) for k in last_ck)
    assert not weights_equal(last, best)
    assert not last.training
    summary = json.loads((tmp_path / "last" / "fit_result.json").read_text())
    assert summary["selection"] == "last" and summary["selected_epoch"] == 8
    with pytest.raises(InvalidParameterError, match="'patience'.*selection='last'"):
        fit(make_model(), train, val, **{**params, "patience": 3}, selection="last")
    with pytest.raises(InvalidParameterError, match="'selection'"):
        fit(make_model(), train, val, **params, selection="final")


def test_early_best_is_flagged_and_min_epochs_bounds_the_best(toy, tmp_path, caplog):
    train, val, _ = toy
    val = (val[0], 1 - val[1], val[2])  # flipped: the best validation loss comes first
    params = {**QUICK, "epochs": 8, "lr": 3e-2}
    with caplog.at_level("WARNING"):
        early = fit(make_model(), train, val, **params, out_dir=tmp_path)
    assert early.best_epoch <= 2 and early.early_best
    assert "close to its initialisation" in caplog.text and "init" in caplog.text
    assert json.loads((tmp_path / "fit_result.json").read_text())["early_best"] is True

    bounded = fit(make_model(), train, val, **params, min_epochs=5)
    assert bounded.best_epoch >= 5 and not bounded.early_best
    eligible = [r["val_loss"] for r in bounded.history[4:]]
    assert bounded.best_val_loss == min(eligible)
    # More min_epochs than epochs: the last epoch is kept, never the initial weights.
    short = fit(make_model(), train, val, **{**params, "epochs": 3}, min_epochs=5)
    assert short.best_epoch == 3


def test_init_checkpoint_holds_the_untrained_weights(toy, tmp_path):
    train, val, _ = toy
    model = make_model(kind="gru")
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, train, val, **{**QUICK, "epochs": 2}, out_dir=tmp_path)
    untrained = load_model(tmp_path / "init")  # weights_only inside
    assert untrained.config == model.config
    assert all(torch.equal(untrained.state_dict()[k], initial[k]) for k in initial)
    assert not weights_equal(untrained, model)
    # A resume (from another start) leaves init/ as it was.
    fit(make_model(seed=5, kind="gru"), train, val, **{**QUICK, "epochs": 3}, out_dir=tmp_path,
        resume=True)  # fmt: skip
    again = load_model(tmp_path / "init")
    assert all(torch.equal(again.state_dict()[k], initial[k]) for k in initial)
