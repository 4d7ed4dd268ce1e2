"""Saliency cost: the model in float32 (the default) vs float64, and the old float64 copy.

Prints a markdown table. Each timed call is ``attribute(model, x, target)`` with the
paper's saliency (``method="gradient"``, the softmax probability) on one chunk of
``--batch`` samples, model as built by ``build_model("ica", ...)`` (eval mode inside
``attribute``). Three ways, interleaved within each repetition so that machine load hits
them alike; medians of process time (CPU seconds of this process: robust to other
processes when ``--threads 1``) and of wall time:

- ``float32``: ``attribute(model, x, y)``, the model in its own dtype;
- ``float64``: ``attribute(model, x, y, dtype=torch.float64)``, parameters cast once per
  call, no copy of the model;
- ``float64 copy``: ``copy.deepcopy(model).double()`` per call, then attribute: what the
  default did before.

The ratio column is float64 copy / float32. The last column is the largest difference
between the float32 and float64 maps, each divided by its sample's largest entry.

Usage::

    python benchmarks/bench_saliency.py --threads 1
    python benchmarks/bench_saliency.py --quick
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time

import torch

from fmri_ica.models import build_model
from fmri_ica.saliency import attribute

WAYS = ("float32", "float64", "float64 copy")


def run_way(way, model, x, y):
    if way == "float32":
        return attribute(model, x, y, batch_size=len(x))
    if way == "float64":
        return attribute(model, x, y, batch_size=len(x), dtype=torch.float64)
    work = copy.deepcopy(model).double()
    return attribute(work, x.double(), y, batch_size=len(x))


def timed(way, model, x, y):
    cpu, wall = time.process_time(), time.perf_counter()
    result = run_way(way, model, x, y)
    return time.process_time() - cpu, time.perf_counter() - wall, result


def run_config(embedding, n_steps, n_features, args):
    torch.manual_seed(0)
    model = build_model("ica", n_features, 2, embedding=embedding, hidden_size=args.hidden,
                        r=args.r, d_a=args.d_a)
    x = torch.randn(args.batch, n_steps, n_features)
    y = torch.randint(0, 2, (args.batch,))
    maps = {way: timed(way, model, x, y)[2] for way in WAYS}  # warm-up
    scaled = {w: m / m.abs().flatten(1).amax(1)[:, None, None] for w, m in maps.items()}
    error = float((scaled["float32"] - scaled["float64"]).abs().max())
    cpu, wall = {w: [] for w in WAYS}, {w: [] for w in WAYS}
    for _ in range(args.repeats):
        for way in WAYS:
            c, w, _ = timed(way, model, x, y)
            cpu[way].append(c)
            wall[way].append(w)
    row = {w: (statistics.median(cpu[w]), statistics.median(wall[w])) for w in WAYS}
    return row, error


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T=100, N=100, 2 repeats")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--r", type=int, default=20)
    parser.add_argument("--d-a", type=int, default=50)
    parser.add_argument("--steps", type=int, nargs="+", default=[284])
    parser.add_argument("--features", type=int, nargs="+", default=[300])
    parser.add_argument("--embeddings", nargs="+", default=["mean", "matrix"],
                        choices=["mean", "matrix"])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.features, args.repeats = [100], [100], 2
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {args.threads} threads, load average "
          f"{os.getloadavg()[0]:.1f} at start; B={args.batch}, H={args.hidden}, r={args.r}, "
          f"d_a={args.d_a}; saliency = gradient of the probability; medians of "
          f"{args.repeats} interleaved repeats, process (CPU) s / wall s")
    print()
    print("| embedding | T | N | float32 | float64 | float64 copy | copy/float32 (CPU) "
          "| max diff (scaled) |")
    print("|---|---|---|---|---|---|---|---|")
    for embedding in args.embeddings:
        for n_steps in args.steps:
            for n_features in args.features:
                row, error = run_config(embedding, n_steps, n_features, args)
                cells = " | ".join(f"{row[w][0]:.3f} / {row[w][1]:.3f}" for w in WAYS)
                ratio = row["float64 copy"][0] / row["float32"][0]
                print(f"| {embedding} | {n_steps} | {n_features} | {cells} | {ratio:.2f} "
                      f"| {error:.1e} |", flush=True)
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
