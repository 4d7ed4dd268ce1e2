"""Time to write a simulated HCP data set: wall and CPU seconds, per run, size on disk.

Prints a markdown table, one row per voxel size. CPU time (this process, all threads)
is the figure to compare across machines: wall time depends on how many cores are free.
The atlas is built (and cached) before the timed calls.

Usage::

    python benchmarks/bench_simulate.py                       # the default demo set
    python benchmarks/bench_simulate.py --subjects 4 --voxel-size 4 6 8
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from fmri_ica.data.simulate import HCP_TASKS, directory_size, simulate_hcp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=24)
    parser.add_argument("--voxel-size", type=float, nargs="+", default=[6.0])
    parser.add_argument("--frames", default="short")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    frames = int(args.frames) if args.frames.isdigit() else args.frames
    print("| voxel mm | subjects | runs | wall s | CPU s | CPU s/run | MiB |")
    print("|---|---|---|---|---|---|---|")
    for voxel_size in args.voxel_size:
        with tempfile.TemporaryDirectory() as tmp:
            # warm-up: imports, atlas build and cache, brain grid
            simulate_hcp(Path(tmp) / "warm", n_subjects=1, tasks=HCP_TASKS[:1], directions=("LR",),
                         frames=20, voxel_size=voxel_size, progress=False)
            shutil.rmtree(Path(tmp) / "warm")
            wall, cpu = time.perf_counter(), time.process_time()
            result = simulate_hcp(Path(tmp) / "sim", n_subjects=args.subjects, frames=frames,
                                  voxel_size=voxel_size, n_jobs=args.jobs, progress=False)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            n_runs = len(result.ground_truth["runs"])
            size = directory_size(result.path) / 2**20
            print(f"| {voxel_size:g} | {args.subjects} | {n_runs} | {wall:.1f} | {cpu:.1f} | "
                  f"{cpu / n_runs:.3f} | {size:.0f} |")


if __name__ == "__main__":
    main()
