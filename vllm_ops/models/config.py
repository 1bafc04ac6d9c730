"""config.json (a plain dict) → :class:`ModelSpec`.

Pure functions, json/stdlib only (this is on the `plan` path). The parameter count and weight
bytes come from :mod:`vllm_ops.models.weights`.

What is read, and from where:

* Multimodal configs (``text_config``: gemma-3, Llama-3.2-Vision/mllama, Mistral-Small-3.x/mistral3,
  llava-style) — the language model is read from ``text_config``; ``torch_dtype``,
  ``quantization_config`` and ``tie_word_embeddings`` fall back to the top level. The vision tower
  is counted only through the safetensors index ``total_size`` (a note says so otherwise).
* ``head_dim``: explicit, else ``hidden_size // num_attention_heads`` (must divide).
* ``max_model_len`` (vLLM's default context): the smallest of the max-length keys vLLM looks at
  (``max_position_embeddings``, ``n_positions``, ``max_seq_len``, ``seq_length``,
  ``max_sequence_length``, ``max_seq_length``, ``seq_len``), then scaled by ``rope_scaling.factor``
  unless the rope type is ``su``/``longrope``/``llama3`` (already in max_position_embeddings) or the
  model is gemma3; for ``yarn`` the base is ``original_max_position_embeddings``. This mirrors
  vLLM's ``_get_and_verify_max_len`` in its simple form.
* Sliding window layers: ``layer_types`` when given (gpt-oss, newer configs); gemma2 alternates
  (even layers slide); gemma3 uses ``sliding_window_pattern`` (default 6: every 6th layer is
  global); otherwise a non-null ``sliding_window`` with ``use_sliding_window`` not false applies to
  every layer (Mistral-7B-v0.1); Mistral v0.3 / Qwen2 (use_sliding_window=false) → none.
"""
from __future__ import annotations

import math
from typing import Any

from vllm_ops.errors import MalformedFile
from vllm_ops.models.spec import MLA, ModelSpec, MoE, Quantization
from vllm_ops.models.weights import count_weights, is_moe_layer

# generous sanity bounds: anything beyond is a hostile or broken file
_LIMITS = {
    "num_hidden_layers": 4096,
    "hidden_size": 1 << 20,
    "intermediate_size": 1 << 22,
    "num_attention_heads": 1 << 14,
    "num_key_value_heads": 1 << 14,
    "head_dim": 1 << 14,
    "vocab_size": 1 << 26,
    "max_position_embeddings": 1 << 34,
    "num_experts": 1 << 16,
    "experts_per_token": 1 << 16,
    "moe_intermediate_size": 1 << 22,
    "kv_lora_rank": 1 << 20,
    "q_lora_rank": 1 << 20,
    "qk_rope_head_dim": 1 << 14,
    "qk_nope_head_dim": 1 << 14,
    "v_head_dim": 1 << 14,
    "sliding_window": 1 << 34,
}

# transformers defaults for keys some configs leave out (only where the file relies on them)
_TEXT_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3_text": {"vocab_size": 262208, "max_position_embeddings": 131072, "head_dim": 256,
                    "sliding_window": 4096, "tie_word_embeddings": True,
                    "intermediate_size": 9216, "num_key_value_heads": 4},
    "gemma2": {"tie_word_embeddings": True},
    "gemma": {"tie_word_embeddings": True},
    "mllama_text_model": {"vocab_size": 128256},
}

_MAX_LEN_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length",
                 "max_sequence_length", "max_seq_length", "seq_len")

_DTYPE_ALIASES = {
    "bfloat16": "bfloat16", "bf16": "bfloat16", "torch.bfloat16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16", "torch.float16": "float16",
    "float32": "float32", "fp32": "float32", "float": "float32", "torch.float32": "float32",
}


def _where(model_id: str) -> str:
    return f"config.json of {model_id}"


def _int(cfg: dict, key: str, model_id: str, *, required: bool = True, default: Any = None,
         aliases: tuple[str, ...] = (), minimum: int = 1) -> Any:
    val = None
    canon = key
    for k in (key, *aliases):
        if k in cfg and cfg[k] is not None:
            val, key = cfg[k], k
            break
    if val is None:
        if required and default is None:
            raise MalformedFile(f"{_where(model_id)}: missing '{key}'")
        return default
    if isinstance(val, bool) or not isinstance(val, (int, float)) or (
            isinstance(val, float) and (not math.isfinite(val) or val != int(val))):
        raise MalformedFile(f"{_where(model_id)}: '{key}' must be an integer, got {val!r:.40}")
    val = int(val)
    if val < minimum:
        raise MalformedFile(f"{_where(model_id)}: '{key}' must be >= {minimum}, got {val}")
    limit = _LIMITS.get(canon)
    if limit is not None and val > limit:
        raise MalformedFile(f"{_where(model_id)}: '{key}' = {val} is absurd (limit {limit})")
    return val


_ALIAS_OF = {
    "num_hidden_layers": ("n_layer", "num_layers", "n_layers"),
    "hidden_size": ("n_embd", "d_model", "dim"),
    "num_attention_heads": ("n_head", "n_heads"),
    "num_key_value_heads": ("n_kv_heads", "num_kv_heads", "multi_query_group_num"),
    "intermediate_size": ("ffn_hidden_size", "n_inner", "ffn_dim"),
    "num_experts": ("n_routed_experts", "num_local_experts", "moe_num_experts"),
    "experts_per_token": ("num_experts_per_tok", "moe_top_k"),
}


def _model_type(cfg: dict, model_id: str, where: str = "") -> str | None:
    """``cfg["model_type"]``: a string or absent; anything else (a list, a dict, a number) is a
    malformed config, said in one line (it is used as a dict key and in string tests)."""
    mt = cfg.get("model_type")
    if mt is not None and not isinstance(mt, str):
        raise MalformedFile(f"{_where(model_id)}: '{where}model_type' must be a string, "
                            f"not {type(mt).__name__}")
    return mt


def text_config_of(config: dict, model_id: str = "<config>") -> tuple[dict, bool]:
    """The language-model part of a config (``text_config``/``llm_config`` nesting) and whether
    the model is multimodal. Top-level dtype/quantization/tie keys are inherited. A
    ``model_type`` (top level or nested) that is not a string raises ``MalformedFile``."""
    multimodal = any(k in config for k in ("vision_config", "audio_config", "vision_tower"))
    _model_type(config, model_id)
    for key in ("text_config", "llm_config", "language_config"):
        sub = config.get(key)
        if isinstance(sub, dict):
            text = dict(sub)
            for inherit in ("torch_dtype", "dtype", "quantization_config", "tie_word_embeddings"):
                if inherit in config and text.get(inherit) is None:
                    text[inherit] = config[inherit]
            for k, v in _TEXT_DEFAULTS.get(_model_type(text, model_id, f"{key}."), {}).items():
                text.setdefault(k, v)
            return text, True
    text = dict(config)
    for k, v in _TEXT_DEFAULTS.get(_model_type(text, model_id), {}).items():
        text.setdefault(k, v)
    return text, multimodal


def default_max_model_len(cfg: dict, model_type: str) -> int | None:
    lens = []
    for k in _MAX_LEN_KEYS:
        v = cfg.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            lens.append(v)
    if not lens:
        return None
    derived = min(lens)
    rs = cfg.get("rope_scaling")
    if isinstance(rs, dict) and "gemma3" not in model_type:
        rtype = rs.get("rope_type", rs.get("type"))
        factor = rs.get("factor")
        if rtype not in ("su", "longrope", "llama3", "mrope", "default", None) and isinstance(
                factor, (int, float)) and not isinstance(factor, bool) and 0 < factor < 1e4:
            if rtype == "yarn":
                orig = rs.get("original_max_position_embeddings")
                if isinstance(orig, int) and orig > 0:
                    derived = orig
            derived = int(derived * factor)
    return derived


def _dtype(cfg: dict) -> str:
    raw = cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"
    return _DTYPE_ALIASES.get(str(raw).lower(), "bfloat16")


def parse_quantization(qc: Any, model_id: str, source_file: str = "config.json") -> Quantization | None:
    """The quantization facts of a ``quantization_config`` (or a ModelOpt ``hf_quant_config.json``
    already reshaped by :func:`vllm_ops.models.quant.from_hf_quant_config`); ``incomplete`` says
    when vLLM cannot use it as written (:func:`vllm_ops.models.quant.incomplete_reason`)."""
    from vllm_ops.models.quant import incomplete_reason

    if qc is None:
        return None
    if not isinstance(qc, dict):
        raise MalformedFile(f"{_where(model_id)}: 'quantization_config' must be an object")
    method = str(qc.get("quant_method") or qc.get("quant_algo") or "unknown").lower()
    incomplete = incomplete_reason(method, qc)
    bits = qc.get("bits") if isinstance(qc.get("bits"), int) else None
    group = qc.get("group_size") if isinstance(qc.get("group_size"), int) else None
    act_bits = None
    kv_scheme = None
    excluded: list[str] = []
    for k in ("modules_to_not_convert", "modules_not_converted", "ignore", "ignored_layers",
              "llm_int8_skip_modules", "exclude_modules"):
        v = qc.get(k)
        if isinstance(v, list):
            excluded.extend(str(x) for x in v)
    kvq = str(qc.get("kv_cache_quant_algo") or "").upper()
    if "FP8" in kvq:
        kv_scheme = "fp8"
    if method == "fp8":
        bits, act_bits = 8, 8
        wbs = qc.get("weight_block_size")
        if isinstance(wbs, list) and len(wbs) == 2:
            group = int(wbs[1])
    elif method == "mxfp4":
        bits, group = 4, 32
    elif method in ("nvfp4", "modelopt_fp4") or (method == "modelopt" and "FP4" in str(qc.get("quant_algo", ""))):
        method, bits, group = "nvfp4", 4, 16
    elif method == "modelopt":
        algo = str(qc.get("quant_algo", "")).upper()
        if "FP8" in algo:                            # per-tensor static: weight + input scales
            method, bits, act_bits = "fp8", 8, 8
            qc = {**qc, "activation_scheme": "static"}
    elif method == "bitsandbytes":
        bits = 4 if qc.get("load_in_4bit") else 8
    elif method == "compressed-tensors":
        groups = qc.get("config_groups") or {}
        if isinstance(groups, dict):
            for g in groups.values():
                if not isinstance(g, dict):
                    continue
                w = g.get("weights") or {}
                a = g.get("input_activations") or {}
                if isinstance(w, dict) and isinstance(w.get("num_bits"), int):
                    bits = w["num_bits"]
                    if isinstance(w.get("group_size"), int):
                        group = w["group_size"]
                    if w.get("type") == "float" and bits == 4:
                        group = group or 16          # nvfp4-pack-quantized
                if isinstance(a, dict) and isinstance(a.get("num_bits"), int):
                    act_bits = a["num_bits"]
                break
        kvs = qc.get("kv_cache_scheme")
        if isinstance(kvs, dict) and kvs.get("num_bits"):
            kv_scheme = f"{kvs.get('type', 'int')}{kvs['num_bits']}"
    elif method in ("awq", "gptq", "gptq_marlin", "awq_marlin", "marlin"):
        bits = bits or 4
        group = group if group is not None else 128
        method = method.split("_")[0]
    return Quantization(method=method, bits=bits, group_size=group, activation_bits=act_bits,
                        kv_cache_scheme=kv_scheme, modules_not_converted=tuple(excluded),
                        incomplete=incomplete, source_file=source_file, raw=qc)


def _layer_types(cfg: dict, model_type: str, n_layers: int, model_id: str) -> tuple[int | None, tuple[str, ...] | None]:
    sw = cfg.get("sliding_window")
    if sw is not None:
        if isinstance(sw, bool) or not isinstance(sw, int) or sw < 1 or sw > _LIMITS["sliding_window"]:
            raise MalformedFile(f"{_where(model_id)}: 'sliding_window' must be a positive integer or null")
    lt = cfg.get("layer_types")
    if isinstance(lt, list) and lt:
        if len(lt) != n_layers or not all(isinstance(x, str) for x in lt):
            raise MalformedFile(f"{_where(model_id)}: 'layer_types' must list {n_layers} strings")
        return (sw if any(x.startswith("sliding") for x in lt) else None), tuple(lt)
    if sw is None or cfg.get("use_sliding_window") is False:
        return None, None
    if model_type == "gemma2":
        return sw, tuple("sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers))
    if model_type.startswith("gemma3"):
        pattern = cfg.get("sliding_window_pattern", 6)
        if not isinstance(pattern, int) or isinstance(pattern, bool) or pattern < 1:
            pattern = 6
        return sw, tuple("full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
                         for i in range(n_layers))
    return sw, tuple("sliding_attention" for _ in range(n_layers))


def _moe(cfg: dict, model_type: str, n_layers: int, inter: int, model_id: str) -> MoE | None:
    n_exp = _int(cfg, "num_experts", model_id, required=False, default=None, minimum=0,
                 aliases=_ALIAS_OF["num_experts"])
    if not n_exp:
        return None
    topk = _int(cfg, "experts_per_token", model_id, required=False, default=None,
                aliases=("num_experts_per_tok", "moe_top_k")) or 2
    if topk > n_exp:
        raise MalformedFile(f"{_where(model_id)}: experts per token ({topk}) exceeds experts ({n_exp})")
    moe_inter = _int(cfg, "moe_intermediate_size", model_id, required=False, default=None) or inter
    shared = _int(cfg, "n_shared_experts", model_id, required=False, default=0, minimum=0,
                  aliases=("num_shared_experts",)) or 0
    shared_inter = _int(cfg, "shared_expert_intermediate_size", model_id, required=False,
                        default=None, minimum=0)
    if shared_inter:
        shared = max(shared, 1)
    elif shared:
        shared_inter = shared * moe_inter
    first_k = _int(cfg, "first_k_dense_replace", model_id, required=False, default=0, minimum=0) or 0
    freq = _int(cfg, "moe_layer_freq", model_id, required=False, default=None) or \
        _int(cfg, "decoder_sparse_step", model_id, required=False, default=None) or 1
    dense = sum(1 for i in range(n_layers) if not is_moe_layer(cfg, model_type, i))
    return MoE(num_experts=n_exp, experts_per_token=topk, moe_intermediate_size=moe_inter,
               num_shared_experts=shared, shared_expert_intermediate_size=shared_inter or None,
               num_dense_layers=dense if dense else first_k, moe_layer_freq=freq)


_STATE_KINDS = ("mamba", "linear_attention", "conv", "ssm", "linear")
_STATE_KEYS = ("mamba_d_state", "ssm_state_size", "mamba_expand", "linear_num_value_heads", "mamba_n_heads",
               "attn_layer_period", "hybrid_override_pattern", "full_attention_interval")


def state_layer_kinds(cfg: dict, model_type: str) -> tuple[str, ...]:
    """Layer kinds whose per-request state is not an attention KV cache (Mamba/SSM, linear
    attention / Gated DeltaNet, short convolutions): () for attention-only models. Read from
    ``layer_types`` / ``layers_block_type`` (Qwen3-Next, Granite-4, LFM2), Nemotron-H's
    ``hybrid_override_pattern`` ('M' = Mamba), Jamba's ``attn_layer_period``, a ``mamba``
    model_type, or any SSM-only config key."""
    kinds: set[str] = set()
    for key in ("layer_types", "layers_block_type"):
        lt = cfg.get(key)
        if isinstance(lt, list):
            kinds.update(str(t) for t in lt if isinstance(t, str) and str(t).startswith(_STATE_KINDS))
    pattern = cfg.get("hybrid_override_pattern")
    if isinstance(pattern, str) and "M" in pattern:
        kinds.add("mamba")
    if "mamba" in model_type or model_type in ("falcon_h1", "zamba2", "bamba", "plamo2", "nemotron_h"):
        kinds.add("mamba")
    if model_type == "qwen3_next" or "full_attention_interval" in cfg:
        kinds.add("linear_attention")
    if not kinds and any(k in cfg for k in _STATE_KEYS):
        kinds.add("mamba" if "attn_layer_period" in cfg or "mamba_d_state" in cfg else "linear_attention")
    return tuple(sorted(kinds))


def _mla(cfg: dict, model_id: str) -> MLA | None:
    if cfg.get("kv_lora_rank") is None:
        return None
    return MLA(
        kv_lora_rank=_int(cfg, "kv_lora_rank", model_id),
        qk_rope_head_dim=_int(cfg, "qk_rope_head_dim", model_id),
        qk_nope_head_dim=_int(cfg, "qk_nope_head_dim", model_id),
        v_head_dim=_int(cfg, "v_head_dim", model_id),
        q_lora_rank=_int(cfg, "q_lora_rank", model_id, required=False, default=None),
    )


def _sizes(counted, vision, index_total_size: int | None, dtype: str, multimodal: bool,
           notes: list[str]) -> dict:
    """Parameters and bytes of the whole checkpoint: the counted language model, plus the vision
    tower counted from vision_config unless the index total_size (which includes it) is known."""
    db = 4 if dtype == "float32" else 2
    unq = counted.unquantized_params
    if multimodal:
        if index_total_size is not None:
            notes.append("vision/audio tower included through the safetensors index total_size")
            unq += max(index_total_size - counted.bytes, 0) // db
        elif vision is not None:
            notes.append(f"vision tower counted from vision_config ({vision.kind}, "
                         f"{vision.params / 1e9:.2f}B parameters at {dtype})")
        else:
            notes.append("vision/audio tower not counted (no vision_config and no safetensors index "
                         "total_size): weight bytes cover the language model only")
    tower = vision.params if (vision is not None and index_total_size is None) else 0
    computed = counted.bytes + tower * db
    if index_total_size is not None:
        notes.append(f"computed weight bytes differ from the index by "
                     f"{(computed - index_total_size) / index_total_size * 100:+.2f}%")
    return {"params": counted.params + tower, "computed": computed, "unquantized": unq + tower,
            "bytes": index_total_size if index_total_size is not None else computed,
            "source": "safetensors-index" if index_total_size is not None else "computed"}


def _attention_shape(cfg: dict, model_id: str) -> tuple[int, int, int, int, int, Any]:
    """(layers, hidden size, attention heads, KV heads, head dim, MLA facts or None) of a text config."""
    n_layers = _int(cfg, "num_hidden_layers", model_id, aliases=_ALIAS_OF["num_hidden_layers"])
    hidden = _int(cfg, "hidden_size", model_id, aliases=_ALIAS_OF["hidden_size"])
    heads = _int(cfg, "num_attention_heads", model_id, aliases=_ALIAS_OF["num_attention_heads"])
    kv_heads = _int(cfg, "num_key_value_heads", model_id, required=False, default=heads,
                    aliases=_ALIAS_OF["num_key_value_heads"])
    if heads % kv_heads:
        raise MalformedFile(f"{_where(model_id)}: num_attention_heads ({heads}) is not a multiple "
                            f"of num_key_value_heads ({kv_heads})")
    head_dim = _int(cfg, "head_dim", model_id, required=False, default=None)
    mla = _mla(cfg, model_id)
    if head_dim is None and mla is not None:
        head_dim = mla.qk_nope_head_dim + mla.qk_rope_head_dim
    if head_dim is None:
        if hidden % heads:
            raise MalformedFile(f"{_where(model_id)}: hidden_size ({hidden}) is not divisible by "
                                f"num_attention_heads ({heads}) and there is no head_dim")
        head_dim = hidden // heads
    return n_layers, hidden, heads, kv_heads, head_dim, mla


def _quantization_of(cfg: dict, model_id: str, hf_quant_config: dict | None) -> Any:
    """The checkpoint's quantization: config.json's quantization_config, else its compression_config, else the
    hf_quant_config.json beside it (None: not quantized)."""
    from vllm_ops.models.quant import from_hf_quant_config

    quant = parse_quantization(cfg.get("quantization_config"), model_id)
    if quant is None and isinstance(cfg.get("compression_config"), dict):
        quant = parse_quantization(cfg["compression_config"], model_id)
    if quant is None and hf_quant_config is not None:
        quant = parse_quantization(from_hf_quant_config(hf_quant_config), model_id, "hf_quant_config.json")
    return quant


def spec_from_config(config: dict, *, model_id: str, source: str = "config",
                     index_total_size: int | None = None, config_path: str | None = None,
                     local_dir: str | None = None, catalog_source: str | None = None,
                     hf_quant_config: dict | None = None) -> ModelSpec:
    """Build a :class:`ModelSpec` from a parsed config.json (and the ``hf_quant_config.json``
    beside it, when there is one). Raises ``MalformedFile`` (one line)."""
    from vllm_ops.models.vision import vision_of

    if not isinstance(config, dict):
        raise MalformedFile(f"{_where(model_id)}: expected a JSON object, got {type(config).__name__}")
    cfg, multimodal = text_config_of(config, model_id)
    archs = config.get("architectures") or cfg.get("architectures") or []
    architecture = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else "unknown"
    model_type = str(cfg.get("model_type") or config.get("model_type") or "unknown")

    n_layers, hidden, heads, kv_heads, head_dim, mla = _attention_shape(cfg, model_id)
    inter = _int(cfg, "intermediate_size", model_id, required=False, default=None,
                 aliases=_ALIAS_OF["intermediate_size"])
    if inter is None:
        inter = 4 * hidden
    vocab = _int(cfg, "vocab_size", model_id, aliases=("padded_vocab_size", "n_vocab"))
    _int(cfg, "max_position_embeddings", model_id, required=False, default=0, minimum=1)
    max_len = default_max_model_len(cfg, model_type)
    early_notes = []
    if max_len is None:  # vLLM's fallback when no length key exists
        max_len = 2048
        early_notes.append("no max_position_embeddings in config.json: vLLM's default of 2048 used")

    moe = _moe(cfg, model_type, n_layers, inter, model_id)
    sliding, layer_types = _layer_types(cfg, model_type, n_layers, model_id)
    quant = _quantization_of(cfg, model_id, hf_quant_config)
    tie = cfg.get("tie_word_embeddings")
    if tie is None:
        tie = config.get("tie_word_embeddings", False)
    dtype = _dtype(cfg)

    notes: list[str] = list(early_notes)
    if index_total_size is not None:
        if isinstance(index_total_size, bool) or not isinstance(index_total_size, int) or index_total_size <= 0:
            raise MalformedFile(f"safetensors index of {model_id}: 'total_size' must be a positive integer")

    counted = count_weights(cfg, model_type=model_type, n_layers=n_layers, hidden=hidden,
                            inter=inter, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                            vocab=vocab, tie=bool(tie), dtype=dtype, moe=moe, mla=mla, quant=quant)
    notes.extend(counted.notes)
    vision = vision_of(config, hidden) if multimodal else None
    sizes = _sizes(counted, vision, index_total_size, dtype, multimodal, notes)
    state = state_layer_kinds(cfg, model_type)

    return ModelSpec(
        id=model_id, source=source, architecture=architecture, model_type=model_type,
        num_layers=n_layers, hidden_size=hidden, intermediate_size=inter,
        num_attention_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim, vocab_size=vocab,
        max_position_embeddings=int(cfg.get("max_position_embeddings") or max_len),
        max_model_len=max_len,
        tie_word_embeddings=bool(tie), torch_dtype=dtype, moe=moe, mla=mla,
        sliding_window=sliding, layer_types=layer_types, quantization=quant,
        multimodal=multimodal, param_count=sizes["params"], weight_bytes=sizes["bytes"],
        weight_bytes_source=sizes["source"], computed_weight_bytes=sizes["computed"],
        index_total_size=index_total_size, config_path=config_path, local_dir=local_dir,
        catalog_source=catalog_source, notes=tuple(notes),
        unquantized_params=sizes["unquantized"], vision=vision, state_layers=state,
    )
