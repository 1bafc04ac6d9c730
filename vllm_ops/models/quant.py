"""What vLLM needs from a quantization config, and where it finds one (stdlib only, plan path).

Where (vLLM ``ModelConfig._parse_quant_hf_config``): ``config.json`` ``quantization_config``, else
its ``compression_config`` (older compressed-tensors), else a ``hf_quant_config.json`` beside the
config (NVIDIA ModelOpt checkpoints: ``{"producer": {"name": "modelopt"}, "quantization":
{"quant_algo": "FP8", "kv_cache_quant_algo": "FP8", "exclude_modules": [...]}}``).

What each method's ``from_config`` reads with ``get_from_keys`` (a missing key makes vLLM refuse
to start with ``Cannot find any of [...] in the model's quantization config``):

=================  =====================================================================
awq / awq_marlin   ``w_bit``/``bits``, ``q_group_size``/``group_size``, ``zero_point``
gptq               ``bits``, ``group_size``, ``desc_act`` (gptq_marlin also ``sym``; vLLM
                   switches to it only when ``sym`` is present)
fp8                ``quant_method``, ``activation_scheme``
modelopt           ``quant_algo`` must name FP8 (or FP4 for modelopt_fp4)
=================  =====================================================================

compressed-tensors has no required key, but a config without ``config_groups`` maps no layer to a
scheme: vLLM loads every linear layer UNQUANTIZED (a real vLLM 0.25.0 loaded a reconstructed
Llama-3.3-70B FP8-dynamic config at 131.45 GiB). :func:`incomplete_reason` says which case a
config is in; the planner refuses the first kind (exit 2) and warns on the second.
"""
from __future__ import annotations

from typing import Any

# method → groups of alternative keys, each group required (vLLM's get_from_keys)
REQUIRED_KEYS: dict[str, tuple[tuple[str, ...], ...]] = {
    "awq": (("w_bit", "bits"), ("q_group_size", "group_size"), ("zero_point",)),
    "awq_marlin": (("w_bit", "bits"), ("q_group_size", "group_size"), ("zero_point",)),
    "gptq": (("bits",), ("group_size",), ("desc_act",)),
    "gptq_marlin": (("bits",), ("group_size",), ("desc_act",), ("sym",)),
    "fp8": (("quant_method",), ("activation_scheme",)),
}
# prefix of the reason for a config vLLM loads, but unquantized (the planner warns, never refuses)
LOADS_UNQUANTIZED = "no config_groups"


def loads_unquantized(q: Any) -> bool:
    """True when vLLM loads this (incomplete) quantization config unquantized rather than refusing it."""
    return q is not None and bool(q.incomplete) and q.incomplete.startswith(LOADS_UNQUANTIZED)


def missing_keys(method: str, raw: dict[str, Any]) -> list[str] | None:
    """vLLM's error for the first required key group ``raw`` lacks, or None."""
    for keys in REQUIRED_KEYS.get(method, ()):
        if not any(k in raw and raw[k] is not None for k in keys):
            return list(keys)
    return None


def incomplete_reason(method: str, raw: dict[str, Any]) -> str | None:
    """Why vLLM cannot use ``raw`` as a ``method`` config (None when it can)."""
    keys = missing_keys(method, raw)
    if keys is not None:
        return f"Cannot find any of {keys} in the model's quantization config"
    if method == "compressed-tensors" and not raw.get("config_groups"):
        return (f"{LOADS_UNQUANTIZED}: vLLM maps no layer to a scheme and loads every linear layer "
                f"unquantized")
    if method == "modelopt":
        algo = str(raw.get("quant_algo") or "").upper()
        if "FP8" not in algo and "FP4" not in algo:
            return f"ModelOpt quant_algo {algo or 'missing'!s}: vLLM supports only FP8 / NVFP4 checkpoints"
    return None


def from_hf_quant_config(doc: Any) -> dict[str, Any] | None:
    """A ``hf_quant_config.json`` document as a ``quantization_config``-shaped dict (quant_method
    ``modelopt``), or None when it is not a ModelOpt file."""
    if not isinstance(doc, dict):
        return None
    q = doc.get("quantization", doc)
    if not isinstance(q, dict):
        return None
    out = dict(q)
    out["quant_method"] = "modelopt"
    return out
