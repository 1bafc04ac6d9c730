#!/usr/bin/env bash
# Ray head for vLLM Qwen/Qwen2.5-Coder-7B-Instruct (2 GPUs per replica, 2 replicas): 1 node(s), 2 GPU(s) each.
# Rendered by vllm-ops. Start ray-worker.sh on every other node; this script waits for them, then
# serves with vLLM's Ray executor (pipeline stages across nodes). Secrets come from the env file.
# WARNING: vLLM listens on all interfaces (no --host): anyone who can reach the port can use it
# unless VLLM_API_KEY is set in vllm.env.
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

ray start --head --port=6379 --num-gpus=2

nodes_wanted=1
deadline=$((SECONDS + 600))
until python3 -c 'import ray, sys; ray.init(address="auto", logging_level="ERROR"); sys.exit(0 if sum(n["Alive"] for n in ray.nodes()) >= int(sys.argv[1]) else 1)' "$nodes_wanted" >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "ray-head.sh: fewer than $nodes_wanted Ray nodes joined within 600s" >&2
    exit 1
  fi
  sleep 5
done

exec vllm serve \
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
  --distributed-executor-backend ray \
  --port 8000
