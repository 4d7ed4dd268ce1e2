"""``fmri-ica-requeue CMD...``: run CMD in a SLURM batch job and requeue the job after SIGTERM.

SLURM sends its pre-time-limit or preemption SIGTERM to the batch shell alone
(``--signal=B:TERM@S``); the templates under scripts/ ``exec`` this wrapper, which forwards
the signal to CMD (fmri-ica saves its state and exits 143) and then runs
``scontrol requeue $SLURM_JOB_ID`` so that the job starts again and resumes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def main(argv: list[str] | None = None) -> int:
    """Run ``argv`` (default ``sys.argv[1:]``); return its exit status, 128 + N for signal N."""
    command = sys.argv[1:] if argv is None else argv
    if not command:
        print("usage: fmri-ica-requeue COMMAND [ARGS...]", file=sys.stderr)
        return 2
    child = subprocess.Popen(command)
    terminated = False

    def forward(signum, frame) -> None:
        nonlocal terminated
        terminated = True
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    status = child.wait()
    status = 128 - status if status < 0 else status
    job = os.environ.get("SLURM_JOB_ID")
    if (terminated or status == 128 + signal.SIGTERM) and job:
        print(f"fmri-ica stopped after SIGTERM; requeueing job {job}", file=sys.stderr, flush=True)
        subprocess.run(["scontrol", "requeue", job], check=False)
    return status


if __name__ == "__main__":
    sys.exit(main())
