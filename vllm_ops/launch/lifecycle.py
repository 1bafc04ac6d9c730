"""Launch's front door: start and stop deployments of every topology, companions included.

    topology_mode(plan, backend, node_rank=, node_flags=) -> "single" | "native" | "ray" | "ray-worker"
    start(plan, opts, Topology(...), progress) -> LaunchResult | Started
    stop(dep, store, backend=None, grace=20) -> bool             (and its worker ranks / Ray nodes)
    find_targets(store, name=None, all=False) -> StopTargets     (deployments, marker orphans, lone Ray nodes)
    stop_targets(targets, store, grace) -> list[str]             (one line per thing stopped)

Topologies: one server (process, docker, compose: :func:`vllm_ops.launch.launcher.launch`), vLLM's
native multi-node mode (:mod:`.multinode`: worker ranks first, then rank 0), Ray (:mod:`.ray_backend`:
start or join the cluster, then vLLM on it) and a Ray worker node joining a cluster. The
launcher starts one server and waits; it knows nothing of these orchestrators. The CLI commands
(``launch``, ``stop``) only parse flags, call these and print.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from vllm_ops.errors import BadInput, MalformedFile, RuntimeFailure
from vllm_ops.launch import procs
from vllm_ops.launch import ray_backend as rb
from vllm_ops.launch.backend import LaunchBackend, backend_for
from vllm_ops.launch.launcher import LaunchOptions, deployment_name, launch
from vllm_ops.launch.multinode import NativeLaunch, is_rank_of, launch_native, worker_names
from vllm_ops.launch.state import Deployment, StateStore, check_name
from vllm_ops.output import warn

Progress = Callable[[str, str], None]


@dataclass
class Topology:
    """How the plan's ranks reach their nodes (``vllm-ops launch`` flags)."""
    mode: str = "single"                                   # single | native | ray | ray-worker
    node_rank: int | None = None                           # start only this rank (one node of a cluster)
    node_prefix: dict[int, Sequence[str]] = field(default_factory=dict)   # rank → command prefix
    node_env: dict[int, dict[str, str]] = field(default_factory=dict)     # rank → extra environment
    master_addr: str | None = None
    master_port: int | None = None
    ray_address: str | None = None                         # join this Ray cluster (else start a head)
    ray_port: int = 6379
    ray_node_ip: str | None = None
    ray_num_cpus: int | None = None
    ray_num_gpus: int | None = None
    ray_temp_dir: str | None = None


@dataclass
class Started:
    """A node that runs no API server: a headless worker rank or a Ray worker node."""
    name: str
    role: str                                              # "worker" | "ray-worker"
    what: str
    deployment: Deployment | None = None
    workers: list[str] = field(default_factory=list)


def topology_mode(plan: Any, backend: str, *, node_rank: int | None = None, node_flags: bool = False) -> str:
    """single | native | ray | ray-worker: what ``plan`` needs with launch backend ``backend``;
    BadInput when the plan and the backend or node flags contradict each other."""
    va = plan.vllm_args or {}
    multi = int(va.get("nnodes") or 0) >= 2
    if backend == "ray":
        return "ray-worker" if (node_rank or 0) > 0 else "ray"
    if str(va.get("distributed_executor_backend") or "") == "ray":
        raise BadInput("the plan uses vLLM's Ray executor: launch it with --backend ray "
                       "(--ray-address HOST:PORT to use a running cluster)")
    if multi:
        if backend != "process":
            raise BadInput(f"the plan is a native multi-node plan (nnodes {va.get('nnodes')}); "
                           f"--backend {backend} runs one server",
                           hint="launch it with the default backend (vLLM's native multi-node mode)")
        return "native"
    if node_flags or node_rank is not None:
        raise BadInput("--node-rank/--node-exec/--node-env/--master-* need a multi-node plan",
                       hint="plan several nodes with --nodes ADDR,ADDR (or a saved multi-node --plan)")
    return "single"


def start(plan: Any, opts: LaunchOptions, topo: Topology, progress: Progress | None = None):
    """Start ``plan``: a LaunchResult once rank 0 / the server is ready, or :class:`Started` for a
    node without an API server."""
    if topo.mode == "single":
        return launch(plan, opts, progress)
    name = deployment_name(plan, opts)
    opts.name = name
    if topo.mode in ("ray", "ray-worker"):
        return _start_ray(plan, opts, topo, name, progress)
    if opts.auto_retry:
        warn("--auto-retry is off for native multi-node launches: a change to rank 0's flags "
             "would not reach the other ranks")
        opts.auto_retry = False
    nl = NativeLaunch(node_prefix={r: list(p) for r, p in topo.node_prefix.items()}, node_env=topo.node_env,
                      master_addr=topo.master_addr, master_port=topo.master_port, this_rank=topo.node_rank)
    res = launch_native(plan, nl, opts, progress)
    if res.head is None:
        w = res.workers[0] if res.workers else None
        return Started(name, "worker", f"rank {topo.node_rank} of {name} started (headless, pid "
                                       f"{w.pid if w else '?'}, log {w.log_path if w else '?'})",
                       deployment=w, workers=[x.name for x in res.workers])
    return res.head


def _start_ray(plan: Any, opts: LaunchOptions, topo: Topology, name: str, progress: Progress | None):
    if topo.mode == "ray-worker":
        address = topo.ray_address or _ray_head_address(plan, topo.ray_port)
        node = rb.join(address, _node_options(topo, opts, f"{name}.ray"))
        rb.ClusterStore(opts.store).save(name, [node], address=address)
        return Started(name, "ray-worker", f"this node (rank {topo.node_rank}) joined the Ray cluster "
                                           f"at {address} (pgid {node.pgid})")
    head = None if topo.ray_address else _node_options(topo, opts, f"{name}.ray-head")
    ray = rb.RayLaunch(python=opts.vllm.python or sys.executable, address=topo.ray_address,
                       head=head, cluster_name=name)
    return rb.launch_ray(plan, ray, opts, progress).launch


def _node_options(topo: Topology, opts: LaunchOptions, log_name: str) -> rb.RayNodeOptions:
    return rb.RayNodeOptions(ray=rb.find_ray(opts.vllm.python), node_ip=topo.ray_node_ip, port=topo.ray_port,
                             num_cpus=topo.ray_num_cpus, num_gpus=topo.ray_num_gpus,
                             temp_dir=topo.ray_temp_dir, log_path=opts.store.logs / f"{log_name}.log")


def _ray_head_address(plan: Any, ray_port: int) -> str:
    nodes = [n for n in (plan.nodes or []) if n.head or n.rank == 0]
    addr = nodes[0].address if nodes else None
    if not addr:
        raise BadInput("--node-rank R > 0 with --backend ray joins a Ray cluster: give --ray-address HEAD:PORT")
    return f"{addr}:{ray_port}"


# ------------------------------------------------------------------------------------ stop
def stop(dep: Deployment, store: StateStore, backend: LaunchBackend | None = None,
         grace: float = 20.0) -> bool:
    """Stop a deployment and what vllm-ops started with it, and mark it stopped. True if
    something had to be killed (SIGKILL / a container killed after the grace period).

    The backend defaults to the one the deployment records (:func:`backend_for`). With it go:
    a native multi-node deployment's worker ranks (``<name>-rank<R>``, their state files
    removed) and the Ray nodes a ``--backend ray`` launch started (``ray/<name>.json``; a
    cluster it only joined is left alone)."""
    return _stop(dep, store, backend, grace).killed


def stop_companions(name: str, store: StateStore, grace: float = 20.0) -> bool:
    """Stop the worker ranks and Ray nodes recorded under deployment ``name`` (see :func:`stop`)."""
    return _stop_companions(name, store, grace).killed


@dataclass(frozen=True)
class _Stopped:
    killed: bool                   # something needed SIGKILL / a container was killed
    workers: list[str]             # the worker ranks' state names stopped with it
    ray_nodes: list[Any]           # the Ray nodes it started (rb.RayNode)


def _stop(dep: Deployment, store: StateStore, backend: LaunchBackend | None, grace: float) -> _Stopped:
    backend = backend or backend_for(dep.backend)
    killed = bool(backend.stop(dep, grace))
    dep.status = "stopped"
    store.save(dep)
    companions = _stop_companions(dep.name, store, grace)
    return _Stopped(companions.killed or killed, companions.workers, companions.ray_nodes)


def _stop_companions(name: str, store: StateStore, grace: float) -> _Stopped:
    killed = False
    workers = worker_names(store, name)
    for wname in workers:
        try:
            w = store.load(wname)
        except (KeyError, MalformedFile):
            store.remove(wname)
            continue
        killed = bool(backend_for(w.backend).stop(w, grace)) or killed
        store.remove(wname)
    nodes = rb.stop_cluster(name, store, grace=min(grace, 15.0)) if rb.ClusterStore(store).load(name) else []
    return _Stopped(killed, workers, nodes)


@dataclass
class StopTargets:
    deployments: list[Deployment] = field(default_factory=list)
    orphans: list[procs.MarkedGroup] = field(default_factory=list)   # our marker, no usable state file
    lone_clusters: list[str] = field(default_factory=list)           # Ray nodes without a deployment
    notes: list[str] = field(default_factory=list)                   # warnings for the caller to print


def _usable(store: StateStore, name: str):
    """(deployment to stop through or None, warning/error line or None, the MalformedFile or None).

    A well-formed file: (dep, None, None). A partly corrupted one whose pid/pgid/ticks/backend/
    container ids are valid: (minimal view, warning naming the broken fields, None). No file:
    (None, None, None). Nothing usable: (None, error line, the error)."""
    try:
        dep, broken = store.load_for_stop(name)
    except KeyError:
        return None, None, None
    except MalformedFile as exc:
        return None, exc.one_line(), exc
    if broken:
        return dep, (f"{name}: state file partly corrupted (broken: {', '.join(broken)}); stopping through "
                     f"its valid pid/pgid/start ticks"), None
    return dep, None, None


def find_targets(store: StateStore, name: str | None = None, all: bool = False) -> StopTargets:
    """What ``vllm-ops stop [NAME | --all]`` stops (see commands/stop.py)."""
    if all:
        return _all_targets(store)
    clusters, t = rb.ClusterStore(store), StopTargets()
    if name is None:
        names = store.names()
        if len(names) > 1:
            raise RuntimeFailure("name a deployment", hint=", ".join(names))
        if names:
            name = names[0]
        elif len(clusters.names()) == 1:
            t.lone_clusters = clusters.names()
            return t
        else:
            found = sorted({g.name for g in procs.marked_groups(store.root)})
            if len(found) != 1:
                raise RuntimeFailure("name a deployment" if found else "no deployments",
                                     hint=(", ".join(found) + " (orphaned: no state)") if found else None)
            name = found[0]
    check_name(name)
    dep, problem, error = _usable(store, name)
    if dep is not None:
        t.notes += [problem] if problem else []
        t.deployments = [dep]
    elif name not in store.names() and clusters.load(name):
        t.lone_clusters = [name]
    else:
        t.orphans = [g for g in procs.marked_groups(store.root) if g.name == name or is_rank_of(name, g.name)]
        if not t.orphans:
            if error is not None:
                raise error
            raise RuntimeFailure(f"no deployment named {name}", hint="`vllm-ops status` lists them")
        if error is not None:
            t.notes.append(f"{name}: {problem}; stopping the processes that carry its {procs.MARKER} marker")
            store.remove(name)
    return t


def _all_targets(store: StateStore) -> StopTargets:
    t = StopTargets()
    for name in store.names():
        dep, problem, error = _usable(store, name)
        if dep is not None:
            t.notes += [problem] if problem else []
            t.deployments.append(dep)
        elif error is not None:
            t.notes.append(f"{name}: {problem}; removing its state file")
            store.remove(name)
    named = {d.name for d in t.deployments}
    t.orphans = [g for g in procs.marked_groups(store.root) if g.name not in named]
    t.lone_clusters = [n for n in rb.ClusterStore(store).names() if n not in named]
    return t


def stop_targets(t: StopTargets, store: StateStore, grace: float = 20.0) -> list[str]:
    """Stop everything in ``t``; one line per deployment, orphan group or Ray cluster stopped."""
    lines: list[str] = []
    # a worker rank goes with its rank 0 (stop_companions): stop heads first, skip ranks already gone
    for dep in sorted(t.deployments, key=lambda d: d.backend == "native-worker"):
        if dep.backend == "native-worker" and dep.name not in store.names():
            continue
        done = _stop(dep, store, backend_for(dep.backend), grace)
        store.remove(dep.name)
        what = f"pid {dep.pid}" if dep.pid else f"{dep.backend} container removed"
        more = (f", {len(done.workers)} worker rank(s)" if done.workers else "") + \
               (f", {len(done.ray_nodes)} Ray node(s) it started" if done.ray_nodes else "")
        lines.append(f"stopped {dep.name} ({what}{more}{', SIGKILL needed' if done.killed else ''})")
    for g in t.orphans:
        killed = procs.stop_marked(g, grace=grace)
        store.remove(g.name)
        what = f"process group {g.pgid}" if g.leader_ticks is not None else \
            f"{len(g.members)} process(es) of group {g.pgid}, its leader gone"
        lines.append(f"stopped {g.name} (orphaned, no usable state: {what}, found by its {procs.MARKER} marker"
                     f"{', SIGKILL needed' if killed else ''})")
    for name in t.lone_clusters:
        nodes = rb.stop_cluster(name, store, grace=min(grace, 15.0))
        lines.append(f"stopped {name} ({len(nodes)} Ray node(s) vllm-ops started)")
    return lines


__all__ = ["Started", "StopTargets", "Topology", "find_targets", "start", "stop", "stop_companions",
           "stop_targets", "topology_mode"]
