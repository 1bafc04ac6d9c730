#!/usr/bin/env bash
# Ray worker for vLLM Qwen/Qwen2.5-Coder-7B-Instruct (2 GPUs per replica, 2 replicas): joins the head started by ray-head.sh.
# Rendered by vllm-ops. Set RAY_HEAD_ADDRESS to the head node's address if it differs.
set -euo pipefail

# Secrets: KEY=VALUE lines read literally (never evaluated), like Compose's env_file and systemd's
# EnvironmentFile=. Point VLLM_ENV_FILE elsewhere to use another file.
env_file="${VLLM_ENV_FILE:-$(dirname "$0")/vllm.env}"
if [ -f "$env_file" ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in ''|'#'*) continue ;; esac
    key="${line%%=*}"
    value="${line#*=}"
    [[ "$key" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
    case "$value" in
      \"*\") value="${value#\"}"; value="${value%\"}" ;;
      \'*\') value="${value#\'}"; value="${value%\'}" ;;
    esac
    export "$key=$value"
  done < "$env_file"
fi

head_address=''
head_address="${RAY_HEAD_ADDRESS:-${LWS_LEADER_ADDRESS:-$head_address}}"
: "${head_address:?set RAY_HEAD_ADDRESS to the Ray head node address}"

exec ray start --address="$head_address:6379" --num-gpus=2 --block
