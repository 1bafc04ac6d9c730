"""Planning's front door: :func:`plan` (re-exported as ``vllm_ops.planning.plan``), what every
command calls.

One node (or the CPU build on one host): :func:`vllm_ops.planning.planner.plan_layout` searches
the GPUs as one pool. Several nodes: :func:`vllm_ops.planning.multinode.plan_multinode` chooses
how many nodes one replica spans, asks the planner for that layout and lays it out over the nodes
(one ``plan.nodes`` shape for plan, render and launch).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

from vllm_ops.hardware.inventory import Inventory
from vllm_ops.models.spec import ModelSpec
from vllm_ops.planning.multinode import DEFAULT_MASTER_PORT, plan_multinode
from vllm_ops.planning.plan import Plan
from vllm_ops.planning.planner import plan_layout
from vllm_ops.planning.versions import DEFAULT_VLLM_VERSION


def plan(model: ModelSpec, inventory: Inventory, *, pins: dict | None = None,
         vllm_version: str = DEFAULT_VLLM_VERSION, profile=None, extra_args: Iterable[str] = (),
         env: dict | None = None, served_name: str | None = None, port: int = 8000,
         env_secrets: Iterable[str] = (), backend: str | None = None, master_port: int | None = None,
         network_gbs: float | None = None) -> Plan:
    """Plan ``model`` on ``inventory``. ``env``/``extra_args`` may hold secrets (a name matching
    KEY|TOKEN|SECRET|PASSWORD, ``--api-key K``): only their names reach the plan
    (``plan.env_secrets``, with a warning), never the values; ``env_secrets`` adds names of
    secrets the caller passes to vLLM itself (launch).

    An inventory of more than one node is planned by :func:`plan_multinode`: ``backend``
    ``"ray"`` (default for GPUs) or ``"native"`` (vLLM's ``--nnodes/--node-rank/--master-addr/
    --master-port``; the only choice for CPU nodes), ``master_port`` (native; default 29500),
    ``network_gbs`` (per-node network bandwidth, for the ``inter-node-bandwidth`` warning). On
    one node these three are not used."""
    if len(inventory.nodes) > 1:
        cpu = (getattr(profile, "kind", "gpu") == "cpu") or inventory.gpu_count == 0
        return plan_multinode(
            model, inventory, pins=pins, vllm_version=vllm_version, profile=profile,
            backend=backend or ("native" if cpu else "ray"),
            master_port=DEFAULT_MASTER_PORT if master_port is None else master_port,
            extra_args=extra_args, env=env, served_name=served_name, port=port, network_gbs=network_gbs,
            env_secrets=env_secrets)
    return plan_layout(model, inventory, pins=pins, vllm_version=vllm_version, profile=profile,
                       extra_args=extra_args, env=env, served_name=served_name, port=port,
                       env_secrets=env_secrets)


def replanner(model: ModelSpec, inventory: Inventory, **kw: Any) -> Callable[[dict[str, Any]], Plan]:
    """A ``pins → Plan`` callable for the same request (launch's --auto-retry re-plans the flags it
    changed through it, so the library never calls back into the CLI)."""
    base = dict(kw.pop("pins", None) or {})

    def replan(pins: dict[str, Any]) -> Plan:
        return plan(model, inventory, pins={**base, **pins}, **kw)

    return replan


__all__ = ["plan", "replanner"]
