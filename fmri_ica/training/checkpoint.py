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
from ..exceptions import InputDataError, InvalidParameterError

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
        If the folder lacks a file; the sidecar is damaged or has no model config;
        ``model.pt`` is truncated, holds more than tensors (refused unread), or does not
        fit the model the sidecar describes.
    """
    from ..models import model_from_config

    path_dir = Path(path_dir)
    for name in (MODEL_FILE, SIDECAR_FILE):
        if not (path_dir / name).is_file():
            raise InputDataError(
                f"Checkpoint folder {str(path_dir)!r} has no {name}; pass a folder written "
                "by fmri_ica.training.save_checkpoint (e.g. <out_dir>/best)."
            )
    sidecar_path = path_dir / SIDECAR_FILE
    try:
        sidecar = json.loads(sidecar_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputDataError(
            f"{sidecar_path} is not valid JSON ({error}): the checkpoint is damaged; "
            f"restore it from a copy, or train the model again.{_RETRAIN}"
        ) from error
    if not isinstance(sidecar, dict) or not sidecar.get("config"):
        raise InputDataError(
            f"{sidecar_path} has no model config (the model had no .config); "
            f"build the model yourself and load_state_dict(torch.load({MODEL_FILE!r}))."
        )
    try:
        model = model_from_config(sidecar["config"])
    except InvalidParameterError as error:
        raise InputDataError(f"{sidecar_path} describes no valid model: {error}{_RETRAIN}") from error
    state = _load_tensors(path_dir / MODEL_FILE, map_location)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        first = str(error).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise InputDataError(
            f"The weights in {path_dir / MODEL_FILE} do not fit the model {sidecar_path} "
            f"describes ({detail[:300]}): the two files come from different models. Restore "
            f"both from the same run, or train the model again.{_RETRAIN}"
        ) from None
    return model.to(map_location).eval()


_RETRAIN = " (In a pipeline output: delete models/<model name>/ and run again to retrain it.)"


def _load_tensors(path: Path, map_location) -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file and never
    suggest loading it unsafely.

    Raises
    ------
    InputDataError
        The file holds code or types that are not plain containers of tensors and numbers
        (refused, nothing executed), or it is truncated or damaged.
    """
    import pickle
    import warnings
    import zipfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error says it
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's own text advises weights_only=False, which would run the file's code
        raise InputDataError(
            f"refused to load {path}: it contains code objects or types that are not plain "
            "tensors (not a fmri_ica checkpoint?). Nothing in it was run. Use only checkpoints "
            f"fmri_ica wrote: delete this one and train again.{_RETRAIN}"
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, IndexError, zipfile.BadZipFile) as error:
        detail = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
        raise InputDataError(
            f"{path} is truncated or damaged ({detail}): restore it from a copy, or train "
            f"the model again.{_RETRAIN}"
        ) from None


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
    return _load_tensors(path, map_location)


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
