"""Data layer: layouts (HCP, BIDS, manifest), events, atlases, parcellation, simulation."""

from .atlases import Atlas, list_atlases, load_atlas
from .confounds import load_run_confounds, read_hcp_movement
from .events import default_conditions, frame_conditions, frame_times, read_events, read_fsl_ev
from .layouts import BoldInfo, check_finite, discover_runs, validate_bold
from .parcellation import extract_timeseries, find_timeseries, load_timeseries, parcellate
from .runs import Run
from .simulate import SimulationResult, simulate_hcp

__all__ = [
    "Atlas",
    "extract_timeseries",
    "find_timeseries",
    "list_atlases",
    "load_atlas",
    "load_timeseries",
    "parcellate",
    "BoldInfo",
    "Run",
    "SimulationResult",
    "check_finite",
    "default_conditions",
    "discover_runs",
    "frame_conditions",
    "frame_times",
    "load_run_confounds",
    "read_events",
    "read_fsl_ev",
    "read_hcp_movement",
    "simulate_hcp",
    "validate_bold",
]
