"""Load-test statistics on known inputs, the saturation analysis, and error accounting through
the real generator + client streaming path over an httpx MockTransport."""
from __future__ import annotations

import asyncio
import json
import math

import httpx
import pytest

from vllm_ops.loadtest.generator import run_concurrency, run_rate
from vllm_ops.loadtest.prompts import load_dataset, random_token_prompts
from vllm_ops.loadtest.report import BenchReport, PlanLimits, analyse
from vllm_ops.loadtest.stats import (Distribution, RequestResult, ServerSide, gaps, max_in_flight,
                                     percentile, summarize)


def test_percentile_linear_interpolation():
    xs = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert percentile(xs, 50) == 5.5
    assert percentile(xs, 90) == pytest.approx(9.1)
    assert percentile(xs, 99) == pytest.approx(9.91)
    assert percentile(xs, 0) == 1 and percentile(xs, 100) == 10
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None
    assert percentile([10, 0, 5], 50) == 5  # unsorted input
    with pytest.raises(ValueError):
        percentile(xs, 101)


def test_itl_ttft_tpot_from_known_chunk_timestamps():
    r = RequestResult(start=10.0, end=10.5, ok=True, chunk_times=[10.1, 10.2, 10.35, 10.5],
                      output_tokens=4)
    assert r.ttft == pytest.approx(0.1)
    assert r.itls == pytest.approx([0.1, 0.15, 0.15])
    assert r.e2e == pytest.approx(0.5)
    assert r.tpot == pytest.approx((0.5 - 0.1) / 3)
    assert gaps([1.0]) == []
    assert RequestResult(start=0, end=1, ok=True, chunk_times=[0.5], output_tokens=1).tpot is None


def test_summarize_throughput_and_percentiles():
    # 4 requests over 2 s, 10 output tokens each; two overlap
    rs = [RequestResult(start=s, end=s + 1.0, ok=True, chunk_times=[s + 0.1 * (k + 1) for k in range(10)],
                        output_tokens=10, prompt_tokens=32) for s in (0.0, 0.5, 1.0, 1.0)]
    lv = summarize(rs, concurrency=2)
    assert lv.duration_s == pytest.approx(2.0)
    assert lv.completed == 4 and lv.failed == 0
    assert lv.request_throughput == pytest.approx(2.0)
    assert lv.output_throughput == pytest.approx(20.0)
    assert lv.total_prompt_tokens == 128
    assert lv.ttft_ms.p50 == pytest.approx(100.0)
    assert lv.itl_ms.count == 36 and lv.itl_ms.p50 == pytest.approx(100.0)
    assert lv.e2e_ms.p99 == pytest.approx(1000.0)
    assert lv.max_in_flight == 3
    assert lv.label == "c=2"


def test_summarize_counts_errors_and_keeps_first_distinct_messages():
    ok = RequestResult(start=0, end=1, ok=True, chunk_times=[0.5], output_tokens=1)
    bad = [RequestResult(start=0, end=0.1, error=f"ServerError: boom {i % 2}") for i in range(5)]
    lv = summarize([ok, *bad], concurrency=1, duration_s=1.0)
    assert lv.failed == 5 and lv.completed == 1
    assert lv.errors == ["ServerError: boom 0", "ServerError: boom 1"]
    assert lv.request_throughput == 1.0  # failures are not throughput
    assert lv.e2e_ms.count == 1


def test_max_in_flight_and_distribution_of_nothing():
    rs = [RequestResult(start=0, end=2), RequestResult(start=1, end=3), RequestResult(start=2, end=4)]
    assert max_in_flight(rs) == 2  # an end at t=2 frees its slot before the start at t=2
    assert Distribution.of([]).count == 0 and Distribution.of([]).p50 is None


def test_prompts_exact_length_and_seeded(tmp_path):
    a = random_token_prompts([5, 6, 7], 4, 32, seed=1)
    assert len(a) == 4 and all(len(p) == 32 and set(p) <= {5, 6, 7} for p in a)
    assert a == random_token_prompts([5, 6, 7], 4, 32, seed=1)
    f = tmp_path / "d.jsonl"
    f.write_text('{"prompt": "a"}\n{"text": "b"}\n')
    assert sorted(load_dataset(f, 2)) == ["a", "b"]
    assert load_dataset(f, 3)[2] in ("a", "b")


def _level(c, rps, waiting=0.0, running=None, kv=0.1, preempt=0.0):
    rs = [RequestResult(start=0, end=1, ok=True, chunk_times=[0.1], output_tokens=1)] * 2
    lv = summarize(rs, concurrency=c, duration_s=1.0)
    lv.request_throughput = rps
    lv.server = ServerSide(preemptions=preempt, peak_kv_cache_usage=kv, max_waiting=waiting,
                           max_running=running if running is not None else c)
    return lv


def test_saturation_bounds():
    plan = PlanLimits(max_num_seqs=8, kv_cache_tokens=4096)
    assert plan.expected_concurrency(32, 16) == 8           # min(8, 4096 // 48 = 85)
    levels = [_level(1, 5), _level(4, 15), _level(16, 16, waiting=8, running=8)]
    sat = analyse(levels, input_len=32, output_len=16, plan=plan)
    assert sat.bound == "max_num_seqs" and sat.saturated_at == "c=4"
    assert "max_num_seqs 8" in sat.reason
    sat = analyse([_level(1, 5), _level(4, 6, kv=0.99, preempt=3)], input_len=32, output_len=16)
    assert sat.bound == "kv_cache"
    sat = analyse([_level(1, 5), _level(4, 18)], input_len=32, output_len=16)
    assert sat.bound == "client_concurrency" and sat.saturated_at is None
    assert PlanLimits.from_plan_dict({"memory": {"kv_cache_tokens": 100, "max_concurrency": 2.5},
                                      "vllm_args": {"max_num_seqs": 4}}).max_num_seqs == 4


# -- error accounting through the real client path (MockTransport) --------------------------
def _sse_handler(fail_every: int, output_len: int = 4):
    counter = {"n": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.001)
        counter["n"] += 1
        if counter["n"] % fail_every == 0:
            return httpx.Response(500, json={"error": {"message": "injected", "type": "InternalServerError",
                                                       "code": 500}})
        body = json.loads(request.content)
        assert body["stream"] is True and body["ignore_eos"] is True
        n = body["max_tokens"]
        events = [{"choices": [{"index": 0, "text": "x"}]} for _ in range(n)]
        events.append({"choices": [], "usage": {"prompt_tokens": len(body["prompt"]),
                                                "completion_tokens": n, "total_tokens": n}})
        text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})

    return handler


async def _run(fail_every, mode="concurrency"):
    from vllm_ops.client import VLLMProvider

    llm = VLLMProvider(base_url="http://mock/v1", model="m", max_retries=0,
                       transport=httpx.MockTransport(_sse_handler(fail_every)))

    def stream(prompt):
        return llm.astream_events(prompt=prompt, endpoint="completions", max_tokens=4,
                                  ignore_eos=True, stream_options={"include_usage": True})

    prompts = [[1, 2, 3]] * 12
    try:
        if mode == "concurrency":
            return await run_concurrency(stream, prompts, 3, prompt_lens=[3] * 12)
        return await run_rate(stream, prompts, math.inf, prompt_lens=[3] * 12)
    finally:
        await llm.aclose()


@pytest.mark.parametrize("mode", ["concurrency", "rate"])
async def test_error_accounting_over_mock_transport(mode):
    results = await _run(fail_every=3, mode=mode)
    lv = summarize(results, concurrency=3)
    assert lv.num_requests == 12 and lv.failed == 4 and lv.completed == 8
    assert lv.total_output_tokens == 8 * 4 and lv.total_prompt_tokens == 8 * 3
    assert len(lv.errors) == 1 and "500" in lv.errors[0] and "injected" in lv.errors[0]
    assert all(r.usage_reported for r in results if r.ok)
    assert lv.itl_ms.count == 8 * 3


async def test_all_ok_over_mock_transport():
    lv = summarize(await _run(fail_every=10**9))
    assert lv.failed == 0 and lv.total_output_tokens == 48


def test_report_json_roundtrips():
    rep = BenchReport(url="u", model="m", input_len=1, output_len=1, num_prompts=1, mode="concurrency",
                      levels=[_level(1, 1.0)])
    rep.saturation = analyse(rep.levels, input_len=1, output_len=1)
    doc = json.loads(json.dumps(rep.to_dict()))
    assert doc["levels"][0]["concurrency"] == 1 and doc["saturation"]["bound"] in (
        "client_concurrency", "max_num_seqs", "kv_cache", "unknown")


# ---- where the TTFT went: vLLM's request histograms between two scrapes
def _scrape(ttft: tuple[float, int], queue: tuple[float, int], prefill: tuple[float, int],
            steps: tuple[float, int]):
    from vllm_ops.client._prometheus import parse_prometheus

    lines = []
    for name, (total, n) in (("vllm:time_to_first_token_seconds", ttft), ("vllm:request_queue_time_seconds", queue),
                             ("vllm:request_prefill_time_seconds", prefill), ("vllm:iteration_tokens_total", steps)):
        lines += [f"# TYPE {name} histogram", f'{name}_sum{{model_name="m"}} {total}',
                  f'{name}_count{{model_name="m"}} {n}']
    return parse_prometheus("\n".join(lines) + "\n")


def test_server_side_splits_the_level_ttft_from_histogram_deltas():
    from vllm_ops.loadtest.bench import server_side

    before = _scrape((1.0, 4), (0.2, 4), (0.4, 4), (1000.0, 100))
    after = _scrape((1.0 + 8 * 0.5, 12), (0.2 + 8 * 0.1, 12), (0.4 + 8 * 0.3, 12), (1000.0 + 6400.0, 164))
    s = server_side(before, after, [])
    assert s.server_ttft_ms == pytest.approx(500.0) and s.queue_ms == pytest.approx(100.0)
    assert s.prefill_ms == pytest.approx(300.0) and s.frontend_ms == pytest.approx(100.0)
    assert s.engine_steps == 64 and s.tokens_per_step == pytest.approx(100.0)
    assert s.decode_ms is None and s.server_itl_ms is None          # not exposed: None, never 0
    assert s.ttft_split() == ("server TTFT 500 ms = queued 100 + prefill 300 + API server and hand-over 100; "
                              "64 engine steps, 100 tokens per step")
    assert s.to_dict()["frontend_ms"] == pytest.approx(100.0)


def test_server_side_without_new_observations_says_nothing():
    from vllm_ops.loadtest.bench import server_side

    same = _scrape((1.0, 4), (0.2, 4), (0.4, 4), (10.0, 2))
    s = server_side(same, same, [])
    assert s.server_ttft_ms is None and s.frontend_ms is None and s.ttft_split() is None
    assert server_side(None, same, []).queue_ms is None


# ---- the load generator's own lag
def test_loop_lag_sees_a_blocked_event_loop_and_the_report_says_so():
    import asyncio
    import time

    from vllm_ops.loadtest.generator import loop_lag
    from vllm_ops.loadtest.report import client_lag_warning
    from vllm_ops.loadtest.stats import Distribution

    async def go(block_s: float) -> list[float]:
        stop = asyncio.Event()
        task = asyncio.create_task(loop_lag(stop, tick=0.005))
        for _ in range(5):
            await asyncio.sleep(0.02)
            time.sleep(block_s)                   # a busy client: nothing else runs meanwhile
        stop.set()
        return await task

    busy, idle = asyncio.run(go(0.05)), asyncio.run(go(0.0))
    assert max(busy) >= 0.045 and len(busy) >= 5
    lv = _level(8, 1.0)
    lv.client_lag_ms = Distribution.of(busy)
    line = client_lag_warning(lv)
    assert line and "event loop ran late" in line and "max" in line
    lv.client_lag_ms = Distribution.of([0.0005] * 20)
    assert client_lag_warning(lv) is None
    lv.client_lag_ms = Distribution()                  # an old report without the figure
    assert client_lag_warning(lv) is None
    assert max(idle) < 0.045
