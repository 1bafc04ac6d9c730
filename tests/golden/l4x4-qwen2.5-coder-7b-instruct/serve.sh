#!/usr/bin/env bash
# vLLM Qwen/Qwen2.5-Coder-7B-Instruct (2 GPUs per replica, 2 replicas)
# Rendered by vllm-ops from a plan for vLLM 0.33.0. Secrets (HF_TOKEN, VLLM_API_KEY)
# are read from the env file, never written here: fill in vllm.env beside this script
# (or point VLLM_ENV_FILE at one) and keep it private (chmod 600).
# WARNING: vLLM listens on all interfaces (no --host): anyone who can reach the port can use it
# unless VLLM_API_KEY is set in vllm.env; or re-render with `-- --host 127.0.0.1`.
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

pids=()
stop_all() { kill "${pids[@]}" 2>/dev/null || true; }
trap stop_all EXIT INT TERM

# replica 0: GPUs 0,1, port 8000
CUDA_VISIBLE_DEVICES=0,1 vllm serve \
  Qwen/Qwen2.5-Coder-7B-Instruct \
  --block-size 16 \
  --data-parallel-size 1 \
  --dtype auto \
  --gpu-memory-utilization 0.92 \
  --kv-cache-dtype auto \
  --max-model-len 32768 \
  --max-num-batched-tokens 2048 \
  --max-num-seqs 128 \
  --pipeline-parallel-size 1 \
  --tensor-parallel-size 2 \
  --port 8000 &
pids+=("$!")

# replica 1: GPUs 2,3, port 8001
CUDA_VISIBLE_DEVICES=2,3 vllm serve \
  Qwen/Qwen2.5-Coder-7B-Instruct \
  --block-size 16 \
  --data-parallel-size 1 \
  --dtype auto \
  --gpu-memory-utilization 0.92 \
  --kv-cache-dtype auto \
  --max-model-len 32768 \
  --max-num-batched-tokens 2048 \
  --max-num-seqs 128 \
  --pipeline-parallel-size 1 \
  --tensor-parallel-size 2 \
  --port 8001 &
pids+=("$!")

# one replica exiting stops the others, so a supervisor restarts the whole set
status=0
wait -n || status=$?
exit "$status"
