"""fmri_ica: fMRI + input-cell attention (not independent component analysis).

Train recurrent classifiers with input-cell attention (Ismail et al., NeurIPS 2019)
on task fMRI region time series, and map their saliency back onto the brain.

The package logs progress to ``logging.getLogger("fmri_ica")`` and shows nothing by
default; call :func:`enable_logging` (or configure logging yourself) to see it.
"""

__version__ = "0.1.0.dev0"

import importlib
import logging

from ._utils import enable_logging
from .config import load_config

# A library never configures logging: the application (our CLI, or a user's script) does.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["TaskDecoder", "__version__", "enable_logging", "load_config", "run_pipeline"]

# Imported on first use: they pull in torch (2 s), which parcellation workers, figure
# workers and `fmri-ica --help` do not need.
_LAZY = {"TaskDecoder": ".estimator", "run_pipeline": ".pipeline"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
