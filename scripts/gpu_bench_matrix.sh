#!/usr/bin/env bash
# Launch one model with vllm-ops on this GPU box, bench it over a grid of workloads, stop it.
# Everything lands in OUTDIR/NAME: the plan (JSON + explained text), launch JSON, one bench JSON per
# grid point, the calibration records, vLLM's full log and a trimmed one (the memory lines).
#
#   bash scripts/gpu_bench_matrix.sh OUTDIR NAME MODEL PORT "GRID" [plan/launch pins...] [-- vLLM flags]
#
# GRID: space-separated ISL:OSL:CONCURRENCY:PROMPTS[:POOL[:WARMUP]] items, e.g. "1024:128:1:6 1024:128:32:64";
#       POOL: the level's requests go over POOL distinct prompts (bench --prompt-pool), file ...-poolPOOL.json;
#       WARMUP: bench --warmup (default wave), file ...-wWARMUP.json when given ("1024:128:8:32::request");
#       an empty GRID only launches (a memory run). A short warm-up level runs before the grid.
# Needs vLLM installed where `vllm` (or VLLM_OPS_VLLM) finds it, and vllm-ops (pip install -e .,
# or PYTHONPATH=this checkout). Used for the H200 runs kept under tests/data/gpu-runs/.
set -uo pipefail
OUTDIR=${1:?outdir}; NAME=${2:?name}; MODEL=${3:?model}; PORT=${4:?port}; GRID=${5-}
shift 5
O="$OUTDIR/$NAME"; mkdir -p "$O"
export VLLM_OPS_STATE_DIR=${VLLM_OPS_STATE_DIR:-$HOME/.vllm-ops-bench-state}
PY=${PY:-python3}
vo() { "$PY" -m vllm_ops "$@"; }
# plan for the vLLM that will run (launch reads the installed version itself; plan needs it said)
VV=$("${VLLM_OPS_VLLM:-python3}" -c 'import vllm; print(vllm.__version__.split("+")[0])' 2>/dev/null | tail -1)
VVA=(); [ -n "$VV" ] && VVA=(--vllm-version "$VV")
log() { echo "=== $(date +%T) $NAME: $*" | tee -a "$O/steps.txt" >&2; }

log "plan"
vo plan --json "${VVA[@]}" --model "$MODEL" --port "$PORT" "$@" > "$O/plan.json" 2> "$O/plan.err"
echo "plan exit $?" >> "$O/steps.txt"
vo plan --explain "${VVA[@]}" --model "$MODEL" --port "$PORT" "$@" > "$O/plan.txt" 2>&1
log "launch"
t0=$(date +%s)
vo launch --model "$MODEL" --port "$PORT" --name "$NAME" --detach --no-validate --json --ready-timeout 480 "$@" \
  > "$O/launch.json" 2> "$O/launch.err"
rc=$?; echo "launch exit $rc after $(( $(date +%s) - t0 )) s" >> "$O/steps.txt"
if [ $rc = 0 ] && [ -n "$GRID" ]; then
  URL="http://127.0.0.1:$PORT"
  log "warm-up"
  vo bench --url "$URL" --concurrency 4 --num-prompts 8 --input-len 512 --output-len 32 --quiet --json \
    > "$O/bench-warmup.json" 2>> "$O/bench.err"
  for item in $GRID; do
    IFS=: read -r isl osl c n pool warm <<< "$item"
    log "bench isl=$isl osl=$osl c=$c n=$n pool=${pool:-none} warmup=${warm:-wave}"
    PA=(); SUF=""; [ -n "${pool:-}" ] && { PA=(--prompt-pool "$pool"); SUF="-pool$pool"; }
    [ -n "${warm:-}" ] && { PA+=(--warmup "$warm"); SUF="$SUF-w$warm"; }
    vo bench --url "$URL" --concurrency "$c" --num-prompts "$n" --input-len "$isl" --output-len "$osl" "${PA[@]}" \
      --plan "$O/plan.json" --quiet --json > "$O/bench-$isl-$osl-c$c$SUF.json" 2>> "$O/bench.err"
    echo "bench $item exit $?" >> "$O/steps.txt"
  done
fi
log "stop"
vo stop "$NAME" >> "$O/steps.txt" 2>&1
for f in "$VLLM_OPS_STATE_DIR"/logs/"$NAME"*.log; do
  [ -f "$f" ] || continue
  cp "$f" "$O/vllm.log"
  grep -a -E 'Model loading took|emory profiling|torch peak memory|non-torch|Available KV cache|KV cache size|Maximum concurrency|Graph capturing|CUDA graph|Estimated CUDA|Using .* Model Runner|attention backend|Free memory on device|encoder|Encoder|ValueError|Error|error:|estimated maximum model length|max_num_seqs|max_num_batched_tokens|Application startup complete|vLLM API server version|dtype|MoE backend' \
    "$f" | cut -c1-400 > "$O/vllm-trim.log"
done
cp "$VLLM_OPS_STATE_DIR"/calibration.jsonl "$O/" 2>/dev/null || true
log "done"
