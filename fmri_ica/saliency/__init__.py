"""Saliency: attribution methods for recurrent classifiers and metrics to judge them.

``attribute(model, inputs, target=None, method="gradient", lengths=None, ...)`` returns a
(batch, time, features) map; :mod:`fmri_ica.saliency.metrics` scores maps against masks.
"""

import importlib

__all__ = ["METHODS", "ModelOutput", "attribute", "tsr"]


def __getattr__(name: str):  # torch is imported on first use, not by the maps and figures
    if name in __all__:
        return getattr(importlib.import_module(".methods", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
