#!/usr/bin/env bash
# vLLM meta-llama/Llama-3.1-405B-Instruct (16 GPUs per replica, 1 replica): vLLM's native multi-node mode, 2 nodes per replica.
# Node rank 1: run this script on node1, and each other node's script on its node.
# This rank is headless (workers only, no API server); rank 0 serves the API on port 8000.
# Rendered by vllm-ops. Rank 0 listens on MASTER_ADDR:MASTER_PORT for the other ranks (override with
# VLLM_MASTER_ADDR / VLLM_MASTER_PORT). Secrets come from the env file, never from this script.
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

node_rank=1
# rank 0's node as the plan names it: set VLLM_MASTER_ADDR if the other nodes reach it by another name or address
master_addr=node0
master_addr="${VLLM_MASTER_ADDR:-$master_addr}"
master_port="${VLLM_MASTER_PORT:-29500}"

exec vllm serve \
  meta-llama/Llama-3.1-405B-Instruct \
  --block-size 16 \
  --data-parallel-size 1 \
  --distributed-executor-backend mp \
  --dtype auto \
  --gpu-memory-utilization 0.92 \
  --kv-cache-dtype auto \
  --max-model-len 131072 \
  --max-num-batched-tokens 8192 \
  --max-num-seqs 1024 \
  --pipeline-parallel-size 2 \
  --tensor-parallel-size 8 \
  --nnodes 2 --node-rank "$node_rank" --master-addr "$master_addr" --master-port "$master_port" \
  --headless
