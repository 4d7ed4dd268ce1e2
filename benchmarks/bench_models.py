"""Forward+backward time and peak memory: step-loop reference vs ours vs plain nn.LSTM.

Prints a markdown table. Each timed call is ``model(x)`` then ``logits.sum().backward()``
with ``x`` requiring grad (as saliency does), float32, eval mode. Methods are
interleaved within each repetition so that machine load hits them alike; medians are
reported. Peak memory is the growth of the peak resident set (``VmHWM`` in
/proc/self/status, reset through /proc/self/clear_refs) over the resident set before one
forward+backward, after a warm-up, in a fresh subprocess per (configuration, method):
tracemalloc does not see torch's CPU allocations.

Usage::

    python benchmarks/bench_models.py --threads 2
    python benchmarks/bench_models.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

from fmri_ica.models import build_model, reference_forward

METHODS = ("reference", "ours", "lstm")


def make_case(method, n_steps, n_features, embedding, args, seed=0):
    """The callable to time and its input (batch, time, features)."""
    torch.manual_seed(seed)
    x = torch.randn(args.batch, n_steps, n_features, requires_grad=True)
    if method == "lstm":
        lstm = torch.nn.LSTM(n_features, args.hidden, batch_first=True)
        return (lambda inp: lstm(inp)[1][0][-1]), x
    model = build_model("ica", n_features, 2, embedding=embedding, hidden_size=args.hidden,
                        r=args.r, d_a=args.d_a, dropout=0.0).eval()
    if method == "ours":
        return model, x
    return (lambda inp: reference_forward(model, inp)), x


def forward_backward(fn, x) -> float:
    x.grad = None
    start = time.perf_counter()
    fn(x).sum().backward()
    return time.perf_counter() - start


def peak_memory_mib(method, n_steps, n_features, embedding, args) -> float | None:
    """Peak RSS growth (MiB) of one forward+backward, measured in a fresh process."""
    command = [sys.executable, __file__, "--_memory", method, str(n_steps), str(n_features),
               embedding, "--threads", str(args.threads), "--batch", str(args.batch),
               "--hidden", str(args.hidden), "--r", str(args.r), "--d-a", str(args.d_a)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return None
    return float(done.stdout.strip().splitlines()[-1])


def measure_memory_here(args) -> None:
    method, n_steps, n_features, embedding = args._memory
    fn, x = make_case(method, int(n_steps), int(n_features), embedding, args)
    forward_backward(fn, x)  # warm-up: allocator caches and oneDNN primitives
    before = _rss_kib("VmRSS")
    _reset_peak_rss()
    forward_backward(fn, x)
    print((_rss_kib("VmHWM") - before) / 1024)


def _reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); else fall back to the old peak."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_config(n_steps, n_features, embedding, args):
    methods = [m for m in METHODS if m != "reference" or n_steps <= args.ref_max_steps]
    cases = {m: make_case(m, n_steps, n_features, embedding, args) for m in methods}
    for m in methods:
        if m != "reference":
            forward_backward(*cases[m])  # warm-up
    times = {m: [] for m in methods}
    for rep in range(args.repeats):
        for m in methods:
            if m == "reference" and rep >= args.ref_repeats:
                continue
            times[m].append(forward_backward(*cases[m]))
    row = {m: statistics.median(t) for m, t in times.items()}
    row["n_ref"] = len(times.get("reference", []))
    if args.memory:
        for m in methods:
            if m != "reference" or args.ref_memory:
                row[f"mem_{m}"] = peak_memory_mib(m, n_steps, n_features, embedding, args)
    return row


def _fmt(value, spec):
    return "—" if value is None else format(value, spec)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T=100, N=100, 2 repeats")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ref-repeats", type=int, default=2,
                        help="repeats of the (slow) step loop, at most --repeats")
    parser.add_argument("--ref-max-steps", type=int, default=405,
                        help="skip the step loop for longer sequences")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--r", type=int, default=20)
    parser.add_argument("--d-a", type=int, default=50)
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 284, 405])
    parser.add_argument("--features", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--embeddings", nargs="+", default=["mean", "matrix"],
                        choices=["mean", "matrix"])
    parser.add_argument("--no-memory", dest="memory", action="store_false")
    parser.add_argument("--ref-memory", action="store_true",
                        help="also measure the step loop's memory (one more slow run)")
    parser.add_argument("--_memory", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args._memory:
        measure_memory_here(args)
        return 0
    if args.quick:
        args.steps, args.features, args.repeats, args.ref_repeats = [100], [100], 2, 1
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {args.threads} threads, load average "
          f"{os.getloadavg()[0]:.1f} at start; B={args.batch}, H={args.hidden}, r={args.r}, "
          f"d_a={args.d_a}, float32, forward+backward, {args.repeats} repeats "
          f"(step loop {args.ref_repeats}); memory = peak RSS growth (VmHWM), fresh process")
    print()
    print("| embedding | T | N | loop s (n) | ours s | nn.LSTM s | loop/ours | ours/LSTM "
          "| loop MiB | ours MiB | LSTM MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for embedding in args.embeddings:
        for n_steps in args.steps:
            for n_features in args.features:
                row = run_config(n_steps, n_features, embedding, args)
                ref = row.get("reference")
                print(f"| {embedding} | {n_steps} | {n_features} | {_fmt(ref, '.2f')} "
                      f"({row['n_ref']}) | {row['ours']:.3f} | {row['lstm']:.3f} | "
                      f"{_fmt(ref and ref / row['ours'], '.1f')} | "
                      f"{row['ours'] / row['lstm']:.2f} | {_fmt(row.get('mem_reference'), '.0f')}"
                      f" | {_fmt(row.get('mem_ours'), '.0f')} | "
                      f"{_fmt(row.get('mem_lstm'), '.0f')} |", flush=True)
                results.append({"embedding": embedding, "T": n_steps, "N": n_features, **row})
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")
    print(json.dumps(results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
