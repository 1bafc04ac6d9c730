"""The checks of ``vllm-ops validate``, each against a live server through the bundled client.

Every check returns a :class:`CheckResult` (pass / fail / skip with its reason) and never raises:
an unexpected error is a ``fail`` with its one-line message. Each check is written so that a
server misbehaving in exactly its way makes it fail (``tests/support/proxy.py`` proves each).
The LoRA checks live in :mod:`.lora`.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from vllm_ops.client import NotFoundError, VLLMError, VLLMProvider
from vllm_ops.loadtest.stats import percentile
from vllm_ops.validate import constraints
from vllm_ops.validate.report import FAIL, PASS, SKIP, CheckResult

REQUIRED_METRICS = (
    "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
    "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
    "vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds", "vllm:num_preemptions_total",
)
PROMPT = "The capital of France is"
TOKENIZE_TEXT = "Hello world! vLLM validate: 0123456789 {\"a\": 1}"


class CheckFailed(Exception):
    """Raised inside a check: a ``fail`` with this message."""


class CheckSkipped(Exception):
    """Raised inside a check: a ``skip`` with this reason."""


@dataclass
class Context:
    llm: VLLMProvider
    url: str
    model: str | None
    loras: dict[str, str] = field(default_factory=dict)   # name → path on the server
    concurrency: int = 8
    repeats: int = 3
    make_adapter: bool = True
    # LoRA fingerprints (vllm_ops.validate.lora): the base's, each adapter's solo one, the noise
    base_print: list[Any] | None = None
    prints: dict[str, list[Any]] = field(default_factory=dict)
    noise: float = 0.0


async def run_check(name: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> CheckResult:
    """Run one check body: return value (detail, data) → pass; CheckFailed/any error → fail."""
    t0 = time.perf_counter()
    try:
        out = await fn(*args)
        detail, data = out if isinstance(out, tuple) else (out or "", {})
        status = PASS
    except CheckSkipped as exc:
        status, detail, data = SKIP, str(exc), {}
    except CheckFailed as exc:
        status, detail, data = FAIL, str(exc), {}
    except VLLMError as exc:
        status, detail, data = FAIL, " ".join(str(exc).split())[:300], {}
    except Exception as exc:  # noqa: BLE001 — a check never crashes the report
        status, detail, data = FAIL, f"{type(exc).__name__}: {' '.join(str(exc).split())[:280]}", {}
    return CheckResult(name, status, detail, (time.perf_counter() - t0) * 1000.0, data)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 1)


# -- server basics -------------------------------------------------------------------------
async def require_health(llm: VLLMProvider) -> CheckResult:
    """``GET /health`` once, before any other check: an unreachable or unhealthy server raises the
    client's :class:`VLLMError` naming the URL; a healthy one is the ``health`` check's pass."""
    t0 = time.perf_counter()
    await llm.arequire_healthy()
    return CheckResult("health", PASS, "GET /health: 200", (time.perf_counter() - t0) * 1000.0, {})


async def check_version(ctx: Context) -> Any:
    from vllm_ops.client._base import parse_version

    v = await ctx.llm.aversion()
    if parse_version(v) is None:
        raise CheckFailed(f"GET /version gave an unreadable version {v!r}")
    return f"vLLM {v}", {"version": v}


async def check_model_listed(ctx: Context) -> Any:
    models = await ctx.llm.alist_models()
    bases = [m.id for m in models if m.parent is None]
    if ctx.model is None:
        if not bases:
            raise CheckFailed(f"GET /v1/models lists no base model ({[m.id for m in models]})")
        ctx.model = bases[0]
        ctx.llm.model = ctx.model
        return f"serving {ctx.model}", {"models": [m.id for m in models]}
    if ctx.model not in bases:
        raise CheckFailed(f"{ctx.model!r} is not listed as a base model by GET /v1/models "
                          f"(listed: {[m.id for m in models]})")
    return f"{ctx.model} listed", {"models": [m.id for m in models]}


async def default_model(ctx: Context) -> str | None:
    models = await ctx.llm.alist_models()
    bases = [m.id for m in models if m.parent is None]
    if bases:
        ctx.llm.model = bases[0]
        return bases[0]
    return None


async def check_tokenize(ctx: Context) -> Any:
    tok = await ctx.llm.atokenize(TOKENIZE_TEXT, model=ctx.model, add_special_tokens=False)
    if not tok.tokens or tok.count != len(tok.tokens):
        raise CheckFailed(f"/tokenize gave count {tok.count} for {len(tok.tokens)} tokens")
    text = await ctx.llm.adetokenize(tok.tokens, model=ctx.model)
    if text != TOKENIZE_TEXT:
        raise CheckFailed(f"/tokenize then /detokenize gave {str(text)[:60]!r}, "
                          f"not {TOKENIZE_TEXT!r}")
    return f"{tok.count} tokens, round trip exact", {"count": tok.count}


# -- generation ----------------------------------------------------------------------------
async def _generate_fixed(ctx: Context, endpoint: str, max_tokens: int = 8) -> Any:
    t0 = time.perf_counter()
    r = await ctx.llm.agenerate(PROMPT, model=ctx.model, endpoint=endpoint, max_tokens=max_tokens,
                                temperature=0.0, ignore_eos=True)
    ms = _ms(t0)
    if not r.choices:
        raise CheckFailed("the answer has no choices")
    if r.usage is None or r.usage.completion_tokens != max_tokens:
        raise CheckFailed(f"asked for {max_tokens} tokens (ignore_eos), usage says "
                          f"{r.usage.completion_tokens if r.usage else None}")
    return f"{max_tokens} tokens in {ms:.0f} ms", {"latency_ms": ms, "text": r.content[:80]}


async def check_chat(ctx: Context) -> Any:
    return await _generate_fixed(ctx, "chat")


async def check_completion(ctx: Context) -> Any:
    return await _generate_fixed(ctx, "completions")


async def check_stream(ctx: Context) -> Any:
    max_tokens = 8
    t0 = time.perf_counter()
    ttft = None
    content = 0
    done = False
    usage = None
    async for ev in ctx.llm.astream_events(PROMPT, model=ctx.model, max_tokens=max_tokens,
                                           temperature=0.0, ignore_eos=True,
                                           stream_options={"include_usage": True}):
        if ev.done:
            done = True
            break
        if ev.choices:
            if ttft is None:
                ttft = (ev.time - t0) * 1000.0
            content += 1
        if ev.usage is not None:
            usage = ev.usage
    problems = []
    if content == 0:
        problems.append("no content chunks arrived")
    if not done:
        problems.append("the stream ended without data: [DONE]")
    if usage is None:
        problems.append("no usage chunk (stream_options.include_usage)")
    elif usage.completion_tokens != max_tokens:
        problems.append(f"usage says {usage.completion_tokens} tokens, asked {max_tokens}")
    if problems:
        raise CheckFailed("; ".join(problems))
    return (f"{content} chunks, TTFT {ttft:.0f} ms, [DONE] and usage seen",
            {"chunks": content, "ttft_ms": ttft, "total_ms": _ms(t0)})


async def check_structured(ctx: Context, kind: str) -> Any:
    value = {"json": constraints.JSON_SCHEMA, "regex": constraints.REGEX,
             "choice": constraints.CHOICES, "grammar": constraints.GRAMMAR}[kind]
    outputs = []
    for i in range(ctx.repeats):
        # sampled (temperature 1, seeded): distinct answers; greedy decoding of a random-weight
        # model can loop in JSON's optional whitespace. JSON gets room for that whitespace.
        kw: dict[str, Any] = {f"guided_{kind}": value}
        r = await ctx.llm.agenerate(f"Answer #{i}:", model=ctx.model, endpoint="completions",
                                    max_tokens=256 if kind == "json" else 48, temperature=1.0,
                                    seed=1000 + i, **kw)
        text = r.content
        why = constraints.verify(kind, text)
        if why is None and r.finish_reason == "length":
            why = f"cut at max_tokens: {text[:60]!r}"
        if why:
            raise CheckFailed(f"answer {i + 1}/{ctx.repeats} {why}")
        outputs.append(text)
    return f"{ctx.repeats}/{ctx.repeats} conform, e.g. {outputs[0][:40]!r}", {"outputs": outputs}


async def check_beam(ctx: Context) -> Any:
    n = 3
    r = await ctx.llm.agenerate(PROMPT, model=ctx.model, endpoint="completions", max_tokens=8,
                                temperature=0.0, use_beam_search=True, n=n)
    texts = [c.text for c in r.choices]
    if len(texts) != n:
        raise CheckFailed(f"asked for {n} beams, got {len(texts)} choice(s)")
    if len(set(texts)) != n:
        raise CheckFailed(f"the {n} beams are not distinct: {texts}")
    return f"{n} distinct beams", {"beams": texts}


# -- load and metrics ----------------------------------------------------------------------
async def check_concurrency(ctx: Context) -> Any:
    n = ctx.concurrency

    async def one(i: int) -> float:
        t0 = time.perf_counter()
        await ctx.llm.agenerate(f"Request {i}:", model=ctx.model, endpoint="completions",
                                max_tokens=8, temperature=0.0, ignore_eos=True)
        return _ms(t0)

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    wall = _ms(t0)
    errors = [r for r in results if isinstance(r, BaseException)]
    lat = [r for r in results if not isinstance(r, BaseException)]
    if errors:
        first = " ".join(str(errors[0]).split())[:160]
        raise CheckFailed(f"{len(errors)}/{n} parallel requests failed, first: {first}")
    p50, p95 = percentile(lat, 50), percentile(lat, 95)
    return (f"{n}/{n} ok, p50 {p50:.0f} ms, p95 {p95:.0f} ms",
            {"n": n, "p50_ms": p50, "p95_ms": p95, "wall_ms": wall})


async def check_metrics(ctx: Context) -> Any:
    m = await ctx.llm.ametrics()
    names = set(m)
    missing = [f for f in REQUIRED_METRICS
               if f not in names and not any(f + s in names for s in ("_bucket", "_count", "_sum"))]
    if missing:
        raise CheckFailed(f"/metrics lacks {', '.join(missing)}")
    return f"all {len(REQUIRED_METRICS)} metric families present", {"families": list(REQUIRED_METRICS)}


__all__ = ["Context", "run_check", "REQUIRED_METRICS", "NotFoundError", "SKIP", "FAIL"]
