#!/bin/bash
# Parcellate a data set as a SLURM job array: each array task takes every N-th run.
#
#   sbatch --array=0-19 scripts/slurm_parcellate.sh /data/HCP derivatives/ts seitzman300
#
# Set --array to N tasks (0-(N-1), or 1-N, or with a step: any range works, because
# `--shard auto` numbers tasks from SLURM_ARRAY_TASK_MIN in steps of
# SLURM_ARRAY_TASK_STEP and counts SLURM_ARRAY_TASK_COUNT). About one task per 10-50
# runs is a good size. Tasks share the output folder safely (per-run lock files); a
# re-submission skips finished runs, so resubmit the same command after failures or
# timeouts. Extra arguments after the third are passed on to `fmri-ica parcellate`
# (e.g. --task MOTOR --high-pass 0.008 --confounds-strategy simple).
# One CPU per task: parcellation does not use torch (no --threads); for more CPUs per task
# raise --cpus-per-task and pass --jobs with the same number (runs parcellated at once).
# Pre-build the atlas cache once before a large array (optional):
#   fmri-ica atlases build seitzman300 --target <one bold.nii.gz>
#SBATCH --job-name=fmri-ica-parcellate
#SBATCH --cpus-per-task=1
#SBATCH --mem=8G
#SBATCH --time=02:00:00
#SBATCH --output=%x_%A_%a.out
set -euo pipefail

ROOT=${1:?usage: sbatch --array=0-N scripts/slurm_parcellate.sh ROOT OUT [ATLAS] [options...]}
OUT=${2:?output folder}
ATLAS=${3:-seitzman300}
shift $(( $# < 3 ? $# : 3 ))

exec fmri-ica parcellate "$ROOT" --out "$OUT" --atlas "$ATLAS" --shard auto --no-progress "$@"
