"""Compute saliency per region and time step for the held-out subjects.

Writes saliency/<name>/: per-class (time x region) maps and the saliency metrics
(saliency over time, task-ON share, planted-region share, removal test)."""

from ._common import stage_command

add_arguments, run = stage_command("explain")
