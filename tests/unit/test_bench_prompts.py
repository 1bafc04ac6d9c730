"""bench's prompts: fresh ones for every level and the warm-up, ``--prompt-pool`` reuse on purpose,
the per-level prefix-cache hit rate read from two /metrics texts, and where the report shows them.

The hit rate is computed from texts parsed by the package's own Prometheus parser; the whole
bench runs once over an httpx MockTransport that answers like a vLLM server whose prefix cache
holds every prompt it has seen (it only records what was sent and counts the hits)."""
from __future__ import annotations

import asyncio
import json
from collections import Counter

import httpx
import pytest

from vllm_ops.client._prometheus import parse_prometheus
from vllm_ops.errors import BadInput
from vllm_ops.loadtest.bench import (_PREFIX_COUNTERS, WAVE_OUTPUT, _prefix_hit_rate, arun_bench, level_seed,
                                     wave_size)
from vllm_ops.loadtest.prompts import pooled_prompts, random_token_prompts
from vllm_ops.loadtest.report import BenchReport
from vllm_ops.loadtest.stats import ServerSide, summarize

VOCAB = list(range(100, 1100))


def _key(prompt):
    return tuple(prompt)


# -- pooled_prompts ---------------------------------------------------------------------------
def test_pool_spreads_requests_over_distinct_prompts_in_passes():
    out = pooled_prompts(VOCAB, 10, 16, pool=3, seed=7)
    assert len(out) == 10 and all(len(p) == 16 and set(p) <= set(VOCAB) for p in out)
    base = random_token_prompts(VOCAB, 3, 16, seed=7)
    assert {_key(p) for p in out} == {_key(p) for p in base}        # the pool's 3 prompts, no other
    for start in (0, 3, 6):                                          # every full pass: each prompt once
        assert sorted(map(_key, out[start:start + 3])) == sorted(map(_key, base))
    assert sorted(Counter(map(_key, out)).values()) == [3, 3, 4]     # the partial last pass: 1 more


def test_pool_is_deterministic_for_a_seed():
    assert pooled_prompts(VOCAB, 12, 8, pool=4, seed=3) == pooled_prompts(VOCAB, 12, 8, pool=4, seed=3)
    assert pooled_prompts(VOCAB, 12, 8, pool=4, seed=3) != pooled_prompts(VOCAB, 12, 8, pool=4, seed=4)
    # passes come in a fresh order (over a few seeds, some pass differs from the first)
    orders = [pooled_prompts(VOCAB, 12, 8, pool=4, seed=s) for s in range(5)]
    assert any(o[0:4] != o[4:8] or o[4:8] != o[8:12] for o in orders)


def test_pool_larger_than_requests_is_every_request_its_own_prompt():
    for pool in (5, 6, 50):
        out = pooled_prompts(VOCAB, 5, 12, pool=pool, seed=1)
        assert len(out) == 5 and len({_key(p) for p in out}) == 5


@pytest.mark.parametrize("pool", [0, -1])
def test_pool_below_one_is_bad_input(pool):
    with pytest.raises(BadInput, match="prompt-pool"):
        pooled_prompts(VOCAB, 5, 12, pool=pool, seed=1)


def test_level_seeds_are_distinct():
    for seed in (0, 1, 12345, (1 << 30) - 1):
        seeds = [level_seed(seed, i) for i in range(200)]
        assert len(set(seeds)) == len(seeds)
    prompts = [random_token_prompts(VOCAB, 8, 16, level_seed(9, i)) for i in range(4)]
    assert len({_key(p) for ps in prompts for p in ps}) == 32


# -- _prefix_hit_rate from two /metrics texts ----------------------------------------------------
def _metrics(hits: float | None, queries: float | None, names=_PREFIX_COUNTERS[0]) -> object:
    lines = ["# HELP vllm:num_requests_running Number of requests in model execution batches.",
             "# TYPE vllm:num_requests_running gauge",
             'vllm:num_requests_running{engine="0",model_name="tiny"} 0.0']
    for name, val in zip(names, (hits, queries)):
        if val is not None:
            lines += [f"# TYPE {name.removesuffix('_total')} counter",
                      f'{name}{{engine="0",model_name="tiny"}} {val}']
    return parse_prometheus("\n".join(lines) + "\n")


def test_hit_rate_new_counter_names():
    assert _prefix_hit_rate(_metrics(100.0, 1000.0), _metrics(400.0, 2000.0)) == pytest.approx(0.3)


def test_hit_rate_older_vllm_counter_names():
    old = _PREFIX_COUNTERS[1]
    assert old == ("vllm:gpu_prefix_cache_hits_total", "vllm:gpu_prefix_cache_queries_total")
    assert _prefix_hit_rate(_metrics(0.0, 0.0, old), _metrics(128.0, 512.0, old)) == pytest.approx(0.25)


def test_hit_rate_sums_the_engines():
    text = ('vllm:prefix_cache_hits_total{engine="0"} %s\nvllm:prefix_cache_hits_total{engine="1"} %s\n'
            'vllm:prefix_cache_queries_total{engine="0"} %s\nvllm:prefix_cache_queries_total{engine="1"} %s\n')
    before, after = parse_prometheus(text % (0, 0, 0, 0)), parse_prometheus(text % (10, 30, 50, 50))
    assert _prefix_hit_rate(before, after) == pytest.approx(0.4)


def test_hit_rate_without_counters_is_none():
    assert _prefix_hit_rate(_metrics(None, None), _metrics(None, None)) is None
    assert _prefix_hit_rate(_metrics(1.0, None), _metrics(2.0, None)) is None   # hits alone: no rate
    assert _prefix_hit_rate(None, _metrics(2.0, 4.0)) is None                    # /metrics unreadable
    assert _prefix_hit_rate(_metrics(2.0, 4.0), None) is None


def test_hit_rate_with_no_queries_is_zero():
    assert _prefix_hit_rate(_metrics(5.0, 40.0), _metrics(5.0, 40.0)) == 0.0


# -- the whole bench over a vLLM-like MockTransport ------------------------------------------------
class _CachingServer:
    """Answers /version, /v1/models, /tokenize, streaming /v1/completions and /metrics; records the
    prompts in arrival order and counts a prompt's tokens as prefix-cache hits once it was seen."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, ...]] = []
        self.max_tokens: list[int] = []
        self.hits = self.queries = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/version":
            return httpx.Response(200, json={"version": "0.32.0"})
        if path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "tiny", "object": "model"}]})
        if path == "/tokenize":
            return httpx.Response(200, json={"tokens": VOCAB[:200], "count": 200})
        if path == "/metrics":
            return httpx.Response(200, text=(
                f'vllm:prefix_cache_hits_total{{engine="0",model_name="tiny"}} {self.hits}\n'
                f'vllm:prefix_cache_queries_total{{engine="0",model_name="tiny"}} {self.queries}\n'))
        body = json.loads(request.content)
        prompt = tuple(body["prompt"])
        self.hits += len(prompt) if prompt in self.sent else 0
        self.queries += len(prompt)
        self.sent.append(prompt)
        self.max_tokens.append(body["max_tokens"])
        await asyncio.sleep(0)
        n = body["max_tokens"]
        events = [{"choices": [{"index": 0, "text": "x"}]} for _ in range(n)]
        events.append({"choices": [], "usage": {"prompt_tokens": len(prompt), "completion_tokens": n,
                                                "total_tokens": len(prompt) + n}})
        text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})


async def _bench(server: _CachingServer, **kw) -> BenchReport:
    from vllm_ops.client import VLLMProvider

    llm = VLLMProvider(base_url="http://mock/v1", max_retries=0, transport=httpx.MockTransport(server))
    kw.setdefault("warmup", "request")
    kw.setdefault("output_len", 2)
    try:
        return await arun_bench("http://mock", provider=llm, input_len=16, sample_interval=0, **kw)
    finally:
        await llm.aclose()


def _groups(sent, n, levels):
    """The warm-up request, then each level's n requests (levels run one after the other)."""
    assert len(sent) == 1 + n * levels
    return [set(sent[:1])] + [set(sent[1 + n * i: 1 + n * (i + 1)]) for i in range(levels)]


async def test_every_level_and_the_warm_up_get_fresh_prompts():
    srv = _CachingServer()
    rep = await _bench(srv, concurrency=[1, 2, 4], num_prompts=6, seed=11)
    groups = _groups(srv.sent, 6, 3)
    assert [len(g) for g in groups] == [1, 6, 6, 6]
    assert len(set().union(*groups)) == 1 + 18                  # no two groups share a prompt
    assert [lv.server.prefix_cache_hit_rate for lv in rep.levels] == [0.0, 0.0, 0.0]
    assert rep.seed == 11 and rep.prompt_pool is None
    again = _CachingServer()
    await _bench(again, concurrency=[1, 2, 4], num_prompts=6, seed=11)
    assert _groups(again.sent, 6, 3) == groups                   # a seed gives the same prompts


async def test_a_wave_of_fresh_prompts_warms_each_level_untimed():
    srv = _CachingServer()
    rep = await _bench(srv, concurrency=[1, 3], num_prompts=5, seed=7, warmup="wave", output_len=6)
    # per level: a wave as large as its concurrency, then its 5 requests (no separate warm-up request:
    # the first level's wave does its work)
    assert len(srv.sent) == (1 + 5) + (3 + 5)
    waves, levels = [srv.sent[0:1], srv.sent[6:9]], [srv.sent[1:6], srv.sent[9:14]]
    assert len(set(srv.sent)) == len(srv.sent)                  # nothing the prefix cache could serve
    assert all(len(p) == 16 for w in waves for p in w)          # the level's prompt length
    assert srv.max_tokens[0:1] + srv.max_tokens[6:9] == [WAVE_OUTPUT] * 4 == [4] * 4
    assert [lv.completed for lv in rep.levels] == [5, 5]        # the wave is not timed
    assert rep.levels[1].total_output_tokens == 5 * 6 and rep.to_dict()["warmup"] == "wave"
    assert srv.max_tokens[1:6] + srv.max_tokens[9:14] == [6] * 10
    assert all(len(p) == 16 for lv in levels for p in lv)
    none = _CachingServer()
    await _bench(none, concurrency=[2], num_prompts=3, warmup="none")
    assert len(none.sent) == 3


@pytest.mark.parametrize("c, rate, n, size", [(8, None, 100, 8), (8, None, 5, 5), (None, 2.5, 100, 3),
                                              (None, float("inf"), 40, 40), (None, 0.2, 10, 1)])
def test_wave_size_is_what_the_level_keeps_in_flight(c, rate, n, size):
    assert wave_size(c, rate, n) == size


async def test_an_unknown_warmup_is_refused_before_any_request():
    srv = _CachingServer()
    with pytest.raises(BadInput, match="--warmup"):
        await _bench(srv, concurrency=[1], num_prompts=2, warmup="twice")
    assert srv.sent == []


async def test_prompt_pool_reuses_prompts_within_a_level_only():
    srv = _CachingServer()
    rep = await _bench(srv, concurrency=[1, 2], num_prompts=8, prompt_pool=2, seed=5)
    groups = _groups(srv.sent, 8, 2)
    assert [len(g) for g in groups] == [1, 2, 2]
    assert len(set().union(*groups)) == 5
    # 2 first sends, 6 repeats: this server caches whole prompts
    assert [lv.server.prefix_cache_hit_rate for lv in rep.levels] == [pytest.approx(0.75)] * 2
    assert rep.to_dict()["prompt_pool"] == 2


async def test_a_dataset_is_sampled_per_level_and_pooled_too(tmp_path):
    data = tmp_path / "prompts.txt"
    data.write_text("".join(f"prompt number {i}\n" for i in range(50)))
    srv = _CachingServer()
    await _bench(srv, concurrency=[1, 2], num_prompts=6, seed=2, dataset=str(data))
    warm, one, two = _groups(srv.sent, 6, 2)
    assert len(one) == len(two) == 6 and one != two                 # each level its own sample
    srv = _CachingServer()
    rep = await _bench(srv, concurrency=[1, 2], num_prompts=9, seed=2, dataset=str(data), prompt_pool=3)
    _, one, two = _groups(srv.sent, 9, 2)
    assert len(one) == len(two) == 3                                 # --prompt-pool applies to a file
    assert sorted(Counter(srv.sent[1:10]).values()) == [3, 3, 3]
    assert rep.levels[0].server.prefix_cache_hit_rate > 0.5


async def test_a_random_seed_is_drawn_and_recorded():
    a, b = _CachingServer(), _CachingServer()
    ra = await _bench(a, concurrency=[1], num_prompts=2)
    rb = await _bench(b, concurrency=[1], num_prompts=2)
    assert isinstance(ra.seed, int) and isinstance(rb.seed, int) and ra.seed != rb.seed
    assert not set(a.sent) & set(b.sent)
    replay = _CachingServer()
    await _bench(replay, concurrency=[1], num_prompts=2, seed=ra.seed)
    assert replay.sent == a.sent


async def test_prompt_pool_below_one_is_refused_before_any_request():
    srv = _CachingServer()
    with pytest.raises(BadInput, match="prompt-pool"):
        await _bench(srv, concurrency=[1], num_prompts=2, prompt_pool=0)
    assert srv.sent == []


# -- the report -------------------------------------------------------------------------------
def _report(hit: float | None) -> BenchReport:
    from vllm_ops.loadtest.stats import RequestResult

    lv = summarize([RequestResult(start=0, end=1, ok=True, chunk_times=[0.5, 1.0], output_tokens=2)],
                   concurrency=1, duration_s=1.0)
    lv.server = ServerSide(prefix_cache_hit_rate=hit)
    return BenchReport(url="http://x", model="m", input_len=16, output_len=2, num_prompts=1,
                       mode="concurrency", levels=[lv], seed=42, prompt_pool=100)


def test_report_json_has_seed_pool_and_hit_rate():
    doc = json.loads(json.dumps(_report(0.625).to_dict()))
    assert doc["seed"] == 42 and doc["prompt_pool"] == 100
    assert doc["levels"][0]["server"]["prefix_cache_hit_rate"] == 0.625


@pytest.mark.parametrize("hit, shown", [(0.6, "60%"), (0.0, "0%"), (None, "-")])
def test_table_shows_the_cache_hit_column(hit, shown):
    from rich.console import Console

    con = Console(record=True, width=250, force_terminal=False)
    _report(hit).print_table(con)
    text = con.export_text()
    header = next(line for line in text.splitlines() if "cache hit" in line)
    row = next(line for line in text.splitlines() if line.lstrip("│ ").startswith("c=1"))
    cells_h = [c.strip() for c in header.replace("┃", "│").split("│")]
    cells_r = [c.strip() for c in row.split("│")]
    assert cells_r[cells_h.index("cache hit")] == shown


@pytest.mark.parametrize("warmup, shown", [("wave", "warm-up: wave)"), (None, "prompts per level)")])
def test_table_title_says_which_warm_up_ran(warmup, shown):
    from rich.console import Console

    con = Console(record=True, width=250, force_terminal=False)
    rep = _report(0.0)
    rep.warmup = warmup
    rep.print_table(con)
    assert shown in con.export_text()
