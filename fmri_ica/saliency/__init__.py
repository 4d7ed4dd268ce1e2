"""Saliency: attribution methods for recurrent classifiers and metrics to judge them.

``attribute(model, inputs, target=None, method="gradient", lengths=None, ...)`` returns a
(batch, time, features) map; :mod:`fmri_ica.saliency.metrics` scores maps against masks.
"""

from .methods import METHODS, ModelOutput, attribute, tsr

__all__ = ["METHODS", "ModelOutput", "attribute", "tsr"]
