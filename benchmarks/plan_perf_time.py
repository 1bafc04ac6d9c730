"""Whole-process time of `vllm-ops plan ... --input-len --output-len --concurrency --json` (target <= 0.3 s).

    .venv/bin/python benchmarks/plan_perf_time.py [--runs N]

Runs each case N times as a fresh process (`python -m vllm_ops.cli plan ...`, offline catalog model,
simulated GPUs) and prints one JSON document: median / max wall seconds per case, and the same plan
without the workload flags for comparison (what the performance model adds).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "dense-tp2": ["--model", "Qwen/Qwen3-32B", "--gpus", "2xH100", "-tp", "2"],
    "moe-ep-tp4": ["--model", "Qwen/Qwen3-235B-A22B-FP8", "--gpus", "4xH200", "-tp", "4", "--", "--enable-expert-parallel"],
    "fp8-tp1": ["--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpus", "1xH200", "--quantization", "fp8",
                "--kv-cache-dtype", "fp8"],
}
LOADS = {"c128-4k/1k": ["--input-len", "4096", "--output-len", "1024", "--concurrency", "128"],
         "c8-1k/128": ["--input-len", "1024", "--output-len", "128", "--concurrency", "8"],
         "rate2-2k/256": ["--input-len", "2048", "--output-len", "256", "--rate", "2"]}


def one(argv: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vllm_ops.cli", "plan", *argv], env=env, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    out: dict = {"target_s": 0.3, "cases": {}}
    for name, base in CASES.items():
        extra = [] if "--" not in base else base[base.index("--"):]
        base = base if "--" not in base else base[:base.index("--")]
        plain = [one([*base, "--json", *extra]) for _ in range(a.runs)]
        out["cases"][f"{name} (no workload)"] = {"median_s": round(statistics.median(plain), 3),
                                                 "max_s": round(max(plain), 3)}
        for lname, load in LOADS.items():
            ts = [one([*base, *load, "--json", *extra]) for _ in range(a.runs)]
            out["cases"][f"{name} {lname}"] = {"median_s": round(statistics.median(ts), 3), "max_s": round(max(ts), 3)}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
