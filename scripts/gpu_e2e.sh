#!/usr/bin/env bash
# End-to-end run of vllm-ops on a GPU box with vLLM installed (`pip install vllm==X`, or a `vllm`
# on PATH; see GPU-TESTING-GUIDE.md). Also runs on a CPU box with the vLLM CPU build when
# MODE=cpu (a check of this script itself).
#
#   MODELS=DIR bash scripts/gpu_e2e.sh PART OUTDIR
#     PART 1: probe; Qwen2.5-7B on one GPU (plan → launch → validate → bench → stop);
#             one launch meant to fail (a max-model-len whose KV cache cannot fit) on a second GPU
#     PART 2: Llama-3.1-70B with TP=2 on both GPUs (plan → launch → validate → bench → stop)
# MODELS holds ORG__NAME folders: real checkpoints, or config.json + tokenizer only built by
# `python scripts/gpu_models.py DIR MODEL_ID...` (the runs use --load-format dummy either way).
# Everything lands in OUTDIR (plans, launch/validate/bench JSON and text, trimmed vLLM logs).
# vllm-ops runs from this checkout (`python3 -m vllm_ops`); the vLLM server is found as
# `vllm` on PATH or through VLLM_OPS_VLLM (a `vllm` executable or a Python that imports vllm).
set -uo pipefail
PART=${1:?part}; O=${2:?outdir}; mkdir -p "$O"
MODE=${MODE:-gpu}
MODELS=${MODELS:?set MODELS to a folder of ORG__NAME model folders}
export VLLM_OPS_STATE_DIR=${VLLM_OPS_STATE_DIR:-$O/state}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PY:-python3}
vo() { "$PY" -m vllm_ops "$@"; }
# plan for the vLLM that will run (launch reads it itself; plan needs it said)
vllm_version() {  # the installed vLLM's version: VLLM_OPS_VLLM or $PY as a Python, else `vllm --version`
  local py
  for py in "${VLLM_OPS_VLLM:-}" "$PY"; do
    [ -n "$py" ] && "$py" -c 'import vllm; print(vllm.__version__.split("+")[0])' 2>/dev/null && return
  done
  command -v vllm >/dev/null && vllm --version 2>/dev/null
}
VLLM_VERSION=$(vllm_version | tail -1)
VV=(); [ -n "$VLLM_VERSION" ] && VV=(--vllm-version "$VLLM_VERSION")
log() { echo "=== $(date +%T) $*" | tee -a "$O/steps.txt"; }
keep_logs() {  # trimmed vLLM logs: the lines the log parser and the planner use
  for f in "$VLLM_OPS_STATE_DIR"/logs/*.log; do
    [ -f "$f" ] || continue
    cp "$f" "$O/full-$(basename "$f")"
    grep -a -E 'Model loading took|Memory profiling|memory profiling|torch peak memory|non-torch|Available KV cache|KV cache size|Maximum concurrency|Graph capturing|CUDA graph|Estimated CUDA|init engine|Using .* Model Runner|attention backend|Free memory on device|ValueError|Error|error:|estimated maximum model length|max_num_seqs|max_num_batched_tokens|Application startup complete|vLLM API server version' \
      "$f" | cut -c1-400 > "$O/trim-$(basename "$f")"
  done
}

if [ "$MODE" = gpu ]; then
  LORA_FLAGS=(--enable-lora --max-lora-rank 8 --max-loras 2)
  DUMMY=(--load-format dummy)
else
  LORA_FLAGS=(--enable-lora --max-lora-rank 8 --max-loras 2)
  DUMMY=(--load-format dummy --enforce-eager)
fi
ENV_FLAGS=(--env VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)
LAUNCH_ONLY=()

one_model() {  # NAME MODEL_DIR PORT [pins...]
  local name=$1 model=$2 port=$3; shift 3
  log "plan $name"
  vo plan --model "$model" --port "$port" "${VV[@]}" "$@" --json -- "${DUMMY[@]}" "${LORA_FLAGS[@]}" > "$O/plan-$name.json" 2> "$O/plan-$name.err"
  echo "plan exit $?" >> "$O/steps.txt"
  vo plan --model "$model" --port "$port" "${VV[@]}" "$@" --explain -- "${DUMMY[@]}" "${LORA_FLAGS[@]}" > "$O/plan-$name.txt" 2>&1
  log "launch $name"
  vo launch --model "$model" --port "$port" --name "$name" --detach --json --ready-timeout 420 \
     "${ENV_FLAGS[@]}" "${LAUNCH_ONLY[@]}" "$@" -- "${DUMMY[@]}" "${LORA_FLAGS[@]}" > "$O/launch-$name.json" 2> "$O/launch-$name.err"
  local rc=$?; echo "launch exit $rc" >> "$O/steps.txt"
  [ $rc = 0 ] || return 1
  vo status --json > "$O/status-$name.json" 2>&1
  log "validate $name"
  vo validate --url "http://127.0.0.1:$port" --junit "$O/validate-$name.xml" > "$O/validate-$name.txt" 2>&1
  echo "validate exit $?" >> "$O/steps.txt"
  vo validate --url "http://127.0.0.1:$port" --json --quiet > "$O/validate-$name.json" 2>/dev/null
  log "bench $name"
  vo bench --url "http://127.0.0.1:$port" --concurrency 1,8,32 --num-prompts 48 --input-len 256 --output-len 64 \
     --plan "$O/plan-$name.json" --json --plot "$O/bench-$name.png" > "$O/bench-$name.json" 2> "$O/bench-$name.err"
  echo "bench exit $?" >> "$O/steps.txt"
  vo bench --url "http://127.0.0.1:$port" --concurrency 1,8 --num-prompts 16 --input-len 256 --output-len 64 \
     > "$O/bench-$name.txt" 2>&1
  log "stop $name"
  vo stop "$name" >> "$O/steps.txt" 2>&1
}

case "$PART" in
  1)
    log "probe"
    vo probe > "$O/probe.txt" 2>&1; vo probe --json > "$O/probe.json" 2>/dev/null
    command -v nvidia-smi >/dev/null && nvidia-smi > "$O/nvidia-smi.txt" 2>&1
    if [ "$MODE" = gpu ]; then
      LAUNCH_ONLY=(--replica 0)
      one_model q7 "$MODELS/Qwen__Qwen2.5-7B-Instruct" 8000
      LAUNCH_ONLY=()
      log "failure: max-model-len whose KV cache cannot fit"
      vo launch --model "$MODELS/Qwen__Qwen2.5-7B-Instruct" --port 8001 --name q7-fail --detach --no-validate \
         --replica 1 --gpu-memory-utilization 0.2 --max-model-len 32768 --ready-timeout 300 -- "${DUMMY[@]}" \
         > "$O/launch-q7-fail.txt" 2>&1
      echo "failing launch exit $?" >> "$O/steps.txt"
    else
      one_model tiny "$MODELS/tiny" 8123 --profile cpu --env VLLM_CPU_KVCACHE_SPACE=1 --max-model-len 1024
    fi
    ;;
  2)
    one_model l70 "$MODELS/meta-llama__Llama-3.1-70B-Instruct" 8000
    ;;
esac
vo stop --all >> "$O/steps.txt" 2>&1 || true
keep_logs
cp "$VLLM_OPS_STATE_DIR"/calibration.jsonl "$O/" 2>/dev/null || true
log "done part $PART"
