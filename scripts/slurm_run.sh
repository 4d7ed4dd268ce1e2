#!/bin/bash
# Run the fmri_ica pipeline (parcellate, train, explain, project, report) as one SLURM job.
#
#   sbatch scripts/slurm_run.sh config.yaml
#
# Large data sets: scripts/slurm_pipeline.sh submits the same work as chained jobs instead
# (a parcellation array, the samples, one fold per array task on its own GPU, and a final
# explain/report job), each started when the one before it succeeded.
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
# One log per job: job name (%x) and id (%j).
#SBATCH --output=%x_%j.out
# A requeued job appends to its log (SLURM truncates it by default): the interruption stays.
#SBATCH --open-mode=append
set -uo pipefail

CONFIG=${1:?usage: sbatch scripts/slurm_run.sh CONFIG [fmri-ica run options...]}
shift
command=(fmri-ica run "$CONFIG" "$@")

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
