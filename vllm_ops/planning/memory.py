"""vLLM's startup memory arithmetic, per GPU, as a pure function of config.json facts and flags.

The sequence it mirrors (vLLM 0.33.0 ``vllm/v1/worker/gpu_worker.py``, ``determine_available_memory``)::

    budget   = ceil(total x gpu_memory_utilization)            # a fraction of TOTAL, not free memory
    weights  = per-rank share of the checkpoint (+ small buffers)
    act      = torch peak of the dummy forward of max_num_batched_tokens tokens (+ sampler rows)
    non_torch= NCCL / cuBLAS / attention workspaces created during the profile (grows with TP)
    graphs   = CUDA-graph pool; subtracted from the budget only where the version/runner estimates it
    KV       = budget - weights - act - non_torch - graphs_in_budget
    blocks   = KV // (page_size x layers_per_group); tokens = blocks x block_size (group-aware)

Outside the budget (``total - budget``) must still hold the CUDA context (created before the
snapshot, so never charged), any graphs not charged, and - in older versions - the part of the
post-KV sampler warm-up that the profile did not see. That leftover is ``margin_gib``; when it is
tiny, identical flags can succeed once and OOM the next time (calibration rows 53/54).

Numbers are GiB per GPU unless the name says otherwise. All coefficients are fitted to real logs
(``tests/data/reference/*.csv``) and named here once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from vllm_ops.models.spec import ModelSpec
from vllm_ops.planning.versions import VersionRules

GiB = 1024**3

CUDA_CONTEXT_GIB = 0.52          # measured: free 78.66 of 79.18 GiB before vLLM's snapshot (H100, 0.25.0)
WEIGHTS_OVERHEAD_GIB = 0.04      # rotary caches and small buffers counted in "Model loading took"
# the CUDA caching allocator gives a tensor of >= 10 MiB its own segment, rounded up to 2 MiB; a tail
# below 1 MiB is not split off and stays allocated (so "Model loading took" counts it). Qwen2.5-7B's
# shapes leave 56 MiB of such tails at TP1 (plan 14.28 vs 14.29 GiB measured), Llama's none (15.00/15.00)
ALLOC_SEGMENT_ROUND = 2 * 1024**2
ALLOC_OWN_SEGMENT_MIN = 10 * 1024**2
ALLOC_SPLIT_MIN = 1024**2
LORA_DEFAULT_MAX_LORAS = 1       # vLLM's --max-loras default
LORA_DEFAULT_MAX_RANK = 16       # vLLM's --max-lora-rank default
GRAPH_BYTES_PER_TOKEN_HIDDEN_LAYER = 15.57   # fitted: Qwen2.5-7B 0.37 GiB @256, Llama-3.1-8B 0.98 GiB @512 (0.25.0)
VOCAB_PADDING = 64
GPU_BLOCK_SIZE = 16
CPU_BLOCK_SIZE = 128
THIN_MARGIN_FRACTION = 0.02      # leftover below 2% of the budget: outcomes flip between runs
THIN_MARGIN_MIN_GIB = 0.25

KV_DTYPE_BYTES = {
    "auto": None, "float16": 2.0, "half": 2.0, "bfloat16": 2.0, "float32": 4.0, "float": 4.0,
    "fp8": 1.0, "fp8_e4m3": 1.0, "fp8_e5m2": 1.0, "fp8_inc": 1.0, "fp8_ds_mla": 1.0,
    "int8_per_token_head": 1.0, "fp8_per_token_head": 1.0, "int4_per_token_head": 0.5,
    "nvfp4": 0.5625, "nvfp4_ds_mla": 0.5625, "nvfp4_4over6": 0.5625,
}


@dataclass
class Flags:
    tp: int = 1
    pp: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int = 4096
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    kv_cache_dtype: str = "auto"
    dtype: str = "auto"
    quantization: str | None = None
    enforce_eager: bool = False
    block_size: int = GPU_BLOCK_SIZE
    max_loras: int = 0               # --enable-lora: adapter slots (0: LoRA off)
    max_lora_rank: int = LORA_DEFAULT_MAX_RANK


@dataclass
class Estimate:
    total_gib: float
    budget_gib: float
    weights_gib: float
    activation_peak_gib: float
    non_torch_gib: float
    cuda_graph_gib: float
    cuda_graph_in_budget: bool
    sampler_warmup_gib: float          # sampler part of the warm-up (num_reqs x vocab logits, several copies)
    warmup_unprofiled_gib: float       # what the post-KV warm-up needs beyond the profile (old versions)
    kv_cache_gib: float
    kv_cache_tokens: int
    max_concurrency: float
    kv_bytes_per_token: int            # per GPU, all layers of the stage, full-attention equivalent
    num_blocks: int
    kv_needed_one_seq_gib: float       # KV one request at max_model_len needs
    max_len_that_fits: int             # the longest max_model_len one request could use
    outside_budget_gib: float          # what the GPU has beyond the budget (free - context - budget)
    margin_gib: float                  # left on the GPU after everything (negative: short by)
    fits: bool
    failure_stage: str | None
    runner: str
    thin: bool = False
    explain: list[str] = field(default_factory=list)


# -- pieces -----------------------------------------------------------------------------------
def act_dtype_bytes(model: ModelSpec, dtype: str) -> int:
    if dtype in ("float32", "float"):
        return 4
    return 2


def weights_per_gpu_bytes(model: ModelSpec, tp: int, pp: int, quantization: str | None = None) -> float:
    """The checkpoint split over TP x PP; embedding and lm_head are split by TP only (vocab padded to 64)
    and sit on the first/last pipeline stage."""
    W = float(model.weight_bytes or 2 * model.param_count)
    H, V = model.hidden_size, model.vocab_size
    vpad = math.ceil(V / VOCAB_PADDING) * VOCAB_PADDING
    emb_elem = 2.0                                   # embeddings stay in 16-bit in every quant scheme we know
    emb = V * H * emb_elem
    head = 0.0 if model.tie_word_embeddings else V * H * emb_elem
    body = max(W - emb - head, 0.0)
    q = (quantization or "").lower()
    if q in ("fp8", "fp8_per_tensor", "fp8_per_channel", "fp8_per_block") and model.quantization is None:
        body *= 0.5                                  # online fp8 of a 16-bit checkpoint's linear layers
    emb_rank = vpad * H * emb_elem / tp
    head_rank = 0.0 if model.tie_word_embeddings else vpad * H * emb_elem / tp
    if pp > 1:
        # worst stage: its share of the body plus the embedding (first) or lm_head (last)
        vocab_part = max(emb_rank, head_rank if head_rank else emb_rank)
    else:
        vocab_part = emb_rank + head_rank
    # k/v projections are replicated when TP exceeds the KV heads
    extra = 0.0
    if model.mla is None and tp > model.num_kv_heads > 0:
        per_head = 2 * H * model.head_dim * 2.0
        extra = model.num_layers / pp * per_head * (1 - model.num_kv_heads / tp)
    return body / (tp * pp) + vocab_part + extra


def _dense_linear_shapes(model: ModelSpec, tp: int) -> list[tuple[int, int, bool]]:
    """(in, out, column_parallel) of one decoder layer's linear layers on one TP rank, full sizes
    before the split; [] where the layer is not the plain attention + gated-MLP kind (MoE, MLA)."""
    if model.moe is not None or model.mla is not None:
        return []
    H, hd = model.hidden_size, model.head_dim
    q = model.num_attention_heads * hd
    kv = max(model.num_kv_heads, 1) * hd
    return [(H, q + 2 * kv, True), (q, H, False), (H, 2 * model.intermediate_size, True),
            (model.intermediate_size, H, False)]


def allocator_tail_bytes(model: ModelSpec, tp: int, pp: int, dtype_bytes: float = 2.0) -> float:
    """Bytes the CUDA caching allocator keeps allocated beyond the weights themselves: each tensor of
    >= 10 MiB gets a segment rounded up to 2 MiB and a tail under 1 MiB is not split off."""
    def tail(nbytes: float) -> float:
        n = int(nbytes)
        if n < ALLOC_OWN_SEGMENT_MIN:
            return 0.0
        rest = -n % ALLOC_SEGMENT_ROUND
        return float(rest) if rest <= ALLOC_SPLIT_MIN else 0.0

    shapes = _dense_linear_shapes(model, tp)
    if not shapes or (model.quantization is not None):
        return 0.0
    per_layer = sum(tail((d_in * d_out / tp) * dtype_bytes) for d_in, d_out, _ in shapes)
    vpad = math.ceil(model.vocab_size / VOCAB_PADDING) * VOCAB_PADDING
    vocab = tail(vpad / tp * model.hidden_size * dtype_bytes) * (1 if model.tie_word_embeddings else 2)
    return math.ceil(model.num_layers / pp) * per_layer + vocab


def lora_buffer_bytes(model: ModelSpec, tp: int, pp: int, max_loras: int, rank: int,
                      dtype_bytes: float = 2.0) -> float:
    """--enable-lora: the stacked adapter buffers vLLM allocates at load time, per GPU. Each linear
    layer holds A [max_loras, rank, in] and B [max_loras, out, rank] per output slice (q/k/v,
    gate/up); column-parallel layers shard B's out, row-parallel ones A's in."""
    if max_loras <= 0:
        return 0.0
    shapes = _dense_linear_shapes(model, tp)
    if not shapes:
        # MoE/MLA: charge the attention and one expert-sized MLP like a dense layer of the same widths
        H = model.hidden_size
        inter = (model.moe.moe_intermediate_size if model.moe is not None else model.intermediate_size) or H
        shapes = [(H, 3 * H, True), (H, H, False), (H, 2 * inter, True), (inter, H, False)]
    elems = 0.0
    for i, (d_in, d_out, col) in enumerate(shapes):
        slices = 3 if i == 0 else (2 if i == 2 else 1)
        if col:
            elems += slices * d_in + d_out / tp
        else:
            elems += d_in / tp + d_out
    return math.ceil(model.num_layers / pp) * max_loras * rank * elems * dtype_bytes


def forward_bytes_per_token(model: ModelSpec, tp: int, b: int, hidden_copies: float = 4.0) -> float:
    """Largest set of live temporaries per token in one layer of the dummy forward (TP rank);
    ``hidden_copies`` hidden-size tensors sit next to the MLP's gate/up and activation outputs."""
    H = model.hidden_size
    hd = model.head_dim
    q = max(model.num_attention_heads // tp, 1) * hd
    kv = max(model.num_kv_heads // tp, 1) * hd
    if model.mla is not None:
        kv = model.mla.kv_lora_rank + model.mla.qk_rope_head_dim
        q = max(model.num_attention_heads // tp, 1) * (model.mla.qk_nope_head_dim + model.mla.qk_rope_head_dim)
    attn = q + 2 * kv + q + 4 * H
    dense = 3 * (model.intermediate_size / tp) + hidden_copies * H
    peak = max(attn, dense if (model.moe is None or model.moe.num_dense_layers) else 0)
    if model.moe is not None:
        m = model.moe
        n = m.moe_intermediate_size / tp
        moe = m.experts_per_token * (3 * n + H) + m.num_experts * 2 + 4 * H
        if m.num_shared_experts:
            moe += 3 * (m.shared_expert_intermediate_size or m.moe_intermediate_size) * m.num_shared_experts / tp
        peak = max(peak, moe)
    return peak * b


def kv_layer_bytes(model: ModelSpec, tp: int, kv_cache_dtype: str) -> float:
    """KV bytes per token per layer on one TP rank."""
    b = KV_DTYPE_BYTES.get(kv_cache_dtype.lower(), 2.0) if kv_cache_dtype else None
    if b is None:
        b = 4.0 if model.torch_dtype in ("float32",) and False else 2.0
    if model.mla is not None:
        return (model.mla.kv_lora_rank + model.mla.qk_rope_head_dim) * b      # not split by TP
    return 2 * max(1, model.num_kv_heads // tp) * model.head_dim * b


def kv_groups(model: ModelSpec, pp: int, max_model_len: int) -> tuple[int, int]:
    """(full-attention layers, sliding-window layers) on the worst pipeline stage."""
    L = model.num_layers
    sliding = 0
    if model.sliding_window and model.sliding_window < max_model_len:
        if model.layer_types:
            sliding = sum(1 for t in model.layer_types if t.startswith("sliding") or t.startswith("chunked"))
        else:
            sliding = L
    attn_types = [t for t in (model.layer_types or ()) if "attention" in t or t.startswith("sliding")]
    attn_layers = len(attn_types) if model.layer_types and attn_types else L
    full = attn_layers - sliding
    return math.ceil(full / pp) if full else 0, math.ceil(sliding / pp) if sliding else 0


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def graph_capture_size(rules: VersionRules, max_num_seqs: int) -> int:
    if rules["cudagraph_max_capture"].startswith("min(2*"):
        return min(2 * max_num_seqs, 512)
    return min(max_num_seqs, 256)


def non_torch_gib(rules: VersionRules, world: int) -> float:
    """Non-torch memory growth during the profile: the TP1 base, a step when communicators (NCCL,
    custom all-reduce buffers) appear at world size 2, then a smaller step per further doubling."""
    nt = rules["non_torch_tp1_gib"]
    if world > 1:
        nt += rules["non_torch_first_tp_doubling_gib"] + rules["non_torch_per_tp_doubling_gib"] * (math.log2(world) - 1)
    return nt


# -- the estimate -----------------------------------------------------------------------------
def estimate(model: ModelSpec, total_bytes: int, flags: Flags, rules: VersionRules, *,
             free_bytes: int | None = None, cpu_kv_space_gib: float | None = None) -> Estimate:
    """One replica's per-GPU memory at these flags, and whether vLLM would start."""
    ex: list[str] = []
    tp, pp = flags.tp, flags.pp
    total = total_bytes / GiB
    b = act_dtype_bytes(model, flags.dtype)
    runner = rules["moe_runner"] if model.moe is not None else rules["dense_runner"]

    tails = allocator_tail_bytes(model, tp, pp) / GiB if not flags.quantization else 0.0
    lora = lora_buffer_bytes(model, tp, pp, flags.max_loras, flags.max_lora_rank) / GiB
    weights = weights_per_gpu_bytes(model, tp, pp, flags.quantization) / GiB + WEIGHTS_OVERHEAD_GIB + tails + lora
    ex.append(f"weights = {model.weight_bytes / GiB:.2f} GiB checkpoint split over TP={tp} x PP={pp} "
              f"(embedding/lm_head over TP only, vocab padded to 64) + {WEIGHTS_OVERHEAD_GIB}"
              + (f" + allocator tails {tails:.2f}" if tails >= 0.005 else "")
              + (f" + LoRA buffers {lora:.2f} ({flags.max_loras} x rank {flags.max_lora_rank})" if lora else "")
              + f" = {weights:.2f} GiB")

    # activation peak of the profile run
    T = flags.max_num_batched_tokens
    reqs = min(flags.max_num_seqs, T)
    S = reqs * model.vocab_size * 4 / GiB                     # one fp32 num_reqs x vocab logits copy
    fwd = T * forward_bytes_per_token(model, tp, b) / GiB
    hidden = 2 * T * model.hidden_size * b / GiB
    if runner == "v2":
        # the dummy forward and the dummy sampler run peak one after the other; a small part of the
        # sampler state is live through both (fit in versions.py)
        k = rules["sampler_copies_v2_runner"]
        ka = rules["sampler_profiled_copies_v2_runner"]
        fwd = T * forward_bytes_per_token(model, tp, b, rules["forward_hidden_copies_v2_runner"]) / GiB
        sampler = (k + ka) * S
        act = max(fwd, k * S) + ka * S
        ex.append(f"activation = max(forward({T} tokens) {fwd:.2f}, {k} x sampler rows {reqs} x vocab "
                  f"{model.vocab_size} x 4 B ({S:.3f}) = {k * S:.2f}) + {ka} x {S:.3f} = {act:.2f} GiB  "
                  f"[Model Runner V2]")
    else:
        k = rules["sampler_copies_v1_runner"]
        sampler = k * S + hidden
        act = max(fwd, sampler)
        ex.append(f"activation = max(forward({T} tokens) {fwd:.2f}, {k} x {reqs} x {model.vocab_size} x 4 B "
                  f"+ hidden {hidden:.2f} = {sampler:.2f}) = {act:.2f} GiB  [V0/V1 runner]")
    if pp > 1 and runner != "v2":
        pass

    nt = non_torch_gib(rules, tp * pp)
    ex.append(f"non-torch = {nt:.2f} GiB (TP1 base {rules['non_torch_tp1_gib']}, "
              f"+{rules['non_torch_first_tp_doubling_gib']} at TP2, +{rules['non_torch_per_tp_doubling_gib']} "
              f"per further doubling of TP x PP)")

    # CUDA graphs
    if flags.enforce_eager:
        graphs, in_budget = 0.0, False
        ex.append("CUDA graphs: none (--enforce-eager)")
    else:
        cap = graph_capture_size(rules, flags.max_num_seqs)
        layers_stage = math.ceil(model.num_layers / pp)
        # half the pool is hidden-size tensors (replicated over TP), half per-rank intermediates
        graphs = (GRAPH_BYTES_PER_TOKEN_HIDDEN_LAYER * cap * model.hidden_size * layers_stage / GiB
                  * (0.5 + 0.5 / tp))
        in_budget = bool(rules["cudagraph_in_budget"]) and runner == "v1"
        ex.append(f"CUDA graphs ~ {graphs:.2f} GiB (capture up to {cap}), "
                  + ("subtracted from the budget (estimate)" if in_budget else "outside the budget"))

    # budget and KV
    if cpu_kv_space_gib is not None:
        budget = total
        kv = cpu_kv_space_gib
    else:
        budget = math.ceil(total_bytes * flags.gpu_memory_utilization) / GiB
        kv = budget - weights - act - nt - (graphs if in_budget else 0.0)
    ex.append(f"budget = {total:.2f} x {flags.gpu_memory_utilization} = {budget:.2f} GiB")
    ex.append(f"KV = budget - weights - activation - non-torch{' - graphs' if in_budget else ''} = {kv:.2f} GiB")

    layer_b = kv_layer_bytes(model, tp, flags.kv_cache_dtype if flags.kv_cache_dtype != "auto" else "auto")
    full_l, slide_l = kv_groups(model, pp, flags.max_model_len)
    bs = flags.block_size
    L_kv = full_l + slide_l
    per_token = int(layer_b * L_kv)
    page = layer_b * bs
    if full_l and slide_l:
        group_size = min(full_l, slide_l)
        if max(full_l, slide_l) < 1.25 * group_size:
            group_size = max(full_l, slide_l)
        n_full_groups = cdiv(full_l, group_size)
        n_slide_groups = cdiv(slide_l, group_size)
    else:
        group_size = L_kv
        n_full_groups = 1 if full_l else 0
        n_slide_groups = 1 if slide_l else 0
    blocks = max(int(kv * GiB // (page * group_size)), 0) if kv > 0 and page > 0 else 0
    full_blocks = cdiv(flags.max_model_len, bs)
    sw = model.sliding_window or 0
    slide_blocks = cdiv(min(sw - 1 + T, flags.max_model_len), bs) + 1 if slide_l else 0
    per_req = n_full_groups * full_blocks + n_slide_groups * slide_blocks
    conc = blocks / per_req if per_req else 0.0
    tokens = int(conc * flags.max_model_len) if slide_l else blocks * bs
    need_one = per_req * page * group_size / GiB
    ex.append(f"KV bytes/token/GPU = {L_kv} layers x {layer_b:.0f} B = {per_token} B; block {bs}; "
              f"{blocks} blocks -> {tokens} tokens, {conc:.2f}x at {flags.max_model_len}")
    # longest single request the KV can hold
    if kv <= 0 or page <= 0:
        max_len = 0
    elif slide_l and not full_l:
        max_len = model.max_position_embeddings
    else:
        avail_blocks = blocks - n_slide_groups * slide_blocks
        max_len = max(avail_blocks // max(n_full_groups, 1), 0) * bs

    # what happens outside the budget
    free = (free_bytes / GiB) if free_bytes is not None else total
    ctx = 0.0 if cpu_kv_space_gib is not None else CUDA_CONTEXT_GIB
    outside = free - ctx - budget
    graphs_out = 0.0 if in_budget else graphs
    unprof = rules["warmup_unprofiled_copies"] * S if cpu_kv_space_gib is None else 0.0
    margin = outside - graphs_out - unprof
    if cpu_kv_space_gib is None:
        ex.append(f"outside the budget: free {free:.2f} - CUDA context {ctx:.2f} - budget {budget:.2f} "
                  f"- graphs {graphs_out:.2f} - unprofiled sampler warm-up {unprof:.2f} = margin {margin:.2f} GiB")

    stage: str | None = None
    if cpu_kv_space_gib is None:
        if outside < 0:
            stage = "startup"
        elif weights > budget:
            stage = "weights"
        elif weights + act + nt > budget:
            stage = "activation"
        elif kv <= 0:
            stage = "cuda_graph" if in_budget and kv + graphs > 0 else "kv_cache"
        elif need_one > kv:
            stage = "kv_cache"
        elif outside - graphs_out < 0:
            stage = "cuda_graph"
        elif margin < 0:
            stage = "sampler_warmup"
    else:
        if weights > total:
            stage = "weights"
        elif need_one > kv:
            stage = "kv_cache"
    fits = stage is None
    if stage in ("kv_cache",) and kv > 0:
        margin = min(margin, kv - need_one)
    if stage in ("weights", "activation") or (stage == "kv_cache" and kv <= 0):
        margin = min(margin, kv)
    thin = fits and cpu_kv_space_gib is None and margin < max(THIN_MARGIN_FRACTION * budget, THIN_MARGIN_MIN_GIB)
    return Estimate(
        total_gib=total, budget_gib=budget, weights_gib=weights, activation_peak_gib=act, non_torch_gib=nt,
        cuda_graph_gib=graphs, cuda_graph_in_budget=in_budget, sampler_warmup_gib=sampler,
        warmup_unprofiled_gib=unprof, kv_cache_gib=kv, kv_cache_tokens=tokens, max_concurrency=conc,
        kv_bytes_per_token=per_token, num_blocks=blocks, kv_needed_one_seq_gib=need_one,
        max_len_that_fits=max_len, outside_budget_gib=outside, margin_gib=margin, fits=fits,
        failure_stage=stage, runner=runner, thin=thin, explain=ex)
