"""Training and evaluation of sequence classifiers (Adam, cross-entropy, early stopping).

``fit`` trains any model called as ``model(x, lengths=None)`` -> logits on
(batch, time, features) inputs, keeps the weights best on a validation set, writes
per-epoch metrics and checkpoints that load with ``torch.load(weights_only=True)``, and
resumes exactly after an interruption (including SLURM's SIGTERM/SIGUSR1).
"""

from .checkpoint import load_model, load_training_state, save_checkpoint, save_training_state
from .data import EpochSampler, SequenceDataset
from .evaluation import evaluate, predict_logits
from .loop import FitResult, Runtime, TrainingInterrupted, fit, resolve_runtime

__all__ = [
    "EpochSampler",
    "FitResult",
    "Runtime",
    "SequenceDataset",
    "TrainingInterrupted",
    "evaluate",
    "fit",
    "load_model",
    "load_training_state",
    "predict_logits",
    "resolve_runtime",
    "save_checkpoint",
    "save_training_state",
]
