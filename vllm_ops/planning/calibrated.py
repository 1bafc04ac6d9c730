"""A plan next to what vLLM measured: ``vllm-ops plan`` reads the calibration records launches write.

When a record in ``<state_dir>/calibration.jsonl`` (:mod:`vllm_ops.launch.calibration`) matches the
plan's model id, hardware (GPU name, GPUs per replica, memory), vLLM version and memory-relevant
flags, the plan uses the measured figures: ``plan.memory`` takes the record's ``actual`` values,
``plan.calibration`` keeps ``{"source", "ts", "predicted", "measured"}`` (predicted = this plan's
own figures), a ``calibrated`` warning and an explain line say so, and — vLLM having started with
exactly these flags here — ``fits`` is true. Flags vLLM takes after ``--`` (LoRA, multimodal
limits) are not part of the match; the warning says which record was used. Standard library only.
"""
from __future__ import annotations

import os
from typing import Any

from vllm_ops.planning.plan import Plan, PlanWarning


def _record_for(plan: Plan, state_dir: str | os.PathLike | None) -> dict[str, Any] | None:
    from vllm_ops.launch import calibration as cal

    args = plan.vllm_args or {}
    cpu = plan.cpu
    gpus = int(args.get("tensor_parallel_size") or 1) * int(args.get("pipeline_parallel_size") or 1)
    hw = cal.hardware_of(plan.hardware or {}, None if cpu else gpus)
    key = cal.gpu_key(hw["gpu_name"], hw["gpu_count"], hw["total_bytes"])
    return cal.lookup(str((plan.model or {}).get("id") or ""), key, plan.vllm_version, args, state_dir)


def apply_calibration(plan: Plan, state_dir: str | os.PathLike | None = None) -> Plan:
    """``plan`` with the measured figures of a matching calibration record (unchanged without one)."""
    from vllm_ops.launch import calibration as cal

    rec = _record_for(plan, state_dir)
    if rec is None:
        return plan
    measured = {k: v for k, v in (rec.get("actual") or {}).items() if k in cal.FIGURES and v is not None}
    predicted = {k: getattr(plan.memory, k) for k in measured if hasattr(plan.memory, k)}
    for k, v in measured.items():
        if hasattr(plan.memory, k):
            setattr(plan.memory, k, int(v) if k == "kv_cache_tokens" else float(v))
    plan.calibration = {"source": str(cal._path(state_dir)), "ts": rec.get("ts"),
                        "gpu_key": rec.get("gpu_key"), "predicted": predicted, "measured": measured}
    pairs = ", ".join(f"{k.replace('_gib', '')} {measured[k]} (predicted {predicted[k]})"
                      for k in measured if k in predicted)
    plan.warnings.append(PlanWarning(
        "calibrated", f"memory figures are MEASURED by an earlier launch with these flags on this hardware "
                      f"and vLLM {plan.vllm_version} (calibration record of ts {rec.get('ts')}): {pairs}"))
    plan.explain.append(f"calibrated: measured figures replace the predicted ones: {pairs}")
    if not plan.fits:
        plan.warnings = [w for w in plan.warnings if w.code != "does-not-fit"]
    plan.fits, plan.failure_stage = True, None
    return plan
