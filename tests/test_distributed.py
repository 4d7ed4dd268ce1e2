"""Training in 2 processes (DDP over gloo, CPU) equals 1 process with the same global batch;
kill-and-resume under DDP, and resume across world sizes, equal uninterrupted training."""

from __future__ import annotations

import json
import os
import signal
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fmri_ica.exceptions import InvalidParameterError
from fmri_ica.models import build_model
from fmri_ica.training import SequenceDataset, TrainingInterrupted, fit
from fmri_ica.training.data import EpochSampler
from fmri_ica.training.distributed import RankFailed, first_host, launch_info, run_on_main
from fmri_ica.training.loop import resolve_runtime

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this build of torch",
)

# 25 samples in global batches of 6: the last batch has 1 sample, so one rank has no share.
N, TIME, FEATURES, CLASSES, BATCH, EPOCHS, STOP_AT = 25, 9, 5, 3, 6, 3, 7
FIT = dict(epochs=EPOCHS, batch_size=BATCH, lr=0.01, patience=None, selection="last", seed=3,
           progress=False, class_weights=[1.0, 2.0, 0.5])


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, TIME, FEATURES)).astype(np.float32)
    lengths = rng.integers(4, TIME + 1, size=N)
    return x, rng.integers(0, CLASSES, size=N), lengths


class _StopAt(SequenceDataset):
    """Sends SIGTERM to this process when its ``stop_at``-th batch is fetched (one rank only:
    the ranks must still agree to stop at the same step)."""

    def __init__(self, *args, stop_at: int):
        super().__init__(*args)
        self.stop_at, self.fetched = stop_at, 0

    def get_batch(self, indices):
        self.fetched += 1
        if self.fetched == self.stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().get_batch(indices)


def _train(out=None, stop_at=None, resume=False):
    """Final weights of a fresh model trained with FIT (interrupted after ``stop_at`` batches)."""
    torch.manual_seed(0)
    model = build_model("lstm", FEATURES, CLASSES, hidden_size=6, dropout=0.0)
    x, y, lengths = _data()
    train = SequenceDataset(x, y, lengths) if stop_at is None else _StopAt(x, y, lengths, stop_at=stop_at)
    result = fit(model, train, (x[:8], y[:8], lengths[:8]), out_dir=out, resume=resume, **FIT)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, result.history


def _worker(rank: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=2)
    except Exception as error:  # reported to the parent, which skips
        open(os.path.join(tmp, f"no_gloo_{rank}"), "w").write(repr(error))
        return
    results = {"plain": _train(os.path.join(tmp, "plain"))}
    stopped = os.path.join(tmp, "stopped")
    try:  # only rank 1 receives the signal, after STOP_AT batches (mid-epoch 2)
        _train(stopped, stop_at=STOP_AT if rank == 1 else None)
    except TrainingInterrupted:
        pass
    results["resumed"] = _train(stopped, resume=True)
    try:  # interrupted in 2 processes; the parent resumes it in 1
        _train(os.path.join(tmp, "to_one"), stop_at=STOP_AT if rank == 0 else None)
    except TrainingInterrupted:
        pass
    results["from_one"] = _train(os.path.join(tmp, "from_one"), resume=True)  # stopped by the parent
    runtime = resolve_runtime("cpu")
    results["main_result"] = run_on_main(runtime, lambda: f"written by {runtime.rank}")
    try:
        run_on_main(runtime, _fail)
    except (RankFailed, ValueError) as error:
        results["main_failed"] = type(error).__name__
    if rank == 0:
        torch.save(results, os.path.join(tmp, "results.pt"))
    else:
        open(os.path.join(tmp, "rank1.json"), "w").write(json.dumps(
            {"main_result": results["main_result"], "main_failed": results.get("main_failed")}))
    dist.destroy_process_group()


def _fail():
    raise ValueError("rank 0 fails")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Weights and histories: 1 process (reference, and its interrupted run for 2 ranks to
    resume), then the 2-process runs, spawned once."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("ddp")
    single = _train()
    with pytest.raises(TrainingInterrupted):
        _train(tmp / "from_one", stop_at=STOP_AT)
    try:
        # fork: the children start with torch and fmri_ica imported (spawn re-imports: slow)
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        mp.start_processes(_worker, args=(_free_port(), str(tmp)), nprocs=2, join=True,
                           start_method=method)
    except Exception as error:
        if list(tmp.glob("no_gloo_*")):
            pytest.skip(f"gloo cannot start a 2-process group here: {error}")
        raise
    if list(tmp.glob("no_gloo_*")):
        pytest.skip(f"gloo cannot start a 2-process group here: {next(tmp.glob('no_gloo_*')).read_text()}")
    results = torch.load(tmp / "results.pt", weights_only=True)
    results["to_one"] = _train(tmp / "to_one", resume=True)
    return single, results, tmp


def _assert_same(a, b, atol=1e-5):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0, msg=name)


def _assert_history(a, b):
    for row_a, row_b in zip(a, b, strict=True):
        for key in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc"):
            assert row_a[key] == pytest.approx(row_b[key], abs=1e-5), key


def test_two_processes_equal_one_with_the_same_global_batch(runs):
    (weights, history), results, _ = runs
    ddp_weights, ddp_history = results["plain"]
    _assert_same(ddp_weights, weights)
    _assert_history(ddp_history, history)  # metrics all-reduced over ranks
    trained = dict(build_model("lstm", FEATURES, CLASSES, hidden_size=6, dropout=0.0).named_parameters())
    assert any((weights[k] - trained[k]).abs().max() > 1e-3 for k in trained)  # it did train


def test_kill_and_resume_under_ddp_equals_uninterrupted(runs):
    (weights, history), results, tmp = runs
    _assert_same(results["resumed"][0], results["plain"][0], atol=1e-6)
    _assert_history(results["resumed"][1], history)
    lines = (tmp / "stopped" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == EPOCHS  # rank 0 alone wrote, once per epoch


def test_resume_across_world_sizes(runs):
    (weights, history), results, _ = runs
    _assert_same(results["to_one"][0], weights)  # saved by 2 ranks, resumed by 1
    _assert_same(results["from_one"][0], weights)  # saved by 1, resumed by 2
    _assert_history(results["to_one"][1], history)
    _assert_history(results["from_one"][1], history)


def test_rank_zero_runs_alone_and_its_failure_reaches_the_others(runs):
    _, results, tmp = runs
    other = json.loads((tmp / "rank1.json").read_text())
    assert results["main_result"] == other["main_result"] == "written by 0"
    assert (results["main_failed"], other["main_failed"]) == ("ValueError", "RankFailed")


def test_ranks_take_disjoint_strided_shares_of_the_same_global_batches():
    one = [i.tolist() for i, _ in EpochSampler(N, 5).local_batches(BATCH)]
    shares = [list(EpochSampler(N, 5, rank=r, world_size=2).local_batches(BATCH)) for r in (0, 1)]
    for step, batch in enumerate(one):
        (a, n_a), (b, n_b) = shares[0][step], shares[1][step]
        assert sorted(a[:n_a].tolist() + b[:n_b].tolist()) == sorted(batch)
        assert a[:n_a].tolist() == batch[0::2] and b[:n_b].tolist() == batch[1::2]
    assert shares[1][-1][1] == 0 and len(shares[1][-1][0]) == 1  # a last batch of 1: no share


def test_launch_variables_of_torchrun_and_srun():
    torchrun = launch_info({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h",
                            "MASTER_PORT": "1234", "SLURM_PROCID": "3"})
    assert (torchrun.rank, torchrun.world_size, torchrun.master_port, torchrun.launcher) == (
        1, 4, 1234, "torchrun")
    srun = {"SLURM_PROCID": "2", "SLURM_NTASKS": "3", "SLURM_LOCALID": "0", "SLURM_STEP_ID": "0",
            "SLURM_NODELIST": "gpu[07-09]", "SLURM_JOB_ID": "1234567"}
    info = launch_info(srun)
    assert (info.rank, info.world_size, info.local_rank, info.master_addr, info.master_port) == (
        2, 3, 0, "gpu07", 29500 + 567)
    assert not launch_info({**srun, "SLURM_STEP_ID": "batch"}).distributed  # the sbatch script
    assert first_host("a-1,b2") == "a-1" and first_host("n[1,3]-ib,m") == "n1-ib"
    with pytest.raises(InvalidParameterError, match="SLURM_PROCID"):
        launch_info({**srun, "SLURM_PROCID": "5"})
