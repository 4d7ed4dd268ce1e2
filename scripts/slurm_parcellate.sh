#!/bin/bash
# Parcellate a data set as a SLURM job array: each array task takes every N-th run.
#
#   sbatch --array=0-19 scripts/slurm_parcellate.sh config.yaml            # a pipeline config
#   sbatch --array=0-19 scripts/slurm_parcellate.sh /data/HCP derivatives/ts seitzman300
#
# With a config (.yaml, .yml, .toml, .json) it runs `fmri-ica run CONFIG --stage parcellate
# --shard auto`; the next job (scripts/slurm_samples.sh, or scripts/slurm_train.sh) runs the
# stage once more without a shard, which finds every run done and marks the stage finished.
# Otherwise ROOT OUT [ATLAS] go to `fmri-ica parcellate` (extra arguments after the third are
# passed on, e.g. --task MOTOR --high-pass 0.008 --confounds-strategy simple).
#
# Set --array to N tasks (0-(N-1), or 1-N, or with a step: any range works, because
# `--shard auto` numbers tasks from SLURM_ARRAY_TASK_MIN in steps of SLURM_ARRAY_TASK_STEP
# and counts SLURM_ARRAY_TASK_COUNT). About one task per 10-50 runs is a good size; add
# %K (e.g. --array=0-99%20) to run at most K tasks at once. Tasks share the output folder
# safely (per-run lock files); a re-submission skips finished runs, so resubmit the same
# command after failures or timeouts.
# Pre-build the atlas cache once before a large array (optional):
#   fmri-ica atlases build seitzman300 --target <one bold.nii.gz>
#SBATCH --job-name=fmri-ica-parcellate
# One CPU per task: parcellation does not use torch threads. For more CPUs per task raise
# --cpus-per-task and pass --jobs with the same number (runs parcellated at once).
#SBATCH --cpus-per-task=1
# One HCP run (2 mm grid, 405 frames) needs about 2-3 GB while it is cleaned.
#SBATCH --mem=8G
#SBATCH --time=02:00:00
# Preemption or the time limit: SIGTERM 60 s before the end, then the task is requeued and
# skips the runs it finished.
#SBATCH --signal=B:TERM@60
#SBATCH --requeue
# One log per array task: job name, array job id (%A), task id (%a).
#SBATCH --output=%x_%A_%a.out
# A requeued job appends to its log (SLURM truncates it by default): the interruption stays.
#SBATCH --open-mode=append
set -uo pipefail

FIRST=${1:?usage: sbatch --array=0-N scripts/slurm_parcellate.sh CONFIG | ROOT OUT [ATLAS] [options...]}
case "$FIRST" in
    *.yaml | *.yml | *.toml | *.json)
        shift
        command=(fmri-ica run "$FIRST" --stage parcellate --shard auto "$@") ;;
    *)
        OUT=${2:?usage: sbatch --array=0-N scripts/slurm_parcellate.sh ROOT OUT [ATLAS] [options...]}
        ATLAS=${3:-seitzman300}
        shift $(( $# < 3 ? $# : 3 ))
        command=(fmri-ica parcellate "$FIRST" --out "$OUT" --atlas "$ATLAS" --shard auto --no-progress "$@") ;;
esac

# SLURM signals the batch shell alone: the wrapper forwards SIGTERM and requeues the job.
exec fmri-ica-requeue "${command[@]}"
