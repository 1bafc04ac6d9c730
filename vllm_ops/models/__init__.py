"""Model facts: a name or directory → :class:`ModelSpec` (config.json from a local dir, the HF
cache, the bundled offline catalog or the Hub), with exact parameter count and weight bytes.

Public API::

    spec_from_config(config, *, model_id, source="config", index_total_size=None) -> ModelSpec
    load_model_spec(name_or_path, *, offline=None) -> ModelSpec
    catalog.list_models() -> list[str]

Stdlib/json only at import time (httpx is imported inside the Hub fetch).
"""
from __future__ import annotations

from vllm_ops.models.config import spec_from_config
from vllm_ops.models.spec import MLA, ModelSpec, MoE, Quantization


def load_model_spec(name_or_path: str, *, offline: bool | None = None, prefer_hub: bool | None = None):
    """Resolve ``name_or_path`` and return its :class:`ModelSpec` (see :mod:`vllm_ops.models.resolve`)."""
    from vllm_ops.models.resolve import load_model_spec as _load

    return _load(name_or_path, offline=offline, prefer_hub=prefer_hub)


__all__ = ["MLA", "ModelSpec", "MoE", "Quantization", "load_model_spec", "spec_from_config"]
