"""Train the configured models on the training split (early stopping on validation).

Needs the samples stage (run it with 'fmri-ica run CONFIG --stage samples').
Writes models/<name>/: best/ and last/ checkpoints, metrics.jsonl, evaluation.json."""

from ._common import stage_command

add_arguments, run = stage_command("train")
