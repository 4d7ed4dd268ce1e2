"""The on-disk sample store reads back as the in-memory SampleSet, serves the same training
batches (standardised on the fly), trains the same model, and keeps memory flat."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from fmri_ica.data.samples import Standardizer, build_samples
from fmri_ica.data.store import (
    SampleStore,
    StoreDataset,
    StoreRunCropDataset,
    build_store,
    fit_standardizer,
)
from fmri_ica.exceptions import InputDataError
from fmri_ica.models import build_model
from fmri_ica.training import RunCropDataset, SequenceDataset, fit

REGIONS = 7


def _runs(n_subjects=4, seed=0):
    """Runs of unequal lengths (2 tasks x 2 runs per subject), as load_timeseries yields them."""
    rng = np.random.default_rng(seed)
    for s in range(n_subjects):
        for task, n_frames in (("MOTOR", 31), ("WM", 44)):
            for run in ("LR", "RL"):
                frames = n_frames + int(rng.integers(0, 5))
                on = (np.arange(frames) // 4) % 2 == 1
                yield (3 + rng.standard_normal((frames, REGIONS)) * (1 + s)).astype(np.float32), {
                    "subject": f"{s:02d}", "task": task, "run": run, "t_r": 0.72,
                    "labels": [{"index": i + 1, "name": f"r{i}"} for i in range(REGIONS)],
                    "task_on": on.astype(int).tolist(),
                    "conditions": [("c" if v else "") for v in on],
                }


MODES = {
    "windows": dict(window=12, step=5, start=2),
    "runs": dict(window=None, pad_short=True),
    "classes": dict(window=10, step=9, classes=["WM", "MOTOR"], frame_stride=2),
}


@pytest.fixture(params=sorted(MODES))
def pair(request, tmp_path):
    options = MODES[request.param]
    return build_samples(_runs(), **options), build_store(_runs(), tmp_path / "store", **options)


def test_store_reads_back_as_the_in_memory_sample_set(pair, tmp_path):
    samples, store = pair
    back = SampleStore(store.path).to_samples()  # reopened from disk
    assert store.shape == samples.x.shape
    np.testing.assert_array_equal(back.x, samples.x)  # values, order and zero padding
    np.testing.assert_array_equal(back.task_on, samples.task_on)
    for name in ("y", "lengths", "subjects", "runs", "starts"):
        np.testing.assert_array_equal(getattr(back, name), getattr(samples, name), err_msg=name)
    assert (back.classes, back.region_names, back.t_r) == (
        samples.classes, samples.region_names, samples.t_r)


def test_subsets_are_views_of_the_same_files(pair):
    samples, store = pair
    mask = np.isin(samples.subjects, ["01", "03"])
    view = store.subset(mask)
    shared = {k for k, v in vars(view).items() if v is vars(store)[k]}
    assert shared == set(vars(store)) - {"_positions"}  # only the index array is new
    assert view._positions.dtype == np.int64 and view._positions.ndim == 1
    expected = samples.subset(mask)
    np.testing.assert_array_equal(view.to_samples().x, expected.x)
    inner = view.subset([2, 0])  # a view of a view
    np.testing.assert_array_equal(inner.to_samples().x, expected.subset([2, 0]).x)
    np.testing.assert_array_equal(inner.subjects, expected.subjects[[2, 0]])


def test_standardised_batches_equal_the_in_memory_path(pair):
    samples, store = pair
    train = np.flatnonzero(samples.subjects != "02")
    scaler = Standardizer().fit(samples.subset(train))
    memory = SequenceDataset(scaler.transform(samples.subset(train)).x, samples.y[train],
                             samples.lengths[train])
    disk = StoreDataset(store.subset(train), scaler=scaler)
    index = torch.tensor([5, 0, len(train) - 1, 3])
    for got, want in zip(disk.get_batch(index), memory.get_batch(index), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_streaming_scaler_equals_standardizer(pair):
    samples, store = pair
    train = np.flatnonzero(samples.subjects != "00")
    want = Standardizer().fit(samples.subset(train))
    got = fit_standardizer(store.subset(train), chunk_frames=50)  # many blocks merged
    np.testing.assert_allclose(got.mean_, want.mean_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.scale_, want.scale_, rtol=1e-5)


def test_run_crops_and_training_equal_the_in_memory_path(tmp_path):
    samples = build_samples(_runs(), window=None, pad_short=True)
    store = build_store(_runs(), tmp_path / "runs", window=None, pad_short=True)
    train = np.flatnonzero(samples.subjects != "03")
    scaler = Standardizer().fit(samples.subset(train))
    options = dict(window=20, crops_per_run=3, seed=4, noise_std=0.1)
    data = scaler.transform(samples.subset(train))
    memory = RunCropDataset(data.x, data.y, data.lengths, **options)
    disk = StoreRunCropDataset(store.subset(train), scaler=scaler, **options)
    for dataset in (memory, disk):
        dataset.set_epoch(2)
    index = torch.arange(len(memory)).flip(0)
    for got, want in zip(disk.get_batch(index), memory.get_batch(index), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    weights = []
    for dataset in (memory, disk):
        torch.manual_seed(0)
        model = build_model("lstm", REGIONS, 2, hidden_size=5, dropout=0.0)
        fit(model, dataset, (data.x[:6], data.y[:6], data.lengths[:6]), epochs=2,
            batch_size=7, patience=None, selection="last", progress=False)
        weights.append(model.state_dict())
    for name in weights[0]:
        torch.testing.assert_close(weights[1][name], weights[0][name], rtol=0, atol=0)


@pytest.mark.parametrize("policy", ["error", "drop", "keep"])
def test_regions_flat_in_every_run_as_in_memory(policy, tmp_path):
    def runs():
        for series, sidecar in _runs(2):
            series[:, [1, 4]] = 0.0  # no brain signal in these regions
            yield series, sidecar

    if policy == "error":
        with pytest.raises(InputDataError, match="r1, r4"):
            build_store(runs(), tmp_path / "s", window=12, empty_regions=policy)
        return
    samples = build_samples(runs(), window=12, empty_regions=policy)
    back = build_store(runs(), tmp_path / "s", window=12, empty_regions=policy).to_samples()
    assert back.region_names == samples.region_names
    np.testing.assert_array_equal(back.x, samples.x)


def test_interrupted_build_leaves_no_store(tmp_path):
    build_store(_runs(), tmp_path / "s", window=12)

    def failing():
        yield from list(_runs())[:3]
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        build_store(failing(), tmp_path / "s", window=12)
    with pytest.raises(InputDataError, match="build it again"):
        SampleStore(tmp_path / "s")
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.startswith(".")]  # no temp left


_MEMORY_SCRIPT = textwrap.dedent('''
    import json, re, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    from fmri_ica.data.samples import build_samples
    from fmri_ica.data.store import StoreDataset, build_store, fit_standardizer
    from fmri_ica.training.data import iter_batches

    FRAMES, REGIONS, WINDOW, STEP = 400, 256, 100, 50

    def runs(n):
        for i in range(n):
            rng = np.random.default_rng(i)
            series = rng.standard_normal((FRAMES, REGIONS), dtype=np.float32)
            yield series, {"subject": f"{i // 4:04d}", "task": "AB"[i % 2], "run": str(i % 4),
                           "t_r": 0.72}

    def peak_growth(work):
        open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
        status = open("/proc/self/status").read()
        before = int(re.search(r"VmRSS:\\s+(\\d+)", status).group(1))
        work()
        after = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
        return (after - before) / 1024  # MiB

    def build_and_iterate(n):
        store = build_store(runs(n), f"{sys.argv[1]}/store{n}", window=WINDOW, step=STEP)
        scaler = fit_standardizer(store, chunk_frames=2000)
        for _ in iter_batches(StoreDataset(store, scaler=scaler), range(len(store)), 32):
            pass

    result = {n: peak_growth(lambda: build_and_iterate(n)) for n in (8, 8, 80)}
    result["memory"] = peak_growth(lambda: build_samples(runs(80), window=WINDOW, step=STEP))
    result["cohort"] = 80 * (FRAMES // STEP - 1) * WINDOW * REGIONS * 4 / 2**20
    print(json.dumps(result))
''')


def test_memory_stays_flat_as_the_cohort_grows(tmp_path):
    try:
        open("/proc/self/clear_refs", "w").write("5")
    except OSError as error:
        pytest.skip(f"cannot reset the peak memory (VmHWM) of a process here: {error}")
    done = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    small, large, cohort = result["8"], result["80"], result["cohort"]  # 8 vs 80 runs, MiB
    assert result["memory"] > 0.8 * cohort  # the measure sees a cohort held in memory...
    assert large - small < 0.1 * cohort  # ...and building + iterating the store holds none
    assert large < 30
