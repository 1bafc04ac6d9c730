"""Fitted efficiencies of the performance model, with the data they were fitted on.

Refit with ``python benchmarks/perf_model_accuracy.py --fit`` (it prints the constants and the
held-out errors). Data: ``vllm_ops/data/perf/vllm-perf-public.csv`` (NVIDIA aiconfigurator
silicon_sample.csv vLLM rows; see the README beside it).
"""
from __future__ import annotations

from vllm_ops.planning.perf_step import Efficiency

EFFICIENCY = Efficiency(bw=0.8, flops=0.6, step_ms=1.5, layer_us=20.0, allreduce_us=15.0, request_ms=15.0, eager_layer_us=10.0, flops_fp8=0.7,
                        moe_eff=1.0)
FITTED_ON = "initial guesses (not fitted yet)"
# requests that start together drift apart in a real server (client timing, tokenizer, HTTP): modelled as
# output lengths spread uniformly over +-OSL_JITTER around the mean (an assumption, not fitted)
OSL_JITTER = 0.1


def notes() -> list[str]:
    e = EFFICIENCY
    return [f"fitted efficiencies: {e.bw:.2f} of HBM bandwidth, {e.flops:.2f} of dense FLOP/s "
            f"(MoE kernels x{e.moe_eff:.2f}), {e.step_ms:.2f} ms per step, {e.layer_us:.1f} us per layer outside "
            f"CUDA graphs, {e.allreduce_us:.1f} us per all-reduce, {e.request_ms:.1f} ms per request; "
            f"fitted on {FITTED_ON}"]
