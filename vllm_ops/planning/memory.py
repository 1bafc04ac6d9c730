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
(``tests/data/reference/*.csv``, rows named in ``planning/versions.py``) and named once.

:func:`estimate` runs named steps over small typed facts: :func:`weights_step` (served dtype,
planning/dtypes.py), :func:`activation_step` (language-model profile, plus the vision encoder's,
planning/encoder.py), :func:`non_torch_gib`, :func:`graphs_step`, then the KV element size
(:func:`kv_elem_bytes`), the block layout (planning/kvlayout.py) and :func:`_failure_stage`.
What an estimate does not model is returned as coded ``warnings`` (see planning/coverage.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from vllm_ops.models.spec import ModelSpec
from vllm_ops.planning.dtypes import DTYPE_BYTES, checkpoint_kv_fp8, served_dtype, served_weight_bytes
from vllm_ops.planning.encoder import EncoderProfile, encoder_profile
from vllm_ops.planning.kvlayout import KVLayout, cdiv, kv_groups, kv_layer_bytes, kv_layout  # noqa: F401
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
    image_limit: int | None = None   # --limit-mm-per-prompt image count (None: vLLM's default)
    bf16_ok: bool = True             # the GPU has bfloat16 (compute capability >= 8.0)
    dp: int = 1                      # --data-parallel-size: a MoE model's routed experts are split over TP x DP
    kv_cache_bytes: int | None = None   # --kv-cache-memory-bytes: the KV cache per GPU (the budget no longer sizes it)
    gpu_blocks: int | None = None       # --num-gpu-blocks-override: KV blocks per GPU, whatever memory allows


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
    dtype: str = "bfloat16"            # the served dtype (planning/dtypes.py)
    kv_fp8_from_checkpoint: bool = False   # an ``auto`` KV cache in fp8, as the checkpoint names (kv_elem_bytes)
    encoder_profile_gib: float = 0.0   # the vision encoder's profiling peak (planning/encoder.py)
    kv_pool_tokens: int = 0            # tokens the pool holds with every KV group storing every token
    warnings: list[tuple[str, str]] = field(default_factory=list)   # (code, message): estimated / not modelled


# -- pieces -----------------------------------------------------------------------------------
def expert_params(model: ModelSpec) -> tuple[int, float]:
    """(layers with routed experts, the routed experts' parameters); (0, 0.0) for a dense model."""
    m = model.moe
    if m is None:
        return 0, 0.0
    n_moe = max((model.num_layers - m.num_dense_layers) // max(m.moe_layer_freq, 1), 0)
    return n_moe, float(n_moe * m.num_experts * 3 * model.hidden_size * m.moe_intermediate_size)


def expert_fraction(model: ModelSpec) -> float:
    """The routed experts' share of the decoder body's parameters (0 for a dense model)."""
    if model.moe is None or not model.param_count:
        return 0.0
    exp = expert_params(model)[1]
    body = model.param_count - model.vocab_size * model.hidden_size * (1 if model.tie_word_embeddings else 2)
    return min(exp / body, 1.0) if body > 0 else 0.0


def weights_per_gpu_bytes(model: ModelSpec, tp: int, pp: int, quantization: str | None = None,
                          dtype: str = "bfloat16", dp: int = 1) -> float:
    """The checkpoint, at the served ``dtype`` (planning/dtypes.py), split over TP x PP; embedding and
    lm_head are split by TP only (vocab padded to 64) and sit on the first/last pipeline stage. With data
    parallelism (``dp`` > 1) each rank holds its own attention and embeddings while a MoE model's routed experts
    are split over all TP x DP ranks (vLLM: tensor parallel over them, or expert parallel: the same bytes)."""
    W = served_weight_bytes(model, dtype) if model.weight_bytes else 2.0 * model.param_count
    H, V = model.hidden_size, model.vocab_size
    vpad = math.ceil(V / VOCAB_PADDING) * VOCAB_PADDING
    emb_elem = float(DTYPE_BYTES.get(dtype, 2))      # embeddings are never quantized: served dtype
    emb = V * H * emb_elem
    head = 0.0 if model.tie_word_embeddings else V * H * emb_elem
    body = max(W - emb - head, 0.0)
    q = (quantization or "").lower()
    if q in ("fp8", "fp8_per_tensor", "fp8_per_channel", "fp8_per_block") and model.quantization is None:
        body *= 0.5                                  # online fp8 of a 16-bit checkpoint's linear layers
    if dp > 1 and model.moe is not None:
        exp = body * expert_fraction(model)
        body = body - exp + exp / dp
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
        per_head = 2 * H * model.head_dim * emb_elem
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


# -- the estimate, step by step ---------------------------------------------------------------
@dataclass(frozen=True)
class Weights:
    gib: float
    dtype: str                     # served dtype
    act_bytes: int                 # activation element size
    line: str


@dataclass(frozen=True)
class Activation:
    gib: float                     # the torch peak of the profile (encoder included)
    sampler_gib: float             # the sampler part (num_reqs x vocab logits copies)
    sampler_row_gib: float         # one fp32 num_reqs x vocab copy
    encoder: EncoderProfile
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Graphs:
    gib: float
    in_budget: bool
    line: str


def weights_step(model: ModelSpec, flags: Flags) -> Weights:
    """Per-GPU weights at the served dtype, with allocator tails and LoRA buffers."""
    tp, pp = flags.tp, flags.pp
    dtype, why = served_dtype(model, flags.dtype, bf16_ok=flags.bf16_ok)
    b = DTYPE_BYTES.get(dtype, 2)
    tails = allocator_tail_bytes(model, tp, pp, b) / GiB if not flags.quantization else 0.0
    lora = lora_buffer_bytes(model, tp, pp, flags.max_loras, flags.max_lora_rank, b) / GiB
    dp = flags.dp if model.moe is not None else 1
    w = weights_per_gpu_bytes(model, tp, pp, flags.quantization, dtype, dp) / GiB + WEIGHTS_OVERHEAD_GIB + tails + lora
    ckpt = served_weight_bytes(model, dtype) / GiB
    line = (f"weights = {ckpt:.2f} GiB checkpoint at {dtype} ({why}) split over TP={tp} x PP={pp} "
            + (f"(routed experts over TP x DP={tp * dp}) " if dp > 1 else "")
            + f"(embedding/lm_head over TP only, vocab padded to 64) + {WEIGHTS_OVERHEAD_GIB}"
            + (f" + allocator tails {tails:.2f}" if tails >= 0.005 else "")
            + (f" + LoRA buffers {lora:.2f} ({flags.max_loras} x rank {flags.max_lora_rank})" if lora else "")
            + f" = {w:.2f} GiB")
    return Weights(gib=w, dtype=dtype, act_bytes=b, line=line)


def activation_step(model: ModelSpec, flags: Flags, rules: VersionRules, runner: str, b: int) -> Activation:
    """The torch peak of the profile run: the language model's dummy forward and sampler, and the
    vision encoder's dummy batch before them (planning/encoder.py)."""
    T = flags.max_num_batched_tokens
    reqs = min(flags.max_num_seqs, T)
    S = reqs * model.vocab_size * 4 / GiB                     # one fp32 num_reqs x vocab logits copy
    if runner == "v2":
        # the dummy forward and the dummy sampler run peak one after the other; a small part of the
        # sampler state is live through both (fit in versions.py)
        k, ka = rules["sampler_copies_v2_runner"], rules["sampler_profiled_copies_v2_runner"]
        fwd = T * forward_bytes_per_token(model, flags.tp, b, rules["forward_hidden_copies_v2_runner"]) / GiB
        sampler = (k + ka) * S
        act = max(fwd, k * S) + ka * S
        line = (f"activation = max(forward({T} tokens) {fwd:.2f}, {k} x sampler rows {reqs} x vocab "
                f"{model.vocab_size} x 4 B ({S:.3f}) = {k * S:.2f}) + {ka} x {S:.3f} = {act:.2f} GiB  "
                f"[Model Runner V2]")
    else:
        k = rules["sampler_copies_v1_runner"]
        fwd = T * forward_bytes_per_token(model, flags.tp, b) / GiB
        hidden = 2 * T * model.hidden_size * b / GiB
        sampler = k * S + hidden
        act = max(fwd, sampler)
        line = (f"activation = max(forward({T} tokens) {fwd:.2f}, {k} x {reqs} x {model.vocab_size} x 4 B "
                f"+ hidden {hidden:.2f} = {sampler:.2f}) = {act:.2f} GiB  [V0/V1 runner]")
    enc = encoder_profile(model, tp=flags.tp, max_num_batched_tokens=T, max_num_seqs=flags.max_num_seqs,
                          act_bytes=b, image_limit=flags.image_limit, engine=rules["engine"])
    lines = [line]
    if enc.items:
        total = max(act + enc.outputs_gib, enc.peak_gib)
        lines.append(f"encoder profile: {enc.items} dummy images x {model.vision.patches_per_item} patches "
                     f"-> peak {enc.peak_gib:.2f} GiB, outputs {enc.outputs_gib:.2f} GiB kept; activation = "
                     f"max({act:.2f} + {enc.outputs_gib:.2f}, {enc.peak_gib:.2f}) = {total:.2f} GiB (estimate)")
        act = total
    elif model.vision is not None:
        lines.append(f"encoder profile: none ({enc.skipped})")
    return Activation(gib=act, sampler_gib=sampler, sampler_row_gib=S, encoder=enc, lines=tuple(lines))


def graphs_step(model: ModelSpec, flags: Flags, rules: VersionRules, runner: str) -> Graphs:
    if flags.enforce_eager:
        return Graphs(0.0, False, "CUDA graphs: none (--enforce-eager)")
    cap = graph_capture_size(rules, flags.max_num_seqs)
    layers_stage = math.ceil(model.num_layers / flags.pp)
    # half the pool is hidden-size tensors (replicated over TP), half per-rank intermediates
    gib = (GRAPH_BYTES_PER_TOKEN_HIDDEN_LAYER * cap * model.hidden_size * layers_stage / GiB
           * (0.5 + 0.5 / flags.tp))
    in_budget = bool(rules["cudagraph_in_budget"]) and runner == "v1"
    return Graphs(gib, in_budget, f"CUDA graphs ~ {gib:.2f} GiB (capture up to {cap}), "
                  + ("subtracted from the budget (estimate)" if in_budget else "outside the budget"))


@dataclass(frozen=True)
class KvElem:
    bytes: float
    why: str
    from_checkpoint: bool          # an ``auto`` KV cache in fp8 because the checkpoint names one


def kv_elem_bytes(model: ModelSpec, flags: Flags, rules: VersionRules, act_bytes: int) -> KvElem:
    """KV-cache element size: the pinned --kv-cache-dtype, else the checkpoint's FP8 KV scheme (from
    the version rule on), else the served dtype."""
    kvd = (flags.kv_cache_dtype or "auto").lower()
    if kvd != "auto":
        return KvElem(KV_DTYPE_BYTES.get(kvd, 2.0), f"--kv-cache-dtype {kvd}", False)
    if checkpoint_kv_fp8(model) and rules.values.get("kv_cache_dtype_auto_from_checkpoint"):
        return KvElem(1.0, "fp8 (the checkpoint's quantization config names an FP8 KV cache)", True)
    return KvElem(float(act_bytes), "the served dtype", False)


@dataclass(frozen=True)
class StageFigures:
    """What :func:`_failure_stage` compares (GiB per GPU)."""
    total: float                   # the GPU (CPU: the RAM)
    budget: float
    weights: float
    activation: float
    non_torch: float
    kv: float                      # KV cache left in the budget
    graphs: float                  # the CUDA-graph pool
    graphs_in_budget: bool
    need_one: float                # KV one request at max_model_len needs
    outside: float                 # free - CUDA context - budget
    graphs_out: float              # graphs not charged to the budget
    margin: float                  # left after everything


def _failure_stage(s: StageFigures, cpu: bool) -> str | None:
    """Which startup stage runs out first (None: vLLM starts)."""
    if cpu:
        if s.weights > s.total:
            return "weights"
        return "kv_cache" if s.need_one > s.kv else None
    if s.outside < 0:
        return "startup"
    if s.weights > s.budget:
        return "weights"
    if s.weights + s.activation + s.non_torch > s.budget:
        return "activation"
    if s.kv <= 0:
        return "cuda_graph" if s.graphs_in_budget and s.kv + s.graphs > 0 else "kv_cache"
    if s.need_one > s.kv:
        return "kv_cache"
    if s.outside - s.graphs_out < 0:
        return "cuda_graph"
    return "sampler_warmup" if s.margin < 0 else None


def _explicit_kv_stage(s: StageFigures, room: float) -> str | None:
    """Which startup stage runs out first when ``--kv-cache-memory-bytes`` sizes the KV cache: vLLM still checks the
    budget against free memory at start, then everything must fit the ``room`` the GPU has (free - CUDA context)."""
    if s.outside < 0:
        return "startup"
    if s.weights > room:
        return "weights"
    if s.weights + s.activation + s.non_torch > room:
        return "activation"
    if s.need_one > s.kv:
        return "kv_cache"
    if s.weights + s.non_torch + s.kv > room:
        return "kv_cache_allocation"
    if s.weights + s.non_torch + s.kv + s.graphs > room:
        return "cuda_graph"
    return "sampler_warmup" if s.margin < 0 else None


def estimate(model: ModelSpec, total_bytes: int, flags: Flags, rules: VersionRules, *,
             free_bytes: int | None = None, cpu_kv_space_gib: float | None = None) -> Estimate:
    """One replica's per-GPU memory at these flags, and whether vLLM would start."""
    cpu = cpu_kv_space_gib is not None
    total = total_bytes / GiB
    runner = rules["moe_runner"] if model.moe is not None else rules["dense_runner"]
    w = weights_step(model, flags)
    a = activation_step(model, flags, rules, runner, w.act_bytes)
    nt = non_torch_gib(rules, flags.tp * flags.pp)
    g = graphs_step(model, flags, rules, runner)
    ex = [w.line, *a.lines,
          f"non-torch = {nt:.2f} GiB (TP1 base {rules['non_torch_tp1_gib']}, +{rules['non_torch_first_tp_doubling_gib']} "
          f"at TP2, +{rules['non_torch_per_tp_doubling_gib']} per further doubling of TP x PP)", g.line]
    explicit = bool(flags.kv_cache_bytes) and not cpu
    if cpu:
        budget, kv = total, cpu_kv_space_gib
    else:
        budget = math.ceil(total_bytes * flags.gpu_memory_utilization) / GiB
        kv = budget - w.gib - a.gib - nt - (g.gib if g.in_budget else 0.0)
    ex.append(f"budget = {total:.2f} x {flags.gpu_memory_utilization} = {budget:.2f} GiB")
    if explicit:
        kv = flags.kv_cache_bytes / GiB
        ex.append(f"KV = --kv-cache-memory-bytes {flags.kv_cache_bytes} = {kv:.2f} GiB (vLLM sizes it so and no longer "
                  f"fits it in the budget: everything must fit the free memory instead)")
    else:
        ex.append(f"KV = budget - weights - activation - non-torch{' - graphs' if g.in_budget else ''} = {kv:.2f} GiB")
    elem = kv_elem_bytes(model, flags, rules, w.act_bytes)
    lay = kv_layout(model, kv_gib=kv, layer_bytes=kv_layer_bytes(model, flags.tp, elem.bytes), pp=flags.pp,
                    max_model_len=flags.max_model_len, block_size=flags.block_size,
                    max_num_batched_tokens=flags.max_num_batched_tokens, tokens_report=rules["kv_tokens_report"],
                    blocks_override=flags.gpu_blocks)
    if flags.gpu_blocks:
        given = lay.blocks * lay.block_bytes / GiB
        ex.append(f"KV = --num-gpu-blocks-override {flags.gpu_blocks} x {lay.block_bytes / 2**20:.2f} MiB per block = "
                  f"{given:.2f} GiB (vLLM takes that many blocks where memory gives {max(kv, 0.0):.2f} GiB: "
                  f"everything must fit the free memory instead)")
        kv, explicit = given, not cpu
    ex.append(f"KV bytes/token/GPU = {lay.full_layers + lay.sliding_layers} layers x {lay.layer_bytes:.0f} B "
              f"({elem.why}) = {lay.per_token} B; block {flags.block_size}; {lay.blocks} blocks -> "
              f"{lay.tokens} tokens, {lay.concurrency:.2f}x at {flags.max_model_len}")
    free = (free_bytes / GiB) if free_bytes is not None else total
    ctx = 0.0 if cpu else CUDA_CONTEXT_GIB
    outside = free - ctx - budget
    graphs_out = 0.0 if g.in_budget else g.gib
    unprof = rules["warmup_unprofiled_copies"] * a.sampler_row_gib if not cpu else 0.0
    margin = outside - graphs_out - unprof
    if not cpu and not explicit:
        ex.append(f"outside the budget: free {free:.2f} - CUDA context {ctx:.2f} - budget {budget:.2f} "
                  f"- graphs {graphs_out:.2f} - unprofiled sampler warm-up {unprof:.2f} = margin {margin:.2f} GiB")
    figures = StageFigures(total=total, budget=budget, weights=w.gib, activation=a.gib, non_torch=nt, kv=kv,
                           graphs=g.gib, graphs_in_budget=g.in_budget, need_one=lay.need_one_gib, outside=outside,
                           graphs_out=graphs_out, margin=margin)
    if explicit:
        margin = free - ctx - (w.gib + nt + kv + g.gib + a.gib + unprof)
        figures = replace(figures, margin=margin)
        ex.append(f"free {free:.2f} - CUDA context {ctx:.2f} - weights - non-torch - KV - graphs {g.gib:.2f} - "
                  f"activation (the warm-up after the KV cache) - unprofiled warm-up = margin {margin:.2f} GiB")
    stage = _explicit_kv_stage(figures, free - ctx) if explicit else _failure_stage(figures, cpu)
    if stage == "kv_cache" and kv > 0:
        margin = min(margin, kv - lay.need_one_gib)
    if stage in ("weights", "activation") or (stage == "kv_cache" and kv <= 0):
        margin = min(margin, kv)
    fits = stage is None
    thin = fits and not cpu and margin < max(THIN_MARGIN_FRACTION * budget, THIN_MARGIN_MIN_GIB)
    return Estimate(
        total_gib=total, budget_gib=budget, weights_gib=w.gib, activation_peak_gib=a.gib, non_torch_gib=nt,
        cuda_graph_gib=g.gib, cuda_graph_in_budget=g.in_budget, sampler_warmup_gib=a.sampler_gib,
        warmup_unprofiled_gib=unprof, kv_cache_gib=kv, kv_cache_tokens=lay.tokens, kv_pool_tokens=lay.pool_tokens, max_concurrency=lay.concurrency,
        kv_bytes_per_token=lay.per_token, num_blocks=lay.blocks, kv_needed_one_seq_gib=lay.need_one_gib,
        max_len_that_fits=lay.max_len, outside_budget_gib=outside, margin_gib=margin, fits=fits,
        failure_stage=stage, runner=runner, thin=thin, explain=ex, dtype=w.dtype,
        kv_fp8_from_checkpoint=elem.from_checkpoint,
        encoder_profile_gib=a.encoder.peak_gib, warnings=estimate_warnings(model, a.encoder))


def estimate_warnings(model: ModelSpec, enc: EncoderProfile) -> list[tuple[str, str]]:
    """(code, message) for each estimated or unmodelled part of this estimate."""
    out: list[tuple[str, str]] = []
    if enc.items:
        out.append(("encoder-profile-estimated",
                    f"the vision encoder's profiling run ({enc.items} dummy images, peak {enc.peak_gib:.2f} GiB) "
                    f"is an estimate from vision_config widths, not fitted to a real run; pass "
                    f"--limit-mm-per-prompt '{{\"image\": 0}}' for text-only serving (no encoder profile)"))
    elif not enc.modelled and enc.skipped == "V0 engine":
        out.append(("encoder-profile-not-modelled",
                    "the V0 engine profiles max_num_seqs dummy multimodal sequences; that activation peak is "
                    "not modelled (a public Llama-3.2-11B-Vision V0 log shows 36.63 GiB): the KV figure is "
                    "too high"))
    elif not enc.modelled:
        out.append(("encoder-profile-not-modelled",
                    f"the vision encoder's profiling run is not modelled ({enc.skipped}): the KV figure is too "
                    f"high by that peak; --limit-mm-per-prompt '{{\"image\": 0}}' serves text only without it"))
    return out
