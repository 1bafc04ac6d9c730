#!/usr/bin/env bash
# vLLM's Ray executor on a box with 2 GPUs, through vllm-ops's Ray backend.
#
#   bash scripts/gpu_ray_check.sh MODEL_DIR        (OUT=DIR for the logs, default /tmp/ray-out)
#
# Prerequisites: vLLM and Ray installed for `python3` (`pip install vllm==X ray`), `ray` on PATH
# (or RAY=/path/to/ray), and MODEL_DIR a model folder (a real checkpoint, or config.json +
# tokenizer from `python scripts/gpu_models.py`; vLLM runs with --load-format dummy).
#
# What it does, each step bounded (<= 240 s): start a single-node Ray head
# (`ray start --head --num-gpus 2`) through vllm_ops.launch.ray_backend, check Ray's resources
# against a TP=2 plan BEFORE starting vLLM, start vLLM with --distributed-executor-backend ray
# (--load-format dummy), send one completion, then stop vLLM and the Ray processes it started,
# and check nothing is left. A second check asks for TP=4 on the 2-GPU cluster and expects the
# one-line refusal.
# Logs: $OUT/ray-check.log (this script), $OUT/ray-vllm.log, $OUT/ray-head.log, $OUT/ray-result.json.
set -uo pipefail
MODEL=${1:?usage: bash scripts/gpu_ray_check.sh MODEL_DIR}
OUT=${OUT:-/tmp/ray-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/ray-check.log") 2>&1
set -x
date
HERE=$(cd "$(dirname "$0")/.." && pwd)
cd "$HERE"

export VLLM_LOGGING_LEVEL=${VLLM_LOGGING_LEVEL:-INFO} RAY_USAGE_STATS_ENABLED=0
nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv
python3 -c 'import ray, vllm; print("ray", ray.__version__, "vllm", vllm.__version__)' \
  || { echo "ray-check: python3 cannot import ray and vllm (pip install vllm ray)"; exit 2; }
RAY=${RAY:-$(command -v ray || true)}
[ -n "$RAY" ] && [ -x "$RAY" ] || { echo "ray-check: no ray executable on PATH (set RAY=...)"; exit 2; }
timeout 60 "$RAY" --version

# -- the check, through vllm_ops from this checkout ------------------------------------------------
export PYTHONPATH=$HERE${PYTHONPATH:+:$PYTHONPATH}
export VO_MODEL=$MODEL VO_OUT=$OUT VO_RAY=$RAY VO_STATE=$OUT/state
rm -rf "$VO_STATE"
timeout 600 python3 - <<'PY'
import json, os, sys, time, urllib.request
from vllm_ops.errors import VllmOpsError
from vllm_ops.hardware import parse_gpu_spec
from vllm_ops.launch import ray_backend as rb
from vllm_ops.launch.launcher import LaunchFailed, LaunchOptions
from vllm_ops.launch.lifecycle import stop
from vllm_ops.launch.locate import MODULE, VllmCommand
from vllm_ops.launch.state import StateStore
from vllm_ops.models import load_model_spec
from vllm_ops.planning import plan

model, out, ray_exe = os.environ["VO_MODEL"], os.environ["VO_OUT"], os.environ["VO_RAY"]
result = {"model": model}
def show(stage, detail=""):
    print(f"[ray-check {time.strftime('%H:%M:%S')}] {stage}: {detail}", flush=True)

try:
    from vllm_ops.hardware import probe
    inv = probe()
except Exception as exc:  # noqa: BLE001
    show("probe", f"NVML probe failed ({exc}); planning for 2xH100")
    inv = parse_gpu_spec("2xH100")
spec = load_model_spec(model)
store = StateStore(os.environ["VO_STATE"])
py = sys.executable
vllm = VllmCommand((py, "-m", MODULE), "module", python=py, source="gpu_ray_check")
p2 = plan(spec, inv, pins={"tensor_parallel_size": 2, "max_model_len": 4096}, vllm_version="0.25.0",
          extra_args=["--load-format", "dummy"], served_name="ray-tp2", port=8300)
p4 = plan(spec, parse_gpu_spec("4xH100"), pins={"tensor_parallel_size": 4, "max_model_len": 4096},
          vllm_version="0.25.0", extra_args=["--load-format", "dummy"], served_name="ray-tp4", port=8301)
head = rb.RayNodeOptions(ray=ray_exe, node_ip="127.0.0.1", port=6379, num_gpus=2,
                         log_path=__import__("pathlib").Path(out) / "ray-head.log", timeout=240)
t0 = time.monotonic()
node = rb.start_head(head)
result["ray_start_s"] = round(time.monotonic() - t0, 1)
show("ray head", f"{node.address} pgid {node.pgid} in {result['ray_start_s']} s")
try:
    # 1) a plan needing more GPUs than the cluster holds: refused before vLLM starts
    t0 = time.monotonic()
    res = rb.cluster_resources(node.address, python=py, ray=ray_exe, timeout=120)
    result["cluster"] = res.total
    try:
        rb.check_resources(p4, res, node.address)
        result["refusal"] = None
    except rb.NotEnoughResources as exc:
        result["refusal"] = exc.one_line()
    show("resource check (TP=4 on 2 GPUs)", str(result["refusal"]))
    # 2) TP=2 on the Ray executor: resource check, start, one request, stop
    opts = LaunchOptions(vllm=vllm, vllm_version="0.25.0", name="ray-tp2", ready_timeout=240, store=store,
                         record_calibration=False)
    try:
        r = rb.launch_ray(p2, rb.RayLaunch(python=py, address=node.address), opts, show)
        dep = r.launch.deployment
        result.update(ready=True, ready_s=round(r.launch.ready_s, 1), actual=r.launch.actual,
                      requirement=r.requirement.describe(), argv=dep.argv)
        body = json.dumps({"model": "ray-tp2", "prompt": "Hello, my name is", "max_tokens": 8,
                           "temperature": 0}).encode()
        req = urllib.request.Request(dep.url + "/v1/completions", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            doc = json.load(resp)
        result["completion"] = {"status": resp.status, "text": doc["choices"][0]["text"],
                                "usage": doc.get("usage")}
        show("request", json.dumps(result["completion"]))
        stop(dep, store, grace=30)
        result["vllm_stopped"] = True
    except LaunchFailed as exc:
        result.update(ready=False, error=exc.one_line(),
                      diagnosis=exc.diagnosis.to_dict() if exc.diagnosis else None)
        show("launch failed", exc.one_line())
    except VllmOpsError as exc:
        result.update(ready=False, error=exc.one_line())
        show("error", exc.one_line())
finally:
    killed = rb.stop_nodes([node], grace=20)
    result["ray_stopped"] = {"pgid": node.pgid, "sigkill": bool(killed),
                             "left": len(__import__("vllm_ops.launch.procs", fromlist=["x"]).group_members(node.pgid))}
    log = store.log_path("ray-tp2")
    if log.exists():
        import shutil
        shutil.copy(log, os.path.join(out, "ray-vllm.log"))
    with open(os.path.join(out, "ray-result.json"), "w") as f:
        json.dump(result, f, indent=2, default=str)
    show("result", json.dumps(result, default=str)[:2000])
sys.exit(0 if result.get("ready") and result.get("refusal") else 1)
PY
rc=$?
set +x
echo "ray-check: python step exit status $rc"
# nothing of Ray or vLLM may be left
left=$(ps -eo pid,args | grep -E 'raylet|gcs_server|vllm.entrypoints|ray::' | grep -v grep || true)
if [ -n "$left" ]; then
  # reported, not killed: on a shared box they may belong to someone else's Ray
  echo "ray-check: Ray or vLLM processes still running (check whether this run left them):"; echo "$left"
  [ $rc = 0 ] && rc=1
else
  echo "ray-check: no Ray or vLLM process left"
fi
grep -a -E 'Model loading took|Available KV cache|KV cache size|Maximum concurrency|ray|Ray' "$OUT/ray-vllm.log" 2>/dev/null | cut -c1-300 | head -40
# Ray's own daemon logs, small ones only (for a failed placement or a dead raylet)
mkdir -p "$OUT/ray-session-logs"
for f in raylet.out raylet.err gcs_server.out gcs_server.err; do
  tail -c 200000 "/tmp/ray/session_latest/logs/$f" > "$OUT/ray-session-logs/$f" 2>/dev/null || true
done
date
exit $rc
