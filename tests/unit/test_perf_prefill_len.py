"""One request at a time, prompts from 128 to 30,000 tokens (tests/data/gpu-runs/h200x1/prefill/, 1x H200, vLLM
0.25.0, dummy weights, prefix caching off, 2026-12-04, session 12; README there). In no fit: each level is
predicted with the shipped constants (neither model's family is fitted).

* q06len: Qwen3-0.6B, 128 / 1024 / 4096 / 8192 / 16384 / 30000 prompt tokens, 12 requests each.
* mi7len: Mistral-7B-Instruct-v0.3, 128 / 1024 (the run was cut short after these: a 10-minute limit on the whole run).

What they show (and these tests pin, so that a change of the model shows up here): the 7B's TTFT is predicted
within 20 %; the 0.6B's is not - 42-52 % low at 128-1024 tokens (a lone small request's fixed latency: 22 ms
measured at 128 tokens, 11 ms predicted) and 40-61 % high at 8k-30k tokens, where the size-dependent GEMM
efficiency (``gemm_w_half``, w = hidden x intermediate per GPU: 3.1 M here, so 0.18 of the large-GEMM fraction)
makes an 8192-token chunk as slow as a tiny one. A form by hidden size alone (tried this session, conceived before
these runs) predicts 8k-30k within 17 % but loses elsewhere; not shipped (GPU-TESTING-GUIDE.md, session 12)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PREFILL = ROOT / "tests" / "data" / "gpu-runs" / "h200x1" / "prefill"
LENGTHS = {"q06len": [128, 1024, 4096, 8192, 16384, 30000], "mi7len": [128, 1024]}


@pytest.fixture(scope="module")
def pairs(bench):
    return {c.name: (c, p) for c, p in bench.prefill_pairs()}


def _doc(run: str, isl: int) -> dict:
    return json.loads((PREFILL / run / f"bench-{isl}-4-c1.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("run", sorted(LENGTHS))
def test_every_level_ran_complete_one_request_at_a_time_with_no_cache(run):
    for isl in LENGTHS[run]:
        doc = _doc(run, isl)
        lv = doc["levels"][0]
        assert (doc["input_len"], doc["output_len"], lv["concurrency"]) == (isl, 4, 1)
        assert lv["completed"] == 12 and lv["failed"] == 0
        assert lv["server"]["prefix_cache_hit_rate"] == 0.0
        starts, ttft, e2e = (doc["requests"][k] for k in ("start_ms", "ttft_ms", "e2e_ms"))
        # one at a time: each request starts after the one before ended
        assert all(starts[i + 1] >= starts[i] + e2e[i] - 1.0 for i in range(len(starts) - 1))
        assert all(0 < t <= e for t, e in zip(ttft, e2e))


@pytest.mark.parametrize("run", sorted(LENGTHS))
def test_the_memory_plan_matches_the_kv_cache_vllm_printed(run):
    plan = json.loads((PREFILL / run / "plan.json").read_text(encoding="utf-8"))
    log = (PREFILL / run / "vllm-trim.log").read_text(encoding="utf-8")
    measured = int(re.search(r"GPU KV cache size: ([\d,]+) tokens", log).group(1).replace(",", ""))
    assert plan["memory"]["kv_cache_tokens"] == pytest.approx(measured, rel=0.01)


def test_measured_ttft_rises_with_the_prompt(pairs):
    ttft = [pairs[f"q06len/bench-{n}-4-c1"][0].ttft_ms for n in LENGTHS["q06len"]]
    assert ttft == sorted(ttft) and ttft[-1] > 10 * ttft[0]


def test_every_level_is_answered_by_constants_that_never_saw_the_model(bench, pairs):
    from vllm_ops.planning import perf_fit

    assert len(pairs) == 8 and all(p.ttft_ms for _c, p in pairs.values())
    for m in ("Qwen/Qwen3-0.6B", "mistralai/Mistral-7B-Instruct-v0.3"):
        assert bench.held_out_efficiency(m) == perf_fit.EFFICIENCY


def _err(pairs, name: str) -> float:
    c, p = pairs[name]
    return p.ttft_ms / c.ttft_ms - 1


def test_the_7b_ttft_is_predicted_within_20_percent(pairs):
    for isl in LENGTHS["mi7len"]:
        assert abs(_err(pairs, f"mi7len/bench-{isl}-4-c1")) <= 0.20


def test_the_small_models_known_miss_short_prompts_low_long_prompts_high(pairs):
    """The miss as shipped (session 12): 0.6B, 128-1024 tokens 42-52 % low; 8k-30k tokens 40-61 % high."""
    for isl in (128, 1024):
        assert -0.60 <= _err(pairs, f"q06len/bench-{isl}-4-c1") <= -0.35
    for isl in (8192, 16384, 30000):
        assert 0.30 <= _err(pairs, f"q06len/bench-{isl}-4-c1") <= 0.70


def test_the_prefill_figures_are_the_ones_the_readme_states(bench, pairs):
    s = bench.score(list(pairs.values()), len(pairs))
    assert (s["ttft_median"], s["ttft_p90"]) == (42.2, 56.1), s


def test_a_plan_names_the_known_miss_for_models_this_small(pairs):
    """What is not modelled is named: the 0.6B's plans say so, the 7B's do not."""
    small = [n for n in pairs["q06len/bench-30000-4-c1"][1].notes if n.startswith("known miss")]
    assert len(small) == 1 and "40-61 % high" in small[0]
    assert not [n for n in pairs["mi7len/bench-1024-4-c1"][1].notes if n.startswith("known miss")]
