"""Planning: vLLM's memory model and the planner.

    plan(model, inventory, *, pins, vllm_version, profile=None, extra_args=(), env={},
         served_name=None, port=8000) -> Plan                   (the front door: planning/front.py)
    estimate(model, total_bytes, Flags, rules) -> Estimate      (one layout's per-GPU memory)
    rules_for(version) -> VersionRules                          (the one table of version rules)
"""
from __future__ import annotations

from vllm_ops.planning.memory import Estimate, Flags, estimate
from vllm_ops.planning.plan import Memory, Plan, PlanWarning, Replica
from vllm_ops.planning.front import plan, replanner
from vllm_ops.planning.versions import DEFAULT_VLLM_VERSION, rules_for

__all__ = ["DEFAULT_VLLM_VERSION", "Estimate", "Flags", "Memory", "Plan", "PlanWarning", "Replica",
           "estimate", "plan", "replanner", "rules_for"]
