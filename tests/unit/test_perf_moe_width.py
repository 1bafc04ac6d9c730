"""Experts narrower than any fit saw (perf_step.MOE_W_FLOOR, 768: Qwen3-30B-A3B at TP 1): the narrow-expert fall of
the MoE FLOP/s (moe_f_half, fitted on two widths, 768 and 14336) is not extrapolated below it. The rule was added
after NVIDIA's Qwen3-235B-A22B-FP8 rows at TP 4 (experts 384 wide on one GPU; vLLM 0.12, in no fit) came out high,
so these figures test the constants, not the decision to stop the curve."""
from __future__ import annotations

import statistics
import sys
from pathlib import Path
from unittest import mock

from vllm_ops.hardware import parse_gpu_spec
from vllm_ops.models import load_model_spec
from vllm_ops.planning import perf_fit, perf_step, plan
from vllm_ops.planning.performance import step_cost

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import perf_model_accuracy as A  # noqa: E402


def test_the_floor_binds_only_below_the_narrowest_measured_width():
    spec = load_model_spec("Qwen/Qwen3-30B-A3B", offline=True)          # experts 768 wide
    one = step_cost(plan(spec, parse_gpu_spec("1xH100"), vllm_version="0.25.0"), spec, perf_fit.EFFICIENCY)[0]
    two = step_cost(plan(spec, parse_gpu_spec("2xH100"), vllm_version="0.25.0",
                         pins={"tensor_parallel_size": 2}), spec, perf_fit.EFFICIENCY)[0]
    assert (one.expert_width, two.expert_width) == (768, 384)
    assert two._moe_flops_eff(0.5) == one._moe_flops_eff(0.5)          # 384 costed as 768
    assert not any("narrower than any measured" in n for n in one.notes)
    assert any("experts 384 wide on one GPU, narrower than any measured (768)" in n for n in two.notes)
    with mock.patch.object(perf_step, "MOE_W_FLOOR", 0):
        assert two._moe_flops_eff(0.5) < 0.7 * one._moe_flops_eff(0.5)   # the curve, extrapolated


def _tp4_rows():
    return [c for c in A.public_cases() if not c.excluded and c.model == "Qwen/Qwen3-235B-A22B-FP8"
            and c.plan.vllm_args.get("tensor_parallel_size") == 4]


def _errors(cases, what):
    return [(getattr(p, what) / getattr(c, what) - 1) * 100 for c in cases
            for _c, p in A.predict_all([c], A.held_out_efficiency(c.model))]


def test_the_public_235b_tp4_rows():
    """12 rows at TP 4 (one with expert parallelism, whose experts stay 1536 wide): with the floor TTFT median
    52 -> 26 %, TPOT median 9 -> 8 % (worst row 33 -> 15 %)."""
    cases = _tp4_rows()
    assert len(cases) == 12 and all(c.not_fitted for c in cases)
    floor_ttft, floor_tpot = _errors(cases, "ttft_ms"), _errors(cases, "tpot_ms")
    with mock.patch.object(perf_step, "MOE_W_FLOOR", 0):
        curve_ttft, curve_tpot = _errors(cases, "ttft_ms"), _errors(cases, "tpot_ms")
    med = lambda xs: statistics.median(abs(x) for x in xs)  # noqa: E731
    assert med(floor_ttft) < 30.0 < 40.0 < med(curve_ttft)
    assert med(floor_tpot) < med(curve_tpot) and max(abs(x) for x in floor_tpot) < 20.0
    assert sum(x > 0 for x in curve_ttft) >= 11                         # the curve: nearly every row high
