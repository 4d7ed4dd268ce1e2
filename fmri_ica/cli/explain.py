"""Compute saliency per region and time step for the held-out subjects.

Writes saliency/<name>/: per-class (time x region) maps and the saliency metrics
(saliency over time, task-ON share, planted-region share, removal test), with each fold's
saliency in saliency/<name>/fold-<k>/.

With --fold K (or --fold auto in a SLURM array job) only fold K is explained, which needs
only that fold trained; run the command once more without --fold to pool the folds
(finished folds are loaded, not recomputed).

Examples:
    fmri-ica explain config.yaml
    fmri-ica explain config.yaml --fold 3      # one fold, e.g. a SLURM array task
"""

from ._common import stage_command

add_arguments, run = stage_command("explain")
