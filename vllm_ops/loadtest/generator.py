"""The async load generator: drives one level (a concurrency or a request rate) of streaming
requests and times every chunk. Pure scheduling over an injected stream function, so it runs the
same against vLLM, a mock transport or a trivial SSE server.

``stream(prompt)`` must return an async iterator of :class:`~vllm_ops.client.StreamEvent` (what
``VLLMProvider.astream_events`` yields: decoded chunk ``data``, arrival ``time``, ``usage``, and a
final ``done`` marker) and raise on any error. As in vLLM's own benchmark, a chunk with a
non-empty ``choices`` list counts as a token chunk (its arrival time is recorded; TTFT is the
first one's, measured from just before the request is built and sent); a chunk with ``usage``
gives the exact token counts. A request ends at the arrival of ``data: [DONE]`` (else when the
stream ends).
"""
from __future__ import annotations

import asyncio
import math
import random
from time import perf_counter
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence

from vllm_ops.loadtest.stats import RequestResult

StreamFn = Callable[[Any], AsyncIterator[Any]]
ProgressFn = Callable[[int, int], None]        # (done, total)


async def timed_request(stream: StreamFn, prompt: Any, *, prompt_len: int = 0) -> RequestResult:
    """Send one streaming request; record when each token chunk arrived and the usage."""
    res = RequestResult(start=perf_counter(), prompt_tokens=prompt_len)
    times = res.chunk_times
    end = None
    try:
        async for ev in stream(prompt):
            data = ev.data
            if data is None:  # the done marker
                end = ev.time
                continue
            if data.get("choices"):
                times.append(ev.time)
            usage = ev.usage
            if usage is not None:
                res.usage_reported = True
                res.output_tokens = usage.completion_tokens
                res.prompt_tokens = usage.prompt_tokens or res.prompt_tokens
        res.end = end if end is not None else perf_counter()
        if not res.usage_reported:
            res.output_tokens = len(times)
        if not times:
            res.error = "the stream carried no tokens"
        else:
            res.ok = True
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 — any failure of one request is counted, not raised
        res.end = perf_counter()
        res.error = _one_line(exc)
    return res


async def run_concurrency(stream: StreamFn, prompts: Sequence[Any], concurrency: int, *,
                          prompt_lens: Sequence[int] | None = None,
                          progress: ProgressFn | None = None) -> list[RequestResult]:
    """Every prompt at once behind a semaphore of ``concurrency`` (as vLLM's benchmark does with
    ``--max-concurrency``): a request is sent as soon as a slot frees."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    return await run_rate(stream, prompts, math.inf, max_concurrency=concurrency,
                          prompt_lens=prompt_lens, progress=progress)


async def run_rate(stream: StreamFn, prompts: Sequence[Any], rate: float, *, seed: int = 0,
                   max_concurrency: int | None = None, prompt_lens: Sequence[int] | None = None,
                   progress: ProgressFn | None = None) -> list[RequestResult]:
    """Send at Poisson arrivals of ``rate`` requests/s (``inf``: all at once)."""
    rng = random.Random(seed)
    sem = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    done = 0

    async def one(i: int) -> RequestResult:
        nonlocal done
        if sem is None:
            r = await timed_request(stream, prompts[i], prompt_len=prompt_lens[i] if prompt_lens else 0)
        else:
            async with sem:
                r = await timed_request(stream, prompts[i], prompt_len=prompt_lens[i] if prompt_lens else 0)
        done += 1
        if progress:
            progress(done, len(prompts))
        return r

    tasks = []
    for i in range(len(prompts)):
        tasks.append(asyncio.create_task(one(i)))
        if not math.isinf(rate) and i < len(prompts) - 1:
            await asyncio.sleep(rng.expovariate(rate))
    return list(await asyncio.gather(*tasks))


async def sample_while(fetch: Callable[[], Awaitable[Any]], interval: float,
                       stop: asyncio.Event) -> list[Any]:
    """Call ``fetch()`` every ``interval`` s until ``stop`` is set; failed samples are dropped."""
    samples: list[Any] = []
    while not stop.is_set():
        try:
            samples.append(await fetch())
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 — a missed sample is not an error of the load test
            pass
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except asyncio.TimeoutError:
            pass
    return samples


LAG_TICK_S = 0.01


async def loop_lag(stop: asyncio.Event, tick: float = LAG_TICK_S) -> list[float]:
    """How late this event loop wakes up (s), sampled every ``tick`` s until ``stop`` is set: a load
    generator whose loop lags adds that lag to every TTFT and inter-token gap it measures."""
    late: list[float] = []
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t0 = loop.time()
        await asyncio.sleep(tick)
        late.append(max(loop.time() - t0 - tick, 0.0))
    return late


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]
