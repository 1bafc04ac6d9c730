"""The async load generator: drives one level (a concurrency or a request rate) of streaming
requests and times every chunk. Pure scheduling over an injected stream function, so it runs the
same against vLLM, a mock transport or a trivial SSE server.

``stream(prompt)`` must return an async iterator of decoded stream chunks (the JSON objects of
the ``data:`` events; ``[DONE]`` ends it) and raise on any error. A chunk with a non-empty
``choices`` list counts as a token chunk (its arrival time is recorded); a chunk with ``usage``
gives the exact token counts.
"""
from __future__ import annotations

import asyncio
import math
import random
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence

from vllm_ops.loadtest.stats import RequestResult

StreamFn = Callable[[Any], AsyncIterator[dict]]
ProgressFn = Callable[[int, int], None]        # (done, total)


async def timed_request(stream: StreamFn, prompt: Any, *, prompt_len: int = 0) -> RequestResult:
    """Send one streaming request; record when each token chunk arrived and the usage."""
    res = RequestResult(start=time.perf_counter(), prompt_tokens=prompt_len)
    chunks = 0
    try:
        async for chunk in stream(prompt):
            now = time.perf_counter()
            if chunk.get("choices"):
                res.chunk_times.append(now)
                chunks += 1
            usage = chunk.get("usage")
            if usage:
                res.usage_reported = True
                res.output_tokens = int(usage.get("completion_tokens") or 0)
                res.prompt_tokens = int(usage.get("prompt_tokens") or res.prompt_tokens)
        res.end = time.perf_counter()
        if not res.usage_reported:
            res.output_tokens = chunks
        if not res.chunk_times:
            res.error = "the stream carried no tokens"
        else:
            res.ok = True
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 — any failure of one request is counted, not raised
        res.end = time.perf_counter()
        res.error = _one_line(exc)
    return res


async def run_concurrency(stream: StreamFn, prompts: Sequence[Any], concurrency: int, *,
                          prompt_lens: Sequence[int] | None = None,
                          progress: ProgressFn | None = None) -> list[RequestResult]:
    """Keep ``concurrency`` requests in flight until every prompt has been sent."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    results: list[RequestResult | None] = [None] * len(prompts)
    next_i = 0
    done = 0

    async def worker() -> None:
        nonlocal next_i, done
        while next_i < len(prompts):
            i = next_i
            next_i += 1
            results[i] = await timed_request(stream, prompts[i],
                                             prompt_len=prompt_lens[i] if prompt_lens else 0)
            done += 1
            if progress:
                progress(done, len(prompts))

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(prompts)))))
    return [r for r in results if r is not None]


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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]
