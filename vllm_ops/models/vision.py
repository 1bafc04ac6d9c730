"""The vision tower of a multimodal config: parameters and the encoder's sequence sizes (stdlib only).

Counted from ``vision_config`` module by module, for the towers vLLM serves in the catalog:

* ``siglip_vision_model`` (gemma-3): patch conv (+bias), learned positions, per layer two
  LayerNorms, q/k/v/o and fc1/fc2 with biases, a post LayerNorm; gemma-3's projector is an RMSNorm
  and a vision-hidden x text-hidden matrix. One image is (image_size/patch)^2 patches, pooled to
  ``mm_tokens_per_image`` language-model tokens (256).
* ``pixtral`` (mistral3): patch conv (no bias), RMSNorms, q/k/v/o and a gated MLP without biases;
  the projector merges ``spatial_merge_size``^2 patches (a hidden*s^2 x hidden matrix) then two
  linear layers. One image at ``image_size`` is (image_size/patch)^2 patches and
  (image_size/patch/s)^2 tokens plus one break token per row.
* ``mllama_vision_model`` (Llama-3.2-Vision): 4 tiles of (image_size/patch)^2 + 1 patches, a local
  transformer of ``num_hidden_layers`` and a gated global one of ``num_global_layers``, tile and
  gated position embeddings, a ``vision_output_dim`` x text-hidden projector.
* anything else: a plain ViT of the same widths (CLIP/llava-like), patches = tokens. A tower with
  no ``image_size`` (Qwen2-VL-style dynamic resolution: the largest image is the processor's
  ``max_pixels``, not in config.json) is marked ``sized=False``: its encoder profile is not modelled.

These are counts of the modules' shapes; where the index ``total_size`` is known it wins (the
spec notes the difference).
"""
from __future__ import annotations

from typing import Any

from vllm_ops.models.spec import Vision


def _i(cfg: dict, *keys: str, default: int = 0) -> int:
    for k in keys:
        v = cfg.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return default


def _vit_layer(h: int, i: int, *, bias: bool = True, gated: bool = False) -> int:
    attn = 4 * h * h + (4 * h if bias else 0)
    mlp = (3 * h * i) if gated else (2 * h * i + ((i + h) if bias else 0))
    norms = 2 * (2 * h if bias else h)
    return attn + mlp + norms


def vision_of(config: dict, text_hidden: int) -> Vision | None:
    """The vision tower of ``config`` (the top-level multimodal config), or None without one."""
    vc = config.get("vision_config")
    if not isinstance(vc, dict):
        return None
    kind = str(vc.get("model_type") or "vit")
    h = _i(vc, "hidden_size", "width", default=1024)
    inter = _i(vc, "intermediate_size", default=4 * h)
    layers = _i(vc, "num_hidden_layers", "depth", default=24)
    patch = _i(vc, "patch_size", default=14)
    size = _i(vc, "image_size", default=336)
    chans = _i(vc, "num_channels", default=3)
    side = max(size // patch, 1)
    patches = side * side
    if kind == "pixtral":
        s = _i(config, "spatial_merge_size", default=1)
        params = chans * patch * patch * h + h + layers * _vit_layer(h, inter, bias=False, gated=True)
        params += h + (h * s * s) * h + h * text_hidden + text_hidden * text_hidden
        tokens = (side // s) * (side // s + 1)
        return Vision(params, h, inter, layers, patches, tokens, kind)
    if kind == "mllama_vision_model":
        tiles = _i(vc, "max_num_tiles", default=4)
        glob = _i(vc, "num_global_layers", default=8)
        ratios = len(vc.get("supported_aspect_ratios") or []) + 1
        per_tile = patches + 1
        params = chans * patch * patch * h + h + per_tile * h + ratios * tiles * per_tile * h
        params += 2 * ratios * tiles * h + 4 * h                     # tile embeddings, pre/post norms
        params += (layers + glob) * _vit_layer(h, inter) + glob * 2
        params += _i(vc, "vision_output_dim", default=5 * h) * text_hidden + text_hidden
        return Vision(params, h, inter, layers + glob, tiles * per_tile, tiles * per_tile, kind)
    sized = isinstance(vc.get("image_size"), int)       # Qwen2-VL & co: dynamic resolution, no image_size
    params = chans * patch * patch * h + h + patches * h + layers * _vit_layer(h, inter) + 2 * h
    if kind.startswith("siglip") and "mm_tokens_per_image" in config:
        params += h + h * text_hidden                                # gemma-3 projector
        tokens = _i(config, "mm_tokens_per_image", default=256)
    else:
        params += h * text_hidden + text_hidden + text_hidden * text_hidden + text_hidden
        tokens = patches
    return Vision(params, h, inter, layers, patches, tokens, kind, sized)
