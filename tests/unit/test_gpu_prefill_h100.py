"""Lone prefills of Qwen2.5-1.5B and Qwen3-8B on one H100, vLLM 0.25.0 (tests/data/gpu-runs/h100x1/prefill/, session
23; the predicted step times committed before the run, README there): the step model costs them 1.2-1.6x high, the
small model's most from 4096 tokens on. Named in perf_fit.HIGH_LOAD_CHECK's comment, not corrected."""
from __future__ import annotations

import json
from pathlib import Path

from vllm_ops.models import load_model_spec
from vllm_ops.planning.performance import _body_weights

RUNS = Path(__file__).resolve().parents[1] / "data" / "gpu-runs" / "h100x1" / "prefill"
# committed before the run (README): the step model's prefill time, ms, 8192-token chunks, shipped constants
PREDICTED = {"q15": {1024: 10.4, 2048: 19.4, 4096: 38.3, 8192: 79.6, 16384: 177.4},
             "q8": {1024: 31.3, 2048: 61.5, 4096: 125.0, 8192: 263.6, 16384: 589.7}}


def _prefill_ms(run: str, isl: int) -> float:
    doc = json.loads((RUNS / run / f"bench-{isl}-2-c1.json").read_text(encoding="utf-8"))
    lv = doc["levels"][0]
    assert lv["completed"] == 4 and lv["server"]["prefix_cache_hit_rate"] == 0.0
    return lv["server"]["prefill_ms"]


def _ratios(run: str) -> dict[int, float]:
    return {isl: round(p / _prefill_ms(run, isl), 2) for isl, p in PREDICTED[run].items()}


def test_the_8b_prefills_are_costed_a_fifth_high_at_every_length():
    assert all(1.19 <= x <= 1.28 for x in _ratios("q8").values()), _ratios("q8")


def test_the_small_models_long_prefills_are_costed_half_again_too_long():
    r = _ratios("q15")
    assert 0.8 < r[1024] < 0.9                                   # near where the fall was fitted (1024 tokens)
    assert all(1.45 <= r[n] <= 1.65 for n in (2048, 4096, 8192, 16384)), r


def _gemm_fraction(run: str, model: str, isl: int) -> float:
    """2 x the body's weights (the planner's count: no embedding table, no lm_head) x prompt tokens over vLLM's
    prefill time, against the H100 SXM's 989 dense TFLOP/s (attention left out)."""
    body_params = _body_weights(load_model_spec(model, offline=True), "bf16")[1]
    return 2 * body_params * isl / (_prefill_ms(run, isl) / 1e3) / 989e12


def test_measured_gemm_rates_sit_above_the_models_and_the_small_models_1024_step_is_mostly_fixed_cost():
    q8, q15 = "Qwen/Qwen3-8B", "Qwen/Qwen2.5-1.5B-Instruct"
    assert all(0.52 <= _gemm_fraction("q8", q8, n) <= 0.60 for n in (1024, 2048, 4096, 8192))     # model: 0.50
    assert all(0.40 <= _gemm_fraction("q15", q15, n) <= 0.46 for n in (2048, 4096, 8192))        # model: 0.32
    assert _gemm_fraction("q15", q15, 1024) < 0.25
