"""Arguments shared by the pipeline subcommands."""

from __future__ import annotations

import argparse
import json


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="pipeline configuration file (.yaml, .yml or .toml)")
    parser.add_argument("--output", help="output folder (overrides 'output' in the config)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set training.epochs=5 (value read as JSON/YAML)",
    )


def load_config_from_args(args: argparse.Namespace) -> dict:
    import yaml

    from ..config import load_config
    from ..exceptions import InvalidParameterError

    overrides: dict = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidParameterError(f"--set expects SECTION.KEY=VALUE; got {item!r}.")
        *sections, last = key.split(".")
        target = overrides
        for section in sections:
            target = target.setdefault(section, {})
        target[last] = yaml.safe_load(value)
    if args.output:
        overrides["output"] = args.output
    return load_config(args.config, overrides)


def run_stages(args: argparse.Namespace, stages: tuple[str, ...]) -> int:
    from ..pipeline import run_pipeline

    workspace = run_pipeline(load_config_from_args(args), stages=stages)
    print(json.dumps({"output": str(workspace.root), "stages": list(stages)}))
    return 0


def stage_command(stage: str):
    """``(add_arguments, run)`` for a subcommand that runs one pipeline stage."""

    def run(args: argparse.Namespace) -> int:
        return run_stages(args, (stage,))

    return add_config_arguments, run
