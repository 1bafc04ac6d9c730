"""The dtype vLLM serves a checkpoint in, and the KV-cache element size that follows from it.

``--dtype auto`` (vLLM ``vllm/config/model.py`` ``_get_and_verify_dtype`` / ``_resolve_auto_dtype``):
the checkpoint's ``torch_dtype``, except that a float32 checkpoint is downcast to the platform's
first supported dtype (bfloat16 on compute capability >= 8.0; float16 below, or float32 for the
model types vLLM refuses float16 for: gemma2/gemma3/glm4/plamo2). An explicit ``--dtype`` wins:
``float32`` on a bf16 checkpoint loads every unquantized parameter in 4 bytes (measured:
Qwen2.5-14B-Instruct, 1x H200, vLLM 0.25.0: 55.04 GiB of weights, twice the 16-bit load).
Activations and an ``auto`` KV cache use the served dtype; a checkpoint whose quantization config
names an FP8 KV cache (``kv_cache_quant_algo`` / ``kv_cache_scheme``) gets an FP8 cache under
``auto`` from the version rule ``kv_cache_dtype_auto_from_checkpoint`` on.
"""
from __future__ import annotations

from vllm_ops.models.spec import ModelSpec

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_FLAG_DTYPES = {"float32": "float32", "float": "float32", "float16": "float16", "half": "float16",
                "bfloat16": "bfloat16"}
NO_FLOAT16 = ("gemma2", "gemma3", "gemma3_text", "glm4", "plamo2")


def served_dtype(model: ModelSpec, flag: str, *, bf16_ok: bool = True) -> tuple[str, str]:
    """(dtype vLLM computes and stores unquantized weights in, why)."""
    flag = (flag or "auto").lower()
    if flag in _FLAG_DTYPES:
        return _FLAG_DTYPES[flag], f"--dtype {flag}"
    ckpt = model.torch_dtype or "bfloat16"
    if ckpt == "float32":
        if bf16_ok:
            return "bfloat16", "float32 checkpoint served in bfloat16 (vLLM downcasts float32 under --dtype auto)"
        if model.model_type in NO_FLOAT16:
            return "float32", f"float32 checkpoint kept in float32 ({model.model_type} refuses float16, no bf16 here)"
        return "float16", "float32 checkpoint served in float16 (no bf16 on this GPU)"
    return ckpt, f"checkpoint dtype {ckpt}"


def served_weight_bytes(model: ModelSpec, dtype: str) -> float:
    """Checkpoint bytes with every parameter stored at ``torch_dtype`` re-sized to ``dtype``
    (quantized linear layers keep their packed size)."""
    ckpt_b = DTYPE_BYTES.get(model.torch_dtype or "bfloat16", 2)
    unq = model.unquantized_params if model.unquantized_params is not None else (
        model.param_count if model.quantization is None else 0)
    return float(model.weight_bytes) + unq * (DTYPE_BYTES.get(dtype, 2) - ckpt_b)


def checkpoint_kv_fp8(model: ModelSpec) -> bool:
    """The checkpoint's quantization config names an 8-bit float KV cache."""
    q = model.quantization
    return bool(q and q.kv_cache_scheme and q.kv_cache_scheme.lower() in ("fp8", "float8"))
