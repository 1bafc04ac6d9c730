"""The vision encoder's share of vLLM's profiling run (V1 engine), per GPU.

vLLM V1 ``GPUModelRunner.profile_run`` runs the multimodal encoder before the language model's
dummy forward: ``encoder_budget = max(max_num_batched_tokens, tokens of one item)`` (the encoder
compute budget and the encoder cache size are both ``max_num_batched_tokens`` by default, raised
to one item), ``items = encoder_budget // tokens per item`` (at most ``limit-mm-per-prompt`` x
``max_num_seqs``) dummy images of the largest size go through the tower in one batch, and their
outputs stay in the encoder cache through the language-model profile. So the torch peak is::

    max(encoder forward peak, language-model peak + encoder outputs)

``--limit-mm-per-prompt '{"image": 0}'`` (text only) skips the encoder profile.

The encoder forward peak is ESTIMATED, not fitted: per patch, the MLP's fc1 output and its
activation (2 x vision intermediate / TP) plus 4 hidden-size tensors, at the served dtype. The plan
says so with the ``encoder-profile-estimated`` warning. The V0 engine (< 0.8) profiles
``max_num_seqs`` dummy multimodal sequences instead (a public Llama-3.2-11B-Vision log: 36.63 GiB of
activations); that is not modelled (warning ``encoder-profile-not-modelled``), nor is a
dynamic-resolution tower (Qwen2-VL-style: the largest image is the processor's ``max_pixels``).
"""
from __future__ import annotations

from dataclasses import dataclass

from vllm_ops.models.spec import ModelSpec

GiB = 1024**3
ENCODER_HIDDEN_COPIES = 4          # hidden-size tensors live beside the MLP intermediates (estimate)


@dataclass(frozen=True)
class EncoderProfile:
    items: int = 0                 # dummy images in the profiling batch
    peak_gib: float = 0.0          # the encoder forward's peak
    outputs_gib: float = 0.0       # encoder outputs held through the language-model profile
    skipped: str = ""              # why there is no encoder profile ("" when there is one)
    modelled: bool = True


def encoder_profile(model: ModelSpec, *, tp: int, max_num_batched_tokens: int, max_num_seqs: int,
                    act_bytes: int, image_limit: int | None, engine: str) -> EncoderProfile:
    """The encoder profiling run of ``model`` (an empty profile for text-only models)."""
    v = model.vision
    if v is None:
        return EncoderProfile(skipped="no vision tower")
    if image_limit == 0:
        return EncoderProfile(skipped="--limit-mm-per-prompt image=0: text only, no encoder profile")
    if engine == "V0":
        return EncoderProfile(skipped="V0 engine", modelled=False)
    if not v.sized:
        return EncoderProfile(skipped="dynamic-resolution vision tower (largest image not in config.json)",
                              modelled=False)
    tokens = max(v.tokens_per_item, 1)
    budget = max(max_num_batched_tokens, tokens)
    items = max(budget // tokens, 1)
    if image_limit is not None:
        items = min(items, image_limit * max_num_seqs)
    per_patch = (2 * v.intermediate_size / tp + ENCODER_HIDDEN_COPIES * v.hidden_size) * act_bytes
    peak = items * v.patches_per_item * per_patch / GiB
    outputs = items * tokens * model.hidden_size * act_bytes / GiB
    return EncoderProfile(items=items, peak_gib=peak, outputs_gib=outputs)
