"""Predicted beside measured: `vllm-ops bench --plan plan.json` runs the performance model
(vllm_ops/planning/performance.py) for every level and writes each (predicted, measured) pair to the
calibration records (``kind: "perf"`` lines of ``calibration.jsonl``; see launch/calibration.py),
which a later ``vllm-ops plan`` at the same load shows as ``performance.measured``.

The prediction is per replica: the bench URL is assumed to reach one replica of the plan.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from vllm_ops.errors import VllmOpsError
from vllm_ops.loadtest.report import one_time_cost_warning, read_plan_file
from vllm_ops.planning.perf_fit import BENCH_OUTPUT_SPREAD
from vllm_ops.planning import performance
from vllm_ops.planning.performance import Workload, model_spec_of
from vllm_ops.planning.plan import Plan


def full_plan(doc: dict[str, Any]):
    """The Plan of a plan document (:func:`vllm_ops.loadtest.report.read_plan_file`), or None
    when the document is not a whole plan (only the limits `bench` reads)."""
    try:
        return Plan.from_dict(doc) if "model" in doc else None
    except (ValueError, TypeError, KeyError):
        return None


def load_full_plan(path: str | Path):
    """The Plan in a plan file (or a deployment state file that embeds one), or None when the
    file is not a whole plan."""
    try:
        return full_plan(read_plan_file(path))
    except VllmOpsError:
        return None


def measured_of(level: Any) -> dict[str, Any]:
    return {"ttft_ms": level.ttft_ms.mean, "tpot_ms": level.tpot_ms.mean,
            "output_tokens_per_s": level.output_throughput, "requests_per_s": level.request_throughput}


def compare(plan: Any, report: Any, *, record: bool = True, state_dir: Any = None) -> list[dict[str, Any]]:
    """One row per level: ``{"level", "predicted", "measured", "reason"}``; with ``record``, each
    level with a prediction and measured figures becomes a calibration record."""
    rows = []
    spec = model_spec_of(plan)[0]          # once for every level (None: predict says why)
    for lv in report.levels:
        row: dict[str, Any] = {"level": lv.label, "measured": measured_of(lv), "predicted": None, "reason": None}
        rate = lv.request_rate
        if report.dataset:
            row["reason"] = "prompts from a dataset have varying lengths: no prediction"
        elif rate is not None and math.isinf(rate):
            row["reason"] = "rate=inf sends every request at once: no prediction"
        else:
            hit = lv.server.prefix_cache_hit_rate if lv.server is not None else None
            w = Workload(report.input_len, report.output_len, concurrency=lv.concurrency,
                         rate=None if lv.concurrency is not None else rate, num_requests=lv.num_requests or None,
                         prefix_cache_hit=min(max(float(hit or 0.0), 0.0), 1.0),
                         output_spread=BENCH_OUTPUT_SPREAD)
            perf = performance.predict(plan, w, spec=spec)      # looked up per call (tests stand it in)
            row["predicted"] = {k: getattr(perf, k) for k in ("ttft_ms", "tpot_ms", "output_tokens_per_s",
                                                              "requests_per_s", "bound")}
            row["reason"] = perf.reason
            one_time = one_time_cost_warning(lv)
            if one_time:
                row["note"] = "measured TTFT not recorded for calibration: a few requests paid a one-time cost " \
                              "(the level's warning says more)"
            if record and lv.completed and perf.tpot_ms is not None:
                from vllm_ops.launch import calibration

                wl = {"input_len": w.input_len, "output_len": w.output_len, "concurrency": w.concurrency,
                      "rate": w.rate, "num_requests": w.num_requests, "prefix_cache_hit": w.prefix_cache_hit}
                calibration.append(calibration.make_perf_record(plan, wl, row["predicted"], row["measured"],
                                                                ttft_paid_once=bool(one_time)), state_dir)
        rows.append(row)
    return rows


def print_comparison(rows: list[dict[str, Any]], console: Any) -> None:
    from rich.table import Table

    t = Table(title="predicted (plan) vs measured, per level (mean TTFT / TPOT)", title_justify="left")
    for col in ("level", "TTFT ms pred/meas", "TPOT ms pred/meas", "out tok/s pred/meas", "bound (pred)"):
        t.add_column(col, justify="right" if col != "level" else "left")

    def pair(p: Any, m: Any) -> str:
        f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        err = f" ({(p - m) / m * 100:+.0f}%)" if p is not None and m else ""
        return f"{f(p)}/{f(m)}{err}"

    for r in rows:
        p, m = r["predicted"] or {}, r["measured"]
        t.add_row(r["level"], pair(p.get("ttft_ms"), m["ttft_ms"]), pair(p.get("tpot_ms"), m["tpot_ms"]),
                  pair(p.get("output_tokens_per_s"), m["output_tokens_per_s"]), str(p.get("bound") or r["reason"]))
    console.print(t)
    for r in rows:
        if r.get("note"):
            console.print(f"[yellow]{r['level']}: {r['note']}[/]")
