#!/bin/bash
# Finish parcellation and build the samples and cross-validation folds: the job between a
# parcellation array and a fold array (scripts/slurm_folds.sh).
#
#   sbatch --dependency=afterok:<parcellation array id> scripts/slurm_samples.sh config.yaml
#
# Parcellation runs once more without a shard: it finds every run done (or parcellates runs
# a failed array task left) and marks the stage finished; then the samples stage reads every
# run's region time series into samples/samples.npz and writes samples/folds.json.
#SBATCH --job-name=fmri-ica-samples
# No torch training here; one CPU (raise it with parcellation.jobs for left-over runs).
#SBATCH --cpus-per-task=1
# The samples are held in memory: about 1.5x their size (HCP, 300 regions: ~2.5 GB as
# float32 for 1,100 subjects x 14 runs x ~280 frames; see docs/scaling.md).
#SBATCH --mem=16G
#SBATCH --time=01:00:00
#SBATCH --signal=B:TERM@60
#SBATCH --requeue
#SBATCH --output=%x_%j.out
# A requeued job appends to its log (SLURM truncates it by default): the interruption stays.
#SBATCH --open-mode=append
set -uo pipefail

CONFIG=${1:?usage: sbatch scripts/slurm_samples.sh CONFIG [fmri-ica run options...]}
shift
command=(fmri-ica run "$CONFIG" --stage parcellate --stage samples --threads auto "$@")

# SLURM signals the batch shell alone: the wrapper forwards SIGTERM and requeues the job.
exec fmri-ica-requeue "${command[@]}"
