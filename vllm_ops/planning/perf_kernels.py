"""Which MoE kernel vLLM runs, where the performance model costs kernels differently: one home for the rule.

Block-FP8 (128x128) MoE layers on Hopper run one of two grouped GEMMs:

* Triton's fused MoE (vLLM 0.25 for tensor parallelism): reads the experts some token routed to, as
  :class:`~vllm_ops.planning.perf_step.StepCost` costs every MoE layer.
* DeepGEMM's contiguous grouped GEMM (vLLM 0.12's default wherever DeepGEMM is installed, and
  ``--moe-backend deep_gemm`` on 0.25): its rows are padded to 128 per local expert. vLLM 0.12 sizes the padding
  for every local expert whatever the batch (``compute_aligned_M``: tokens x top-k + local experts x 127), so a
  decode step of 4 requests costs about what one of 16 does; 0.25 pads only as many experts as there are routed
  rows (``min(tokens x top-k, local experts)``). Measured on 1x H200 with vLLM 0.25.0 and ``--moe-backend
  deep_gemm`` (``tests/data/gpu-runs/h200x1/deepgemm/``): the step grows with the padded rows (one GPU's share of
  Qwen3-235B-A22B-FP8 at TP 2: 11.6 / 18.8 / 42.1 ms per token at 1 / 4 / 16 requests, 1024 / 4096 / 16384 rows;
  8.8 / 13.2 / 25.8 predicted for Triton).

The version table (planning/versions.py ``fp8_block_moe_hopper``) says which a release runs by default;
``--env VLLM_MOE_USE_DEEP_GEMM=0`` (or ``VLLM_USE_DEEP_GEMM=0``) and ``-- --moe-backend X`` override it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vllm_ops.models.spec import ModelSpec

PAD_ROWS = 128          # DeepGEMM's M alignment on Hopper (get_m_alignment_for_contiguous_layout)
_DEEP_GEMM_NAMES = {"deep_gemm", "deepgemm"}
DEEP_GEMM_MOE_OFF = ("VLLM_MOE_USE_DEEP_GEMM", "0")   # the variable that puts vLLM's MoE back on Triton's fused MoE
DEEP_GEMM_ENV = ("VLLM_USE_DEEP_GEMM", DEEP_GEMM_MOE_OFF[0])   # either, set to 0, turns DeepGEMM's MoE off


@dataclass(frozen=True)
class MoEPadding:
    mode: str                      # "" (no padding: Triton) | "all" (every local expert) | "routed" (0.25's cap)
    local_experts: int = 0         # routed experts one GPU holds
    note: str = ""                 # what the plan says about the choice ("" when there is nothing to say)


def block_fp8_moe(spec: "ModelSpec") -> bool:
    """A MoE model whose checkpoint is block-quantized FP8 (``weight_block_size`` in its quantization config)."""
    q = spec.quantization
    return spec.moe is not None and q is not None and str(q.method).lower() == "fp8" \
        and bool((q.raw or {}).get("weight_block_size"))


def expert_parallel(extra_args) -> bool:
    """``--enable-expert-parallel`` among the flags passed through to vLLM."""
    return any(str(a).startswith("--enable-expert-parallel") for a in extra_args or ())


def _moe_backend(extra_args) -> str:
    """``--moe-backend``'s value among the flags passed through to vLLM, normalised ("" when not given)."""
    from vllm_ops.planning.argv import value_of

    return (value_of([str(a) for a in extra_args or ()], "--moe-backend") or "").lower().replace("-", "_")


def kernel_chosen(env: dict[str, str], extra_args) -> bool:
    """Whether the deployment chose the MoE kernel itself: a DeepGEMM variable set (to anything) or ``--moe-backend``."""
    return any(k in env for k in DEEP_GEMM_ENV) or bool(_moe_backend(extra_args))


def moe_padding(*, spec: "ModelSpec", version: str, compute_capability: Any, tp: int, dp: int, ep: bool,
                extra_args: list[str], env: dict[str, str]) -> MoEPadding:
    """The MoE grouped GEMM's row padding for this deployment (see the module doc)."""
    from vllm_ops.planning.versions import rules_for

    if not block_fp8_moe(spec) or tuple(compute_capability or ())[:2] != (9, 0):
        return MoEPadding("")
    assert spec.moe is not None
    local = spec.moe.num_experts // (tp * dp) if ep else spec.moe.num_experts
    rule = rules_for(version)["fp8_block_moe_hopper"]
    backend = _moe_backend(extra_args)
    off = [k for k in DEEP_GEMM_ENV if str(env.get(k, "")).strip() == "0"]
    if backend and backend not in _DEEP_GEMM_NAMES:
        return MoEPadding("", local, f"--moe-backend {backend}: costed as Triton's fused MoE")
    if off and not backend:
        return MoEPadding("", local, f"{off[0]}=0: vLLM runs Triton's fused MoE (costed so)")
    if backend:
        mode = "all" if rule == "deep_gemm_padded" else "routed"
        return MoEPadding(mode, local, _note(mode, local, f"--moe-backend {backend}"))
    if rule == "deep_gemm_padded":
        if tp == 8:
            return MoEPadding("", local, "vLLM turns DeepGEMM's MoE off at TP 8 (PR #29346): Triton's fused MoE")
        return MoEPadding("all", local, _note("all", local, f"vLLM {version}'s default where DeepGEMM is installed, "
                                                             "as in its Docker image; --env VLLM_MOE_USE_DEEP_GEMM=0 "
                                                             "turns it off"))
    if rule == "unchecked":
        return MoEPadding("", local, f"vLLM {version}: which kernel runs block-FP8 MoE on Hopper is not checked for "
                                     "0.14-0.24 (costed as Triton's fused MoE, as measured on 0.25)")
    return MoEPadding("", local)


def _note(mode: str, local: int, why: str) -> str:
    from vllm_ops.planning import perf_fit

    if mode == "all":
        rows = f"{local} local experts x {PAD_ROWS - 1} padding rows per MoE layer at every batch size"
        cost = (f"each costed as a row at {perf_fit.MOE_PAD_ALL_FLOPS:.2f} of the FP8 peak within the GEMMs' compute, + "
                f"{perf_fit.MOE_PAD_ALL_LAYER_US:g} us per MoE layer (fitted on 8 levels of 2 models run with "
                "--moe-backend deep_gemm on 1x H200, vLLM 0.25.0; vLLM 0.12's public rows are their test)")
    else:
        rows = f"{PAD_ROWS - 1} padding rows per expert a token routes to"
        cost = (f"their time added at {perf_fit.MOE_PAD_FLOPS:.2f} of the FP8 peak, + {perf_fit.MOE_PAD_LAYER_US:g} us "
                "per MoE layer (fitted on 8 levels of 2 models on 1x H200, vLLM 0.25.0; held out on 2 runs on 1x H100)")
    return f"MoE layers on DeepGEMM's grouped GEMM ({why}): {rows}, {cost}"


def padded_rows(mode: str, routed: float, local: int) -> float:
    """Rows one MoE layer's grouped GEMM runs for ``routed`` token-expert rows (rounded up to whole 128-row blocks)."""
    if not mode:
        return routed
    pad = (PAD_ROWS - 1) * (local if mode == "all" else min(routed, local))
    return -(-(routed + pad) // PAD_ROWS) * PAD_ROWS
