"""Arguments shared by the pipeline subcommands."""

from __future__ import annotations

import argparse
import json


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="pipeline configuration file (.yaml, .yml, .toml or .json, e.g. a run's config.json)")
    parser.add_argument("--output", help="output folder (overrides 'output' in the config)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set training.epochs=5 (value read as JSON/YAML)",
    )
    add_threads_argument(parser, "the config's 'threads', 1 unless set")
    add_verify_argument(parser)


def add_verify_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verify", action="store_true",
        help="re-read finished outputs and inputs and compare their checksums with those "
        "recorded (default: compare sizes and times, checksums only where a time changed)",
    )


def add_allow_failures_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-failures", type=_allowance, metavar="N",
        help="go on (exit 0) when at most N runs failed to parcellate, or a share of them "
        "(e.g. 0.05); default 0: any failed run is an error (the others are kept)",
    )


def _allowance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of runs (3) or a share (0.05); got {text!r}")
    return int(value) if value.is_integer() else value


def add_threads_argument(parser: argparse.ArgumentParser, default: str) -> None:
    """``--threads N|auto``: torch's threads per process, resolved to a number."""
    parser.add_argument(
        "--threads", type=_threads, metavar="N",
        help=f"torch threads per process (default: {default}); 'auto': "
        "SLURM_CPUS_PER_TASK, else the CPUs this process may use. More than 1 rarely pays "
        "for these small models and slows them down badly when other work shares the cores",
    )


def _threads(text: str) -> int:
    from .._threads import resolve_threads
    from ..exceptions import InvalidParameterError

    try:
        return resolve_threads(int(text) if text.strip().lstrip("-").isdigit() else text, "--threads")
    except InvalidParameterError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_set_options(items: list[str]) -> dict:
    """``["a.b=1", ...]`` -> ``{"a": {"b": 1}}`` (values read as YAML)."""
    import yaml

    from ..exceptions import InvalidParameterError

    overrides: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidParameterError(f"--set expects SECTION.KEY=VALUE; got {item!r}.")
        *sections, last = key.split(".")
        target = overrides
        for section in sections:
            target = target.setdefault(section, {})
        target[last] = yaml.safe_load(value)
    return overrides


def load_config_from_args(args: argparse.Namespace) -> dict:
    from ..config import load_config, merge_config, validate_config

    overrides = parse_set_options(args.set)
    if args.output:
        overrides["output"] = args.output
    if getattr(args, "threads", None) is not None:
        overrides["threads"] = args.threads
    if getattr(args, "allow_failures", None) is not None:
        overrides.setdefault("parcellation", {})["allow_failures"] = args.allow_failures
    # Validated after the overrides, so that --set can fix a bad value of the file.
    config = merge_config(load_config(args.config, validate=False), overrides, source="--set",
                          replace_free_form=False)
    return validate_config(config, source=args.config if not overrides else f"{args.config} and --set")


def run_stages(args: argparse.Namespace, stages: tuple[str, ...]) -> int:
    from ..pipeline import run_pipeline

    workspace = run_pipeline(load_config_from_args(args), stages=stages,
                             shard=getattr(args, "shard", None), fold=getattr(args, "fold", None),
                             verify=args.verify)
    from .._utils import launch_rank

    if launch_rank() in (None, 0):  # once under torchrun / srun
        print(json.dumps({"output": str(workspace.root), "stages": list(stages)}))
    return 0


def add_fold_argument(parser: argparse.ArgumentParser, what: str = "train and explain") -> None:
    """``--fold K|auto``; ``what``: the stages it limits, for the help."""
    parser.add_argument(
        "--fold", metavar="K",
        help=f"{what} only cross-validation fold K (0-based; 'auto' reads SLURM_ARRAY_TASK_ID), "
        "for array jobs; then run the stage once more without --fold to pool the folds",
    )


def stage_command(stage: str):
    """``(add_arguments, run)`` for a subcommand that runs one pipeline stage."""

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_config_arguments(parser)
        if stage in ("train", "explain"):
            add_fold_argument(parser, stage)

    def run(args: argparse.Namespace) -> int:
        return run_stages(args, (stage,))

    return add_arguments, run


# Help of the data-set discovery options; a subcommand may reword some (``help=``).
_DISCOVERY_HELP = {
    "task": "keep these tasks (any case)",
    "run": "keep these runs (LR, RL, 1, ...)",
    "space": "fMRIPrep space, e.g. MNI152NLin2009cAsym or ...:res-2",
    "t_r": "override the repetition time (seconds)",
    "no_events": "list runs even without events",
}


def add_discovery_arguments(
    parser: argparse.ArgumentParser, *, raw_root: bool = False, help: dict | None = None
) -> None:
    """``root`` and the filters of :func:`fmri_ica.data.layouts.discover_runs`.

    Parameters
    ----------
    parser : argparse.ArgumentParser
    raw_root : bool, default=False
        Also add ``--raw-root`` (raw BIDS data set holding the events).
    help : dict, optional
        Help text per option destination (``"task"``, ``"run"``, ``"space"``, ``"t_r"``,
        ``"no_events"``), replacing the defaults.
    """
    text = {**_DISCOVERY_HELP, **(help or {})}
    parser.add_argument("root", help="HCP folder, fMRIPrep derivatives folder, or manifest .tsv")
    parser.add_argument("--layout", default="auto", choices=["auto", "hcp", "bids", "manifest"])
    parser.add_argument("--subject", nargs="+", metavar="LABEL", help="keep these subjects")
    parser.add_argument("--session", nargs="+", metavar="LABEL", help="keep these sessions")
    parser.add_argument("--task", nargs="+", metavar="NAME", help=text["task"])
    parser.add_argument("--run", nargs="+", metavar="LABEL", help=text["run"])
    parser.add_argument("--space", help=text["space"])
    if raw_root:
        parser.add_argument("--raw-root", help="raw BIDS data set holding events.tsv (BIDS layout)")
    parser.add_argument("--t-r", type=float, help=text["t_r"])
    parser.add_argument("--no-events", action="store_true", help=text["no_events"])


def discover_from_args(args: argparse.Namespace, keep_failed: bool = False) -> list:
    """The runs that :func:`add_discovery_arguments`' options select (``keep_failed``: see
    :func:`~fmri_ica.data.layouts.discover_runs`)."""
    from ..data.layouts import discover_runs

    return discover_runs(
        args.root,
        args.layout,
        subjects=args.subject,
        sessions=args.session,
        tasks=args.task,
        runs=args.run,
        space=args.space,
        raw_root=getattr(args, "raw_root", None),
        t_r=args.t_r,
        require_events=not args.no_events,
        keep_failed=keep_failed,
    )


def add_atlas_option_argument(
    parser: argparse.ArgumentParser, flag: str = "--atlas-option"
) -> None:
    """A repeatable ``flag KEY=VALUE`` atlas option (read with :func:`parse_key_values`)."""
    parser.add_argument(
        flag,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="atlas option, e.g. n_regions=400 (repeatable)",
    )


def parse_key_values(items: list[str], flag: str = "--atlas-option") -> dict:
    """``["KEY=VALUE", ...]`` as a dict, each value read as YAML (``400`` -> int).

    Raises
    ------
    InvalidParameterError
        An item without ``=`` or without a key; the message names ``flag``.
    """
    import yaml

    from ..exceptions import InvalidParameterError

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidParameterError(f"{flag} expects KEY=VALUE; got {item!r}.")
        options[key.strip()] = yaml.safe_load(value)
    return options
