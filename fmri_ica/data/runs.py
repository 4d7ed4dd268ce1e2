"""The one record every layout produces: a run of task fMRI and its companions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Run:
    """One 4D BOLD run with its metadata.

    Parameters
    ----------
    subject, task : str
        Subject label (no ``sub-`` prefix) and task name (HCP: upper case, e.g. ``MOTOR``).
    run : str
        Run label: the HCP phase-encoding direction (``LR``/``RL``) or the BIDS run
        label (``1``); empty when the layout has none.
    bold : Path
        The 4D BOLD image.
    session : str, default=""
        BIDS session label, if any.
    events : Path or None
        HCP ``EVs`` folder, or a BIDS-style ``events.tsv``.
    confounds : Path or None
        ``Movement_Regressors.txt`` (HCP) or ``desc-confounds_timeseries.tsv`` (fMRIPrep).
    mask : Path or None
        Brain mask on the BOLD grid.
    t_r : float or None
        Repetition time in seconds, as resolved by the layout (header, sidecar, manifest).
    layout : str, default="manifest"
        ``hcp``, ``bids`` or ``manifest``.
    extra : dict
        Layout-specific metadata (e.g. the BIDS sidecar), kept for provenance.
    """

    subject: str
    task: str
    run: str
    bold: Path
    session: str = ""
    events: Path | None = None
    confounds: Path | None = None
    mask: Path | None = None
    t_r: float | None = None
    layout: str = "manifest"
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        """BIDS-style identifier, unique within a data set: ``sub-01_task-MOTOR_run-LR``."""
        parts = [f"sub-{self.subject}"]
        if self.session:
            parts.append(f"ses-{self.session}")
        parts.append(f"task-{self.task}")
        if self.run:
            parts.append(f"run-{self.run}")
        return "_".join(parts)
