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

# SLURM signals the batch shell alone: the wrapper forwards SIGTERM and requeues the job.
exec fmri-ica-requeue "${command[@]}"
