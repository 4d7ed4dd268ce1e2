"""Pipeline configuration: defaults, YAML/TOML/JSON files, validation with helpful errors."""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import numbers
import tomllib
from pathlib import Path
from typing import Any

import yaml

from ._threads import check_threads
from .exceptions import InputDataError, InvalidParameterError

__all__ = ["DEFAULTS", "load_config", "write_config", "merge_config", "validate_config", "config_hash"]

#: Every key the pipeline understands, with its default. ``None`` means "not set".
DEFAULTS: dict[str, Any] = {
    "output": "fmri_ica_output",
    "seed": 0,
    # torch's threads per process: an int, or "auto" (SLURM_CPUS_PER_TASK, else the CPUs
    # this process may use). 1: these small models gain little from a second thread on
    # an idle machine and lose a lot on a busy one. Not part of any stage's key.
    "threads": 1,
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
        "allow_failures": 0,
        # "auto": stream .nii/.nii.gz files frame by frame (same numbers, ~1/16 of the
        # memory); "nilearn": load each run whole; "stream": stream or fail
        "engine": "auto",
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
        # regions with a constant signal in every run (no brain voxels): "error" or "drop"
        "empty_regions": "error",
        # true: samples in a memory-mapped store read lazily (cohorts that do not fit in memory)
        "store": False,
    },
    "crossval": {"folds": 5, "val_folds": None},
    "models": {
        # input_noise: on the off-atlas simulations noise of 1.0 made input-cell attention's
        # cross-subject accuracy higher and far less seed-dependent, and kept the LSTM from
        # fitting at all (docs/results-fmri.md, "Input noise"): each model has its own
        "ica-lstm": {"kind": "ica", "hidden_size": 32, "r": 10, "d_a": 50, "embedding": "mean",
                     "dropout": 0.3, "input_noise": 1.0},
        "lstm": {"kind": "lstm", "hidden_size": 32, "dropout": 0.3},
    },
    "training": {
        "epochs": 30,
        "lr": 1e-3,
        "batch_size": 32,
        "patience": None,
        "weight_decay": 0.01,
        "crops_per_run": 16,
        # Gaussian noise (in units of the standardised data) on every training crop, for models
        # that do not set their own (models.<name>.input_noise)
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


def load_config(path: str | Path | None = None, overrides: dict | None = None, *,
                validate: bool = True) -> dict:
    """Read a YAML, TOML or JSON config, fill in defaults and validate every key.

    Parameters
    ----------
    path : str or Path, optional
        ``.yaml``/``.yml``, ``.toml`` or ``.json`` file. A pipeline output's
        ``config.json`` (``{"config": ..., "versions": ...}``) is read as its ``config``.
        Relative ``data.root`` and ``output`` are resolved against the file's folder.
    overrides : dict, optional
        Applied on top of the file (e.g. from command-line options).
    validate : bool, default=True
        Check every value (:func:`validate_config`); False for a caller that changes the
        config further and validates the result.

    Returns
    -------
    dict
        Every key of :data:`DEFAULTS`, with the file's and the overrides' values (numbers
        that YAML read as strings, such as ``1e-3``, converted).

    Raises
    ------
    InputDataError
        The file is missing, unreadable or cannot be parsed.
    InvalidParameterError
        Unknown format or key, a value where a section belongs, or a value of the wrong
        type or out of range (the message names the key and what is allowed).
    """
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        user = _read(path)
        if isinstance(user.get("output"), str) and not Path(user["output"]).is_absolute():
            user["output"] = str((path.parent / user["output"]).resolve())
        data = user.get("data")
        if isinstance(data, dict) and isinstance(data.get("root"), str) and data["root"] \
                and not Path(data["root"]).is_absolute():
            data["root"] = str((path.parent / data["root"]).resolve())
        config = merge_config(config, user, source=str(path))
    if overrides:
        config = merge_config(config, overrides, source="overrides")
    if validate:
        config = validate_config(config, source=str(path) if path is not None and not overrides else None)
    return config


def _read(path: Path) -> dict:
    if not path.is_file():
        raise InputDataError(f"Config file {str(path)!r} does not exist.")
    try:
        text = path.read_text()
    except OSError as error:
        raise InputDataError(
            f"Cannot read the config file {str(path)!r}: {error.strerror or error}. Check its permissions."
        ) from error
    except UnicodeDecodeError as error:
        raise InputDataError(f"Config file {str(path)!r} is not text (UTF-8): {error.reason}.") from error
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


# --------------------------------------------------------------------------- validation

# Static copies of the choices other modules own, so that checking a config imports neither
# torch nor nibabel (tests/faults/test_config_faults.py keeps them equal to the originals).
#: fmri_ica.data.layouts.LAYOUTS
LAYOUTS = ("auto", "hcp", "bids", "manifest")
#: fmri_ica.data.parcellation.STANDARDIZE
STANDARDIZE = ("zscore_sample", "psc", None)
#: fmri_ica.data.confounds.FMRIPREP_STRATEGIES
CONFOUND_STRATEGIES = ("simple", "scrubbing", "compcor")
#: fmri_ica.saliency.methods.METHODS
SALIENCY_METHODS = ("gradient", "input_x_gradient", "integrated_gradients", "smoothgrad",
                    "gradient_shap", "occlusion", "tsr")
_RNN = {"hidden_size": 64, "num_layers": 1, "dropout": 0.1}
_ATTENTION = {"r": 20, "d_a": 50}
#: fmri_ica.models.factory.MODEL_KINDS: every model kind with its options and their defaults.
MODEL_KINDS: dict[str, dict[str, Any]] = {
    "ica": {"cell_type": "lstm", "embedding": "mean", **_ATTENTION, **_RNN, "bidirectional": False},
    "lstm": dict(_RNN),
    "bilstm": dict(_RNN),
    "gru": dict(_RNN),
    "self_attention": {**_ATTENTION, **_RNN, "bidirectional": False},
}
#: fmri_ica.models.factory._CHOICES
MODEL_CHOICES = {"cell_type": ("lstm", "gru", "rnn"), "embedding": ("mean", "matrix")}
#: Training settings a model may set for itself (overriding ``training.<name>``).
MODEL_TRAINING_OPTIONS = ("input_noise",)


def validate_config(config: dict, *, source: str | None = None) -> dict:
    """Check the type and range of every value of a full config, before any work is done.

    Every stage's settings are checked at once, so that a bad ``training.lr`` fails in a
    second rather than after hours of parcellation. Numbers that YAML 1.1 reads as strings
    (``lr: 1e-3``, ``--set training.lr=1e-4``) are converted.

    Parameters
    ----------
    config : dict
        A config, e.g. from :func:`load_config`; missing keys take their :data:`DEFAULTS`.
    source : str, optional
        Where the values come from (a file name), named in messages.

    Returns
    -------
    dict
        A full copy of ``config`` with numeric strings as numbers; other values unchanged
        (stage keys hash them).

    Raises
    ------
    InvalidParameterError
        An unknown key, or a value of the wrong type or out of range, alone or with
        another (e.g. ``high_pass`` above ``low_pass``): the message names the key, the
        value given and what is allowed.

    Examples
    --------
    >>> validate_config({"training": {"lr": "1e-3"}})["training"]["lr"]
    0.001
    """
    where = f" (in {source})" if source else ""
    if not isinstance(config, dict):
        raise InvalidParameterError(f"A config must be a mapping of sections; got {_show(config)}{where}.")
    config = merge_config(DEFAULTS, config, source=source or "the config")  # unknown keys; defaults
    for key, rule in _RULES.items():
        parent, last = _parent(config, key, where)
        if last in parent:
            parent[last] = rule(key, parent[last], where)
    _check_leftovers(config, DEFAULTS, (), where)
    _check_models(config["models"], where)
    _check_together(config, where)
    return config


def _parent(config: dict, key: str, where: str) -> tuple[dict, str]:
    *sections, last = key.split(".")
    node = config
    for i, name in enumerate(sections):
        node = node.get(name)
        if not isinstance(node, dict):
            raise InvalidParameterError(
                f"{'.'.join(sections[: i + 1])!r} must be a section (mapping); got {_show(node)}{where}.")
    return node, last


def _check_leftovers(config: dict, defaults: dict, path: tuple, where: str) -> None:
    """Keys without a rule of their own: same kind of value as their default."""
    for key, default in defaults.items():
        dotted = ".".join((*path, key))
        if (*path, key) in _FREE_FORM or dotted in _RULES or key not in config:
            continue
        value = config[key]
        if isinstance(default, dict):
            _check_leftovers(value, default, (*path, key), where)
        elif isinstance(default, bool):
            config[key] = _boolean(dotted, value, where)
        elif isinstance(default, int):
            config[key] = _integer(0 if default >= 0 else None, optional=False)(dotted, value, where)
        elif isinstance(default, float):
            config[key] = _number()(dotted, value, where)


def _show(value) -> str:
    """``repr`` of a value as the user wrote it: NumPy scalars and arrays as plain numbers."""
    return repr(_plain(value))


def _plain(value):
    if hasattr(value, "tolist") and type(value).__module__ == "numpy":
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _invalid(key: str, value, expected: str, where: str) -> InvalidParameterError:
    return InvalidParameterError(f"Invalid value for {key!r}: {_show(value)}{where}. Expected {expected}.")


def _choice(key: str, value, allowed, where: str):
    if isinstance(value, (str, type(None))) and value in allowed:
        return value
    shown = ", ".join("null" if a is None else repr(a) for a in allowed)
    close = difflib.get_close_matches(str(value), [a for a in allowed if isinstance(a, str)], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise InvalidParameterError(
        f"Invalid value for {key!r}: {_show(value)}{where}. Allowed: {shown}.{hint}")


def _boolean(key: str, value, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise _invalid(key, value, "true or false", where)


def _as_number(value):
    """A real number from a number or a numeric string (YAML 1.1 reads 1e-3 as a string)."""
    plain = _plain(value)
    if isinstance(plain, str):
        try:
            plain = float(plain.strip())
        except ValueError:
            return None
    if isinstance(plain, bool) or not isinstance(plain, numbers.Real) or not math.isfinite(plain):
        return None
    return plain


def _number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
            high_open: bool = False, optional: bool = False, example: str = ""):
    """A finite number in the given range; a numeric string is converted."""
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    if low is not None and high is not None:
        expected = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    else:
        expected = "a number" + (f" {parts[0]}" if parts else "")
    expected += " or null" if optional else ""
    expected += f", e.g. {example}" if example else ""

    def rule(key, value, where):
        if value is None and optional:
            return None
        number = _as_number(value)
        if number is None or (low is not None and (number < low or (low_open and number == low))) \
                or (high is not None and (number > high or (high_open and number == high))):
            raise _invalid(key, value, expected, where)
        return number

    return rule


def _integer(minimum: int | None = 0, *, optional: bool = False):
    """An integer >= ``minimum``; a float holding an integer (5.0) is converted."""
    expected = "an integer" + (f" >= {minimum}" if minimum is not None else "")
    expected += " or null" if optional else ""

    def rule(key, value, where):
        if value is None and optional:
            return None
        plain = _plain(value)
        if isinstance(plain, float) and plain.is_integer():
            plain = int(plain)
        if isinstance(plain, bool) or not isinstance(plain, int) \
                or (minimum is not None and plain < minimum):
            raise _invalid(key, value, expected, where)
        return plain

    return rule


def _text(*, optional: bool = False, what: str = "a text"):
    def rule(key, value, where):
        if value is None and optional:
            return None
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, Path):
            return str(value)
        raise _invalid(key, value, what + (" or null" if optional else ""), where)

    return rule


def _labels(key, value, where):
    """None, one label, or a list of labels (text or numbers: run 1, subject 100307)."""
    if value is None or isinstance(value, (str, int)) and not isinstance(value, bool):
        return value
    if isinstance(value, list) and value and all(
            isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        return value
    raise _invalid(key, value, "null, a label or a non-empty list of labels, e.g. [MOTOR, WM]", where)


def _strategy(key, value, where):
    if value is None or isinstance(value, str):
        return _choice(key, value, (*CONFOUND_STRATEGIES, None), where)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value  # nilearn components, e.g. [motion, wm_csf]; nilearn checks the names
    raise _invalid(key, value, "'simple', 'scrubbing', 'compcor', null, or a list of nilearn "
                   "confound components such as [motion, wm_csf]", where)


def _split(key, value, where):
    expected = "three positive numbers (train, validation, test) summing to 1, e.g. [0.6, 0.2, 0.2]"
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise _invalid(key, value, expected, where)
    numbers = [_as_number(v) for v in value]
    if any(n is None or n <= 0 for n in numbers) or abs(sum(numbers) - 1) > 1e-6:
        raise _invalid(key, value, expected, where)
    return numbers if any(isinstance(v, str) for v in value) else value


def _classes(key, value, where):
    if value is None or (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        return value
    raise _invalid(key, value, "null (every class found) or a list of class names, e.g. [MOTOR, WM]",
                   where)


def _mapping(key, value, where):
    if isinstance(value, dict):
        return value
    raise _invalid(key, value, "a mapping of options, e.g. {n_regions: 400}", where)


_RULES = {
    "threads": check_threads,
    "output": _text(what="an output folder"),
    "seed": _integer(0),
    "data.root": _text(optional=True, what="a data folder or manifest .tsv"),
    "data.layout": lambda k, v, w: _choice(k, v, LAYOUTS, w),
    "data.subjects": _labels,
    "data.tasks": _labels,
    "data.runs": _labels,
    "data.t_r": _number(0, low_open=True, optional=True, example="0.72 (seconds)"),
    "atlas.name": _text(what="an atlas name (see 'fmri-ica atlases') or a NIfTI path"),
    "atlas.options": _mapping,
    "parcellation.standardize": lambda k, v, w: _choice(k, v, STANDARDIZE, w),
    "parcellation.detrend": _boolean,
    "parcellation.high_pass": _number(0, low_open=True, optional=True, example="0.008 (Hz)"),
    "parcellation.low_pass": _number(0, low_open=True, optional=True, example="0.1 (Hz)"),
    "parcellation.confounds_strategy": _strategy,
    "parcellation.hrf_delay": _number(example="0 or 5 (seconds)"),
    "parcellation.jobs": _integer(1),
    "parcellation.engine": lambda k, v, w: _choice(k, v, ("auto", "stream", "nilearn"), w),
    "parcellation.allow_failures": _number(0, example="0 (none), 3 (runs) or 0.05 (a share of the runs)"),
    "samples.label": lambda k, v, w: _choice(k, v, ("task", "condition"), w),
    "samples.classes": _classes,
    "samples.mode": lambda k, v, w: _choice(k, v, ("runs", "windows"), w),
    "samples.window": _integer(1),
    "samples.start": _integer(0),
    "samples.step": _integer(1, optional=True),
    "samples.frame_stride": _integer(1),
    "samples.split": _split,
    "samples.empty_regions": lambda k, v, w: _choice(k, v, ("error", "drop", "keep"), w),
    "samples.store": _boolean,
    "crossval.folds": _integer(2, optional=True),
    "crossval.val_folds": _integer(0, optional=True),
    "training.epochs": _integer(1),
    "training.lr": _number(0, low_open=True, example="0.001"),
    "training.batch_size": _integer(1),
    "training.patience": _integer(1, optional=True),
    "training.weight_decay": _number(0, example="0.01"),
    "training.crops_per_run": _integer(1),
    "training.input_noise": _number(0),
    "training.selection": lambda k, v, w: _choice(k, v, ("best", "last"), w),
    "training.min_epochs": _integer(1),
    "training.device": _text(optional=True, what="a device name ('cpu', 'cuda', 'cuda:1')"),
    "saliency.method": lambda k, v, w: _choice(k, v, SALIENCY_METHODS, w),
    "saliency.top_k": _number(0, 1, low_open=True, example="0.1 (the top 10% of cells)"),
    "saliency.n_bins": _integer(1),
    "saliency.per_subject": _boolean,
    "saliency.batch_size": _integer(1),
    "sanity.untrained": _boolean,
    "sanity.n_untrained": _integer(1),
    "sanity.cascading": _boolean,
    "sanity.permuted_labels": _boolean,
    "sanity.n_boot": _integer(1),
    "sanity.n_perm": _integer(1),
    "sanity.fdr": _number(0, 1, low_open=True, high_open=True, example="0.05"),
    "report.surface": _boolean,
    "report.animation": _boolean,
    "report.embed_viewers": _boolean,
    "report.linear_baseline": _boolean,
}


def _check_models(models, where: str) -> None:
    """Each model: a known ``kind`` and options that kind accepts, with valid values."""
    kinds = ", ".join(map(repr, MODEL_KINDS))
    if not isinstance(models, dict) or not models:
        raise _invalid("models", models, "a mapping of model names to settings, e.g. "
                       "{lstm: {kind: lstm, hidden_size: 32}}", where)
    for name, spec in models.items():
        key = f"models.{name}"
        if name == "linear":
            raise InvalidParameterError(
                f"'models' must not name a model 'linear'{where}: that name is the linear reference's.")
        if not isinstance(spec, dict):
            raise _invalid(key, spec, f"a mapping with a 'kind' ({kinds}) and its options", where)
        if "kind" not in spec:
            raise InvalidParameterError(
                f"Model {name!r} has no 'kind'{where}: add {key}.kind, one of {kinds}.")
        kind = _choice(f"{key}.kind", spec["kind"], tuple(MODEL_KINDS), where)
        for option, value in spec.items():
            if option == "kind":
                continue
            if option in MODEL_TRAINING_OPTIONS:
                spec[option] = _number(0, example="1.0")(f"{key}.{option}", value, where)
                continue
            if option not in MODEL_KINDS[kind]:
                close = difflib.get_close_matches(str(option), list(MODEL_KINDS[kind]), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise InvalidParameterError(
                    f"Unknown option {f'{key}.{option}'!r}{where}: model kind {kind!r} takes "
                    f"{', '.join(sorted([*MODEL_KINDS[kind], *MODEL_TRAINING_OPTIONS]))}.{hint}")
            spec[option] = _model_option(f"{key}.{option}", option, value, where)


def _model_option(key: str, option: str, value, where: str):
    if option in ("r", "d_a", "hidden_size", "num_layers"):
        return _integer(1)(key, value, where)
    if option == "dropout":
        return _number(0, 1, high_open=True)(key, value, where)
    if option == "bidirectional":
        return _boolean(key, value, where)
    return _choice(key, value, MODEL_CHOICES[option], where)


def _check_together(config: dict, where: str) -> None:
    """Values that are valid alone but not together."""
    parcellation, samples, training = config["parcellation"], config["samples"], config["training"]
    high, low = parcellation["high_pass"], parcellation["low_pass"]
    if high is not None and low is not None and high >= low:
        raise InvalidParameterError(
            f"'parcellation.high_pass' ({high:g} Hz) must be below 'parcellation.low_pass' "
            f"({low:g} Hz){where}: the band would be empty.")
    if samples["mode"] == "runs" and samples["label"] != "task":
        raise InvalidParameterError(
            f"'samples.mode' 'runs' labels samples by their run's task{where}; for 'samples.label' "
            "'condition' set 'samples.mode' to 'windows'.")
    if training["selection"] == "last" and training["patience"] is not None:
        raise InvalidParameterError(
            f"Invalid value for 'training.patience': {_show(training['patience'])}{where} with "
            "'training.selection' 'last': keeping the last weights trains every epoch. Set "
            "patience to null, or selection to 'best' for early stopping.")
    folds, val = config["crossval"]["folds"], config["crossval"]["val_folds"]
    best = training["selection"] == "best"
    if best and val == 0:
        raise InvalidParameterError(
            f"'training.selection' 'best' chooses the epoch on validation subjects, but "
            f"'crossval.val_folds' is 0{where}: set crossval.val_folds to 1 (or more), or use "
            "selection 'last'.")
    n_val = (1 if best else 0) if val is None else val
    if folds is not None and folds < n_val + 2:
        raise InvalidParameterError(
            f"Invalid value for 'crossval.folds': {folds}{where}. With {n_val} validation "
            f"group(s) per fold it must be at least {n_val + 2} (test, validation, train groups).")
