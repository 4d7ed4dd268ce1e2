"""Checkpoints: model weights + JSON sidecar, and the training state needed to resume.

Layout of a checkpoint folder::

    model.pt     the state dict only (loads with ``torch.load(weights_only=True)``)
    model.json   model.config, fmri_ica and package versions, training parameters

The training state (``training_state.pt``, next to the ``best``/``last`` folders) holds
plain tensors, numbers, strings, lists and dicts only, so it also loads with
``weights_only=True``: nothing pickled, nothing executed on load.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from .._utils import atomic_path, package_versions, write_json
from ..exceptions import InputDataError

__all__ = ["save_checkpoint", "load_model", "save_training_state", "load_training_state"]

MODEL_FILE, SIDECAR_FILE, STATE_FILE = "model.pt", "model.json", "training_state.pt"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside a DistributedDataParallel / DataParallel wrapper."""
    return getattr(model, "module", model)


def cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the model's state dict (safe to keep while training goes on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()}


def save_checkpoint(path_dir, model, *, optimizer=None, epoch=None, extra=None) -> Path:
    """Write ``model.pt`` (state dict) and ``model.json`` (config, versions) atomically.

    Parameters
    ----------
    path_dir : str or Path
        Folder to write into (created if needed).
    model : torch.nn.Module
        A model with a JSON-serialisable ``.config`` (see ``fmri_ica.models``).
    optimizer : torch.optim.Optimizer, optional
        If given, its state and ``epoch`` go to ``training_state.pt`` in the same folder.
    epoch : int, optional
        Number of completed epochs, recorded in the sidecar.
    extra : dict, optional
        More JSON-serialisable metadata for the sidecar (e.g. training parameters, metrics).

    Returns
    -------
    Path
        ``path_dir``.
    """
    path_dir = Path(path_dir)
    bare = unwrap(model)
    with atomic_path(path_dir / MODEL_FILE) as tmp:
        torch.save(cpu_state_dict(bare), tmp)
    sidecar = {
        "config": getattr(bare, "config", None),
        "model_class": f"{type(bare).__module__}.{type(bare).__qualname__}",
        "epoch": epoch,
        "fmri_ica_version": __version__,
        "versions": package_versions(),
        **(extra or {}),
    }
    write_json(path_dir / SIDECAR_FILE, sidecar)
    if optimizer is not None:
        save_training_state(path_dir, {"optimizer": optimizer.state_dict(), "epoch": epoch})
    return path_dir


def load_model(path_dir, map_location="cpu") -> torch.nn.Module:
    """Rebuild a model from ``model.json`` and load ``model.pt`` (``weights_only=True``).

    Parameters
    ----------
    path_dir : str or Path
        A folder written by :func:`save_checkpoint` (e.g. ``out_dir/best``).
    map_location : str or torch.device, default="cpu"

    Returns
    -------
    torch.nn.Module
        The model on ``map_location``, in eval mode.

    Raises
    ------
    InputDataError
        If the folder lacks a file, or the sidecar has no model config.
    """
    from ..models import model_from_config

    path_dir = Path(path_dir)
    for name in (MODEL_FILE, SIDECAR_FILE):
        if not (path_dir / name).is_file():
            raise InputDataError(
                f"Checkpoint folder {str(path_dir)!r} has no {name}; pass a folder written "
                "by fmri_ica.training.save_checkpoint (e.g. <out_dir>/best)."
            )
    sidecar = json.loads((path_dir / SIDECAR_FILE).read_text())
    if not sidecar.get("config"):
        raise InputDataError(
            f"{path_dir / SIDECAR_FILE} has no model config (the model had no .config); "
            f"build the model yourself and load_state_dict(torch.load({MODEL_FILE!r}))."
        )
    model = model_from_config(sidecar["config"])
    state = torch.load(path_dir / MODEL_FILE, map_location=map_location, weights_only=True)
    model.load_state_dict(state)
    return model.to(map_location).eval()


def save_training_state(path_dir, state: dict[str, Any]) -> Path:
    """Write ``training_state.pt`` atomically (plain containers and tensors only)."""
    path = Path(path_dir) / STATE_FILE
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_training_state(path_dir, map_location="cpu") -> dict[str, Any] | None:
    """The state written by :func:`save_training_state`, or None if there is none."""
    path = Path(path_dir) / STATE_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location=map_location, weights_only=True)


def get_rng_states() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), NumPy and Python, as tensors and numbers."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": py_version,
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_states` returned."""
    torch.set_rng_state(states["torch"].cpu())
    np_state = states["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py = states["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss_next"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])
