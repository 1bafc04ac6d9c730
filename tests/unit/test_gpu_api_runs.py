"""vLLM's API server at high load: Llama-3.2-1B and Qwen2.5-1.5B on one H100 host, vLLM 0.25.0, dummy weights
(tests/data/gpu-runs/h100x1/api/, session 23; predictions committed before the run, README there).

What it shows: on one host both models behave alike. At 128 requests the API server falls behind the engine and
vLLM merges a request's pending tokens into one SSE chunk (1.5-3.3 tokens per chunk), so it streams far past the
83 us per token that ``perf_fit.API_TOKEN_US`` said until then (set on another host from Llama-3.2-1B at 1.04 tokens
per chunk). Its CPU time per streamed token at the decode-dominated level (128x512, 128 requests: 32 and 34 us) is the
re-measured constant (33 us); these runs set it, so they are no held-out test of it.
"""
from __future__ import annotations

import json
from pathlib import Path

from vllm_ops.planning import perf_fit

API = Path(__file__).resolve().parents[1] / "data" / "gpu-runs" / "h100x1" / "api"


def _doc(run: str, shape: str) -> dict:
    return json.loads((API / run / f"bench-{shape}.json").read_text(encoding="utf-8"))


def _level(run: str, shape: str) -> dict:
    return _doc(run, shape)["levels"][0]


def _tokens_per_chunk(lv: dict) -> float:
    """Tokens after the first over the inter-token samples the client saw (one per SSE chunk)."""
    n = lv["completed"]
    return (lv["total_output_tokens"] - n) / lv["itl_ms"]["count"]


def _api_cpu_us_per_token(run: str, shape: str) -> float:
    """CPU seconds of vLLM's API server process during the level (cpu.py before/after) per streamed token."""
    before, after = (json.loads((API / run / f"cpu-{shape}.{w}").read_text(encoding="utf-8"))
                     for w in ("before", "after"))
    (pid,) = [p for p, (name, _t) in after.items() if "vllm.entrypoints.openai.api_server" in name]
    return 1e6 * (after[pid][1] - before[pid][1]) / _level(run, shape)["total_output_tokens"]


def test_both_models_merge_tokens_into_chunks_at_128_requests_on_one_host():
    for run in ("l1b", "q15"):
        assert _tokens_per_chunk(_level(run, "1024-128-c1")) < 1.02
        for shape in ("1024-128-c128", "128-512-c128"):
            assert _tokens_per_chunk(_level(run, shape)) > 1.4, (run, shape)
        # 128x512 at 128 requests: past 30,000 tokens/s, where 83 us per token allowed 12,000
        assert _level(run, "128-512-c128")["output_throughput"] > 30_000


def test_the_api_servers_cpu_per_streamed_token_is_the_constant():
    cpu = [_api_cpu_us_per_token(run, "128-512-c128") for run in ("l1b", "q15")]
    assert [round(x) for x in cpu] == [32, 34]
    assert perf_fit.API_TOKEN_US == round(sum(cpu) / 2) == 33
    assert perf_fit._eff({"api_token_us": 83.0}).api_token_us == 33.0   # measured: wins over a stored fold value


def test_the_printed_predictions_at_128_requests_were_high_and_the_floor_bound_them():
    """What bench printed from the plan made on the machine (83 us floor): 2.8-2.9x the measured TPOT at 128x512."""
    for run, x in (("l1b", 2.91), ("q15", 2.78)):
        d = _doc(run, "128-512-c128")
        printed = d["predicted"][0]["predicted"]
        assert round(printed["tpot_ms"] / d["levels"][0]["tpot_ms"]["mean"], 2) == x
        assert printed["bound"] == "api-server"
