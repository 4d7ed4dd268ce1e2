"""Training and evaluation of sequence classifiers (Adam, cross-entropy, model selection).

``fit`` trains any model called as ``model(x, lengths=None)`` -> logits on
(batch, time, features) inputs, keeps the weights best on a validation set (or the last
ones), writes per-epoch metrics and checkpoints that load with
``torch.load(weights_only=True)``, and resumes exactly after an interruption (including
SLURM's SIGTERM/SIGUSR1). ``RunCropDataset`` draws new windows of whole runs every epoch,
``subject_folds`` rotates held-out subjects, ``evaluate_runs`` scores windows and runs.
"""

from .checkpoint import load_model, load_training_state, save_checkpoint, save_training_state
from .crossval import fold_table, subject_folds
from .data import EpochSampler, RunCropDataset, SequenceDataset, sliding_windows
from .evaluation import evaluate, evaluate_runs, predict_logits
from .loop import FitResult, Runtime, TrainingInterrupted, fit, resolve_runtime

__all__ = [
    "EpochSampler",
    "FitResult",
    "RunCropDataset",
    "Runtime",
    "SequenceDataset",
    "TrainingInterrupted",
    "evaluate",
    "evaluate_runs",
    "fit",
    "fold_table",
    "load_model",
    "load_training_state",
    "predict_logits",
    "resolve_runtime",
    "save_checkpoint",
    "save_training_state",
    "sliding_windows",
    "subject_folds",
]
