"""Explain a cross-validated model beside its null models, in run time, per subject.

For every fold, the trained model and its nulls (its own untrained initial weights, the
cascading randomisations of the trained weights, and the same recipe trained on
subject-wise permuted labels) are explained on the fold's held-out subjects. Each window's
saliency is min-max scaled, placed on the run frames it covers, averaged per frame, per run
and per subject: every subject has one (time, region) map per class and per model variant.
From these: the group maps, the time profiles, the similarity of trained and null maps
with bootstrap intervals and a verdict (:mod:`fmri_ica.saliency.nulls`), and sign-flip
tests of trained against null across subjects (:mod:`fmri_ica.saliency.group`).
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from .._utils import atomic_path, item_log_level, progress, write_json
from ..exceptions import InputDataError

logger = logging.getLogger(__name__)

__all__ = ["explain_fold", "explain_model", "load_group_result"]

#: Null models in the order the report shows them.
NULL_LABELS = {
    "untrained": "untrained (the model's own initial weights)",
    "permuted": "trained on subject-wise permuted labels",
}


def explain_fold(fold_dir, windows, out, *, config: dict, fold: int = 0, n_folds: int = 1,
                 progress: bool = True) -> Path:
    """Saliency of one fold's model and its nulls on the fold's held-out windows, written to
    ``out`` for :func:`explain_model` to pool (one fold per SLURM array task).

    Parameters
    ----------
    fold_dir : Path
        The fold's model folder (``trained/``, ``permuted/``).
    windows : SampleSet
        The fold's test windows, x: (n, time, region).
    out : Path
        ``saliency/<model>/fold-<k>/``, replaced: ``saliency.npy`` (the trained model's
        |attribution|, (n, time, region) float32), ``windows.npz`` (the windows without
        their time series), ``fold.npz`` (per-subject maps and curves of every model
        variant) and ``fold.json`` (what ``fold.npz`` holds, the removal test).
    config : dict
        The pipeline configuration.
    fold : int, default=0
        The fold's index: seeds its nulls, as in a run over all folds.
    n_folds : int, default=1
        The number of folds (for messages).
    progress : bool, default=True
        A progress bar over the models (the trained one and its nulls).

    Returns
    -------
    out : Path
    """
    out = Path(out)
    per_subject, curves, kept, removal = _explain_folds(
        [(fold_dir, windows)], out.parent.name, config, progress, first=fold, total=n_folds)
    saliency, windows = kept[0]
    shutil.rmtree(out, ignore_errors=True)  # a fold explained with other parameters
    out.mkdir(parents=True)
    with atomic_path(out / "saliency.npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, saliency)
    replace(windows, x=windows.x[:, :, :0]).save(out / "windows.npz")  # pooling needs no x
    arrays = {}  # map/<i>: the i-th (variant, subject, class) map, in the order of "maps"
    for subjects in per_subject.values():
        for classes in subjects.values():
            for values in classes.values():
                arrays[f"map/{len(arrays)}"] = values
    maps = {variant: {subject: list(classes) for subject, classes in subjects.items()}
            for variant, subjects in per_subject.items()}
    for variant, parts in curves.items():
        for field, values in parts[0].items():
            arrays[f"curves/{variant}/{field}"] = values
    with atomic_path(out / "fold.npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    write_json(out / "fold.json", {"fold": fold, "maps": maps, "variants": list(curves),
                                   "removal": removal[0]})
    return out


def _load_fold(directory: Path) -> tuple[dict, dict, tuple, list]:
    """One fold written by :func:`explain_fold`: per-subject maps and curves per variant,
    (trained saliency, windows), removal-test rows."""
    from ..data.samples import SampleSet

    directory = Path(directory)
    missing = [n for n in ("fold.json", "fold.npz", "saliency.npy", "windows.npz")
               if not (directory / n).is_file()]
    if missing:
        raise InputDataError(f"No explained fold in {directory}: {missing} not found. Run "
                             "'fmri-ica explain CONFIG --fold K' for that fold (or without --fold).")
    meta = json.loads((directory / "fold.json").read_text())
    per_subject: dict[str, dict] = {}
    with np.load(directory / "fold.npz", allow_pickle=False) as data:
        index = iter(range(len(data.files)))
        for variant, subjects in meta["maps"].items():
            per_subject[variant] = {subject: {name: data[f"map/{next(index)}"] for name in classes}
                                    for subject, classes in subjects.items()}
        curves = {v: {f: data[f"curves/{v}/{f}"] for f in ("curves", "subjects", "y", "lengths")}
                  for v in meta["variants"]}
    saliency = np.load(directory / "saliency.npy", allow_pickle=False)
    return per_subject, curves, (saliency, SampleSet.load(directory / "windows.npz")), meta["removal"]


def explain_model(folds, out: Path, *, config: dict, evaluation: dict, ground_truth) -> dict:
    """Pool the explained folds of one model with its nulls; writes ``out`` and returns a
    summary for the stage marker.

    Parameters
    ----------
    folds : list of Path
        Every fold's folder written by :func:`explain_fold`, in fold order.
    out : Path
        ``saliency/<model>/``: ``class_maps*`` (group maps in run time; the nulls' in
        ``nulls/<variant>/``), ``curves.npz``, ``group.npz`` and ``metrics.json``.
    config : dict
        The pipeline configuration.
    evaluation : dict
        The model's pooled held-out scores (``models/<model>/evaluation.json``).
    ground_truth : dict or None
        Planted regions of a simulation, for the planted-region scores.

    Raises
    ------
    InputDataError
        If a fold's folder is incomplete.
    """
    from .scoring import accuracy_gate

    options = config["saliency"]
    per_subject: dict[str, dict] = {}
    curves: dict[str, list] = {}
    kept, removal = [], []
    for directory in folds:
        maps, parts, trained, rows = _load_fold(directory)
        for variant, subjects in maps.items():
            per_subject.setdefault(variant, {}).update(subjects)
        for variant, part in parts.items():
            curves.setdefault(variant, []).append(part)
        kept.append(trained)
        removal.append(rows)
    trained_saliency, test = _concatenate(kept)
    del kept
    metrics = _trained_metrics(trained_saliency, test, options, ground_truth, config["seed"])
    metrics["removal"] = _mean_rows(removal)
    metrics.update(accuracy_gate(evaluation["test"], test.classes))
    metrics["test_accuracy"] = evaluation["test"]["accuracy"]
    logger.info("Sanity checks of %s: %d bootstrap draws, %d permutations per group test",
                Path(out).name, config["sanity"]["n_boot"], config["sanity"]["n_perm"])
    metrics["sanity"] = _sanity(per_subject, curves, test, config)
    _save(out, per_subject, curves, test, metrics, config)
    return {"test_accuracy": evaluation["test"]["accuracy"],
            "verdict": {k: v["differs"] for k, v in metrics["sanity"]["verdicts"].items()}}


def _explain_folds(folds, name: str, config: dict, show: bool, *, first: int = 0,
                   total: int | None = None):
    """Saliency of each fold's models on its held-out windows: per-subject maps and curves
    per variant, the trained model's saliency and its removal test per fold.

    ``folds`` are folds ``first``, ``first + 1``, ... of ``total`` (default: all of them)."""
    options, sanity = config["saliency"], config["sanity"]
    total = len(folds) if total is None else total
    per_subject: dict[str, dict] = {}
    curves: dict[str, list] = {}
    kept, removal = [], []
    # one step per fold x model; the total is known once the first fold's nulls are built
    with progress(desc=f"explain[{name}]", enabled=show, unit="model") as bar:
        for i, (fold_dir, windows) in enumerate(folds):
            k = first + i
            models = _variants(Path(fold_dir), sanity, config["training"]["selection"],
                               seed=config["seed"] + k)
            bar.total = bar.n + len(models) * (len(folds) - i)
            bar.refresh()
            logger.log(item_log_level(bar), "Saliency (%s) of %s and %d null model(s), fold %d/%d, "
                       "%d windows", options["method"], name, len(models) - 1, k + 1, total,
                       len(windows))
            for variant, model in models.items():
                bar.set_postfix(fold=f"{k + 1}/{total}", model=variant, refresh=False)
                saliency = _saliency(model, windows, options, config["training"]["device"])
                curves.setdefault(variant, []).append(_curves(saliency, windows))
                _add_subject_maps(per_subject.setdefault(variant, {}), saliency, windows, config)
                if variant == "trained":
                    kept.append((saliency, windows))
                    removal.append(_removal(model, saliency, windows, config["seed"]))
                bar.update(1)
    return per_subject, curves, kept, removal


# --------------------------------------------------------------------------- variants


def _variants(fold_dir: Path, sanity: dict, selection: str, seed: int) -> dict:
    """The trained model and the null models the config asks for."""
    from ..training import load_model
    from .nulls import cascading_randomization, reinitialized

    trained = load_model(fold_dir / "trained" / selection)
    models = {"trained": trained}
    if sanity["untrained"]:  # its own initial weights, and other draws of them
        models["untrained-0"] = load_model(fold_dir / "trained" / "init")
        for i in range(1, sanity["n_untrained"]):
            models[f"untrained-{i}"] = reinitialized(trained, seed=seed * 100 + i)
    if sanity["permuted_labels"] and (fold_dir / "permuted" / selection).is_dir():
        models["permuted"] = load_model(fold_dir / "permuted" / selection)
    if sanity["cascading"]:
        # a seed of its own: the model's own seed would redraw its initial weights
        for layer, model in cascading_randomization(trained, seed=seed + 7919):
            models[f"cascade-{layer}"] = model
    return models


def _saliency(model, windows, options: dict, device) -> np.ndarray:
    """|attribution| (n, time, region) float32, zero on padding."""
    import torch

    from .methods import attribute

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    x, y = (torch.from_numpy(a).to(device) for a in (windows.x, windows.y))
    lengths = torch.from_numpy(windows.lengths)  # packed sequences want lengths on the CPU
    values = attribute(model, x, target=y, method=options["method"], lengths=lengths,
                       batch_size=options["batch_size"])
    return np.abs(values.detach().cpu().numpy()).astype(np.float32)


def _curves(saliency: np.ndarray, windows) -> dict:
    from .metrics import saliency_over_time

    return {"curves": saliency_over_time(saliency, lengths=windows.lengths).astype(np.float32),
            "subjects": windows.subjects.astype(str), "y": windows.y, "lengths": windows.lengths}


def _add_subject_maps(maps: dict, saliency: np.ndarray, windows, config: dict) -> None:
    """Per subject and class, the (run frame, region) map: windows scaled, placed in run time,
    averaged over the subject's runs of that class."""
    from .metrics import minmax_scale
    from .runtime import class_maps_in_run_time, to_run_time

    stride = config["samples"]["frame_stride"]
    scaled = minmax_scale(saliency).astype(np.float32)
    for subject in np.unique(windows.subjects):
        index = np.flatnonzero(windows.subjects == subject)
        subset = windows.subset(index)
        run_maps = to_run_time(scaled[index], subset, frame_stride=stride)
        class_maps = class_maps_in_run_time(run_maps, subset)
        maps[str(subject)] = {c: m for c, m in zip(windows.classes, class_maps, strict=True)
                              if m is not None and np.isfinite(m).any()}


def _removal(model, saliency, windows, seed: int) -> list:
    import torch

    from .metrics import removal_test

    x, y = torch.from_numpy(windows.x), torch.from_numpy(windows.y)
    # two fractions and one random draw each: the test costs a forward pass per row
    return removal_test(model.cpu(), x, y, saliency, fractions=(0.1, 0.3), n_random=1,
                        lengths=torch.from_numpy(windows.lengths), seed=seed)


def _mean_rows(folds: list[list[dict]]) -> list[dict]:
    """Removal-test rows averaged over folds, row by row."""
    rows = []
    for parts in zip(*folds, strict=True):
        row = dict(parts[0])
        for key, value in parts[0].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "fraction":
                row[key] = float(np.mean([p[key] for p in parts]))
        rows.append(row)
    return rows


def _concatenate(kept: list) -> tuple[np.ndarray, object]:
    """All folds' trained saliency and windows as one set (windows padded to one length)."""
    from ..data.samples import SampleSet

    width = max(s.shape[1] for s, _ in kept)

    def pad(a, value=0):
        return np.concatenate([np.pad(x, [(0, 0), (0, width - x.shape[1])] + [(0, 0)] * (x.ndim - 2),
                                      constant_values=value) for x in a])

    windows = [w for _, w in kept]
    first = windows[0]
    test = SampleSet(
        x=pad([w.x for w in windows]), y=np.concatenate([w.y for w in windows]),
        lengths=np.concatenate([w.lengths for w in windows]),
        task_on=pad([w.task_on for w in windows], False),
        subjects=np.concatenate([w.subjects for w in windows]),
        runs=np.concatenate([w.runs for w in windows]),
        starts=np.concatenate([w.starts for w in windows]), classes=first.classes,
        region_names=first.region_names, t_r=first.t_r, metadata=first.metadata,
    )
    return pad([s for s, _ in kept]), test


def _trained_metrics(saliency, test, options, ground_truth, seed) -> dict:
    from .scoring import class_means, saliency_metrics

    return saliency_metrics(saliency, test, options["top_k"], ground_truth, seed=seed,
                            class_maps=class_means(saliency, test))


# --------------------------------------------------------------------------- sanity


def _binned(per_subject: dict, classes: list[str], n_bins: int):
    """(subject, class, bin, region) time-binned maps (NaN where a subject lacks a class),
    and the subject labels."""
    from .projection import time_bin_edges

    subjects = sorted(per_subject)
    regions = next(iter(next(iter(per_subject.values())).values())).shape[1]
    lengths = _class_lengths(per_subject, classes)
    out = np.full((len(subjects), len(classes), n_bins, regions), np.nan)
    for c, name in enumerate(classes):
        if not lengths[name]:
            continue
        # one set of bins per class, in run frames, whatever the subject's own run length
        edges = time_bin_edges(lengths[name], min(n_bins, lengths[name]))
        for i, subject in enumerate(subjects):
            values = per_subject[subject].get(name)
            if values is None:
                continue
            padded = np.full((lengths[name], regions), np.nan)
            padded[:len(values)] = values
            with warnings.catch_warnings():  # a bin a subject does not reach stays NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
                    out[i, c, b] = np.nanmean(padded[lo:hi], axis=0)
    return out, subjects


def _class_lengths(per_subject: dict, classes: list[str]) -> dict[str, int]:
    """Each class's map length: its longest run among all subjects (0 if none has it)."""
    return {name: max((len(m[name]) for m in per_subject.values() if name in m), default=0)
            for name in classes}


def _subject_profiles(curves: list[dict], subjects: list[str]) -> np.ndarray:
    """(subject, time) mean normalised saliency-over-time curve per subject."""
    all_curves = np.concatenate([_pad_to(c["curves"], _width(curves)) for c in curves])
    labels = np.concatenate([c["subjects"] for c in curves])
    totals = np.nansum(all_curves, axis=1, keepdims=True)
    shares = np.divide(all_curves, totals, out=np.zeros_like(all_curves), where=totals > 0)
    return np.stack([shares[labels == s].mean(axis=0) for s in subjects])


def _width(curves: list[dict]) -> int:
    return max(c["curves"].shape[1] for c in curves)


def _pad_to(values: np.ndarray, width: int) -> np.ndarray:
    return np.pad(values, [(0, 0), (0, width - values.shape[1])])


def _families(variants) -> dict[str, list[str]]:
    """Null models grouped as the report shows them: the untrained draws together."""
    families: dict[str, list[str]] = {}
    for variant in variants:
        if variant != "trained":
            families.setdefault(variant.split("-")[0] if variant.startswith("untrained") else variant,
                                []).append(variant)
    return families


def _sanity(per_subject: dict, curves: dict, test, config: dict) -> dict:
    """Similarity of the trained maps and time profiles to each null's (bootstrap intervals),
    verdicts against the untrained networks and against all nulls, and the group tests of
    trained against the untrained networks and the permuted-label model."""
    from .group import group_saliency_test
    from .nulls import map_similarity, profile_distance

    sanity, n_bins, seed = config["sanity"], config["saliency"]["n_bins"], config["seed"]
    n_boot, classes = sanity["n_boot"], test.classes
    trained, subjects = _binned(per_subject["trained"], classes, n_bins)
    binned = {v: _flat(_binned(per_subject[v], classes, n_bins)[0]) for v in per_subject if v != "trained"}
    profiles = {v: _subject_profiles(curves[v], subjects) for v in curves}
    families = _families(per_subject)
    result = {"n_subjects": len(subjects), "n_bins": n_bins, "nulls": {}, "verdicts": {},
              "mass_last_10pct": _last_mass(curves, families)}
    for family, members in families.items():
        mean_map = np.mean([binned[m] for m in members], axis=0)
        mean_profile = np.mean([profiles[m] for m in members], axis=0)
        entry = {
            "label": NULL_LABELS.get(family, f"cascading randomisation: {family[8:]} and above"),
            "members": members,
            "map_similarity": map_similarity(_flat(trained), mean_map, n_boot=n_boot, seed=seed).as_dict(),
            "profile_distance": profile_distance(profiles["trained"], mean_profile, n_boot=n_boot,
                                                 seed=seed).as_dict(),
        }
        if family in ("untrained", "permuted"):
            null = np.mean([_binned(per_subject[m], classes, n_bins)[0] for m in members], axis=0)
            entry["group"] = _group_tests(trained, null, classes, sanity, seed, group_saliency_test)
        result["nulls"][family] = entry
    result["verdicts"] = _verdicts(_flat(trained), binned, profiles, families, sanity, seed)
    return result


def _last_mass(curves: dict, families: dict) -> dict:
    """Saliency mass in the last 10% of the window: trained and each null family (mean)."""
    from .metrics import mass_in_last

    def mass(parts):
        width = _width(parts)
        stacked = np.concatenate([_pad_to(p["curves"], width) for p in parts])
        lengths = np.concatenate([p["lengths"] for p in parts])
        return float(np.mean(mass_in_last(stacked[:, :, None], 0.1, lengths=lengths)))

    out = {"trained": mass(curves["trained"])}
    for family, members in families.items():
        out[family] = float(np.mean([mass(curves[m]) for m in members]))
    return out


def _verdicts(trained, binned, profiles, families, sanity, seed) -> dict:
    """"Do the trained maps differ from ...": the untrained networks (maps and time profiles),
    and all nulls that learned nothing (untrained draws and the permuted-label model)."""
    from .nulls import sanity_verdict

    untrained = families.get("untrained", [])
    unlearned = untrained + families.get("permuted", [])
    checks = {"untrained": ("map", untrained), "untrained_profile": ("profile", untrained),
              "all_nulls": ("map", unlearned)}
    verdicts = {}
    for name, (measure, members) in checks.items():
        if not members:
            continue
        source = profiles if measure == "profile" else binned
        reference = profiles["trained"] if measure == "profile" else trained
        try:
            verdicts[name] = sanity_verdict(reference, [source[m] for m in members], measure=measure,
                                            n_boot=sanity["n_boot"], seed=seed)
        except InputDataError as error:  # e.g. too few subjects for a split-half reliability
            verdicts[name] = {"differs": "inconclusive", "reason": str(error), "measure": measure}
    return verdicts


def _flat(binned: np.ndarray) -> np.ndarray:
    """(subject, class * bin * region), NaN filled with the subject mean of that cell."""
    flat = binned.reshape(len(binned), -1)
    fill = np.nanmean(flat, axis=0)
    return np.where(np.isnan(flat), np.nan_to_num(fill), flat)


def _group_tests(trained, null, classes, sanity, seed, test) -> dict:
    """Per class, the sign-flip test across subjects (JSON summary; arrays kept aside)."""
    out = {}
    for c, name in enumerate(classes):
        ok = ~np.isnan(trained[:, c]).all(axis=(1, 2)) & ~np.isnan(null[:, c]).all(axis=(1, 2))
        if ok.sum() < 2:
            continue
        result = test(np.nan_to_num(trained[ok, c]), np.nan_to_num(null[ok, c]),
                      n_perm=sanity["n_perm"], seed=seed, alpha=sanity["fdr"], normalise="mass")
        out[name] = result
    return out


# --------------------------------------------------------------------------- files


def _save(out: Path, per_subject: dict, curves: dict, test, metrics: dict, config: dict) -> None:
    """Group maps (trained and nulls), per-subject maps, curves, group tests, metrics."""
    from .runtime import write_class_maps

    out = Path(out)
    s = config["samples"]
    lengths = _class_lengths(per_subject["trained"], test.classes)
    n_regions = len(test.region_names)
    shutil.rmtree(out / "nulls", ignore_errors=True)  # nulls an earlier configuration asked for
    for variant, maps in _family_maps(per_subject).items():
        group, frames = _group_mean(maps, test.classes, s, lengths, n_regions)
        directory = out if variant == "trained" else out / "nulls" / variant
        write_class_maps(
            directory, group, classes=test.classes, regions=test.region_names, t_r=test.t_r,
            frames=frames, frame_stride=s["frame_stride"], aggregate="mean over subjects of the per-subject mean over runs of "
            "the mean over windows covering each run frame", scaling="each window min-max scaled "
            "to [0, 1] before averaging", subjects=sorted(maps),
            extra={"method": config["saliency"]["method"], "variant": variant},
        )
    for stale in out.glob("sub-*"):  # from an earlier run with other subjects or settings
        shutil.rmtree(stale)
    if config["saliency"]["per_subject"]:
        for subject, maps in per_subject["trained"].items():
            group, frames = _group_mean({subject: maps}, test.classes, s, lengths, n_regions)
            write_class_maps(
                out / f"sub-{subject}", group, classes=test.classes, regions=test.region_names,
                t_r=test.t_r, frames=frames, frame_stride=s["frame_stride"], aggregate="mean over the subject's runs of the mean over "
                "windows covering each run frame", scaling="each window min-max scaled to [0, 1]",
                subjects=[subject], extra={"method": config["saliency"]["method"], "variant": "trained"},
            )
    with atomic_path(out / "curves.npz") as tmp, open(tmp, "wb") as handle:
        arrays = {}
        for variant, parts in curves.items():
            width = _width(parts)
            arrays[f"{variant}/curves"] = np.concatenate([_pad_to(p["curves"], width) for p in parts])
            arrays[f"{variant}/subjects"] = np.concatenate([p["subjects"] for p in parts])
            arrays[f"{variant}/y"] = np.concatenate([p["y"] for p in parts])
        np.savez_compressed(handle, **arrays)
    _save_group_arrays(out, metrics["sanity"])
    write_json(out / "metrics.json", {**metrics, "method": config["saliency"]["method"]})


def _family_maps(per_subject: dict) -> dict:
    """Per-subject maps of the trained model and of each null family (members averaged)."""
    out = {"trained": per_subject["trained"]}
    for family, members in _families(per_subject).items():
        if len(members) == 1:
            out[family] = per_subject[members[0]]
            continue
        out[family] = {}
        for subject in per_subject["trained"]:
            names = set.intersection(*(set(per_subject[m].get(subject, {})) for m in members))
            out[family][subject] = {c: np.mean([per_subject[m][subject][c] for m in members], axis=0)
                                    for c in names}
    return out


def _group_mean(maps: dict, classes: list[str], samples: dict, lengths: dict, n_regions: int):
    """Per class the mean over subjects (NaN-aware; each class its own length, ``lengths``;
    all NaN where no subject has the class) and its run frames."""
    stride = samples["frame_stride"]
    offset = samples["start"] % stride  # row r of a run-time map is frame offset + r * stride
    group, frames = [], []
    for name in classes:
        stack = np.full((max(1, len(maps)), max(lengths[name], 1), n_regions), np.nan, dtype=np.float32)
        for i, m in enumerate(maps.values()):
            if name in m:
                stack[i, :len(m[name])] = m[name]
        with warnings.catch_warnings():  # frames no subject covers stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            group.append(np.nanmean(stack, axis=0))
        frames.append([offset, offset + len(group[-1]) * stride])
    return group, frames


_GROUP_ARRAYS = ("t", "p", "q", "z", "p_fwer", "significant")


def _save_group_arrays(out: Path, sanity: dict) -> None:
    """The group tests' arrays (cells: time bin x region) in ``group.npz``; the JSON keeps
    each test's summary (counts and settings)."""
    arrays = {}
    for null, entry in sanity["nulls"].items():
        for name, result in entry.get("group", {}).items():
            for field in _GROUP_ARRAYS:
                arrays[f"{null}/{name}/{field}"] = np.asarray(getattr(result, field))
            entry["group"][name] = result.summary()
    with atomic_path(out / "group.npz") as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)


def load_group_result(directory: Path, null: str, class_name: str, summary: dict):
    """One group test written by :func:`explain_model`, as a ``GroupTestResult``."""
    from .group import GroupTestResult

    with np.load(Path(directory) / "group.npz") as data:
        arrays = {f: data[f"{null}/{class_name}/{f}"] for f in _GROUP_ARRAYS}
    settings = {k: summary[k] for k in ("n_subjects", "n_permutations", "exact", "tail", "alpha", "method")}
    extra = {k: v for k, v in summary.items() if k == "normalise"}
    return GroupTestResult(**arrays, **settings, extra=extra)
