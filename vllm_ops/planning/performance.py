"""How a plan will serve: TTFT, TPOT and throughput of one replica at a given load, before launch.

    predict(plan, Workload(input_len, output_len, concurrency=C)) -> Performance

First principles plus a few measured efficiencies. The per-step cost (weights and KV read, GEMM and
attention FLOPs, tensor-parallel all-reduces, a fixed step overhead) is :mod:`.perf_step`; vLLM's
scheduler (chunked prefill within ``max_num_batched_tokens``, ``max_num_seqs``, the KV capacity
``plan.memory.kv_cache_tokens``, queueing) is :mod:`.perf_sim`; the fitted efficiencies and the
rows they were fitted on are :mod:`.perf_fit`.

Per replica: with several replicas the workload's concurrency (or rate) is what ONE replica sees;
the caller splits a total load over replicas. A data-parallel server (``--data-parallel-size``) is one
replica: its load is split evenly over its ranks here, and its throughput is all ranks'. Closed loop
(``concurrency``): C clients, each sending its next request when the previous one ends,
``num_requests`` requests in all as a benchmark sends them (first wave included), or, when
``num_requests`` is None, the steady state after the first wave. Open loop (``rate``): Poisson arrivals. Not modelled (a one-line ``reason`` instead of
figures): pipeline parallelism, CPU servers, GPUs without catalog performance figures, requests
longer than ``max_model_len``. Import-light: nothing heavy at import time.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from vllm_ops.errors import BadInput
from vllm_ops.hardware import catalog
from vllm_ops.planning import perf_fit
from vllm_ops.planning.argv import drop, prefix_caching_off
from vllm_ops.planning.coverage import performance_gaps
from vllm_ops.planning.memory import GPU_BLOCK_SIZE, VOCAB_PADDING, GiB, expert_params
from vllm_ops.planning.perf_kernels import DEEP_GEMM_MOE_OFF, expert_parallel, moe_padding
from vllm_ops.planning.perf_lockstep import LockStep, ranks_step_together
from vllm_ops.planning.perf_sim import StepFn, reserved_tokens, running_limit, simulate
from vllm_ops.planning.perf_step import MOE_W_FLOOR, StepCost
from vllm_ops.planning.versions import DEFAULT_VLLM_VERSION

if TYPE_CHECKING:  # pragma: no cover
    from vllm_ops.models.spec import ModelSpec
    from vllm_ops.planning.plan import Plan

BOUNDS = ("weights-bandwidth", "kv-bandwidth", "compute", "communication", "max-num-seqs", "kv-capacity",
          "queueing", "host", "api-server")
GRAPH_MAX_TOKENS = 512            # vLLM's largest CUDA-graph capture size (full graphs for decode batches)
# a known miss, measured on one model (Qwen3-0.6B, w = 3.1 M; tests/data/gpu-runs/h200x1/prefill/q06len, in no fit):
# at one request its TTFT came out 42-52 % low with prompts of 128-1024 tokens and 40-61 % high at 8k-30k
SMALL_GEMM_W = 5.0                # million weights per GPU in a layer's MLP (StepCost.gemm_width)
_FP8_METHODS = ("fp8", "fbgemm_fp8", "modelopt", "fp8_per_tensor", "fp8_per_channel", "fp8_per_block",
                "deepseek_v4_fp8", "modelopt_mxfp8", "mxfp8")
_FP4_METHODS = ("nvfp4", "modelopt_fp4", "nvfp4_per_token")
_W4A16_METHODS = ("awq", "auto_awq", "awq_marlin", "gptq", "auto_gptq", "gptq_marlin", "mxfp4", "gpt_oss_mxfp4",
                  "moe_wna16", "bitsandbytes")


@dataclass(frozen=True)
class Workload:
    input_len: int                 # ISL, tokens per request prompt
    output_len: int                # OSL, tokens generated per request
    concurrency: int | None = None # closed loop: C requests always in flight (vLLM bench --max-concurrency)
    rate: float | None = None      # open loop: requests/s (Poisson); exactly one of concurrency/rate set
    num_requests: int | None = None  # requests a benchmark sends (first wave included); None: steady state
    prefix_cache_hit: float = 0.0  # fraction of prompt tokens vLLM's prefix cache serves (shared prefixes)
    output_spread: float | None = None  # how far requests drift apart (perf_fit: OSL_JITTER when None, clients
                                        # that drift; BENCH_OUTPUT_SPREAD for vllm-ops bench's waves)

    def check(self) -> None:
        if (self.concurrency is None) == (self.rate is None):
            raise BadInput("give exactly one of --concurrency and --rate with --input-len/--output-len")
        if int(self.input_len) < 1 or int(self.output_len) < 1:
            raise BadInput("--input-len and --output-len must be at least 1")
        if self.concurrency is not None and int(self.concurrency) < 1:
            raise BadInput("--concurrency must be at least 1")
        if self.rate is not None and not float(self.rate) > 0:
            raise BadInput("--rate must be > 0 requests/s")
        if self.num_requests is not None and int(self.num_requests) < 1:
            raise BadInput("the number of requests must be at least 1")
        if not 0.0 <= float(self.prefix_cache_hit) <= 1.0:
            raise BadInput("--prefix-cache-hit must be a fraction from 0 to 1")


@dataclass
class Performance:
    ttft_ms: float | None          # mean time to first token
    tpot_ms: float | None          # mean time per output token after the first
    output_tokens_per_s: float | None   # whole server (one replica) at that load
    requests_per_s: float | None        # one replica
    bound: str | None              # one of BOUNDS
    tpot_floor_ms: float | None    # roofline floor for TPOT at that batch
    effective_concurrency: float | None # requests actually running per replica (after max_num_seqs / KV capacity)
    reason: str | None = None      # set when figures are None: why it cannot predict
    notes: list[str] = field(default_factory=list)   # assumptions / fitted constants used (with data names)
    itl_median_ms: float | None = None  # median inter-token gap (decode steps without a prefill chunk dominate)
    hint: str | None = None        # a setting that would serve this load faster, with its effect (the text shows it)
    caveats: list[str] = field(default_factory=list)   # what the model leaves out here, or where measured runs of
                                                        # such a layout strayed from it (the text shows them)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = round(v, 3)
        return d


def refuse(reason: str, notes: list[str] | None = None) -> Performance:
    return Performance(None, None, None, None, None, None, None, reason=reason, notes=list(notes or []))


def model_spec_of(plan: "Plan") -> tuple["ModelSpec | None", str | None]:
    """The model facts of ``plan`` (offline), or None and why not; callers predicting several loads of one
    plan load them once and pass ``spec=``."""
    try:
        from vllm_ops.models import load_model_spec

        return load_model_spec(plan.model.get("path") or plan.model["id"], offline=True), None
    except Exception as exc:  # noqa: BLE001 — any failure to resolve is a reason, not a crash
        return None, f"model facts for {plan.model.get('id')!r} not available offline ({type(exc).__name__})"


def predict(plan: "Plan", workload: Workload, *, spec: "ModelSpec | None" = None,
            efficiency: Any = None) -> Performance:
    """Per-replica prediction for ``plan``'s layout at ``workload`` (see the module doc).
    ``efficiency``: a :class:`~vllm_ops.planning.perf_step.Efficiency` to use instead of the fitted one
    (the evaluation fits and checks them)."""
    workload.check()
    refusal, caveats = performance_gaps(plan.extra_args or ())
    why = _unsupported(plan, workload, refusal)
    if why:
        return refuse(why)
    if spec is None:
        spec, why = model_spec_of(plan)
        if spec is None:
            return refuse(why)

    eff = efficiency or perf_fit.EFFICIENCY
    cost, why = step_cost(plan, spec, eff)
    if cost is None:
        return refuse(why or "no performance figures for this GPU")
    notes = perf_fit.notes() if efficiency is None else ["efficiencies given by the caller"]
    dp = int((plan.vllm_args or {}).get("data_parallel_size") or 1)
    perf = _run(plan, workload, cost, notes) if dp < 2 else _data_parallel(plan, workload, cost, notes, dp)
    if cost.moe_pad and perf.tpot_ms is not None:
        perf.hint = _without_deepgemm(plan, workload, spec, cost, perf)
    if cost.moe_pad == "routed" and perf.ttft_ms is not None:
        perf.caveats.append(perf_fit.deepgemm_ttft_note())
    elif spec.moe and spec.moe.num_experts >= perf_fit.MOE_PREFILL_CHECK["min_experts"] and perf.ttft_ms is not None:
        perf.caveats.append(perf_fit.moe_prefill_note(cost.moe_layers))
    if small_dense_at_high_load(spec, cost, perf):
        perf.caveats.append(perf_fit.high_load_note())
    fill = kv_edge_fill(plan, workload, dp)
    if fill is not None and perf.ttft_ms is not None:
        perf.caveats.append(perf_fit.kv_edge_note(fill, kv_reserve(plan)))
    perf.caveats[:0] = caveats
    return perf


def kv_edge_fill(plan: "Plan", w: Workload, dp: int) -> float | None:
    """The KV cache's fill with every request in flight at its whole length, where that exceeds the cache and (on
    a release whose requests are counted at their whole length, versions.py ``kv_reserve``) the same requests at
    their mean length (input + output/2) fit it (perf_fit.KV_EDGE_CHECK); else None. Closed loop only (an open
    loop's number in flight comes from the simulation)."""
    cap = int(plan.memory.kv_pool_tokens or plan.memory.kv_cache_tokens or 0)
    if not cap or w.concurrency is None:
        return None
    c = rank_concurrency(w.concurrency, dp)
    c = min(c, int((plan.vllm_args or {}).get("max_num_seqs") or c))
    whole, mean = c * (w.input_len + w.output_len), c * (w.input_len + w.output_len / 2)
    if kv_reserve(plan) == "mean":
        return whole / cap if cap < whole else None
    return whole / cap if mean <= cap < whole else None


def small_dense_at_high_load(spec: "ModelSpec", cost: "StepCost", perf: Performance) -> bool:
    """A dense model of at most HIGH_LOAD_CHECK's weights per GPU with that many requests running (perf_fit)."""
    d = perf_fit.HIGH_LOAD_CHECK
    return (spec.moe is None and perf.tpot_ms is not None and (perf.effective_concurrency or 0) >= d["min_running"]
            and cost.weight_bytes / GiB <= d["max_weight_gib"])


def _without_deepgemm(plan: "Plan", w: Workload, spec: "ModelSpec", cost: "StepCost", perf: Performance) -> str | None:
    """The hint beside a plan on DeepGEMM's padded MoE path: how much shorter a decode step of the predicted batch
    would be on Triton's fused MoE (a ratio of two step costs, not a second simulation: plans stay fast). vLLM
    0.12-0.13 pad by default (the variable turns it off); on 0.25 the padding comes from ``--moe-backend deep_gemm``
    (leaving the flag out gives Triton). None where Triton would not be faster."""
    if cost.moe_pad == "all":
        var, val = DEEP_GEMM_MOE_OFF
        how, off_plan = f"with --env {var}={val}", replace(plan, env={**(plan.env or {}), var: val})
    else:
        how = "without --moe-backend deep_gemm"
        off_plan = replace(plan, extra_args=drop(list(plan.extra_args or ()), ["--moe-backend"]))
    off, _why = step_cost(off_plan, spec, cost.eff)
    n = max(int(round(perf.effective_concurrency or 1)), 1)
    ctx = n * (w.input_len + w.output_len / 2)
    ratio = off.step_ms(n, ctx) / cost.step_ms(n, ctx) if off is not None else 1.0
    if cost.moe_pad != "all" and ratio >= 0.98:
        return None
    return (f"{how} (Triton's fused MoE, no padding) a decode step of {n} request{'s' if n != 1 else ''} would take "
            f"{ratio:.2f}x as long: TPOT about {perf.tpot_ms * ratio:.1f} ms")


def rank_concurrency(concurrency: int, dp: int) -> int:
    """The requests one of ``dp`` data-parallel ranks runs when the server runs ``concurrency``."""
    return max(int(round(concurrency / dp)), 1)


def _data_parallel(plan: "Plan", w: Workload, cost: "StepCost", notes: list[str], dp: int) -> Performance:
    """A server of ``dp`` data-parallel ranks, each with its own scheduler and KV cache: the load split evenly over
    them (one rank simulated; a MoE rank's experts see every rank's tokens, perf_step; MoE ranks step together,
    perf_lockstep), throughput of all ranks."""
    c_rank = rank_concurrency(w.concurrency, dp) if w.concurrency is not None else None
    n_rank = None
    if w.num_requests is not None:
        n_rank = max(int(round(w.num_requests * c_rank / w.concurrency)), 1) if c_rank else -(-w.num_requests // dp)
    rank = replace(w, concurrency=c_rank, rate=w.rate / dp if w.rate is not None else None,
                               num_requests=n_rank)
    together = ranks_step_together(cost.moe_layers, dp)
    trace: list[tuple[float, int]] = []
    perf = _run(plan, rank, cost, notes, trace=trace if together else None)
    if together and trace:
        perf = _run(plan, rank, cost, notes, step=LockStep(trace, dp - 1).wrap(cost.step_ms))
    if perf.output_tokens_per_s is not None:
        perf.output_tokens_per_s *= dp
    if perf.requests_per_s is not None:
        perf.requests_per_s *= dp
    share = f"{c_rank} of the {w.concurrency} requests" if c_rank else f"{w.rate / dp:g} requests/s"
    perf.notes.append(f"--data-parallel-size {dp}: the load split evenly over the {dp} ranks (each {share}); TTFT/TPOT "
                      f"of one rank, throughput of the server; " + (_LOCKSTEP_NOTE if together else
                                                                    "load imbalance not modelled"))
    if together:
        perf.caveats.append(perf_fit.dp_moe_note())
    return perf


_LOCKSTEP_NOTE = ("the ranks step together (MoE layers span them): a step lasts as long as the longest of the ranks' "
                  "steps, simulated as the expected longest of this rank's step and the others' drawn from its own "
                  "step times; load imbalance and the ranks' per-step coordination not modelled")


def _unsupported(plan: "Plan", w: Workload, flag_refusal: str | None) -> str | None:
    """Why the model cannot predict this plan (``flag_refusal``: a flag after ``--`` it refuses, coverage.py), or
    None."""
    va = plan.vllm_args or {}
    if not plan.fits:
        return f"the plan does not fit ({plan.failure_stage}): nothing to serve"
    if plan.cpu:
        return "CPU servers are not modelled (GPU roofline only)"
    if int(va.get("pipeline_parallel_size") or 1) > 1:
        return "pipeline parallelism is not modelled"
    if flag_refusal:
        return flag_refusal
    if len(plan.nodes or []) > 1 and any(n.replica is not None for n in plan.nodes):
        return "replicas spanning several nodes are not modelled"
    mml = int(va.get("max_model_len") or 0)
    if mml and w.input_len + w.output_len > mml:
        return (f"input {w.input_len} + output {w.output_len} tokens exceed --max-model-len {mml}: "
                f"vLLM refuses such requests")
    return None


def _gpu_type(plan: "Plan"):
    nodes = (plan.hardware or {}).get("nodes") or []
    gpus = nodes[0].get("gpus") if nodes else []
    if not gpus:
        return None
    g = gpus[0]
    return catalog.find(g.get("catalog_key") or "") or catalog.find(g.get("name") or "")


def _weight_precision(plan: "Plan", spec: "ModelSpec") -> str:
    q = str((plan.vllm_args or {}).get("quantization") or (spec.quantization.method if spec.quantization else "")
            or "").lower()
    if q == "compressed-tensors" and spec.quantization is not None:
        return "fp8" if (spec.quantization.activation_bits or 16) <= 8 and (spec.quantization.bits or 16) == 8 \
            else "w4a16" if (spec.quantization.bits or 16) <= 4 else "bf16"
    if q in _FP8_METHODS:
        return "fp8"
    if q in _FP4_METHODS:
        return "fp4"
    if q in _W4A16_METHODS:
        return "w4a16"
    return "bf16"


def _body_weights(spec: "ModelSpec", prec: str) -> tuple[float, int]:
    """Bytes and parameters of the checkpoint without its embedding table and lm_head (an online fp8 of a 16-bit
    checkpoint: half the bytes)."""
    emb_b = spec.vocab_size * spec.hidden_size * 2.0
    head_b = 0.0 if spec.tie_word_embeddings else emb_b
    body_b = max(float(spec.weight_bytes or 2 * spec.param_count) - emb_b - head_b, 1.0)
    if prec == "fp8" and spec.quantization is None:
        body_b *= 0.5                                  # online fp8 of a 16-bit checkpoint
    emb_params = spec.vocab_size * spec.hidden_size * (1 if spec.tie_word_embeddings else 2)
    return body_b, max(spec.param_count - emb_params, 1)


def _attention_pair_flops(spec: "ModelSpec", tp: int) -> float:
    """Attention FLOPs per (query token, cached token) pair on one GPU, every layer (MLA: over its latent)."""
    hq = spec.num_attention_heads / tp
    if spec.mla is not None:
        return 2.0 * hq * (2 * spec.mla.kv_lora_rank + spec.mla.qk_rope_head_dim) * spec.num_layers
    return 4.0 * hq * spec.head_dim * spec.num_layers


def _expert_width(spec: "ModelSpec", shards: int, ep: bool, notes: list[str]) -> int:
    """An expert's intermediate width on one GPU (whole with expert parallelism, else split over ``shards``); what
    the model does not describe of it goes to ``notes``."""
    if spec.moe is None:
        return 0
    width = spec.moe.moe_intermediate_size if ep else spec.moe.moe_intermediate_size // shards
    if ep:
        notes.append("expert parallel: experts spread over the GPUs (same bytes per GPU as TP-sharded experts); "
                     "the token exchange costed like an all-reduce; expert load imbalance not modelled")
    if 0 < width < MOE_W_FLOOR:
        notes.append(f"experts {width} wide on one GPU, narrower than any measured ({MOE_W_FLOOR}): their MoE FLOP/s "
                     f"taken as {MOE_W_FLOOR}-wide experts' (the narrow-expert fall is not extrapolated)")
    return width


def step_cost(plan: "Plan", spec: "ModelSpec", eff) -> "tuple[StepCost | None, str | None]":
    """The per-GPU step cost of ``plan``'s replica, or (None, why)."""
    g = _gpu_type(plan)
    if g is None or not g.bf16_tflops:
        name = ((plan.hardware or {}).get("spec") or "this GPU")
        return None, f"no performance figures (bandwidth, TFLOP/s) for {name} in the GPU catalog"
    va = plan.vllm_args or {}
    tp = int(va.get("tensor_parallel_size") or 1)
    dp = int(va.get("data_parallel_size") or 1) if spec.moe is not None else 1
    prec = _weight_precision(plan, spec)
    notes: list[str] = []
    peak = {"fp8": g.fp8_tflops, "fp4": g.fp4_tflops}.get(prec) or g.bf16_tflops
    if prec in ("fp8", "fp4") and not {"fp8": g.fp8_tflops, "fp4": g.fp4_tflops}.get(prec):
        notes.append(f"{g.key} has no {prec} tensor cores: weights dequantised, 16-bit FLOP/s used")
    H, V, L = spec.hidden_size, spec.vocab_size, spec.num_layers
    vpad = -(-V // VOCAB_PADDING) * VOCAB_PADDING
    body_b, body_p = _body_weights(spec, prec)
    n_moe, exp_p = expert_params(spec)
    k_over_e = spec.moe.experts_per_token / spec.moe.num_experts if spec.moe is not None else 0.0
    exp_b = body_b * exp_p / body_p
    ne_p = body_p - exp_p
    head_rank = vpad * H * 2.0 / tp                    # lm_head (or the tied embedding) read every step
    kvb = float(plan.memory.kv_bytes_per_token or 0) or spec.kv_bytes_per_token() / tp
    pair = _attention_pair_flops(spec, tp)
    ep = spec.moe is not None and expert_parallel(plan.extra_args)
    width = _expert_width(spec, tp * dp, ep, notes)
    if spec.num_sliding_layers:
        notes.append("sliding-window layers counted as full attention (KV read and FLOPs are upper bounds)")
    link = (g.nvlink_gbs / 2 if g.interconnect == "nvlink" and g.nvlink_gbs else (g.pcie_gbs or 16)) * 1e9
    eager = bool(va.get("enforce_eager"))
    pad = moe_padding(spec=spec, version=str(plan.vllm_version or DEFAULT_VLLM_VERSION),
                      compute_capability=g.compute_capability, tp=tp, dp=dp, ep=ep,
                      extra_args=[str(a) for a in plan.extra_args or ()], env=dict(plan.env or {}))
    if pad.note:
        notes.append(pad.note)
    n_exp = spec.moe.num_experts if spec.moe else 1
    cost = StepCost(
        weight_bytes=(body_b - exp_b) / tp + head_rank, expert_bytes=exp_b / (tp * dp),
        num_experts=spec.moe.num_experts if spec.moe else 0,
        experts_per_token=spec.moe.experts_per_token if spec.moe else 0, moe_tokens_factor=dp,
        flops_per_token=2.0 * (ne_p + exp_p * k_over_e) / tp, expert_flops_per_token=2.0 * exp_p * k_over_e / tp,
        head_flops_per_token=2.0 * vpad * H / tp, kv_bytes_per_token=kvb, attn_flops_per_pair=pair,
        layers=L, moe_layers=n_moe, hidden=H, tp=tp, moe_group=tp * dp, bw=g.bandwidth_gbs * 1e9, flops_peak=peak * 1e12,
        attn_flops_peak=g.bf16_tflops * 1e12, link_bw=link, graph_max_tokens=0 if eager else GRAPH_MAX_TOKENS,
        eff=eff, notes=notes, low_precision=peak != g.bf16_tflops, expert_width=width,
        gemm_width=H * spec.intermediate_size / tp / 1e6,
        async_sched=_schedules_async(plan), moe_pad=pad.mode, moe_local_experts=pad.local_experts,
        moe_rows_per_token=(spec.moe.experts_per_token * dp if spec.moe else 0.0),
        moe_row_flops=2.0 * exp_p / n_exp / (1 if ep else tp * dp))
    cost.notes.append(f"{g.key}: {g.bandwidth_gbs:g} GB/s HBM, {peak:g} TFLOP/s dense ({prec} weights), "
                      f"link {link / 1e9:g} GB/s one way ({g.perf_source})")
    gpu_line = perf_fit.gpu_note(g.key, g.compute_capability)
    if gpu_line:
        cost.notes.append(gpu_line)
    return cost, None


def _run(plan: "Plan", w: Workload, cost: "StepCost", fit_notes: list[str], step: "StepFn | None" = None,
         trace: list[tuple[float, int]] | None = None) -> Performance:
    """One replica (or one data-parallel rank) at ``w``, simulated with ``step`` (``cost.step_ms`` unless given);
    ``trace`` gets the simulated steps (perf_sim.simulate)."""
    step = step or cost.step_ms
    va = plan.vllm_args or {}
    seqs = int(va.get("max_num_seqs") or 256)
    mbt = int(va.get("max_num_batched_tokens") or 2048)
    cap = int(plan.memory.kv_pool_tokens or plan.memory.kv_cache_tokens or 0)
    isl, osl = int(w.input_len), int(w.output_len)
    reserve = kv_reserve(plan)
    limit = running_limit(isl, osl, seqs, cap, reserve) if cap else seqs
    if limit < 1:
        return refuse(f"one request of {isl}+{osl} tokens needs more KV cache than the "
                      f"{cap} tokens this replica has")
    notes = list(cost.notes) + fit_notes
    if 0 < cost.gemm_width < SMALL_GEMM_W:
        notes.append(f"known miss for models this small ({cost.gemm_width:.1f} M weights per GPU in a layer's MLP): on "
                     f"Qwen3-0.6B at one request TTFT came out 42-52 % low with prompts up to 1k tokens and 40-61 % "
                     f"high with 8k-30k-token prompts (measured, in no fit)")
    if cost.eff.cpu_step_ms or cost.eff.cpu_seq_us:
        notes.append(f"vLLM's host work per step {cost.eff.cpu_step_ms:.2f} ms + {cost.eff.cpu_seq_us:.0f} us per "
                     f"request, " + ("overlapped with the GPU's step (async scheduling)" if cost.async_sched else
                                    "added to the GPU's step (synchronous scheduling)"))
    if not cost.graph_max_tokens:
        notes.append(perf_fit.eager_note(bool(cost.moe_layers)))
    if cost.async_sched:
        notes.append("async scheduling: each step is planned as the one before it starts, so a request that arrives "
                     "while a step runs is scheduled in the step after next (simulated)")
    jitter = perf_fit.OSL_JITTER if w.output_spread is None else float(w.output_spread)
    hit = w.prefix_cache_hit
    if hit and prefix_caching_off(plan.extra_args or ()):
        notes.append(f"prefix cache: off (--no-enable-prefix-caching), so none of the {hit:.0%} of every prompt the "
                     f"workload could share is served from it: every prompt prefilled whole")
        hit = 0.0
    elif hit:
        notes.append(f"prefix cache: {hit:.0%} of every prompt assumed cached (whole KV blocks); only the rest is "
                     f"prefilled")
    cached = cached_prompt_tokens(isl, hit, int(va.get("block_size") or GPU_BLOCK_SIZE))
    if cached and cost.eff.cached_prompt_us:
        notes.append(f"prefix cache: each cached prompt token still costs the serving path "
                     f"{cost.eff.cached_prompt_us:g} us before the first token (measured on one model and host: "
                     f"perf_fit.CACHED_PROMPT_US)")
    outside = cost.eff.request_latency_ms(isl, cached)
    kw = dict(input_len=isl, output_len=osl, max_num_seqs=seqs, max_batched_tokens=mbt, kv_capacity_tokens=cap,
              prompt_cached=cached, admit_ms=cost.eff.api_request_ms, plan_ahead=cost.async_sched,
              send_jitter_ms=cost.eff.send_jitter_ms, kv_reserve=reserve)
    if w.concurrency is not None:
        r, rps, running = _closed_loop(step, w, limit, cached, jitter, outside, trace, kw)
        if r is None:
            return refuse("too few requests to measure", notes)
        overloaded = None
    else:
        r, rps, running, overloaded = _open_loop(step, w, limit, jitter, outside, trace, kw)
    ttft = (r.ttft_ms + outside) if r.ttft_ms is not None else None
    tpot = r.tpot_ms if osl > 1 else None
    avg_ctx = isl + osl / 2.0
    floor = cost.floor_ms(max(int(round(running)), 1), max(running, 1.0) * avg_ctx) if osl > 1 else None
    bound = _bound(cost, running, avg_ctx, isl - cached, osl, limit, seqs, w, overloaded)
    perf = Performance(ttft_ms=ttft, tpot_ms=tpot, output_tokens_per_s=rps * osl, requests_per_s=rps,
                       bound=bound, tpot_floor_ms=floor, effective_concurrency=running, notes=notes,
                       itl_median_ms=r.itl_median_ms if osl > 1 else None)
    if overloaded is not None:
        perf.ttft_ms = None
        perf.reason = (f"arrival rate {w.rate:g}/s is above what one replica serves (about {overloaded:.3g}/s): "
                       f"the queue, and TTFT, grow without bound")
    if w.concurrency is not None and int(w.concurrency) > limit:
        perf.notes.append(f"{int(w.concurrency) - limit} of {int(w.concurrency)} requests wait in the queue "
                          f"(limit {limit} running: max_num_seqs {seqs}, KV cache {cap} tokens / "
                          f"{reserved_tokens(isl, osl, reserve)} per request, "
                          f"{'its mean length' if reserve == 'mean' else 'its whole length'})")
    return perf


def _closed_loop(step: "StepFn", w: Workload, limit: int, cached: int, jitter: float, outside: float,
                 trace: list | None, kw: dict) -> tuple[Any, float, float]:
    """``w.concurrency`` clients, each sending its next request when the last one ends: the simulation (None when
    too few requests finished), requests per second and requests running."""
    isl, osl = int(w.input_len), int(w.output_len)
    c = int(w.concurrency)
    n = int(w.num_requests) if w.num_requests else c + max(2 * c, 32)
    warm = 0 if w.num_requests else c
    stagger = 0.0
    if not w.num_requests:     # steady state: clients spread over one request's lifetime
        b = min(c, limit)
        stagger = osl * step(b, b * (isl + osl / 2.0), b * (isl - cached) // max(osl, 1), 0.0) / b
    r = simulate(step, concurrency=c, num_requests=n, warmup=warm, stagger_ms=stagger,
                 osl_jitter=jitter, trace=trace, **kw)
    if r.ttft_ms is None:
        return None, 0.0, 0.0
    return r, min(c, n) / (r.e2e_ms + outside) * 1e3, float(min(c, limit))


def _open_loop(step: "StepFn", w: Workload, limit: int, jitter: float, outside: float, trace: list | None,
               kw: dict) -> tuple[Any, float, float, float | None]:
    """Requests arriving at ``w.rate`` per second: the simulation, requests per second, requests running, and the
    server's capacity when the rate is above it (None when it serves the rate)."""
    rate = float(w.rate)
    sat_trace: list[tuple[float, int]] | None = [] if trace is not None else None
    sat = simulate(step, concurrency=limit, num_requests=limit + max(limit // 2, 32), warmup=limit,
                   osl_jitter=jitter, trace=sat_trace, **kw)
    capacity = limit / (sat.e2e_ms + outside) * 1e3 if sat.e2e_ms else 0.0
    overloaded = capacity if rate > 0.97 * capacity else None
    if overloaded is not None:
        r = sat                        # at saturation: the server runs `limit` requests, the rest queue
        if trace is not None and sat_trace:
            trace.extend(sat_trace)
    else:
        n = int(w.num_requests) if w.num_requests else min(max(200, int(rate * 30)), 1000)
        r = simulate(step, rate=rate, num_requests=n, warmup=n // 10, osl_jitter=jitter, trace=trace, **kw)
    return r, min(rate, capacity), r.mean_running, overloaded


def kv_reserve(plan: "Plan") -> str:
    """What the plan's vLLM lets a running request hold in the KV cache before it preempts, by release
    (planning/versions.py ``kv_reserve``; perf_sim.reserved_tokens)."""
    from vllm_ops.planning import versions

    return versions.kv_reserve(plan.vllm_version or DEFAULT_VLLM_VERSION)


def _schedules_async(plan: "Plan") -> bool:
    """Whether the plan's vLLM runs async scheduling: the release's default (planning/versions.py)
    unless the deployment passes ``--no-async-scheduling`` (or ``--async-scheduling`` on an older one)."""
    from vllm_ops.planning.argv import parse_flags, switched_off
    from vllm_ops.planning.versions import DEFAULT_VLLM_VERSION, rules_for

    args = [str(a) for a in plan.extra_args or ()]
    if switched_off(args, "async-scheduling"):
        return False
    return bool(parse_flags(args).get("async_scheduling")) or \
        bool(rules_for(str(plan.vllm_version or DEFAULT_VLLM_VERSION))["async_scheduling"])


def cached_prompt_tokens(isl: int, hit: float, block: int) -> int:
    """Prompt tokens the prefix cache serves at hit fraction ``hit``: whole KV blocks, and never the
    last prompt token (vLLM computes at least that one to sample the first output token)."""
    if not hit or isl < 2:
        return 0
    block = max(int(block), 1)
    return min(int(hit * isl) // block, (isl - 1) // block) * block


def _bound(cost: "StepCost", running: float, avg_ctx: float, isl: int, osl: int, limit: int, seqs: int,
           w: Workload, overloaded: float | None) -> str:
    if overloaded is not None:
        return "queueing"
    if w.concurrency is not None and int(w.concurrency) > limit:
        return "max-num-seqs" if limit == seqs else "kv-capacity"
    b = max(int(round(running)), 1)
    p = cost.parts(b, b * avg_ctx, int(round(b * isl / max(osl, 1))), b * isl / max(osl, 1) * isl / 2.0)
    if p.api_ms > max(p.gpu_ms, p.host_ms):
        return "api-server"                # vLLM's API server cannot stream the tokens faster
    if p.overlapped and p.host_ms > p.gpu_ms:
        return "host"                      # async scheduling, and vLLM's host work is the longer of the two
    if p.launch_ms and p.launch_ms >= p.gpu_ms:
        return "host"                      # --enforce-eager: launching the step's kernels takes longer than running them
    terms = {"communication": p.comm_ms}
    terms[p.gemm_bound] = terms.get(p.gemm_bound, 0.0) + p.gemm_ms
    terms[p.attn_bound] = terms.get(p.attn_bound, 0.0) + p.attn_ms
    if not p.overlapped:
        terms["host"] = p.host_ms          # synchronous: the host work adds to the step like any other term
    return max(terms.items(), key=lambda kv: kv[1])[0]
