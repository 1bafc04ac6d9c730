"""Does `plan --slo` choose the tensor-parallel size that serves the most? Checked on public runs.

Data: the public measured vLLM serving runs vendored with the performance model
(vllm-perf-public.csv: NVIDIA aiconfigurator's vLLM rows; provenance in the README beside it).
Rows are grouped by (model, system, ISL, OSL, concurrency); a group with several TP sizes measured
is a question: given as many GPUs as the largest TP measured (replicas of the smaller ones, each
server at the row's concurrency, as measured) and a TPOT target, which TP serves the most output
tokens per second per GPU within the target?

Per group, targets are relative to the group's fastest measured TPOT (x1.1, x1.25, x1.5, x2, x3)
plus no target at all, so every case has a measured layout within it. Measured per-GPU goodput of a
layout: OSL x C / (TTFT + (OSL - 1) x TPOT) / TP when its measured TPOT meets the target, else 0.
The choice: the `plan --slo` search (planning/slo.py) on the same GPUs with each server at the
row's concurrency (``split=False``), KV dtype and weights as measured, max-num-seqs and
max-num-batched-tokens left to the planner (the runs used vLLM's defaults), restricted to the TP
sizes measured. A case counts as "within 10%" when the chosen TP's measured goodput is at least
0.9 x the best measured. Fixed rules for comparison: always the smallest TP, always the largest.

Held-out (the default): each model's cases are predicted with the efficiencies fitted WITHOUT
that model's rows (fit.json ``held_out``, loaded as planning/perf_fit.py HELD_OUT["public:<model>"],
passed to the search as ``efficiency=``). A model with no such fold is predicted with the shipped
efficiencies, reported as in-sample and left out of the held-out figure. ``--in-sample`` also
prints the figure with the shipped efficiencies (fitted on every row of this file, this model's
included) beside it.

    python benchmarks/slo_choice_public.py [--in-sample] [--json] [--verbose]
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CSV_PATHS = (ROOT / "vllm_ops" / "data" / "perf" / "vllm-perf-public.csv",
             ROOT / "tests" / "data" / "perf" / "vllm-perf-public.csv")
GPUS = {"h100_sxm": "H100", "h200_sxm": "H200"}
# a published checkpoint → the catalog model with the same architecture + the pin that loads it the same way
FOLD_SET = "public"          # perf_fit.HELD_OUT keys are "<measurement set>:<model id>"
RULES = ("search", "smallest", "largest")
MODELS = {"nvidia/Llama-3.1-8B-Instruct-FP8": ("meta-llama/Llama-3.1-8B-Instruct", "fp8")}
TARGET_FACTORS = (1.1, 1.25, 1.5, 2.0, 3.0, math.inf)
WITHIN = 0.9
GOAL = 0.85


def _csv() -> Path:
    for p in CSV_PATHS:
        if p.exists():
            return p
    raise SystemExit("vllm-perf-public.csv is not vendored in this checkout (it comes with the performance model)")


def groups(path: Path) -> dict[tuple, dict[int, dict[str, Any]]]:
    """(model, system, isl, osl, concurrency, precision) → {tp: row} for dense-TP aggregated rows."""
    out: dict[tuple, dict[int, dict[str, Any]]] = defaultdict(dict)
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["mode"] != "agg" or not r["tp_size"] or not r["batch_size"]:
                continue
            if int(r["moe_ep_size"] or 1) > 1 or r["attention_dp_size"] not in ("", "1"):
                continue
            key = (r["model_path"], r["system"], int(r["isl"]), int(r["osl"]), int(r["batch_size"]),
                   r["gemm_quant_mode"] or "bf16", r["backend_version"] or "0.12.0")
            out[key][int(r["tp_size"])] = r
    return {k: v for k, v in out.items() if len(v) >= 2}


def measured_goodput(row: dict[str, Any], osl: int, c: int, tp: int, target: float) -> float:
    ttft, tpot = float(row["silicon_ttft_ms"]), float(row["silicon_tpot_ms"])
    if tpot > target:
        return 0.0
    return osl * c / ((ttft + (osl - 1) * tpot) / 1000.0) / tp


def fold(model: str) -> tuple[Any, list[str] | None]:
    """(efficiency fitted without ``model``, the models it was fitted on), or (None, None) when
    fit.json has no such fold (then the shipped, in-sample efficiencies apply)."""
    from vllm_ops.planning import perf_fit

    f = perf_fit.HELD_OUT.get(f"{FOLD_SET}:{model}")
    return (f["efficiency"], list(f["fitted_on"])) if f else (None, None)


def search_group(key: tuple, efficiency: Any = None) -> Any:
    """The `plan --slo` search for one group (each server at the row's concurrency), predicting
    with ``efficiency`` (None: the shipped efficiencies)."""
    from vllm_ops.hardware import parse_gpu_spec
    from vllm_ops.models import load_model_spec
    from vllm_ops.planning.performance import Workload
    from vllm_ops.planning.slo import SLO, search

    model, system, isl, osl, c, quant, version, max_tp = key
    cat_model, q = MODELS.get(model, (model, None))
    spec = load_model_spec(cat_model, offline=True)
    pins: dict[str, Any] = {"kv_cache_dtype": "auto"}
    if (q or quant == "fp8") and not spec.quantization:
        pins["quantization"] = q or "fp8"
    from vllm_ops.planning import perf_fit

    eff = (efficiency or perf_fit.EFFICIENCY).through_harness()     # the public rows' harness latency
    return search(spec, parse_gpu_spec(f"{max_tp}x{GPUS[system]}"), SLO(tpot_ms=1e9),
                  Workload(isl, osl, concurrency=c), pins=pins, vllm_version=version, split=False,
                  efficiency=eff)


HEADROOM: float | None = None     # --headroom: None = what `plan --slo` uses by default (slo.default_headroom)


def headroom() -> float:
    """The TPOT headroom the choice is made with: `plan --slo`'s default (the model's held-out median TPOT error on
    models in no fit, from accuracy.json - not from these rows) unless --headroom says otherwise."""
    from vllm_ops.planning.slo import default_headroom

    return default_headroom()["tpot_ms"] if HEADROOM is None else HEADROOM


def choose(res: Any, tps: list[int], target: float) -> tuple[int | None, dict[int, Any]]:
    """The TP the search picks among ``tps`` under ``target`` (None when it predicts none), and
    each TP's candidate (its first default-flag one: the runs used vLLM's defaults)."""
    from vllm_ops.planning.slo import SLO, with_slo

    res = with_slo(res, SLO(tpot_ms=target if math.isfinite(target) else 1e9, tpot_headroom=headroom()))
    by_tp: dict[int, Any] = {}
    for cand in res.candidates:
        if cand.tensor_parallel_size in tps and cand.pipeline_parallel_size == 1 and not cand.changed:
            by_tp.setdefault(cand.tensor_parallel_size, cand)
    ranked = sorted(by_tp.values(), key=lambda x: x.rank)
    predicted = [x for x in ranked if x.performance and x.performance.get("tpot_ms") is not None]
    return (predicted[0].tensor_parallel_size if predicted else None), by_tp


def evaluate(verbose: bool = False, in_sample: bool = False) -> dict[str, Any]:
    """The held-out figure (each model with its own fold; models without one apart, in-sample) and,
    with ``in_sample``, the figure with the shipped efficiencies beside it."""
    held, apart, shipped = [], [], []
    for key, rows in sorted(groups(_csv()).items()):
        eff, fitted_on = fold(key[0])
        cases = group_cases(key, rows, eff, verbose)
        for case in cases:
            case["fitted_on"] = fitted_on
        (held if eff is not None else apart).extend(cases)
        if in_sample:
            shipped.extend(cases if eff is None else group_cases(key, rows, None, verbose))
    out = {"held_out": summarize(held), "goal": GOAL,
           "in_sample_only": summarize(apart) if apart else None,
           "in_sample": summarize(shipped) if in_sample else None,
           "fitted_on_all": _fitted_on_all()}
    h = out["held_out"]["within_10pct_share"]
    out["meets_goal"] = bool(held) and h["search"] >= GOAL and h["search"] > max(h["smallest"], h["largest"])
    return out


def group_cases(key: tuple, rows: dict[int, dict[str, Any]], eff: Any, verbose: bool) -> list[dict[str, Any]]:
    """One case per TPOT target for one group, the search predicting with ``eff``."""
    model, system, isl, osl, c = key[:5]
    tps = sorted(rows)
    fastest = min(float(r["silicon_tpot_ms"]) for r in rows.values())
    res = search_group((*key, max(tps)), eff)
    cases = []
    for f in TARGET_FACTORS:
        target = fastest * f
        meas = {tp: measured_goodput(rows[tp], osl, c, tp, target) for tp in tps}
        best = max(meas.values())
        chosen, cands = choose(res, tps, target)
        case = {"model": model, "system": system, "isl": isl, "osl": osl, "concurrency": c, "tps": tps,
                "target_tpot_ms": round(target, 2) if math.isfinite(target) else None, "factor": f,
                "measured_goodput": {tp: round(v, 1) for tp, v in meas.items()},
                "best_tp": max(meas, key=meas.get), "chosen_tp": chosen,
                "predicted_tpot_ms": {tp: _tpot(x) for tp, x in cands.items()},
                "measured_tpot_ms": {tp: float(rows[tp]["silicon_tpot_ms"]) for tp in tps}}
        for rule, tp in (("search", chosen), ("smallest", tps[0]), ("largest", tps[-1])):
            case[rule] = tp is not None and meas[tp] >= WITHIN * best
        cases.append(case)
        if verbose:
            print(json.dumps(case), file=sys.stderr)
    return cases


def _tpot(cand: Any) -> float | None:
    t = (cand.performance or {}).get("tpot_ms")
    return None if t is None else round(float(t), 2)


def _share(cases: list[dict[str, Any]]) -> dict[str, float]:
    return {rule: (round(sum(c[rule] for c in cases) / len(cases), 3) if cases else 0.0) for rule in RULES}


def _fitted_on_all() -> str:
    try:
        from vllm_ops.planning import perf_fit

        return str(getattr(perf_fit, "FITTED_ON", "unknown"))
    except ImportError:
        return "unknown (perf_fit not present)"


def summarize(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Shares of cases within 10% of the best measured: pooled, per model and per TPOT target."""
    models = sorted({c["model"] for c in cases})
    by_factor: dict[str, float] = {}
    for f in TARGET_FACTORS:
        sel = [c for c in cases if c["factor"] == f]
        if sel:
            by_factor["none" if math.isinf(f) else f"x{f:g}"] = _share(sel)["search"]
    per_model = {}
    for m in models:
        sel = [c for c in cases if c["model"] == m]
        per_model[m] = {"cases": len(sel), "within_10pct_share": _share(sel), "fitted_on": sel[0].get("fitted_on")}
    return {"cases": len(cases),
            "groups": len({(c["model"], c["system"], c["isl"], c["osl"], c["concurrency"]) for c in cases}),
            "models": models, "within_10pct_share": _share(cases), "per_model": per_model,
            "search_share_by_target": by_factor, "unanswered": sum(1 for c in cases if c["chosen_tp"] is None),
            "detail": cases}


def _line(label: str, s: dict[str, float], n: int) -> str:
    return (f"  {label}: search {s['search']:.0%}, always smallest TP {s['smallest']:.0%}, "
            f"always largest TP {s['largest']:.0%} ({n} cases)")


def report(out: dict[str, Any]) -> list[str]:
    """The text report: held-out per model and pooled, in-sample beside when asked."""
    h = out["held_out"]
    lines = [f"chosen TP within 10% of the best measured per-GPU goodput (goal >= {GOAL:.0%} and better than "
             f"both fixed rules), {len(TARGET_FACTORS)} TPOT targets per group"]
    lines.append(f"HELD-OUT (each model predicted with the efficiencies fitted without it): {h['cases']} cases, "
                 f"{h['groups']} groups, {h['unanswered']} unanswered; meets the goal: {out['meets_goal']}")
    for m, pm in h["per_model"].items():
        lines.append(_line(f"{m} (fitted on {', '.join(pm['fitted_on'] or [])})", pm["within_10pct_share"],
                           pm["cases"]))
    lines.append(_line("pooled", h["within_10pct_share"], h["cases"]))
    lines.append("  search by TPOT target (x the group's fastest measured TPOT): "
                 + ", ".join(f"{k} {v:.0%}" for k, v in h["search_share_by_target"].items()))
    if out["in_sample_only"]:
        a = out["in_sample_only"]
        lines.append(f"IN-SAMPLE ONLY (no held-out fold in fit.json; not in the held-out figure): "
                     f"{', '.join(a['models'])}")
        lines.append(_line("pooled", a["within_10pct_share"], a["cases"]))
    if out["in_sample"]:
        i = out["in_sample"]
        lines.append(f"IN-SAMPLE (shipped efficiencies, fitted on {out['fitted_on_all']}):")
        for m, pm in i["per_model"].items():
            lines.append(_line(m, pm["within_10pct_share"], pm["cases"]))
        lines.append(_line("pooled", i["within_10pct_share"], i["cases"]))
    for c in [c for c in h["detail"] if not c["search"]][:12]:
        lines.append(f"  held-out miss: {c['model']} {c['system']} {c['isl']}/{c['osl']} c={c['concurrency']} "
                     f"target {c['target_tpot_ms']} ms: chose TP{c['chosen_tp']}, best TP{c['best_tp']}; goodput "
                     f"{c['measured_goodput']}; TPOT predicted {c['predicted_tpot_ms']} measured "
                     f"{ {tp: round(v, 2) for tp, v in c['measured_tpot_ms'].items()} }")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--in-sample", action="store_true",
                    help="also the figure with the shipped efficiencies (fitted on these rows), beside")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--verbose", action="store_true", help="one JSON line per case on stderr")
    ap.add_argument("--headroom", default="auto", metavar="auto|PCT",
                    help="the TPOT headroom of the choice (auto: plan --slo's default)")
    args = ap.parse_args()
    if args.headroom != "auto":
        from vllm_ops.planning.slo import parse_headroom

        globals()["HEADROOM"] = parse_headroom(args.headroom)["tpot_ms"]   # plan --slo-headroom's own parsing
    out = evaluate(args.verbose, args.in_sample)
    out["tpot_headroom"] = headroom()
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print("\n".join(report(out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
