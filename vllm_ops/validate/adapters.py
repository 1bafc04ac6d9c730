"""Write a PEFT-format LoRA adapter sized for a served model, so ``vllm-ops validate`` can prove
LoRA works on a server when the user gave no ``--lora``.

Needs numpy and safetensors: the optional extra ``pip install 'vllm-ops[lora]'``. Without them
:func:`make_lora_adapter` raises ImportError and validate's LoRA check skips, naming the extra.
No torch and no peft: the adapter is two files, ``adapter_config.json`` and
``adapter_model.safetensors``, in the layout PEFT saves and vLLM loads.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["make_lora_adapter", "EXTRA", "DEFAULT_TARGETS"]

EXTRA = "lora"   # the pyproject extra that carries numpy and safetensors
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def _shapes(model_config: Mapping[str, Any]) -> tuple[int, dict[str, tuple[int, int]]]:
    """(layers, {module: (in_features, out_features)}) of a llama/qwen-like ``config.json``."""
    hidden = int(model_config["hidden_size"])
    heads = int(model_config["num_attention_heads"])
    kv_heads = int(model_config.get("num_key_value_heads") or heads)
    head_dim = int(model_config.get("head_dim") or hidden // heads)
    layers = int(model_config["num_hidden_layers"])
    return layers, {
        "q_proj": (hidden, heads * head_dim),
        "k_proj": (hidden, kv_heads * head_dim),
        "v_proj": (hidden, kv_heads * head_dim),
        "o_proj": (heads * head_dim, hidden),
    }


def make_lora_adapter(dir: str | os.PathLike, model_config: Mapping[str, Any], *, rank: int = 4,
                      alpha: int = 32, std: float = 0.5, seed: int = 0,
                      base_model_name: str = "base",
                      targets: Sequence[str] = DEFAULT_TARGETS) -> Path:
    """Write a PEFT-format LoRA adapter for a llama/qwen-like ``config.json`` dict; its path.

    Shapes follow the config: q_proj/o_proj use ``num_attention_heads * head_dim``, k_proj/v_proj
    ``num_key_value_heads * head_dim``; ``head_dim`` defaults to hidden / heads. lora_A and lora_B
    are both N(0, std²); with the defaults (and with ``targets=("q_proj", "v_proj")``) the
    adapter moves the served model's logprobs far beyond numerical noise. Different ``seed`` s
    give adapters that answer differently from each other.
    """
    import numpy as np
    from safetensors.numpy import save_file

    layers, shapes = _shapes(model_config)
    unknown = [t for t in targets if t not in shapes]
    if unknown:
        raise ValueError(f"unsupported LoRA target module(s) {unknown} (one of {sorted(shapes)})")
    rng = np.random.default_rng(seed)
    tensors: dict[str, Any] = {}
    for i in range(layers):
        for t in targets:
            fan_in, fan_out = shapes[t]
            prefix = f"base_model.model.model.layers.{i}.self_attn.{t}"
            tensors[f"{prefix}.lora_A.weight"] = (rng.standard_normal((rank, fan_in)) * std).astype(np.float32)
            tensors[f"{prefix}.lora_B.weight"] = (rng.standard_normal((fan_out, rank)) * std).astype(np.float32)
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model_name,
        "r": rank, "lora_alpha": alpha, "lora_dropout": 0.0, "bias": "none",
        "target_modules": list(targets), "fan_in_fan_out": False, "modules_to_save": None,
        "use_rslora": False, "use_dora": False, "inference_mode": True,
    }, indent=2) + "\n")
    return out
