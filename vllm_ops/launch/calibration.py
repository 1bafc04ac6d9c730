"""Calibration records: what the plan predicted beside what vLLM actually printed at startup.

One JSON object per line in ``<state_dir>/calibration.jsonl``::

    {"ts": 1795650094.1, "model_id": "Qwen/Qwen2.5-7B-Instruct",
     "hardware": {"gpu_name": "NVIDIA H100 80GB HBM3", "gpu_count": 1, "total_bytes": 85520809984},
     "gpu_key": "NVIDIA H100 80GB HBM3|1|81559MiB", "vllm_version": "0.25.0",
     "flags": {"tensor_parallel_size": 1, "max_model_len": 8192, ...},
     "predicted": {"weights_gib": 14.2, "kv_cache_gib": 55.9, ...},
     "actual": {"weights_gib": 14.29, "kv_cache_gib": 55.62, "kv_cache_tokens": 1041472, ...}}

:func:`lookup` (used by ``vllm-ops plan``) returns the newest record for the same model, hardware,
vLLM version and memory-relevant flags; records of another ``kind`` (``"perf"``: predicted and measured
TTFT/TPOT/throughput, from ``vllm-ops bench --plan`` and ``vllm-ops tune``) are skipped. Standard library only: it runs on the plan path.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

# the flags that change vLLM's memory figures; others (port, served name, ...) do not matter
MEMORY_FLAGS: tuple[str, ...] = (
    "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size",
    "gpu_memory_utilization", "max_model_len", "max_num_seqs", "max_num_batched_tokens",
    "enforce_eager", "kv_cache_dtype", "dtype", "quantization", "block_size",
    "kv_cache_memory_bytes", "cpu_offload_gb", "enable_expert_parallel",
)
# figures compared between plan and log (plan.memory names = StartupFigures names)
FIGURES: tuple[str, ...] = (
    "weights_gib", "activation_peak_gib", "non_torch_gib", "cuda_graph_gib",
    "kv_cache_gib", "kv_cache_tokens", "max_concurrency",
)


def gpu_key(gpu_name: str, gpu_count: int, total_bytes: int | None) -> str:
    """A stable key for "this GPU model, this many, this much memory each"."""
    mib = f"{int(total_bytes) // 2**20}MiB" if total_bytes else "?"
    return f"{gpu_name}|{int(gpu_count)}|{mib}"


def hardware_of(hardware: Mapping[str, Any], gpu_count: int | None = None) -> dict[str, Any]:
    """``{gpu_name, gpu_count, total_bytes}`` from a plan's ``hardware`` (an Inventory dict).
    ``gpu_count`` overrides the count (the GPUs one replica uses)."""
    gpus: list[Mapping[str, Any]] = []
    for node in hardware.get("nodes") or []:
        gpus.extend(node.get("gpus") or [])
    gpus = gpus or list(hardware.get("gpus") or [])
    if gpus:
        g = gpus[0]
        name = str(g.get("name") or g.get("catalog_key") or "unknown")
        total = g.get("memory_cuda_total_bytes") or g.get("memory_total_bytes")
    else:  # CPU profiles: no GPU
        name = str(hardware.get("name") or hardware.get("profile") or "cpu")
        total = hardware.get("ram_bytes")
    count = gpu_count if gpu_count is not None else max(1, len(gpus))
    return {"gpu_name": name, "gpu_count": count, "total_bytes": int(total) if total else None}


def normalize_flags(flags: Mapping[str, Any]) -> dict[str, Any]:
    """Only the memory-relevant flags, with None/absent dropped and numbers made comparable."""
    out: dict[str, Any] = {}
    for k in MEMORY_FLAGS:
        v = flags.get(k)
        if v is None:
            continue
        if isinstance(v, float) and v.is_integer() and k != "gpu_memory_utilization":
            v = int(v)
        if k == "gpu_memory_utilization":
            v = round(float(v), 4)
        out[k] = v
    return out


def make_record(*, model_id: str, hardware: Mapping[str, Any], vllm_version: str | None,
                flags: Mapping[str, Any], predicted: Mapping[str, Any],
                actual: Mapping[str, Any], ts: float | None = None) -> dict[str, Any]:
    hw = dict(hardware)
    return {
        "ts": ts if ts is not None else time.time(),
        "model_id": model_id,
        "hardware": hw,
        "gpu_key": gpu_key(hw.get("gpu_name", "unknown"), hw.get("gpu_count", 1), hw.get("total_bytes")),
        "vllm_version": vllm_version,
        "flags": normalize_flags(flags),
        "predicted": {k: predicted.get(k) for k in FIGURES if predicted.get(k) is not None},
        "actual": {k: actual.get(k) for k in FIGURES if actual.get(k) is not None},
    }


def _path(state_dir: str | os.PathLike | None) -> Path:
    if state_dir is None:
        from vllm_ops.launch.state import default_state_dir

        state_dir = default_state_dir()
    return Path(state_dir) / "calibration.jsonl"


def append(record: Mapping[str, Any], state_dir: str | os.PathLike | None = None) -> Path:
    """Append one record (one line, written with a single write in append mode)."""
    p = _path(state_dir)
    p.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(dict(record), sort_keys=True, default=str) + "\n"
    with open(p, "a", encoding="utf-8") as f:
        f.write(line)
    return p


def records(state_dir: str | os.PathLike | None = None) -> Iterable[dict[str, Any]]:
    """Every readable record, oldest first; broken lines are skipped."""
    p = _path(state_dir)
    try:
        f = open(p, encoding="utf-8")
    except FileNotFoundError:
        return
    with f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                yield rec


def lookup(model_id: str, gpu_key: str, vllm_version: str | None, flags: Mapping[str, Any],
           state_dir: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The newest record for this model, ``gpu_key`` (see :func:`gpu_key`), vLLM version and
    memory-relevant flags (:data:`MEMORY_FLAGS`; others are ignored), or None."""
    want = normalize_flags(flags)
    best = None
    for rec in records(state_dir):
        if (rec.get("kind", "memory") == "memory" and rec.get("model_id") == model_id and rec.get("gpu_key") == gpu_key
                and rec.get("vllm_version") == vllm_version and rec.get("flags") == want
                and rec.get("actual")):
            if best is None or rec.get("ts", 0) >= best.get("ts", 0):
                best = rec
    return best


# -- performance records: predicted beside measured TTFT/TPOT/throughput (`vllm-ops bench --plan`) -------
PERF_FIGURES: tuple[str, ...] = ("ttft_ms", "tpot_ms", "output_tokens_per_s", "requests_per_s")


def _plan_keys(plan: Any) -> tuple[str, str, str | None, dict[str, Any]]:
    va = dict(plan.vllm_args or {})
    if "--enable-expert-parallel" in (plan.extra_args or []):
        va["enable_expert_parallel"] = True
    world = int(va.get("tensor_parallel_size") or 1) * int(va.get("pipeline_parallel_size") or 1) * \
        int(va.get("data_parallel_size") or 1)
    hw = hardware_of(plan.hardware or {}, world)
    return (str(plan.model.get("id")), gpu_key(hw["gpu_name"], hw["gpu_count"], hw["total_bytes"]),
            plan.vllm_version, normalize_flags(va))


def make_perf_record(plan: Any, workload: Mapping[str, Any], predicted: Mapping[str, Any] | None,
                     measured: Mapping[str, Any], ts: float | None = None, *,
                     ttft_paid_once: bool = False) -> dict[str, Any]:
    """One ``kind: "perf"`` record: the plan's model/hardware/version/flags, the load
    (``input_len``, ``output_len``, ``concurrency`` or ``rate``, ``num_requests``), and the figures.
    A measured figure of 0 is left out: it measured nothing (a TPOT of 0 is a server that handed each
    request's tokens over in one chunk, seen on a loaded CPU box) and `plan` would quote it. So is the
    measured TTFT of a level where a few requests paid a one-time cost (``ttft_paid_once``,
    loadtest/report.one_time_cost_warning): its mean is no steady-state figure."""
    model_id, key, version, flags = _plan_keys(plan)
    if ttft_paid_once:
        measured = {k: v for k, v in measured.items() if k != "ttft_ms"}
    return {
        "kind": "perf", "ts": ts if ts is not None else time.time(), "model_id": model_id, "gpu_key": key,
        "vllm_version": version, "flags": flags,
        "workload": {k: workload.get(k) for k in ("input_len", "output_len", "concurrency", "rate", "num_requests")
                     if workload.get(k) is not None},
        "predicted": {k: (predicted or {}).get(k) for k in PERF_FIGURES if (predicted or {}).get(k) is not None},
        "measured": {k: measured.get(k) for k in PERF_FIGURES if measured.get(k)},
    }


def lookup_perf(plan: Any, workload: Any, state_dir: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The newest perf record for this plan's model, hardware, vLLM version and memory flags at the
    same input/output lengths and concurrency (or rate) and a prefix-cache hit rate within 0.1, or None."""
    model_id, key, version, flags = _plan_keys(plan)
    want = {"input_len": workload.input_len, "output_len": workload.output_len}
    want.update({"concurrency": workload.concurrency} if workload.concurrency is not None else {"rate": workload.rate})
    hit = float(workload.prefix_cache_hit)
    best = None
    for rec in records(state_dir):
        wl = rec.get("workload") or {}
        if (rec.get("kind") == "perf" and rec.get("model_id") == model_id and rec.get("gpu_key") == key
                and rec.get("vllm_version") == version and rec.get("flags") == flags and rec.get("measured")
                and all(wl.get(k) == v for k, v in want.items())
                and abs(float(wl.get("prefix_cache_hit") or 0.0) - hit) <= 0.1):    # measured at a like reuse
            if best is None or rec.get("ts", 0) >= best.get("ts", 0):
                best = rec
    return best
