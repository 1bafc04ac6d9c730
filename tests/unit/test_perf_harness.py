"""The public rows' harness (aiperf -> a Dynamo frontend -> vLLM 0.12) adds a latency per request and per prompt token
to their TTFT (perf_step.Efficiency.harness_ms / harness_prompt_us). The per-token part is identified only on the
public rows whose prompts vLLM's prefix cache serves (benchmarks/perf_model_accuracy.py harness_rows: the GPU
prefills little there); each fold whose training rows hold them fits both on them, a fold without them (the Llama
family's) keeps its harness_ms and has no per-token term. Plans never carry either."""
from __future__ import annotations

import dataclasses
import json
import statistics
import sys
from pathlib import Path

import pytest

from vllm_ops.hardware import parse_gpu_spec
from vllm_ops.models import load_model_spec
from vllm_ops.planning import perf_fit, plan
from vllm_ops.planning.performance import Workload, predict

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import perf_model_accuracy as A  # noqa: E402

LLAMA_FP8 = "nvidia/Llama-3.1-8B-Instruct-FP8"


def test_only_the_harness_carries_the_per_token_latency():
    e = perf_fit.EFFICIENCY
    assert e.harness_prompt_us > 0 and e.request_prompt_us == 0.0
    assert e.request_latency_ms(8000) == e.request_ms
    public = e.through_harness()
    assert public.request_latency_ms(8000) == pytest.approx(e.request_ms + e.harness_ms + e.harness_prompt_us * 8)
    # a plan's prediction does not move with the harness's constants
    spec = load_model_spec("Qwen/Qwen3-8B", offline=True)
    p = plan(spec, parse_gpu_spec("1xH200"), vllm_version="0.25.0")
    w = Workload(4000, 100, concurrency=8)
    other = dataclasses.replace(e, harness_ms=500.0, harness_prompt_us=500.0)
    assert predict(p, w, spec=spec).ttft_ms == predict(p, w, spec=spec, efficiency=other).ttft_ms


def test_the_identifying_rows_are_the_cache_served_ones():
    rows = A.harness_rows(A.public_cases())
    assert len(rows) == 16 and {c.model for c in rows} == {LLAMA_FP8}
    assert all(c.workload.prefix_cache_hit >= A.HARNESS_HIT for c in rows)


def test_the_stored_constants_are_the_fit():
    stored = json.loads(A.FIT_JSON.read_text(encoding="utf-8"))
    refit = A.refit_harness(write=False)
    for key, fold in [("shipped", stored), *stored["held_out"].items()]:
        want = refit if key == "shipped" else refit["held_out"][key]
        for k in ("harness_ms", "harness_prompt_us"):
            assert fold["efficiency"].get(k) == want["efficiency"].get(k), (key, k)
    # the Llama family's folds never saw the identifying rows: no per-token term, their own harness_ms
    for key, fold in perf_fit.HELD_OUT.items():
        seen = LLAMA_FP8 in fold["fitted_on"]
        assert (fold["efficiency"].harness_prompt_us > 0) == seen, key
    assert 10.0 <= perf_fit.EFFICIENCY.harness_prompt_us <= 30.0


def _ttft_errors(model):
    cases = [c for c in A.public_cases() if not c.excluded and c.model == model]
    return [(p.ttft_ms / c.ttft_ms - 1) * 100 for c, p in A.predict_all(cases, A.held_out_efficiency(model))]


def test_the_public_rows_held_out():
    """Qwen3-32B (90 rows, H100) and Qwen3-235B-A22B-FP8 (51, H200, in no fit) predicted with harness constants
    fitted on the Llama-FP8 rows only: TTFT median 21.1 -> 14.5 % and 12.7 -> 14.5 %."""
    q32 = [abs(e) for e in _ttft_errors("Qwen/Qwen3-32B")]
    assert statistics.median(q32) < 17.0
    assert statistics.median(abs(e) for e in _ttft_errors("Qwen/Qwen3-235B-A22B-FP8")) < 17.0
