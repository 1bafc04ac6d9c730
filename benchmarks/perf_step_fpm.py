"""Held-out check of the performance model's step cost on a published table no fit has read: per-forward-pass
times of vLLM 0.20.1 serving Qwen/Qwen3-32B (bf16) on NVIDIA B300 GPUs at TP 1/2/4/8.

Data: tests/data/perf/fpm-b300-qwen3-32b.csv (provenance in tests/data/perf/README.md): NVIDIA's aiconfigurator
"FPM golden runs" (ai-dynamo/aiconfigurator, fpm_golden_runs/fpm_upfront_qwen32_full_once_20260613_194007), the
controlled sweep of each TP: a step of one or more prefill chunks (``chunks``: tokens@prefix each), ``decode_requests``
decoding over ``decode_kv_tokens`` cached tokens in all; ``latency_ms``: every repeat of that exact step the sweep
ran (Dynamo's InstrumentedScheduler: the time between two engine outputs, i.e. the step's period with async
scheduling). Nothing here was fitted to these rows, and no GPU of the Blackwell generation is in any fit.

What the model is given: the shipped constants (``shipped``, fitted on rows that include Qwen3-32B on H100/H200) and
the fold fitted without the Qwen3-32B family (``held-out``), each as the public rows' harness sees them (Dynamo, not
vLLM's API server, streams the tokens: no per-token API floor), async scheduling (vLLM 0.20.1's default), on the
catalog's B200: the HGX B300 datasheet gives B300 the same dense BF16 (2.25 PFLOP/s), FP8 (4.5), HBM bandwidth
(8 TB/s) and NVLink (1.8 TB/s) per GPU; B300's faster attention softmax (NVIDIA: "2x attention performance") is not
in the model. Beside it, the roofline floor (every term at 100 % of the peaks, no overhead): what a plain roofline
calculator would answer.

    python benchmarks/perf_step_fpm.py [--json]
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from perf_model_accuracy import _q, held_out_efficiency  # noqa: E402  (the accuracy benchmark's quantile and folds)

DATA = ROOT / "tests" / "data" / "perf" / "fpm-b300-qwen3-32b.csv"
MODEL = "Qwen/Qwen3-32B"
VLLM = "0.20.1"
GPU = "B200"          # the catalog entry whose step-model figures B300 shares (see the module doc)


def load_rows(path: Path = DATA) -> list[dict[str, Any]]:
    """The table's rows, with ``chunks`` as (tokens, prefix) pairs and ``latency_ms`` as the list of repeats."""
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            chunks = [tuple(int(x) for x in c.split("@")) for c in r["chunks"].split(";") if c]
            rows.append({"tp": int(r["tp"]), "shape": r["shape"], "chunks": chunks,
                         "n_dec": int(r["decode_requests"]), "sum_ctx": float(r["decode_kv_tokens"]),
                         "samples": [float(x) for x in r["latency_ms"].split(";")]})
    return rows


def prefill_context(chunks: list[tuple[int, int]]) -> float:
    """Sum over a step's prefill tokens of the context each attends to (itself and the tokens before it)."""
    return float(sum(t * p + t * (t + 1) / 2 for t, p in chunks))


def step_costs(eff) -> dict[int, Any]:
    """The step cost model of a Qwen3-32B replica at each TP, with efficiencies ``eff`` (harness view)."""
    from vllm_ops.hardware import parse_gpu_spec
    from vllm_ops.models import load_model_spec
    from vllm_ops.planning import plan
    from vllm_ops.planning.performance import step_cost

    spec = load_model_spec(MODEL, offline=True)
    out = {}
    for tp in (1, 2, 4, 8):
        p = plan(spec, parse_gpu_spec(f"{tp}x{GPU}"), pins={"tensor_parallel_size": tp}, vllm_version=VLLM)
        cost, why = step_cost(p, spec, eff.through_harness())
        if cost is None:
            raise SystemExit(f"no step cost for TP {tp}: {why}")
        out[tp] = cost
    return out


def predictions(rows: list[dict[str, Any]], costs: dict[int, Any]) -> list[dict[str, Any]]:
    """Each row's measured median step time beside the model's and the roofline floor's."""
    out = []
    for r in rows:
        cost = costs[r["tp"]]
        n_pre, pre_ctx = sum(t for t, _p in r["chunks"]), prefill_context(r["chunks"])
        pred = cost.step_ms(r["n_dec"], r["sum_ctx"], n_pre, pre_ctx)
        floor = cost.floor_ms(r["n_dec"], r["sum_ctx"], n_pre, pre_ctx)
        meas = statistics.median(r["samples"])
        out.append({"tp": r["tp"], "shape": r["shape"], "measured_ms": round(meas, 3), "repeats": len(r["samples"]),
                    "predicted_ms": round(pred, 3), "error_pct": round(100 * (pred - meas) / meas, 1),
                    "roofline_ms": round(floor, 3), "roofline_error_pct": round(100 * (floor - meas) / meas, 1)})
    return out


def summary(rows: list[dict[str, Any]], key: str = "error_pct") -> dict[str, Any]:
    """Median and p90 absolute % error, pooled and per kind of step (prefill only, decode only, mixed)."""
    def kind(shape: str) -> str:
        return "prefill" if shape.startswith("ctx") else "decode" if shape.startswith("dec") else "mixed"

    def stats(xs: list[float]) -> dict[str, float]:
        xs = [abs(x) for x in xs]
        return {"rows": len(xs), "median": round(_q(xs, 0.5), 1), "p90": round(_q(xs, 0.9), 1)}

    out = {"all": stats([r[key] for r in rows])}
    for k in ("prefill", "decode", "mixed"):
        out[k] = stats([r[key] for r in rows if kind(r["shape"]) == k])
    return out


def run() -> dict[str, Any]:
    """The held-out comparison: per row and summed up, for the shipped constants and the fold without Qwen3-32B."""
    from vllm_ops.planning import perf_fit

    rows = load_rows()
    doc: dict[str, Any] = {"data": str(DATA.relative_to(ROOT)), "gpu_model": f"{GPU} figures for B300",
                           "vllm": VLLM, "fitted_on_these_rows": False}
    for name, eff in (("shipped", perf_fit.EFFICIENCY), ("held-out", held_out_efficiency(MODEL))):
        preds = predictions(rows, step_costs(eff))
        doc[name] = {"rows": preds, "model": summary(preds), "roofline": summary(preds, "roofline_error_pct")}
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    doc = run()
    if a.json:
        print(json.dumps(doc, indent=1))
        return 0
    print(f"Qwen3-32B on B300 (vLLM {VLLM}), per step: measured median vs the model (no fit read these rows)")
    print(f"{'TP':>2} {'shape':10} {'n':>2} {'measured':>9} {'held-out':>9} {'err %':>6} {'shipped':>9} {'err %':>6} "
          f"{'roofline':>9} {'err %':>6}")
    for h, s in zip(doc["held-out"]["rows"], doc["shipped"]["rows"]):
        print(f"{h['tp']:>2} {h['shape']:10} {h['repeats']:>2} {h['measured_ms']:>9.2f} {h['predicted_ms']:>9.2f} "
              f"{h['error_pct']:>+6.1f} {s['predicted_ms']:>9.2f} {s['error_pct']:>+6.1f} {h['roofline_ms']:>9.2f} "
              f"{h['roofline_error_pct']:>+6.1f}")
    for name in ("held-out", "shipped"):
        for what in ("model", "roofline"):
            sm = doc[name][what]
            parts = "  ".join(f"{k} {v['median']} ({v['p90']})" for k, v in sm.items())
            print(f"{name:8} {what:8} abs % error, median (p90): {parts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
