#!/bin/bash
# Submit the whole pipeline as a chain of SLURM jobs (run this on the login node, not sbatch):
#
#   scripts/slurm_pipeline.sh config.yaml 20      # 20 parcellation tasks (default 10)
#
#   1. scripts/slurm_parcellate.sh   array of SHARDS tasks, each every SHARDS-th run (CPU)
#   2. scripts/slurm_samples.sh      finishes parcellation, builds samples and folds (CPU)
#   3. scripts/slurm_folds.sh        array, one cross-validation fold per task (one GPU each)
#   4. scripts/slurm_explain.sh      array, the saliency of one fold per task (one GPU each)
#   5. scripts/slurm_report.sh       pools the folds' scores and saliency (sanity statistics,
#                                    group tests), projects the maps, writes the report
#
# Each job starts when the one before it succeeded (--dependency=afterok; for an array, all
# of its tasks); if one fails, the jobs after it are cancelled (--kill-on-invalid-dep), and
# running this script again resubmits the chain, every stage skipping finished work.
# Partition, account and QOS come from sbatch's own variables, e.g.
#   SBATCH_PARTITION=gpu SBATCH_ACCOUNT=mylab scripts/slurm_pipeline.sh config.yaml
# Without GPUs: SBATCH_GRES=none (training then runs on --cpus-per-task CPUs).
set -euo pipefail

CONFIG=${1:?usage: scripts/slurm_pipeline.sh CONFIG [SHARDS]}
SHARDS=${2:-10}
HERE=$(dirname "$0")
# the number of folds is the config's crossval.folds (null: one train/test split)
FOLDS=$(python -c 'import sys; from fmri_ica.config import load_config
print(load_config(sys.argv[1])["crossval"]["folds"] or 1)' "$CONFIG")

submit() {  # sbatch, printing only the job id
    local id
    id=$(sbatch --parsable --kill-on-invalid-dep=yes "$@")
    echo "${id%%;*}"
}
parcellate=$(submit --array=0-$((SHARDS - 1)) "$HERE/slurm_parcellate.sh" "$CONFIG")
samples=$(submit --dependency=afterok:"$parcellate" "$HERE/slurm_samples.sh" "$CONFIG")
folds=$(submit --array=0-$((FOLDS - 1)) --dependency=afterok:"$samples" "$HERE/slurm_folds.sh" "$CONFIG")
explain=$(submit --array=0-$((FOLDS - 1)) --dependency=afterok:"$folds" "$HERE/slurm_explain.sh" "$CONFIG")
report=$(submit --dependency=afterok:"$explain" "$HERE/slurm_report.sh" "$CONFIG")
echo "parcellate $parcellate, samples $samples, folds $folds ($FOLDS), explain $explain ($FOLDS), report $report"
echo "follow them with: squeue -u ${USER:-$(id -un)}; the report job writes report.html under the config's output"
