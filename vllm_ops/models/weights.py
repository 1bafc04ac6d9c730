"""Exact parameter count and checkpoint weight bytes from a config (stdlib only).

Counted per decoder layer, module by module, with Hugging Face module names so that a
quantization config's exclusion list (``modules_to_not_convert`` / ``ignore``) applies:

* embeddings (``model.embed_tokens``) and ``lm_head`` (absent when tied); never quantized;
* attention: q/k/v/o (GQA: k/v use ``num_key_value_heads``); biases when ``attention_bias``
  (all four) or for the Qwen2 family (q/k/v only); q_norm/k_norm (Qwen3, gemma3); attention sinks
  (gpt-oss); MLA: q_a/q_b (or q) + kv_a_proj_with_mqa + kv_b + o with the two low-rank norms;
* MLP: gate/up/down (gated) — dense layers use ``intermediate_size``; MoE layers hold routed
  experts (``moe_intermediate_size``), a router gate (not quantized; bias for gpt-oss, DeepSeek-V3
  ``e_score_correction_bias``), shared experts (DeepSeek ``n_shared_experts``, Qwen-MoE
  ``shared_expert_intermediate_size`` + its 1-wide gate); gpt-oss expert biases;
* RMSNorm weights (2 per layer, 4 for gemma2/3) and the final norm.

Quantized linear weights (bytes for an ``in x out`` matrix):
AWQ/GPTQ ``bits``: packed ints in*out*bits/8 + fp16 scales and packed zeros per group
(+ int32 ``g_idx`` for GPTQ); FP8: 1 byte/weight + fp32 block scales (``weight_block_size``)
or one per-tensor scale; compressed-tensors: ``config_groups.*.weights.num_bits`` with channel /
group / tensor scales; MXFP4: 4 bits + one E8M0 byte per 32; NVFP4: 4 bits + one FP8 byte per 16
(+ fp32 global scales); bitsandbytes: nf4 0.5 B + absmax per 64, int8 1 B + fp32 row scale.
Everything else is stored in ``torch_dtype``.

Not counted (noted): DeepSeek multi-token-prediction layers (vLLM skips them unless speculative
decoding asks), vision/audio towers (only the safetensors index total includes them).
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from vllm_ops.models.quant import loads_unquantized

_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
_QWEN2_QKV_BIAS = ("qwen2", "qwen2_moe", "qwen2_vl", "qwen2_5_vl", "qwen2_5_vl_text", "qwen2_vl_text")


@dataclass
class Counted:
    params: int = 0
    bytes: int = 0
    unquantized_params: int = 0        # stored at torch_dtype (what --dtype rescales)
    notes: list[str] = field(default_factory=list)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _compile_exclusions(patterns: tuple[str, ...]) -> re.Pattern | None:
    parts = []
    for p in patterns:
        if not p:
            continue
        if p.startswith("re:"):
            parts.append(f"(?:{p[3:]}).*")
        elif any(c in p for c in "*?["):
            parts.append(fnmatch.translate(p)[4:-3])        # strip "(?s:" ... ")\Z"
            parts.append(fnmatch.translate(p + ".*")[4:-3])
        else:
            parts.append(r"(?:.*\.)?" + re.escape(p) + r"(?:\..*)?")
    if not parts:
        return None
    try:
        return re.compile("(?s:" + "|".join(f"(?:{x})" for x in parts) + r")\Z")
    except re.error:
        return None


class _Tally:
    def __init__(self, dtype: str, quant, model_type: str):
        self.db = _DTYPE_BYTES.get(dtype, 2)
        self.q = quant
        self.params = 0
        self.bytes = 0
        self.unq = 0
        self.excl = _compile_exclusions(quant.modules_not_converted) if quant else None
        method = quant.method if quant else None
        if loads_unquantized(quant):
            method = "unknown"                       # vLLM loads such a config unquantized
        self.method = method
        # which linear layers a method quantizes by default
        self.experts_only = method == "mxfp4"

    def plain(self, n: int, count: int = 1, nbytes: int | None = None) -> None:
        self.params += n * count
        self.bytes += n * count * (self.db if nbytes is None else nbytes)
        if nbytes is None:
            self.unq += n * count

    def excluded(self, name: str) -> bool:
        return bool(self.excl and self.excl.match(name))

    def linear(self, name: str, fin: int, fout: int, *, bias: bool = False, count: int = 1,
               quantizable: bool = True, expert: bool = False) -> None:
        n = fin * fout
        self.params += n * count
        if bias:
            self.plain(fout, count)
        if (not quantizable or self.q is None or self.method in ("unknown",)
                or (self.experts_only and not expert) or self.excluded(name)):
            self.bytes += n * self.db * count
            self.unq += n * count
            return
        self.bytes += self._qbytes(fin, fout) * count

    def _qbytes(self, fin: int, fout: int) -> int:
        q, db = self.q, self.db
        n = fin * fout
        m = self.method
        bits = q.bits or 4
        if m in ("awq", "gptq"):
            g = q.group_size if q.group_size and q.group_size > 0 else fin
            groups = _ceil_div(fin, g)
            b = n * bits // 8 + groups * fout * 2 + groups * fout * bits // 8
            if m == "gptq":
                b += fin * 4
            return b
        if m == "fp8":
            raw = q.raw or {}
            wbs = raw.get("weight_block_size")
            if isinstance(wbs, list) and len(wbs) == 2 and all(isinstance(x, int) and x > 0 for x in wbs):
                return n + _ceil_div(fout, wbs[0]) * _ceil_div(fin, wbs[1]) * 4
            extra = 4 if raw.get("activation_scheme") == "static" else 0
            return n + 4 + extra
        if m == "mxfp4":
            return n // 2 + _ceil_div(n, 32)
        if m == "nvfp4":
            return n // 2 + _ceil_div(n, 16) + 8
        if m == "bitsandbytes":
            if bits == 4:
                raw = q.raw or {}
                dq = raw.get("bnb_4bit_use_double_quant")
                return n // 2 + _ceil_div(n, 64) * (1 if dq else 4)
            return n + fout * 4
        if m == "compressed-tensors":
            return self._ct_bytes(fin, fout)
        # unknown method with bits: packed weights only
        return n * bits // 8 if q.bits else n * db

    def _ct_bytes(self, fin: int, fout: int) -> int:
        q, db = self.q, self.db
        n = fin * fout
        bits = q.bits or 8
        strategy, wtype, group, symmetric = "channel", "int", q.group_size, True
        for g in ((q.raw or {}).get("config_groups") or {}).values():
            w = (g or {}).get("weights") or {}
            strategy = w.get("strategy") or strategy
            wtype = w.get("type") or wtype
            symmetric = w.get("symmetric", True)
            break
        if bits == 4 and wtype == "float":          # nvfp4 via compressed-tensors
            return n // 2 + _ceil_div(n, group or 16) + 8
        packed = n * bits // 8
        if strategy == "tensor":
            scales = 1
        elif strategy == "group" and group:
            scales = fout * _ceil_div(fin, group)
        elif strategy == "block":
            scales = fout * fin // (128 * 128) or 1
        else:  # channel
            scales = fout
        b = packed + scales * (4 if strategy == "tensor" else db)
        if not symmetric:
            b += scales * bits // 8 if bits < 8 else scales
        if bits < 8:
            b += 16  # weight_shape int64[2]
        return b


def is_moe_layer(cfg: dict, model_type: str, i: int) -> bool:
    """Whether decoder layer ``i`` has routed experts (DeepSeek first_k_dense_replace /
    moe_layer_freq, Qwen-MoE mlp_only_layers / decoder_sparse_step)."""
    first_k = cfg.get("first_k_dense_replace") or 0
    if i < first_k:
        return False
    if "moe_layer_freq" in cfg and isinstance(cfg.get("moe_layer_freq"), int) and cfg["moe_layer_freq"] > 1:
        if i % cfg["moe_layer_freq"] != 0:
            return False
    mlp_only = cfg.get("mlp_only_layers") or []
    if isinstance(mlp_only, list) and i in mlp_only:
        return False
    step = cfg.get("decoder_sparse_step")
    if isinstance(step, int) and not isinstance(step, bool) and step > 1 and (i + 1) % step != 0:
        return False
    return True


def _mla_attention(t: "_Tally", a: str, hidden: int, heads: int, mla) -> None:
    """Multi-head latent attention's projections (DeepSeek-V2/V3): low-rank query and joint key-value."""
    qk_head = mla.qk_nope_head_dim + mla.qk_rope_head_dim
    if mla.q_lora_rank:
        t.linear(f"{a}.q_a_proj", hidden, mla.q_lora_rank)
        t.plain(mla.q_lora_rank)
        t.linear(f"{a}.q_b_proj", mla.q_lora_rank, heads * qk_head)
    else:
        t.linear(f"{a}.q_proj", hidden, heads * qk_head)
    t.linear(f"{a}.kv_a_proj_with_mqa", hidden, mla.kv_lora_rank + mla.qk_rope_head_dim)
    t.plain(mla.kv_lora_rank)
    t.linear(f"{a}.kv_b_proj", mla.kv_lora_rank, heads * (mla.qk_nope_head_dim + mla.v_head_dim))
    t.linear(f"{a}.o_proj", heads * mla.v_head_dim, hidden)


def _moe_mlp(t: "_Tally", m: str, cfg: dict, model_type: str, hidden: int, moe) -> None:
    """A MoE layer's router, routed experts and shared experts."""
    gpt_oss = model_type == "gpt_oss"
    e, mi = moe.num_experts, moe.moe_intermediate_size
    router = f"{m}.router" if gpt_oss else f"{m}.gate"
    t.linear(router, hidden, e, bias=gpt_oss, quantizable=False)
    if cfg.get("topk_method") == "noaux_tc":
        t.plain(e, nbytes=4)  # e_score_correction_bias, fp32
    t.linear(f"{m}.experts.gate_up_proj", hidden, 2 * mi, bias=gpt_oss, count=e, expert=True)
    t.linear(f"{m}.experts.down_proj", mi, hidden, bias=gpt_oss, count=e, expert=True)
    if moe.num_shared_experts and moe.shared_expert_intermediate_size:
        si = moe.shared_expert_intermediate_size
        s = f"{m}.shared_experts" if model_type.startswith("deepseek") else f"{m}.shared_expert"
        t.linear(f"{s}.gate_proj", hidden, si)
        t.linear(f"{s}.up_proj", hidden, si)
        t.linear(f"{s}.down_proj", si, hidden)
        if cfg.get("shared_expert_intermediate_size"):
            t.linear(f"{m}.shared_expert_gate", hidden, 1, quantizable=False)


def count_weights(cfg: dict, *, model_type: str, n_layers: int, hidden: int, inter: int,
                  heads: int, kv_heads: int, head_dim: int, vocab: int, tie: bool, dtype: str,
                  moe, mla, quant) -> Counted:

    t = _Tally(dtype, quant, model_type)
    out = Counted()

    # embeddings and head
    emb_vocab = vocab + (8 if model_type == "mllama_text_model" else 0)  # mllama: 8 extra image tokens
    t.plain(emb_vocab * hidden)
    if not tie:
        t.linear("lm_head", hidden, vocab, quantizable=False)
    t.plain(hidden)  # final norm

    gemma_like = model_type.startswith(("gemma2", "gemma3"))
    qk_norm = model_type.startswith(("qwen3", "gemma3", "olmo2")) or model_type == "mllama_cross"
    attn_bias = bool(cfg.get("attention_bias"))
    qkv_bias = attn_bias or model_type in _QWEN2_QKV_BIAS or bool(cfg.get("qkv_bias"))
    o_bias = attn_bias
    mlp_bias = bool(cfg.get("mlp_bias"))
    gpt_oss = model_type == "gpt_oss"
    cross_layers = set(cfg.get("cross_attention_layers") or []) if model_type == "mllama_text_model" else set()

    for i in range(n_layers):
        p = f"model.layers.{i}"
        # norms
        t.plain(hidden * (4 if gemma_like else 2))
        # attention
        if mla is not None:
            _mla_attention(t, f"{p}.self_attn", hidden, heads, mla)
        else:
            a = f"{p}.cross_attn" if i in cross_layers else f"{p}.self_attn"
            t.linear(f"{a}.q_proj", hidden, heads * head_dim, bias=qkv_bias)
            t.linear(f"{a}.k_proj", hidden, kv_heads * head_dim, bias=qkv_bias)
            t.linear(f"{a}.v_proj", hidden, kv_heads * head_dim, bias=qkv_bias)
            t.linear(f"{a}.o_proj", heads * head_dim, hidden, bias=o_bias)
            if qk_norm or i in cross_layers:
                t.plain(2 * head_dim)
            if i in cross_layers:
                t.plain(2)  # cross_attn_attn_gate, cross_attn_mlp_gate
            if gpt_oss:
                t.plain(heads)  # attention sinks
        # MLP
        m = f"{p}.mlp"
        if moe is not None and is_moe_layer(cfg, model_type, i):
            _moe_mlp(t, m, cfg, model_type, hidden, moe)
        else:
            t.linear(f"{m}.gate_proj", hidden, inter, bias=mlp_bias)
            t.linear(f"{m}.up_proj", hidden, inter, bias=mlp_bias)
            t.linear(f"{m}.down_proj", inter, hidden, bias=mlp_bias)

    nextn = cfg.get("num_nextn_predict_layers")
    if isinstance(nextn, int) and nextn > 0:
        out.notes.append(f"{nextn} multi-token-prediction layer(s) in the checkpoint not counted "
                         "(vLLM loads them only for MTP speculative decoding)")
    if quant is not None and quant.method == "unknown":
        out.notes.append("quantization method not recognised: linear layers counted at torch_dtype")
    elif t.method == "unknown" and quant is not None:
        out.notes.append(f"{quant.method} config without config_groups: linear layers counted unquantized "
                         f"(what vLLM loads)")
    out.params, out.bytes, out.unquantized_params = t.params, t.bytes, t.unq
    return out
