#!/bin/bash
# The final gather job: pool the folds' held-out scores and the folds' saliency (explained by
# scripts/slurm_explain.sh; any fold not yet explained is explained here), project the maps onto
# the atlas and write the report.
#
#   sbatch --dependency=afterok:<training or fold array id> scripts/slurm_report.sh config.yaml
#
# Every stage skips finished work, so the same command re-runs after a failure or timeout.
#SBATCH --job-name=fmri-ica-report
# Saliency runs torch with --threads auto = SLURM_CPUS_PER_TASK threads; the report draws its
# figures in 2 worker processes of its own.
#SBATCH --cpus-per-task=2
# Saliency of many subjects is faster on a GPU; remove the line (or --gres=none) to use CPUs.
#SBATCH --gres=gpu:1
#SBATCH --mem=32G
#SBATCH --time=04:00:00
#SBATCH --signal=B:TERM@60
#SBATCH --requeue
#SBATCH --output=%x_%j.out
# A requeued job appends to its log (SLURM truncates it by default): the interruption stays.
#SBATCH --open-mode=append
set -uo pipefail

CONFIG=${1:?usage: sbatch scripts/slurm_report.sh CONFIG [fmri-ica run options...]}
shift
command=(fmri-ica run "$CONFIG" --stage train --stage explain --stage project --stage report --threads auto "$@")

# SLURM signals the batch shell alone: the wrapper forwards SIGTERM and requeues the job.
exec fmri-ica-requeue "${command[@]}"
