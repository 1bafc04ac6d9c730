"""A prompt token vLLM's prefix cache serves still costs the serving path a latency before the first token
(perf_fit.CACHED_PROMPT_US, perf_step.Efficiency.cached_prompt_us), measured on one H100 (vLLM 0.25.0, Qwen3-8B,
tests/data/gpu-runs/h100x1/hitpath/gpu, session 27): one request at a time over 4 prompts, the median request a hit.
The constant is the slope of the three c=1 levels; the two loaded levels (16 x 8000 over 16 prompts, 32 x 4000 over
32) set nothing and test it, and so does a second run committed before it came (`../held`: Llama-3.1-8B-Instruct on
one H200)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from vllm_ops.hardware import parse_gpu_spec
from vllm_ops.models import load_model_spec
from vllm_ops.planning import perf_fit, plan
from vllm_ops.planning.performance import Workload, predict
from vllm_ops.planning.plan import Plan

RUN = Path(__file__).resolve().parents[1] / "data" / "gpu-runs" / "h100x1" / "hitpath" / "gpu"
SPEC = load_model_spec("Qwen/Qwen3-8B", offline=True)
HIT = 0.99          # the median request of a pooled level: every whole block of its prompt cached


def _level(name: str, run: Path = RUN) -> dict:
    doc = json.loads((run / f"bench-{name}.json").read_text(encoding="utf-8"))
    (lv,) = doc["levels"]
    return lv


def _ttft(isl: int, c: int, eff=None, hit: float = HIT, run: Path = RUN, spec=SPEC) -> float:
    """The run's own plan predicting a level's TTFT (a hit's, at ``hit``)."""
    plan_ = Plan.from_dict(json.loads((run / "plan.json").read_text(encoding="utf-8")))
    w = Workload(isl, 100, concurrency=c, prefix_cache_hit=hit)
    return predict(plan_, w, spec=spec, efficiency=eff or perf_fit.EFFICIENCY).ttft_ms


WITHOUT = dataclasses.replace(perf_fit.EFFICIENCY, cached_prompt_us=0.0)
C1 = {1000: "1000-100-c1-pool4", 8000: "8000-100-c1-pool4", 16000: "16000-100-c1-pool4"}


def test_the_run_is_what_the_constant_says():
    for isl, name in C1.items():
        lv = _level(name)
        assert lv["completed"] == 40 and lv["server"]["prefix_cache_hit_rate"] > 0.85, name
    medians = {isl: _level(name)["ttft_ms"]["p50"] for isl, name in C1.items()}
    assert [round(medians[i], 1) for i in sorted(medians)] == [20.7, 33.0, 45.2]


def test_the_constant_is_the_slope_of_the_c1_hits():
    """Least squares of (measured median - the model without the term) against the cached tokens: 1.48 us."""
    xs, ys = [], []
    for isl, name in C1.items():
        cached = (isl - 1) // 16 * 16
        xs.append(cached)
        ys.append(_level(name)["ttft_ms"]["p50"] - _ttft(isl, 1, WITHOUT))
    mx, my = sum(xs) / 3, sum(ys) / 3
    slope_us = 1e3 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    assert round(slope_us, 1) == perf_fit.CACHED_PROMPT_US == 1.5
    assert perf_fit.EFFICIENCY.cached_prompt_us == perf_fit.CACHED_PROMPT_US


def test_c1_hits_with_and_without_the_term():
    """Without it the model was 29 / 54 / 62 % low on a cache hit's first token; with it within 25 %."""
    for isl, name in C1.items():
        m = _level(name)["ttft_ms"]["p50"]
        with_term, without = _ttft(isl, 1), _ttft(isl, 1, WITHOUT)
        assert abs(with_term / m - 1) < 0.25, (isl, with_term, m)
        assert with_term > without
    assert _ttft(16000, 1, WITHOUT) < 0.45 * _level(C1[16000])["ttft_ms"]["p50"]


@pytest.mark.parametrize("isl,c,name", [(8000, 16, "8000-100-c16-pool16"), (4000, 32, "4000-100-c32-pool32")])
def test_loaded_hits_held_out(isl, c, name):
    """Levels that set nothing: the median request (a hit under load) predicted closer with the term (measured
    78.5 / 69.8 ms; with 54.8 / 48.8, without 43.0 / 42.9): still low, by about 30 %."""
    m = _level(name)["ttft_ms"]["p50"]
    with_term, without = _ttft(isl, c), _ttft(isl, c, WITHOUT)
    assert abs(with_term / m - 1) < abs(without / m - 1)
    assert 0.6 < with_term / m < 0.8


def test_computed_prompts_do_not_carry_it():
    """The fitted prefill constants carry the latency of tokens a step computes: a miss is predicted as before."""
    assert _ttft(8000, 1, hit=0.0) == _ttft(8000, 1, WITHOUT, hit=0.0)
    e = perf_fit.EFFICIENCY
    assert e.request_latency_ms(8000) == e.request_ms
    assert e.request_latency_ms(8000, 7984) == pytest.approx(e.request_ms + 7.984 * perf_fit.CACHED_PROMPT_US)


def test_the_public_harness_floor():
    """A fold that fitted the public harness's per-token latency (on cache-served rows) holds the cached tokens'
    in it; a fold that could not (the Llama family's) keeps vLLM's own for the cached tokens, a floor."""
    fitted = dataclasses.replace(perf_fit.EFFICIENCY, harness_prompt_us=19.0).through_harness()
    assert fitted.cached_prompt_us == 0.0 and fitted.request_prompt_us == 19.0
    unfitted = dataclasses.replace(perf_fit.EFFICIENCY, harness_prompt_us=0.0).through_harness()
    assert unfitted.cached_prompt_us == perf_fit.CACHED_PROMPT_US and unfitted.request_prompt_us == 0.0
    llama = [k for k in perf_fit.HELD_OUT if k.endswith("Llama-3.1-8B-Instruct-FP8")]
    assert llama and all(perf_fit.HELD_OUT[k]["efficiency"].through_harness().cached_prompt_us > 0 for k in llama)


def test_a_plan_names_the_term():
    p = plan(SPEC, parse_gpu_spec("1xH100"), vllm_version="0.25.0")
    perf = predict(p, Workload(8000, 100, concurrency=1, prefix_cache_hit=HIT), spec=SPEC)
    assert any("CACHED_PROMPT_US" in n for n in perf.notes)
    assert not any("CACHED_PROMPT_US" in n for n in predict(p, Workload(8000, 100, concurrency=1), spec=SPEC).notes)


HELD = RUN.parent / "held"
LLAMA = load_model_spec("meta-llama/Llama-3.1-8B-Instruct", offline=True)
HELD_C1 = {1000: "1000-100-c1-pool4", 4000: "4000-100-c1-pool4", 8000: "8000-100-c1-pool4", 16000: "16000-100-c1-pool4"}


def test_held_out_on_another_model_and_card():
    """Committed before the run: every c=1 median within 25 % with the term, and closer than without it at 4000, 8000
    and 16000 tokens. Measured 14.3 / 18.5 / 26.5 / 33.5 ms; with the term 14.6 / 19.2 / 25.5 / 40.2 (+20 % at
    16000: the slope on that host is 1.1 us, not 1.5), without 13.1 / 13.3 / 13.6 / 16.5."""
    assert "H200" in (HELD / "gpu.txt").read_text(encoding="utf-8")
    for isl, name in HELD_C1.items():
        lv = _level(name, HELD)
        assert lv["completed"] == 40 and lv["server"]["prefix_cache_hit_rate"] > 0.85, name
        m = lv["ttft_ms"]["p50"]
        with_term = _ttft(isl, 1, run=HELD, spec=LLAMA)
        without = _ttft(isl, 1, WITHOUT, run=HELD, spec=LLAMA)
        assert abs(with_term / m - 1) < 0.25, (isl, with_term, m)
        if isl >= 4000:
            assert abs(with_term - m) < abs(without - m), (isl, with_term, without, m)
