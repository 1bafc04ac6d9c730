"""Data-parallel ranks of a MoE model step together (planning/perf_lockstep.py): a rank's step lasts as long as the
longest of the ranks' steps. The arithmetic, where it applies, and what it does to NVIDIA's public Qwen3-235B-A22B-FP8
rows at attention data parallelism (vLLM 0.12; no fit reads those rows, so the figures are held out)."""
from __future__ import annotations

import itertools
import statistics
import sys
from pathlib import Path
from unittest import mock

import pytest

from vllm_ops.hardware import parse_gpu_spec
from vllm_ops.models import load_model_spec
from vllm_ops.planning import performance, plan
from vllm_ops.planning.perf_lockstep import LockStep, ranks_step_together
from vllm_ops.planning.performance import Workload, predict

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import perf_model_accuracy as A  # noqa: E402


def test_the_expected_longest_step():
    # 90 % of the other rank's steps take 10 ms, 10 % take 100 ms (a prefill chunk)
    one = LockStep([(10.0, 90), (100.0, 10)], others=1)
    assert one(10.0) == pytest.approx(0.9 * 10 + 0.1 * 100)
    assert one(50.0) == pytest.approx(0.9 * 50 + 0.1 * 100)
    assert one(100.0) == one(150.0) - 50.0 == pytest.approx(100.0)      # already the longest: unchanged
    assert one(5.0) == pytest.approx(19.0)                              # shorter than any: the other's mean
    two = LockStep([(10.0, 90), (100.0, 10)], others=2)
    assert two(10.0) == pytest.approx(10 + (1 - 0.9 ** 2) * 90)
    assert LockStep([(10.0, 5)], others=0)(3.0) == 3.0 and LockStep([], others=3)(3.0) == 3.0


def test_it_matches_enumeration():
    trace = [(3.0, 2), (7.5, 1), (12.0, 4), (40.0, 1), (7.5, 2)]
    vals = [v for v, k in trace for _ in range(k)]
    for m in (1, 2, 3):
        lock = LockStep(trace, m)
        for x in (1.0, 3.0, 5.0, 7.5, 11.0, 12.0, 39.0, 41.0):
            exact = statistics.mean(max(x, *ys) for ys in itertools.product(vals, repeat=m))
            assert lock(x) == pytest.approx(exact), (m, x)


def test_only_moe_ranks_step_together():
    assert ranks_step_together(moe_layers=94, dp=2)
    assert not ranks_step_together(moe_layers=0, dp=2) and not ranks_step_together(moe_layers=94, dp=1)
    # a dense model's DP ranks are independent engines: the server's TPOT is one replica's at its share
    spec, gpus = load_model_spec("Qwen/Qwen3-8B", offline=True), parse_gpu_spec("2xH200")
    dp = predict(plan(spec, gpus, vllm_version="0.25.0", pins={"data_parallel_size": 2}),
                 Workload(1000, 100, concurrency=16))
    one = predict(plan(spec, parse_gpu_spec("1xH200"), vllm_version="0.25.0"), Workload(1000, 100, concurrency=8))
    assert dp.tpot_ms == pytest.approx(one.tpot_ms) and dp.ttft_ms == pytest.approx(one.ttft_ms)
    assert not any("step together" in n for n in dp.notes)


def test_a_moe_rank_waits_out_the_others_prefills():
    spec, gpus = load_model_spec("Qwen/Qwen3-30B-A3B-FP8", offline=True), parse_gpu_spec("2xH100")
    p = plan(spec, gpus, vllm_version="0.25.0", pins={"data_parallel_size": 2, "tensor_parallel_size": 1})
    w = Workload(4000, 100, concurrency=8)
    locked = predict(p, w)
    with mock.patch.object(performance, "ranks_step_together", lambda m, dp: False):
        alone = predict(p, w)
    assert locked.tpot_ms > 1.05 * alone.tpot_ms
    assert any("step together" in n for n in locked.notes)
    # pure decode on every rank (one-token prompts hardly prefill): little to wait for
    short = Workload(8, 1000, concurrency=8)
    with mock.patch.object(performance, "ranks_step_together", lambda m, dp: False):
        short_alone = predict(p, short)
    assert predict(p, short).tpot_ms == pytest.approx(short_alone.tpot_ms, rel=0.03)


def _dp_rows():
    return [c for c in A.public_cases() if not c.excluded and c.model == "Qwen/Qwen3-235B-A22B-FP8"
            and int(c.plan.vllm_args.get("data_parallel_size") or 1) > 1]


def _abs_tpot_errors(cases):
    return [abs(p.tpot_ms / c.tpot_ms - 1) * 100 for c in cases
            for _c, p in A.predict_all([c], A.held_out_efficiency(c.model))]


def test_the_public_dp_rows_held_out():
    """19 rows at attention data parallelism 2-4 (vLLM 0.12, 2-4x H200), in no fit (NOT_FITTED). Before the rule
    every one was slower than predicted (TPOT median 24.0 %); with it 18.1 % (p90 27.6 %; the experts' width floor,
    test_perf_moe_width.py, in both)."""
    cases = _dp_rows()
    assert len(cases) == 19 and all(c.not_fitted for c in cases)
    locked = _abs_tpot_errors(cases)
    with mock.patch.object(performance, "ranks_step_together", lambda m, dp: False):
        apart = _abs_tpot_errors(cases)
    assert statistics.median(locked) < 21.0 < 23.0 < statistics.median(apart)
    assert sorted(locked)[16] < sorted(apart)[16] - 5.0          # the p90 row


def test_the_dp_ttft_note_states_the_public_rows():
    """The note a MoE plan at data parallelism carries (perf_fit.DP_MOE_TTFT_CHECK) is what the public DP rows say
    of the shipped constants: held at 100-token outputs, several times slower to the first token at most longer ones."""
    from vllm_ops.planning import perf_fit

    assert A.held_out_efficiency("Qwen/Qwen3-235B-A22B-FP8") == perf_fit.EFFICIENCY      # in no fit: shipped = held out
    short, long_, tpot = [], [], []
    for c, p in A.predict_all(_dp_rows()):
        (short if c.workload.output_len < 500 else long_).append(c.ttft_ms / p.ttft_ms)
        tpot.append(100 * (p.tpot_ms / c.tpot_ms - 1))
    slow = [x for x in long_ if x > 2.0]
    near = [x for x in long_ if x <= 2.0]
    d = perf_fit.DP_MOE_TTFT_CHECK
    assert (len(short), len(long_), len(slow)) == (d["short_rows"], d["long_rows"], d["long_slow"])
    assert (round(min(short), 2), round(max(short), 2)) == d["short_x"]
    assert (round(min(slow), 1), round(max(slow), 1)) == d["long_slow_x"]
    assert (round(min(near), 2), round(max(near), 2)) == d["long_near_x"]
    assert (round(min(tpot), 1), round(max(tpot), 1)) == d["tpot_pct"]
    assert max(near) < 1.25 < 2.0 < min(slow)                    # two groups, not a spread the threshold cuts


def test_a_moe_dp_plan_says_its_ttft_is_a_lower_bound_for_long_outputs():
    spec = load_model_spec("Qwen/Qwen3-30B-A3B-FP8", offline=True)
    p = plan(spec, parse_gpu_spec("2xH100"), vllm_version="0.25.0", pins={"data_parallel_size": 2,
                                                                           "tensor_parallel_size": 1})
    caveats = predict(p, Workload(1000, 1000, concurrency=8)).caveats
    dp_notes = [c for c in caveats if "data parallelism" in c]
    assert len(dp_notes) == 1 and "lower bound" in dp_notes[0] and "2.1-7.4x" in dp_notes[0]
    assert len(caveats) == 2 and "fine-grained MoE" in caveats[1]     # and its low-load prefill (perf_fit)
    dense = plan(load_model_spec("Qwen/Qwen3-8B", offline=True), parse_gpu_spec("2xH200"), vllm_version="0.25.0",
                 pins={"data_parallel_size": 2})
    assert predict(dense, Workload(1000, 1000, concurrency=8)).caveats == []
