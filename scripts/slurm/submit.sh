#!/usr/bin/env bash
# The whole pipeline as dependent job arrays: cache (N tasks) -> merge -> explain (N) -> score (N) -> summary.
#   scripts/slurm/submit.sh configs/llama8b-sparsify.yaml 8
set -euo pipefail
config=$1
tasks=${2:-8}
here=$(dirname "$0")
array="--array=0-$((tasks - 1))"
cache=$(sbatch --parsable "$array" "$here/cache.sbatch" "$config")
merge=$(sbatch --parsable --dependency=afterok:"$cache" "$here/merge.sbatch" "$config")
explain=$(sbatch --parsable "$array" --dependency=afterok:"$merge" "$here/explain.sbatch" "$config")
score=$(sbatch --parsable "$array" --dependency=afterok:"$explain" "$here/score.sbatch" "$config")
sbatch --dependency=afterok:"$score" "$here/summary.sbatch" "$config"
