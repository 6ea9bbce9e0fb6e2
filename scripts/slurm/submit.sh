#!/usr/bin/env bash
# Submit the cache array, then the merge once every array task succeeded.
#   scripts/slurm/submit.sh configs/llama8b-sparsify.yaml 8
set -euo pipefail
config=$1
tasks=${2:-8}
here=$(dirname "$0")
array=$(sbatch --parsable --array=0-$((tasks - 1)) "$here/cache.sbatch" "$config")
sbatch --dependency=afterok:"$array" "$here/merge.sbatch" "$config"
