#!/usr/bin/env bash
# Ray head for vLLM meta-llama/Llama-3.1-405B-Instruct (16 GPUs per replica, 1 replica): 2 node(s), 8 GPU(s) each.
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

# Network of this node. The other nodes reach it at VLLM_HOST_IP, and Gloo (and NCCL) must use the
# interface that carries that address: a loopback or 0.0.0.0 address makes the start fail or hang.
# Set them in the environment or in vllm.env (they win over the defaults below):
#   VLLM_HOST_IP        this node's address as the other nodes see it
#   GLOO_SOCKET_IFNAME  the network interface that carries it (e.g. eth0)
#   NCCL_SOCKET_IFNAME  the same for NCCL's bootstrap (the GPU traffic itself uses RDMA when present)
for name in VLLM_HOST_IP GLOO_SOCKET_IFNAME NCCL_SOCKET_IFNAME; do
  if [ -z "${!name:-}" ]; then
    echo "$(basename "$0"): $name is not set: vLLM guesses (see the network note in this script)" >&2
  fi
done

ray start --head --port=6379 --num-gpus=8 ${VLLM_HOST_IP:+"--node-ip-address=$VLLM_HOST_IP"}

nodes_wanted=2
deadline=$((SECONDS + 600))
until python3 -c 'import ray, sys; ray.init(address="auto", logging_level="ERROR"); sys.exit(0 if sum(n["Alive"] for n in ray.nodes()) >= int(sys.argv[1]) else 1)' "$nodes_wanted" >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "ray-head.sh: fewer than $nodes_wanted Ray nodes joined within 600s" >&2
    exit 1
  fi
  sleep 5
done

exec vllm serve \
  meta-llama/Llama-3.1-405B-Instruct \
  --block-size 16 \
  --data-parallel-size 1 \
  --distributed-executor-backend ray \
  --dtype auto \
  --gpu-memory-utilization 0.92 \
  --kv-cache-dtype auto \
  --max-model-len 131072 \
  --max-num-batched-tokens 8192 \
  --max-num-seqs 1024 \
  --pipeline-parallel-size 2 \
  --tensor-parallel-size 8 \
  --port 8000
