#!/bin/bash
# Explain the cross-validation folds as a job array: one fold per array task, one GPU each.
#
#   sbatch --array=0-4 --dependency=afterok:<fold array id> scripts/slurm_explain.sh config.yaml
#
# --array must list the folds, 0-(K-1) for crossval.folds K. Each task computes the saliency
# of every model of the config trained on its fold, and of its null models, on the fold's
# held-out subjects (only that fold's windows are loaded), and saves it under
# saliency/<model>/fold-<k>/. It needs its fold trained (scripts/slurm_folds.sh); then
# scripts/slurm_report.sh pools the folds (finished folds are loaded, not recomputed), runs
# the sanity statistics and group tests, projects and reports. A task that fails or times
# out is resubmitted alone: sbatch --array=3 ...
#SBATCH --job-name=fmri-ica-explain
# torch runs --threads auto = SLURM_CPUS_PER_TASK threads.
#SBATCH --cpus-per-task=1
# Saliency of many subjects is faster on a GPU; remove the line (or --gres=none) to use CPUs.
#SBATCH --gres=gpu:1
#SBATCH --mem=32G
#SBATCH --time=04:00:00
# A task stopped by SIGTERM (preemption, or 60 s before the time limit) requeues; its fold
# is explained again from the start (a fold is saved only when finished).
#SBATCH --signal=B:TERM@60
#SBATCH --requeue
# One log per fold: job name, array job id (%A), fold (%a).
#SBATCH --output=%x_%A_%a.out
# A requeued job appends to its log (SLURM truncates it by default): the interruption stays.
#SBATCH --open-mode=append
set -uo pipefail

CONFIG=${1:?usage: sbatch --array=0-K scripts/slurm_explain.sh CONFIG [fmri-ica explain options...]}
shift
command=(fmri-ica explain "$CONFIG" --fold auto --threads auto "$@")

# SLURM signals the batch shell alone: the wrapper forwards SIGTERM and requeues the job.
exec fmri-ica-requeue "${command[@]}"
