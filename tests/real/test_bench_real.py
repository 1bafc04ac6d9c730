"""A short real bench against the vLLM CPU server: figures are consistent."""
from __future__ import annotations

import json

import pytest

from tests.support.proxy import FaultProxy
from vllm_ops.loadtest import run_bench

pytestmark = [pytest.mark.real, pytest.mark.slow]


def test_short_bench_figures_are_consistent(vllm_server, run_cli, tmp_path):
    png = tmp_path / "bench.png"
    rc, out, err = run_cli("bench", "--url", vllm_server.root_url, "--concurrency", "1,4",
                           "--num-prompts", "8", "--input-len", "32", "--output-len", "16",
                           "--json", "--plot", str(png), "--sample-interval", "0.2")
    assert rc == 0, err
    doc = json.loads(out)
    assert [lv["concurrency"] for lv in doc["levels"]] == [1, 4]
    # each level was warmed by an untimed wave (1, then 4 requests) sent before its first /metrics scrape
    assert doc["warmup"] == "wave" and "one wave of 4 requests, not timed" in err
    for lv in doc["levels"]:
        assert lv["failed"] == 0 and lv["errors"] == []
        assert lv["completed"] == 8
        assert lv["total_output_tokens"] == 8 * 16
        assert lv["total_prompt_tokens"] == 8 * 32
        assert lv["ttft_ms"]["count"] == 8 and lv["ttft_ms"]["p50"] > 0
        assert lv["e2e_ms"]["p50"] >= lv["ttft_ms"]["p50"]
        assert lv["request_throughput"] > 0
        assert lv["output_throughput"] == pytest.approx(lv["request_throughput"] * 16)
        # the server counted the same tokens (only this bench runs during the level)
        assert lv["server"]["generation_tokens"] == 8 * 16
        assert lv["server"]["prompt_tokens"] == 8 * 32
        assert lv["server"]["preemptions"] == 0
        # where the TTFT went, by vLLM's own histograms: parts that add up, measured for these 8 requests
        srv = lv["server"]
        assert 0 < srv["server_ttft_ms"] <= lv["ttft_ms"]["max"] * 1.05, srv
        assert srv["queue_ms"] >= 0 and srv["prefill_ms"] > 0 and srv["decode_ms"] > 0, srv
        assert srv["queue_ms"] + srv["prefill_ms"] <= srv["server_ttft_ms"] * 1.05 + 5, srv
        assert srv["frontend_ms"] == pytest.approx(srv["server_ttft_ms"] - srv["queue_ms"] - srv["prefill_ms"])
        assert srv["server_itl_ms"] > 0 and srv["engine_steps"] >= 16, srv   # >= 16 decode steps at c=1
        assert 1 <= srv["tokens_per_step"] <= 32 + 4, srv
        assert lv["client_lag_ms"]["count"] > 0 and lv["client_lag_ms"]["max"] >= 0   # the bench's own loop
    assert doc["levels"][1]["max_in_flight"] <= 4
    assert doc["saturation"]["bound"] in ("client_concurrency", "max_num_seqs", "kv_cache")
    assert png.stat().st_size > 1000 and "bench:" in err


def test_errors_are_counted_through_a_failing_proxy(vllm_server):
    with FaultProxy(vllm_server.root_url, base_model=vllm_server.model) as proxy:
        proxy.set("fail_some", fail_every=3)
        report = run_bench(proxy.root_url, concurrency=[2], num_prompts=9, input_len=8, output_len=4,
                           sample_interval=0, warmup="request")
    lv = report.levels[0]
    # the warm-up request is generation request 1: requests 3, 6, 9 of the proxy's count fail
    assert lv.failed == 3 and lv.completed == 6
    assert lv.total_output_tokens == 6 * 4
    assert "500" in lv.errors[0] and "injected" in lv.errors[0]
    assert not report.ok


# The CPU build's KV block is 128 tokens and vLLM caches full blocks only: a 160-token prompt sent
# again is served 128 of its 160 tokens from the prefix cache (0.8 of it).
_CACHED_LEN = 160


def test_fresh_prompts_miss_and_a_prompt_pool_hits_the_prefix_cache(vllm_server, run_cli):
    def bench(*extra: str) -> dict:
        rc, out, err = run_cli("bench", "--url", vllm_server.root_url, "--num-prompts", "8",
                               "--input-len", str(_CACHED_LEN), "--output-len", "2", "--sample-interval", "0",
                               "--json", "--quiet", *extra)
        assert rc == 0, err
        return json.loads(out)

    fresh = bench("--concurrency", "1,2")
    assert isinstance(fresh["seed"], int) and fresh["prompt_pool"] is None
    assert [lv["server"]["prefix_cache_hit_rate"] for lv in fresh["levels"]] == [0.0, 0.0]
    # 2 prompts sent 4 times each, one at a time: the 6 repeats hit 128 of 160 tokens → 0.6
    pooled = bench("--concurrency", "1", "--prompt-pool", "2")
    assert pooled["prompt_pool"] == 2
    (lv,) = pooled["levels"]
    assert lv["server"]["prompt_tokens"] == 8 * _CACHED_LEN
    assert lv["server"]["prefix_cache_hit_rate"] == pytest.approx(6 * 128 / (8 * _CACHED_LEN), abs=0.05)
