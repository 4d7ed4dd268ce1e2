"""Train the configured models on every cross-validation fold, with their null models.

Needs the samples stage (run it with 'fmri-ica run CONFIG --stage samples').
Writes models/<name>/fold-<k>/{trained,permuted}/ (init/, best/ and last/ checkpoints,
metrics.jsonl) and models/<name>/evaluation.json (held-out scores pooled over folds).
With --fold K only that fold is trained (an array task); run once more without it to pool."""

from ._common import stage_command

add_arguments, run = stage_command("train")
