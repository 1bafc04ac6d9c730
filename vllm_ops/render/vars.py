"""Template variables computed from a :class:`~vllm_ops.planning.plan.Plan`.

Every decision and every number is made here (or in the planner), never in a template: the
templates only lay fields out and quote them. The vLLM argument list comes from
:func:`vllm_ops.planning.argv.serve_args`, the one place it is built (the plan's ``command`` too).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any

from vllm_ops.errors import BadInput
from vllm_ops.planning.argv import (  # noqa: F401  (serve_args & co. re-exported for render's users)
    NATIVE_KEYS, OPEN_HOSTS, arg_lines, bind_host, check_text, drop, model_target, serve_args, served_name,
)
from vllm_ops.planning.argv import nonneg_int as _int
from vllm_ops.planning.multinode import node_args
from vllm_ops.planning.plan import PlanNode, is_secret_name, pinned_image

# --- fixed deployment settings (not from the plan, but never written into a template) --------
SECRET_ENV = ("HF_TOKEN", "VLLM_API_KEY")          # names only; values live in the env file
SECRET_NAME = "vllm-secrets"                       # Kubernetes Secret holding SECRET_ENV
HEALTH_PATH = "/health"
HEALTH_INTERVAL_S = 30
HEALTH_TIMEOUT_S = 5
HEALTH_RETRIES = 5
PROBE_PERIOD_S = 10
LIVENESS_PERIOD_S = 30
PROBE_FAILURES = 3
RAY_PORT = 6379
RAY_WAIT_S = 600                                   # how long the Ray head waits for its workers
RAY_POLL_S = 5
DEFAULT_MASTER_PORT = 29500                        # vLLM's native multi-node default --master-port
POD_IFNAME = "eth0"                                # a pod's network interface with most CNIs
NET_ENV = ("VLLM_HOST_IP", "GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")
RESTART_SEC = 10
STOP_TIMEOUT_S = 60
NOFILE = 65536
CPU_SHM = "4g"                                     # vllm-cpu containers: --shm-size
HF_CACHE_CONTAINER = "/root/.cache/huggingface"
VLLM_CACHE_CONTAINER = "/root/.cache/vllm"
ENV_FILE_NAME = "vllm.env"
SYSTEMD_ENV_FILE = "/etc/vllm/vllm.env"
LB_IMAGE = "nginx:1.27-alpine"
LB_WORKER_CONNECTIONS = 4096
LB_KEEPALIVE = 64
LB_MAX_BODY = "64m"
LB_READ_TIMEOUT_S = 3600
CPU_ENTRY = ("python", "-m", "vllm.entrypoints.openai.api_server")
# start period: the port opens after download + load + profile + KV allocation + compile/graphs
START_BASE_S = 180
START_S_PER_GIB = 20
START_MAX_S = 3600

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ReplicaVars:
    index: int
    name: str                                  # service / unit name: "vllm" or "vllm-0"
    gpu_ids: tuple[int, ...]
    cuda_visible_devices: str                  # "0,1"
    device_ids: tuple[str, ...]                # compose device_ids ("0", "1")
    port: int
    node: str | None
    argv: tuple[str, ...]                      # what follows `vllm serve` (model first)
    module_argv: tuple[str, ...]               # what follows `python -m ...api_server` (--model M ...)

    @property
    def argv_lines(self) -> tuple[tuple[str, ...], ...]:
        return arg_lines(self.argv)

    @property
    def module_argv_lines(self) -> tuple[tuple[str, ...], ...]:
        return arg_lines(self.module_argv)


@dataclass(frozen=True)
class NodeVars:
    """One node of a multi-node replica, as its start script needs it."""
    file: str                                  # "node-1.sh" ("replica-1-node-0.sh" with several replicas)
    name: str                                  # the plan's node name ("node1", a hostname)
    replica: int
    rank: int | None                           # None: from $LWS_WORKER_INDEX (LeaderWorkerSet workers)
    headless: bool                             # ranks > 0: workers only, no API server
    master_addr: str                           # rank 0 of this node's replica
    port: int                                  # the replica's API port (rank 0)
    argv: tuple[str, ...]                      # what follows `vllm serve`, without the native multi-node flags
    env: tuple[tuple[str, str], ...]           # the plan's per-node env (without the network variables)
    host_ip: str                               # VLLM_HOST_IP default ("" = the user sets it)
    gloo_ifname: str                           # GLOO_SOCKET_IFNAME default ("" = the user sets it)
    nccl_ifname: str                           # NCCL_SOCKET_IFNAME default ("" = the user sets it)
    lws: bool = False                          # inside a LeaderWorkerSet pod (rank/master from LWS_* env)

    @property
    def argv_lines(self) -> tuple[tuple[str, ...], ...]:
        return arg_lines(self.argv)


@dataclass(frozen=True)
class RenderVars:
    app: str                                   # DNS-1123 name, e.g. "vllm-qwen2-5-coder-7b-instruct"
    model_id: str
    served_name: str
    model_path: str | None                     # a local model directory, mounted read-only
    image: str
    vllm_version: str
    cpu: bool
    env: tuple[tuple[str, str], ...]           # non-secret environment, sorted
    secret_env: tuple[str, ...]                # SECRET_ENV + plan.env_secrets (names only)
    open_bind: bool                            # vLLM listens on all interfaces (no --host, or 0.0.0.0/::)
    replicas: tuple[ReplicaVars, ...]
    gpus_per_replica: int
    lb_port: int                               # the one port clients use (replica 0's)
    start_period_s: int
    startup_failures: int                      # k8s startupProbe failureThreshold
    pvc_size_gi: int
    pvc_access_mode: str
    multinode: bool                            # one replica spans several nodes (Ray, LeaderWorkerSet)
    spread: bool                               # replicas on different nodes, each within one node
    nnodes: int                                # nodes per replica (Ray / LeaderWorkerSet group size)
    gpus_per_node: int
    head_address: str                          # Ray head (plan.nodes[0] address) or ""
    backend: str                               # multi-node path: "ray" or "native" ("" on one node)
    master_port: int                           # native: rank 0's torch.distributed port
    nodes: tuple[NodeVars, ...]                # native: one per node of every replica
    lws_leader: NodeVars | None                # native LeaderWorkerSet: the leader's and the workers' script vars
    lws_worker: NodeVars | None
    ray_head: NodeVars | None                  # Ray scripts: the network defaults of the head / of a worker
    ray_worker: NodeVars | None
    k8s_net_env: tuple[tuple[str, str], ...]   # LeaderWorkerSet pods: GLOO/NCCL_SOCKET_IFNAME unless the plan sets them
    ray_argv: tuple[str, ...]                  # replica 0's argv with the Ray executor forced
    exec_prefix: tuple[str, ...]               # ("vllm", "serve") or CPU_ENTRY
    description: str
    consts: dict[str, Any] = field(default_factory=dict)

    @property
    def ray_argv_lines(self) -> tuple[tuple[str, ...], ...]:
        return arg_lines(self.ray_argv)


# ----------------------------------------------------------------------------------------------
def open_bind_note(where: str = "") -> str:
    """The one warning about a server open to the network without an API key."""
    return (f"{where}vLLM listens on all interfaces (no --host, or 0.0.0.0): without VLLM_API_KEY anyone who "
            f"can reach the port can use it; set VLLM_API_KEY (env file) or bind with `-- --host 127.0.0.1`")


def dns_name(text: str, prefix: str = "vllm") -> str:
    """A DNS-1123 label (≤ 63 chars) from a model id: "Qwen/Qwen2.5-7B" → "vllm-qwen2-5-7b"."""
    base = text.rstrip("/").split("/")[-1].lower()
    base = re.sub(r"[^a-z0-9]+", "-", base).strip("-")
    name = f"{prefix}-{base}" if base else prefix
    return name[:63].rstrip("-")


def _start_period(plan, gpus_per_replica: int) -> int:
    weights = float(getattr(plan.memory, "weights_gib", 0.0) or 0.0) * max(gpus_per_replica, 1)
    s = START_BASE_S + START_S_PER_GIB * weights
    return int(min(START_MAX_S, math.ceil(s / 30) * 30))


def _env(plan, cpu: bool) -> tuple[tuple[str, str], ...]:
    out: dict[str, str] = {}
    for k, v in (plan.env or {}).items():
        k = check_text(k, "environment variable name")
        if not _ENV_NAME_RE.match(k):
            raise BadInput(f"plan: env name {k!r} is not a valid environment variable name")
        if is_secret_name(k):
            raise BadInput(f"plan: env.{k} is a secret; it belongs in the env file ({ENV_FILE_NAME}), never in a rendered file",
                           hint="a plan lists secret names in env_secrets, never values")
        out[k] = check_text(v, f"environment variable {k}")
    if cpu:
        out.setdefault("VLLM_TARGET_DEVICE", "cpu")
    return tuple(sorted(out.items()))


def _secret_env(plan) -> tuple[str, ...]:
    """The secret names the env file lists: the usual two, then those the plan expects."""
    names = list(SECRET_ENV)
    for n in getattr(plan, "env_secrets", None) or ():
        n = check_text(n, "secret name")
        if not _ENV_NAME_RE.match(n):
            raise BadInput(f"plan: env_secrets name {n!r} is not a valid environment variable name")
        if n not in names:
            names.append(n)
    return tuple(names)


def _parallel(plan) -> tuple[int, int]:
    va = plan.vllm_args or {}
    tp = _int(va.get("tensor_parallel_size", 1) or 1, "tensor_parallel_size")
    pp = _int(va.get("pipeline_parallel_size", 1) or 1, "pipeline_parallel_size")
    return tp, pp


def _node_env(node: PlanNode | None) -> tuple[tuple[tuple[str, str], ...], dict[str, str]]:
    """(plain per-node env, the network variables) of one plan node."""
    plain: dict[str, str] = {}
    net: dict[str, str] = {}
    for k, val in ((node.env if node else None) or {}).items():
        k = check_text(k, "node environment variable name")
        if not _ENV_NAME_RE.match(k) or is_secret_name(k):
            raise BadInput(f"plan: node env name {k!r} is not a plain environment variable name")
        (net if k in NET_ENV else plain)[k] = check_text(val, f"node environment variable {k}")
    return tuple(sorted(plain.items())), net


def _net_defaults(plan, node: PlanNode | None, *, address: bool) -> dict[str, str]:
    """VLLM_HOST_IP / GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME defaults for one node's script: the
    node's own env, then the plan's env, then (VLLM_HOST_IP) the node's address."""
    _, net = _node_env(node)
    out = {k: net.get(k) or str((plan.env or {}).get(k) or "") for k in NET_ENV}
    if address and not out["VLLM_HOST_IP"] and node is not None and node.address:
        out["VLLM_HOST_IP"] = check_text(node.address, "node address")
    return {k: check_text(v, k) for k, v in out.items()}


def _native_vars(plan, spanning: list[PlanNode], nnodes: int, cpu: bool):
    """NodeVars for vLLM's native multi-node mode: every node's script, and the LWS pair."""
    va = plan.vllm_args or {}
    several = len({n.replica for n in spanning}) > 1
    no_native = {k: None for k in NATIVE_KEYS}
    out = []
    for n in spanning:
        g = _int(n.replica or 0, "node replica")
        rank = _int(n.rank or 0, "node rank")
        rep = plan.replicas[g] if g < len(plan.replicas) else plan.replicas[0]
        argv = serve_args(plan, rep, overrides=no_native)
        if rank > 0:
            argv = drop(argv, ["--port"])
        plain, _ = _node_env(n)
        net = _net_defaults(plan, n, address=True)
        master = node_args(plan, n).get("master_addr") or va.get("master_addr") or ""
        out.append(NodeVars(
            file=(f"replica-{g}-node-{rank}.sh" if several else f"node-{rank}.sh"),
            name=check_text(n.name or n.address or f"rank {rank}", "node name"), replica=g,
            rank=rank, headless=rank > 0, master_addr=check_text(master, "master address"),
            port=_int(rep.port, "replica port"), argv=tuple(argv), env=plain,
            host_ip=net["VLLM_HOST_IP"], gloo_ifname=net["GLOO_SOCKET_IFNAME"],
            nccl_ifname="" if cpu else net["NCCL_SOCKET_IFNAME"]))
    if not out:
        return (), None, None
    head = out[0]
    plan_net = _net_defaults(plan, None, address=False)
    lws = dict(host_ip="", gloo_ifname=plan_net["GLOO_SOCKET_IFNAME"],
               nccl_ifname="" if cpu else plan_net["NCCL_SOCKET_IFNAME"], env=(), lws=True, replica=0)
    leader = replace(head, file="lws-leader.sh", name="The LeaderWorkerSet leader", **lws)
    worker_argv = next((o.argv for o in out if o.headless), tuple(drop(head.argv, ["--port"])))
    worker = replace(head, file="lws-worker.sh", name="A LeaderWorkerSet worker", rank=None, headless=True,
                     argv=worker_argv, **lws)
    return tuple(out), leader, worker


def _ray_node_vars(plan, spanning: list) -> tuple[NodeVars, NodeVars]:
    """The Ray head's and a Ray worker's variables (network interfaces; the head's own address when known)."""
    hn = spanning[0] if spanning else None
    hnet = _net_defaults(plan, hn, address=True) if hn else _net_defaults(plan, None, address=False)
    wnet = _net_defaults(plan, None, address=False)
    base = dict(file="", replica=0, master_addr="", port=0, argv=(), env=(), lws=False, headless=False)
    head = NodeVars(name="the Ray head", rank=0, host_ip=hnet["VLLM_HOST_IP"],
                    gloo_ifname=hnet["GLOO_SOCKET_IFNAME"], nccl_ifname=hnet["NCCL_SOCKET_IFNAME"], **base)
    worker = NodeVars(name="a Ray worker", rank=None, host_ip="", gloo_ifname=wnet["GLOO_SOCKET_IFNAME"],
                      nccl_ifname=wnet["NCCL_SOCKET_IFNAME"], **base)
    return head, worker


def _replica_vars(plan, *, check_gpus: bool, world: int) -> list[ReplicaVars]:
    """Each replica's variables; with ``check_gpus``, a replica whose GPU list is not TP × PP long is refused."""
    single = len(plan.replicas) == 1
    out = []
    for i, r in enumerate(plan.replicas):
        ids = tuple(_int(g, "GPU id") for g in (r.gpu_ids or ()))
        if check_gpus and ids and len(ids) != world:
            raise BadInput(f"plan: replica {i} has {len(ids)} GPUs but TP × PP = {world}")
        out.append(ReplicaVars(
            index=i, name="vllm" if single else f"vllm-{i}", gpu_ids=ids,
            cuda_visible_devices=",".join(map(str, ids)), device_ids=tuple(map(str, ids)),
            port=_int(r.port, "replica port"), node=(check_text(r.node, "node") if r.node else None),
            argv=tuple(serve_args(plan, r)), module_argv=tuple(serve_args(plan, r, model_flag=True)),
        ))
    return out


def build_vars(plan) -> RenderVars:
    if not plan.replicas:
        raise BadInput("plan: no replicas to render")
    cpu = plan.cpu
    tp, pp = _parallel(plan)
    world = tp * pp
    nodes = list(plan.nodes or [])
    va = plan.vllm_args or {}
    spanning = [n for n in nodes if n.replica is not None]
    multinode = bool(spanning)
    first = [n for n in spanning if (n.replica or 0) == 0] or spanning
    nnodes = (_int(va.get("nnodes"), "nnodes") if va.get("nnodes") else len(first)) if multinode else 1
    head_node = next((n for n in first if not n.rank), first[0]) if multinode else (nodes[0] if nodes else None)
    head = ""
    if head_node is not None:
        head = str((head_node.head_address if multinode else None) or head_node.address or head_node.name or "")
    if multinode and world % nnodes:
        raise BadInput(f"plan: {world} GPUs per replica (TP {tp} × PP {pp}) do not split over {nnodes} nodes")
    spread = len({r.node for r in plan.replicas if r.node}) > 1 and not multinode
    gpus_per_node = 0 if cpu else world // nnodes
    backend = ("native" if va.get("nnodes") else "ray") if multinode else ""
    if backend == "native" and str(va.get("distributed_executor_backend") or "mp") != "mp":
        raise BadInput("plan: vllm_args.nnodes (vLLM's native multi-node mode) needs --distributed-executor-backend "
                       f"mp, not {va.get('distributed_executor_backend')}")
    master_port = _int(va.get("master_port") or DEFAULT_MASTER_PORT, "master_port")
    native_nodes, lws_leader, lws_worker = (_native_vars(plan, spanning, nnodes, cpu)
                                            if backend == "native" else ((), None, None))
    ray_head, ray_worker = _ray_node_vars(plan, spanning) if multinode else (None, None)
    plan_env_names = {k for k in (plan.env or {})}
    k8s_net_env = tuple((k, POD_IFNAME) for k in NET_ENV[1:] if k not in plan_env_names
                        and not (cpu and k == "NCCL_SOCKET_IFNAME")) if multinode else ()
    single = len(plan.replicas) == 1
    replicas = _replica_vars(plan, check_gpus=not cpu and not multinode, world=world)
    ports = [r.port for r in replicas]
    if len(set(ports)) != len(ports) and not multinode and not spread:
        raise BadInput(f"plan: replicas share a port ({ports})")
    # the Ray executor: vLLM refuses --nnodes > 1 with it, so the native flags go
    pp_over = {"distributed_executor_backend": "ray", "pipeline_parallel_size": pp,
               **{k: None for k in NATIVE_KEYS}}
    start = _start_period(plan, world)
    m = plan.model or {}
    path = m.get("path")
    weights_total = float(getattr(plan.memory, "weights_gib", 0.0) or 0.0) * max(world, 1)
    served = served_name(plan)
    gpus_txt = "CPU (vllm-cpu)" if cpu else f"{world} GPU{'s' if world != 1 else ''} per replica"
    return RenderVars(
        app=dns_name(str(m.get("id") or model_target(plan))),
        model_id=check_text(m.get("id") or model_target(plan), "model name"),
        served_name=served,
        model_path=check_text(path, "model path") if path else None,
        image=pinned_image(plan),
        vllm_version=check_text(plan.vllm_version or "", "vllm_version"),
        cpu=cpu,
        env=_env(plan, cpu),
        secret_env=_secret_env(plan),
        open_bind=bind_host(plan) in OPEN_HOSTS,
        replicas=tuple(replicas),
        gpus_per_replica=0 if cpu else world,
        lb_port=replicas[0].port,
        start_period_s=start,
        startup_failures=math.ceil(start / PROBE_PERIOD_S),
        pvc_size_gi=int(math.ceil(weights_total * 1.5 + 10)),
        pvc_access_mode="ReadWriteOnce" if single and not multinode else "ReadWriteMany",
        multinode=multinode,
        spread=spread,
        nnodes=nnodes,
        gpus_per_node=gpus_per_node,
        head_address=check_text(head, "head node address"),
        backend=backend,
        master_port=master_port,
        nodes=native_nodes,
        lws_leader=lws_leader,
        lws_worker=lws_worker,
        ray_head=ray_head,
        ray_worker=ray_worker,
        k8s_net_env=k8s_net_env,
        ray_argv=tuple(serve_args(plan, plan.replicas[0], overrides=pp_over)),
        exec_prefix=CPU_ENTRY if cpu else ("vllm", "serve"),
        description=f"vLLM {served} ({gpus_txt}, {len(replicas)} replica{'s' if len(replicas) != 1 else ''})",
        consts={k: v for k, v in globals().items() if k.isupper() and not k.startswith("_")},
    )
