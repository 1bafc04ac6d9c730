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
"""
from __future__ import annotations

from vllm_ops.errors import BadInput
from vllm_ops.models.quant import loads_unquantized
from vllm_ops.models.spec import ModelSpec


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
