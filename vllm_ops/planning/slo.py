"""Choose a layout by goodput under latency targets (``vllm-ops plan --slo``).

    search(model, inventory, slo, workload, *, pins=..., allow_fp8=False, ...) -> SearchResult

The space: tensor-parallel size × replicas (pipeline stages only where the planner needs them:
a TP size that cannot hold the model gets the fewest stages that do), ``max_num_seqs``, ``max_num_batched_tokens``, the KV cache dtype (``auto``/``fp8`` where the
GPU has fp8), fp8 weights (only with ``allow_fp8``: online fp8 changes the outputs) and, where vLLM
runs block-FP8 MoE on DeepGEMM's padded grouped GEMM by default (0.12-0.13 on Hopper, planning/perf_kernels.py),
``VLLM_MOE_USE_DEEP_GEMM=0`` (Triton's fused MoE; same outputs). A pinned flag or variable is not searched.
Each candidate is planned by the memory planner with its flags as pins
(:func:`vllm_ops.planning.plan`: the memory plan is a hard constraint, never re-derived
here) and scored by the performance model (:func:`vllm_ops.planning.performance.predict`).

Load: ``workload.concurrency`` / ``workload.rate`` is what the whole box sees; replicas split it
(``split=True``; with C not a multiple of the replicas, ``C mod R`` replicas carry one request
more, and the TTFT/TPOT shown are those of the busiest replica). ``split=False``: each replica
sees the workload as given (how public per-server measurements are compared).

Goodput: output tokens (and requests) per second per GPU that meet the SLO (mean TPOT, mean TTFT):
with a concurrency, the box's throughput over all its GPUs (the box is what you have; more
replicas mean lower latency at the same load); with a rate, every layout that keeps up serves
the same load, so the fewest replicas that serve it within the targets are kept and the
throughput is divided by the GPUs used (the rest stay free).

Ranked: candidates that fit and meet the SLO by goodput (then fewer GPUs, then lower TPOT); then
those that miss, closest first (largest ratio of predicted to target, smallest first); then those
that do not fit memory; then those the performance model cannot predict (with its reason).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from vllm_ops.errors import BadInput
from vllm_ops.planning import front, performance, pins as pin_rules, planner
from vllm_ops.planning.perf_kernels import DEEP_GEMM_MOE_OFF, kernel_chosen, moe_padding
from vllm_ops.planning.plan import PlanWarning
from vllm_ops.planning.versions import DEFAULT_VLLM_VERSION

SLO_KEYS = ("tpot_ms", "ttft_ms")
MAX_SEQS_VARIANTS = 2          # lower max_num_seqs tried besides the planner's own choice
BIG_CHUNK = 8192               # a larger prefill chunk tried when the default is smaller


@dataclass(frozen=True)
class SLO:
    tpot_ms: float                      # mean time per output token after the first
    ttft_ms: float | None = None        # mean time to first token
    # a prediction counts as meeting a target when it is under target / (1 + headroom): the performance model's
    # error, so that a layout predicted just under a target (a coin flip) is not taken for one that meets it
    tpot_headroom: float = 0.0
    ttft_headroom: float = 0.0

    def limits(self) -> dict[str, float | None]:
        """The predicted values a layout must stay under."""
        return {"tpot_ms": self.tpot_ms / (1 + self.tpot_headroom),
                "ttft_ms": None if self.ttft_ms is None else self.ttft_ms / (1 + self.ttft_headroom)}

    def to_dict(self) -> dict[str, Any]:
        lim = self.limits()
        return {"tpot_ms": self.tpot_ms, "ttft_ms": self.ttft_ms,
                "headroom": {"tpot_ms": self.tpot_headroom, "ttft_ms": self.ttft_headroom},
                "predicted_limits": {k: None if v is None else round(v, 3) for k, v in lim.items()}}


def default_headroom() -> dict[str, float]:
    """The performance model's held-out median error on models in no fit (vllm_ops/data/perf/accuracy.json, set
    ``unseen``), per metric; 0 where the file has none."""
    from vllm_ops.planning.perf_fit import expected_error

    return {k: expected_error(k) for k in SLO_KEYS}


def parse_headroom(text: str | None) -> dict[str, float]:
    """``--slo-headroom``: ``auto`` (the model's held-out median errors, per metric) or a percentage for both."""
    if text is None or str(text).strip().lower() == "auto":
        return default_headroom()
    try:
        pct = float(str(text).strip().rstrip("%"))
    except ValueError:
        raise BadInput(f"--slo-headroom {text!r}: 'auto' or a percentage, e.g. 10") from None
    if not math.isfinite(pct) or not 0 <= pct < 100:
        raise BadInput(f"--slo-headroom {text}: a percentage from 0 to under 100")
    return {k: pct / 100 for k in SLO_KEYS}


def parse_slo(text: str, headroom: dict[str, float] | None = None) -> SLO:
    """``"tpot_ms=50"`` / ``"tpot_ms=50,ttft_ms=2000"`` → SLO (``headroom``: per metric, none by default);
    BadInput otherwise."""
    vals: dict[str, float] = {}
    for part in str(text or "").split(","):
        if not part.strip():
            continue
        key, sep, val = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in SLO_KEYS:
            raise BadInput(f"--slo {text!r}: each target is KEY=VALUE with KEY one of {', '.join(SLO_KEYS)}",
                           hint="e.g. --slo tpot_ms=50,ttft_ms=2000")
        try:
            num = float(val)
        except ValueError:
            raise BadInput(f"--slo {key}={val!r}: not a number") from None
        if not math.isfinite(num) or num <= 0:
            raise BadInput(f"--slo {key}={val}: must be a positive number of milliseconds")
        vals[key] = num
    if "tpot_ms" not in vals:
        raise BadInput(f"--slo {text!r}: needs tpot_ms=X (mean time per output token, ms)",
                       hint="e.g. --slo tpot_ms=50 or --slo tpot_ms=50,ttft_ms=2000")
    h = headroom or {}
    return SLO(tpot_ms=vals["tpot_ms"], ttft_ms=vals.get("ttft_ms"), tpot_headroom=float(h.get("tpot_ms", 0.0)),
               ttft_headroom=float(h.get("ttft_ms", 0.0)))


@dataclass
class Candidate:
    tensor_parallel_size: int
    pipeline_parallel_size: int
    replicas: int                        # servers used
    gpus_used: int
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_cache_dtype: str
    quantization: str | None
    fits: bool
    failure_stage: str | None = None
    load: dict[str, Any] = field(default_factory=dict)        # what one (the busiest) replica sees
    performance: dict[str, Any] | None = None                  # per replica (the busiest), predicted
    output_tokens_per_s: float | None = None                   # the box (all replicas used)
    requests_per_s: float | None = None
    per_gpu_of: int = 0                                        # the GPUs the per-GPU figures divide by
    output_tokens_per_s_per_gpu: float | None = None           # goodput when it meets the SLO
    requests_per_s_per_gpu: float | None = None
    meets: bool = False
    misses: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)           # flags the search set (not the planner's choice)
    env: dict[str, str] = field(default_factory=dict)          # environment the search set (DEEP_GEMM_MOE_OFF)
    rank: int = 0
    plan: Any = field(default=None, repr=False)                 # the Plan (not in to_dict)

    @property
    def layout(self) -> str:
        pp = f" PP={self.pipeline_parallel_size}" if self.pipeline_parallel_size > 1 else ""
        return f"TP={self.tensor_parallel_size}{pp} x {self.replicas}"

    @property
    def layout_key(self) -> tuple[int, int, int]:
        return (self.tensor_parallel_size, self.pipeline_parallel_size, self.replicas)

    @property
    def goodput(self) -> float:
        return (self.output_tokens_per_s_per_gpu or 0.0) if self.meets else 0.0

    def flags(self) -> dict[str, Any]:
        """The vLLM flags that make this candidate (pins for the planner)."""
        return {"tensor_parallel_size": self.tensor_parallel_size,
                "pipeline_parallel_size": self.pipeline_parallel_size,
                "max_num_seqs": self.max_num_seqs, "max_num_batched_tokens": self.max_num_batched_tokens,
                "kv_cache_dtype": self.kv_cache_dtype, "quantization": self.quantization}

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "plan"}
        d["layout"] = self.layout
        return d


@dataclass
class SearchResult:
    slo: SLO
    workload: Any
    candidates: list[Candidate]          # ranked, best first
    split: bool = True
    elapsed_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    pins: dict[str, Any] = field(default_factory=dict)      # the user's (never searched)

    @property
    def chosen(self) -> Candidate:
        return self.candidates[0]

    @property
    def feasible(self) -> bool:
        return bool(self.candidates) and self.candidates[0].meets

    def best_per_layout(self) -> list[Candidate]:
        """The best-ranked candidate of each (TP, PP, replicas) layout, in rank order."""
        seen: dict[tuple[int, int, int], Candidate] = {}
        for c in self.candidates:
            seen.setdefault(c.layout_key, c)
        return list(seen.values())

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        w = self.workload
        return {"slo": self.slo.to_dict(), "feasible": self.feasible,
                "workload": {"input_len": w.input_len, "output_len": w.output_len,
                             "concurrency": w.concurrency, "rate": w.rate,
                             "split": "the box's load, split over the replicas" if self.split
                                      else "each replica sees this load"},
                "chosen": self.chosen.to_dict() if self.candidates else None,
                "searched": len(self.candidates), "elapsed_s": round(self.elapsed_s, 3),
                "notes": list(self.notes)}


# -- the search --------------------------------------------------------------------------------
def search(model: Any, inventory: Any, slo: SLO, workload: Any, *, pins: dict | None = None,
           vllm_version: str | None = None, profile: Any = None, allow_fp8: bool = False,
           split: bool = True, plan_kwargs: dict | None = None, efficiency: Any = None) -> SearchResult:
    """Every candidate layout planned and predicted, ranked (see the module doc). ``plan_kwargs``
    go to the planner unchanged (extra_args, env, served_name, port). ``efficiency``: the
    performance model's efficiencies to predict with instead of the shipped fit (e.g. a fold
    fitted without the model, for a held-out evaluation); None: the shipped ones."""
    t0 = time.perf_counter()
    if len(getattr(inventory, "nodes", []) or []) > 1:
        raise BadInput("--slo plans one node: the search over layouts spanning several nodes is not modelled",
                       hint="plan one node with --gpus/--profile, or drop --slo")
    pins = pin_rules.normalize_pins(pins)
    if pins.get("data_parallel_size", 1) > 1:
        raise BadInput("--slo searches separate replicas, not --data-parallel-size (one server with DP ranks "
                       "is not modelled by the search)", hint="drop --data-parallel-size, or plan without --slo")
    kw = dict(plan_kwargs or {})
    kw.update(vllm_version=vllm_version or DEFAULT_VLLM_VERSION, profile=profile)
    axes = _axes(model, inventory, pins, allow_fp8, profile)
    axes["env"] = _kernel_envs(model, axes, kw)
    cands: list[Candidate] = []
    seen: set[tuple] = set()

    def one(p_pins: dict, env: dict[str, str]) -> list[Candidate]:
        p_kw = {**kw, "env": {**(kw.get("env") or {}), **env}} if env else kw
        p = front.plan(model, inventory, pins={**pins, **p_pins}, **p_kw)
        key = _flags_key(p)
        if key in seen:
            return []
        seen.add(key)
        changed = sorted(k for k in p_pins if k not in ("tensor_parallel_size", "pipeline_parallel_size"))
        changed += [f"{k}={v}" for k, v in sorted(env.items())]
        scored = _score(p, model, inventory, slo, workload, split, efficiency)
        for c in scored:
            c.changed, c.env = changed, dict(env)
        cands.extend(scored)
        return scored

    for pp in axes["pp"]:
        for tp in axes["tp"]:
            if tp * pp <= axes["gpus"]:
                _layout_variants(one, tp, pp, axes, pins, workload)
    ranked = rank(cands, slo)
    notes = _notes(axes, pins, allow_fp8, split, workload)
    if len(axes["env"]) > 1:
        notes.append("MoE kernel tried both ways: DeepGEMM's padded grouped GEMM (this vLLM's default) and "
                     "{}={} (Triton's fused MoE)".format(*DEEP_GEMM_MOE_OFF))
    return SearchResult(slo=slo, workload=workload, candidates=ranked, split=split,
                        elapsed_s=time.perf_counter() - t0, notes=notes, pins=dict(pins))


def _axes(model: Any, inventory: Any, pins: dict, allow_fp8: bool, profile: Any) -> dict[str, Any]:
    """What is searched: TP sizes, PP sizes (1 first, more only when nothing fits), KV dtypes and
    weight quantizations allowed here."""
    cpu = (getattr(profile, "kind", "gpu") == "cpu") or not inventory.gpus
    gpus = 1 if cpu else len(inventory.gpus)
    gtype = None if cpu else planner._gpu_type(inventory)
    g0 = inventory.gpus[0] if inventory.gpus else None
    cc = g0.compute_capability if g0 and g0.compute_capability else (gtype.compute_capability if gtype else None)
    has_fp8 = (not cpu) and (gtype.fp8 if gtype else (cc is not None and tuple(cc) >= (8, 9)))
    tps = [pins["tensor_parallel_size"]] if "tensor_parallel_size" in pins else (
        [1] if cpu else pin_rules.valid_tps(model, gpus) or [1])
    # PP is not searched: the planner adds pipeline stages itself when a TP size cannot hold the model
    pps = [pins["pipeline_parallel_size"]] if "pipeline_parallel_size" in pins else [1]
    kvs = [pins["kv_cache_dtype"]] if "kv_cache_dtype" in pins else (["auto", "fp8"] if has_fp8 else ["auto"])
    if "quantization" in pins:
        quants: list[str | None] = [pins["quantization"]]
    else:
        quants = [None]
        if allow_fp8 and has_fp8 and getattr(model, "quantization", None) is None:
            quants.append("fp8")
    return {"tp": tps, "pp": pps, "kv": kvs, "quant": quants, "gpus": gpus, "cpu": cpu, "has_fp8": has_fp8, "cc": cc}


def _kernel_envs(model: Any, axes: dict, kw: dict) -> list[dict[str, str]]:
    """The environments searched: none, and DeepGEMM's MoE turned off where this vLLM pads block-FP8 MoE on Hopper by
    default at one of the TP sizes searched (planning/perf_kernels.py) and the caller chose neither the variables
    nor ``--moe-backend``."""
    env = dict(kw.get("env") or {})
    extra = [str(a) for a in kw.get("extra_args") or ()]
    if kernel_chosen(env, extra):
        return [{}]
    padded = any(moe_padding(spec=model, version=str(kw.get("vllm_version")), compute_capability=axes["cc"], tp=tp,
                             dp=1, ep=False, extra_args=extra, env=env).mode for tp in axes["tp"])
    return [{}, dict([DEEP_GEMM_MOE_OFF])] if padded else [{}]


def _layout_variants(one, tp: int, pp: int, axes: dict, pins: dict, workload: Any) -> None:
    """Plan one (TP, PP) layout at each allowed KV dtype × weights × MoE kernel, each at the planner's own
    max_num_seqs and chunk size and with a larger chunk for long prompts; when none of them meets
    the SLO, the fastest of them (lowest TPOT; the first when none is predicted) again with lower
    max_num_seqs."""
    tried: list[tuple[dict, list[int], Candidate]] = []
    for kv, q, env in ((kv, q, env) for kv in axes["kv"] for q in axes["quant"] for env in axes["env"]):
        base: dict[str, Any] = {"tensor_parallel_size": tp}
        if pp > 1:
            base["pipeline_parallel_size"] = pp
        if kv != "auto":
            base["kv_cache_dtype"] = kv
        if q is not None:
            base["quantization"] = q
        first = one(base, env)
        if not first:
            continue
        toks = _token_variants(pins, workload, first[0].max_num_batched_tokens)
        found = first + [c for t in toks for c in one({**base, "max_num_batched_tokens": t}, env)]
        tried.extend((base, toks, c) for c in found)
    if not tried or any(c.meets for _, _, c in tried):
        return
    fitting = [t for t in tried if t[2].fits]
    predicted = [t for t in fitting if (t[2].performance or {}).get("tpot_ms") is not None]
    if predicted:
        base, toks, c0 = min(predicted, key=lambda t: t[2].performance["tpot_ms"])
    elif fitting:        # not predictable (e.g. a CPU server): the variants are there for `tune` to measure
        base, toks, c0 = fitting[0]
    else:
        return
    for seqs in _seqs_variants(pins, workload, len(c0.plan.replicas) or 1, c0.max_num_seqs):
        for t in [None, *toks]:
            one({**base, "max_num_seqs": seqs, **({"max_num_batched_tokens": t} if t else {})}, c0.env)


def _seqs_variants(pins: dict, workload: Any, replicas: int, planned: int) -> list[int]:
    """Powers of two under one replica's concurrency and under the planner's ``planned`` (fewer
    running sequences: a faster decode step, at the price of queueing)."""
    c = getattr(workload, "concurrency", None)
    if "max_num_seqs" in pins or not c:
        return []
    per = math.ceil(c / replicas)
    out: list[int] = []
    s = 1 << max(per - 1, 0).bit_length()          # the power of two >= per
    while len(out) < MAX_SEQS_VARIANTS and s > 1:
        s //= 2
        if s < per and s < planned:
            out.append(s)
    return out


def _token_variants(pins: dict, workload: Any, planned: int) -> list[int]:
    """A larger prefill chunk than the planner's ``planned`` when prompts are long (faster first
    tokens, longer decode stalls while a chunk runs)."""
    if "max_num_batched_tokens" in pins or getattr(workload, "input_len", 0) < 1024 or planned >= BIG_CHUNK:
        return []
    return [BIG_CHUNK]


def _flags_key(p: Any) -> tuple:
    a = p.vllm_args
    return (a.get("tensor_parallel_size"), a.get("pipeline_parallel_size"), len(p.replicas),
            a.get("max_num_seqs"), a.get("max_num_batched_tokens"), a.get("kv_cache_dtype"),
            a.get("quantization"), (p.env or {}).get(DEEP_GEMM_MOE_OFF[0]))


def _notes(axes: dict, pins: dict, allow_fp8: bool, split: bool, workload: Any) -> list[str]:
    notes = []
    if "quantization" not in pins and not allow_fp8:
        notes.append("fp8 weights not tried: online fp8 quantization changes the model's outputs "
                     "(pass --allow-fp8 to include it)")
    elif allow_fp8 and "fp8" not in axes["quant"] and "quantization" not in pins:
        notes.append("fp8 weights not tried: the checkpoint is already quantized or the GPU has no fp8")
    if "kv_cache_dtype" not in pins and "fp8" in axes["kv"]:
        notes.append("fp8 KV cache tried (pin --kv-cache-dtype auto to keep the model's dtype)")
    if getattr(workload, "rate", None) and split:
        notes.append("with a request rate, the fewest replicas that serve it within the targets are "
                     "kept; goodput is divided by the GPUs used")
    elif split:
        notes.append("concurrency is the box's: replicas split it; goodput is over all the box's GPUs")
    return notes


# -- scoring -------------------------------------------------------------------------------------
def _predict(p: Any, workload: Any, model: Any, efficiency: Any = None) -> dict[str, Any]:
    kw = {} if efficiency is None else {"efficiency": efficiency}
    try:
        perf = performance.predict(p, workload, spec=model, **kw)
    except (ValueError, KeyError, TypeError, ZeroDivisionError) as exc:
        return {"reason": f"the performance model failed: {type(exc).__name__}: {exc}"}
    return perf.to_dict()


def _workload(workload: Any, **changes: Any) -> Any:
    return replace(workload, **changes)


def _score(p: Any, model: Any, inventory: Any, slo: SLO, workload: Any, split: bool,
           efficiency: Any = None) -> list[Candidate]:
    """The candidate(s) of one plan: with a rate and ``split``, one per replica count tried (the
    fewest that meet the SLO, or all replicas)."""
    a = p.vllm_args
    tp, pp = int(a.get("tensor_parallel_size") or 1), int(a.get("pipeline_parallel_size") or 1)
    r_max = max(len(p.replicas), 1)
    cpu = not getattr(inventory, "gpus", None)
    box_gpus = 1 if cpu else len(inventory.gpus)
    base = dict(tensor_parallel_size=tp, pipeline_parallel_size=pp,
                max_num_seqs=int(a.get("max_num_seqs") or 0),
                max_num_batched_tokens=int(a.get("max_num_batched_tokens") or 0),
                kv_cache_dtype=str(a.get("kv_cache_dtype") or "auto"), quantization=a.get("quantization"),
                fits=bool(p.fits), failure_stage=p.failure_stage)
    per_gpu = tp * pp if not cpu else 0
    if not p.fits:
        c = Candidate(replicas=r_max, gpus_used=per_gpu * r_max, **base, plan=p)
        c.misses.append(f"does not fit memory ({p.failure_stage}, short by {-min(p.margin_gib, 0):.2f} GiB per GPU)")
        return [c]
    if workload.rate is not None and split:
        out = []
        for r in range(1, r_max + 1):
            c = _evaluate(p, model, slo, workload, base, r, per_gpu, r_max, split, box_gpus, efficiency)
            out.append(c)
            if c.meets:
                break
        return out
    return [_evaluate(p, model, slo, workload, base, r_max, per_gpu, r_max, split, box_gpus, efficiency)]


def _evaluate(p: Any, model: Any, slo: SLO, workload: Any, base: dict, r: int, per_gpu: int,
              r_max: int, split: bool, box_gpus: int, efficiency: Any = None) -> Candidate:
    """Predict ``r`` replicas of plan ``p`` under the (split) workload and check the SLO."""
    plan_r = p if r == r_max else replace(p, replicas=p.replicas[:r])
    gpus_used = per_gpu * r
    c = Candidate(replicas=r, gpus_used=gpus_used, **base, plan=plan_r)
    groups = _split_load(workload, r) if split else [(r, workload)]
    total_tok = total_req = 0.0
    busiest: dict[str, Any] | None = None
    for n, w in groups:
        perf = _predict(plan_r, w, model, efficiency)
        if perf.get("tpot_ms") is None or perf.get("output_tokens_per_s") is None:
            c.performance = perf
            c.load = _load_dict(w)
            c.misses.append(f"no prediction: {perf.get('reason') or 'the performance model gave no figures'}")
            return c
        total_tok += n * float(perf["output_tokens_per_s"])
        total_req += n * float(perf.get("requests_per_s") or 0.0)
        if busiest is None:
            busiest, c.load = perf, _load_dict(w)
    c.performance = busiest
    denom = gpus_used if (workload.rate is not None and split) else (box_gpus if split else gpus_used)
    denom = c.per_gpu_of = max(denom, 1)
    c.output_tokens_per_s, c.requests_per_s = round(total_tok, 3), round(total_req, 4)
    c.output_tokens_per_s_per_gpu = round(total_tok / denom, 3)
    c.requests_per_s_per_gpu = round(total_req / denom, 5)
    c.misses.extend(_misses(busiest or {}, slo, workload, r if split else 1))
    c.meets = not c.misses
    return c


def _split_load(workload: Any, r: int) -> list[tuple[int, Any]]:
    """[(replicas, the workload each of them sees)], busiest first."""
    if workload.rate is not None:
        return [(r, _workload(workload, rate=workload.rate / r))]
    q, extra = divmod(int(workload.concurrency), r)
    groups = []
    if extra:
        groups.append((extra, _workload(workload, concurrency=q + 1)))
    if q:
        groups.append((r - extra, _workload(workload, concurrency=q)))
    return groups


def _load_dict(w: Any) -> dict[str, Any]:
    return {"concurrency": w.concurrency} if w.concurrency is not None else {"rate": round(w.rate, 4)}


def _misses(perf: dict, slo: SLO, workload: Any, r: int) -> list[str]:
    out = []
    tpot, ttft = perf.get("tpot_ms"), perf.get("ttft_ms")
    lim = slo.limits()
    if tpot is not None and tpot > lim["tpot_ms"]:
        out.append(f"TPOT {tpot:.1f} ms > {_limit_text(slo.tpot_ms, lim['tpot_ms'], slo.tpot_headroom, '.1f')}")
    if slo.ttft_ms is not None:
        if ttft is None:
            out.append("TTFT not predicted")
        elif ttft > lim["ttft_ms"]:
            out.append(f"TTFT {ttft:.0f} ms > {_limit_text(slo.ttft_ms, lim['ttft_ms'], slo.ttft_headroom, '.0f')}")
    if workload.rate is not None:
        served = float(perf.get("requests_per_s") or 0.0) * r
        if served < workload.rate * 0.99:
            out.append(f"serves {served:.2f} req/s < {workload.rate:g} offered")
    return out


def _limit_text(target: float, limit: float, headroom: float, fmt: str) -> str:
    if not headroom:
        return f"{target:g} ms"
    return f"{limit:{fmt}} ms ({target:g} less {headroom:.0%} headroom)"


def with_slo(result: SearchResult, slo: SLO) -> SearchResult:
    """The same candidates judged against other targets and ranked again (no re-planning)."""
    cands = []
    for c in result.candidates:
        c = replace(c, misses=list(c.misses), load=dict(c.load))
        predicted = c.fits and c.performance is not None and c.performance.get("tpot_ms") is not None
        if predicted:
            c.misses = _misses(c.performance, slo, result.workload, c.replicas if result.split else 1)
            c.meets = not c.misses
        cands.append(c)
    return replace(result, slo=slo, candidates=rank(cands, slo))


def _closeness(c: Candidate, slo: SLO) -> float:
    """How far a predicted candidate is from the targets (1.0 = on them; larger = further)."""
    perf, lim = c.performance or {}, slo.limits()
    ratios = [float(perf.get("tpot_ms") or math.inf) / lim["tpot_ms"]]
    if lim["ttft_ms"] is not None:
        ratios.append(float(perf.get("ttft_ms") or math.inf) / lim["ttft_ms"])
    return max(ratios)


def rank(cands: Iterable[Candidate], slo: SLO) -> list[Candidate]:
    """Best first (see the module doc); sets ``rank`` (1-based)."""
    cands = list(cands)

    def key(c: Candidate) -> tuple:
        predicted = c.performance is not None and c.performance.get("tpot_ms") is not None
        tier = 0 if c.meets else 1 if (c.fits and predicted) else 2 if not c.fits else 3
        tpot = float((c.performance or {}).get("tpot_ms") or math.inf)
        if tier == 0:        # equal goodput: fewer GPUs, then the fewest flags changed from the planner's
            return (0, -round(c.goodput, 1), c.gpus_used, len(c.changed), tpot)
        if tier == 1:
            return (1, _closeness(c, slo), -(c.output_tokens_per_s_per_gpu or 0.0), len(c.changed), tpot)
        return (tier, c.gpus_used, len(c.changed), 0.0, 0.0)

    out = sorted(cands, key=key)
    for i, c in enumerate(out, 1):
        c.rank = i
    return out



# -- the result as a plan ------------------------------------------------------------------------
def chosen_plan(result: SearchResult) -> Any:
    """The chosen candidate's Plan, with ``slo`` (the search), ``candidates`` (ranked, predicted
    figures), ``performance`` (the chosen one's prediction) and reasons saying why. When nothing
    meets the SLO it is the closest candidate, with an ``slo-missed`` warning naming what misses."""
    c = result.chosen
    p = replace(c.plan, reasons=dict(c.plan.reasons), warnings=list(c.plan.warnings))
    p.slo = result.to_dict()
    p.candidates = [x.to_dict() for x in result.candidates]
    if c.performance is not None:
        w = result.workload
        p.performance = {**c.performance, "workload": {"input_len": w.input_len, "output_len": w.output_len,
                                                       **c.load}}
    runner_up = next((x for x in result.candidates[1:] if x.layout_key != c.layout_key), None)
    if result.feasible:
        why = (f"--slo: {c.layout} serves the most within the targets "
               f"({c.output_tokens_per_s_per_gpu:.1f} output tok/s per GPU")
        if runner_up is not None:
            why += (f"; next layout {runner_up.layout}: " +
                    (f"{runner_up.output_tokens_per_s_per_gpu:.1f}" if runner_up.meets else
                     "misses: " + "; ".join(runner_up.misses)))
        why += ")"
    else:
        why = f"--slo: no layout meets the targets; {c.layout} is the closest ({'; '.join(c.misses)})"
        p.warnings.append(PlanWarning("slo-missed", why))
    if "tensor_parallel_size" not in result.pins:
        p.reasons["tensor_parallel_size"] = f"{c.tensor_parallel_size}: {why}"
    p.reasons["slo"] = why
    p.reasons["replicas"] = f"{c.replicas} server(s) of {c.tensor_parallel_size * c.pipeline_parallel_size} GPU(s)"
    if c.plan.replicas and len(p.replicas) < len(c.plan.replicas):
        p.reasons["replicas"] += f": enough for the rate; {c.gpus_used} of the GPUs used"
    for flag in ("max_num_seqs", "max_num_batched_tokens", "kv_cache_dtype", "quantization"):
        val = getattr(c, flag)
        if val is not None and flag not in result.pins:
            p.reasons[flag] = f"{val}: the best of the values the --slo search tried for {c.layout}"
    for k, v in c.env.items():
        p.reasons[k] = f"{v}: --slo: Triton's fused MoE serves this load better than DeepGEMM's padded one"
    return p
