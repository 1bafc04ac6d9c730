"""Load testing (``vllm-ops bench``): an async streaming load generator, per-level statistics,
server-side figures from /metrics, and a saturation analysis against the plan.

    from vllm_ops.loadtest import run_bench
    report = run_bench("http://127.0.0.1:8000", concurrency=[1, 4], num_prompts=20,
                       input_len=32, output_len=16)

Modules: :mod:`.stats` (pure figures), :mod:`.generator` (scheduling), :mod:`.streaming`
(raw chunks on the client's path), :mod:`.prompts`, :mod:`.report` (report + saturation),
:mod:`.bench` (the runner), :mod:`.plot`.
"""
from __future__ import annotations

from typing import Any

__all__ = ["run_bench", "arun_bench", "BenchReport", "PlanLimits", "LevelStats", "RequestResult"]


def __getattr__(name: str) -> Any:  # lazy: the client (httpx) loads only when used
    if name in ("run_bench", "arun_bench"):
        from vllm_ops.loadtest import bench

        return getattr(bench, name)
    if name in ("BenchReport", "PlanLimits"):
        from vllm_ops.loadtest import report

        return getattr(report, name)
    if name in ("LevelStats", "RequestResult"):
        from vllm_ops.loadtest import stats

        return getattr(stats, name)
    raise AttributeError(name)
