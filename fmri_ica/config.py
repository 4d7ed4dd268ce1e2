"""Pipeline configuration: defaults, YAML/TOML/JSON files, validation with helpful errors."""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

import yaml

from .exceptions import InputDataError, InvalidParameterError

__all__ = ["DEFAULTS", "load_config", "write_config", "merge_config", "config_hash"]

#: Every key the pipeline understands, with its default. ``None`` means "not set".
DEFAULTS: dict[str, Any] = {
    "output": "fmri_ica_output",
    "seed": 0,
    "data": {
        "root": None,
        "layout": "auto",
        "subjects": None,
        "tasks": None,
        "runs": None,
        "t_r": None,
    },
    "atlas": {"name": "seitzman300", "options": {}},
    "parcellation": {
        "standardize": "zscore_sample",
        "detrend": True,
        "high_pass": 0.008,
        "low_pass": None,
        "confounds_strategy": "simple",
        "hrf_delay": 0.0,
        "jobs": 1,
    },
    "samples": {
        "label": "task",
        "classes": None,
        "mode": "runs",
        "window": 100,
        "start": 0,
        "step": 25,
        "frame_stride": 1,
        "split": [0.6, 0.2, 0.2],
    },
    "crossval": {"folds": 5, "val_folds": None},
    "models": {
        "ica-lstm": {"kind": "ica", "hidden_size": 32, "r": 10, "d_a": 50, "embedding": "mean",
                     "dropout": 0.3},
        "lstm": {"kind": "lstm", "hidden_size": 32, "dropout": 0.3},
    },
    "training": {
        "epochs": 30,
        "lr": 1e-3,
        "batch_size": 32,
        "patience": None,
        "weight_decay": 0.01,
        "crops_per_run": 4,
        "input_noise": 0.0,
        "selection": "last",
        "min_epochs": 5,
        "device": None,
    },
    "saliency": {
        "method": "gradient",
        "top_k": 0.1,
        "n_bins": 4,
        "per_subject": False,
        "batch_size": 64,
    },
    "sanity": {
        "untrained": True,
        "n_untrained": 4,
        "cascading": True,
        "permuted_labels": True,
        "n_boot": 1000,
        "n_perm": 5000,
        "fdr": 0.05,
    },
    # Surfaces (~10 s per class) and animations (~5 s per class) are opt-in; viewers are
    # linked files unless embedded (about 0.7 MB each in the page).
    "report": {"surface": False, "animation": False, "embed_viewers": False, "linear_baseline": True},
}

# Sections whose keys are free-form (names chosen by the user).
_FREE_FORM = {("models",), ("atlas", "options")}


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Read a YAML, TOML or JSON config, fill in defaults and validate every key.

    Parameters
    ----------
    path : str or Path, optional
        ``.yaml``/``.yml``, ``.toml`` or ``.json`` file. A pipeline output's
        ``config.json`` (``{"config": ..., "versions": ...}``) is read as its ``config``.
        Relative ``data.root`` and ``output`` are resolved against the file's folder.
    overrides : dict, optional
        Applied on top of the file (e.g. from command-line options).

    Returns
    -------
    dict
        Every key of :data:`DEFAULTS`, with the file's and the overrides' values.

    Raises
    ------
    InputDataError
        The file is missing or cannot be parsed.
    InvalidParameterError
        Unknown format or key, or a value where a section belongs.
    """
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        user = _read(path)
        for key in ("output",):
            if key in user and not Path(user[key]).is_absolute():
                user[key] = str((path.parent / user[key]).resolve())
        if user.get("data", {}).get("root") and not Path(user["data"]["root"]).is_absolute():
            user["data"]["root"] = str((path.parent / user["data"]["root"]).resolve())
        config = merge_config(config, user, source=str(path))
    if overrides:
        config = merge_config(config, overrides, source="overrides")
    return config


def _read(path: Path) -> dict:
    if not path.is_file():
        raise InputDataError(f"Config file {str(path)!r} does not exist.")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise InvalidParameterError(
                f"Config file {str(path)!r}: unknown format {path.suffix!r}; "
                "use .yaml, .yml, .toml or .json."
            )
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as error:
        raise InputDataError(f"Config file {str(path)!r} cannot be parsed: {error}") from error
    if not isinstance(data, dict):
        raise InputDataError(f"Config file {str(path)!r} must hold a mapping of sections.")
    # The record a pipeline run writes (output/config.json): the settings sit under "config".
    if isinstance(data.get("config"), dict) and set(data) <= {"config", "versions"}:
        data = data["config"]
    return data


def write_config(config: dict, path: str | Path) -> Path:
    """Write ``config`` as a YAML file that :func:`load_config` reads back equal.

    ``output`` and ``data.root`` inside the file's folder are written relative to it (as
    :func:`load_config` resolves them), so the folder can be moved and still re-run; other
    relative paths, meant from the current folder, are written absolute.

    Parameters
    ----------
    config : dict
        A full config, e.g. from :func:`load_config`.
    path : str or Path
        The ``.yaml`` or ``.yml`` file to write (atomically).

    Returns
    -------
    Path
        ``path``; re-run with ``fmri-ica run PATH``.

    Raises
    ------
    InvalidParameterError
        ``path`` does not end in ``.yaml`` or ``.yml``.
    """
    from ._utils import to_jsonable, write_text

    path = Path(path)
    if path.suffix not in (".yaml", ".yml"):
        raise InvalidParameterError(
            f"Invalid value for 'path': {str(path)!r}. Expected a .yaml or .yml file."
        )
    # Through JSON: tuples become lists and NumPy scalars plain numbers, as YAML can hold them.
    plain = json.loads(json.dumps(config, default=to_jsonable))
    folder = path.parent.resolve()
    plain["output"] = _relative_to(plain.get("output"), folder)
    if isinstance(plain.get("data"), dict):
        plain["data"]["root"] = _relative_to(plain["data"].get("root"), folder)
    header = (
        "# fmri_ica pipeline configuration (every key; defaults in fmri_ica/config.py).\n"
        "# Re-run with: fmri-ica run <this file>  (relative paths are read from its folder)\n"
    )
    text = yaml.safe_dump(plain, sort_keys=False, default_flow_style=False)
    return write_text(path, header + text)


def _relative_to(value, folder: Path):
    """Path ``value`` relative to ``folder`` when inside it, else absolute (None stays None)."""
    if not value:
        return value
    resolved = Path(value).resolve()  # a relative path meant the current folder
    try:
        return resolved.relative_to(folder).as_posix()
    except ValueError:
        return value if Path(value).is_absolute() else str(resolved)


def merge_config(base: dict, update: dict, *, source: str = "config", replace_free_form: bool = True,
                 _where: tuple = ()) -> dict:
    """Return ``base`` updated with ``update``; unknown keys raise with a suggestion.

    Free-form sections (``models``, ``atlas.options``) are replaced as a whole by default, as
    a config file's own ``models:`` should; with ``replace_free_form=False`` they are merged
    key by key (command-line ``--set models.lstm.hidden_size=128`` changes one value).
    """
    merged = copy.deepcopy(base)
    for key, value in update.items():
        where = (*_where, key)
        if _where in _FREE_FORM or (_where and _where[:1] in _FREE_FORM):
            if not replace_free_form and isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = _deep_merge(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
            continue
        if key not in base:
            close = difflib.get_close_matches(key, list(base), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise InvalidParameterError(
                f"Unknown key {'.'.join(map(str, where))!r} in {source}. "
                f"Allowed here: {', '.join(sorted(base))}.{hint}"
            )
        if isinstance(base[key], dict) and (where not in _FREE_FORM or not replace_free_form):
            if not isinstance(value, dict):
                raise InvalidParameterError(
                    f"{'.'.join(where)!r} in {source} must be a section (mapping); got {value!r}."
                )
            merged[key] = merge_config(base[key], value, source=source,
                                       replace_free_form=replace_free_form, _where=where)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _deep_merge(base: dict, update: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def config_hash(*sections: Any) -> str:
    """A short, stable hash of config sections: a stage re-runs when its inputs change."""
    text = json.dumps(sections, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
