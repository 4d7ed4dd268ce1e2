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

# Run fmri-ica in the background so that SLURM's SIGTERM reaches it through the trap.
"${command[@]}" &
child=$!
term=0
trap 'term=1; kill -TERM "$child" 2>/dev/null' TERM
wait "$child"; status=$?
if [ "$term" -eq 1 ]; then wait "$child"; status=$?; fi  # the trap cut the first wait short
if { [ "$status" -eq 143 ] || [ "$term" -eq 1 ]; } && [ -n "${SLURM_JOB_ID:-}" ]; then
    echo "fmri-ica saved its state after SIGTERM; requeueing job $SLURM_JOB_ID" >&2
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
