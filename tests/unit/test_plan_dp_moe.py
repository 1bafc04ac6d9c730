"""--data-parallel-size: each DP rank holds its own attention, embeddings and KV cache; a MoE model's routed experts
are split over all TP x DP ranks (vLLM shards them tensor-parallel over the DP group, or expert-parallel: the same
bytes per GPU). The layout never asks for more GPUs than there are."""
from __future__ import annotations

import pytest

from vllm_ops.hardware import parse_gpu_spec
from vllm_ops.models import load_model_spec
from vllm_ops.planning import plan
from vllm_ops.planning.memory import expert_fraction, weights_per_gpu_bytes

GiB = 1024 ** 3


def _plan(model: str, gpus: str, **pins):
    return plan(load_model_spec(model, offline=True), parse_gpu_spec(gpus), vllm_version="0.25.0", pins=pins)


def test_moe_experts_split_over_the_dp_ranks_attention_and_embeddings_are_not():
    spec = load_model_spec("Qwen/Qwen3-235B-A22B-FP8", offline=True)
    assert 0.9 < expert_fraction(spec) < 1.0
    tp2 = weights_per_gpu_bytes(spec, 2, 1)
    dp2 = weights_per_gpu_bytes(spec, 1, 1, dp=2)
    # DP2 holds all of the attention and the embeddings where TP2 holds half: a few GiB more, experts the same
    assert 3.0 < (dp2 - tp2) / GiB < 6.0
    # a dense model's DP ranks are whole copies: dp does not split anything
    dense = load_model_spec("Qwen/Qwen3-8B", offline=True)
    assert weights_per_gpu_bytes(dense, 1, 1, dp=2) == weights_per_gpu_bytes(dense, 1, 1)


def test_qwen3_235b_fits_two_h200s_as_two_dp_ranks():
    p = _plan("Qwen/Qwen3-235B-A22B-FP8", "2xH200", data_parallel_size=2, tensor_parallel_size=1)
    va = p.vllm_args
    assert (va["tensor_parallel_size"], va["pipeline_parallel_size"], va["data_parallel_size"]) == (1, 1, 2)
    assert p.fits and 112 < p.memory.weights_gib < 117
    assert p.memory.kv_bytes_per_token == 2 * _plan("Qwen/Qwen3-235B-A22B-FP8", "2xH200").memory.kv_bytes_per_token
    assert "routed experts over TP x DP=2" in " ".join(p.explain)


@pytest.mark.parametrize("model", ["Qwen/Qwen3-235B-A22B-FP8", "meta-llama/Llama-3.1-70B-Instruct"])
def test_a_pinned_dp_never_spreads_over_more_gpus_than_there_are(model):
    """Before: with TP 1 and DP 2 pinned on 2 GPUs the search added PP 2 (4 GPUs, "fits")."""
    p = _plan(model, "2xH200", data_parallel_size=2)
    va = p.vllm_args
    assert va["tensor_parallel_size"] * va["pipeline_parallel_size"] * va["data_parallel_size"] <= 2
    if "70B" in model:
        assert not p.fits and p.failure_stage == "weights"   # 131 GiB of bf16 weights per DP rank
        assert "no layout of these 2 GPU(s) holds the model" in p.reasons["pipeline_parallel_size"]


def test_a_dp_server_splits_its_load_over_the_ranks():
    """--concurrency is the server's: each of the DP ranks (own scheduler, own KV cache) runs its share; TTFT/TPOT
    are one rank's, throughput the server's (before: one rank was simulated with the whole load)."""
    import dataclasses

    from vllm_ops.planning.perf_lockstep import LockStep
    from vllm_ops.planning.performance import Workload, predict

    p = _plan("Qwen/Qwen3-235B-A22B-FP8", "2xH200", data_parallel_size=2, tensor_parallel_size=1)
    whole = predict(p, Workload(1000, 100, concurrency=16))
    one = dataclasses.replace(p, vllm_args={**p.vllm_args, "data_parallel_size": 1})
    # the same rank's cost (its MoE sees both ranks' tokens) at half the load, simulated directly
    from vllm_ops.planning import perf_fit, performance
    spec = load_model_spec("Qwen/Qwen3-235B-A22B-FP8", offline=True)
    cost, _ = performance.step_cost(p, spec, perf_fit.EFFICIENCY)
    trace: list = []
    half = performance._run(one, Workload(1000, 100, concurrency=8), cost, [], trace=trace)
    # the ranks step together (MoE layers span them): the rank's steps wait out the other rank's (perf_lockstep)
    locked = performance._run(one, Workload(1000, 100, concurrency=8), cost, [],
                              step=LockStep(trace, 1).wrap(cost.step_ms))
    assert whole.tpot_ms == pytest.approx(locked.tpot_ms) and whole.ttft_ms == pytest.approx(locked.ttft_ms)
    assert whole.tpot_ms > half.tpot_ms
    assert whole.output_tokens_per_s == pytest.approx(2 * locked.output_tokens_per_s)
    assert any("--data-parallel-size 2" in n and "8 of the 16" in n for n in whole.notes)
