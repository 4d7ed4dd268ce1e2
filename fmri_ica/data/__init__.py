"""Data layer: layouts (HCP, BIDS, manifest), events, atlases, parcellation, simulation."""

from .runs import Run

__all__ = ["Run"]
