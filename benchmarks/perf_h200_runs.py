"""The performance model against our own real H200 runs (tests/data/gpu-runs/h200x1/perf/).

    python benchmarks/perf_h200_runs.py [--json]

Each run is re-planned for vLLM 0.25.0 on 1x the H200's torch total with the flags it ran with, and every
measured `vllm-ops bench` level (ISL, OSL, concurrency, number of prompts: first wave included) is predicted
with the same request count. HELD-OUT: the model's constants (vllm_ops/data/perf/fit.json) were fitted on the
public rows in tests/data/perf/ only; none of these runs was used to fit anything.
Prints predicted vs measured mean TTFT, mean TPOT and output tokens/s, and the median/p90 absolute errors.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RUNS = REPO / "tests" / "data" / "gpu-runs" / "h200x1"
MODELS = {"q7": "Qwen/Qwen2.5-7B-Instruct", "q30fp8": "Qwen/Qwen3-30B-A3B-FP8"}


def levels():
    for run, model in MODELS.items():
        for f in sorted((RUNS / "perf" / run).glob("bench-*.json")):
            doc = json.loads(f.read_text())
            for lv in doc["levels"]:
                yield run, model, doc["input_len"], doc["output_len"], lv


def rows() -> list[dict]:
    from vllm_ops.hardware import parse_gpu_spec
    from vllm_ops.models import load_model_spec
    from vllm_ops.planning import plan
    from vllm_ops.planning.performance import Workload, predict

    inv = parse_gpu_spec("1xH200")
    plans, out = {}, []
    for run, model, isl, osl, lv in levels():
        if run not in plans:
            spec = load_model_spec(model, offline=True)
            plans[run] = (plan(spec, inv, pins={"max_num_seqs": 1024, "max_num_batched_tokens": 8192},
                               vllm_version="0.25.0", extra_args=["--load-format", "dummy"]), spec)
        p, spec = plans[run]
        w = Workload(isl, osl, concurrency=int(lv["concurrency"]), num_requests=int(lv["num_requests"]))
        perf = predict(p, w, spec=spec)
        out.append({"run": run, "isl": isl, "osl": osl, "c": lv["concurrency"], "n": lv["num_requests"],
                    "ttft": (perf.ttft_ms, lv["ttft_ms"]["mean"]), "tpot": (perf.tpot_ms, lv["tpot_ms"]["mean"]),
                    "tok_s": (perf.output_tokens_per_s, lv["output_throughput"]), "bound": perf.bound,
                    "reason": perf.reason})
    return out


def _err(pair) -> float | None:
    p, m = pair
    return None if p is None or not m else abs(p - m) / m * 100


def main() -> int:
    rs = rows()
    if "--json" in sys.argv:
        print(json.dumps(rs, indent=1))
        return 0
    print("HELD-OUT (no H200 run was used to fit the performance model)")
    print(f"{'run':7} {'ISL':>5} {'OSL':>5} {'C':>4} {'N':>4} | {'TTFT ms pred/meas':>20} | "
          f"{'TPOT ms pred/meas':>18} | {'tok/s pred/meas':>18} | bound")
    for r in rs:
        f = lambda pair, k=1: "-" if pair[0] is None else f"{pair[0]:.{k}f}/{pair[1]:.{k}f}"  # noqa: E731
        print(f"{r['run']:7} {r['isl']:5} {r['osl']:5} {r['c']:4} {r['n']:4} | {f(r['ttft']):>20} | "
              f"{f(r['tpot'], 2):>18} | {f(r['tok_s'], 0):>18} | {r['bound'] or r['reason']}")
    for key in ("ttft", "tpot", "tok_s"):
        errs = sorted(e for e in (_err(r[key]) for r in rs) if e is not None)
        if errs:
            p90 = errs[min(len(errs) - 1, int(round(0.9 * (len(errs) - 1))))]
            print(f"{key}: answered {len(errs)}/{len(rs)}, median abs error {statistics.median(errs):.1f}%, "
                  f"p90 {p90:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
