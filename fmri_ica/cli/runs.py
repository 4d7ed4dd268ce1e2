"""List the runs found in a data set (HCP tree, fMRIPrep derivatives or manifest TSV).

Prints one line per run: subject, session, task, run, TR, frames, and whether events,
confounds and a mask were found. Filters take several values (--subject 01 02).

Examples:
    fmri-ica runs /data/HCP --task MOTOR WM --subject 100307
    fmri-ica runs /data/ds/derivatives/fmriprep --space MNI152NLin2009cAsym:res-2 --json
    fmri-ica runs runs.tsv
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="HCP folder, fMRIPrep derivatives folder, or manifest .tsv")
    parser.add_argument("--layout", default="auto", choices=["auto", "hcp", "bids", "manifest"])
    parser.add_argument("--subject", nargs="+", metavar="LABEL", help="keep these subjects")
    parser.add_argument("--session", nargs="+", metavar="LABEL", help="keep these sessions")
    parser.add_argument("--task", nargs="+", metavar="NAME", help="keep these tasks (any case)")
    parser.add_argument(
        "--run", nargs="+", metavar="LABEL", help="keep these runs (LR, RL, 1, ...)"
    )
    parser.add_argument("--space", help="fMRIPrep space, e.g. MNI152NLin2009cAsym or ...:res-2")
    parser.add_argument("--raw-root", help="raw BIDS data set holding events.tsv (BIDS layout)")
    parser.add_argument("--t-r", type=float, help="override the repetition time (seconds)")
    parser.add_argument("--no-events", action="store_true", help="list runs even without events")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from ..data.layouts import discover_runs

    runs = discover_runs(
        args.root,
        args.layout,
        subjects=args.subject,
        sessions=args.session,
        tasks=args.task,
        runs=args.run,
        space=args.space,
        raw_root=args.raw_root,
        t_r=args.t_r,
        require_events=not args.no_events,
    )
    rows = [_row(r) for r in runs]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(_table(rows))
    return 0


def _row(r) -> dict:
    shape = r.extra.get("shape") or [None] * 4
    return {
        "key": r.key,
        "subject": r.subject,
        "session": r.session,
        "task": r.task,
        "run": r.run,
        "t_r": r.t_r,
        "frames": shape[3],
        "layout": r.layout,
        "bold": str(r.bold),
        "events": None if r.events is None else str(r.events),
        "confounds": None if r.confounds is None else str(r.confounds),
        "mask": None if r.mask is None else str(r.mask),
    }


def _table(rows: list[dict]) -> str:
    columns = ["subject", "session", "task", "run", "t_r", "frames", "events", "confounds", "mask"]
    cells = [
        [
            row["subject"],
            row["session"] or "-",
            row["task"],
            row["run"] or "-",
            f"{row['t_r']:g}",
            str(row["frames"]),
            *("yes" if row[k] else "no" for k in ("events", "confounds", "mask")),
        ]
        for row in rows
    ]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in cells]
    lines.append(f"{len(rows)} run(s)")
    return "\n".join(line.rstrip() for line in lines)
