"""The SLURM templates under scripts/ against a real single-node SLURM (issue 12).

A session fixture writes a minimal slurm.conf (this host as the one node, no accounting,
no cgroups), starts slurmctld and slurmd (and munged where SLURM has no ``auth/none``),
waits for the node to be idle and stops them at the end. Without SLURM's daemons
(Debian: ``apt-get install slurm-wlm``), or when they do not start, every test skips
and says why. The tests submit the templates as a user would and compare what the jobs
wrote with a local run of the same config: SLURM must change where work runs, not what
it computes.

Run with ``pytest -m slurm tests/test_slurm.py`` (about 6-7 minutes on 2 busy CPUs).
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
DAEMONS = ("slurmctld", "slurmd")
CLIENTS = ("sbatch", "scontrol", "sinfo")
JOB_TIMEOUT_S = 900  # the whole chain, on 2 CPUs shared with other work


# --------------------------------------------------------------------------- the cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _plugin_exists(name: str) -> bool:
    """Whether SLURM's plugin ``name`` (e.g. "auth_none") is installed (Debian's path or
    the upstream default)."""
    patterns = (f"/usr/lib/*/slurm*/{name}.so", f"/usr/lib*/slurm/{name}.so",
                f"/usr/local/lib/slurm/{name}.so")
    return any(Path("/").glob(pattern.lstrip("/")) for pattern in patterns)


def _node_line(slurmd: str) -> str:
    """This host as a NodeName line, from ``slurmd -C`` (CPUs, sockets, cores, memory)."""
    out = subprocess.run([slurmd, "-C"], capture_output=True, text=True, timeout=30).stdout
    line = next((s for s in out.splitlines() if s.startswith("NodeName=")), None)
    if line is None:
        pytest.skip(f"SLURM cannot start: 'slurmd -C' did not describe this host: {out!r}")
    if int(re.search(r"CPUs=(\d+)", line).group(1)) < 2:
        pytest.skip("SLURM test needs 2 CPUs (the report job and the 2-process training ask for 2)")
    memory = int(re.search(r"RealMemory=(\d+)", line).group(1))
    # leave the rest of the host's memory to everything else running here
    return re.sub(r"RealMemory=\d+", f"RealMemory={max(memory * 3 // 4, 1000)}", line)


def _start_munge(directory: Path) -> str:
    """munged with its own key and socket in ``directory``; returns the AuthInfo value."""
    munged = shutil.which("munged")
    if munged is None:
        pytest.skip("SLURM cannot start: it has no auth/none plugin and munged is not installed")
    key = directory / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    socket_path = directory / "munge.socket"
    subprocess.run([munged, f"--key-file={key}", f"--socket={socket_path}",
                    f"--pid-file={directory / 'munged.pid'}", f"--log-file={directory / 'munged.log'}",
                    f"--seed-file={directory / 'munged.seed'}", "--force"],
                   check=True, timeout=30)
    return f"socket={socket_path}"


def _write_conf(directory: Path, slurmd: str) -> Path:
    user = getpass.getuser()
    # cred_expire: how long a requeued job waits before it may start again (120 s by
    # default); starting it sooner by hand races with slurmd's record of the revoked credential
    if _plugin_exists("auth_none"):
        auth = ["AuthType=auth/none", "CredType=cred/none", "AuthInfo=cred_expire=10"]
    else:
        info = _start_munge(directory)
        auth = ["AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo={info},cred_expire=10"]
    for sub in ("state", "spool"):
        (directory / sub).mkdir()
    lines = [
        "ClusterName=fmriica", f"SlurmctldHost={socket.gethostname()}", *auth,
        f"SlurmUser={user}", f"SlurmdUser={user}",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        f"StateSaveLocation={directory / 'state'}", f"SlurmdSpoolDir={directory / 'spool'}",
        f"SlurmctldPidFile={directory / 'slurmctld.pid'}", f"SlurmdPidFile={directory / 'slurmd.pid'}",
        f"SlurmctldLogFile={directory / 'slurmctld.log'}", f"SlurmdLogFile={directory / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
        "SchedulerType=sched/builtin", "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none", "JobCompType=jobcomp/none",
        "MpiDefault=none", "ReturnToService=2", "MinJobAge=3600",
        _node_line(slurmd) + " State=UNKNOWN",
        "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
    ]
    conf = directory / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _node_state(env: dict) -> str:
    result = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True,
                            timeout=30)
    return result.stdout.strip()


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """The environment (``SLURM_CONF``) of a running single-node SLURM."""
    missing = [name for name in (*DAEMONS, *CLIENTS) if shutil.which(name) is None]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} not found; Debian: "
                    "apt-get install slurm-wlm)")
    directory = tmp_path_factory.mktemp("slurm")
    conf = _write_conf(directory, shutil.which("slurmd"))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    daemons = [subprocess.Popen([shutil.which("slurmctld"), "-D", "-i"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    time.sleep(1)
    daemons.append(subprocess.Popen([shutil.which("slurmd"), "-D"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        deadline, state = time.monotonic() + 60, ""
        while time.monotonic() < deadline and state != "idle":
            if any(d.poll() is not None for d in daemons):
                break
            time.sleep(1)
            state = _node_state(env)
        if state != "idle":
            logs = {p.name: p.read_text()[-600:] for p in directory.glob("*.log")}
            pytest.skip(f"SLURM cannot start here: the node is {state or 'absent'!r} after 60 s. "
                        f"Logs: {logs}")
        yield env
    finally:
        for daemon in reversed(daemons):
            daemon.terminate()
        for daemon in daemons:
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
        pid_file = directory / "munged.pid"
        if pid_file.is_file():
            subprocess.run(["kill", pid_file.read_text().strip()], check=False)


def _job_states(job_id: str, env: dict) -> list[str]:
    """The state of each task of a job (one for a plain job, one per array task)."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], env=env, capture_output=True,
                         text=True, timeout=30).stdout
    return re.findall(r"JobState=(\S+)", out)


def _wait_for(job_ids: list[str], env: dict, logs: Path) -> None:
    """Wait until every job has finished; fail with the logs unless all completed."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        states = {job: _job_states(job, env) for job in job_ids}
        running = [s for per_job in states.values() for s in per_job
                   if s in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED")]
        if not running or time.monotonic() > deadline:
            break
        time.sleep(2)
    if any(set(s) != {"COMPLETED"} for s in states.values()):
        tails = {p.name: p.read_text()[-1500:] for p in sorted(logs.glob("*.out"))}
        pytest.fail(f"SLURM jobs did not all complete: {states}\nlogs: {json.dumps(tails, indent=1)}")


# --------------------------------------------------------------------------- the data


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    """A tiny simulated data set (4 subjects, 2 tasks x 2 runs of 40 frames, 24 regions) and
    a config with 2 folds and one small model."""
    from fmri_ica.data.simulate import simulate_hcp

    root = tmp_path_factory.mktemp("slurm_data")
    dataset = simulate_hcp(root / "data", n_subjects=4, tasks=["MOTOR", "WM"], frames=40,
                           voxel_size=12.0, atlas="gm_kmeans", atlas_options={"n_regions": 24},
                           seed=3, n_task_regions=2, n_shared_regions=1, progress=False, n_jobs=1)
    config = {
        "output": str(root / "cluster"),
        "data": {"root": str(dataset.path), "layout": "hcp"},
        "atlas": {"name": "gm_kmeans", "options": {"n_regions": 24}},
        "parcellation": {"high_pass": None},
        "samples": {"window": 24, "step": 24, "start": 2},
        "crossval": {"folds": 2},
        # no dropout: 2-process DDP equals 1 process only then (masks are drawn per process)
        "models": {"ica-lstm": {"kind": "ica", "hidden_size": 4, "r": 2, "d_a": 4, "dropout": 0.0}},
        "training": {"epochs": 2, "crops_per_run": 2},
        "saliency": {"n_bins": 2},
        "sanity": {"n_untrained": 1, "cascading": False, "n_boot": 20, "n_perm": 20},
        "report": {"surface": False, "animation": False, "linear_baseline": False},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _local_run(config_path: Path, output: Path, stages: tuple[str, ...]) -> subprocess.Popen:
    command = [sys.executable, "-m", "fmri_ica.cli", "-q", "run", str(config_path),
               "--output", str(output), "--threads", "1"]
    for stage in stages:
        command += ["--stage", stage]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> None:
    _, err = process.communicate(timeout=JOB_TIMEOUT_S)
    assert process.returncode == 0, f"the local reference run failed: {err[-2000:]}"


def _same_json(a, b, where="", rtol=1e-5) -> None:
    """Equal JSON, floats within ``rtol`` relative (saliency may sum in another thread order)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _same_json(a[key], b[key], f"{where}.{key}", rtol)
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same_json(x, y, f"{where}[{i}]", rtol)
    elif isinstance(a, float) and isinstance(b, float):
        assert np.isclose(a, b, rtol=rtol, atol=1e-8, equal_nan=True), f"{where}: {a} != {b}"
    else:
        assert a == b, where


def _region_series(output: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(output)): np.loadtxt(p, delimiter="\t", skiprows=1)
            for p in sorted((output / "timeseries").glob("sub-*/func/*_timeseries.tsv"))}


# --------------------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def pipeline_chain(slurm, config_path, tmp_path_factory):
    """scripts/slurm_pipeline.sh on the tiny data set (2 parcellation tasks, 2 fold tasks),
    beside a local run of the same config; returns (SLURM output, local output, job ids, logs)."""
    logs = tmp_path_factory.mktemp("slurm_logs")
    local = config_path.parent / "local"
    reference = _local_run(config_path, local, ("parcellate", "samples", "train", "explain"))
    # this node has no GPUs and little memory: sbatch's variables override the #SBATCH lines
    env = {**slurm, "SBATCH_GRES": "none", "SBATCH_MEM_PER_NODE": "1500M"}
    try:
        submitted = subprocess.run([str(SCRIPTS / "slurm_pipeline.sh"), str(config_path), "2"],
                                   cwd=logs, env=env, capture_output=True, text=True, timeout=120)
        assert submitted.returncode == 0, submitted.stderr
        ids = dict(re.findall(r"(parcellate|samples|folds|report) (\d+)", submitted.stdout))
        assert ids.keys() == {"parcellate", "samples", "folds", "report"}, submitted.stdout
        _wait_for(list(ids.values()), slurm, logs)
        _finish(reference)
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()
    return config_path.parent / "cluster", local, ids, logs


def test_the_chain_runs_arrays_with_a_log_per_task(pipeline_chain, slurm):
    output, _, ids, logs = pipeline_chain
    names = {p.name for p in logs.glob("*.out")}
    for kind, job in (("parcellate", ids["parcellate"]), ("fold", ids["folds"])):
        assert {f"fmri-ica-{kind}_{job}_0.out", f"fmri-ica-{kind}_{job}_1.out"} <= names
    assert len(_job_states(ids["parcellate"], slurm)) == 2
    # the report job waited for the folds: it started after the last fold ended
    assert (output / "report.html").is_file()


def test_region_time_series_equal_a_local_run(pipeline_chain):
    output, local, _, _ = pipeline_chain
    cluster, reference = _region_series(output), _region_series(local)
    assert cluster.keys() == reference.keys() and len(cluster) == 16
    for name, series in reference.items():
        np.testing.assert_array_equal(cluster[name], series, err_msg=name)


def test_scores_and_saliency_metrics_equal_a_local_run(pipeline_chain):
    output, local, _, _ = pipeline_chain
    for path in ("models/ica-lstm/evaluation.json", "saliency/ica-lstm/metrics.json"):
        _same_json(json.loads((output / path).read_text()), json.loads((local / path).read_text()),
                   path)


def test_a_single_training_job_then_a_dependent_report(slurm, config_path, pipeline_chain,
                                                      tmp_path_factory):
    """scripts/slurm_train.sh (samples and every fold in one job) -> slurm_report.sh
    (afterok), into a fresh output that reuses the chain's region time series."""
    cluster, local, _, _ = pipeline_chain
    logs = tmp_path_factory.mktemp("slurm_train_logs")
    output = config_path.parent / "single"
    shutil.copytree(cluster / "timeseries", output / "timeseries")
    env = {**slurm, "SBATCH_GRES": "none", "SBATCH_MEM_PER_NODE": "1500M"}
    options = ["--parsable", "--kill-on-invalid-dep=yes"]
    train = _sbatch([*options, str(SCRIPTS / "slurm_train.sh"), str(config_path), "--output",
                     str(output)], logs, env)
    report = _sbatch([*options, f"--dependency=afterok:{train}", str(SCRIPTS / "slurm_report.sh"),
                      str(config_path), "--output", str(output)], logs, env)
    _wait_for([train, report], slurm, logs)
    for path in ("models/ica-lstm/evaluation.json", "saliency/ica-lstm/metrics.json"):
        _same_json(json.loads((output / path).read_text()), json.loads((local / path).read_text()),
                   path)


def test_two_process_torchrun_training_equals_one_process(slurm, config_path, pipeline_chain,
                                                         tmp_path_factory):
    """scripts/slurm_samples.sh -> scripts/slurm_train_ddp.sh (afterok) with 2 torchrun
    processes on CPUs (gloo): the same held-out scores and weights as the local 1-process run."""
    cluster, local, _, _ = pipeline_chain
    logs = tmp_path_factory.mktemp("slurm_ddp_logs")
    output = config_path.parent / "ddp"
    shutil.copytree(cluster / "timeseries", output / "timeseries")
    env = {**slurm, "SBATCH_GRES": "none", "SBATCH_MEM_PER_NODE": "3G", "NPROC_PER_NODE": "2"}
    options = ["--parsable", "--kill-on-invalid-dep=yes"]
    samples = _sbatch([*options, str(SCRIPTS / "slurm_samples.sh"), str(config_path),
                       "--output", str(output)], logs, env)
    train = _sbatch([*options, f"--dependency=afterok:{samples}", "--cpus-per-task=2",
                     str(SCRIPTS / "slurm_train_ddp.sh"), str(config_path), "--output", str(output),
                     "--set", "training.device=cpu"], logs, env)
    _wait_for([samples, train], slurm, logs)
    path = "models/ica-lstm/evaluation.json"
    _same_json(json.loads((output / path).read_text()), json.loads((local / path).read_text()), path)
    import torch

    from fmri_ica.training import load_model

    # the models' outputs, not their raw weights: w2's bias shifts every attention score
    # alike, so its gradient is rounding noise that Adam turns into arbitrary steps
    x = torch.randn(3, 24, 24, generator=torch.Generator().manual_seed(0))
    for k in (0, 1):
        logits = [load_model(root / f"models/ica-lstm/fold-{k}/trained/last")(x).detach()
                  for root in (output, local)]
        torch.testing.assert_close(logits[0], logits[1], rtol=1e-5, atol=1e-5)


def _sbatch(arguments: list[str], logs: Path, env: dict) -> str:
    """Submit with sbatch from ``logs`` (the jobs' working folder); returns the job id."""
    done = subprocess.run(["sbatch", *arguments], cwd=logs, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


REQUEUE_EPOCHS = 100  # 4 trainings (2 folds x trained, permuted), 10-100 ms an epoch here


def _wait_for_log(log: Path, pattern: str, timeout_s: float) -> None:
    """Wait until ``log`` has a line matching ``pattern``; fail with its tail otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.is_file() and re.search(pattern, log.read_text(), re.MULTILINE):
            return
        time.sleep(0.2)
    tail = log.read_text()[-1500:] if log.is_file() else "(no log)"
    pytest.fail(f"{log.name} has no line matching {pattern!r} after {timeout_s} s:\n{tail}")


def _wait_requeued(job: str, env: dict, log: Path) -> None:
    """Wait until ``job`` is requeued (pending, Restarts=1). SLURM then holds it back for the
    credential lifetime (10 s in this slurm.conf) and starts it again."""
    deadline, details = time.monotonic() + 120, ""
    while time.monotonic() < deadline:
        details = subprocess.run(["scontrol", "-o", "show", "job", job], env=env,
                                 capture_output=True, text=True, timeout=30).stdout
        if re.search(r"\bRestarts=1\b", details) and "JobState=PENDING" in details:
            break
        time.sleep(0.5)
    else:
        tail = log.read_text()[-1500:] if log.is_file() else "(no log)"
        pytest.fail(f"job {job} was not requeued within 120 s of SIGTERM: {details}\n{tail}")


def test_sigterm_requeues_training_and_resumes_to_an_uninterrupted_result(slurm, config_path,
                                                                           tmp_path_factory):
    """SIGTERM to scripts/slurm_train.sh's batch shell mid-training, as SLURM sends it before a
    time limit (--signal=B:TERM@120; scancel --batch signals that shell alone): training saves
    its state, the job requeues itself, resumes, and ends with the scores and weights of an
    uninterrupted local run of the same config."""
    import torch

    logs = tmp_path_factory.mktemp("slurm_requeue_logs")
    output, local = config_path.parent / "requeued", config_path.parent / "uninterrupted"
    epochs = ["--set", f"training.epochs={REQUEUE_EPOCHS}"]
    reference = subprocess.Popen(
        [sys.executable, "-m", "fmri_ica.cli", "-q", "run", str(config_path), "--output",
         str(local), "--threads", "1", "--stage", "parcellate", "--stage", "samples",
         "--stage", "train", *epochs], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    env = {**slurm, "SBATCH_GRES": "none", "SBATCH_MEM_PER_NODE": "1500M"}
    try:
        job = _sbatch(["--parsable", str(SCRIPTS / "slurm_train.sh"), str(config_path),
                       "--output", str(output), *epochs], logs, env)
        log = logs / f"fmri-ica-train_{job}.out"
        _wait_for_log(log, rf"epoch \d+/{REQUEUE_EPOCHS}:", 300)
        signalled = subprocess.run(["scancel", "--signal=TERM", "--batch", job], env=slurm,
                                   capture_output=True, text=True, timeout=30)
        assert signalled.returncode == 0, signalled.stderr
        _wait_requeued(job, slurm, log)
        _wait_for([job], slurm, logs)
        _finish(reference)
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()
    details = subprocess.run(["scontrol", "-o", "show", "job", job], env=slurm,
                             capture_output=True, text=True, timeout=30).stdout
    assert re.search(r"\bRestarts=1\b", details), details
    text = log.read_text()
    assert re.search(r"Received SIGTERM: saved the training state after epoch", text), text[-3000:]
    assert f"requeueing job {job}" in text, text[-3000:]
    assert re.search(r"Resuming \S+ after epoch \d+, step \d+", text), text[-3000:]
    path = "models/ica-lstm/evaluation.json"
    _same_json(json.loads((output / path).read_text()), json.loads((local / path).read_text()),
               path, rtol=1e-6)
    weights = sorted((local / "models/ica-lstm").glob("fold-*/*/*/model.pt"))
    assert len(weights) == 12  # 2 folds x (trained, permuted) x (init, best, last)
    for reference_file in weights:
        name = str(reference_file.relative_to(local))
        resumed = torch.load(output / name, weights_only=True)
        expected = torch.load(reference_file, weights_only=True)
        assert resumed.keys() == expected.keys(), name
        for key, value in expected.items():
            torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-6, msg=name + key)
