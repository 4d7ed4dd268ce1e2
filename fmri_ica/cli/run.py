"""Run the whole pipeline (or some stages) from a config file.

Stages, in order: parcellate -> samples -> train -> explain -> project -> report.
Every stage is resumable: finished work is skipped when its parameters are unchanged,
and a changed parameter re-runs that stage and the ones after it.

Example config (YAML; TOML works the same):

    output: results/hcp_motor
    data: {root: /data/HCP, layout: hcp, tasks: [MOTOR, WM, LANGUAGE]}
    atlas: {name: seitzman300}
    samples: {window: 100, split: [0.6, 0.2, 0.2]}
    models:
      ica-lstm: {kind: ica, hidden_size: 64, r: 10, d_a: 50}
      lstm: {kind: lstm, hidden_size: 64}
    training: {epochs: 60, patience: 10}
    saliency: {method: gradient, top_k: 0.1}

Examples:
    fmri-ica run config.yaml
    fmri-ica run config.yaml --stage train --stage explain
    fmri-ica run config.yaml --set training.epochs=5 --output quick_check
"""

from __future__ import annotations

from ._common import add_config_arguments, run_stages

_STAGES = ("parcellate", "samples", "train", "explain", "project", "report")


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--stage", action="append", choices=_STAGES, dest="stages",
        help="run only this stage (repeatable); default: all, in order",
    )
    parser.add_argument(
        "--shard", metavar="I/N",
        help="parcellate only runs I, I+N, ... (0-based; 'auto' reads SLURM's array variables), "
        "for array jobs; then run the stage once more without --shard to finish it",
    )


def run(args) -> int:
    return run_stages(args, tuple(args.stages or _STAGES))
