"""validate's LoRA checks: each adapter alone, then all at once, proved by logprob fingerprints.

- ``lora.NAME`` (``lora`` for the adapter validate writes itself): load, listed with the base as
  parent, the adapter's weights used, unload, gone. "Used" is proved by logprobs
  (:mod:`.fingerprint`): over a few prompts the adapter's logprobs differ from the base model's by
  more than the server's measured noise; identical logprobs on every prompt prove it unused.
  Greedy text is reported as extra evidence only (on a near-uniform model one prompt's greedy
  text can match the base's while the adapter is applied). The adapter's answers, asked while it
  is the only one loaded, are its solo fingerprint.
- ``lora.multi`` (two or more ``--lora``): every adapter loaded at once, their requests sent
  interleaved and concurrently (so they share batches); each answer must sit nearest its own
  adapter's solo fingerprint (not the base's, not another adapter's); unload all, nothing left.
- ``lora.multi_base``: the same, with base-model requests mixed in; each base answer must match
  the base model's. (vLLM 0.32's CPU LoRA ops index the adapter slots with -1 for base-model
  tokens, which picks the LAST slot: with every slot filled, base requests batched with adapter
  requests are answered by an adapter. This check names that.)
"""
from __future__ import annotations

import asyncio
import json
import random
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

from vllm_ops.client import VLLMError, VLLMStatusError
from vllm_ops.validate import fingerprint as fp
from vllm_ops.validate.adapters import EXTRA, make_lora_adapter
from vllm_ops.validate.checks import CheckFailed, CheckSkipped, Context

ROUNDS = 2          # interleaved rounds of the multi-adapter checks (each: every adapter x prompt)
_SHUFFLE_SEED = 0   # fixed order: a failure reproduces


# -- requests ------------------------------------------------------------------------------
async def _ask(ctx: Context, model: str, prompt: str) -> fp.Answer:
    r = await ctx.llm.agenerate(prompt, model=model, **fp.request_args())
    try:
        return fp.Answer.from_completion(r.raw)
    except ValueError as exc:
        raise CheckFailed(f"a request for {model} with logprobs={fp.TOP_K}: {exc}") from None


async def _batched(ctx: Context, models: Sequence[str], rounds: int = 1) -> dict[str, list[list[fp.Answer]]]:
    """Every (model, prompt) ``rounds`` times, shuffled and sent at once: ``{model: [answers per
    round]}``, each answers list in prompt order."""
    jobs = [(r, m, i) for r in range(rounds) for m in models for i in range(len(fp.PROMPTS))]
    random.Random(_SHUFFLE_SEED).shuffle(jobs)
    got = await asyncio.gather(*(_ask(ctx, m, fp.PROMPTS[i]) for _, m, i in jobs))
    out: dict[str, list[list[Any]]] = {m: [[None] * len(fp.PROMPTS) for _ in range(rounds)] for m in models}
    for (r, m, i), a in zip(jobs, got):
        out[m][r][i] = a
    return out


async def _fingerprint(ctx: Context, model: str) -> tuple[list[fp.Answer], float]:
    """The model's fingerprint (its answers to every prompt, one request at a time) and its batch
    noise (how far the same prompts sent at once land from it)."""
    alone = [await _ask(ctx, model, p) for p in fp.PROMPTS]
    batched = (await _batched(ctx, [model]))[model][0]
    return alone, fp.noise(alone, batched)


async def base_print(ctx: Context) -> list[fp.Answer]:
    """The base model's fingerprint (asked alone, once per run) and its batch noise."""
    if ctx.base_print is None:
        ctx.base_print, noise = await _fingerprint(ctx, ctx.model or "")
        ctx.noise = max(ctx.noise, noise)
    return ctx.base_print


# -- load / unload -------------------------------------------------------------------------
def _lora_unsupported(exc: VLLMStatusError) -> str | None:
    msg = (exc.message or "").strip()
    if exc.status_code == 404 and msg.lower() in ("not found", ""):
        return ("the server has no runtime LoRA routes (start it with --enable-lora and "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)")
    if "lora is not enabled" in msg.lower():
        return "the server was started without --enable-lora"
    return None


async def _load(ctx: Context, name: str, path: str) -> None:
    if name in await ctx.llm.alist_adapters():
        raise CheckSkipped(f"an adapter named {name!r} is already loaded; validate loads and "
                           f"unloads its own (use another name)")
    try:
        await ctx.llm.aload_adapter(name, path)
    except VLLMStatusError as exc:
        why = _lora_unsupported(exc)
        if why:
            raise CheckSkipped(why) from None
        raise CheckFailed(f"loading {name} from {path} failed: {' '.join(str(exc).split())[:200]}") from None


async def _require_listed(ctx: Context, names: Sequence[str]) -> None:
    listed = {m.id: m for m in await ctx.llm.alist_models()}
    for name in names:
        entry = listed.get(name)
        if entry is None:
            raise CheckFailed(f"{name} was loaded but GET /v1/models does not list it")
        if entry.parent != ctx.model:
            raise CheckFailed(f"{name} is listed with parent {entry.parent!r}, not {ctx.model!r}")


async def _unload_all(ctx: Context, names: Sequence[str]) -> str | None:
    """Unload every adapter; None when all went and none is listed, else what went wrong."""
    problems = []
    for name in names:
        try:
            await ctx.llm.aunload_adapter(name)
        except VLLMError as exc:
            problems.append(f"unloading {name} failed: {' '.join(str(exc).split())[:160]}")
    if not problems:
        left = sorted(set(names) & set(await ctx.llm.alist_adapters()))
        if left:
            problems.append(f"{', '.join(left)} still listed after unloading")
    return "; ".join(problems) or None


async def _with_loaded(ctx: Context, adapters: Mapping[str, str], body: Any) -> Any:
    """Load ``adapters``, check they are listed, run ``body()``, unload all and check they went
    (a body failure wins over an unload failure)."""
    loaded: list[str] = []
    try:
        for name, path in adapters.items():
            await _load(ctx, name, path)
            loaded.append(name)
        await _require_listed(ctx, loaded)
        out = await body()
    except Exception:
        await _unload_all(ctx, loaded)
        raise
    problem = await _unload_all(ctx, loaded)
    if problem:
        raise CheckFailed(problem)
    return out


# -- lora.NAME -----------------------------------------------------------------------------
async def check_lora(ctx: Context, name: str, path: str) -> Any:
    base = await base_print(ctx)
    alone, own_noise = await _with_loaded(ctx, {name: path}, lambda: _fingerprint(ctx, name))
    ctx.noise = max(ctx.noise, own_noise)
    limit = fp.threshold(ctx.noise)
    diff = fp.spread(base, alone)
    greedy = fp.greedy_differs(base, alone)
    n = len(fp.PROMPTS)
    data = {"adapter": name, "path": path, "max_logprob_diff": diff, "noise": ctx.noise,
            "threshold": limit, "greedy_differs": greedy, "prompts": n}
    if not diff > limit:
        raise CheckFailed(f"a request for {name} was answered like the base model: logprobs within "
                          f"{limit:.3g} of the base's on all {n} prompts (the server's noise {ctx.noise:.3g} "
                          f"x {fp.NOISE_MARGIN:g}); the adapter's weights were not used")
    ctx.prints[name] = alone
    return (f"{name}: loaded, listed, logprobs differ from the base by up to {diff:.3g} "
            f"(noise {ctx.noise:.3g}); greedy text differs on {greedy}/{n} prompts; unloaded, gone"), data


# -- lora.multi / lora.multi_base ----------------------------------------------------------
def _prints_ready(ctx: Context, names: Sequence[str]) -> dict[str, list[fp.Answer]]:
    missing = [n for n in names if n not in ctx.prints]
    if missing or ctx.base_print is None:
        raise CheckSkipped(f"needs every adapter's own check to pass first (not: {', '.join(missing)})")
    prints = {n: ctx.prints[n] for n in names}
    prints[ctx.model or ""] = ctx.base_print
    limit = fp.threshold(ctx.noise)
    keys = list(prints)
    for i, x in enumerate(keys):
        for y in keys[i + 1:]:
            if not fp.spread(prints[x], prints[y]) > limit:
                raise CheckSkipped(f"{x} and {y} answer alike on every prompt: requests to them "
                                   f"cannot be told apart")
    return prints


def _attribute(who: str, answers: Sequence[fp.Answer], prints: Mapping[str, Sequence[fp.Answer]],
               limit: float, label: str = "") -> str | None:
    """None when ``answers`` (one per prompt) came from ``who``'s weights, else why not: nearest
    another fingerprint, or too far from its own (more than the noise threshold and more than half
    the way to the next fingerprint)."""
    ranked = fp.nearest(answers, prints)
    own = dict(ranked)[who]
    best, best_d = ranked[0]
    separation = min(fp.spread(prints[who], prints[o]) for o in prints if o != who)
    if best != who and best_d < own:
        verdict = f"was answered like {best}"
    elif own > max(limit, separation / 2):
        verdict = "matches no fingerprint"
    else:
        return None
    per_prompt = [fp.nearest([a], {n: [p[i]] for n, p in prints.items()})[0] for i, a in enumerate(answers)]
    seen = ", ".join(f"{n} {d:.2g}" for n, d in per_prompt)
    return f"a request for {who}{label} {verdict} (nearest fingerprint per prompt: {seen})"


async def _interleaved(ctx: Context, adapters: Mapping[str, str], asked: Sequence[str],
                       judged: Sequence[str], label: str = "") -> Any:
    prints = _prints_ready(ctx, list(adapters))
    limit = fp.threshold(ctx.noise)

    async def body() -> Any:
        rounds = await _batched(ctx, asked, ROUNDS)
        wrong = [why for who in judged for answers in rounds[who]
                 if (why := _attribute(who, answers, prints, limit, label)) is not None]
        if wrong:
            more = f" (+{len(wrong) - 1} more)" if len(wrong) > 1 else ""
            raise CheckFailed(f"{wrong[0]}{more}")
        return len(judged) * ROUNDS * len(fp.PROMPTS)

    n = await _with_loaded(ctx, adapters, body)
    return n, {"adapters": list(adapters), "requests": len(asked) * ROUNDS * len(fp.PROMPTS),
               "judged": n, "threshold": limit}


async def check_multi(ctx: Context, adapters: Mapping[str, str]) -> Any:
    n, data = await _interleaved(ctx, adapters, list(adapters), list(adapters))
    return (f"{len(adapters)} adapters loaded at once, {data['requests']} requests interleaved: each "
            f"answered by its own adapter; unloaded, gone"), data


async def check_multi_base(ctx: Context, adapters: Mapping[str, str]) -> Any:
    base = ctx.model or ""
    n, data = await _interleaved(ctx, adapters, [base, *adapters], [base], " (the base model)")
    return (f"{n} base-model requests batched with {len(adapters)} adapters' requests: "
            f"answered by the base model"), data


# -- the adapter validate writes itself ----------------------------------------------------
async def adapter_to_make(ctx: Context) -> tuple[str | None, str | None, str]:
    """(name, path, "") of an adapter written for the served model, or (None, None, why not)."""
    if not ctx.make_adapter:
        return None, None, "no --lora given"
    models = await ctx.llm.alist_models()
    base = next((m for m in models if m.id == ctx.model), None)
    root = Path(base.root) if base is not None and base.root else None
    if root is None or not (root / "config.json").is_file():
        return None, None, ("no --lora given, and the served model's directory "
                            f"({base.root if base else '?'}) is not readable here to write one")
    tmp = Path(tempfile.mkdtemp(prefix="vllm-ops-validate-lora-"))
    name = f"vllm-ops-validate-{uuid.uuid4().hex[:8]}"
    try:
        config = json.loads((root / "config.json").read_text())
        make_lora_adapter(tmp / name, config, base_model_name=ctx.model or "base")
    except ImportError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        return None, None, (f"no --lora given, and writing one needs {exc.name} "
                            f"(pip install 'vllm-ops[{EXTRA}]')")
    except (KeyError, ValueError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        return None, None, f"no --lora given, and no adapter can be written for this model ({exc})"
    return name, str(tmp / name), ""
