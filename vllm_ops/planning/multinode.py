"""Plans that span several nodes: TP within a node, PP across nodes, DP replicas over node groups.

    plan_multinode(model, inventory, *, pins, vllm_version, profile=None, backend="ray"|"native",
                   master_port=29500, ...) -> Plan

The memory model is the single-node planner's (:func:`vllm_ops.planning.planner.plan_layout`, which calls
:func:`vllm_ops.planning.memory.estimate`): this module only chooses how many nodes one replica
spans and pins that layout (``tensor_parallel_size`` = GPUs per node, ``pipeline_parallel_size`` =
nodes per replica), then lays the result out over the nodes:

- ``plan.nodes``: one :class:`~vllm_ops.planning.plan.PlanNode` per node used (``rank`` is the
  node's rank inside its replica; rank 0 is the Ray head / vLLM's master and serves the API; ``env`` holds per-node additions: ``VLLM_HOST_IP`` = the
  node's address when known, and the CPU build's thread binding),
- ``plan.vllm_args``: ``distributed_executor_backend`` ``"ray"``, or for vLLM's native
  multi-node mode ``"mp"`` + ``nnodes``, ``node_rank`` (0: the head's command; every other node
  overrides it and adds ``--headless``), ``master_addr``, ``master_port``,
- ``plan.warnings``: ``inter-node-bandwidth`` whenever a replica's ranks talk over the network
  (and louder when tensor parallelism itself crosses nodes).

Pure: no I/O, no environment reads (like the planner).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Iterable

from vllm_ops.errors import BadInput, ImpossiblePin
from vllm_ops.hardware.inventory import Inventory, Node
from vllm_ops.models.spec import ModelSpec
from vllm_ops.planning.argv import command as command_of
from vllm_ops.planning.plan import Plan, PlanNode, PlanWarning, Replica
from vllm_ops.planning.pins import HEALTHY_CONCURRENCY, normalize_pins, valid_tps
from vllm_ops.planning.planner import plan_layout as plan_single
from vllm_ops.planning.versions import DEFAULT_VLLM_VERSION

BACKENDS = ("ray", "native")
DEFAULT_MASTER_PORT = 29500
# what a typical data-centre network gives one node, next to NVLink inside it (GB/s, one way)
TYPICAL_NETWORK_GBS = 50.0          # 400 Gb/s InfiniBand / RoCE NIC
_MULTINODE_KEYS = ("distributed_executor_backend", "nnodes", "node_rank", "master_addr", "master_port",
                   "headless")


def node_name(node: Node, i: int) -> str:
    return node.hostname or f"node{i}"


def _cpu(inventory: Inventory, profile: Any) -> bool:
    return (getattr(profile, "kind", "gpu") == "cpu") or inventory.gpu_count == 0


def _check_nodes(inventory: Inventory, cpu: bool) -> None:
    if not inventory.nodes:
        raise BadInput("the inventory has no nodes")
    if cpu:
        return
    first = inventory.nodes[0]
    sig0 = (len(first.gpus), first.gpus[0].budget_total_bytes if first.gpus else 0)
    for i, n in enumerate(inventory.nodes[1:], 1):
        sig = (len(n.gpus), n.gpus[0].budget_total_bytes if n.gpus else 0)
        if sig != sig0:
            raise BadInput(f"node {node_name(n, i)} has {sig[0]} GPU(s) of {sig[1] / 2**30:.1f} GiB but "
                           f"{node_name(first, 0)} has {sig0[0]} of {sig0[1] / 2**30:.1f} GiB",
                           hint="a multi-node replica needs the same GPUs on every node (vLLM gives every "
                                "rank the same share)")
    if not first.gpus:
        raise BadInput(f"node {node_name(first, 0)} has no GPUs")


def _healthy(p: Plan) -> bool:
    return p.fits and p.memory.max_concurrency >= HEALTHY_CONCURRENCY


def plan_multinode(model: ModelSpec, inventory: Inventory, *, pins: dict | None = None,
                   vllm_version: str = DEFAULT_VLLM_VERSION, profile: Any = None,
                   backend: str = "ray", master_port: int = DEFAULT_MASTER_PORT,
                   extra_args: Iterable[str] = (), env: dict | None = None,
                   served_name: str | None = None, port: int = 8000,
                   network_gbs: float | None = None, env_secrets: Iterable[str] = ()) -> Plan:
    """A Plan whose replicas may span several nodes (see the module doc).

    ``backend``: ``"ray"`` (vLLM's Ray executor; ``ray start`` on every node) or ``"native"``
    (vLLM's own multi-node mode: ``--nnodes/--node-rank/--master-addr/--master-port``, the mp
    executor). ``network_gbs``: the per-node network bandwidth, for the warning (default: a
    typical 400 Gb/s NIC).
    """
    if backend not in BACKENDS:
        raise BadInput(f"unknown multi-node backend {backend!r}", hint="one of: " + ", ".join(BACKENDS))
    if not 1 <= int(master_port) <= 65535:
        raise BadInput(f"master port {master_port} is not a TCP port")
    pins = normalize_pins(pins)
    cpu = _cpu(inventory, profile)
    _check_nodes(inventory, cpu)
    n_nodes = len(inventory.nodes)
    per_node = 1 if cpu else len(inventory.nodes[0].gpus)
    kw = dict(vllm_version=vllm_version, profile=profile, extra_args=tuple(extra_args), env=env,
              served_name=served_name, port=port, env_secrets=tuple(env_secrets))
    if cpu and backend == "ray":
        raise ImpossiblePin("vLLM's Ray executor does not run on the CPU build (vLLM: \"current platform cpu "
                            "does not support ray\")", hint="use backend native (--nnodes/--node-rank, mp "
                                                            "executor) for CPU nodes")

    tp_pin, pp_pin = pins.get("tensor_parallel_size"), pins.get("pipeline_parallel_size")
    why_layout = ""
    if cpu:
        # the CPU build: one rank per node, one pipeline stage per node
        pp = pp_pin or n_nodes
        if tp_pin and tp_pin != 1:
            raise ImpossiblePin(f"tensor parallel size {tp_pin} on CPU nodes: vllm-ops plans one rank per node")
        if pp > n_nodes:
            raise ImpossiblePin(f"pipeline parallel size {pp} needs {pp} CPU nodes; the inventory has {n_nodes}")
        cenv = dict(env or {})
        cenv.setdefault("VLLM_CPU_OMP_THREADS_BIND", "auto")   # per node below, not the single-box split
        base = plan_single(model, inventory, pins={**pins, "tensor_parallel_size": 1,
                                                   "pipeline_parallel_size": pp}, **{**kw, "env": cenv})
        tp, span = 1, pp
        why_layout = f"{pp}: one pipeline stage per CPU node"
    elif tp_pin or pp_pin:
        base = plan_single(model, inventory, pins=pins, **kw)
        tp = int(base.vllm_args["tensor_parallel_size"])
        pp = int(base.vllm_args["pipeline_parallel_size"])
        span = max(1, math.ceil(tp * pp / per_node))
        if span > n_nodes:
            raise ImpossiblePin(f"TP {tp} x PP {pp} = {tp * pp} GPUs needs {span} nodes of {per_node} GPUs; "
                                f"the inventory has {n_nodes}")
        if span > 1 and (tp * pp) % span:
            raise ImpossiblePin(f"TP {tp} x PP {pp} = {tp * pp} GPUs do not split evenly over {span} nodes",
                                hint="vLLM needs the same number of ranks on every node")
        why_layout = "pinned"
    else:
        base, tp, pp, span, why_layout = _choose(model, inventory, per_node, n_nodes, pins, kw)

    return _lay_out(base, inventory, tp=tp, pp=pp, span=span, cpu=cpu, backend=backend,
                    master_port=int(master_port), port=port, why_layout=why_layout, pins=pins,
                    network_gbs=network_gbs, extra_args=list(extra_args))


def _choose(model, inventory, per_node, n_nodes, pins, kw) -> tuple[Plan, int, int, int, str]:
    """Fewest nodes per replica that fit with a healthy KV cache (else the fewest that fit)."""
    one = Inventory(nodes=inventory.nodes[:1], source=inventory.source, spec=inventory.spec,
                    interconnect_override=inventory.interconnect_override)
    single = plan_single(model, one, pins=pins, **kw)
    if single.fits and int(single.vllm_args.get("pipeline_parallel_size", 1)) == 1:
        tp = int(single.vllm_args["tensor_parallel_size"])
        full = plan_single(model, inventory, pins={**pins, "tensor_parallel_size": tp}, **kw)
        return full, tp, 1, 1, f"1: one replica fits on one node (TP {tp})"
    tps = valid_tps(model, per_node)
    tp = max(tps) if tps else 1
    first_fit: tuple[Plan, int] | None = None
    last: tuple[Plan, int] | None = None
    for span in range(2, n_nodes + 1):
        pp = span * per_node // tp if per_node % tp == 0 else span
        try:
            cand = plan_single(model, inventory, pins={**pins, "tensor_parallel_size": tp,
                                                       "pipeline_parallel_size": pp}, **kw)
        except ImpossiblePin:
            continue
        last = (cand, span)
        if _healthy(cand):
            return cand, tp, pp, span, (f"{span}: the fewest nodes per replica with a healthy KV cache "
                                        f"(>= {HEALTHY_CONCURRENCY} full-length sequences: "
                                        f"{cand.memory.max_concurrency:.1f}x)")
        if cand.fits and first_fit is None:
            first_fit = (cand, span)
    pick = first_fit or last
    if pick is None:
        raise ImpossiblePin(f"no valid layout of {model.id} over {n_nodes} node(s) of {per_node} GPU(s)",
                            hint=f"valid tensor parallel sizes: {tps}")
    cand, span = pick
    pp = int(cand.vllm_args["pipeline_parallel_size"])
    why = (f"{span}: the fewest nodes per replica that fit ({cand.memory.max_concurrency:.1f}x at "
           f"{cand.vllm_args.get('max_model_len')} tokens)" if cand.fits else
           f"{span}: every node; it still does not fit ({cand.failure_stage})")
    return cand, tp, pp, span, why


def _lay_out(base: Plan, inventory: Inventory, *, tp: int, pp: int, span: int, cpu: bool, backend: str,
             master_port: int, port: int, why_layout: str, pins: dict, network_gbs: float | None,
             extra_args: list[str]) -> Plan:
    n_nodes = len(inventory.nodes)
    reasons = dict(base.reasons)
    warnings = [w for w in base.warnings if w.code != "tp-over-pcie" or span == 1]
    if span == 1:
        return _within_nodes(base, inventory, reasons, warnings, why_layout)
    ranks_per_node = tp * pp // span
    groups = n_nodes // span
    if groups < 1:
        raise ImpossiblePin(f"one replica needs {span} nodes; the inventory has {n_nodes}")
    nodes, replicas, master_addr = _node_groups(inventory, groups=groups, span=span, cpu=cpu,
                                                ranks_per_node=ranks_per_node, port=port)
    env = dict(base.env)
    if cpu:
        for nd in nodes:
            # one pipeline rank per node: all of that node's cores (the test bed overrides per node)
            nd.env["VLLM_CPU_OMP_THREADS_BIND"] = "auto"
        env.pop("VLLM_CPU_OMP_THREADS_BIND", None)
        reasons.pop("VLLM_CPU_OMP_THREADS_BIND", None)
    vargs = {k: v for k, v in base.vllm_args.items() if k not in _MULTINODE_KEYS}
    vargs["tensor_parallel_size"] = tp
    vargs["pipeline_parallel_size"] = pp
    reasons["distributed_executor_backend"] = _executor_args(vargs, backend, span=span, master_addr=master_addr,
                                                             master_port=master_port)
    reasons["tensor_parallel_size"] = (f"{tp} (pinned)" if "tensor_parallel_size" in pins else
                                       f"{tp}: the GPUs of one node (tensor parallelism stays inside a node)"
                                       if not cpu else "1 (CPU nodes)")
    reasons["pipeline_parallel_size"] = (f"{pp} (pinned)" if "pipeline_parallel_size" in pins else
                                         f"{pp}: one pipeline stage per node ({span} nodes per replica)")
    reasons["nodes_per_replica"] = why_layout
    unused = n_nodes - groups * span
    reasons["replicas"] = (f"{groups}: {n_nodes} node(s) / {span} per replica"
                           + (f"; {unused} node(s) left unused" if unused else "")
                           + (" = separate servers behind a load balancer" if groups > 1 else ""))
    warnings.append(_network_warning(inventory, tp=tp, span=span, cpu=cpu, ranks_per_node=ranks_per_node,
                                     network_gbs=network_gbs))
    out = replace(base, nodes=nodes, replicas=replicas, vllm_args=vargs, env=env, reasons=reasons,
                  warnings=warnings)
    out.command = command_of(out)          # rank 0's: the same argv render and launch use
    return out


def _within_nodes(base: Plan, inventory: Inventory, reasons: dict, warnings: list, why_layout: str) -> Plan:
    """Replicas within nodes: the single-node planner already spread them; the nodes are only named."""
    n_nodes = len(inventory.nodes)
    replicas = list(base.replicas)
    nodes: list[PlanNode] = []
    for i, nd in enumerate(inventory.nodes):
        ids = [g for r in replicas if r.node in (None, node_name(nd, i)) for g in r.gpu_ids] \
            if n_nodes > 1 else [g.index for g in nd.gpus]
        nodes.append(PlanNode(name=node_name(nd, i), address=nd.address, rank=0, replica=None,
                              head=True, gpu_ids=sorted(set(ids))))
    reasons["nodes_per_replica"] = why_layout
    return replace(base, nodes=nodes, reasons=reasons, warnings=warnings)


def _node_groups(inventory: Inventory, *, groups: int, span: int, cpu: bool, ranks_per_node: int,
                 port: int) -> tuple[list[PlanNode], list[Replica], str]:
    """The nodes of each replica (``span`` consecutive ones, rank 0 first), the replicas, and rank 0's address of
    the first replica (the master address)."""
    nodes: list[PlanNode] = []
    replicas: list[Replica] = []
    master_addr = ""
    for g in range(groups):
        members = inventory.nodes[g * span:(g + 1) * span]
        head = members[0]
        head_addr = head.address or node_name(head, g * span)
        for r, nd in enumerate(members):
            i = g * span + r
            ids = [] if cpu else [x.index for x in nd.gpus][:ranks_per_node]
            # vLLM finds its own address by routing towards a public IP; on hosts without a default
            # route that gives 0.0.0.0 and the ranks never meet: say it when the address is known
            nenv = {"VLLM_HOST_IP": nd.address} if nd.address else {}
            nodes.append(PlanNode(name=node_name(nd, i), address=nd.address, rank=r, replica=g,
                                  head=r == 0, gpu_ids=ids, env=nenv, head_address=head_addr))
        replicas.append(Replica(gpu_ids=[] if cpu else [x.index for x in head.gpus][:ranks_per_node],
                                port=port + g, node=node_name(head, g * span)))
        if g == 0:
            master_addr = head_addr
    return nodes, replicas, master_addr


def _executor_args(vargs: dict[str, Any], backend: str, *, span: int, master_addr: str, master_port: int) -> str:
    """Set the distributed executor's flags in ``vargs``; the reason for the choice."""
    if backend == "ray":
        vargs["distributed_executor_backend"] = "ray"
        return ("ray: vLLM's Ray executor places the ranks on the Ray cluster (`ray start --head` on rank 0, "
                "`ray start --address` on the others)")
    vargs["distributed_executor_backend"] = "mp"
    vargs["nnodes"] = span
    vargs["node_rank"] = 0
    vargs["master_addr"] = master_addr
    vargs["master_port"] = master_port
    return (f"mp with vLLM's native multi-node mode: the same command on every node with --nnodes {span} "
            f"--node-rank R --master-addr {master_addr} --master-port {master_port}; ranks > 0 add --headless")


def _network_warning(inventory: Inventory, *, tp: int, span: int, cpu: bool, ranks_per_node: int,
                     network_gbs: float | None) -> PlanWarning:
    """What crossing the network costs the replica: every all-reduce (TP across nodes) or the pipeline hand-offs."""
    net = network_gbs or TYPICAL_NETWORK_GBS
    per_node = 1 if cpu else len(inventory.nodes[0].gpus)
    gtype_bw = None
    if not cpu:
        try:
            from vllm_ops.hardware import catalog

            g0 = inventory.nodes[0].gpus[0]
            gt = catalog.lookup(g0.catalog_key) if g0.catalog_key else None
            gtype_bw = gt.nvlink_gbs if gt else None
        except Exception:  # noqa: BLE001 - raw-size GPUs have no catalog entry
            gtype_bw = None
    inside = f" (NVLink inside a node: ~{gtype_bw:.0f} GB/s per GPU)" if gtype_bw else ""
    if ranks_per_node < tp:
        return PlanWarning(
            "inter-node-bandwidth",
            f"tensor parallel size {tp} spans {math.ceil(tp / ranks_per_node)} nodes: every layer's all-reduce "
            f"crosses the network (~{net:.0f} GB/s per node{inside}); expect decoding several times slower — "
            f"keep TP within a node ({per_node} GPUs) and use pipeline parallelism across nodes")
    return PlanWarning(
        "inter-node-bandwidth",
        f"each replica spans {span} nodes: the {span - 1} pipeline hand-off(s) per step cross the network "
        f"(~{net:.0f} GB/s per node{inside}); use RDMA (InfiniBand/RoCE) with NCCL and keep the nodes on "
        f"one switch; replicas that fit on fewer nodes are faster when you have the memory")


def node_args(plan: Plan, node: PlanNode) -> dict[str, Any]:
    """The vLLM flags (underscore names) one node of a native multi-node plan runs with:
    the plan's, with its own ``node_rank`` and ``headless`` on ranks > 0."""
    va = dict(plan.vllm_args or {})
    if "nnodes" not in va:
        return va
    rank = int(node.rank or 0)
    va["node_rank"] = rank
    if node.head_address:
        va["master_addr"] = node.head_address          # the head of this node's replica
    if rank > 0:
        va["headless"] = True
    return va


__all__ = ["BACKENDS", "DEFAULT_MASTER_PORT", "node_args", "node_name", "plan_multinode"]
