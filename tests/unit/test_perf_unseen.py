"""Models measured after the shipped fit, predicted with constants that never saw them
(tests/data/gpu-runs/h200x1/unseen/, 1x H200, vLLM 0.25.0, dummy weights, 2026-12-03; README there).

* t235l40: Qwen3-235B-A22B-FP8's architecture (128 experts, 8 per token, FP8 128x128 blocks, Triton FP8 MoE
  backend) cut to 40 of its 94 layers so it fits one H200. NVIDIA's public rows of this model (vLLM 0.12,
  behind a Dynamo frontend) decode at 42-58 ms per token whatever the batch, as if every expert were read every
  step; the model predicts them 40-60 % low. On vLLM 0.25 the same architecture decodes as the model says
  (routed experts only), with the 235B's held-out fold (constants fitted without any 235B row).
* l1b (Llama-3.2-1B-Instruct) and q14 (Qwen2.5-14B-Instruct): in no fit; predicted with the shipped constants.
  l1b's 64 and 256 request levels set the API server's streaming floor until session 23 (83 us per token); since
  it is re-measured on other runs (tests/data/gpu-runs/h100x1/api, 33 us) they test it: TPOT 0.82x and 0.72x.
* dsv2l (DeepSeek-Coder-V2-Lite-Instruct: MLA, 64 routed experts of width 1408, 6 per token, 2 shared; 2026-12-04):
  in no fit. Its dummy weights' router sends a batch's tokens to fewer experts than uniform routing would: at 16
  and 32 requests it decoded faster than reading those experts once at the H200's full bandwidth allows. Those
  levels (and the one at 8 requests, 1.01x that floor) are excluded, with the reason
  (``perf_model_accuracy.ROUTING_FLOOR_MARGIN``); 1 and 128 requests are scored.
* phi4m (Phi-4-mini-instruct, 3.8B dense, 2026-12-04): in no fit; predicted with the shipped constants.
* mi7, q06, q25l, q15, g2 (Mistral-7B-Instruct-v0.3, Qwen3-0.6B, Qwen2.5-32B-Instruct, Qwen2.5-1.5B-Instruct,
  gemma-2-9b-it; 2026-12-04, session 10): in no fit; measured after the host-work / API-server / published
  all-reduce form of commit fc1157d was fixed; the API server's per-request admission (``api_request_ms``) was
  added after seeing them (its constant is fitted on the other sets, not on these).
* l70f8 (nvidia/Llama-3.1-70B-Instruct-FP8: ModelOpt FP8 weights and KV cache, 80 layers; 2026-12-04, session 11):
  in no fit. Measured after the async arrival lag and the request costs' refit (commit 67e56a7), a clean test of
  those: TPOT within 7 % at 1-32 requests and 4096x512, +52 % at 128; TTFT 50-71 % high (its prefill ran at 0.63 or
  more of the FP8 peak, the one fitted FP8 fraction was 0.40). The size-dependent GEMM efficiency (gemm_w_half) was
  added after seeing it, its constants fitted without it: TTFT +22 .. +40 %, TPOT at 128 +26 %.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNSEEN = ROOT / "tests" / "data" / "gpu-runs" / "h200x1" / "unseen"


@pytest.fixture(scope="module")
def pairs(bench):
    return bench.unseen_pairs()


def test_every_unseen_level_is_answered(pairs):
    names = {c.name.split("/")[0] for c, _p in pairs}
    assert names == {"t235l40", "l1b", "q14", "dsv2l", "phi4m", "mi7", "q06", "q25l", "q15", "g2", "l70f8"}
    assert len(pairs) == 49 and all(p.tpot_ms and p.ttft_ms for _c, p in pairs)


def test_each_model_is_predicted_by_constants_that_never_saw_it(bench):
    from vllm_ops.planning import perf_fit

    assert bench.held_out_efficiency("Qwen/Qwen3-235B-A22B-FP8-L40") == \
        perf_fit.HELD_OUT["public:Qwen/Qwen3-235B-A22B-FP8"]["efficiency"]
    for m in ("meta-llama/Llama-3.2-1B-Instruct", "Qwen/Qwen2.5-14B-Instruct",
              "deepseek-ai/DeepSeek-Coder-V2-Lite-Instruct", "microsoft/Phi-4-mini-instruct",
              "mistralai/Mistral-7B-Instruct-v0.3", "Qwen/Qwen3-0.6B", "Qwen/Qwen2.5-32B-Instruct",
              "Qwen/Qwen2.5-1.5B-Instruct", "google/gemma-2-9b-it"):
        assert not any(bench.same_family(m, f) for f in perf_fit.FITTED_MODELS)
        assert bench.held_out_efficiency(m) == perf_fit.EFFICIENCY


def test_the_235b_architecture_on_vllm_025_decodes_as_modelled(pairs):
    """TPOT within 15 % at every level (-12 % .. +12 % with the session-8 constants), c=1 to c=48."""
    rows = [(c, p) for c, p in pairs if c.name.startswith("t235l40/")]
    assert len(rows) == 4
    for c, p in rows:
        assert abs(p.tpot_ms / c.tpot_ms - 1) <= 0.15, (c.name, p.tpot_ms, c.tpot_ms)


def test_the_235b_architecture_on_vllm_025_reads_only_routed_experts():
    """Fit-free: at c=1 one step takes less than reading every expert once at the H200's full bandwidth would
    (the public vLLM 0.12 rows behave as if it did: 42-58 ms at 1-20 requests)."""
    cfg = json.loads((UNSEEN / "t235l40" / "model" / "config.json").read_text(encoding="utf-8"))
    expert_bytes = cfg["num_hidden_layers"] * cfg["num_experts"] * 3 * cfg["hidden_size"] \
        * cfg["moe_intermediate_size"] * 1.0                     # FP8: one byte per weight
    all_experts_ms = expert_bytes / 4.8e12 * 1e3                 # H200 HBM3e, 4.8 TB/s
    doc = json.loads((UNSEEN / "t235l40" / "bench-1000-100-c1.json").read_text(encoding="utf-8"))
    tpot = doc["levels"][0]["tpot_ms"]["mean"]
    assert all_experts_ms > 20 and tpot < all_experts_ms / 3, (tpot, all_experts_ms)


def test_the_unseen_figures_are_the_ones_the_readme_states(bench, pairs):
    s = bench.score(pairs, len(pairs))
    assert (s["tpot_median"], s["ttft_median"]) == (6.9, 16.7), s     # 7.0 with the 83 us API floor (session 22)


def test_levels_below_the_uniform_routing_floor_are_excluded_with_the_reason(bench):
    """Fit-free: a MoE level whose TPOT is under 1.1x the roofline of reading the experts its batch routes to
    (uniform routing, 100 % of the HBM bandwidth, nothing else) routed to fewer experts; only dsv2l's 8, 16 and 32
    request levels are (0.82-1.01x); every MoE level of ours that is scored is 1.28x or more."""
    cases = bench.gpu_cases(UNSEEN) + bench.gpu_cases()
    out = sorted(c.name for c in cases if c.excluded and "router" in c.excluded)
    assert out == ["dsv2l/bench-1024-128-c32", "dsv2l/bench-1024-128-c8", "dsv2l/bench-4096-512-c16"]
    kept = [bench.routing_floor_ratio(c) for c in cases if not c.excluded]
    assert min(r for r in kept if r is not None) >= 1.28          # Mixtral at 16 requests: 1.286
