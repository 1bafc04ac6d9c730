"""The performance model against our own real H200 runs (tests/data/gpu-runs/h200x1/perf/).

    python benchmarks/perf_h200_runs.py [--json]

Each run's plan.json (re-planned for vLLM 0.25.0 with the flags it ran with) and every measured
`vllm-ops bench` level (ISL, OSL, concurrency, number of prompts: first wave included) is predicted
with the same request count. HELD-OUT: each run is predicted with the constants fitted WITHOUT its model's rows
(vllm_ops/data/perf/fit.json ``held_out["gpu:<model>"]``: the public rows in tests/data/perf/ and the other
runs here, leave-one-model-out); a model measured after the fit (in no fold and not among the rows the shipped
constants were fitted on) is predicted with those constants and is held-out too; any other is marked in-sample.
Prints predicted vs measured mean TTFT, mean TPOT and output tokens/s, and the median/p90 absolute errors.
"""
from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _accuracy_module():
    """benchmarks/perf_model_accuracy.py, which owns loading the runs as cases (``gpu_cases``)."""
    spec = importlib.util.spec_from_file_location("perf_model_accuracy", REPO / "benchmarks" / "perf_model_accuracy.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("perf_model_accuracy", mod)
    spec.loader.exec_module(mod)
    return mod


def rows() -> list[dict]:
    """One row per measured level: the run's plan (``plan.json``: vLLM 0.25.0, the flags it ran with) and the
    benchmark's own request count, predicted with the fitted constants."""
    from vllm_ops.planning import perf_fit

    acc = _accuracy_module()
    out = []
    for c in acc.gpu_cases():
        fold = perf_fit.HELD_OUT.get(f"gpu:{c.model}")
        for _c, perf in acc.predict_all([c], fold["efficiency"] if fold else None):
            w = c.workload
            out.append({"run": c.name.split("/", 1)[0], "isl": w.input_len, "osl": w.output_len,
                        "c": w.concurrency, "n": w.num_requests, "hit": round(w.prefix_cache_hit, 3),
                        "held_out": fold is not None or c.model not in perf_fit.FITTED_MODELS,
                        "ttft": (perf.ttft_ms, c.ttft_ms), "tpot": (perf.tpot_ms, c.tpot_ms),
                        "tok_s": (perf.output_tokens_per_s, c.out_tok_s), "bound": perf.bound,
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
    print("held-out: constants fitted without the run's model (leave-one-model-out); in-sample: fitted on every row")
    print("hit: fraction of prompt tokens vLLM's prefix cache served (measured; runs before bench drew new prompts "
          "per level: replayed from their fixed-seed prompts)")
    print(f"{'run':7} {'kind':9} {'ISL':>5} {'OSL':>5} {'C':>4} {'N':>5} {'hit':>4} | {'TTFT ms pred/meas':>20} | "
          f"{'TPOT ms pred/meas':>18} | {'tok/s pred/meas':>18} | bound")
    for r in rs:
        f = lambda pair, k=1: "-" if pair[0] is None else f"{pair[0]:.{k}f}/{pair[1]:.{k}f}"  # noqa: E731
        kind = "held-out" if r["held_out"] else "in-sample"
        print(f"{r['run']:7} {kind:9} {r['isl']:5} {r['osl']:5} {r['c']:4} {r['n']:5} {r['hit']:4.2f} | {f(r['ttft']):>20} | "
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
