"""Typed model facts read from a Hugging Face config.json (see :mod:`vllm_ops.models`).

Frozen dataclasses (no pydantic on the plan path). Everything the planner needs to reproduce
vLLM's memory arithmetic: layer geometry, attention/KV layout, MoE, MLA, sliding-window layers,
dtype, quantization, and the exact parameter count and weight bytes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Quantization:
    method: str                                # awq | gptq | fp8 | compressed-tensors | bitsandbytes | mxfp4 | nvfp4 | ...
    bits: int | None = None                    # weight bits of quantized linear layers
    group_size: int | None = None
    activation_bits: int | None = None
    kv_cache_scheme: str | None = None
    modules_not_converted: tuple[str, ...] = ()
    incomplete: str | None = None              # why vLLM cannot use this config as written (see models/quant.py)
    source_file: str = "config.json"           # "config.json" | "hf_quant_config.json" (modelopt)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class MoE:
    num_experts: int                           # routed experts
    experts_per_token: int
    moe_intermediate_size: int
    num_shared_experts: int = 0
    shared_expert_intermediate_size: int | None = None
    num_dense_layers: int = 0                  # leading dense layers (first_k_dense_replace) or non-MoE layers
    moe_layer_freq: int = 1


@dataclass(frozen=True)
class MLA:
    kv_lora_rank: int
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int
    q_lora_rank: int | None = None


@dataclass(frozen=True)
class Vision:
    """The vision tower of a multimodal model, as vLLM profiles it (see planning/encoder.py)."""
    params: int                                # tower + projector parameters (counted from vision_config)
    hidden_size: int
    intermediate_size: int
    num_layers: int
    patches_per_item: int                      # encoder sequence length of one image at the largest size
    tokens_per_item: int                       # language-model tokens one image becomes
    kind: str = "vit"                          # vision_config.model_type
    sized: bool = True                         # False: dynamic resolution (the largest image is the processor's max_pixels)


@dataclass(frozen=True)
class ModelSpec:
    id: str                                    # "Qwen/Qwen2.5-7B-Instruct" or a local path
    source: str                                # "dir" | "hf-cache" | "hub" | "catalog" | "config"
    architecture: str                          # e.g. "Qwen2ForCausalLM"
    model_type: str                            # e.g. "qwen2"
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    max_model_len: int | None = None           # vLLM's default context (rope_scaling applied; see models/config.py)
    tie_word_embeddings: bool = False
    torch_dtype: str = "bfloat16"              # checkpoint dtype from config.json
    moe: MoE | None = None
    mla: MLA | None = None
    sliding_window: int | None = None
    layer_types: tuple[str, ...] | None = None # per layer: "full_attention" | "sliding_attention" | "mamba" | ...
    quantization: Quantization | None = None
    multimodal: bool = False                   # a vision/audio tower exists (counted only when index total_size is known)
    param_count: int = 0                       # exact parameter count (language model, or all when from the index)
    weight_bytes: int = 0                      # bytes the weights occupy as loaded
    weight_bytes_source: str = "computed"      # "computed" | "safetensors-index"
    computed_weight_bytes: int | None = None   # from the architecture, kept for comparison with the index
    index_total_size: int | None = None        # safetensors index metadata.total_size when known
    config_path: str | None = None             # where config.json was read from
    local_dir: str | None = None               # a model directory on disk (for launching)
    catalog_source: str | None = None          # provenance for catalog entries
    notes: tuple[str, ...] = ()
    unquantized_params: int | None = None      # parameters stored at torch_dtype (rescaled by --dtype)
    vision: Vision | None = None               # the vision tower (multimodal models)
    state_layers: tuple[str, ...] = ()         # layer kinds whose state is not a KV cache (mamba, linear_attention)

    # -- derived facts the planner uses ---------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    @property
    def num_sliding_layers(self) -> int:
        if self.layer_types:
            return sum(1 for t in self.layer_types if t.startswith("sliding"))
        return 0

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """KV-cache bytes per token over all layers (no sliding-window savings):
        2 (K and V) x layers x kv_heads x head_dim x dtype_bytes; MLA caches one latent
        (kv_lora_rank + qk_rope_head_dim) per layer."""
        if self.mla is not None:
            return self.num_layers * (self.mla.kv_lora_rank + self.mla.qk_rope_head_dim) * dtype_bytes
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.quantization is not None:
            d["quantization"].pop("raw", None)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        d = dict(d)
        if d.get("moe") is not None:
            d["moe"] = MoE(**d["moe"])
        if d.get("mla") is not None:
            d["mla"] = MLA(**d["mla"])
        if d.get("vision") is not None:
            d["vision"] = Vision(**d["vision"])
        if d.get("quantization") is not None:
            q = dict(d["quantization"])
            q["modules_not_converted"] = tuple(q.get("modules_not_converted") or ())
            d["quantization"] = Quantization(**q)
        for k in ("layer_types", "notes", "state_layers"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)
