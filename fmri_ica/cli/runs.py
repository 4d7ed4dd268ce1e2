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

from ._common import add_discovery_arguments, discover_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_discovery_arguments(parser, raw_root=True)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    runs = discover_from_args(args)
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
