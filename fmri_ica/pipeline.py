"""The whole pipeline, one resumable stage at a time.

    parcellate -> samples -> train -> explain -> project -> report

Each stage writes its outputs atomically under the output folder and a marker in
``<output>/.stages/`` holding a hash of the configuration it depends on. Re-running skips a
stage whose marker matches; changing a parameter re-runs that stage and the stages after it.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._utils import package_versions, seed_everything, write_json
from .config import config_hash
from .exceptions import InputDataError, InvalidParameterError
from .saliency.scoring import accuracy_gate, class_means, planted_region_metrics, saliency_metrics

logger = logging.getLogger(__name__)

__all__ = ["STAGES", "Workspace", "run_pipeline"]

STAGES = ("parcellate", "samples", "train", "explain", "project", "report")


@dataclass(frozen=True)
class Workspace:
    """Where every stage reads and writes, below one output folder."""

    root: Path

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

    def maps_dir(self, name: str) -> Path:
        return self.root / "maps" / name

    def marker(self, stage: str, name: str = "") -> Path:
        return self.root / ".stages" / f"{stage}{'-' + name if name else ''}.json"


def _marker(ws: Workspace, stage: str, key: str, name: str = "") -> dict | None:
    """The stage's marker if it was written with ``key``, else None."""
    path = ws.marker(stage, name)
    marker = json.loads(path.read_text()) if path.is_file() else None
    return marker if marker and marker.get("key") == key else None


def _is_done(ws: Workspace, stage: str, key: str, name: str = "", output: Path | None = None) -> bool:
    """True when the stage ran with ``key`` and its main ``output`` is still there."""
    if _marker(ws, stage, key, name) is None or (output is not None and not output.exists()):
        return False
    logger.info("Skipping %s%s: already done with these parameters.", stage, f" ({name})" if name else "")
    return True


def _require(ws: Workspace, stage: str, key: str, name: str = "") -> dict:
    """The marker of an upstream stage run with the current parameters, or a clear error."""
    marker = _marker(ws, stage, key, name)
    if marker is None:
        what = f"{stage} stage ({name})" if name else f"{stage} stage"
        raise InputDataError(
            f"The {what} has not been run with the current parameters in {ws.root}: run "
            f"'fmri-ica run CONFIG --stage {stage}' (or the whole pipeline) first."
        )
    return marker


def _mark_done(ws: Workspace, stage: str, key: str, name: str = "", **info) -> None:
    write_json(ws.marker(stage, name), {"key": key, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **info})


def _stage_keys(config: dict, ws: Workspace) -> dict[str, str]:
    """Hash of the config each stage depends on, chained so later stages follow earlier ones.

    The samples key also covers the list of parcellated runs, so a run that parcellates now
    but failed before re-runs everything downstream. Settings that do not change results
    (parallel jobs, device) are left out, so that e.g. parcellating with many jobs and
    training on a GPU node reuse each other's work.
    """
    parcellation = {k: v for k, v in config["parcellation"].items() if k != "jobs"}
    training = {k: v for k, v in config["training"].items() if k != "device"}
    keys = {"parcellate": config_hash(config["data"], config["atlas"], parcellation)}
    runs = (_marker(ws, "parcellate", keys["parcellate"]) or {}).get("outputs")
    keys["samples"] = config_hash(keys["parcellate"], runs, config["samples"], config["seed"])
    keys["train"] = config_hash(keys["samples"], training, config["seed"])
    keys["explain"] = config_hash(keys["train"], config["saliency"])
    keys["project"] = keys["explain"]
    keys["report"] = config_hash(keys["explain"], config["report"], config["models"])
    return keys


def _model_key(stage_key: str, config: dict, name: str) -> str:
    """A stage's key for one model: changes with the model's own settings."""
    return config_hash(stage_key, config["models"].get(name, name))


def run_pipeline(config: dict, stages: tuple[str, ...] = STAGES, *, shard=None) -> Workspace:
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

    Returns the :class:`Workspace` holding the outputs; ``workspace.report`` is the HTML report.
    """
    if "linear" in config["models"]:
        raise InvalidParameterError("'models' must not name a model 'linear': that name is the linear reference's.")
    ws = Workspace(Path(config["output"]).resolve())
    ws.root.mkdir(parents=True, exist_ok=True)
    write_json(ws.root / "config.json", {"config": config, "versions": package_versions()})
    for stage in STAGES:
        if stage in stages:
            logger.info("Stage %s", stage)
            keys = _stage_keys(config, ws)  # after parcellation, the runs it finished count
            if stage == "parcellate":
                parcellate_stage(config, ws, keys, shard=shard)
            else:
                _STAGE_FUNCTIONS[stage](config, ws, keys)
    return ws


# --------------------------------------------------------------------------- stages


def parcellate_stage(config: dict, ws: Workspace, keys: dict, *, shard=None) -> None:
    """Discover the runs and write region time series for each (finished runs are skipped).

    The marker lists the region time series of exactly these runs, so that later stages
    never pick up files left by another configuration.
    """
    from .data.layouts import discover_runs
    from .data.parcellation import parcellate

    data, options = config["data"], config["parcellation"]
    if not data["root"]:
        raise InputDataError("No data: set 'data.root' in the config to an HCP, BIDS or manifest path.")
    runs = discover_runs(
        data["root"], data["layout"], subjects=data["subjects"], tasks=data["tasks"],
        runs=data["runs"], t_r=data["t_r"],
    )
    summary = parcellate(
        runs, config["atlas"]["name"], ws.timeseries, atlas_options=config["atlas"]["options"],
        n_jobs=options["jobs"], hrf_delay=options["hrf_delay"],
        confounds_strategy=options["confounds_strategy"], detrend=options["detrend"],
        standardize=options["standardize"], high_pass=options["high_pass"],
        low_pass=options["low_pass"], shard=shard, progress=True,
    )
    if shard is not None:
        logger.info("Parcellated shard %s; run the stage once more without a shard to finish it.", shard)
        return
    rows = summary.table().to_dict("records")
    finished = [r["output"] for r in rows if r["status"] == "done" or r["reason"].startswith("finished")]
    busy = [r["run"] for r in rows if r["status"] == "skipped" and r["output"] not in finished]
    if busy:
        raise InputDataError(
            f"{len(busy)} run(s) are being parcellated by another process ({busy[:3]}...): "
            "run this stage again when they are done."
        )
    if not finished:
        raise InputDataError(f"Every run failed to parcellate; see the failures table in {ws.timeseries}.")
    if summary.failed:
        logger.warning("%d run(s) failed and are left out; see %s.", len(summary.failed), ws.timeseries)
    _mark_done(ws, "parcellate", keys["parcellate"], outputs=finished, failed=summary.failed)


def _load_atlas(config: dict, reference_img):
    from .data.atlases import load_atlas

    return load_atlas(config["atlas"]["name"], target_img=reference_img, **config["atlas"]["options"])


def samples_stage(config: dict, ws: Workspace, keys: dict) -> None:
    """Cut labelled windows, split by subject, fit the scaler on the training split."""
    from .data.parcellation import load_timeseries
    from .data.samples import Standardizer, build_samples, split_by_subject

    key = keys["samples"]
    if _is_done(ws, "samples", key, output=ws.samples / "samples.npz"):
        return
    options = config["samples"]
    paths = _require(ws, "parcellate", keys["parcellate"])["outputs"]
    samples = build_samples(
        (load_timeseries(p) for p in paths), classes=options["classes"], label=options["label"],
        window=options["window"], start=options["start"], step=options["step"],
        frame_stride=options["frame_stride"],
    )
    splits = split_by_subject(samples, options["split"], seed=config["seed"])
    scaler = Standardizer().fit(samples.subset(splits["train"]))
    samples.save(ws.samples / "samples.npz")
    write_json(ws.samples / "splits.json", {
        name: {"indices": idx.tolist(), "subjects": sorted(set(samples.subjects[idx].tolist()))}
        for name, idx in splits.items()
    })
    write_json(ws.samples / "standardizer.json", scaler.to_dict())
    _mark_done(ws, "samples", key, n_samples=len(samples), classes=samples.classes,
               shape=list(samples.x.shape), **{f"n_{k}": len(v) for k, v in splits.items()})


def load_splits(ws: Workspace) -> dict:
    """The standardised samples per split, as :class:`~fmri_ica.data.samples.SampleSet`."""
    from .data.samples import SampleSet, Standardizer

    samples = SampleSet.load(ws.samples / "samples.npz")
    scaler = Standardizer.from_dict(json.loads((ws.samples / "standardizer.json").read_text()))
    splits = json.loads((ws.samples / "splits.json").read_text())
    return {name: scaler.transform(samples.subset(s["indices"])) for name, s in splits.items()}


def _dataset(samples):
    from .training import SequenceDataset

    return SequenceDataset(samples.x, samples.y, samples.lengths)


def train_stage(config: dict, ws: Workspace, keys: dict) -> None:
    """Train every configured model on the training split (early stopping on validation)."""
    from .models import build_model
    from .reporting.plotting import plot_confusion_matrix
    from .training import evaluate, fit, load_model

    splits = None
    for name, spec in config["models"].items():
        model_key = _model_key(keys["train"], config, name)
        if _is_done(ws, "train", model_key, name, output=ws.model_dir(name) / "best" / "model.pt"):
            continue
        _require(ws, "samples", keys["samples"])
        splits = splits or load_splits(ws)
        train, val = splits["train"], splits["val"]
        out = _fresh_model_dir(ws.model_dir(name), model_key)
        options = dict(spec)
        kind = options.pop("kind")
        seed_everything(config["seed"])
        model = build_model(kind, train.x.shape[2], len(train.classes), **options)
        t = config["training"]
        logger.info("Training %s (%s) on %d samples", name, kind, len(train))
        result = fit(
            model, _dataset(train), _dataset(val), epochs=t["epochs"], lr=t["lr"],
            batch_size=t["batch_size"], patience=t["patience"], weight_decay=t["weight_decay"],
            seed=config["seed"], out_dir=out, device=t["device"], resume=True,
        )
        best = load_model(out / "best")
        scores = {split: evaluate(best, _dataset(data)) for split, data in splits.items()}
        write_json(out / "evaluation.json", {
            "model": name, "kind": kind, "classes": train.classes, "best_epoch": result.best_epoch,
            **scores,
        })
        plot_confusion_matrix(scores["test"]["confusion_matrix"], train.classes,
                              path=out / "confusion_test.png", title=f"{name}: held-out subjects")
        logger.info("%s: test accuracy %.3f (balanced %.3f)", name,
                    scores["test"]["accuracy"], scores["test"]["balanced_accuracy"])
        _mark_done(ws, "train", model_key, name, test_accuracy=scores["test"]["accuracy"])


def _fresh_model_dir(out: Path, key: str) -> Path:
    """The model folder for ``key``: an interrupted run of the same key is kept (and resumed),
    one trained with other parameters is removed."""
    stamp = out / "pipeline_key.txt"
    if out.exists() and (not stamp.is_file() or stamp.read_text() != key):
        logger.info("Parameters of %s changed: training it again.", out.name)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key)
    return out


def explain_stage(config: dict, ws: Workspace, keys: dict) -> None:
    """Saliency on the held-out subjects: per-class (time x region) maps and their metrics."""
    splits = None
    for name in config["models"]:
        model_key = _model_key(keys["explain"], config, name)
        if _is_done(ws, "explain", model_key, name, output=ws.saliency_dir(name) / "metrics.json"):
            continue
        _require(ws, "train", _model_key(keys["train"], config, name), name)
        splits = splits or load_splits(ws)
        summary = _explain_model(config, ws, name, splits["test"])
        _mark_done(ws, "explain", model_key, name, **summary)
    linear_key = _model_key(keys["explain"], config, "linear")
    if not config["report"]["linear_baseline"]:
        _remove_linear(ws)
    elif not _is_done(ws, "explain", linear_key, "linear"):
        _require(ws, "samples", keys["samples"])
        _remove_linear(ws)
        summary = _explain_linear(config, ws, splits or load_splits(ws))
        _mark_done(ws, "explain", linear_key, "linear", **summary)


def _remove_linear(ws: Workspace) -> None:
    """Forget the linear reference's outputs (switched off, or to be recomputed)."""
    for path in (ws.saliency_dir("linear"), ws.maps_dir("linear")):
        shutil.rmtree(path, ignore_errors=True)
    for stage in ("explain", "project"):
        ws.marker(stage, "linear").unlink(missing_ok=True)


def _explain_model(config: dict, ws: Workspace, name: str, test) -> dict:
    import torch

    from .saliency import attribute
    from .saliency.metrics import removal_test
    from .training import load_model

    options = config["saliency"]
    device = config["training"]["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(ws.model_dir(name) / "best", map_location=device)
    x, y = (torch.from_numpy(a).to(device) for a in (test.x, test.y))
    lengths = torch.from_numpy(test.lengths)  # packed sequences want lengths on the CPU
    logger.info("Saliency (%s) of %s on %d held-out samples", options["method"], name, len(test))
    saliency = attribute(model, x, target=y, method=options["method"], lengths=lengths,
                         batch_size=options["batch_size"])
    saliency = np.abs(saliency.detach().cpu().numpy()).astype(np.float32)
    maps = class_means(saliency, test)
    metrics = saliency_metrics(saliency, test, options["top_k"], _load_ground_truth(config),
                               seed=config["seed"], class_maps=maps)
    metrics["removal"] = removal_test(model, x, y, saliency, lengths=lengths, seed=config["seed"])
    evaluation = json.loads((ws.model_dir(name) / "evaluation.json").read_text())
    metrics.update(accuracy_gate(evaluation["test"], test.classes))
    _save_saliency(ws.saliency_dir(name), saliency, maps, test, metrics, config,
                   per_subject=options["per_subject"])
    return {"test_accuracy": evaluation["test"]["accuracy"]}


def _explain_linear(config: dict, ws: Workspace, splits: dict) -> dict:
    """The linear reference: accuracy and |weight| maps, scored like the saliency maps."""
    from .models.linear import LinearBaseline

    train, test = splits["train"], splits["test"]
    if len(set(train.lengths.tolist() + test.lengths.tolist())) > 1:
        logger.info("Linear baseline skipped: it needs windows of one length.")
        return {"skipped": True}
    baseline = LinearBaseline(seed=config["seed"]).fit(train.x, train.y)
    accuracy = float(np.mean(baseline.predict(test.x) == test.y))
    maps = baseline.weight_maps(len(test.classes))
    metrics = {"test_accuracy": accuracy, "class_maps_only": True}
    metrics.update(planted_region_metrics(maps, test.classes, test.region_names,
                                           _load_ground_truth(config)))
    out = ws.saliency_dir("linear")
    _write_class_maps(out, maps, test)
    write_json(out / "metrics.json", metrics)
    logger.info("linear baseline: test accuracy %.3f", accuracy)
    return {"test_accuracy": accuracy}


def _save_saliency(out: Path, saliency, maps, test, metrics, config, *, per_subject: bool) -> None:
    from ._utils import atomic_path
    from .saliency.metrics import saliency_over_time

    _write_class_maps(out, maps, test)
    with atomic_path(out / "curves.npz") as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, curves=saliency_over_time(saliency, lengths=test.lengths),
                            y=test.y, subjects=test.subjects.astype(str))
    for stale in out.glob("sub-*"):  # from an earlier run with other subjects or settings
        shutil.rmtree(stale)
    if per_subject:
        for subject in np.unique(test.subjects):
            index = np.flatnonzero(test.subjects == subject)
            _write_class_maps(out / f"sub-{subject}", class_means(saliency[index], test.subset(index)), test)
    write_json(out / "metrics.json", {**metrics, "method": config["saliency"]["method"]})


def _write_class_maps(out: Path, maps: np.ndarray, test) -> None:
    from ._utils import atomic_path

    with atomic_path(out / "class_maps.npz") as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, maps=maps.astype(np.float32))
    write_json(out / "class_maps.json", {
        "shape": ["class", "time", "region"], "classes": test.classes,
        "regions": test.region_names, "t_r": test.t_r,
    })


def load_class_maps(directory: Path) -> tuple[np.ndarray, dict]:
    """(class, time, region) maps and their sidecar, as written by the explain stage."""
    with np.load(directory / "class_maps.npz") as data:
        maps = data["maps"]
    return maps, json.loads((directory / "class_maps.json").read_text())


def project_stage(config: dict, ws: Workspace, keys: dict) -> None:
    """Each model's per-class maps (group, and per subject on request) to 4D/3D NIfTI on the
    data grid, with sidecars."""
    from .saliency.projection import save_saliency_maps

    atlas = None
    stride, start = config["samples"]["frame_stride"], config["samples"]["start"]
    for name in _explained(config, ws, keys):
        key = _model_key(keys["project"], config, name)
        if _is_done(ws, "project", key, name, output=ws.maps_dir(name)):
            continue
        shutil.rmtree(ws.maps_dir(name), ignore_errors=True)  # no maps of other settings or subjects
        atlas = atlas or _atlas_for_outputs(config, ws, keys)[0]
        group = ws.saliency_dir(name)
        sources = [("group", group)] + [(d.name, d) for d in sorted(group.glob("sub-*"))]
        paths = []
        for prefix, directory in sources:
            maps, meta = load_class_maps(directory)
            values = _to_atlas_regions(maps, meta["regions"], atlas)
            paths += save_saliency_maps(
                ws.maps_dir(name), dict(zip(meta["classes"], values, strict=True)), atlas,
                t_r=meta["t_r"] / stride, stride=stride, model=name, method=_method(config, name),
                frames=[start, start + maps.shape[1] * stride], space=atlas.space, prefix=prefix,
                n_bins=config["saliency"]["n_bins"], extra={"atlas": atlas.name, "samples": prefix},
            )
        _mark_done(ws, "project", key, name, files=[str(p) for p in paths])


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


def _to_atlas_regions(maps: np.ndarray, regions: list[str], atlas) -> np.ndarray:
    """(..., region) in sample order -> (..., atlas region) in the atlas's order, 0 if absent."""
    names = atlas.labels["name"].astype(str).tolist()
    out = np.zeros((*maps.shape[:-1], len(names)), dtype=np.float32)
    position = {name: i for i, name in enumerate(names)}
    for j, name in enumerate(regions):
        if name in position:
            out[..., position[name]] = maps[..., j]
    return out


def report_stage(config: dict, ws: Workspace, keys: dict) -> None:
    """Figures for every model and class, then the self-contained HTML report."""
    from .reporting.plotting import plot_saliency_over_time
    from .reporting.report import ModelResult, Report, write_report

    if _is_done(ws, "report", keys["report"], output=ws.report):
        return
    names = _explained(config, ws, keys)
    atlas, sidecar = _atlas_for_outputs(config, ws, keys)
    test = load_splits(ws)["test"]
    stride = config["samples"]["frame_stride"]
    results = _draw_class_figures(config, ws, names, atlas, test)
    _mark_planted(results, _load_ground_truth(config))
    models, curves = [], {}
    for name in names:
        metrics = json.loads((ws.saliency_dir(name) / "metrics.json").read_text())
        linear = name == "linear"
        evaluation = ({"accuracy": metrics["test_accuracy"]} if linear else
                      json.loads((ws.model_dir(name) / "evaluation.json").read_text())["test"])
        models.append(ModelResult(
            name=name, class_names=test.classes, evaluation=evaluation, saliency_metrics=metrics,
            classes=results[name], kind="linear" if linear else "recurrent",
            description=_describe(config, name),
        ))
        if not linear:
            with np.load(ws.saliency_dir(name) / "curves.npz") as data:
                curves[name] = data["curves"]
    over_time = plot_saliency_over_time(
        curves, t_r=test.t_r / stride, stride=stride, task_on=test.task_on.mean(axis=0) > 0.5,
        title="Where in time is the evidence? Share of saliency per time step (held-out subjects)",
        path=ws.figures / "saliency_over_time.png",
    ) if curves else None
    report = Report(
        title="fmri_ica report", summary=_summary_table(config, ws, test, sidecar, atlas),
        models=models, saliency_over_time=over_time, parameters=config,
    )
    write_report(ws.report, report)
    logger.info("Report: %s", ws.report)
    _mark_done(ws, "report", keys["report"], report=str(ws.report))


def _draw_class_figures(config: dict, ws: Workspace, names: list[str], atlas, test) -> dict:
    """ClassResults per model, drawn in parallel processes (figures dominate the report's time).

    Surface views, animations and interactive viewers are drawn for the first configured
    model only (the others get glass brains, heatmaps and top regions), to keep the
    report's run time proportionate.
    """
    from joblib import Parallel, delayed

    from .reporting.report import class_figures

    options, stride = config["report"], config["samples"]["frame_stride"]
    primary = next(iter(config["models"]), None)
    jobs = []
    for name in names:
        maps, meta = load_class_maps(ws.saliency_dir(name))
        values = _to_atlas_regions(maps, meta["regions"], atlas)
        vmax = float(np.percentile(values, 99.5)) or None  # one colour scale per model
        for c, class_name in enumerate(meta["classes"]):
            on = test.task_on[test.y == c].mean(axis=0) > 0.5 if np.any(test.y == c) else None
            detailed = name == primary
            jobs.append((name, delayed(class_figures)(
                ws.figures / name, values[c], atlas, t_r=test.t_r / stride, model=name,
                class_name=class_name, stride=stride, task_on=on, n_bins=config["saliency"]["n_bins"],
                surface=options["surface"] and detailed, animation=options["animation"] and detailed,
                interactive=detailed, vmax=vmax,
            )))
    n_jobs = max(1, min(2, len(jobs)))
    drawn = Parallel(n_jobs=n_jobs)(job for _, job in jobs)
    results: dict = {name: [] for name in names}
    for (name, _), result in zip(jobs, drawn, strict=True):
        result.n_samples = int(np.sum(test.y == test.classes.index(result.name)))
        results[name].append(result)
    return results


def _mark_planted(results: dict, ground_truth: dict | None) -> None:
    """With a simulator's ground truth, say which top regions were planted for the task."""
    tasks = (ground_truth or {}).get("tasks", {})
    for classes in results.values():
        for result in classes:
            if result.name in tasks and result.top_regions is not None:
                planted = set(tasks[result.name].get("planted_names", []))
                result.top_regions["planted"] = ["yes" if r in planted else "" for r in result.top_regions["region"]]


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


def _summary_table(config: dict, ws: Workspace, test, sidecar: dict, atlas) -> dict:
    splits = json.loads((ws.samples / "splits.json").read_text())
    samples = config["samples"]
    return {
        "Data": f"{config['data']['root']} ({sidecar.get('layout', config['data']['layout'])} layout)",
        "Subjects (train / val / test)": " / ".join(str(len(splits[k]["subjects"])) for k in ("train", "val", "test")),
        "Samples (test)": len(test),
        "Classes": ", ".join(test.classes),
        "Atlas": f"{atlas.name} ({atlas.n_regions} regions, {atlas.space})",
        "TR (s)": f"{sidecar['t_r']:g}" + (f" x stride {samples['frame_stride']}" if samples["frame_stride"] > 1 else ""),
        "Window": f"{samples['window']} time steps from frame {samples['start']}",
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


def _load_ground_truth(config: dict) -> dict | None:
    root = config["data"]["root"]
    path = Path(root) / "ground_truth.json" if root else None
    return json.loads(path.read_text()) if path and path.is_file() else None

