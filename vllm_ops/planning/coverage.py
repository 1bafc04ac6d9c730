"""What the memory model covers, per model class: a refusal (exit 2) or a coded warning for every
part it does not model, so that a plan is never silently wrong.

=====================================  =======================================================
class                                  what the plan does
=====================================  =======================================================
--dtype / float32 checkpoints          modelled (planning/dtypes.py)
AWQ / GPTQ / fp8 config vLLM refuses   refusal ``quant-config-incomplete`` (vLLM's own error)
compressed-tensors w/o config_groups   modelled as vLLM loads it (unquantized) + warning
                                       ``quant-config-incomplete``
ModelOpt FP8 (hf_quant_config.json)    modelled; its FP8 KV cache under ``auto`` by version rule
vision encoder (V1 engine)             estimated term + warning ``encoder-profile-estimated``
vision encoder (V0 engine, or a        warning ``encoder-profile-not-modelled``
dynamic-resolution tower)
mllama cross-attention KV              warning ``cross-attention-kv-not-modelled``
sliding window + full attention        modelled (planning/kvlayout.py, hybrid KV cache manager)
Mamba/SSM state, linear attention      refusal ``hybrid-state-not-modelled``
=====================================  =======================================================

The same per vLLM flag after ``--`` (:data:`FLAG_GAPS`): a flag that changes what vLLM allocates or how fast
it serves, and that the plan does not model, gives the plan a coded warning (the memory it leaves out) and the
performance prediction a caveat, or a refusal where the figures would be far off (speculative decoding,
weights offloaded to CPU RAM). ``--kv-cache-memory-bytes`` and ``--num-gpu-blocks-override`` are modelled
(memory.py: the KV cache is that size).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from vllm_ops.errors import BadInput
from vllm_ops.models.quant import loads_unquantized
from vllm_ops.models.spec import ModelSpec
from vllm_ops.planning.argv import canonical_args, optimization_level


class NotModelled(BadInput):
    """The plan cannot give an honest figure for this model (exit 2); ``code`` names the part."""

    def __init__(self, code: str, message: str, *, hint: str | None = None):
        super().__init__(f"not modelled ({code}): {message}", hint=hint)
        self.code = code


def refuse_unmodelled(model: ModelSpec) -> None:
    """Raise :class:`NotModelled` (or vLLM's own refusal) for a model the plan cannot size."""
    if model.state_layers:
        raise NotModelled(
            "hybrid-state-not-modelled",
            f"{model.id} has {'/'.join(model.state_layers)} layers: vLLM keeps a per-request state for them "
            f"(Mamba/SSM or linear-attention, in KV-cache groups with a unified page size) that vllm-ops "
            f"does not size", hint="start vLLM directly and read its 'GPU KV cache size' line")
    q = model.quantization
    if q is not None and q.incomplete and not loads_unquantized(q):
        raise NotModelled(
            "quant-config-incomplete",
            f"vLLM refuses {model.id}'s {q.source_file} ({q.method}): {q.incomplete}",
            hint="use the checkpoint's real config (the catalog's copy may be reconstructed)")


def coverage_warnings(model: ModelSpec) -> list[tuple[str, str]]:
    """(code, message) for parts of this model that are modelled only as vLLM would mis-load them,
    or not at all."""
    out: list[tuple[str, str]] = []
    q = model.quantization
    if loads_unquantized(q):
        out.append(("quant-config-incomplete",
                    f"{q.method} config without config_groups: vLLM loads every linear layer unquantized "
                    f"({model.weight_bytes / 1024**3:.2f} GiB planned, as vLLM loads this file); the real "
                    f"checkpoint's config would be much smaller"))
    if model.model_type.startswith("mllama"):
        out.append(("cross-attention-kv-not-modelled",
                    "Llama-3.2-Vision's cross-attention layers cache the image tokens' K/V (encoder cache), "
                    "which is not sized: they are charged as self-attention KV layers"))
    return out


@dataclass(frozen=True)
class FlagGap:
    """A vLLM flag the plan does not model: what its memory figures leave out (``memory``, a warning) and what
    the performance model leaves out (``performance``: a caveat, or the reason figures are refused)."""
    flags: tuple[str, ...]        # vLLM's long spellings (the planner rewrites short ones first: argv.ALIASES)
    code: str
    memory: str | None
    performance: str | None
    refuse: bool = False          # the prediction would be far off: null + reason instead of figures
    off: tuple[str, ...] = ("0", "0.0", "false", "none", "null", "")   # values that leave the feature off


FLAG_GAPS: tuple[FlagGap, ...] = (
    FlagGap(("--speculative-config",), "speculative-decoding-not-modelled",
            "the draft's weights and KV cache (a draft model, EAGLE or MTP heads) are not in the plan: expect fewer "
            "KV cache tokens than planned",
            "speculative decoding (draft steps, verification, acceptance rate) is not modelled", refuse=True),
    FlagGap(("--cpu-offload-gb",), "cpu-offload-not-modelled",
            "weights offloaded to CPU RAM are still counted on the GPU: the plan's weights are high and its KV "
            "cache low by up to that many GiB per GPU",
            "weights offloaded to CPU RAM cross PCIe in every step: not modelled", refuse=True),
    FlagGap(("--kv-transfer-config",), "kv-connector-not-modelled",
            "a KV connector's own GPU buffers (NIXL, LMCache) are not in the plan",
            "the KV connector's loads and saves (disaggregated prefill, external KV cache) are not modelled"),
    FlagGap(("--kv-offloading-size", "--kv-offloading-backend"), "kv-offload-not-modelled", None,
            "KV blocks offloaded to CPU RAM and loaded back on a prefix hit are not modelled (the GPU's KV cache "
            "only)"),
    FlagGap(("--hf-overrides",), "hf-overrides-not-modelled",
            "the plan reads the checkpoint's config.json: overrides of its shape (layers, heads, context) are not "
            "applied", "the model's shape from config.json, not the overrides"),
    FlagGap(("--compilation-config", "--max-cudagraph-capture-size", "--cuda-graph-sizes", "-O",
             "--optimization-level"),
            "compilation-config-not-modelled",
            "CUDA-graph memory is planned for vLLM's default capture sizes and mode",
            "CUDA-graph mode and capture sizes other than the defaults are not modelled"),
    FlagGap(("--decode-context-parallel-size", "--prefill-context-parallel-size"), "context-parallel-not-modelled",
            "context parallelism shards each request's KV cache over the ranks: the plan's KV capacity does not "
            "count it", "context-parallel attention and its communication are not modelled", refuse=True,
            off=("0", "1")),
    FlagGap(("--enable-eplb", "--eplb-config"), "eplb-not-modelled",
            "redundant experts of expert-parallel load balancing add expert weights that are not in the plan",
            "expert load balancing (redundant experts, rebalancing steps) is not modelled"),
    FlagGap(("--disable-custom-all-reduce",), "custom-all-reduce-off-not-modelled", None,
            "all-reduces through NCCL instead of vLLM's custom kernel (slower for small messages) are not modelled"),
    FlagGap(("--no-enable-chunked-prefill",), "chunked-prefill-off-not-modelled", None,
            "without chunked prefill a prompt runs whole in one step: the scheduler simulation chunks it"),
    FlagGap(("--max-num-partial-prefills", "--max-long-partial-prefills", "--long-prefill-token-threshold",
             "--max-num-active-seqs"), "scheduler-limits-not-modelled", None,
            "the scheduler's partial-prefill and active-sequence limits are not modelled"),
    FlagGap(("--enable-lora",), "lora-compute-not-modelled", None,
            "LoRA's extra GEMMs per step (adapters' punica kernels) are not modelled: the base model's speed"),
)


def _active(gap: FlagGap, flag: str, value: object) -> bool:
    """Whether a flag as given turns its feature on: a size only when above 0, ``--enable-lora=false`` not at all,
    an optimization level always."""
    v = None if value is None or value is True else str(value).strip().lower()
    if flag in ("-O", "--optimization-level"):
        return True                                        # any level, -O0 (no compilation, no graphs) above all
    return v is None or v not in gap.off


def flag_gaps(extra_args: Iterable[str]) -> list[tuple[FlagGap, str]]:
    """(gap, the flag as given, long form) for every flag after ``--`` the plan does not model, once per gap."""
    args = canonical_args(extra_args)
    out: list[tuple[FlagGap, str]] = []
    for gap in FLAG_GAPS:
        for i, tok in enumerate(args):
            name, eq, val = tok.partition("=")
            if (level := optimization_level(tok)) is not None:
                name, eq, val = "-O", "=", level             # vLLM's -O3 (an optimization level)
            if name not in gap.flags:
                continue
            value: object = val if eq else (args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("-")
                                            else None)
            if _active(gap, name, value):
                out.append((gap, name))
                break
    return out


def flag_warnings(extra_args: Iterable[str]) -> list[tuple[str, str]]:
    """(code, message) for the plan: each unmodelled flag with what the memory figures leave out."""
    return [(g.code, f"{flag}: {g.memory or 'the memory plan is unaffected or covers it'}; performance: "
                     f"{g.performance}")
            for g, flag in flag_gaps(extra_args)]


def performance_gaps(extra_args: Iterable[str]) -> tuple[str | None, list[str]]:
    """(the reason the performance model refuses, or None; caveats) for the flags after ``--``."""
    gaps = flag_gaps(extra_args)
    refusal = next((f"{flag}: {g.performance}" for g, flag in gaps if g.refuse), None)
    return refusal, [f"{flag}: {g.performance}" for g, flag in gaps if not g.refuse]
