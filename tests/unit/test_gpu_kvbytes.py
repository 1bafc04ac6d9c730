"""``--kv-cache-memory-bytes`` on a real GPU (tests/data/gpu-runs/h100x1/kvbytes/: 1x H100 80GB HBM3, vLLM 0.25.0,
Qwen3-8B with dummy weights, 2026-12-06): the plan's KV cache against vLLM's, and its verdict against the start."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vllm_ops.hardware import parse_gpu_spec
from vllm_ops.models import load_model_spec
from vllm_ops.planning import plan

RUN = Path(__file__).resolve().parents[1] / "data" / "gpu-runs" / "h100x1" / "kvbytes"


def _plan(kv: str):
    return plan(load_model_spec("Qwen/Qwen3-8B", offline=True), parse_gpu_spec("1xH100-SXM"), vllm_version="0.25.0",
                extra_args=["--load-format", "dummy", "--kv-cache-memory-bytes", kv])


def _vllm_tokens(kv: str) -> int:
    text = (RUN / f"launch-{kv}.err").read_text(encoding="utf-8")
    return int(re.search(r"GPU KV cache size: ([\d,]+) tokens", text).group(1).replace(",", ""))


def test_the_gpu_is_the_one_planned_for():
    assert "NVIDIA H100 80GB HBM3, 81559 MiB" in (RUN / "gpu.txt").read_text(encoding="utf-8")
    assert round(parse_gpu_spec("1xH100-SXM").gpus[0].budget_total_bytes / 2**30, 2) == 79.18   # vLLM: "79.18 GiB"


@pytest.mark.parametrize("kv", ["20G", "70G"])
def test_the_kv_cache_is_vllms(kv):
    assert _plan(kv).memory.kv_cache_tokens == _vllm_tokens(kv)          # 145,632 and 509,712: exact


def test_the_verdicts_are_the_starts():
    ok = json.loads((RUN / "launch-20G.json").read_text(encoding="utf-8"))
    assert ok["ready"] and _plan("20G").fits
    failed = json.loads((RUN / "launch-70G.json").read_text(encoding="utf-8"))
    p = _plan("70G")
    assert not failed["ready"] and failed["diagnosis"]["code"] == "cuda-oom"
    assert not p.fits and p.failure_stage == "kv_cache_allocation" and p.margin_gib < -1
    # the retry launch proposed lowers the flag, not --gpu-memory-utilization
    assert failed["diagnosis"]["change"]["set_flags"] == {"kv_cache_memory_bytes": int(70 * 2**30 * 0.9)}
