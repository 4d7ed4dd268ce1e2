"""Parcellating one HCP-size run: nilearn's masker, fmri_ica's in-memory path, the stream.

An HCP-size run (91 x 109 x 91 x 405 float32 .nii.gz on the MNI 2 mm grid, noise around
10000 inside nilearn's MNI152 brain mask, zeros outside) is written once into ``--work``;
seitzman300 is built on its grid. Each method then runs in a fresh process (so that its
peak RSS, VmHWM, is its own), interleaved across repeats; the table gives medians.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_parcellation.py --repeats 3

Methods (all but the floors give cleaned signals: detrend, z-score, high-pass 0.008 Hz):

* ``nilearn``: ``NiftiLabelsMasker(...).fit_transform(path)``.
* ``fmri_ica, engine="nilearn"``: the whole run loaded by nibabel, then ``label_means``.
* ``fmri_ica, engine="stream"``: one pass, a few frames at a time; with and without the
  file's SHA-256 (the sidecar's checksum), which the stream computes in the same pass.
* floors: decompressing the file alone (zlib; ISA-L when installed), hashing it alone.

Imports (nilearn's maskers or signal, scipy, sklearn: 150-200 MB RSS) and the atlas
are set-up, not timed;
"RSS before the step" is that baseline. "max |diff|" compares each method's signals with nilearn's. "runs/h" is for one process;
the last table runs ``--jobs`` processes at once (the machine's cores).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE = (91, 109, 91)
AFFINE = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
CLEAN = {"t_r": 0.72, "detrend": True, "standardize": "zscore_sample", "high_pass": 0.008}
METHODS = {
    "nilearn": "nilearn NiftiLabelsMasker",
    "ours_load": 'fmri_ica, engine="nilearn" (load + label_means)',
    "stream_sha": 'fmri_ica, engine="stream" + sha256',
    "stream": 'fmri_ica, engine="stream"',
    "floor_zlib": "floor: zlib decompression",
    "floor_isal": "floor: ISA-L decompression",
    "floor_sha": "floor: sha256 of the file",
}
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# --------------------------------------------------------------------------- set-up


def make_run(path: Path, n_frames: int, seed: int = 0) -> None:
    """Write the run frame by frame (never 1.5 GB in memory)."""
    import gzip

    import nibabel as nib
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import resample_img

    mask_img = resample_img(
        load_mni152_brain_mask(resolution=2),
        target_affine=AFFINE,
        target_shape=SHAPE,
        interpolation="nearest",
        force_resample=True,
        copy_header=True,
    )
    inside = np.asarray(mask_img.dataobj).ravel(order="F") > 0
    header = nib.Nifti1Header()
    header.set_data_shape((*SHAPE, n_frames))
    header.set_data_dtype(np.float32)
    header.set_qform(AFFINE, code=4)
    header.set_sform(AFFINE, code=4)
    header.set_xyzt_units("mm", "sec")
    header["pixdim"][4] = CLEAN["t_r"]
    header.set_data_offset(352)
    rng = np.random.default_rng(seed)
    try:
        from isal import igzip as opener  # fast to write; any gzip reads it
    except ImportError:
        opener = gzip
    tmp = path.with_name(path.name + ".part")
    with opener.open(tmp, "wb", compresslevel=1) as out:
        out.write(header.binaryblock + b"\0" * 4)
        frame = np.zeros(inside.size, np.float32)
        for _ in range(n_frames):
            frame[inside] = 10000 + 100 * rng.standard_normal(inside.sum(), np.float32)
            out.write(frame.tobytes())
    tmp.replace(path)


# --------------------------------------------------------------------------- one measurement


def child(method: str, work: Path) -> dict:
    """Run one method in this (fresh) process; return its timings and peak RSS."""
    import warnings

    warnings.simplefilter("ignore")
    bold = work / "bold.nii.gz"
    setup_rss = vm_hwm()
    start, cpu = time.perf_counter(), time.process_time()
    signals = None
    if method.startswith("floor_"):
        floor(method, bold)
    else:
        # Imports are set-up, not the step; each method imports what it needs.
        importlib.import_module("nilearn.maskers" if method == "nilearn" else "nilearn.signal")
        from fmri_ica.data.atlases import load_atlas
        from fmri_ica.data.parcellation import extract_timeseries

        atlas = load_atlas("seitzman300", target_img=bold, cache_dir=work / "atlas_cache")
        setup_rss = vm_hwm()
        start, cpu = time.perf_counter(), time.process_time()
        if method == "nilearn":
            signals = atlas.masker(**CLEAN).fit_transform(bold)
        else:
            engine = "nilearn" if method == "ours_load" else "stream"
            provenance = {} if method == "stream_sha" else None
            signals = extract_timeseries(bold, atlas, engine=engine, provenance=provenance, **CLEAN)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if signals is not None:
        np.save(work / f"signals_{method}.npy", np.asarray(signals, np.float32))
    return {"seconds": seconds, "cpu_s": cpu, "peak_mb": vm_hwm(), "setup_mb": setup_rss}


def floor(method: str, bold: Path) -> None:
    import gzip
    import hashlib

    if method == "floor_sha":
        digest = hashlib.sha256()
        with open(bold, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        return
    if method == "floor_isal":
        from isal import igzip as opener
    else:
        opener = gzip
    with opener.open(bold, "rb") as stream:
        while stream.read(16 << 20):
            pass


def vm_hwm() -> float:
    """Peak resident memory of this process (MB), from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def spawn(method: str, work: Path) -> subprocess.Popen:
    env = {**os.environ, **dict.fromkeys(THREAD_VARS, "1")}
    command = [sys.executable, __file__, "--child", method, "--work", str(work)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)


def collect(process: subprocess.Popen) -> dict:
    out, _ = process.communicate()
    if process.returncode:
        raise RuntimeError(f"child failed ({process.returncode}): {out}")
    return json.loads(out.strip().splitlines()[-1])


# --------------------------------------------------------------------------- tables


def measure(methods, work: Path, repeats: int) -> dict[str, list[dict]]:
    results = {m: [] for m in methods}
    for repeat in range(repeats):
        order = methods if repeat % 2 == 0 else methods[::-1]  # interleaved, both orders
        for method in order:
            results[method].append(collect(spawn(method, work)))
            print(
                f"  repeat {repeat + 1}/{repeats} {method}: {results[method][-1]}", file=sys.stderr
            )
    return results


def concurrent(methods, work: Path, jobs: int) -> dict[str, float]:
    """Runs per hour with ``jobs`` processes at once (the same file: it is in page cache)."""
    per_hour = {}
    for method in methods:
        start = time.perf_counter()
        processes = [spawn(method, work) for _ in range(jobs)]
        peaks = [collect(p)["peak_mb"] for p in processes]
        wall = time.perf_counter() - start
        per_hour[method] = (3600 * jobs / wall, wall, max(peaks))
        print(f"  {jobs} at once {method}: {wall:.1f} s", file=sys.stderr)
    return per_hour


def differences(work: Path, methods) -> dict[str, float]:
    reference = np.load(work / "signals_nilearn.npy")
    return {
        m: float(np.abs(np.load(work / f"signals_{m}.npy") - reference).max())
        for m in methods
        if (work / f"signals_{m}.npy").is_file()
    }


def environment() -> str:
    import torch

    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_info

        pools = ", ".join(f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info())
    except ImportError:
        pools = "threadpoolctl not installed"
    threads = ", ".join(f"{v}={os.environ.get(v, 'unset')}" for v in THREAD_VARS)
    return (
        f"children: {threads} (set to 1); parent: torch threads {torch.get_num_threads()}, "
        f"numpy/BLAS pools {pools}; {os.cpu_count()} CPUs"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="folder for the run (reused)")
    parser.add_argument("--frames", type=int, default=405)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="processes at once (runs/h)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.work)))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_parcellation_"))
    work.mkdir(parents=True, exist_ok=True)
    bold = work / "bold.nii.gz"
    if not bold.is_file():
        print(f"writing {bold} ...", file=sys.stderr)
        make_run(bold, args.frames)
    from fmri_ica.data.atlases import load_atlas
    from fmri_ica.data.streaming import _igzip

    atlas = load_atlas("seitzman300", target_img=bold, cache_dir=work / "atlas_cache")
    methods = [m for m in METHODS if m != "floor_isal" or _igzip is not None]
    load_before = os.getloadavg()
    results = measure(methods, work, args.repeats)
    throughput = concurrent(["nilearn", "ours_load", "stream_sha"], work, args.jobs)
    load_after = os.getloadavg()
    diffs = differences(work, methods)
    nilearn_s = statistics.median(r["seconds"] for r in results["nilearn"])
    nilearn_mb = statistics.median(r["peak_mb"] for r in results["nilearn"])
    nilearn_cpu = statistics.median(r["cpu_s"] for r in results["nilearn"])
    size = bold.stat().st_size / 1e9
    print(
        f"\nRun: {args.frames} frames of 91x109x91 float32 ({np.prod(SHAPE) * 4 * args.frames / 1e9:.2f} GB; "
        f".nii.gz {size:.2f} GB), seitzman300 on the 2 mm grid ({atlas.n_regions} regions). "
        f"{args.repeats} repeats, separate processes, interleaved; medians.\n"
        f"{environment()}. Load average (1 min) {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after.\n"
    )
    print(
        "| method | wall (s) | CPU (s) | peak RSS (MB) | RSS before the step (MB) | "
        "x faster than nilearn (wall) | x less CPU than nilearn | peak memory / nilearn | "
        "runs/h (1 process) | runs/h per idle core (from CPU) | "
        "max abs diff vs nilearn |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for method in methods:
        seconds = statistics.median(r["seconds"] for r in results[method])
        cpu = statistics.median(r["cpu_s"] for r in results[method])
        peak = statistics.median(r["peak_mb"] for r in results[method])
        setup = statistics.median(r["setup_mb"] for r in results[method])
        diff = f"{diffs[method]:.1e}" if method in diffs else "-"
        print(
            f"| {METHODS[method]} | {seconds:.2f} | {cpu:.2f} | {peak:.0f} | {setup:.0f} | "
            f"{nilearn_s / seconds:.1f} | {nilearn_cpu / cpu:.1f} | 1/{nilearn_mb / peak:.0f} | "
            f"{3600 / seconds:.0f} | {3600 / cpu:.0f} | {diff} |"
        )
    print(f"\n{args.jobs} processes at once (each parcellates the run; wall until both finish):\n")
    print("| method | wall (s) | runs/h | peak RSS per process (MB) |")
    print("|---|---:|---:|---:|")
    for method, (per_hour, wall, peak) in throughput.items():
        print(f"| {METHODS[method]} | {wall:.1f} | {per_hour:.0f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
