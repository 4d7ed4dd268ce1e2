"""A sweep over simulated fMRI that the analysis atlas does not match: SNR x cohort size x seed.

Each cell simulates an HCP-style data set whose activations are smooth blobs placed by MNI
coordinates and jittered per subject (``simulate_hcp(activation="blobs")``), with real HCP
run lengths, parcellates it with the analysis atlas (seitzman300 by default), and runs the
pipeline's cross-validated training, explanation and projection. Per model it records the
run accuracy with its bootstrap interval, the permuted-label null's accuracy, the time
profile (saliency mass in the last 10% of a window) of the trained model and of its nulls,
how similar the trained maps are to the untrained network's, and how well the maps localise
the planted activations in voxel space (share of top voxels near a centre, vs chance) and
region space. Every cell is resumable (the pipeline skips finished work) and its summary is
written to ``<out>/cells/<cell>/summary.json`` as it finishes.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from pathlib import Path

import numpy as np

from .._utils import package_versions, write_json, write_text
from ..exceptions import InvalidParameterError

logger = logging.getLogger(__name__)

__all__ = ["SWEEP", "format_summary", "format_table", "run_fmri_benchmark"]

#: The sweep's pipeline settings on top of the defaults (fmri_ica.config.DEFAULTS).
SWEEP = {
    "atlas": {"name": "seitzman300"},
    "parcellation": {"jobs": 1},
    "crossval": {"folds": 4},
    "report": {"surface": False, "animation": False},
}
_STAGES = ("parcellate", "samples", "train", "explain", "project")


def run_fmri_benchmark(out, *, snr=(4.0, 6.0, 8.0), n_subjects=(10, 16), seeds=(0, 1, 2),
                       voxel_size: float = 5.0, overrides: dict | None = None,
                       models: list[str] | None = None, keep_data: bool = True) -> list[dict]:
    """Run (or resume) every cell of the sweep; return one summary row per cell and model.

    For each SNR and seed one data set of ``max(n_subjects)`` subjects is simulated; the
    smaller cohorts are its first subjects (the simulator makes each subject independent of
    how many there are), so cohort size is the only thing that changes between them.

    Parameters
    ----------
    out : path
        ``data/<snr>_<seed>/`` (simulated images), ``cells/<cell>/`` (pipeline outputs,
        ``summary.json``), ``results.json`` and ``table.md``.
    snr : sequence of float, default=(4.0, 6.0, 8.0)
        The simulator's ``signal`` (peak blob amplitude in units of the noise std).
        seitzman300 regions within 10 mm of a centre correlate about 0.27 (4) and 0.36 (6)
        per run with the task regressor (4 mm grid; simulate_hcp's docstring).
    n_subjects : sequence of int, default=(10, 16)
    seeds : sequence of int, default=(0, 1, 2)
        Each seed simulates other subjects (and other activation centres) and deals them
        into other folds.
    voxel_size : float, default=5.0
        Grid of the simulated images (mm).
    overrides : dict, optional
        Pipeline settings on top of :data:`SWEEP` (e.g. ``{"training": {"epochs": 20}}``).
    models : list of str, optional
        Keep only these of the configured models (the linear reference always runs).
    keep_data : bool, default=True
        Keep the simulated images (False deletes them once all cohorts are summarised).
    """
    import shutil

    from ..config import load_config, merge_config

    out = Path(out)
    base = merge_config(load_config(None, SWEEP), overrides or {}, replace_free_form=False)
    if models:
        unknown = sorted(set(models) - set(base["models"]))
        if unknown:
            raise InvalidParameterError(f"Unknown model(s) {unknown}; configured: {sorted(base['models'])}.")
        base["models"] = {name: spec for name, spec in base["models"].items() if name in models}
    rows = []
    groups = list(itertools.product(snr, seeds))
    for i, (level, seed) in enumerate(groups):
        data = None
        for n in sorted(n_subjects, reverse=True):
            name = f"snr-{level:g}_n-{n}_seed-{seed}"
            logger.info("Cell %s (SNR level and seed %d of %d)", name, i + 1, len(groups))
            summary = _cell(out, name, base, level, n, max(n_subjects), seed, voxel_size)
            rows += summary["rows"]
            write_json(out / "results.json", {"rows": rows, "settings": base, "versions": package_versions()})
            write_text(out / "table.md", format_table(rows) + "\n" + format_summary(rows))
            data = out / "data" / f"snr-{level:g}_seed-{seed}"
        if data is not None and not keep_data:
            shutil.rmtree(data, ignore_errors=True)
    return rows


def _cell(out: Path, name: str, base: dict, level: float, n: int, n_max: int, seed: int,
          voxel_size: float) -> dict:
    import shutil

    from ..config import config_hash, merge_config
    from ..data.simulate import simulate_hcp
    from ..pipeline import run_pipeline

    folder = out / "cells" / name
    key = config_hash(base, level, n, n_max, seed, voxel_size)
    done = folder / "summary.json"
    if done.is_file() and json.loads(done.read_text()).get("key") == key:
        return json.loads(done.read_text())
    started = time.perf_counter()
    data = simulate_hcp(out / "data" / f"snr-{level:g}_seed-{seed}", n_subjects=n_max, frames="hcp",
                        voxel_size=voxel_size, signal=level, activation="blobs", seed=seed,
                        progress=False)
    subjects = sorted(data.ground_truth["subjects"])[:n]
    largest = out / "cells" / f"snr-{level:g}_n-{n_max}_seed-{seed}" / "run" / "timeseries"
    if n < n_max and largest.is_dir() and not (folder / "run" / "timeseries").exists():
        shutil.copytree(largest, folder / "run" / "timeseries")  # finished runs are skipped
    config = merge_config(base, {"output": str(folder / "run"), "seed": seed,
                                 "data": {"root": str(data.path), "layout": "hcp", "subjects": subjects}})
    run_pipeline(config, stages=_STAGES)
    summary = {"key": key, "snr": level, "n_subjects": n, "seed": seed,
               "seconds": round(time.perf_counter() - started, 1),
               "rows": _rows(folder / "run", config, level, n, seed)}
    for row in summary["rows"]:
        row["cell_seconds"] = summary["seconds"]
    write_json(done, summary)
    return summary


def _rows(run: Path, config: dict, level: float, n: int, seed: int) -> list[dict]:
    """One row per model (and the linear reference) from the pipeline's outputs."""
    rows = []
    for name in [*config["models"], "linear"]:
        saliency = run / "saliency" / name
        if not (saliency / "metrics.json").is_file():
            continue
        metrics = json.loads((saliency / "metrics.json").read_text())
        evaluation = metrics["test"] if name == "linear" else json.loads(
            (run / "models" / name / "evaluation.json").read_text())["test"]
        row = {"snr": level, "n_subjects": n, "seed": seed, "model": name,
               "accuracy": evaluation["accuracy"], "accuracy_ci": evaluation["run_accuracy_ci"],
               "balanced_accuracy": evaluation["balanced_accuracy"], "chance": evaluation["chance"]}
        if name != "linear":
            permuted = json.loads((run / "models" / name / "evaluation.json").read_text()).get("permuted")
            row["permuted_accuracy"] = permuted["accuracy"] if permuted else None
            sanity = metrics["sanity"]
            row["last10"] = sanity["mass_last_10pct"]
            row["similarity_untrained"] = _estimate(sanity["nulls"].get("untrained", {}).get("map_similarity"))
            row["verdicts"] = {k: v["differs"] for k, v in sanity["verdicts"].items()}
            row["group_significant"] = {
                k: sum(c["n_significant"] for c in v.get("group", {}).values())
                for k, v in sanity["nulls"].items() if "group" in v}
        row["region_precision"] = (metrics.get("region_precision") or {}).get("mean")
        row["region_precision_chance"] = metrics.get("region_precision_chance")
        localisation = run / "maps" / name / "localisation.json"
        if localisation.is_file():
            loc = json.loads(localisation.read_text())
            row["localisation"] = loc["mean"]
            row["localisation_nulls"] = {k: v["mean"] for k, v in loc.get("nulls", {}).items()}
        rows.append(row)
    return rows


def _estimate(value) -> float | None:
    if not value:
        return None
    return value.get("estimate", value.get("value"))


def format_table(rows: list[dict]) -> str:
    """A Markdown table: one line per cell and model, with the nulls beside the trained figures."""
    header = ("| SNR | subjects | seed | model | run accuracy [95% CI] | permuted-label null | "
              "last-10% mass: trained / untrained | map rho vs untrained | differs from untrained "
              "| top-5% voxels near a centre (chance) | untrained: near a centre | region precision (chance) |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        ci = r.get("accuracy_ci") or [None, None]
        last = r.get("last10") or {}
        loc = r.get("localisation") or {}
        null_loc = (r.get("localisation_nulls") or {}).get("untrained") or {}
        lines.append("| " + " | ".join([
            f"{r['snr']:g}", str(r["n_subjects"]), str(r["seed"]), r["model"],
            f"{r['accuracy']:.3f} [{_f(ci[0])}, {_f(ci[1])}]", _f(r.get("permuted_accuracy")),
            f"{_f(last.get('trained'))} / {_f(last.get('untrained'))}" if last else "—",
            _f(r.get("similarity_untrained")), (r.get("verdicts") or {}).get("untrained", "—"),
            f"{_f(loc.get('share'))} ({_f(loc.get('chance'))})" if loc else "—",
            _f(null_loc.get("share")),
            f"{_f(r.get('region_precision'))} ({_f(r.get('region_precision_chance'))})",
        ]) + " |")
    return header + "\n".join(lines) + "\n"


def format_summary(rows: list[dict]) -> str:
    """A Markdown table over seeds: per SNR, cohort size and model, the mean (min-max) of the
    run accuracy, the permuted-label null's, the last-10% mass of trained and untrained, the
    voxel localisation share of trained and untrained maps, and how many seeds said the maps
    (and time profiles) differ from the untrained networks'."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["snr"], r["n_subjects"], r["model"]), []).append(r)
    header = ("| SNR | subjects | model | seeds | run accuracy | permuted-label null | last-10% mass "
              "trained / untrained | top-5% voxels near a centre: trained / untrained (chance) "
              "| maps differ from untrained (yes/no/inc.) | time profile differs |\n"
              "|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for (snr, n, model), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        def values(get, group=group):
            return [v for v in (get(r) for r in group) if v is not None]

        loc = values(lambda r: (r.get("localisation") or {}).get("share"))
        null_loc = values(lambda r: ((r.get("localisation_nulls") or {}).get("untrained") or {}).get("share"))
        chance = values(lambda r: (r.get("localisation") or {}).get("chance"))
        lines.append("| " + " | ".join([
            f"{snr:g}", str(n), model, str(len(group)),
            _spread(values(lambda r: r["accuracy"])), _spread(values(lambda r: r.get("permuted_accuracy"))),
            f"{_spread(values(lambda r: (r.get('last10') or {}).get('trained')))} / "
            f"{_spread(values(lambda r: (r.get('last10') or {}).get('untrained')))}" if model != "linear" else "—",
            f"{_spread(loc)} / {_spread(null_loc)} ({_spread(chance)})" if loc else "—",
            _count(values(lambda r: (r.get("verdicts") or {}).get("untrained"))),
            _count(values(lambda r: (r.get("verdicts") or {}).get("untrained_profile"))),
        ]) + " |")
    return header + "\n".join(lines) + "\n"


def _spread(values: list) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def _count(words: list) -> str:
    if not words:
        return "—"
    return "/".join(str(words.count(w)) for w in ("yes", "no", "inconclusive"))


def _f(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"
