"""From KV-cache bytes to blocks, tokens and concurrency (vLLM ``vllm/v1/core/kv_cache_utils.py``).

Full-attention layers need ``ceil(max_model_len / block_size)`` blocks per request; sliding-window
layers (gemma-2/3, gpt-oss, Mistral-7B-v0.1) only ``ceil((window - 1 + max_num_batched_tokens) /
block_size) + 1``. With both kinds (the hybrid KV cache manager), layers are grouped into KV cache
groups of equal size (the smaller count, unless the larger is within 25 %), each group's block
holds ``block_size`` tokens of every layer of the group, and one pool of blocks serves all groups.
A model whose layers all slide can serve any length. vLLM reports the pool as
``num_blocks // number of groups x block_size`` tokens (``_report_kv_cache_config``) up to the
release the ``kv_tokens_report`` rule of planning/versions.py names, then as
``int(concurrency x max_model_len)``; that is ``kv_cache_tokens`` here; concurrency counts the blocks one request needs in every group. Mamba/SSM and linear-attention layers are
refused before this point (planning/coverage.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from vllm_ops.models.spec import ModelSpec

GiB = 1024**3


@dataclass(frozen=True)
class KVLayout:
    layer_bytes: float             # per token per layer on one TP rank
    full_layers: int
    sliding_layers: int
    per_token: int                 # all KV layers of the stage, full-attention equivalent
    blocks: int
    tokens: int                    # what vLLM prints as "GPU KV cache size" (version rule)
    pool_tokens: int               # tokens the pool holds when every group stores every token (short requests)
    concurrency: float
    need_one_gib: float            # one request at max_model_len
    max_len: int                   # the longest request the cache holds
    block_bytes: float = 0.0       # one block of every layer it spans (the pool's unit)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def kv_layer_bytes(model: ModelSpec, tp: int, elem_bytes: float) -> float:
    """KV bytes per token per layer on one TP rank (MLA: one latent, not split by TP)."""
    if model.mla is not None:
        return (model.mla.kv_lora_rank + model.mla.qk_rope_head_dim) * elem_bytes
    return 2 * max(1, model.num_kv_heads // tp) * model.head_dim * elem_bytes


def kv_groups(model: ModelSpec, pp: int, max_model_len: int) -> tuple[int, int]:
    """(full-attention layers, sliding-window layers) on the worst pipeline stage."""
    L = model.num_layers
    sliding = 0
    if model.sliding_window and model.sliding_window < max_model_len:
        if model.layer_types:
            sliding = sum(1 for t in model.layer_types if t.startswith("sliding") or t.startswith("chunked"))
        else:
            sliding = L
    attn_types = [t for t in (model.layer_types or ()) if "attention" in t or t.startswith("sliding")]
    attn_layers = len(attn_types) if model.layer_types and attn_types else L
    full = attn_layers - sliding
    return math.ceil(full / pp) if full else 0, math.ceil(sliding / pp) if sliding else 0


def kv_layout(model: ModelSpec, *, kv_gib: float, layer_bytes: float, pp: int, max_model_len: int,
              block_size: int, max_num_batched_tokens: int, tokens_report: str = "blocks_per_group",
              blocks_override: int | None = None) -> KVLayout:
    full_l, slide_l = kv_groups(model, pp, max_model_len)
    bs = block_size
    L_kv = full_l + slide_l
    page = layer_bytes * bs
    if full_l and slide_l:
        group_size = min(full_l, slide_l)
        if max(full_l, slide_l) < 1.25 * group_size:
            group_size = max(full_l, slide_l)
        n_full, n_slide = cdiv(full_l, group_size), cdiv(slide_l, group_size)
    else:
        group_size = L_kv
        n_full, n_slide = (1 if full_l else 0), (1 if slide_l else 0)
    blocks = max(int(kv_gib * GiB // (page * group_size)), 0) if kv_gib > 0 and page > 0 else 0
    if blocks_override:                    # --num-gpu-blocks-override: vLLM takes it whatever memory allows
        blocks, kv_gib = int(blocks_override), blocks_override * page * group_size / GiB
    full_blocks = cdiv(max_model_len, bs)
    sw = model.sliding_window or 0
    slide_blocks = cdiv(min(sw - 1 + max_num_batched_tokens, max_model_len), bs) + 1 if slide_l else 0
    per_req = n_full * full_blocks + n_slide * slide_blocks
    conc = blocks / per_req if per_req else 0.0
    pool_tokens = blocks // max(n_full + n_slide, 1) * bs
    # vLLM's "GPU KV cache size: N tokens" (the kv_tokens_report rule, planning/versions.py)
    tokens = int(conc * max_model_len) if tokens_report == "concurrency_x_len" else pool_tokens
    need_one = per_req * page * group_size / GiB
    if kv_gib <= 0 or page <= 0:
        max_len = 0
    elif slide_l and not full_l:
        max_len = model.max_position_embeddings
    else:
        max_len = max((blocks - n_slide * slide_blocks) // max(n_full, 1), 0) * bs
    return KVLayout(layer_bytes=layer_bytes, full_layers=full_l, sliding_layers=slide_l,
                    per_token=int(layer_bytes * L_kv), blocks=blocks, tokens=tokens, pool_tokens=pool_tokens, concurrency=conc,
                    need_one_gib=need_one, max_len=max_len, block_bytes=page * group_size)
