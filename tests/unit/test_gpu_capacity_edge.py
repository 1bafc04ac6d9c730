"""vLLM's scheduler at the edge of its KV cache: Qwen3-8B on 1x H100, vLLM 0.25.0, dummy weights, the cache pinned to
315,296 tokens (tests/data/gpu-runs/h100x1/capacity/, session 24; predictions committed before the run, README there).

What it shows: the scheduler simulation's rule (a request runs when the cache holds its whole length) holds below the
edge (94 %: vLLM preempted nothing) and far past it (187 %), and misses just past it (104 %), where vLLM ran every
request and preempted a few while the rule queued three for whole lifetimes. NVIDIA's vLLM 0.12 row of the same fill
(held out) missed the other way, so the plan names the band (``perf_fit.KV_EDGE_CHECK``) instead of changing the rule.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vllm_ops.models import load_model_spec
from vllm_ops.planning import perf_fit
from vllm_ops.planning.perf_fit import BENCH_OUTPUT_SPREAD
from vllm_ops.planning.performance import Workload, predict
from vllm_ops.planning.plan import Plan

RUN = Path(__file__).resolve().parents[1] / "data" / "gpu-runs" / "h100x1" / "capacity" / "cap"
LEVELS = {"4096-128-c64": 0.86, "4096-512-c32": 0.47, "4096-512-c64": 0.94, "4096-1024-c64": 1.04,
          "4096-512-c128": 1.87}


@pytest.fixture(scope="module")
def plan():
    return Plan.from_dict(json.loads((RUN / "plan.json").read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def spec():
    return load_model_spec(str(RUN / "model"), offline=True)


def _level(shape: str) -> tuple[dict, int]:
    """The level's bench figures and the preemptions vLLM counted during it (bench's /metrics delta)."""
    doc = json.loads((RUN / f"bench-{shape}.json").read_text(encoding="utf-8"))
    lv = doc["levels"][0]
    return lv | {"input_len": doc["input_len"], "output_len": doc["output_len"]}, int(lv["server"]["preemptions"])


def _predicted(plan, spec, lv):
    w = Workload(lv["input_len"], lv["output_len"], concurrency=lv["concurrency"], num_requests=lv["num_requests"],
                 output_spread=BENCH_OUTPUT_SPREAD)
    return predict(plan, w, spec=spec)


def test_the_cache_was_the_pinned_one(plan):
    log = (RUN / "vllm-trim.log").read_text(encoding="utf-8")
    assert "GPU KV cache size: 315,296 tokens" in log
    assert plan.memory.kv_cache_tokens == 315_296


@pytest.mark.parametrize("shape", sorted(LEVELS))
def test_fill_and_preemptions(plan, shape):
    lv, preempted = _level(shape)
    fill = lv["concurrency"] * (lv["input_len"] + lv["output_len"]) / plan.memory.kv_cache_tokens
    assert fill == pytest.approx(LEVELS[shape], abs=0.005)
    assert lv["completed"] == lv["num_requests"]
    assert (preempted > 0) == (fill > 1.0)               # vLLM preempts only past the edge


@pytest.mark.parametrize("shape", ["4096-128-c64", "4096-512-c32", "4096-512-c64", "4096-512-c128"])
def test_the_whole_length_rule_holds_below_and_far_past_the_edge(plan, spec, shape):
    lv, _ = _level(shape)
    p = _predicted(plan, spec, lv)
    assert p.ttft_ms / lv["ttft_ms"]["mean"] == pytest.approx(1.0, abs=0.2)
    assert p.tpot_ms / lv["tpot_ms"]["mean"] == pytest.approx(1.0, abs=0.12)
    assert not [c for c in p.caveats if "KV cache's edge" in c]


def test_just_past_the_edge_the_rule_queues_what_vllm_ran(plan, spec):
    lv, preempted = _level("4096-1024-c64")
    p = _predicted(plan, spec, lv)
    assert p.bound == "kv-capacity" and p.effective_concurrency == 61 and lv["max_in_flight"] == 64
    assert preempted == 18
    d = perf_fit.KV_EDGE_CHECK
    assert lv["ttft_ms"]["mean"] / p.ttft_ms == pytest.approx(d["ttft_x"][0], abs=0.01)
    assert lv["tpot_ms"]["mean"] / p.tpot_ms == pytest.approx(d["tpot_x"][0], abs=0.01)
    assert [c for c in p.caveats if "KV cache's edge (104%" in c]


def test_nvidias_row_of_the_same_fill_missed_the_other_way(bench):
    """Qwen3-32B bf16 at TP 2 on H100, 64 x 4096/1024 (vLLM 0.12, held out: predicted by the fold without it)."""
    (case,) = [c for c in bench.public_cases() if c.name.endswith("_4096x1024_c64_tp2_epnone_85")]
    (_c, p), = bench.predict_all([case], bench.held_out_efficiency(case.model))
    fill = 64 * (4096 + 1024) / case.plan.memory.kv_cache_tokens
    assert fill == pytest.approx(perf_fit.KV_EDGE_CHECK["fill"], abs=0.005)
    d = perf_fit.KV_EDGE_CHECK
    assert case.ttft_ms / p.ttft_ms == pytest.approx(d["ttft_x"][1], abs=0.01)
    assert case.tpot_ms / p.tpot_ms == pytest.approx(d["tpot_x"][1], abs=0.01)
    assert [c for c in p.caveats if "KV cache's edge" in c]
