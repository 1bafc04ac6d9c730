"""``run_validation``: every check against one server → :class:`ValidationReport`.

First ``GET /health`` once: an unreachable or unhealthy server raises one client error naming the
URL (the CLI: one line, exit 1) before any check; a healthy answer is the ``health`` check's pass.
Order: health, version, model listed, tokenize round trip, chat, completion, stream, structured
outputs (json, regex, choice, grammar; ``repeats`` answers each), beam search, LoRA (each ``--lora``
alone, or one written for the served model; with two or more, all at once: ``lora.multi``,
``lora.multi_base``), concurrency, metrics (last, after traffic). Request count is modest: about 30 short requests plus
``concurrency``, plus 16 per adapter and 8 x (adapters + 1) for the multi-adapter checks.
"""
from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from vllm_ops.errors import BadInput
from vllm_ops.validate.report import CheckResult, SKIP, ValidationReport

ProgressFn = Callable[[str, str], None]


def parse_lora_specs(specs: list[str] | None) -> dict[str, str]:
    """``["name=/path", ...]`` → ``{name: path}`` (BadInput on a malformed item)."""
    out: dict[str, str] = {}
    for s in specs or ():
        name, sep, path = s.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise BadInput(f"--lora wants NAME=PATH (a path on the server), not {s!r}")
        out[name.strip()] = path.strip()
    return out


async def arun_validation(url: str, model: str | None = None, *,
                          loras: Mapping[str, str] | None = None, concurrency: int = 8,
                          api_key: str | None = None, timeout: float = 120.0, repeats: int = 3,
                          make_adapter: bool = True, only: Sequence[str] | None = None,
                          progress: ProgressFn | None = None,
                          provider: Any = None) -> ValidationReport:
    from vllm_ops.client import VLLMProvider
    from vllm_ops.validate import checks as c

    if concurrency < 1:
        raise BadInput("--concurrency must be at least 1")
    say = progress or (lambda stage, detail="": None)
    own = provider is None
    llm = provider or VLLMProvider.from_root_url(url, api_key=api_key, model=model, max_retries=0,
                                                 timeout=timeout, max_connections=max(concurrency, 8) + 4)
    ctx = c.Context(llm=llm, url=url, model=model, loras=dict(loras or {}),
                    concurrency=concurrency, repeats=repeats, make_adapter=make_adapter)
    report = ValidationReport(url=url, model=model)
    t0 = time.perf_counter()

    async def run(name: str, fn: Any, *args: Any) -> CheckResult:
        say("validate", name)
        r = await c.run_check(name, fn, ctx, *args)
        report.checks.append(r)
        return r

    def wanted(name: str) -> bool:
        return not only or any(name == o or name.startswith(o + ".") for o in only)

    try:
        # unreachable or unhealthy: one VLLMError naming the URL, before any check (CLI: exit 1);
        # that one request is the health check
        health = await c.require_health(llm)
        if wanted("health"):
            say("validate", "health")
            report.checks.append(health)
        for name, fn, args in (("version", c.check_version, ()), ("model.listed", c.check_model_listed, ())):
            if wanted(name):
                r = await run(name, fn, *args)
                if name == "version":
                    report.version = r.data.get("version")
        if ctx.model is None:  # model.listed not run or failed: the client's default (first base)
            try:
                ctx.model = await c.default_model(ctx)
            except Exception:  # noqa: BLE001 — the generation checks will fail on their own
                pass
        report.model = ctx.model
        plain = [("tokenize", c.check_tokenize, ()), ("chat", c.check_chat, ()),
                 ("completion", c.check_completion, ()), ("stream", c.check_stream, ())]
        plain += [(f"structured.{k}", c.check_structured, (k,))
                  for k in ("json", "regex", "choice", "grammar")]
        plain += [("beam_search", c.check_beam, ())]
        for name, fn, args in plain:
            if wanted(name):
                await run(name, fn, *args)
        await _lora_checks(ctx, run, wanted, report)
        for name, fn in (("concurrency", c.check_concurrency), ("metrics", c.check_metrics)):
            if wanted(name):
                await run(name, fn)
    finally:
        report.duration_s = time.perf_counter() - t0
        if own:
            await llm.aclose()
    return report


async def _lora_checks(ctx: Any, run: Any, wanted: Callable[[str], bool], report: ValidationReport) -> None:
    """``lora.NAME`` for each ``--lora`` (or ``lora`` for one validate writes), then
    ``lora.multi`` and ``lora.multi_base`` when two or more were given."""
    from vllm_ops.validate import lora

    names = list(ctx.loras)
    checks = [f"lora.{n}" for n in names] + (["lora.multi", "lora.multi_base"] if len(names) > 1 else [])
    if not (wanted("lora") or any(wanted(x) for x in checks)):
        return
    adapters = dict(ctx.loras)
    made_dir = None
    if not adapters:
        name, path, why = await _adapter(ctx)
        if name is None:
            report.checks.append(CheckResult("lora", SKIP, why))
            return
        adapters[name] = path
        made_dir = Path(path).parent
    multi = len(names) > 1 and (wanted("lora.multi") or wanted("lora.multi_base"))
    try:
        for name, path in adapters.items():
            check = f"lora.{name}" if ctx.loras else "lora"
            if wanted(check) or multi:  # the multi checks need each adapter's solo fingerprint
                await run(check, lora.check_lora, name, path)
        if len(names) > 1:
            for check, fn in (("lora.multi", lora.check_multi), ("lora.multi_base", lora.check_multi_base)):
                if wanted(check):
                    await run(check, fn, adapters)
    finally:
        if made_dir is not None:
            shutil.rmtree(made_dir, ignore_errors=True)


async def _adapter(ctx: Any) -> tuple[str | None, str | None, str]:
    from vllm_ops.client import VLLMError
    from vllm_ops.validate.lora import adapter_to_make

    try:
        return await adapter_to_make(ctx)
    except VLLMError as exc:
        return None, None, f"no --lora given, and the served model's directory is unknown ({exc})"


def run_validation(url: str, model: str | None = None, *, loras: Mapping[str, str] | None = None,
                   concurrency: int = 8, **kwargs: Any) -> ValidationReport:
    """Validate the server at ``url`` (its root, ``http://host:port``); see :func:`arun_validation`.

    ``loras`` maps adapter names to paths on the SERVER's filesystem; without any, an adapter is
    written for the served model when its directory is readable here, else the LoRA check skips.
    Keyword arguments: ``api_key``, ``timeout``, ``repeats`` (answers per structured-output
    check), ``make_adapter``, ``only`` (check names or groups to run, e.g. ``["structured",
    "lora"]``), ``progress(stage, detail)``, ``provider`` (a VLLMProvider to use).
    An unreachable or unhealthy server raises the client's :class:`~vllm_ops.client.VLLMError`
    (its message names the URL and the error) before any check runs.
    """
    return asyncio.run(arun_validation(url, model, loras=loras, concurrency=concurrency, **kwargs))
