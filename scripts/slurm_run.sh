#!/bin/bash
# Run the fmri_ica pipeline (train, explain, project, report) as one SLURM job.
#
#   sbatch scripts/slurm_run.sh config.yaml
#
# Parcellate large data sets first with scripts/slurm_parcellate.sh (a job array); this
# job then finds the region time series done and skips that stage. Training checkpoints
# every epoch; on preemption or time-out SLURM sends SIGTERM (--signal below), training
# saves its exact state and exits, and the requeued job resumes where it stopped.
#SBATCH --job-name=fmri-ica-run
#SBATCH --cpus-per-task=4
#SBATCH --gres=gpu:1
#SBATCH --mem=32G
#SBATCH --time=04:00:00
#SBATCH --signal=B:TERM@120
#SBATCH --requeue
#SBATCH --output=%x_%j.out
set -euo pipefail

CONFIG=${1:?usage: sbatch scripts/slurm_run.sh CONFIG [fmri-ica run options...]}
shift

# exec: SLURM's signal reaches fmri-ica itself, which checkpoints and exits cleanly.
exec fmri-ica run "$CONFIG" "$@"
