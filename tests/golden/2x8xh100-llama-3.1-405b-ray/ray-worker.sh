#!/usr/bin/env bash
# Ray worker for vLLM meta-llama/Llama-3.1-405B-Instruct (16 GPUs per replica, 1 replica): joins the head started by ray-head.sh.
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

head_address=node0
head_address="${RAY_HEAD_ADDRESS:-${LWS_LEADER_ADDRESS:-$head_address}}"
: "${head_address:?set RAY_HEAD_ADDRESS to the Ray head node address}"

exec ray start --address="$head_address:6379" --num-gpus=8 ${VLLM_HOST_IP:+"--node-ip-address=$VLLM_HOST_IP"} --block
