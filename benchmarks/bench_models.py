"""Forward+backward time of the input-cell attention models against their floors and two loops.

Prints markdown tables. Each timed call is ``fn(x)`` then ``.sum().backward()`` with ``x``
requiring grad (as saliency does), float32, eval mode, the model's weights requiring grad
(as in training). Methods are interleaved within each repetition so that machine load
hits them alike; medians are reported, with the thread count and the load average.

- **ours**: ``build_model("ica", ...)``, the vectorised attention and a fused recurrence.
- **nn.LSTM**: a bare ``torch.nn.LSTM(N, H)`` on the same input (the floor of ``mean``).
- **floor** (``matrix`` only): the r input GEMMs ``x W_k^T`` (each (B T, N) x (N, G), with
  their backward GEMMs) plus the bare ``nn.LSTM``: the work the matrix form cannot avoid.
- **arithmetic** (``mean`` only): not a timing; the ours/LSTM ratio if every multiply-add
  ran at the same rate (:func:`arithmetic_ratio`). The gap between it and ours/LSTM is
  what better kernels could still win; the ratio itself needs less arithmetic.
- **frozen**: ours with the weights not requiring grad (saliency of a trained model).
- **step loop**: the same cell as a plain step loop written as fast as a loop can be:
  float32, scores and their stabilising shift computed once, the running sums
  ``Z_t = sum_s p_s`` and ``U_t = sum_s p_s x_s`` carried from step to step (no prefix
  recomputation), then one fused ``torch.lstm_cell`` per step.
- **prefix loop**: ``fmri_ica.models.reference_forward``, the paper's loop: it recomputes
  the scores and softmax over the whole prefix at every step (O(T^2)). Slow: run
  ``--ref-repeats`` times (default 1), for T up to ``--ref-max-steps``.

Peak memory (``--memory``): growth of the peak resident set (``VmHWM``, reset through
/proc/self/clear_refs) over one forward+backward after a warm-up, in a fresh subprocess
per (configuration, method): tracemalloc does not see torch's CPU allocations.

Usage::

    nice -n 5 python benchmarks/bench_models.py --threads 1
    nice -n 5 python benchmarks/bench_models.py --threads 1 --clock cpu   # a loaded machine
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
import torch.nn.functional as F

from fmri_ica.models import build_model, reference_forward
from fmri_ica.models.attention import NORM_EPS

METHODS = ("ours", "lstm", "floor", "frozen", "loop", "prefix")


def make_case(method, n_steps, n_features, embedding, args, seed=0):
    """The callable to time and its input (batch, time, features)."""
    torch.manual_seed(seed)
    x = torch.randn(args.batch, n_steps, n_features, requires_grad=True)
    if method in ("lstm", "floor"):
        lstm = torch.nn.LSTM(n_features, args.hidden, batch_first=True)
        if method == "lstm":
            return (lambda inp: lstm(inp)[1][0][-1]), x
        weights = torch.randn(args.r, 4 * args.hidden, n_features, requires_grad=True)
        return (lambda inp: _gemm_floor(inp, weights) + lstm(inp)[1][0][-1].sum()), x
    model = build_model("ica", n_features, 2, embedding=embedding, hidden_size=args.hidden,
                        r=args.r, d_a=args.d_a, dropout=0.0).eval()
    if method == "frozen":
        model.requires_grad_(False)
    if method in ("ours", "frozen"):
        return model, x
    if method == "loop":
        return (lambda inp: step_loop(model, inp)), x
    return (lambda inp: reference_forward(model, inp)), x


def _gemm_floor(x, weights):
    """``sum_k x W_k^T`` summed: r (B T, N) x (N, G) GEMMs, accumulated in place."""
    flat = x.reshape(-1, x.shape[2])
    gates = flat @ weights[0].T
    for w_k in weights[1:]:
        gates = torch.addmm(gates, flat, w_k.T)
    return gates.sum()


def step_loop(model, x):
    """Logits (batch, n_classes) of a one-layer, unidirectional LSTM ``model``, step by step.

    The fastest honest loop: the scores depend on ``x_s`` only, so they are computed in
    one call; the running sums are carried, so each step costs O(r N) for the attention.
    The shift ``c`` (the largest score of each hop) cancels in ``U_t / Z_t``.
    """
    attention, rnn = model.attention, model.rnn
    scores = attention.scores(x)  # (B, T, r)
    p = torch.exp(scores - scores.detach().amax(1, keepdim=True))
    batch, r = x.shape[0], p.shape[2]
    z = x.new_zeros(batch, r)
    u = x.new_zeros(batch, r, x.shape[2])
    h = x.new_zeros(batch, rnn.hidden_size)
    c = x.new_zeros(batch, rnn.hidden_size)
    for t in range(x.shape[1]):
        z = z + p[:, t]
        u = torch.baddbmm(u, p[:, t, :, None], x[:, t, None, :])  # u += p_t x_t^T
        m_t = u / z[..., None]
        if model.embedding == "mean":
            cell_input = m_t.mean(1)
        else:
            cell_input = F.normalize(m_t.flatten(1), dim=1, eps=NORM_EPS)
        h, c = torch.lstm_cell(cell_input, (h, c), rnn.weight_ih_l0, rnn.weight_hh_l0,
                               rnn.bias_ih_l0, rnn.bias_hh_l0)
    return model.head(h)


def check_step_loop(embedding, args) -> float:
    """Largest |step loop - ours| over the logits (float64, small): the loop is right."""
    torch.manual_seed(0)
    model = build_model("ica", 7, 3, embedding=embedding, hidden_size=5, r=3, d_a=4)
    model = model.double().eval()
    x = torch.randn(2, 30, 7, dtype=torch.float64)
    with torch.no_grad():
        return float((step_loop(model, x) - model(x)).abs().max())


#: "wall": time.perf_counter; "cpu": time.process_time, the CPU time of this process,
#: which waiting for a core shared with other jobs does not inflate (with --threads 1 it
#: is the work done; memory-bandwidth and cache contention still count).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = CLOCKS["wall"]


def forward_backward(fn, x) -> float:
    x.grad = None
    start = _clock()
    fn(x).sum().backward()
    return _clock() - start


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


def methods_for(embedding, n_steps, args):
    skip = set(args.skip)
    if embedding == "mean":
        skip |= {"floor", "frozen"}
    if n_steps > args.ref_max_steps:
        skip.add("prefix")
    return [m for m in METHODS if m not in skip]


def run_config(n_steps, n_features, embedding, args):
    methods = methods_for(embedding, n_steps, args)
    cases = {m: make_case(m, n_steps, n_features, embedding, args) for m in methods}
    for m in methods:
        if m != "prefix":
            forward_backward(*cases[m])  # warm-up
    times = {m: [] for m in methods}
    for rep in range(args.repeats):
        for m in methods:
            if m == "prefix" and rep >= args.ref_repeats:
                continue
            times[m].append(forward_backward(*cases[m]))
    row = {m: statistics.median(t) for m, t in times.items()}
    row["n_prefix"] = len(times.get("prefix", []))
    if args.memory:
        for m in methods:
            if m != "prefix":
                row[f"mem_{m}"] = peak_memory_mib(m, n_steps, n_features, embedding, args)
    return row


def arithmetic_ratio(n_steps, n_features, args) -> float:
    """What ``mean`` would cost against the bare LSTM if every multiply-add ran at one rate:
    1 + (the attention's multiply-adds) / (the LSTM's), forward + backward (x3) each.

    LSTM: the input and recurrent GEMMs, ``T (N + H) 4H`` per sequence. Attention: the
    score MLP ``T (N d_a + d_a r)``, and the chunked mix ``T N (C + 2r) + T C r`` (the dense
    (C x C) block, the running sums in and out, the block's weights) with the model's chunk C.
    """
    from fmri_ica.models.attention import _chunk_size

    t, n, h, r, d_a = n_steps, n_features, args.hidden, args.r, args.d_a
    size = _chunk_size(t, r)
    padded = -(-t // size) * size
    lstm = t * (n + h) * 4 * h
    attention = t * (n * d_a + d_a * r) + padded * (n * (size + 2 * r) + size * r)
    return 1 + attention / lstm


def _fmt(value, spec):
    return "—" if value is None else format(value, spec)


def _ratio(row, top, bottom):
    return row[top] / row[bottom] if top in row and bottom in row else None


COLUMNS = [  # (header, row -> value, format)
    ("T", lambda r: r["T"], "d"), ("N", lambda r: r["N"], "d"),
    ("ours s", lambda r: r.get("ours"), ".3f"),
    ("nn.LSTM s", lambda r: r.get("lstm"), ".3f"),
    ("ours/LSTM", lambda r: _ratio(r, "ours", "lstm"), ".2f"),
    ("arithmetic", lambda r: r.get("arithmetic"), ".2f"),
    ("floor s", lambda r: r.get("floor"), ".3f"),
    ("ours/floor", lambda r: _ratio(r, "ours", "floor"), ".2f"),
    ("frozen s", lambda r: r.get("frozen"), ".3f"),
    ("step loop s", lambda r: r.get("loop"), ".3f"),
    ("step loop/ours", lambda r: _ratio(r, "loop", "ours"), ".1f"),
    ("prefix loop s (n)", lambda r: r.get("prefix"), ".2f"),
    ("prefix loop/ours", lambda r: _ratio(r, "prefix", "ours"), ".1f"),
]


def print_table(embedding, rows, args) -> None:
    keep = [c for c in COLUMNS if any(c[1](r) is not None for r in rows)]
    if args.memory:
        keep += [(f"{m} MiB", lambda r, m=m: r.get(f"mem_{m}"), ".0f")
                 for m in ("ours", "lstm", "floor") if any(f"mem_{m}" in r for r in rows)]
    print(f"\n`{embedding}` form:\n")
    print("| " + " | ".join(c[0] for c in keep) + " |")
    print("|" + "---|" * len(keep))
    for row in rows:
        cells = [_fmt(c[1](row), c[2]) for c in keep]
        if "prefix loop s (n)" in [c[0] for c in keep]:
            index = [c[0] for c in keep].index("prefix loop s (n)")
            cells[index] += f" ({row['n_prefix']})"
        print("| " + " | ".join(cells) + " |", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T=100, N=100, 2 repeats")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ref-repeats", type=int, default=1,
                        help="repeats of the (slow) prefix loop, at most --repeats")
    parser.add_argument("--ref-max-steps", type=int, default=405,
                        help="skip the prefix loop for longer sequences")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--r", type=int, default=20)
    parser.add_argument("--d-a", type=int, default=50)
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 284, 405])
    parser.add_argument("--features", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--embeddings", nargs="+", default=["mean", "matrix"],
                        choices=["mean", "matrix"])
    parser.add_argument("--skip", nargs="*", default=[], choices=METHODS,
                        help="methods not to run")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall",
                        help="wall time, or this process's CPU time (for a loaded machine)")
    parser.add_argument("--memory", action="store_true", help="also peak memory")
    parser.add_argument("--_memory", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    global _clock
    _clock = CLOCKS[args.clock]
    if args._memory:
        measure_memory_here(args)
        return 0
    if args.quick:
        args.steps, args.features, args.repeats = [100], [100], 2
    for embedding in args.embeddings:  # the step loop must compute the same function
        error = check_step_loop(embedding, args)
        if not error < 1e-10:
            raise RuntimeError(f"step loop differs from the model ({embedding}): {error:.1e}")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {args.threads} threads, load average "
          f"{os.getloadavg()[0]:.1f} at start; B={args.batch}, H={args.hidden}, r={args.r}, "
          f"d_a={args.d_a}, float32, forward+backward, {args.clock} clock, medians of "
          f"{args.repeats} interleaved repeats (prefix loop {args.ref_repeats})")
    results = []
    for embedding in args.embeddings:
        rows = []
        for n_steps in args.steps:
            for n_features in args.features:
                row = run_config(n_steps, n_features, embedding, args)
                row.update(T=n_steps, N=n_features, load=os.getloadavg()[0])
                if embedding == "mean":
                    row["arithmetic"] = arithmetic_ratio(n_steps, n_features, args)
                rows.append(row)
                print(f"  done {embedding} T={n_steps} N={n_features}, load average "
                      f"{row['load']:.1f}", file=sys.stderr, flush=True)
        print_table(embedding, rows, args)
        results += [{"embedding": embedding, **row} for row in rows]
    loads = [r["load"] for r in results]
    print(f"\nload average (1 min) after each configuration: {min(loads):.1f}-{max(loads):.1f}")
    print(json.dumps(results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
