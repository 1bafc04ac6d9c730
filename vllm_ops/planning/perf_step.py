"""What one vLLM engine step costs on one GPU of a replica: the roofline terms of the performance model.

A step runs ``n_dec`` decode tokens (one per running request, reading ``sum_ctx`` cached tokens in
attention) and ``n_pre`` prefill tokens (chunked prefill, mixed into the same step; ``pre_ctx`` is
the sum over those tokens of the context each attends to). Per GPU it does:

* GEMMs: reads the weights once (MoE: only the experts some token of the step routed to, expected
  ``E * (1 - (1 - k/E)**N)`` per layer) and does ``2 * active_params * tokens`` FLOPs;
  time = max(bytes / achieved bandwidth, FLOPs / achieved FLOP/s) — a kernel is bound by one or the other.
* DeepGEMM's MoE grouped GEMM (vLLM 0.12's default for block-FP8 MoE on Hopper; ``--moe-backend deep_gemm``):
  its rows padded to 128 per expert (:mod:`vllm_ops.planning.perf_kernels`). vLLM 0.25's padding (``routed``): the
  padding rows cost as rows at ``moe_pad_flops`` of the peak ADDED to the GEMMs' time (measured on H200 and H100:
  the same cost on both cards, not hidden by the weights' read), plus ``moe_pad_layer_us`` per MoE layer; vLLM
  0.12's (``all``, every local expert at every step): at ``moe_pad_all_flops`` inside the GEMMs' compute term
  (overlapping the read), plus ``moe_pad_all_layer_us``.
* attention: reads the KV cache of every decode token's context (KV bytes per token per GPU from
  the memory plan: MLA's compressed latent, fp8 KV) and does ``4 * heads * head_dim`` FLOPs per
  (query, key) pair per layer; time = max(bytes / bandwidth, FLOPs / FLOP/s), separately from the
  GEMMs (separate kernels).
* communication: two tensor-parallel all-reduces per layer (attention output and MLP/MoE output),
  ring cost ``2 (g-1)/g * tokens * hidden * 2 B`` over the GPU link plus a fixed latency per call;
  with attention data parallelism the MoE layer exchanges every DP rank's tokens.
* a fixed per-step overhead on the GPU (launch, small kernels) plus a per-layer
  floor (every layer runs a dozen small kernels - norms, rotary, routing - whatever the batch), and
  an extra per-layer cost when the step runs outside a full CUDA graph (mixed prefill steps above
  the capture size).
* ``--enforce-eager`` (no CUDA graphs, no torch.compile): the host launches every kernel of every layer itself
  while the GPU runs the ones already launched; measured on 1x H200 (tests/data/gpu-runs/h200x1/eager/) a step
  then takes about the same time at 1 as at 32 requests, so the model gives it a floor: ``eager_launch_us`` per
  layer (``eager_moe_launch_us`` more per MoE layer) plus ``eager_weights_x`` times the time the step's weights
  take to read (the larger model's layers took longer: the form that fits the three dense models, not a
  derivation).
* vLLM's host work (scheduling, input preparation, sampling, handing the tokens out): a fixed part plus a
  part per request in the step. Synchronous scheduling (vLLM's default before 0.14, or
  ``--no-async-scheduling``) adds it to the GPU's step; async scheduling (the default from 0.14) prepares
  the next step while the GPU runs this one, so the longer of the two sets the pace.
* vLLM's API server, a process of its own, streams each token out: a step's tokens cannot be seen faster
  than it hands them out (``api_token_us`` per token, a floor on the step).

Efficiencies (achieved bandwidth fraction, achieved FLOP fraction, overheads, all-reduce latency)
come from :mod:`vllm_ops.planning.perf_fit`, which names the measured rows they were fitted on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from vllm_ops.planning.perf_kernels import padded_rows


# The narrowest expert width on one GPU any fit has seen: Qwen3-30B-A3B at TP 1 (768; our q30bf, q30fp8 and q30dg
# runs; the other MoE family in the fits, Mixtral, is 14336 wide). Below it the narrow-expert fall (moe_f_half, two
# widths behind it) is not extrapolated: narrower experts get the MoE FLOP/s of 768-wide ones (and the plan says so).
# A rule, not a fit; added in session 16 after NVIDIA's Qwen3-235B-A22B-FP8 rows at TP 4 (384 wide, in no fit) came
# out high (TTFT +17..+106 %), so those rows do not test the decision, only the constants.
MOE_W_FLOOR = 768


@dataclass(frozen=True)
class Efficiency:
    bw: float                      # achieved fraction of the HBM bandwidth
    flops: float                   # achieved fraction of dense tensor FLOP/s (large GEMMs)
    step_ms: float                 # fixed cost of every engine step
    layer_us: float                # per layer and step: kernel floor (a dozen small kernels per layer)
    allreduce_us: float            # latency of one all-reduce call (added per call)
    request_ms: float              # client-side fixed cost of one request's first token (HTTP, tokenizer)
    moe_bw: float = 1.0            # fused-MoE kernels: achieved bandwidth relative to dense GEMMs (decode)
    moe_flops: float = 0.0         # fused-MoE kernels: achieved fraction of the FLOP/s peak (0: as dense GEMMs)
    moe_layer_us: float = 0.0      # extra per MoE layer and step (routing, sort/align, gather kernels)
    eager_layer_us: float = 0.0    # extra per layer for steps not run as one CUDA graph
    eager_launch_us: float = 0.0   # --enforce-eager: a floor on the step of this much per layer, this much more per
    eager_moe_launch_us: float = 0.0  # MoE layer, plus eager_weights_x x the time to read the step's weights (below)
    eager_weights_x: float = 0.0
    flops_fp8: float = 0.0         # achieved fraction of dense FP8 FLOP/s (FP8/FP4 weights); 0: same as flops
    moe_f_half: float = 0.0        # fused-MoE FLOP/s fall with narrow experts: x w/(w + moe_f_half), w = an expert's
                                   # intermediate width on one GPU (0: no such fall)
    harness_ms: float = 0.0        # per request, the public rows' harness only (a Dynamo frontend + aiperf in
                                   # front of vLLM): fitted so that it does not leak into request_ms; plans ignore it
    cpu_step_ms: float = 0.0       # vLLM's host work per step (schedule, prepare inputs, sample, hand results out)
    cpu_seq_us: float = 0.0        # ... plus this per request in the step; synchronous scheduling adds the host work
                                   # to the GPU's step, async scheduling overlaps the two (the longer one sets the pace)
    api_token_us: float = 0.0      # vLLM's API server (a process of its own) streams at most one token per this
                                   # many us: a step of n decode requests is seen to take at least n x this
    api_request_ms: float = 0.0    # ... and takes the requests one at a time, this long each, before the scheduler
                                   # sees them (a wave of c requests reaches it spread over c x this)
    gemm_w_half: float = 0.0       # dense GEMM FLOP/s fall with small GEMMs: x w/(w + gemm_w_half), w = hidden x
                                   # intermediate size on one GPU, in millions of weights (0: no such fall)
    send_jitter_ms: float = 0.0    # a closed-loop client sends its next request up to this long after the last ends
    harness_jitter_ms: float = 0.0  # the public rows' harness only: through_harness moves it into send_jitter_ms
    moe_pad_flops: float = 0.0     # DeepGEMM's MoE grouped GEMM: its padding rows (perf_kernels) cost as rows at this
                                   # fraction of the FLOP/s peak (0: as at the whole peak)
    moe_pad_layer_us: float = 0.0  # ... and its extra kernels (permute, scale packing, unpermute) per MoE layer
    moe_pad_all_flops: float = 0.0      # the same two for vLLM 0.12's padding of every local expert (perf_kernels
    moe_pad_all_layer_us: float = 0.0   # "all"), whose padding rows overlap the weights' read (0: as moe_pad_*)
    harness_prompt_us: float = 0.0  # the public rows' harness only: its latency per prompt token (fit.json harness_fit)
    request_prompt_us: float = 0.0  # per prompt token of a request's first token, outside vLLM (0: plans; the
                                    # public harness: through_harness)
    cached_prompt_us: float = 0.0   # per prompt token the prefix cache serves: the serving path's own latency
                                    # (perf_fit.CACHED_PROMPT_US), which the fitted prefill constants carry for the
                                    # tokens they compute

    def through_harness(self) -> "Efficiency":
        """These efficiencies as the public rows' harness sees them: its per-request latency (``harness_ms``) added
        to ``request_ms``, its per-prompt-token one (``harness_prompt_us``) as ``request_prompt_us``; its frontend
        (Dynamo), not vLLM's API server, streams the tokens. Where that per-token latency was fitted it holds the
        cached tokens' too; where no rows identified it, the cached tokens keep vLLM's own (a floor)."""
        return replace(self, request_ms=self.request_ms + self.harness_ms, api_token_us=0.0, api_request_ms=0.0,
                       send_jitter_ms=self.harness_jitter_ms, request_prompt_us=self.harness_prompt_us,
                       cached_prompt_us=0.0 if self.harness_prompt_us else self.cached_prompt_us)

    def request_latency_ms(self, prompt_tokens: int, cached_tokens: int = 0) -> float:
        """What a request's first token (and its end) carries outside the engine's steps."""
        return (self.request_ms + self.request_prompt_us * prompt_tokens / 1e3
                + self.cached_prompt_us * cached_tokens / 1e3)


@dataclass(frozen=True)
class StepParts:
    gemm_ms: float
    attn_ms: float
    comm_ms: float
    overhead_ms: float
    gemm_bound: str                # "weights-bandwidth" | "compute"
    attn_bound: str                # "kv-bandwidth" | "compute"
    host_ms: float = 0.0           # vLLM's host work for the step
    overlapped: bool = False       # async scheduling: the host work runs while the GPU runs the previous step
    api_ms: float = 0.0            # the API server's time to stream the step's tokens (a floor on the step)
    launch_ms: float = 0.0         # --enforce-eager: the host's time to launch the step's kernels (a floor on it)

    @property
    def gpu_ms(self) -> float:
        return max(self.gemm_ms + self.attn_ms + self.comm_ms + self.overhead_ms, self.launch_ms)

    @property
    def total_ms(self) -> float:
        t = max(self.gpu_ms, self.host_ms) if self.overlapped else self.gpu_ms + self.host_ms
        return max(t, self.api_ms)


@dataclass
class StepCost:
    """Per-GPU cost model of one engine step of one replica (see the module doc)."""
    weight_bytes: float            # non-expert weights read per step (no embedding table), per GPU
    expert_bytes: float            # all routed-expert weights held by one GPU (0 for dense models)
    num_experts: int               # routed experts per MoE layer
    experts_per_token: int
    moe_tokens_factor: int         # DP ranks whose tokens pass through this GPU's experts
    flops_per_token: float         # 2 x active parameters per GPU (without lm_head)
    expert_flops_per_token: float  # the MoE part of flops_per_token
    head_flops_per_token: float    # lm_head, per sampled token
    kv_bytes_per_token: float      # KV cache bytes per cached token per GPU
    attn_flops_per_pair: float     # FLOPs per (query token, cached token) pair per GPU
    layers: int
    moe_layers: int                # layers with routed experts
    hidden: int
    tp: int
    moe_group: int                 # GPUs the MoE layer spans (tp x dp)
    bw: float                      # HBM bytes/s
    flops_peak: float              # dense FLOP/s in the weights' precision
    attn_flops_peak: float         # dense FLOP/s of attention (16-bit)
    link_bw: float                 # bytes/s one way between two GPUs of the replica
    graph_max_tokens: int          # largest batch run as a full CUDA graph (0: eager)
    eff: Efficiency
    low_precision: bool = False    # FP8/FP4 GEMMs: eff.flops_fp8 applies
    expert_width: int = 0          # an expert's intermediate width on one GPU (TP-sharded unless expert parallel)
    gemm_width: float = 0.0        # hidden x intermediate size on one GPU, millions (the dense GEMMs' size)
    async_sched: bool = False      # vLLM schedules the next step while the GPU runs this one (host work overlapped)
    moe_pad: str = ""              # MoE GEMM padded to 128 rows per expert: "" no | "all" | "routed" (perf_kernels)
    moe_local_experts: int = 0     # routed experts one GPU holds (the padding's count)
    moe_rows_per_token: float = 0.0  # token-expert rows one GPU's MoE layer gets per token of the step (top-k x DP)
    moe_row_flops: float = 0.0     # FLOPs of one such row through this GPU's MoE layers (all of them)
    notes: list[str] = field(default_factory=list)

    def launch_ms(self, weights_ms: float = 0.0) -> float:
        """``--enforce-eager`` (no graph at all): the floor on a step whose weights take ``weights_ms`` to read."""
        if self.graph_max_tokens:
            return 0.0
        e = self.eff
        return (self.layers * e.eager_launch_us + self.moe_layers * e.eager_moe_launch_us) / 1e3 \
            + e.eager_weights_x * weights_ms

    def host_ms(self, n_dec: int, n_pre: int) -> float:
        """vLLM's host work for a step of ``n_dec`` decode requests and a prefill chunk (counted as one request)."""
        return self.eff.cpu_step_ms + self.eff.cpu_seq_us * (n_dec + (1 if n_pre else 0)) / 1e3

    def _gemm_eff(self) -> float:
        """Dense GEMMs' fraction of the FLOP/s peak (the FP8 one for FP8/FP4 weights), lower for small GEMMs
        (``gemm_w_half``)."""
        e = self.eff
        base = (e.flops_fp8 or e.flops) if self.low_precision else e.flops
        if e.gemm_w_half and self.gemm_width:
            base *= self.gemm_width / (self.gemm_width + e.gemm_w_half)
        return base

    def _moe_flops_eff(self, gemm_eff: float) -> float:
        """The fused-MoE kernels' fraction of the FLOP/s peak: ``moe_flops`` (or the dense one), lowered for
        narrow experts by ``moe_f_half``."""
        e = self.eff
        base = e.moe_flops or gemm_eff
        if e.moe_f_half and self.expert_width:
            w = max(self.expert_width, MOE_W_FLOOR)
            base *= w / (w + e.moe_f_half)
        return base

    def _moe_flops_s(self, n_tokens: int, gemm_eff: float, pad: "PadCost | None") -> float:
        """Seconds of the MoE layers' grouped GEMMs: the routed rows at the fused-MoE kernels' FLOP/s, plus with
        vLLM 0.12's DeepGEMM padding (``moe_pad`` "all", which overlaps the weights' read) the padding rows it runs
        at ``moe_pad_all_flops`` of the peak (vLLM 0.25's padding is added to the GEMMs' time instead: :meth:`parts`)."""
        routed = self.expert_flops_per_token * n_tokens / (self.flops_peak * self._moe_flops_eff(gemm_eff))
        if pad is None or pad.added:
            return routed
        return routed + _pad_ms(pad, n_tokens) / 1e3

    def _weights_read(self, n_tokens: int, moe_bw: float = 1.0) -> float:
        """Weight bytes read in a step of ``n_tokens``; expert bytes divided by ``moe_bw`` (the
        fused-MoE kernels' bandwidth relative to dense GEMMs) when given."""
        if not self.expert_bytes:
            return self.weight_bytes
        routed = max(n_tokens, 0) * self.moe_tokens_factor
        frac = 1.0 - (1.0 - self.experts_per_token / self.num_experts) ** routed if routed else 0.0
        return self.weight_bytes + self.expert_bytes * frac / moe_bw

    def parts(self, n_dec: int, sum_ctx: float, n_pre: int = 0, pre_ctx: float = 0.0) -> StepParts:
        e = self.eff
        n = n_dec + n_pre
        w_s = self._weights_read(n, e.moe_bw) / (self.bw * e.bw)
        dense_flops = (self.flops_per_token - self.expert_flops_per_token) * n
        gemm_eff = self._gemm_eff()
        pad = self._pad_constants()
        c_s = dense_flops / (self.flops_peak * gemm_eff) + self._moe_flops_s(n, gemm_eff, pad) \
            + self.head_flops_per_token * (n_dec + (1 if n_pre else 0)) / (self.attn_flops_peak * e.flops)
        gemm_ms = max(w_s, c_s) * 1e3 + (_pad_ms(pad, n) if pad and pad.added else 0.0)
        kv_s = self.kv_bytes_per_token * sum_ctx / (self.bw * e.bw)
        a_s = self.attn_flops_per_pair * (sum_ctx + pre_ctx) / (self.attn_flops_peak * e.flops)
        attn_ms = max(kv_s, a_s) * 1e3
        comm_ms = 0.0
        if self.tp > 1:
            comm_ms += self.layers * self._allreduce_ms(n, self.tp)
        if self.moe_group > 1:
            comm_ms += self.layers * self._allreduce_ms(n * max(self.moe_tokens_factor, 1), self.moe_group)
        overhead = self._overhead_ms()
        if n > self.graph_max_tokens:
            overhead += self.layers * e.eager_layer_us / 1e3
        return StepParts(gemm_ms, attn_ms, comm_ms, overhead,
                         "weights-bandwidth" if w_s >= c_s else "compute",
                         "kv-bandwidth" if kv_s >= a_s else "compute", self.host_ms(n_dec, n_pre), self.async_sched,
                         n_dec * e.api_token_us / 1e3, self.launch_ms(w_s * 1e3))

    def _allreduce_ms(self, n_tokens: int, group: int) -> float:
        msg = n_tokens * self.hidden * 2.0
        return (self.eff.allreduce_us * 1e-6 + 2 * (group - 1) / group * msg / self.link_bw) * 1e3

    def step_ms(self, n_dec: int, sum_ctx: float, n_pre: int = 0, pre_ctx: float = 0.0) -> float:
        """``parts(...).total_ms``, computed without building the parts (the simulation's hot path)."""
        k = self.__dict__.get("_k")
        if k is None:
            k = self._k = self._constants()
        bw, w_fixed, w_exp, q, moe_f, f_dense, f_moe, f_head, kv_c, a_c, comm_c, comm_b, comm2_c, comm2_b, ovh, \
            eager, gmax, h_c, h_s, overlap, api, launch, eager_x, pad = k
        n = n_dec + n_pre
        if w_exp:
            routed = n * moe_f
            w = w_fixed + w_exp * (1.0 - q ** routed if routed else 0.0)
        else:
            w = w_fixed
        c = (f_dense + f_moe) * n + f_head * (n_dec + (1 if n_pre else 0))
        added = 0.0
        if pad:
            if pad.added:
                added = _pad_ms(pad, n)
            else:
                c += _pad_ms(pad, n)
        gemm = (w if w >= c else c) + added
        kv = kv_c * sum_ctx
        at = a_c * (sum_ctx + pre_ctx)
        t = gemm + (kv if kv >= at else at) + ovh
        if comm_c:
            t += comm_c + comm_b * n
        if comm2_c:
            t += comm2_c + comm2_b * n
        if n > gmax:
            t += eager
        if launch:
            floor = launch + eager_x * w
            if floor > t:
                t = floor
        if h_c or h_s:
            h = h_c + h_s * (n_dec + (1 if n_pre else 0))
            t = (t if t >= h else h) if overlap else t + h
        if api and n_dec * api > t:
            t = n_dec * api
        return t

    def _constants(self) -> tuple:
        """Per-plan constants of :meth:`step_ms`, in ms per unit."""
        e = self.eff
        to_w = 1e3 / (self.bw * e.bw)
        gemm_eff = self._gemm_eff()
        to_c = 1e3 / (self.flops_peak * gemm_eff)
        q = (1.0 - self.experts_per_token / self.num_experts) if self.num_experts else 0.0
        comm_c = comm_b = comm2_c = comm2_b = 0.0
        if self.tp > 1:
            comm_c = self.layers * e.allreduce_us * 1e-3
            comm_b = self.layers * 2 * (self.tp - 1) / self.tp * self.hidden * 2.0 / self.link_bw * 1e3
        if self.moe_group > 1:
            g = self.moe_group
            comm2_c = self.layers * e.allreduce_us * 1e-3
            comm2_b = self.layers * 2 * (g - 1) / g * self.hidden * 2.0 * max(self.moe_tokens_factor, 1) \
                / self.link_bw * 1e3
        return (to_w, self.weight_bytes * to_w, self.expert_bytes / e.moe_bw * to_w, q, self.moe_tokens_factor,
                (self.flops_per_token - self.expert_flops_per_token) * to_c,
                self.expert_flops_per_token * 1e3 / (self.flops_peak * self._moe_flops_eff(gemm_eff)),
                self.head_flops_per_token * 1e3 / (self.attn_flops_peak * e.flops),
                self.kv_bytes_per_token * to_w, self.attn_flops_per_pair * 1e3 / (self.attn_flops_peak * e.flops),
                comm_c, comm_b, comm2_c, comm2_b,
                self._overhead_ms(),
                self.layers * e.eager_layer_us / 1e3, self.graph_max_tokens,
                e.cpu_step_ms, e.cpu_seq_us / 1e3, self.async_sched, e.api_token_us / 1e3, self.launch_ms(),
                0.0 if self.graph_max_tokens else e.eager_weights_x, self._pad_constants())

    def _overhead_ms(self) -> float:
        """The step's fixed GPU overhead: per step, per layer, per MoE layer (more on DeepGEMM's padded path)."""
        e = self.eff
        moe_us = e.moe_layer_us + (self._pad_efficiency()[1] if self.moe_pad else 0.0)
        return e.step_ms + (self.layers * e.layer_us + self.moe_layers * moe_us) / 1e3

    def _pad_efficiency(self) -> tuple[float, float]:
        """(fraction of the FP8 peak, us per MoE layer) of this deployment's DeepGEMM padding."""
        e = self.eff
        if self.moe_pad == "all" and e.moe_pad_all_flops:
            return e.moe_pad_all_flops, e.moe_pad_all_layer_us
        return e.moe_pad_flops, e.moe_pad_layer_us

    def _pad_constants(self) -> "PadCost | None":
        """DeepGEMM's padded MoE GEMM for this deployment, or None."""
        if not self.moe_pad:
            return None
        flops = self._pad_efficiency()[0]
        return PadCost(self.moe_pad, self.moe_rows_per_token, self.moe_local_experts,
                       self.moe_row_flops * 1e3 / (self.flops_peak * (flops or 1.0)), self.moe_pad == "routed")

    def floor_ms(self, n_dec: int, sum_ctx: float, n_pre: int = 0, pre_ctx: float = 0.0) -> float:
        """Roofline floor of a step (by default a pure decode step): every term at 100% of the peak, no overhead."""
        n = max(n_dec + n_pre, 1)
        mem = (self._weights_read(n) + self.kv_bytes_per_token * sum_ctx) / self.bw
        comp = (self.flops_per_token * n + self.attn_flops_per_pair * (sum_ctx + pre_ctx)) / self.flops_peak
        return max(mem, comp) * 1e3


class PadCost(NamedTuple):
    """DeepGEMM's padded MoE GEMM as a step costs it (:meth:`StepCost._pad_constants`)."""
    mode: str           # "all" (vLLM 0.12: every local expert) | "routed" (0.25: experts a token routes to)
    per_token: float    # routed rows per token
    local: int          # routed experts one GPU holds
    row_ms: float       # one padding row at the padding's fraction of the FP8 peak
    added: bool         # its time adds to the GEMMs' (0.25) rather than overlapping the weights' read (0.12)


def _pad_ms(pad: PadCost, n_tokens: int) -> float:
    """Milliseconds the padding rows of one step of ``n_tokens`` cost."""
    return pad.row_ms * (padded_rows(pad.mode, n_tokens * pad.per_token, pad.local) - n_tokens * pad.per_token)


def unique_expert_fraction(tokens: int, experts: int, per_token: int) -> float:
    """Expected fraction of ``experts`` that at least one of ``tokens`` routes to (uniform routing)."""
    if tokens <= 0 or experts <= 0:
        return 0.0
    return 1.0 - math.pow(1.0 - per_token / experts, tokens)
