"""Cohort-scale rehearsal at region level: memory and time per stage vs number of subjects.

Writes simulated region time series for N subjects (7 HCP tasks x 2 runs, HCP's run
lengths 176-405 frames, 300 regions; a block-design task signal in 10 regions per task
plus noise) in the format ``fmri-ica parcellate`` writes (a TSV and a JSON sidecar per run,
read by :func:`fmri_ica.data.parcellation.load_timeseries`), then runs each stage in a
subprocess of its own and reports its wall time and peak resident memory (VmHWM):

* ``samples``: read every run and build the sample set as the pipeline's samples stage does
  (whole runs, zero-padded; subject-grouped folds; fold 0's scaler), save ``samples.npz``;
* ``train``: one epoch of the input-cell attention model (``kind: ica``, the config's
  defaults) on fold 0's training subjects (random 100-frame crops, 4 per run);
* ``explain``: gradient saliency of a shard of fold 0's held-out windows (100 frames,
  25 apart).

Runs are written once, for the largest N, and smaller N take the first subjects. Only
``--pool`` distinct noise draws per task and run are written; the other subjects' TSVs are
hard links to them (their sidecars are their own), so writing 14,000 runs costs seconds,
while every run is still read and parsed on its own by the samples stage.

    nice -n 5 python benchmarks/rehearsal.py --subjects 100 300 1000 --out /tmp/rehearsal
    python benchmarks/rehearsal.py --subjects 100 300 --store memmap   # fmri_ica.data.store

``--store memmap`` builds the memory-mapped store instead (streaming over the runs), trains
on crops read from it per batch and explains windows of the runs the shard needs.

A stage whose peak memory, extrapolated linearly from a smaller N, would exceed
``--max-memory-gb`` is not run and is marked so (this machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TASKS = ("EMOTION", "GAMBLING", "LANGUAGE", "MOTOR", "RELATIONAL", "SOCIAL", "WM")
DIRECTIONS = ("LR", "RL")
T_R = 0.72
STAGES = ("samples", "train", "explain")
MODEL = {"hidden_size": 32, "r": 10, "d_a": 50, "embedding": "mean", "dropout": 0.3}
WINDOW, STEP, CROPS_PER_RUN, BATCH_SIZE, FOLDS = 100, 25, 4, 32, 5


# --------------------------------------------------------------------------- data


def _frames() -> dict[str, int]:
    from fmri_ica.data.simulate import HCP_FRAMES

    return {task: HCP_FRAMES[task] for task in TASKS}


def _run_series(task_index: int, n_frames: int, n_regions: int, draw: int, seed: int):
    """One run: (frames, regions) float32, block design (20 frames on, 15 off) in 10
    regions of its own task plus unit noise; z-scored per region as parcellate writes it.

    Returns (series, task_on) with task_on a bool array of shape (frames,).
    """
    rng = np.random.default_rng([seed, task_index, draw])
    task_on = (np.arange(n_frames) % 35) >= 15
    series = rng.standard_normal((n_frames, n_regions)).astype(np.float32)
    regions = np.arange(10) + 10 * task_index
    series[:, regions % n_regions] += 1.0 * task_on[:, None]
    series -= series.mean(axis=0)
    series /= series.std(axis=0)
    return series, task_on


def _sidecar(subject: str, task: str, run: str, task_on: np.ndarray, labels: list) -> dict:
    n = len(task_on)
    return {
        "Description": "Simulated region time series (benchmarks/rehearsal.py)",
        "subject": subject, "session": "", "task": task, "run": run, "layout": "hcp",
        "t_r": T_R, "n_frames_total": n, "frames_kept": list(range(n)),
        "conditions": [task.lower() if on else "" for on in task_on],
        "task_on": task_on.astype(int).tolist(), "labels": labels,
        "atlas": {"name": "rehearsal", "kind": "labels"},
    }


def _run_path(root: Path, subject: str, task: str, run: str) -> Path:
    return root / f"sub-{subject}" / "func" / f"sub-{subject}_task-{task}_run-{run}_atlas-rehearsal_timeseries.tsv"


def write_cohort(root: Path, n_subjects: int, *, n_regions: int = 300, pool: int = 8,
                 seed: int = 0) -> list[Path]:
    """Write ``n_subjects`` x 7 tasks x 2 runs of region time series (TSV + JSON sidecar).

    Subject ``s`` uses noise draw ``s % pool`` of each task and run, hard-linked from the
    pool; finished files are kept, so a larger N adds only its new subjects.

    Returns the TSV paths, sorted by subject, task, run.
    """
    frames = _frames()
    labels = [{"index": i + 1, "name": f"region_{i + 1:03d}"} for i in range(n_regions)]
    header = "\t".join(label["name"] for label in labels)
    pool_dir, paths = root / "pool", []
    pool_dir.mkdir(parents=True, exist_ok=True)
    for s in range(n_subjects):
        subject = f"{100000 + s}"
        for t, task in enumerate(TASKS):
            for d, run in enumerate(DIRECTIONS):
                path = _run_path(root, subject, task, run)
                paths.append(path)
                if path.with_suffix(".json").is_file():
                    continue
                draw = (s % pool) * len(DIRECTIONS) + d
                source = pool_dir / f"{task}_{draw}.tsv"
                series, task_on = _run_series(t, frames[task], n_regions, draw, seed)
                if not source.is_file():
                    np.savetxt(source, series, fmt="%.5g", delimiter="\t", header=header, comments="")
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    os.link(source, path)
                path.with_suffix(".json").write_text(json.dumps(_sidecar(subject, task, run, task_on, labels)))
    return paths


# --------------------------------------------------------------------------- stages


def _samples_memory(paths: list[Path], out: Path) -> dict:
    """The pipeline's samples stage: whole runs in one in-memory array, folds, fold 0's scaler."""
    from fmri_ica.data.parcellation import load_timeseries
    from fmri_ica.data.samples import Standardizer, build_samples
    from fmri_ica.training.crossval import subject_folds

    samples = build_samples((load_timeseries(p) for p in paths), window=None, pad_short=True)
    folds = subject_folds(samples.subjects, FOLDS, seed=0, n_val_folds=0)
    scaler = Standardizer().fit(samples.subset(folds[0]["train"]))
    samples.save(out / "samples.npz")
    (out / "fold0.json").write_text(json.dumps({
        "train": folds[0]["train"].tolist(), "test": folds[0]["test"].tolist(),
        "standardizer": scaler.to_dict()}))
    return {"runs": len(samples), "array_gb": samples.x.nbytes / 1e9, "shape": list(samples.x.shape)}


def _samples_memmap(paths: list[Path], out: Path) -> dict:
    """The memory-mapped sample store (:mod:`fmri_ica.data.store`): built streaming over the
    runs; fold 0's scaler fitted in blocks."""
    try:
        from fmri_ica.data import store
    except ImportError:
        raise SystemExit("--store memmap needs fmri_ica.data.store, which this checkout does not "
                         "have: use --store memory.") from None
    from fmri_ica.data.parcellation import load_timeseries
    from fmri_ica.training.crossval import subject_folds

    built = store.build_store((load_timeseries(p) for p in paths), out / "store", window=None,
                              pad_short=True)
    folds = subject_folds(built.subjects, FOLDS, seed=0, n_val_folds=0)
    scaler = store.fit_standardizer(built.subset(folds[0]["train"]))
    (out / "fold0.json").write_text(json.dumps({
        "train": folds[0]["train"].tolist(), "test": folds[0]["test"].tolist(),
        "standardizer": scaler.to_dict()}))
    open_store = _memory_gb()  # while the store is mapped: how much of the RSS is its pages
    return {"runs": len(built), "array_gb": float(np.prod(built.shape)) * 4 / 1e9,
            "shape": list(built.shape), "anon_open_gb": open_store["anon_gb"],
            "file_open_gb": open_store["file_gb"]}


def _fold0(out: Path, role: str, store: str):
    """Fold 0's ``role`` samples, standardised as the pipeline's load_fold does; with
    ``store="memmap"`` a view of the store and fold 0's scaler instead."""
    from fmri_ica.data.samples import SampleSet, Standardizer

    fold = json.loads((out / "fold0.json").read_text())
    if store == "memmap":
        from fmri_ica.data.store import SampleStore

        scaler = Standardizer.from_dict(fold["standardizer"])
        return SampleStore(out / "store").subset(np.asarray(fold[role])), scaler
    samples = SampleSet.load(out / "samples.npz")
    return Standardizer.from_dict(fold["standardizer"]).transform(samples.subset(np.asarray(fold[role])))


def _train(out: Path, store: str, device: str = "cpu") -> dict:
    """One epoch of the input-cell attention model on fold 0's training runs."""
    import torch

    from fmri_ica.models import build_model
    from fmri_ica.training import SequenceDataset, fit
    from fmri_ica.training.data import RunCropDataset

    train = _fold0(out, "train", store)
    if isinstance(train, tuple):  # the store and fold 0's scaler: crops read per batch
        from fmri_ica.data.store import StoreRunCropDataset

        train, scaler = train
        crops = StoreRunCropDataset(train, window=WINDOW, crops_per_run=CROPS_PER_RUN, seed=0,
                                    scaler=scaler)
        first = train.read(np.arange(32), scaler)[0]
    else:
        crops = RunCropDataset(train.x, train.y, train.lengths, window=WINDOW,
                               crops_per_run=CROPS_PER_RUN, seed=0)
        first = train.x[:32]
    torch.manual_seed(0)
    model = build_model("ica", len(train.region_names), len(train.classes), **MODEL)
    val = SequenceDataset(first[:, :WINDOW], train.y[:32], np.minimum(train.lengths[:32], WINDOW))
    start = time.perf_counter()
    fit(model, crops, val, epochs=1, batch_size=BATCH_SIZE, patience=None, selection="last",
        seed=0, progress=False, handle_signals=False, device=device)
    model.cpu()
    seconds = time.perf_counter() - start
    torch.save(model.state_dict(), out / "model.pt")
    return {"crops": len(crops), "epoch_s": seconds, "ms_per_crop": 1e3 * seconds / len(crops)}


def _explain(out: Path, n_windows: int, store: str, device: str = "cpu") -> dict:
    """Gradient saliency of the first ``n_windows`` held-out windows of fold 0."""
    import torch

    from fmri_ica.data.samples import windows_from_runs
    from fmri_ica.models import build_model
    from fmri_ica.saliency.methods import attribute

    test, cohort = _fold0(out, "test", store), None
    if isinstance(test, tuple):  # the store: read only the runs the shard needs
        store, scaler = test
        cohort = int(sum(len(range(0, max(n - WINDOW, 0) + STEP, STEP)) for n in store.lengths))
        test = scaler.transform(store.subset(np.arange(min(len(store), n_windows))).to_samples())
    windows = windows_from_runs(test, WINDOW, STEP)
    shard = slice(0, min(n_windows, len(windows)))
    model = build_model("ica", len(test.region_names), len(test.classes), **MODEL)
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    model.to(device).eval()
    x = torch.from_numpy(np.ascontiguousarray(windows.x[shard])).to(device)
    start = time.perf_counter()
    saliency = attribute(model, x, target=torch.from_numpy(windows.y[shard]).long().to(device),
                         lengths=torch.from_numpy(windows.lengths[shard]).long(), batch_size=64)
    seconds = time.perf_counter() - start
    cohort = cohort or len(windows)
    return {"cohort_windows": cohort, "windows": int(saliency.shape[0]),
            "explain_s": seconds, "ms_per_window": 1e3 * seconds / int(saliency.shape[0])}


def _memory_gb() -> dict:
    """This process's peak resident memory (VmHWM) and its resident anonymous and file-backed
    memory now (RssAnon, RssFile: pages of a memory map count in RSS but are page cache), in GB."""
    fields = {"VmHWM:": "peak_gb", "RssAnon:": "anon_gb", "RssFile:": "file_gb"}
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(maxsplit=1)[0] if line else ""
        if key in fields:
            found[fields[key]] = int(line.split()[1]) * 1024 / 1e9
    return found


def run_stage(stage: str, out: Path, n_subjects: int, args) -> None:
    """Child process: one stage on the first ``n_subjects``; prints its figures as JSON."""
    import torch

    torch.set_num_threads(1)
    work = out / f"n{n_subjects}"
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if stage == "samples":
        paths = write_cohort(out / "cohort", n_subjects, n_regions=args.regions, pool=args.pool)
        build = _samples_memmap if args.store == "memmap" else _samples_memory
        figures = build(paths, work)
    elif stage == "train":
        figures = _train(work, args.store, args.device)
    else:
        figures = _explain(work, args.explain_windows, args.store, args.device)
    usage = resource.getrusage(resource.RUSAGE_SELF)  # CPU time: a fairer figure on a busy host
    figures.update(stage_s=time.perf_counter() - start, cpu_s=usage.ru_utime + usage.ru_stime,
                   **_memory_gb())
    print(json.dumps(figures))


# --------------------------------------------------------------------------- driver


def _measure(stage: str, n_subjects: int, args) -> dict:
    command = [sys.executable, __file__, "--stage-only", stage, "--subjects", str(n_subjects),
               "--out", str(args.out), "--regions", str(args.regions), "--pool", str(args.pool),
               "--explain-windows", str(args.explain_windows), "--store", args.store,
               "--device", args.device]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"stage {stage} with {n_subjects} subjects failed:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_s": time.perf_counter() - start}


def _projected_gb(results: dict, stage: str, n_subjects: int) -> float | None:
    """Peak memory of ``stage`` at ``n_subjects``, linear in subjects from the largest
    measured N (None when none was measured)."""
    measured = [(n, r["peak_gb"]) for (s, n), r in results.items() if s == stage and "peak_gb" in r]
    if not measured:
        return None
    n, peak = max(measured)
    return peak * n_subjects / n


def _table(results: dict, subjects: list[int]) -> str:
    rows = ["| subjects | stage | wall (s) | in-stage (s) | CPU (s) | peak memory (GB) | notes |",
            "|---:|---|---:|---:|---:|---:|---|"]
    for n in subjects:
        for stage in STAGES:
            r = results.get((stage, n))
            if r is None:
                continue
            if "skipped" in r:
                rows.append(f"| {n:,} | {stage} | - | - | - | ~{r['skipped']:.1f} (projected) | "
                            "not run: over --max-memory-gb |")
                continue
            note = {"samples": lambda r: f"{r['runs']:,} runs, array {r.get('array_gb', 0):.2f} GB",
                    "train": lambda r: f"{r['crops']:,} crops, {r['ms_per_crop']:.2f} ms/crop",
                    "explain": lambda r: f"{r['windows']} of {r['cohort_windows']:,} windows, "
                                         f"{r['ms_per_window']:.1f} ms/window"}[stage](r)
            rows.append(f"| {n:,} | {stage} | {r['wall_s']:.1f} | {r['stage_s']:.1f} | "
                        f"{r['cpu_s']:.1f} | {r['peak_gb']:.2f} | {note} |")
    return "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--out", type=Path, default=Path("rehearsal"),
                        help="working folder (the cohort's runs, samples, models)")
    parser.add_argument("--regions", type=int, default=300)
    parser.add_argument("--pool", type=int, default=8,
                        help="distinct noise draws per task and run (others are hard links)")
    parser.add_argument("--explain-windows", type=int, default=128,
                        help="held-out windows in the explained shard")
    parser.add_argument("--store", choices=("memory", "memmap"), default="memory",
                        help="samples in one in-memory array, or the memory-mapped store")
    parser.add_argument("--device", default="cpu",
                        help="torch device for training and saliency, e.g. cuda")
    parser.add_argument("--max-memory-gb", type=float, default=8.0,
                        help="do not run a stage projected to need more")
    parser.add_argument("--stage-only", choices=STAGES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage_only:
        run_stage(args.stage_only, args.out, args.subjects[0], args)
        return
    results, subjects = {}, sorted(args.subjects)
    start = time.perf_counter()
    write_cohort(args.out / "cohort", subjects[-1], n_regions=args.regions, pool=args.pool)
    print(f"wrote {subjects[-1]:,} subjects' runs in {time.perf_counter() - start:.1f} s", flush=True)
    for n in subjects:
        for stage in STAGES:
            projected = _projected_gb(results, stage, n)
            if projected is not None and projected > args.max_memory_gb:
                results[(stage, n)] = {"skipped": projected}
                break  # the later stages need this one's outputs
            results[(stage, n)] = _measure(stage, n, args)
            print(f"{n} subjects, {stage}: {json.dumps(results[(stage, n)])}", flush=True)
    print(_table(results, subjects))
    (args.out / "rehearsal.json").write_text(json.dumps(
        [{"subjects": n, "stage": s, **r} for (s, n), r in results.items()], indent=1))


if __name__ == "__main__":
    main()
