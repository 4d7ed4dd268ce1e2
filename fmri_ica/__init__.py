"""fmri_ica: fMRI + input-cell attention (not independent component analysis).

Train recurrent classifiers with input-cell attention (Ismail et al., NeurIPS 2019)
on task fMRI region time series, and map their saliency back onto the brain.
"""

__version__ = "0.1.0.dev0"

from .config import load_config
from .estimator import TaskDecoder
from .pipeline import run_pipeline

__all__ = ["TaskDecoder", "__version__", "load_config", "run_pipeline"]
