"""What vLLM accepts, and the pins a user may fix: the one home of the planner's flag vocabulary.

    PIN_KEYS, DTYPES, KV_CACHE_DTYPES, QUANTIZATIONS       (vLLM's accepted values)
    normalize_pins(pins) -> dict                           (BadInput / ImpossiblePin for what vLLM refuses)
    check_port(port), kv_dtype_ok(kvd), tp_problem(model, tp), valid_tps(model, limit)
    HEALTHY_CONCURRENCY                                    (when the layout search stops adding GPUs)

Used by the planner, the multi-node layout, profiles, launch (--auto-retry) and the upgrade check.
Pure: no I/O.
"""
from __future__ import annotations

import math
from typing import Any

from vllm_ops.errors import BadInput, ImpossiblePin
from vllm_ops.models.spec import ModelSpec
from vllm_ops.planning.argv import human_int
from vllm_ops.planning.memory import VOCAB_PADDING

HEALTHY_CONCURRENCY = 4          # full-length sequences the KV cache should hold before we stop adding TP
PIN_KEYS = (
    "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "gpu_memory_utilization",
    "max_model_len", "max_num_seqs", "max_num_batched_tokens", "kv_cache_dtype", "dtype", "quantization",
    "enforce_eager",
)
# a profile that fixes these (one written by `vllm-ops tune`) acts as pins the user may override
PROFILE_LAYOUT_KEYS = ("tensor_parallel_size", "pipeline_parallel_size", "kv_cache_dtype", "quantization")
INT_PINS = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "max_model_len",
            "max_num_seqs", "max_num_batched_tokens")
HUMAN_INT_PINS = ("max_model_len", "max_num_batched_tokens")   # vLLM reads 32k / 32K for these (argparse_utils)
FP8_KV = ("fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc")
# vLLM 0.33's choices (`vllm serve --help`; vllm/config/cache.py, vllm/config/model.py): vLLM refuses anything else at
# start, so the planner refuses it first (ImpossiblePin, exit 2)
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
KV_CACHE_DTYPES = ("auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla",
                   "nvfp4_ds_mla", "nvfp4", "nvfp4_4over6", "int8_per_token_head", "fp8_per_token_head",
                   "int4_per_token_head", "ultraquant_4bit")
KV_CACHE_DTYPE_FAMILIES = ("turboquant_", "octave_")          # turboquant_*, octave_*
# --quantization: a plugin may register more methods, so an unknown one is a warning, not an error
QUANTIZATIONS = ("awq", "auto_awq", "fp8", "fbgemm_fp8", "fp_quant", "modelopt", "modelopt_fp4",
                 "modelopt_mxfp8", "modelopt_mixed", "auto_gptq", "gptq", "gptq_marlin", "awq_marlin",
                 "humming", "compressed-tensors", "experts_int8", "quark", "moe_wna16", "torchao", "inc",
                 "mxfp4", "gpt_oss_mxfp4", "deepseek_v4_fp8", "online", "fp8_per_tensor", "fp8_per_block",
                 "fp8_per_channel", "int8_per_channel_weight_only", "nvfp4_per_token", "mxfp8")
MAX_PORT = 65535


def truthy(v: Any) -> bool:
    return str(v).strip().lower() in ("1", "true", "yes", "on")


def _norm_one(key: str, v: Any) -> Any:
    flag = "--" + key.replace("_", "-")
    if key == "max_model_len" and str(v).strip().lower() in ("auto", "-1"):
        return None                        # vLLM's "the longest that fits": the planner's own default
    if key in INT_PINS:
        try:
            v = human_int(v, flag) if key in HUMAN_INT_PINS and isinstance(v, str) else int(v)
        except (TypeError, ValueError, BadInput):
            raise BadInput(f"{flag} must be an integer, not {v!r}"
                           + (" (vLLM also reads 32k = 32,000 and 32K = 32,768)" if key in HUMAN_INT_PINS else "")
                           ) from None
        if v < 1:
            raise ImpossiblePin(f"{flag} must be >= 1, not {v}")
        return v
    if key == "gpu_memory_utilization":
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise BadInput(f"--gpu-memory-utilization must be a number, not {v!r}") from None
        if not 0 < v <= 1:
            raise ImpossiblePin(f"--gpu-memory-utilization must be in (0, 1], not {v}",
                                hint="it is the fraction of each GPU's total memory vLLM may use")
        return v
    if key == "enforce_eager":
        return truthy(v) if not isinstance(v, bool) else v
    return str(v)


def normalize_pins(pins: dict | None) -> dict[str, Any]:
    """``pins`` with underscore names and checked values (None / False dropped); BadInput for an
    unknown key or a value of the wrong type, ImpossiblePin for one vLLM refuses."""
    out: dict[str, Any] = {}
    for k, v in (pins or {}).items():
        if v is None or v is False and k != "enforce_eager":
            continue
        key = k.replace("-", "_").lstrip("_")
        if key not in PIN_KEYS:
            raise BadInput(f"unknown pinned flag {k!r}", hint="pins are " + ", ".join(PIN_KEYS))
        v = _norm_one(key, v)
        if v is None or key == "enforce_eager" and not v:
            continue
        out[key] = v
    return out


def check_port(port: Any, what: str = "--port") -> int:
    """A TCP port: an int in 1..65535 (BadInput otherwise). Replicas take consecutive ports, so
    the planner also checks the last one."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= MAX_PORT:
        raise BadInput(f"{what} must be a port number in 1..{MAX_PORT}, not {str(port)[:40]!r}")
    return port


def kv_dtype_ok(kvd: str) -> bool:
    return kvd in KV_CACHE_DTYPES or any(kvd.startswith(f) and len(kvd) > len(f) for f in KV_CACHE_DTYPE_FAMILIES)


def tp_problem(model: ModelSpec, tp: int) -> str | None:
    """Why vLLM would refuse this TP size, or None."""
    if model.num_attention_heads % tp:
        return (f"Total number of attention heads ({model.num_attention_heads}) must be divisible by "
                f"tensor parallel size ({tp})")
    kv = model.num_kv_heads
    if model.mla is None and kv and not (kv % tp == 0 or tp % kv == 0):
        return f"{kv} KV heads and tensor parallel size {tp}: one must be a multiple of the other"
    vpad = math.ceil(model.vocab_size / VOCAB_PADDING) * VOCAB_PADDING
    if vpad % tp:
        return f"padded vocab {vpad} is not divisible by tensor parallel size {tp}"
    if model.moe is None and model.intermediate_size % tp:
        return f"intermediate size {model.intermediate_size} is not divisible by tensor parallel size {tp}"
    if model.moe is not None and model.moe.moe_intermediate_size % tp:
        return f"MoE intermediate size {model.moe.moe_intermediate_size} is not divisible by tensor parallel size {tp}"
    return None


def valid_tps(model: ModelSpec, limit: int) -> list[int]:
    return [t for t in range(1, max(limit, 1) + 1) if tp_problem(model, t) is None]


__all__ = ["DTYPES", "FP8_KV", "HEALTHY_CONCURRENCY", "INT_PINS", "KV_CACHE_DTYPES", "KV_CACHE_DTYPE_FAMILIES",
           "MAX_PORT", "PIN_KEYS", "PROFILE_LAYOUT_KEYS", "QUANTIZATIONS", "check_port", "kv_dtype_ok",
           "normalize_pins", "tp_problem", "truthy", "valid_tps"]
