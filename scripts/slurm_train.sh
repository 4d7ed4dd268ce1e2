#!/bin/bash
# Train every configured model on every cross-validation fold on one GPU, then pool the
# held-out scores (models/<name>/evaluation.json). Finishes parcellation and builds the
# samples first if they are not done (every stage skips finished work).
#
#   sbatch scripts/slurm_train.sh config.yaml
#   sbatch --dependency=afterok:<parcellation array id> scripts/slurm_train.sh config.yaml
#   sbatch --gres=none --cpus-per-task=2 scripts/slurm_train.sh config.yaml   # CPU only
#
# For one fold per GPU use scripts/slurm_folds.sh (an array); for several GPUs or nodes on
# one model, scripts/slurm_train_ddp.sh.
#SBATCH --job-name=fmri-ica-train
# torch runs --threads auto = SLURM_CPUS_PER_TASK threads: one suits these small recurrent
# models (a second gains at most 1.2x, docs/benchmarks.md). Raise both only together.
#SBATCH --cpus-per-task=1
#SBATCH --gres=gpu:1
#SBATCH --mem=32G
#SBATCH --time=08:00:00
# Training checkpoints every epoch; on SIGTERM (preemption, or 120 s before the time limit)
# it saves its exact state and exits 143, and the job requeues itself and resumes.
#SBATCH --signal=B:TERM@120
#SBATCH --requeue
#SBATCH --output=%x_%j.out
# A requeued job appends to its log (SLURM truncates it by default): the interruption stays.
#SBATCH --open-mode=append
set -uo pipefail

CONFIG=${1:?usage: sbatch scripts/slurm_train.sh CONFIG [fmri-ica run options...]}
shift
command=(fmri-ica run "$CONFIG" --stage parcellate --stage samples --stage train --threads auto "$@")

# SLURM signals the batch shell alone: the wrapper forwards SIGTERM and requeues the job.
exec fmri-ica-requeue "${command[@]}"
