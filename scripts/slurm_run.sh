#!/bin/bash
# Run the fmri_ica pipeline (parcellate, train, explain, project, report) as one SLURM job.
#
#   sbatch scripts/slurm_run.sh config.yaml
#
# Large data sets: parcellate first as a job array with the same config (each task takes
# every N-th run; finished runs are skipped), then submit this job, which finds them done:
#   sbatch --array=0-19 --wrap "fmri-ica run config.yaml --stage parcellate --shard auto"
# Cross-validation folds can train as an array too, once the samples stage has run (one fold
# per task; this job then finds them done, pools them and explains):
#   fmri-ica run config.yaml --stage parcellate --stage samples
#   sbatch --array=0-4 --gres=gpu:1 --wrap "fmri-ica train config.yaml --fold auto"
#
# CPUs: torch runs 'threads' threads per process (config key, default 1; override with
# --threads N, or --threads auto for SLURM_CPUS_PER_TASK). One thread suits these small
# models; with a GPU it hardly matters. The other CPUs serve parcellation.jobs (runs
# parcellated at once) and the report's figure workers (2). Never ask for more threads
# than --cpus-per-task: threads waiting for each other's cores make training many times
# slower (0.4 s epochs became 11-19 s with 2 threads on 2 busy cores).
#
# Training checkpoints every epoch. Before preemption or the time limit SLURM sends SIGTERM
# (--signal below); training saves its exact state and exits with status 143, and this
# script requeues the job, which resumes where it stopped.
#SBATCH --job-name=fmri-ica-run
#SBATCH --cpus-per-task=4
#SBATCH --gres=gpu:1
#SBATCH --mem=32G
#SBATCH --time=04:00:00
#SBATCH --signal=B:TERM@120
#SBATCH --requeue
#SBATCH --output=%x_%j.out
set -uo pipefail

CONFIG=${1:?usage: sbatch scripts/slurm_run.sh CONFIG [fmri-ica run options...]}
shift

fmri-ica run "$CONFIG" "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM  # pass SLURM's warning on to fmri-ica
wait "$child"; status=$?
if [ "$status" -gt 128 ]; then wait "$child"; status=$?; fi  # wait returned early for the trap
if [ "$status" -eq 143 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    echo "fmri-ica saved its state after SIGTERM; requeueing job $SLURM_JOB_ID" >&2
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
