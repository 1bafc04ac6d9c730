"""Pure statistics of a load test: per-request timings → per-level figures. No I/O.

Definitions (the same as vLLM's own serving benchmark, so the two can be compared):

- **TTFT**: from sending the request to the first streamed chunk that carries a choice.
- **ITL** (inter-token latency): the gaps between consecutive choice chunks of one request.
- **TPOT**: ``(e2e - ttft) / (output_tokens - 1)`` per request (only when output_tokens > 1).
- **E2E**: from sending the request to the end of its stream.
- **Duration** of a level: from its first request sent to its last request finished; request
  and token throughput divide by it.
- Percentiles interpolate linearly between closest ranks (numpy's default "linear" method).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

PERCENTILES = (50, 90, 99)


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0–100) with linear interpolation; None for no values."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0..100, not {p}")
    xs = sorted(values)
    if not xs:
        return None
    if len(xs) == 1:
        return float(xs[0])
    rank = (len(xs) - 1) * p / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(xs) - 1)
    frac = rank - lo
    return float(xs[lo] + (xs[hi] - xs[lo]) * frac)


def gaps(timestamps: Sequence[float]) -> list[float]:
    """Differences between consecutive timestamps (the ITLs of one request's chunks)."""
    return [b - a for a, b in zip(timestamps, timestamps[1:])]


@dataclass
class RequestResult:
    """One request as the load generator saw it. Times are seconds (perf_counter based)."""

    start: float                                # when the request was sent
    end: float = 0.0                            # when the stream ended (or the error came)
    ok: bool = False
    error: str | None = None
    chunk_times: list[float] = field(default_factory=list)   # arrival of each choice chunk
    output_tokens: int = 0                      # usage.completion_tokens (else the chunk count)
    prompt_tokens: int = 0                      # usage.prompt_tokens (else the intended length)
    usage_reported: bool = False

    @property
    def ttft(self) -> float | None:
        return self.chunk_times[0] - self.start if self.chunk_times else None

    @property
    def e2e(self) -> float:
        return self.end - self.start

    @property
    def itls(self) -> list[float]:
        return gaps(self.chunk_times)

    @property
    def tpot(self) -> float | None:
        if self.ttft is None or self.output_tokens <= 1:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)


@dataclass
class Distribution:
    """Summary of one latency figure, in milliseconds."""

    count: int = 0
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, seconds: Iterable[float]) -> "Distribution":
        ms = [s * 1000.0 for s in seconds]
        if not ms:
            return cls()
        return cls(count=len(ms), mean=sum(ms) / len(ms), p50=percentile(ms, 50),
                   p90=percentile(ms, 90), p99=percentile(ms, 99), max=max(ms))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ServerSide:
    """What /metrics said about a level (None where the server did not expose it)."""

    preemptions: float | None = None            # delta of vllm:num_preemptions_total
    prompt_tokens: float | None = None          # delta of vllm:prompt_tokens_total
    generation_tokens: float | None = None      # delta of vllm:generation_tokens_total
    peak_kv_cache_usage: float | None = None    # max sampled vllm:kv_cache_usage_perc (0–1)
    max_waiting: float | None = None            # max sampled vllm:num_requests_waiting
    max_running: float | None = None            # max sampled vllm:num_requests_running
    prefix_cache_hit_rate: float | None = None  # prompt tokens served from the prefix cache / prompt tokens
    # where the time went, by vLLM's own request histograms (means over the level, ms): the server's TTFT
    # (from the request's arrival in the API server) = queue (waiting in the engine) + prefill (scheduled to
    # first token) + the rest (the API server and its hand-over to the engine: tokenising, queues, IPC)
    server_ttft_ms: float | None = None         # vllm:time_to_first_token_seconds
    queue_ms: float | None = None               # vllm:request_queue_time_seconds
    prefill_ms: float | None = None             # vllm:request_prefill_time_seconds
    decode_ms: float | None = None              # vllm:request_decode_time_seconds
    server_itl_ms: float | None = None          # vllm:inter_token_latency_seconds
    engine_steps: float | None = None           # count of vllm:iteration_tokens_total (engine steps run)
    tokens_per_step: float | None = None        # its mean: tokens (prompt + decode) per engine step
    samples: int = 0

    @property
    def frontend_ms(self) -> float | None:
        """The server's TTFT not spent queued or prefilling in the engine (None when a part is missing)."""
        if None in (self.server_ttft_ms, self.queue_ms, self.prefill_ms):
            return None
        return self.server_ttft_ms - self.queue_ms - self.prefill_ms  # type: ignore[operator]

    def ttft_split(self) -> str | None:
        """One line: the server's TTFT and its parts, engine steps and tokens per step (None: not exposed)."""
        if self.frontend_ms is None:
            return None
        steps = "" if self.engine_steps is None or self.tokens_per_step is None else \
            f"; {self.engine_steps:.0f} engine steps, {self.tokens_per_step:.0f} tokens per step"
        return (f"server TTFT {self.server_ttft_ms:.0f} ms = queued {self.queue_ms:.0f} + prefill "
                f"{self.prefill_ms:.0f} + API server and hand-over {self.frontend_ms:.0f}{steps}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "frontend_ms": self.frontend_ms}


@dataclass
class LevelStats:
    """The figures of one load level (one concurrency or one request rate)."""

    concurrency: int | None
    request_rate: float | None
    num_requests: int
    completed: int
    failed: int
    duration_s: float
    request_throughput: float                   # completed requests / s
    output_throughput: float                    # output tokens / s
    total_output_tokens: int
    total_prompt_tokens: int
    ttft_ms: Distribution
    itl_ms: Distribution
    tpot_ms: Distribution
    e2e_ms: Distribution
    errors: list[str] = field(default_factory=list)          # first distinct messages
    max_in_flight: int = 0
    server: ServerSide = field(default_factory=ServerSide)
    client_lag_ms: Distribution = field(default_factory=Distribution)   # the bench's own event-loop lag

    @property
    def label(self) -> str:
        if self.concurrency is not None:
            return f"c={self.concurrency}"
        if self.request_rate is None or math.isinf(self.request_rate):
            return "rate=inf"
        return f"rate={self.request_rate:g}/s"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["server"] = self.server.to_dict()
        if d["request_rate"] is not None and math.isinf(d["request_rate"]):
            d["request_rate"] = "inf"
        return d


def max_in_flight(results: Sequence[RequestResult]) -> int:
    """The most requests that were open at the same instant."""
    events = sorted([(r.start, 1) for r in results] + [(r.end, -1) for r in results],
                    key=lambda e: (e[0], e[1]))
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def summarize(results: Sequence[RequestResult], *, concurrency: int | None = None,
              request_rate: float | None = None, duration_s: float | None = None,
              max_errors: int = 5) -> LevelStats:
    """Per-level figures from per-request results.

    ``duration_s`` defaults to first start → last end. Failed requests count in ``failed`` and
    their first distinct messages (at most ``max_errors``) in ``errors``; they add no latency.
    """
    ok = [r for r in results if r.ok]
    bad = [r for r in results if not r.ok]
    if duration_s is None:
        duration_s = (max(r.end for r in results) - min(r.start for r in results)) if results else 0.0
    out_tokens = sum(r.output_tokens for r in ok)
    errors: list[str] = []
    for r in bad:
        msg = r.error or "unknown error"
        if msg not in errors:
            errors.append(msg)
        if len(errors) >= max_errors:
            break
    per_s = (lambda x: x / duration_s) if duration_s > 0 else (lambda x: 0.0)
    return LevelStats(
        concurrency=concurrency, request_rate=request_rate, num_requests=len(results),
        completed=len(ok), failed=len(bad), duration_s=duration_s,
        request_throughput=per_s(len(ok)), output_throughput=per_s(out_tokens),
        total_output_tokens=out_tokens, total_prompt_tokens=sum(r.prompt_tokens for r in ok),
        ttft_ms=Distribution.of(r.ttft for r in ok if r.ttft is not None),
        itl_ms=Distribution.of(x for r in ok for x in r.itls),
        tpot_ms=Distribution.of(t for r in ok if (t := r.tpot) is not None),
        e2e_ms=Distribution.of(r.e2e for r in ok),
        errors=errors, max_in_flight=max_in_flight(results),
    )
