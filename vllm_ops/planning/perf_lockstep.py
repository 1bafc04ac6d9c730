"""Data-parallel ranks of a MoE model step together: one home for that rule.

With ``--data-parallel-size`` N on a MoE model, every rank runs its own scheduler and KV cache, but the MoE
layers span all ranks (their tokens are gathered for the experts and scattered back), so no rank can start
the next step before the others finish this one: vLLM runs idle ranks on dummy batches and pads every rank to
the largest token count of the step (``vllm/v1/worker/dp_utils.py``, ``coordinate_batch_across_dp``). A
rank's step therefore lasts as long as the longest of the N ranks' steps: a decode step of one rank waits
out another rank's prefill chunk.

The performance model simulates one rank (``performance._data_parallel``). This module turns that rank's
step cost into the lock-step one: the expected longest of its own step and N - 1 steps drawn from its own
step times (the other ranks run the same load, independently: a first simulation of the rank records its
step times, a second runs with the lock-step cost). No fitted constant.
"""
from __future__ import annotations

import bisect

from vllm_ops.planning.perf_sim import StepFn


class LockStep:
    """``E[max(x, Y_1 .. Y_m)]`` for a step of ``x`` ms and ``m`` other ranks whose step times ``Y`` are drawn
    from ``trace`` ((ms per step, steps) pairs, weighted by steps)."""

    def __init__(self, trace: list[tuple[float, int]], others: int):
        weights: dict[float, float] = {}
        for ms, k in trace:
            if k > 0:
                weights[ms] = weights.get(ms, 0.0) + k
        total = sum(weights.values())
        self.values = sorted(weights)
        self.others = max(int(others), 0)
        cdf, acc = [], 0.0
        for v in self.values:
            acc += weights[v] / total
            cdf.append(min(acc, 1.0))
        # tail[j]: integral of P(longest other > t) dt from values[j] up (the CDF is flat between values)
        self.cdf = cdf
        self.tail = [0.0] * (len(self.values) + 1)
        for j in range(len(self.values) - 2, -1, -1):
            self.tail[j] = self.tail[j + 1] + (1.0 - cdf[j] ** self.others) * (self.values[j + 1] - self.values[j])

    def __call__(self, x: float) -> float:
        v = self.values
        if not v or not self.others:
            return x
        j = bisect.bisect_right(v, x) - 1
        if j < 0:
            return v[0] + self.tail[0]
        if j >= len(v) - 1:
            return x
        return x + (1.0 - self.cdf[j] ** self.others) * (v[j + 1] - x) + self.tail[j + 1]

    def wrap(self, step: StepFn) -> StepFn:
        """``step`` made lock-step."""
        def lockstep(n_dec: int, sum_ctx: float, n_pre: int = 0, pre_ctx: float = 0.0) -> float:
            return self(step(n_dec, sum_ctx, n_pre, pre_ctx))
        return lockstep


def ranks_step_together(moe_layers: int, dp: int) -> bool:
    """Whether ``dp`` data-parallel ranks step together: only when MoE layers span them (a dense model's
    ranks are independent engines)."""
    return dp > 1 and moe_layers > 0
