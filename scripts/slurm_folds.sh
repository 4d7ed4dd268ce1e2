#!/bin/bash
# Train the cross-validation folds as a job array: one fold per array task, one GPU each.
#
#   sbatch --array=0-4 --dependency=afterok:<samples job id> scripts/slurm_folds.sh config.yaml
#
# --array must list the folds, 0-(K-1) for crossval.folds K (every model of the config is
# trained on that fold, with its null model). Needs the samples stage (scripts/slurm_samples.sh);
# then scripts/slurm_report.sh pools the folds (finished folds are skipped), explains and
# reports. A task that fails or times out is resubmitted alone: sbatch --array=3 ...
#SBATCH --job-name=fmri-ica-fold
# torch runs --threads auto = SLURM_CPUS_PER_TASK threads; one suits these small models.
#SBATCH --cpus-per-task=1
#SBATCH --gres=gpu:1
#SBATCH --mem=32G
#SBATCH --time=04:00:00
# On SIGTERM training saves its exact state and exits 143; the task requeues and resumes.
#SBATCH --signal=B:TERM@120
#SBATCH --requeue
# One log per fold: job name, array job id (%A), fold (%a).
#SBATCH --output=%x_%A_%a.out
# A requeued job appends to its log (SLURM truncates it by default): the interruption stays.
#SBATCH --open-mode=append
set -uo pipefail

CONFIG=${1:?usage: sbatch --array=0-K scripts/slurm_folds.sh CONFIG [fmri-ica train options...]}
shift
command=(fmri-ica train "$CONFIG" --fold auto --threads auto "$@")

# SLURM signals the batch shell alone: the wrapper forwards SIGTERM and requeues the job.
exec fmri-ica-requeue "${command[@]}"
