"""Run the whole pipeline (or some stages) from a config file.

Stages, in order: parcellate -> samples -> train -> explain -> project -> report.
Every stage is resumable: finished work is skipped when its parameters are unchanged,
and a changed parameter re-runs that stage and the ones after it.

Example config (YAML; TOML and JSON work the same; every key and its default is in
fmri_ica/config.py). Every run writes its full configuration to OUTPUT/config.json, and
`fmri-ica demo` to OUT/config.yaml: either runs again as given.

    output: results/hcp_motor
    data: {root: /data/HCP, layout: hcp, tasks: [MOTOR, WM, LANGUAGE]}
    atlas: {name: seitzman300}
    samples: {mode: runs, window: 100, step: 25}
    crossval: {folds: 5}
    models:
      ica-lstm: {kind: ica, hidden_size: 32, r: 10, d_a: 50, dropout: 0.3, input_noise: 1.0}
      lstm: {kind: lstm, hidden_size: 32, dropout: 0.3}
    training: {epochs: 30, weight_decay: 0.01, crops_per_run: 16, selection: last}
    saliency: {method: gradient, top_k: 0.1}
    sanity: {untrained: true, cascading: true, permuted_labels: true}

Examples:
    fmri-ica run config.yaml
    fmri-ica run config.yaml --stage train --stage explain
    fmri-ica run config.yaml --set training.epochs=5 --output quick_check
    fmri-ica run config.yaml --stage train --fold 3     # one fold, e.g. a SLURM array task
    fmri-ica run config.yaml --allow-failures 2 --verify
    fmri-ica run fmri_ica_demo/config.yaml --set training.epochs=30 --output demo30
"""

from __future__ import annotations

from ._common import (
    add_allow_failures_argument,
    add_config_arguments,
    add_fold_argument,
    run_stages,
)

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
    add_fold_argument(parser)
    add_allow_failures_argument(parser)


def run(args) -> int:
    return run_stages(args, tuple(args.stages or _STAGES))
