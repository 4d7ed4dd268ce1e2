"""The whole pipeline, one resumable stage at a time.

    parcellate -> samples -> train -> explain -> project -> report

Each stage writes its outputs atomically under the output folder and a marker in
``<output>/.stages/`` holding a hash of the configuration it depends on. Re-running skips a
stage whose marker matches; changing a parameter re-runs that stage and the stages after it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._locks import FileLock
from ._utils import (
    check_option,
    launch_rank,
    package_versions,
    progress,
    seed_everything,
    sha256_file,
    write_json,
)
from .config import config_hash, validate_config
from .exceptions import InputDataError, InvalidParameterError, OutputBusyError
from .provenance import fingerprint_tree, stale_reason
from .saliency.scoring import planted_region_metrics

logger = logging.getLogger(__name__)

__all__ = ["STAGES", "Workspace", "run_pipeline"]

STAGES = ("parcellate", "samples", "train", "explain", "project", "report")


@dataclass(frozen=True)
class Workspace:
    """Where every stage reads and writes, below one output folder.

    ``verify``: re-read every recorded output (and parcellated input) and compare checksums,
    instead of trusting unchanged sizes and modification times.
    """

    root: Path
    verify: bool = False

    @property
    def timeseries(self) -> Path:
        return self.root / "timeseries"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    def model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    def saliency_dir(self, name: str) -> Path:
        return self.root / "saliency" / name

    def fold_dir(self, name: str, fold: int) -> Path:
        return self.root / "models" / name / f"fold-{fold}"

    def maps_dir(self, name: str) -> Path:
        return self.root / "maps" / name

    def marker(self, stage: str, name: str = "") -> Path:
        return self.root / ".stages" / f"{stage}{'-' + name if name else ''}.json"

    def outputs(self, stage: str, name: str = "", info: dict | None = None) -> list[Path]:
        """The files and folders a finished stage wrote (fingerprinted in its marker)."""
        if stage == "parcellate":
            tsvs = [self.root / p for p in (info or {}).get("outputs", [])]
            return tsvs + [p.with_suffix(".json") for p in tsvs]
        if stage == "train-fold":
            model, fold = name.rsplit("-", 1)
            return [self.fold_dir(model, int(fold))]
        if stage == "explain-fold":
            return [self.saliency_dir(name.rsplit("-", 1)[0]) / f"fold-{name.rsplit('-', 1)[1]}"]
        return {"samples": [self.samples], "train": [self.model_dir(name)],
                "explain": [self.saliency_dir(name)], "project": [self.maps_dir(name)],
                "report": [self.report]}[stage]


_NOT_RUN = "not run with the current parameters"


def _check_marker(ws: Workspace, stage: str, key: str, name: str = "") -> tuple[dict | None, str]:
    """The stage's marker if it was written with ``key`` and its outputs are intact; else
    (None, why not)."""
    path = ws.marker(stage, name)
    try:
        marker = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError) as error:
        return None, f"its marker {path} cannot be read ({error}); the stage runs again"
    if not isinstance(marker, dict) or marker.get("key") != key:
        return None, _NOT_RUN
    for relative, recorded in marker.get("fingerprints", {}).items():
        reason = stale_reason(ws.root / relative, recorded, verify=ws.verify)
        if reason:
            return None, f"its output {reason} since the stage finished"
    if "outputs" in marker:  # recorded relative to the output folder, so that it can move
        marker["outputs"] = [str(ws.root / p) for p in marker["outputs"]]
    return marker, ""


def _marker(ws: Workspace, stage: str, key: str, name: str = "") -> dict | None:
    """The stage's marker if it was written with ``key`` and its outputs are intact, else None."""
    marker, why = _check_marker(ws, stage, key, name)
    if marker is None and ws.marker(stage, name).is_file() and why != _NOT_RUN:
        logger.warning("%s%s: %s.", stage, f" ({name})" if name else "", why)
    return marker


def _is_done(ws: Workspace, stage: str, key: str, name: str = "", output: Path | None = None) -> bool:
    """True when the stage ran with ``key`` and its outputs are still there, unchanged."""
    if _marker(ws, stage, key, name) is None or (output is not None and not output.exists()):
        return False
    logger.info("Skipping %s%s: already done with these parameters.", stage, f" ({name})" if name else "")
    return True


def _require(ws: Workspace, stage: str, key: str, name: str = "") -> dict:
    """The marker of an upstream stage run with the current parameters, or a clear error."""
    marker, why = _check_marker(ws, stage, key, name)
    if marker is None:
        what = f"{stage} stage ({name})" if name else f"{stage} stage"
        state = "has not been run with the current parameters" if why == _NOT_RUN else f"must run again: {why}"
        raise InputDataError(
            f"The {what} {state} in {ws.root}: run 'fmri-ica run CONFIG --stage {stage}' (or the "
            "whole pipeline) first."
        )
    return marker


def _mark_done(ws: Workspace, stage: str, key: str, name: str = "", **info) -> None:
    """Write the stage's marker: its key, what it reports, and its outputs' fingerprints."""
    if "outputs" in info:
        info["outputs"] = [Path(p).resolve().relative_to(ws.root).as_posix() for p in info["outputs"]]
    fingerprints = fingerprint_tree(ws.root, ws.outputs(stage, name, info))
    write_json(ws.marker(stage, name), {"key": key, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                        **info, "fingerprints": fingerprints})


#: Parcellation settings that do not change its outputs (left out of the stage keys).
_NOT_RESULTS = ("jobs", "allow_failures", "engine")


def _stage_keys(config: dict, ws: Workspace) -> dict[str, str]:
    """Hash of the config each stage depends on, chained so later stages follow earlier ones.

    The samples key also covers the parcellated runs (relative paths and checksums), so a run
    that parcellates now but failed before, or was re-done for changed inputs, re-runs
    everything downstream. Settings that do not change results
    (parallel jobs, device) are left out, so that e.g. parcellating with many jobs and
    training on a GPU node reuse each other's work.
    """
    parcellation = {k: v for k, v in config["parcellation"].items() if k not in _NOT_RESULTS}
    training = {k: v for k, v in config["training"].items() if k != "device"}
    # not data.root: the runs are identified by content (a moved data set stays finished)
    data = {k: v for k, v in config["data"].items() if k != "root"}
    keys = {"parcellate": config_hash(data, config["atlas"], parcellation)}
    parcellated = _marker(ws, "parcellate", keys["parcellate"]) or {}
    # each run's time series (checksum) and what made its sidecar (events, settings; not the
    # sidecar's bytes, which change when a touched BOLD's new time is recorded)
    runs = [sorted((path, print_["sha256"]) for path, print_ in parcellated.get("fingerprints", {}).items()
                   if path.endswith(".tsv")), parcellated.get("run_parameters")]
    keys["samples"] = config_hash(keys["parcellate"], runs, config["samples"], config["crossval"],
                                  val_folds(config), config["seed"])
    # not sanity.permuted_labels: switching the null on trains the null, not the model again
    keys["train"] = config_hash(keys["samples"], training, config["seed"])
    keys["explain"] = config_hash(keys["train"], config["saliency"], config["sanity"])
    keys["project"] = keys["explain"]
    keys["report"] = config_hash(keys["explain"], config["report"], config["models"])
    return keys


def _model_key(stage_key: str, config: dict, name: str) -> str:
    """A stage's key for one model: changes with the model's own settings."""
    return config_hash(stage_key, config["models"].get(name, name))


def _pooled_key(train_key: str, config: dict) -> str:
    """The key of a model's pooled folds: its folds' key and whether they have the null."""
    return config_hash(train_key, config["sanity"]["permuted_labels"])


def run_pipeline(config: dict, stages: tuple[str, ...] = STAGES, *, shard=None,
                 fold=None, verify: bool = False) -> Workspace:
    """Run the given stages of the pipeline for ``config`` (see :mod:`fmri_ica.config`).

    Parameters
    ----------
    config : dict
        From :func:`fmri_ica.config.load_config`.
    stages : tuple of str, default=STAGES
        Stages to run, in pipeline order. A stage needs its upstream stages done with the
        same parameters (else :class:`~fmri_ica.exceptions.InputDataError` says which).
    shard : str or (int, int), optional
        Parcellate only runs ``I::N`` ("I/N", or "auto" from SLURM's array variables), for
        array jobs; the stage is then not marked done, so run it once more without a shard
        (finished runs are skipped) before the next stages.
    fold : int or "auto", optional
        Train and / or explain only this cross-validation fold ("auto":
        ``SLURM_ARRAY_TASK_ID``), for array jobs; the train and explain stages are then not
        marked done, so run them once more without a fold (finished folds are skipped) to
        pool the folds. Explaining a fold needs only that fold trained.
    verify : bool, default=False
        Re-read finished stages' outputs and parcellated runs' inputs and compare their
        checksums with those recorded (by default sizes and modification times are
        compared, and checksums only where a time changed). A stage whose outputs changed
        runs again.

    Each stage that writes holds a lock file in ``<output>/.stages/`` while it runs; a second
    process on the same output stops with :class:`~fmri_ica.exceptions.OutputBusyError`
    naming the holder (a lock left by a killed process is taken over).

    Returns the :class:`Workspace` holding the outputs; ``workspace.report`` is the HTML report.
    """
    config = validate_config(config)  # every stage's values, before any work
    from ._threads import DEFAULT_THREADS, set_torch_threads

    # for the whole process, as the CLI would; a parcellate-only run does not import torch
    set_torch_threads(config.get("threads", DEFAULT_THREADS), load_torch=set(stages) != {"parcellate"})
    if "linear" in config["models"]:
        raise InvalidParameterError("'models' must not name a model 'linear': that name is the linear reference's.")
    ws = Workspace(Path(config["output"]).resolve(), verify=bool(verify))
    ws.root.mkdir(parents=True, exist_ok=True)
    if launch_rank() in (None, 0):
        write_json(ws.root / "config.json", {"config": config, "versions": package_versions()})
    for stage in STAGES:
        if stage in stages:
            logger.info("Stage %s", stage)
            keys = _stage_keys(config, ws)  # after parcellation, the runs it finished count
            with _stage_lock(ws, stage, _fold_index(fold)):
                if stage == "parcellate":
                    _on_rank_0(config, functools.partial(parcellate_stage, config, ws, keys, shard=shard))
                elif stage == "train":  # every rank trains; samples and train coordinate ranks
                    train_stage(config, ws, keys, fold=_fold_index(fold))
                elif stage == "samples":
                    samples_stage(config, ws, keys)
                elif stage == "explain":
                    _on_rank_0(config, functools.partial(explain_stage, config, ws, keys, fold=_fold_index(fold)))
                else:
                    _on_rank_0(config, functools.partial(_STAGE_FUNCTIONS[stage], config, ws, keys))
    return ws


def _on_rank_0(config: dict, stage) -> None:
    """Run a stage that does not train once: under torchrun / srun on rank 0 while the other
    ranks wait (and fail with it); otherwise just run it."""
    if launch_rank() is None:
        stage()
        return
    from .training.distributed import current_runtime, run_on_main

    run_on_main(current_runtime(config["training"]["device"]), stage)


@contextlib.contextmanager
def _stage_lock(ws: Workspace, stage: str, fold: int | None):
    """Hold ``.stages/<stage>.lock`` while a stage writes (parcellation locks each run
    instead, so array tasks share it; a fold trained or explained alone locks its fold; under a
    multi-process launch only rank 0 locks, for all ranks)."""
    if stage == "parcellate" or launch_rank() not in (None, 0):
        yield
        return
    name = f"{stage}-fold-{fold}" if stage in ("train", "explain") and fold is not None else stage
    lock = ws.root / ".stages" / f"{name}.lock"
    try:
        with FileLock(lock, stale_s=600.0):
            yield
    except OutputBusyError as error:
        if lock.name not in str(error):
            raise
        raise OutputBusyError(
            f"Another fmri-ica process is running the {stage} stage on {ws.root}: {error}. "
            "Wait for it to finish and run again (finished work is skipped); a lock left by a "
            "killed process is taken over after 10 minutes (at once on the same machine)."
        ) from None


def _fold_index(fold) -> int | None:
    """The fold to train alone: an int, or "auto" from SLURM's array task id."""
    import os

    if fold is None:
        return None
    if fold == "auto":
        fold = os.environ.get("SLURM_ARRAY_TASK_ID")
        if fold is None:
            raise InvalidParameterError("fold='auto' needs SLURM_ARRAY_TASK_ID (run it as an array job).")
    try:
        value = int(fold)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"Invalid value for 'fold': {fold!r}. Expected an integer >= 0 or 'auto'.") from None
    if value < 0:
        raise InvalidParameterError(f"Invalid value for 'fold': {value}. Expected an integer >= 0.")
    return value


# --------------------------------------------------------------------------- stages


def parcellate_stage(config: dict, ws: Workspace, keys: dict, *, shard=None) -> None:
    """Discover the runs and write region time series for each (finished runs are skipped).

    The marker lists the region time series of exactly these runs, so that later stages
    never pick up files left by another configuration.
    """
    from .data.layouts import discover_runs
    from .data.parcellation import parcellate, too_many_failures

    data, options = config["data"], config["parcellation"]
    if not data["root"]:
        raise InputDataError("No data: set 'data.root' in the config to an HCP, BIDS or manifest path.")
    runs = discover_runs(
        data["root"], data["layout"], subjects=data["subjects"], tasks=data["tasks"],
        runs=data["runs"], t_r=data["t_r"], keep_failed=True,
    )
    run_all = functools.partial(
        parcellate, atlas=config["atlas"]["name"], out_dir=ws.timeseries,
        atlas_options=config["atlas"]["options"], n_jobs=options["jobs"], hrf_delay=options["hrf_delay"],
        confounds_strategy=options["confounds_strategy"], detrend=options["detrend"],
        standardize=options["standardize"], high_pass=options["high_pass"],
        low_pass=options["low_pass"], engine=options["engine"], verify=ws.verify,
    )
    summary = run_all(runs, shard=shard)
    if shard is not None:
        logger.info("Parcellated shard %s; run the stage once more without a shard to finish it.", shard)
        return
    if _busy_runs(summary):
        summary = _wait_for_other_processes(summary, runs, run_all)
    rows = summary.table().to_dict("records")
    finished = [r["output"] for r in rows if r["status"] == "done" or r["reason"].startswith("finished")]
    if not finished:
        raise InputDataError(f"Every run failed to parcellate; see the failures table in {ws.timeseries}.")
    problem = too_many_failures(summary, options["allow_failures"])
    if problem:
        raise InputDataError(f"{problem} Or set parcellation.allow_failures (--allow-failures).")
    if summary.failed:
        logger.warning("%d run(s) failed and are left out (allowed: parcellation.allow_failures %s); "
                       "see %s.", len(summary.failed), options["allow_failures"], ws.timeseries)
    parameters = {r["output"]: r.get("parameters_sha256") for r in rows}
    _mark_done(ws, "parcellate", keys["parcellate"], outputs=finished, failed=summary.failed,
               run_parameters=[parameters[path] for path in finished])


#: How long ``run`` waits for runs that another process is parcellating (seconds).
_BUSY_WAIT_S = 7200.0


def _busy_runs(summary) -> list[str]:
    """Runs skipped because another live process holds their lock."""
    return [r["run"] for r in summary.rows if r["status"] == "skipped" and not r["reason"].startswith("finished")]


def _wait_for_other_processes(summary, runs, run_all):
    """Wait while other processes parcellate some of these runs (they hold the run locks),
    then return the summary of every run."""
    deadline = time.monotonic() + _BUSY_WAIT_S
    busy = _busy_runs(summary)
    while busy:
        if time.monotonic() > deadline:
            raise OutputBusyError(
                f"{len(busy)} run(s) are still being parcellated by another process after "
                f"{_BUSY_WAIT_S / 3600:g} h ({', '.join(busy[:3])}...): run this stage again later.")
        logger.info("Waiting for %d run(s) that another process is parcellating...", len(busy))
        time.sleep(2.0)
        busy = _busy_runs(run_all([r for r in runs if r.key in busy], progress=False))
    return run_all(runs, progress=False)  # every run finished or failed: the full summary


def _load_atlas(config: dict, reference_img):
    from .data.atlases import load_atlas

    return load_atlas(config["atlas"]["name"], target_img=reference_img, **config["atlas"]["options"])


def samples_stage(config: dict, ws: Workspace, keys: dict) -> None:
    """Whole runs (or fixed windows), subject-grouped folds, and each fold's scaler.

    ``samples.store: true`` streams the runs into a memory-mapped store (``samples/store``,
    one run in memory at a time) instead of ``samples/samples.npz``; the folds and scalers
    are the same (the scalers up to float32 rounding: fitted in float64 blocks).
    Under a multi-process launch (torchrun / srun) rank 0 builds and writes the samples while
    the other ranks wait, so that every rank then reads the same files.
    """
    from .data.parcellation import load_timeseries
    from .data.samples import Standardizer, build_samples
    from .data.store import build_store, fit_standardizer
    from .training.distributed import current_runtime, run_on_main

    def build() -> None:
        key = keys["samples"]
        options = config["samples"]
        store = options["store"]
        done = ws.samples / ("store/store.json" if store else "samples.npz")
        if _is_done(ws, "samples", key, output=done):
            return
        check_option("samples.mode", options["mode"], ("runs", "windows"))
        runs_mode = options["mode"] == "runs"
        if runs_mode and options["label"] != "task":
            raise InvalidParameterError(
                "samples.mode 'runs' (random crops from whole runs) labels samples by their run's "
                "task; for samples.label 'condition' set samples.mode to 'windows'."
            )
        paths = _require(ws, "parcellate", keys["parcellate"])["outputs"]
        _remove_samples(ws, store=not store)
        runs = (load_timeseries(p) for p in paths)
        cut = dict(classes=options["classes"], label=options["label"],
                   window=None if runs_mode else options["window"], start=options["start"],
                   step=None if runs_mode else options["step"], frame_stride=options["frame_stride"],
                   pad_short=runs_mode, empty_regions=options["empty_regions"])
        samples = build_store(runs, ws.samples / "store", **cut) if store else build_samples(runs, **cut)
        folds = _make_folds(config, samples)
        records = []
        for fold in folds:
            train = samples.subset(fold["train"])  # a view of the store: nothing read yet
            scaler = fit_standardizer(train) if store else Standardizer().fit(train)
            records.append({
                **{name: sorted(set(samples.subjects[fold[name]].tolist())) for name in ("train", "val", "test")},
                "standardizer": scaler.to_dict(),
            })
        if not store:
            samples.save(ws.samples / "samples.npz")
        write_json(ws.samples / "folds.json", {"mode": options["mode"], "store": store, "folds": records})
        _mark_done(ws, "samples", key, n_samples=len(samples), classes=samples.classes,
                   shape=list(samples.shape if store else samples.x.shape), n_folds=len(folds),
                   n_subjects=int(len(set(samples.subjects.tolist()))))

    run_on_main(current_runtime(config["training"]["device"]), build)


def _make_folds(config: dict, samples) -> list[dict]:
    """Subject-grouped K-fold (every subject tested once), or one split by ``samples.split``."""
    from .data.samples import split_by_subject
    from .training.crossval import subject_folds

    n_folds = config["crossval"]["folds"]
    if n_folds is None:
        return [split_by_subject(samples, config["samples"]["split"], seed=config["seed"])]
    return subject_folds(samples.subjects, n_folds, seed=config["seed"], n_val_folds=val_folds(config))


def val_folds(config: dict) -> int:
    """Subject groups held out for validation in each fold: by default one when the
    validation set chooses the epoch (``selection: best``), none when it does not
    (``selection: last``): on small cohorts every subject is needed for training."""
    value = config["crossval"]["val_folds"]
    best = config["training"]["selection"] == "best"
    if value is None:
        return 1 if best else 0
    if best and not value:
        raise InvalidParameterError(
            "training.selection 'best' chooses the epoch on validation subjects, but "
            "crossval.val_folds is 0: set crossval.val_folds to 1 (or more), or use selection 'last'.")
    return value


def n_folds(ws: Workspace) -> int:
    return len(json.loads((ws.samples / "folds.json").read_text())["folds"])


def load_fold(ws: Workspace, k: int) -> dict:
    """Fold ``k``'s standardised train / val / test samples (whole runs or windows).

    From a sample store (``samples.store``), ``train`` is a
    :class:`~fmri_ica.data.store.SampleStore` view standardised on the fly (nothing read
    yet); ``val`` and ``test`` are in memory, as from ``samples.npz``.
    """
    from .data.samples import SampleSet, Standardizer
    from .data.store import SampleStore

    folds = json.loads((ws.samples / "folds.json").read_text())
    fold = folds["folds"][k]
    scaler = Standardizer.from_dict(fold["standardizer"])
    if not folds.get("store"):
        samples = SampleSet.load(ws.samples / "samples.npz")
        return {name: scaler.transform(samples.subset(np.isin(samples.subjects, fold[name])))
                for name in ("train", "val", "test")}
    store = SampleStore(ws.samples / "store")
    views = {name: store.subset(np.isin(store.subjects, fold[name])).with_scaler(scaler)
             for name in ("train", "val", "test")}
    return {"train": views["train"], "val": views["val"].to_samples(), "test": views["test"].to_samples()}


def _remove_samples(ws: Workspace, *, store: bool) -> None:
    """Remove the sample store (``store``) or ``samples.npz`` with its sidecar: the format
    that the samples stage is not writing now."""
    if store:
        shutil.rmtree(ws.samples / "store", ignore_errors=True)
    else:
        for name in ("samples.npz", "samples.json"):
            (ws.samples / name).unlink(missing_ok=True)


def eval_windows(config: dict, samples):
    """The windows a model is scored and explained on: sliding windows over whole runs
    (``samples.step`` apart), or the fixed windows themselves."""
    from .data.samples import windows_from_runs

    options = config["samples"]
    if options["mode"] != "runs":
        return samples
    return windows_from_runs(samples, options["window"], options["step"] or options["window"],
                             frame_stride=options["frame_stride"])


def _train_dataset(config: dict, samples, y=None, *, noise_std: float):
    """Random crops of whole runs, new every epoch (``samples.mode: runs``), with Gaussian
    noise of ``noise_std``, or the windows; read per batch from a store view (standardised
    on the fly), or from memory."""
    from .data.store import SampleStore, StoreDataset, StoreRunCropDataset
    from .training import SequenceDataset
    from .training.data import RunCropDataset

    y = samples.y if y is None else y
    t = config["training"]
    store = isinstance(samples, SampleStore)
    if config["samples"]["mode"] != "runs":
        return StoreDataset(samples, y) if store else SequenceDataset(samples.x, y, samples.lengths)
    crops = dict(window=config["samples"]["window"], crops_per_run=t["crops_per_run"],
                 seed=config["seed"], noise_std=noise_std)
    if store:
        return StoreRunCropDataset(samples, y, **crops)
    return RunCropDataset(samples.x, y, samples.lengths, **crops)


def train_stage(config: dict, ws: Workspace, keys: dict, *, fold: int | None = None) -> None:
    """Train every model on every fold (or only ``fold``), then pool the held-out scores.

    Under a multi-process launch (torchrun / srun) every rank trains (DistributedDataParallel);
    rank 0 alone decides what is done and writes outputs and markers, the others wait.
    """
    from .training.distributed import current_runtime, run_on_main

    runtime = current_runtime(config["training"]["device"])
    for name in config["models"]:
        model_key = _model_key(keys["train"], config, name)
        pooled_key = _pooled_key(model_key, config)
        output = ws.model_dir(name) / "evaluation.json"
        if run_on_main(runtime, functools.partial(_is_done, ws, "train", pooled_key, name, output=output)):
            continue
        _require(ws, "samples", keys["samples"])
        if fold is not None and fold >= n_folds(ws):
            raise InvalidParameterError(
                f"Invalid value for 'fold': {fold}. This run has {n_folds(ws)} folds (0..{n_folds(ws) - 1}).")
        folds = range(n_folds(ws)) if fold is None else [fold]
        for k in folds:
            _train_fold(config, ws, name, k, config_hash(model_key, k))
        if fold is not None:
            if runtime.is_main:
                logger.info("Trained fold %d of %s; run the stage without a fold to pool the folds.", fold, name)
            continue

        def pool(name=name, pooled_key=pooled_key) -> None:
            _mark_done(ws, "train", pooled_key, name, **_pool_folds(config, ws, name))

        run_on_main(runtime, pool)


def _train_fold(config: dict, ws: Workspace, name: str, k: int, key: str) -> None:
    """One model on one fold (skipped when done): the model, its permuted-label null, scores.

    Under a multi-process launch every rank trains; rank 0 alone prepares the folder, scores
    the models and writes, while the others wait.
    """
    from .saliency.nulls import permuted_labels
    from .training.distributed import current_runtime, run_on_main

    runtime = current_runtime(config["training"]["device"])
    out = ws.fold_dir(name, k)

    permuted = config["sanity"]["permuted_labels"]

    def prepare() -> Path | None:
        if _marker(ws, "train-fold", key, f"{name}-{k}") and _fold_scored(out, permuted):
            logger.info("Skipping %s fold %d: already trained with these parameters.", name, k)
            return None
        return _fresh_model_dir(out, key)  # keeps a finished model: only its null trains

    out = run_on_main(runtime, prepare)
    if out is None:
        return
    data = load_fold(ws, k)
    train, test = data["train"], eval_windows(config, data["test"])
    # without validation subjects (selection: last) the per-epoch check runs on one window per
    # training run: it shows the fit, and chooses nothing
    val = eval_windows(config, data["val"]) if len(data["val"]) else _first_windows(config, train) or train
    if runtime.is_main:
        logger.info("Training %s, fold %d/%d: %d training runs of %d subjects, testing %d subjects",
                    name, k + 1, n_folds(ws), len(train), len(set(train.subjects.tolist())),
                    len(set(test.subjects.tolist())))
    result = _fit(config, name, train, val, out / "trained")
    selection = config["training"]["selection"]
    record = {"model": name, "fold": k, "classes": train.classes, "best_epoch": result.best_epoch,
              "selected_epoch": result.selected_epoch, "early_best": bool(result.early_best),
              "test_subjects": sorted(set(test.subjects.tolist()))}
    if permuted:
        n_classes = len(train.classes)
        seed = config["seed"] + 1000 + k
        y_train = permuted_labels(train.y, train.subjects, n_classes, seed=seed)
        y_val = permuted_labels(val.y, val.subjects, n_classes, seed=seed)
        _fit(config, name, train, val, out / "permuted", y=y_train, y_val=y_val)

    def finish() -> None:
        record["test"] = _run_scores(out / "trained" / selection, test)
        if permuted:
            record["permuted"] = {"test": _run_scores(out / "permuted" / selection, test)}
        write_json(out / "evaluation.json", record)
        _mark_done(ws, "train-fold", key, f"{name}-{k}")

    run_on_main(runtime, finish)


def _fold_scored(out: Path, permuted: bool) -> bool:
    """Whether the fold in ``out`` has its scores (and its permuted-label null's, if asked)."""
    path = out / "evaluation.json"
    return path.is_file() and (not permuted or "permuted" in json.loads(path.read_text()))


def _fit(config: dict, name: str, train, val, out: Path, *, y=None, y_val=None):
    """Train model ``name`` on ``train`` (a SampleSet or a standardised store view),
    checked every epoch on ``val`` (either kind too)."""
    from .data.store import SampleStore, StoreDataset
    from .models import build_model
    from .training import SequenceDataset, fit

    options = dict(config["models"][name])
    kind = options.pop("kind")
    t = config["training"]
    options.pop("input_noise", None)
    seed_everything(config["seed"])
    model = build_model(kind, len(train.region_names), len(train.classes), **options)
    y_val = val.y if y_val is None else y_val
    val_set = (StoreDataset(val, y_val) if isinstance(val, SampleStore)
               else SequenceDataset(val.x, y_val, val.lengths))
    return fit(
        model, _train_dataset(config, train, y, noise_std=input_noise(config, name)), val_set, epochs=t["epochs"], lr=t["lr"],
        batch_size=t["batch_size"], patience=t["patience"], weight_decay=t["weight_decay"],
        selection=t["selection"], min_epochs=t["min_epochs"], seed=config["seed"], out_dir=out,
        device=t["device"], resume=True, progress=True,
    )


def _run_scores(checkpoint: Path, windows) -> dict:
    """Window- and run-level scores of the model in ``checkpoint`` on ``windows``, with the
    per-run predictions (the run's mean log-probability over its windows)."""
    from .training import load_model
    from .training.scores import run_level_scores

    return run_level_scores(load_model(checkpoint), windows)


def _pool_folds(config: dict, ws: Workspace, name: str) -> dict:
    """Every subject's held-out predictions from the fold that tested it: pooled scores with
    bootstrap intervals over subjects, per-fold scores, and the confusion figure."""
    from .reporting.plotting import plot_confusion_matrix
    from .training.scores import pooled_scores

    records = [json.loads((ws.fold_dir(name, k) / "evaluation.json").read_text())
               for k in range(n_folds(ws))]
    classes = records[0]["classes"]
    pooled = pooled_scores([r["test"] for r in records], classes, seed=config["seed"])
    evaluation = {"model": name, "kind": config["models"][name]["kind"], "classes": classes,
                  "test": pooled, "folds": records,
                  "selected_epochs": [r["selected_epoch"] for r in records],
                  "early_best_folds": [r["fold"] for r in records if r["early_best"]]}
    if config["sanity"]["permuted_labels"] and all("permuted" in r for r in records):
        evaluation["permuted"] = pooled_scores([r["permuted"]["test"] for r in records], classes,
                                               seed=config["seed"])
    write_json(ws.model_dir(name) / "evaluation.json", evaluation)
    plot_confusion_matrix(pooled["confusion_matrix"], classes, path=ws.model_dir(name) / "confusion_test.png",
                          title=f"{name}: held-out subjects, {len(records)} folds")
    if evaluation["early_best_folds"]:
        logger.warning("%s: in fold(s) %s the selected epoch is one of the first: the model may "
                       "be close to its initialisation.", name, evaluation["early_best_folds"])
    logger.info("%s: run accuracy %.3f [%.3f, %.3f] over %d folds (balanced %.3f)", name,
                pooled["run_accuracy"], *pooled["run_accuracy_ci"], len(records),
                pooled["run_balanced_accuracy"])
    return {"test_accuracy": pooled["run_accuracy"]}


def _fresh_model_dir(out: Path, key: str) -> Path:
    """The model folder for ``key``: an interrupted run of the same key is kept (and resumed),
    one trained with other parameters is removed."""
    stamp = out / "pipeline_key.txt"
    if out.exists() and (not stamp.is_file() or stamp.read_text() != key):
        logger.info("Parameters of %s changed: training it again.", out)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key)
    return out


def explain_stage(config: dict, ws: Workspace, keys: dict, *, fold: int | None = None) -> None:
    """Saliency of every fold's model and its null models on that fold's held-out subjects,
    placed in run time; sanity checks and group tests across subjects.

    Each fold is explained on its own (only its windows in memory) and saved under
    ``saliency/<model>/fold-<k>/``; folds already explained with these parameters are
    loaded. With ``fold``, only that fold is explained (an array task; it needs that fold
    trained, not the pooled train stage) and the stage is not marked done: run it once
    more without a fold to pool the folds.
    """
    from .saliency.sanity import explain_model

    for name in config["models"]:
        model_key = _model_key(keys["explain"], config, name)
        if _is_done(ws, "explain", model_key, name, output=ws.saliency_dir(name) / "metrics.json"):
            continue
        train_key = _model_key(keys["train"], config, name)
        if fold is None:
            _require(ws, "train", _pooled_key(train_key, config), name)
        else:
            _require(ws, "samples", keys["samples"])
            if fold >= n_folds(ws):
                raise InvalidParameterError(
                    f"Invalid value for 'fold': {fold}. This run has {n_folds(ws)} folds (0..{n_folds(ws) - 1}).")
        for k in range(n_folds(ws)) if fold is None else [fold]:
            _explain_fold(config, ws, name, k, model_key, train_key)
        if fold is not None:
            logger.info("Explained fold %d of %s; run the stage without a fold to pool the folds.", fold, name)
            continue
        _remove_stale_folds(ws, name)
        evaluation = json.loads((ws.model_dir(name) / "evaluation.json").read_text())
        summary = explain_model([_explained_fold_dir(ws, name, k) for k in range(n_folds(ws))],
                                ws.saliency_dir(name), config=config, evaluation=evaluation,
                                ground_truth=_ground_truth_for(config, ws))
        _mark_done(ws, "explain", model_key, name, **summary)
    if fold is not None:
        return  # the linear reference is fitted when the folds are pooled
    linear_key = _model_key(keys["explain"], config, "linear")
    if not config["report"]["linear_baseline"]:
        _remove_linear(ws)
    elif not _is_done(ws, "explain", linear_key, "linear"):
        _require(ws, "samples", keys["samples"])
        _remove_linear(ws)
        summary = _explain_linear(config, ws)
        _mark_done(ws, "explain", linear_key, "linear", **summary)


def _explained_fold_dir(ws: Workspace, name: str, k: int) -> Path:
    return ws.saliency_dir(name) / f"fold-{k}"


def _explain_fold(config: dict, ws: Workspace, name: str, k: int, model_key: str, train_key: str) -> None:
    """Explain model ``name`` on fold ``k`` (skipped when done with these parameters)."""
    from .saliency.sanity import explain_fold

    key = config_hash(model_key, k)
    if _marker(ws, "explain-fold", key, f"{name}-{k}"):
        logger.info("Skipping the saliency of %s fold %d: already done with these parameters.", name, k)
        return
    if (_marker(ws, "train-fold", config_hash(train_key, k), f"{name}-{k}") is None
            or not _fold_scored(ws.fold_dir(name, k), config["sanity"]["permuted_labels"])):
        raise InputDataError(
            f"Fold {k} of model {name!r} has not been trained with the current parameters in "
            f"{ws.root}: run 'fmri-ica train CONFIG --fold {k}' (or the train stage) first.")
    explain_fold(ws.fold_dir(name, k), _fold_windows(config, ws, k), _explained_fold_dir(ws, name, k),
                 config=config, fold=k, n_folds=n_folds(ws))
    _mark_done(ws, "explain-fold", key, f"{name}-{k}")


def _remove_stale_folds(ws: Workspace, name: str) -> None:
    """Forget explained folds beyond this run's number of folds (an earlier configuration's)."""
    for path in ws.saliency_dir(name).glob("fold-*"):
        k = path.name.removeprefix("fold-")
        if not k.isdigit() or int(k) >= n_folds(ws):
            shutil.rmtree(path)
            ws.marker("explain-fold", f"{name}-{k}").unlink(missing_ok=True)


def _fold_windows(config: dict, ws: Workspace, k: int):
    return eval_windows(config, load_fold(ws, k)["test"])


def _remove_linear(ws: Workspace) -> None:
    """Forget the linear reference's outputs (switched off, or to be recomputed)."""
    for path in (ws.saliency_dir("linear"), ws.maps_dir("linear")):
        shutil.rmtree(path, ignore_errors=True)
    for stage in ("explain", "project"):
        ws.marker(stage, "linear").unlink(missing_ok=True)


def fit_linear(config: dict, data: dict):
    """The linear reference on one fold (``load_fold``'s output) at its best setting, one
    run-aligned window per run: ``(model, test windows, predictions)``, or None when the
    windows do not share one length."""
    from .models.linear import LinearBaseline

    train, test = _first_windows(config, data["train"]), _first_windows(config, data["test"])
    if train is None or test is None:
        return None
    model = LinearBaseline(seed=config["seed"]).fit(train.x, train.y)
    return model, test, model.predict(test.x)


def _explain_linear(config: dict, ws: Workspace) -> dict:
    """The linear reference on every fold, at its best setting: one run-aligned window per
    run (it is not shift-invariant). Pooled run accuracy with its interval, and the mean
    over folds of its |weight| maps, scored like the saliency maps."""
    from .saliency.runtime import write_class_maps
    from .training.scores import pooled_scores, scores_from_predictions

    folds, maps = [], []
    for k in range(n_folds(ws)):
        data = load_fold(ws, k)
        fitted = fit_linear(config, data)
        if fitted is None:
            logger.info("Linear reference skipped: it needs windows of one length.")
            return {"skipped": True}
        model, test, pred = fitted
        scores = scores_from_predictions(test.y, pred, len(test.classes))
        runs = [{"run": str(r), "subject": str(s), "label": int(y), "pred": int(p)}
                for r, s, y, p in zip(test.runs, test.subjects, test.y, pred, strict=True)]
        folds.append({"runs": runs, "n_windows": len(test), "window_accuracy": scores["accuracy"],
                      "run_accuracy": scores["accuracy"]})
        maps.append(model.weight_maps(len(test.classes)))
    classes, regions = test.classes, test.region_names
    pooled = pooled_scores(folds, classes, seed=config["seed"])
    class_maps = np.mean(maps, axis=0)
    metrics = {"test_accuracy": pooled["accuracy"], "test": pooled, "class_maps_only": True}
    metrics.update(planted_region_metrics(class_maps, classes, regions, _ground_truth_for(config, ws)))
    out = ws.saliency_dir("linear")
    s = config["samples"]
    frames = [s["start"], s["start"] + class_maps.shape[1] * s["frame_stride"]]
    write_class_maps(out, list(class_maps), classes=classes, regions=regions, t_r=test.t_r,
                     frames=[frames] * len(classes), frame_stride=s["frame_stride"],
                     aggregate="mean over folds of |weights| (one run-aligned window)",
                     scaling="none", subjects=sorted(set(pooled_subjects(pooled))))
    write_json(out / "metrics.json", metrics)
    logger.info("linear reference: run accuracy %.3f [%.3f, %.3f]", pooled["accuracy"],
                *pooled["run_accuracy_ci"])
    return {"test_accuracy": pooled["accuracy"]}


def pooled_subjects(pooled: dict) -> list[str]:
    return [r["subject"] for r in pooled["runs"]]


def _first_windows(config: dict, samples):
    """One run-aligned window per run (runs mode), or the windows if they share one length;
    in memory (a SampleSet), also from a store view (only those windows are read)."""
    from .data.store import SampleStore

    window = config["samples"]["window"]
    store = isinstance(samples, SampleStore)
    if config["samples"]["mode"] == "runs":
        keep = samples.lengths >= window
        if not keep.any():
            return None
        if store:
            return samples.subset(keep).to_samples(time=window)
        out = samples.subset(keep)
        out.x, out.task_on = out.x[:, :window], out.task_on[:, :window]
        out.lengths = np.full(len(out), window, dtype=np.int64)
        return out
    if len(set(samples.lengths.tolist())) > 1:
        return None
    first = {}  # each run's earliest window
    for i in np.argsort(samples.starts, kind="stable"):
        first.setdefault(str(samples.runs[i]), i)
    out = samples.subset(sorted(first.values()))
    return out.to_samples() if store else out


def load_class_maps(directory: Path) -> tuple[list, dict]:
    """Per-class (time, region) maps in run time and their sidecar (explain stage)."""
    from .saliency.runtime import read_class_maps

    return read_class_maps(directory)


def project_stage(config: dict, ws: Workspace, keys: dict) -> None:
    """Each model's per-class maps in run time to 4D/3D NIfTI on the data grid, the group
    tests' z / p / FDR-thresholded maps, and voxel-space localisation scores when a
    simulator's ground truth says where the activation is."""
    from .saliency.projection import save_saliency_maps

    atlas = None
    stride = config["samples"]["frame_stride"]
    for name in _explained(config, ws, keys):
        key = _model_key(keys["project"], config, name)
        if _is_done(ws, "project", key, name, output=ws.maps_dir(name)):
            continue
        shutil.rmtree(ws.maps_dir(name), ignore_errors=True)  # no maps of other settings or subjects
        atlas = atlas or _atlas_for_outputs(config, ws, keys)[0]
        group = ws.saliency_dir(name)
        paths = []
        for prefix, directory in [("group", group)] + [(d.name, d) for d in sorted(group.glob("sub-*"))]:
            maps, meta = load_class_maps(directory)
            values = {c: _to_atlas_regions(np.asarray(m), meta["regions"], atlas)
                      for c, m in zip(meta["classes"], maps, strict=True)}
            paths += save_saliency_maps(
                ws.maps_dir(name), values, atlas, t_r=meta["t_r"] / stride, stride=stride, model=name,
                method=_method(config, name), frames=dict(zip(meta["classes"], meta["frames"], strict=True)),
                space=atlas.space, prefix=prefix, n_bins=config["saliency"]["n_bins"],
                extra={"aggregate": meta.get("aggregate"), "scaling": meta.get("scaling"),
                       "subjects": meta.get("subjects")},
            )
            if prefix == "group":
                group_values, group_meta = values, meta
        if name != "linear":
            paths += _project_group_tests(config, ws, name, atlas, group_meta)
        _score_localisation(config, ws, name, group_values, atlas)
        _mark_done(ws, "project", key, name, files=[str(p) for p in paths])


def _project_group_tests(config: dict, ws: Workspace, name: str, atlas, meta: dict) -> list:
    """z, -log10 p and FDR-thresholded z maps of trained vs each null, per class (time bins)."""
    from dataclasses import replace

    from .saliency.group import write_group_maps
    from .saliency.sanity import load_group_result

    metrics = json.loads((ws.saliency_dir(name) / "metrics.json").read_text())
    paths = []
    for null, entry in metrics["sanity"]["nulls"].items():
        for class_name, summary in entry.get("group", {}).items():
            result = load_group_result(ws.saliency_dir(name), null, class_name, summary)
            on_atlas = {f: _to_atlas_regions(getattr(result, f).astype(np.float32), meta["regions"], atlas,
                                             fill=1.0 if f in ("p", "q", "p_fwer") else 0.0)
                        for f in ("t", "p", "q", "z", "p_fwer")}
            result = replace(result, **on_atlas, significant=on_atlas["q"] <= result.alpha)
            paths += write_group_maps(ws.maps_dir(name) / "group-tests", result, atlas, model=name,
                                      class_name=class_name, null=null, prefix="group",
                                      space=atlas.space, t_r_bin=_bin_spacing(meta, class_name, config))
    return paths


def _bin_spacing(meta: dict, class_name: str, config: dict) -> float:
    """Seconds between time-bin centres of a class's map."""
    first, stop = meta["frames"][meta["classes"].index(class_name)]
    n_steps = (stop - first) / config["samples"]["frame_stride"]
    return float(n_steps / config["saliency"]["n_bins"] * meta["t_r"])


def _score_localisation(config: dict, ws: Workspace, name: str, values: dict, atlas) -> None:
    """Voxel-space localisation of the time-averaged class maps (and the null models' maps)
    against the simulator's activation centres: share of top voxels near a centre vs chance."""
    truth = _load_ground_truth(config)
    if not any(t.get("centres_mm") for t in (truth or {}).get("tasks", {}).values()):
        return
    result = {"what": "share of the top 5% voxels of each class's time-averaged map within 12 mm "
                      "of one of the task's planted activation centres (population centres)",
              **_localisation(values, atlas, truth)}
    nulls = ws.saliency_dir(name) / "nulls"
    for folder in sorted(nulls.iterdir()) if nulls.is_dir() else []:
        maps, meta = load_class_maps(folder)
        null_values = {c: _to_atlas_regions(np.asarray(m), meta["regions"], atlas)
                       for c, m in zip(meta["classes"], maps, strict=True)}
        result.setdefault("nulls", {})[folder.name] = _localisation(null_values, atlas, truth)
    write_json(ws.maps_dir(name) / "localisation.json", result)


def _localisation(values: dict, atlas, truth: dict) -> dict:
    from .saliency.localisation import share_near_centres
    from .saliency.projection import time_average_img

    scores = {}
    for class_name, value in values.items():
        centres = truth["tasks"].get(class_name, {}).get("centres_mm")
        if centres:
            img = time_average_img(np.nan_to_num(value), atlas)
            scores[class_name] = share_near_centres(img, centres, radius_mm=12.0, top=0.05)
    mean = {key: float(np.mean([s[key] for s in scores.values()])) for key in ("share", "chance", "lift")}
    return {"mean": mean, "per_class": scores}


def _method(config: dict, name: str) -> str:
    return "weights" if name == "linear" else config["saliency"]["method"]


def _explained(config: dict, ws: Workspace, keys: dict) -> list[str]:
    """The models whose saliency is done with the current parameters (or a clear error),
    plus the linear reference when it is on and was computed."""
    for name in config["models"]:
        _require(ws, "explain", _model_key(keys["explain"], config, name), name)
    names = list(config["models"])
    linear = _marker(ws, "explain", _model_key(keys["explain"], config, "linear"), "linear")
    if config["report"]["linear_baseline"] and linear and not linear.get("skipped"):
        names.append("linear")
    return names


def _atlas_for_outputs(config: dict, ws: Workspace, keys: dict):
    """The atlas on the data grid, and the sidecar of one parcellated run of this config."""
    from .data.parcellation import load_timeseries

    _, sidecar = load_timeseries(_require(ws, "parcellate", keys["parcellate"])["outputs"][0])
    return _load_atlas(config, sidecar["source_bold"]), sidecar


def _to_atlas_regions(maps: np.ndarray, regions: list[str], atlas, fill: float = 0.0) -> np.ndarray:
    """(..., region) in sample order -> (..., atlas region) in the atlas's order, ``fill`` if absent."""
    names = atlas.labels["name"].astype(str).tolist()
    out = np.full((*maps.shape[:-1], len(names)), fill, dtype=np.float32)
    position = {name: i for i, name in enumerate(names)}
    for j, name in enumerate(regions):
        if name in position:
            out[..., position[name]] = maps[..., j]
    return out


def _runs_for_report(ws: Workspace):
    """What the report needs of the samples (classes, t_r, labels, subjects, task-ON flags),
    from ``samples.npz`` or, without reading its frames, from the sample store."""
    from types import SimpleNamespace

    from .data.samples import SampleSet

    if not json.loads((ws.samples / "folds.json").read_text()).get("store"):
        return SampleSet.load(ws.samples / "samples.npz")
    from .data.store import SampleStore

    store = SampleStore(ws.samples / "store")
    return SimpleNamespace(classes=store.classes, t_r=store.t_r, y=store.y, subjects=store.subjects,
                           task_on=store.task_on())


def report_stage(config: dict, ws: Workspace, keys: dict) -> None:
    """Figures for every model and class, trained beside null models, then the HTML report.
    Figures whose inputs did not change since the last report are reused."""
    from .reporting.report import ModelResult, Report, write_report

    if _is_done(ws, "report", keys["report"], output=ws.report):
        return
    names = _explained(config, ws, keys)
    atlas, sidecar = _atlas_for_outputs(config, ws, keys)
    runs = _runs_for_report(ws)
    group = {name: _group_figure_task(config, ws, name) for name in names if name != "linear"}
    results = _draw_class_figures(config, ws, names, atlas, runs, extra=[task for _, task in group.values()])
    _mark_planted(results, _ground_truth_for(config, ws))
    models, curves, notes = [], {}, []
    for name in names:
        metrics = json.loads((ws.saliency_dir(name) / "metrics.json").read_text())
        linear = name == "linear"
        evaluation = (metrics["test"] if linear else
                      json.loads((ws.model_dir(name) / "evaluation.json").read_text()))
        if not linear and evaluation.get("early_best_folds"):
            notes.append(f"{name}: in fold(s) {evaluation['early_best_folds']} the kept weights are those "
                         "of one of the first epochs: that model may be close to its initialisation.")
        localisation = ws.maps_dir(name) / "localisation.json"
        if localisation.is_file():
            metrics["localisation"] = json.loads(localisation.read_text())["mean"]
        confusion = ws.model_dir(name) / "confusion_test.png"
        models.append(ModelResult(
            name=name, class_names=runs.classes, evaluation=evaluation if linear else evaluation["test"],
            saliency_metrics=metrics, classes=results[name], kind="linear" if linear else "recurrent",
            description=_describe(config, name),
            permuted=None if linear else evaluation.get("permuted"),
            group_figure=None if linear else group[name][0],
            confusion_figure=confusion if not linear and confusion.is_file() else None,
        ))
        if not linear:
            curves[name] = _family_curves(ws.saliency_dir(name) / "curves.npz")
    report = Report(
        title="fmri_ica report", summary=_summary_table(config, ws, runs, sidecar, atlas),
        models=models, saliency_over_time=_over_time_figure(config, ws, runs, curves), parameters=config,
        notes=notes,
    )
    write_report(ws.report, report, embed_viewers=config["report"]["embed_viewers"])
    logger.info("Report: %s (%.1f MB)", ws.report, ws.report.stat().st_size / 1e6)
    _mark_done(ws, "report", keys["report"], report=str(ws.report))


def _over_time_figure(config: dict, ws: Workspace, runs, curves: dict):
    """The trained-vs-null time curves of every recurrent model (cached), or None."""
    from .reporting.cache import figure_key

    if not curves:
        return None
    stride = config["samples"]["frame_stride"]
    arrays = [np.asarray(c) for families in curves.values() for c in families.values()]
    key = figure_key(sorted((m, sorted(f)) for m, f in curves.items()), *arrays, runs.t_r, stride)
    return _draw_cached(ws.figures / "saliency_over_time.png", key, "plot_trained_vs_nulls", curves,
                        t_r=runs.t_r / stride, stride=stride,
                        title="When is the evidence? Saliency per time step of the window: trained vs null models")


def _family_curves(path: Path) -> dict:
    """Per-window time curves of the trained model and each null family (draws pooled)."""
    families: dict = {}
    with np.load(path) as data:
        for key in data.files:
            if key.endswith("/curves"):
                variant = key.split("/")[0]
                family = "untrained" if variant.startswith("untrained") else variant
                families.setdefault(family, []).append(data[key])
    return {family: np.concatenate(parts) for family, parts in families.items()}


def _group_figure_task(config: dict, ws: Workspace, name: str):
    """(path, drawing task) of the glass brains of the FDR-thresholded group z maps, trained vs
    the permuted-label model (the null that went through the same training); (None, None)
    without such maps. The task is None when the figure is cached.

    The untrained networks are not the null for this test: any training moves every subject's
    map the same way, so trained vs untrained differs even when nothing was learned."""
    from .reporting.cache import figure_key, is_cached

    folder = ws.maps_dir(name) / "group-tests"
    images = sorted(folder.glob("*null-permuted*stat-z_thresh-fdr*_saliency.nii.gz")) if folder.is_dir() else []
    if not images:
        return None, None
    path = ws.figures / name / "group_tests.png"
    title = (f"{name}: where trained saliency exceeds the permuted-label model's "
             f"(sign-flip test across subjects, FDR {config['sanity']['fdr']:g})")
    key = figure_key([p.name for p in images], [sha256_file(p) for p in images], title)
    if is_cached(path, key):
        return path, None
    return path, functools.partial(_draw_cached, path, key, "plot_group_glass_brains",
                                   [str(p) for p in images], title=title)


def _draw_cached(path: Path, key: str, function: str, *args, **kwargs) -> Path:
    """Draw ``reporting.plotting.<function>(*args, path=..., **kwargs)`` and record its key."""
    from .reporting import plotting
    from .reporting.cache import cached_figure

    return cached_figure(path, key, lambda p: getattr(plotting, function)(*args, path=p, **kwargs))


def _draw_class_figures(config: dict, ws: Workspace, names: list[str], atlas, runs,
                        extra: list | None = None) -> dict:
    """ClassResults per model; figures whose inputs did not change since the last report are
    reused (:func:`class_figures`), the others drawn in two processes, with ``extra`` drawing
    tasks (figures dominate the report's time).

    Surface views, animations, top-region bars and interactive viewers are drawn for the
    first configured model only (the others get glass brains, heatmaps (not the linear
    reference, whose weights have no time course of evidence) and the top-region table),
    to keep the report's run time proportionate.
    """
    from .reporting.report import class_figures

    options, stride = config["report"], config["samples"]["frame_stride"]
    lead = config["samples"]["start"] // stride if config["samples"]["mode"] == "runs" else 0
    primary = next(iter(config["models"]), None)
    jobs = []
    for name in names:
        maps, meta = load_class_maps(ws.saliency_dir(name))
        values = [np.nan_to_num(_to_atlas_regions(np.asarray(m), meta["regions"], atlas)) for m in maps]
        vmax = float(np.percentile(np.concatenate([v.ravel() for v in values]), 99.5)) or None
        for c, class_name in enumerate(meta["classes"]):
            detailed = name == primary
            jobs.append((name, functools.partial(
                class_figures, ws.figures / name, values[c], atlas, t_r=runs.t_r / stride, model=name,
                class_name=class_name, stride=stride,
                task_on=_class_task_on(runs, c, len(values[c]), 0 if name == "linear" else lead),
                n_bins=config["saliency"]["n_bins"], surface=options["surface"] and detailed,
                animation=options["animation"] and detailed, interactive=detailed, top_plot=detailed,
                heatmap=name != "linear", vmax=vmax,
            )))
    found = [job(draw=False) for _, job in jobs]
    missing = [i for i, result in enumerate(found) if result is None]
    tasks = [jobs[i][1] for i in missing] + [task for task in extra or [] if task is not None]
    drawn = _run_parallel(tasks, desc="report figures")
    for i, result in zip(missing, drawn, strict=False):
        found[i] = result
    results: dict = {name: [] for name in names}
    for (name, _), result in zip(jobs, found, strict=True):
        result.n_samples = int(np.sum(runs.y == runs.classes.index(result.name)))
        results[name].append(result)
    return results


def _run_parallel(tasks: list, desc: str) -> list:
    """Results of the callables ``tasks``, in order: in two processes when there are several,
    with a progress bar."""
    from joblib import Parallel, delayed

    if len(tasks) <= 1:
        return [task() for task in tasks]
    logger.info("Drawing %d figure sets in 2 processes", len(tasks))
    results = Parallel(n_jobs=2, return_as="generator")(delayed(task)() for task in tasks)
    return list(progress(results, desc=desc, total=len(tasks), unit="figure set"))


def _class_task_on(runs, c: int, n_steps: int, lead: int = 0):
    """Task-ON time steps of a class in run time (ON in most of its runs); ``lead`` steps
    before the first kept frame (``samples.start``) are not ON."""
    if not np.any(runs.y == c):
        return None
    on = np.concatenate([np.zeros(lead, bool), runs.task_on[runs.y == c].mean(axis=0) > 0.5])
    return np.pad(on, (0, max(0, n_steps - on.size)))[:n_steps]


def _mark_planted(results: dict, ground_truth: dict | None) -> None:
    """With a simulator's ground truth, say which top regions were planted: for this task
    only ("task") or for every task ("shared": they carry no information about which task)."""
    tasks = (ground_truth or {}).get("tasks", {})
    shared = set((ground_truth or {}).get("shared_names", []))
    for classes in results.values():
        for result in classes:
            if result.name in tasks and result.top_regions is not None:
                planted = set(tasks[result.name].get("planted_names", [])) - shared
                result.top_regions["planted"] = ["task" if r in planted else "shared (all tasks)" if r in shared
                                                  else "" for r in result.top_regions["region"]]


def input_noise(config: dict, name: str) -> float:
    """Model ``name``'s training input noise: its own ``input_noise``, else ``training``'s."""
    return config["models"][name].get("input_noise", config["training"]["input_noise"])


def _noise_levels(config: dict) -> str:
    """Each model's training input noise, e.g. ``1 (ica-lstm), 0 (lstm)``, or one number."""
    levels = {name: input_noise(config, name) for name in config["models"]}
    if len(set(levels.values())) == 1:
        return f"{next(iter(levels.values())):g}"
    return ", ".join(f"{value:g} ({name})" for name, value in levels.items())


def _describe(config: dict, name: str) -> str:
    if name == "linear":
        return ("L2 logistic regression on the flattened (time x region) windows; its maps are "
                "|weights|. A strong linear reference: what the recurrent models add is the difference.")
    spec = dict(config["models"][name])
    kind = spec.pop("kind")
    label = {"ica": "input-cell attention RNN", "lstm": "LSTM", "bilstm": "bidirectional LSTM",
             "gru": "GRU", "self_attention": "LSTM + self-attention"}.get(kind, kind)
    options = ", ".join(f"{k}={v}" for k, v in spec.items())
    return f"{label} ({options}); saliency: {config['saliency']['method']}."


def _summary_table(config: dict, ws: Workspace, runs, sidecar: dict, atlas) -> dict:
    folds = json.loads((ws.samples / "folds.json").read_text())["folds"]
    samples, t = config["samples"], config["training"]
    evaluation = (f"subject-grouped {len(folds)}-fold cross-validation: every subject tested once by the fold "
                  "that did not train on it" if config["crossval"]["folds"] else
                  "one subject split (train / val / test subjects: {})".format(
                      " / ".join(str(len(folds[0][k])) for k in ("train", "val", "test"))))
    step = samples["step"] or samples["window"]
    training = (f"random {samples['window']}-step crops of whole runs, {t['crops_per_run']} per run "
                f"per epoch; tested on windows every {step} steps, a run predicted by "
                "its windows' mean log-probability" if samples["mode"] == "runs" else
                f"windows of {samples['window']} steps" + (f" every {samples['step']} steps" if samples["step"] else ""))
    return {
        "Data": f"{config['data']['root']} ({sidecar.get('layout', config['data']['layout'])} layout)",
        "Evaluation": evaluation,
        "Subjects": len(set(runs.subjects.tolist())),
        "Runs": len(runs),
        "Samples": training,
        "Training": (f"{t['epochs']} epochs, weight decay {t['weight_decay']:g}, input noise "
                     f"{_noise_levels(config)}, selection: {t['selection']}"),
        "Classes": ", ".join(runs.classes),
        "Atlas": f"{atlas.name} ({atlas.n_regions} regions, {atlas.space})",
        "TR (s)": f"{sidecar['t_r']:g}" + (f" x stride {samples['frame_stride']}" if samples["frame_stride"] > 1 else ""),
        "Normalisation": f"{config['parcellation']['standardize']}, then per-region z-score (training statistics)",
        "Saliency": f"{config['saliency']['method']}, top {config['saliency']['top_k']:.0%} cells for shares",
    }


_STAGE_FUNCTIONS = {
    "parcellate": parcellate_stage,
    "samples": samples_stage,
    "train": train_stage,
    "explain": explain_stage,
    "project": project_stage,
    "report": report_stage,
}


def _ground_truth_for(config: dict, ws: Workspace) -> dict | None:
    """The simulator's ground truth with each task's planted regions named in this run's
    atlas: for activations placed off the atlas (blobs), the atlas regions they cover."""
    from .data.simulate import planted_regions_for_atlas

    truth = _load_ground_truth(config)
    tasks = (truth or {}).get("tasks", {})
    if not tasks or any(t.get("planted_names") for t in tasks.values()) or "activation_image" not in truth:
        return truth
    atlas, _ = _atlas_for_outputs(config, ws, _stage_keys(config, ws))
    planted = planted_regions_for_atlas(config["data"]["root"], atlas)
    for task, entry in tasks.items():
        entry["planted_names"] = planted.get(task, {}).get("names") or []
    return truth


def _load_ground_truth(config: dict) -> dict | None:
    root = config["data"]["root"]
    path = Path(root) / "ground_truth.json" if root else None
    return json.loads(path.read_text()) if path and path.is_file() else None

