#!/bin/bash
# Train on several GPUs, or several nodes, with DistributedDataParallel (torchrun).
#
#   sbatch --dependency=afterok:<samples job id> scripts/slurm_train_ddp.sh config.yaml
#   sbatch --nodes=2 scripts/slurm_train_ddp.sh config.yaml             # 2 nodes x 4 GPUs
#   NPROC_PER_NODE=2 sbatch --gres=none --cpus-per-task=2 scripts/slurm_train_ddp.sh config.yaml \
#       --set training.device=cpu                                       # 2 CPU processes (gloo)
#
# One torchrun per node (srun) starts NPROC_PER_NODE processes (default: the GPUs SLURM gave
# the node), one GPU each (NCCL; set training.device: cuda), gloo on CPUs. The samples stage
# must be done (scripts/slurm_samples.sh); this job builds them on rank 0 if they are not.
# training.batch_size is the global batch, split across the processes, so the result is that
# of one process (within float tolerance, for models without dropout). Only rank 0 writes.
# Every fold is trained in turn by all processes; for many folds and few GPUs an array of
# single-GPU folds (scripts/slurm_folds.sh) is simpler and as fast.
#SBATCH --job-name=fmri-ica-ddp
#SBATCH --nodes=1
# One task per node: torchrun, which starts the processes of its node.
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:4
# CPUs per node = processes x torch threads; each process runs cpus-per-task / processes
# threads (at least 1), passed to fmri-ica as --threads.
#SBATCH --cpus-per-task=4
#SBATCH --mem=64G
#SBATCH --time=08:00:00
# On SIGTERM every process stops at the same step, rank 0 saves the exact state, and the job
# requeues; the next run resumes it, on as many processes as it then gets.
#SBATCH --signal=B:TERM@180
#SBATCH --requeue
#SBATCH --output=%x_%j.out
# A requeued job appends to its log (SLURM truncates it by default): the interruption stays.
#SBATCH --open-mode=append
set -uo pipefail

CONFIG=${1:?usage: sbatch scripts/slurm_train_ddp.sh CONFIG [fmri-ica run options...]}
shift
NPROC=${NPROC_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}
THREADS=$(( ${SLURM_CPUS_PER_TASK:-1} / NPROC )); [ "$THREADS" -ge 1 ] || THREADS=1
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
PORT=$(( 29500 + SLURM_JOB_ID % 1000 ))
command=(srun --kill-on-bad-exit=1 torchrun --nnodes="$SLURM_JOB_NUM_NODES" --nproc_per_node="$NPROC"
         --rdzv_backend=c10d --rdzv_endpoint="$HEAD:$PORT" --rdzv_id="$SLURM_JOB_ID"
         -m fmri_ica.cli run "$CONFIG" --stage samples --stage train --threads "$THREADS" "$@")

# SLURM signals the batch shell alone: the wrapper forwards SIGTERM and requeues the job.
exec fmri-ica-requeue "${command[@]}"
