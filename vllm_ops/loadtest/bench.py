"""``run_bench``: levels of streaming load against a vLLM server → :class:`BenchReport`.

Every request is a streaming ``/v1/completions`` call through the bundled client
(``VLLMProvider.astream_events``) with
``ignore_eos: true`` and ``max_tokens = output_len`` (fixed output length) and
``stream_options.include_usage`` (exact token counts). Prompts are random token-id lists of
``input_len`` drawn from the server's own vocabulary (or a ``--dataset`` file, sampled per level),
new ones for every level and for the warm-up request (vLLM's prefix cache would otherwise serve a
prompt sent before, and the level would time cache hits, not prefills); ``prompt_pool`` N sends
each level's requests over N distinct prompts instead (prefix-cache reuse measured on purpose,
with random prompts or a dataset). Before each level, ``warmup="wave"`` (the default) sends one untimed
wave of fresh prompts of the level's length, as many at once as the level keeps in flight, 4 tokens out:
a level's first wave can pay one-time costs (new HTTP connections; on the GPU, our H200 runs of MoE
models made without it show a level's first wave 1-2 s slower than the rest, in vLLM's own prefill
histogram too: tests/unit/test_bench_first_wave.py; the work done once is Triton compiling the fused-MoE
kernel for a step shape the server has not run, which vLLM 0.25 logs as "Triton kernel JIT compilation
during inference": tests/unit/test_gpu_warmup_runs.py), and a steady-state figure must not carry them
(the wave absorbs a compile when it reaches that shape, not always: a level that still pays one shows a
mean TTFT far above its median); the first level's wave also does what a single warm-up request
would (connections, the server's first-request costs), so none is sent. ``"request"`` sends one warm-up
request before the first level and nothing more; ``"none"`` sends nothing. Between levels,
``/metrics`` is read before and after (counter deltas) and sampled during the level (peak KV
cache usage, longest queue, biggest batch).
"""
from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Callable, Sequence

from vllm_ops.errors import BadInput
from vllm_ops.loadtest.generator import loop_lag, run_concurrency, run_rate, sample_while
from vllm_ops.loadtest.prompts import (VOCAB_TEXT, in_passes, load_dataset, pooled_prompts,
                                       random_token_prompts, vocabulary_from_tokens)
from vllm_ops.loadtest.report import BenchReport, PlanLimits, analyse
from vllm_ops.loadtest.stats import Distribution, ServerSide, summarize

Progress = Callable[[str, str], None]


def _gauge_max(samples: Sequence[Any], name: str) -> float | None:
    vals = [m.value(name) for m in samples]
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    return max(vals) if vals else None


def _delta(before: Any, after: Any, name: str) -> float | None:
    if before is None or after is None:
        return None
    a, b = after.value(name), before.value(name)
    return None if a is None or b is None else a - b


def _hist_mean(before: Any, after: Any, name: str, scale: float = 1.0) -> float | None:
    """Mean of a histogram's observations made between two scrapes (``name``'s _sum and _count deltas)."""
    total, n = _delta(before, after, name + "_sum"), _delta(before, after, name + "_count")
    return None if total is None or not n else total / n * scale


def server_side(before: Any, after: Any, samples: Sequence[Any]) -> ServerSide:
    """What vLLM's /metrics say about the level between the two scrapes (None where not exposed)."""
    return ServerSide(
        preemptions=_delta(before, after, "vllm:num_preemptions_total"),
        prompt_tokens=_delta(before, after, "vllm:prompt_tokens_total"),
        generation_tokens=_delta(before, after, "vllm:generation_tokens_total"),
        peak_kv_cache_usage=_gauge_max(samples, "vllm:kv_cache_usage_perc"),
        max_waiting=_gauge_max(samples, "vllm:num_requests_waiting"),
        max_running=_gauge_max(samples, "vllm:num_requests_running"),
        prefix_cache_hit_rate=_prefix_hit_rate(before, after),
        server_ttft_ms=_hist_mean(before, after, "vllm:time_to_first_token_seconds", 1e3),
        queue_ms=_hist_mean(before, after, "vllm:request_queue_time_seconds", 1e3),
        prefill_ms=_hist_mean(before, after, "vllm:request_prefill_time_seconds", 1e3),
        decode_ms=_hist_mean(before, after, "vllm:request_decode_time_seconds", 1e3),
        server_itl_ms=_hist_mean(before, after, "vllm:inter_token_latency_seconds", 1e3),
        engine_steps=_delta(before, after, "vllm:iteration_tokens_total_count"),
        tokens_per_step=_hist_mean(before, after, "vllm:iteration_tokens_total"),
        samples=len(samples))


# prefix-cache counters: the names since vLLM 0.12.0, then the older ones (planning/versions.py, PR #29330)
_PREFIX_COUNTERS = (("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"),
                    ("vllm:gpu_prefix_cache_hits_total", "vllm:gpu_prefix_cache_queries_total"))


def _prefix_hit_rate(before: Any, after: Any) -> float | None:
    """Fraction of the level's prompt tokens vLLM served from its prefix cache (None: not exposed)."""
    for hits, queries in _PREFIX_COUNTERS:
        h, q = _delta(before, after, hits), _delta(before, after, queries)
        if h is not None and q is not None:
            return h / q if q > 0 else 0.0
    return None


WARMUPS = ("wave", "request", "none")
WAVE_OUTPUT = 4            # output tokens of a warm-up wave's requests (decode shapes are CUDA graphs built at start)
_WAVE_SEEDS = 100_000      # a level's warm-up wave draws from level_seed(seed, _WAVE_SEEDS + level)


def level_seed(seed: int, level: int) -> int:
    """The prompts' seed of level ``level`` (0: the warm-up request): distinct prompts everywhere."""
    return seed * 1_000_003 + level


def wave_size(concurrency: int | None, rate: float | None, num_prompts: int) -> int:
    """How many requests a level's warm-up wave sends at once: what the level keeps in flight (its
    concurrency; under a request rate, its first second's arrivals, all of them at ``inf``), at most
    the level's own request count."""
    if concurrency is not None:
        n = concurrency
    else:
        n = num_prompts if rate is None or math.isinf(rate) else math.ceil(rate)
    return max(1, min(n, num_prompts))


def level_prompts(level: int, *, n: int, pool: int | None, seed: int, input_len: int,
                  vocab: Sequence[int] | None = None, dataset: str | None = None) -> list[Any]:
    """The ``n`` prompts of level ``level`` (0: the warm-up) from its own seed: random token ids from
    ``vocab``, or a sample of the ``dataset`` file (a file with fewer than ``n`` prompts repeats);
    with ``pool``, passes over ``pool`` distinct ones."""
    s = level_seed(seed, level)
    if dataset:
        if pool:
            return in_passes(load_dataset(dataset, min(pool, n), s), n, s)
        return load_dataset(dataset, n, s)
    assert vocab is not None
    return pooled_prompts(vocab, n, input_len, pool, s) if pool else random_token_prompts(vocab, n, input_len, s)


def _levels(concurrency: Sequence[int] | None, request_rates: Sequence[float] | None
            ) -> tuple[str, list[tuple[int | None, float | None]]]:
    """The run's mode and its levels, each (concurrency, None) or (None, request rate)."""
    if request_rates:
        levels: list[tuple[int | None, float | None]] = [(None, float(r)) for r in request_rates]
        mode = "request_rate"
    elif concurrency:
        levels = [(int(c), None) for c in concurrency]
        mode = "concurrency"
    else:
        raise BadInput("give --concurrency or --request-rate levels")
    if any(c is not None and c < 1 for c, _ in levels) or any(r is not None and r <= 0 for _, r in levels):
        raise BadInput("concurrency levels must be ≥ 1 and request rates > 0")
    return mode, levels


async def _run_level(llm: Any, stream: Callable[..., Any], prompts: list[Any], c: int | None, r: float | None, *,
                     label: str, seed: int, prompt_lens: list[int] | None, sample_interval: float,
                     say: Progress) -> Any:
    """One level's timed requests between two /metrics scrapes (sampled during it): its LevelStats."""
    say("bench", f"{label}: {len(prompts)} requests")
    before = await _metrics_or_none(llm)
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_while(llm.ametrics, sample_interval, stop)) \
        if sample_interval > 0 else None
    lagger = asyncio.create_task(loop_lag(stop))
    last = [0.0]

    def tick(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= 2.0:
            last[0] = now
            say("bench", f"{label}: {done}/{total} done")

    t0 = time.perf_counter()
    if c is not None:
        results = await run_concurrency(stream, prompts, c, prompt_lens=prompt_lens, progress=tick)
    else:
        results = await run_rate(stream, prompts, r, seed=seed, prompt_lens=prompt_lens, progress=tick)
    duration = time.perf_counter() - t0
    stop.set()
    samples = await sampler if sampler is not None else []
    lags = await lagger
    after = await _metrics_or_none(llm)
    stats = summarize(results, concurrency=c, request_rate=r, duration_s=duration)
    stats.server = server_side(before, after, samples)
    stats.client_lag_ms = Distribution.of(lags)
    say("bench", f"{label}: {stats.request_throughput:.2f} req/s, "
                 f"{stats.output_throughput:.1f} tok/s, {stats.failed} failed")
    return stats


async def _resolve_model(llm: Any, url: str, model: str | None) -> tuple[str, str | None]:
    """The model to bench (the first base model the server lists when none is given) and the server's version."""
    from vllm_ops.client import VLLMError

    try:
        version = await llm.aversion()
    except VLLMError:
        version = None
    if model is None:
        models = await llm.alist_models()
        base = [m for m in models if m.parent is None] or models
        if not base:
            raise BadInput(f"{url} lists no models")
        model = base[0].id
    return model, version


async def arun_bench(url: str, *, model: str | None = None,
                     concurrency: Sequence[int] | None = (1, 4, 16, 64),
                     request_rates: Sequence[float] | None = None, num_prompts: int = 100,
                     input_len: int = 128, output_len: int = 128, dataset: str | None = None,
                     plan: PlanLimits | None = None, api_key: str | None = None, seed: int | None = None,
                     prompt_pool: int | None = None, warmup: str = "wave",
                     sample_interval: float = 0.5, timeout: float = 600.0,
                     progress: Progress | None = None, provider: Any = None) -> BenchReport:
    from vllm_ops.client import VLLMProvider

    mode, levels = _levels(concurrency, request_rates)
    if num_prompts < 1 or output_len < 1 or (dataset is None and input_len < 1):
        raise BadInput("num-prompts, input-len and output-len must be at least 1")
    if prompt_pool is not None and prompt_pool < 1:
        raise BadInput("--prompt-pool must be at least 1")
    if warmup not in WARMUPS:
        raise BadInput(f"--warmup must be one of {', '.join(WARMUPS)}, not {warmup!r}")
    if seed is None:
        import random

        seed = random.SystemRandom().randrange(1 << 30)
    say = progress or (lambda stage, detail="": None)
    top = max([c or 0 for c, _ in levels] + [num_prompts if mode == "request_rate" else 0, 1])
    own = provider is None
    llm = provider or VLLMProvider.from_root_url(url, api_key=api_key, model=model, max_retries=0,
                                                 max_connections=top + 8, timeout=timeout)
    try:
        model, version = await _resolve_model(llm, url, model)
        llm.model = model

        vocab = None
        if not dataset:
            tok = await llm.atokenize(VOCAB_TEXT, add_special_tokens=False)
            vocab = vocabulary_from_tokens([tok.tokens])
        source = dict(seed=seed, input_len=input_len, vocab=vocab, dataset=dataset)
        prompt_lens = None if dataset else [input_len] * num_prompts
        include_usage = {"include_usage": True}

        def stream(prompt: Any, max_tokens: int = output_len):
            return llm.astream_events(prompt, endpoint="completions", model=model, max_tokens=max_tokens,
                                      temperature=0.0, ignore_eos=True, stream_options=include_usage)

        if warmup == "request":
            # one warm-up request (not timed): connections, the server's first-request costs (a wave,
            # sent before every level, does this work too)
            say("warm-up", f"{model} at {url}")
            async for _ in stream(level_prompts(0, n=1, pool=None, **source)[0]):
                pass

        report = BenchReport(url=url, model=model, input_len=input_len, output_len=output_len,
                             num_prompts=num_prompts, mode=mode, dataset=dataset, version=version, seed=seed,
                             prompt_pool=prompt_pool, warmup=warmup)
        for i, (c, r) in enumerate(levels, start=1):
            label = f"concurrency {c}" if c is not None else f"rate {r:g}/s"
            if warmup == "wave":
                n = wave_size(c, r, num_prompts)
                say("warm-up", f"{label}: one wave of {n} requests, not timed")
                wave = level_prompts(_WAVE_SEEDS + i, n=n, pool=None, **source)
                await run_concurrency(lambda p: stream(p, min(output_len, WAVE_OUTPUT)), wave, n)
            prompts = level_prompts(i, n=num_prompts, pool=prompt_pool, **source)
            report.levels.append(await _run_level(llm, stream, prompts, c, r, label=label, seed=seed,
                                                  prompt_lens=prompt_lens, sample_interval=sample_interval,
                                                  say=say))
        report.saturation = analyse(report.levels, input_len=input_len, output_len=output_len, plan=plan)
        return report
    finally:
        if own:
            await llm.aclose()


async def _metrics_or_none(llm: Any) -> Any:
    from vllm_ops.client import VLLMError

    try:
        return await llm.ametrics()
    except VLLMError:
        return None


def run_bench(url: str, **kwargs: Any) -> BenchReport:
    """Synchronous :func:`arun_bench`."""
    return asyncio.run(arun_bench(url, **kwargs))


def plan_limits_for(url: str) -> PlanLimits | None:
    """The plan of a running deployment serving ``url`` (from ``vllm-ops launch`` state), if any."""
    try:
        from urllib.parse import urlparse

        from vllm_ops.launch.state import default_state_dir
    except Exception:  # noqa: BLE001 — the launch stage is optional here
        return None
    import json

    port = urlparse(url).port
    d = default_state_dir() / "deployments"
    if port is None or not d.is_dir():
        return None
    for f in sorted(d.glob("*.json")):
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("port") == port and isinstance(doc.get("plan"), dict):
            return PlanLimits.from_plan_dict(doc["plan"], source=str(f))
    return None
