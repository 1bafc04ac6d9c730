"""`vllm-ops launch --backend ray`: start or join a Ray cluster, check it holds what the plan
needs, then start vLLM with ``--distributed-executor-backend ray``.

    start_head(RayNodeOptions(...)) -> RayNode          `ray start --head` (its own session)
    join(address, RayNodeOptions(...)) -> RayNode       `ray start --address A`
    cluster_resources(address, python=...) -> ClusterResources    Ray's own view (ray.nodes())
    requirement(plan) -> Requirement                    what one replica asks Ray for
    check_resources(plan, resources, address) -> None   raises NotEnoughResources (one line)
    launch_ray(plan, RayLaunch(...), progress) -> RayLaunchResult
    stop_nodes(nodes) / nodes_status(nodes)             only the Ray nodes vllm-ops started

Nothing of vLLM starts before the resource check passes. Ray's own ``ray stop`` is not used to
stop a cluster: it kills every Ray process of the host by name (``ray/scripts/scripts.py``
``kill_procs`` walks ``psutil.process_iter``), including Ray nodes vllm-ops did not start.
``ray start`` leaves its daemons (gcs_server, raylet, dashboard agent, ...) in the session it
was started in, so vllm-ops starts it in a new session and stops exactly that process group.

Ray nodes are recorded under the state directory (``ray/<cluster>.json``) so `status` and `stop`
work from another shell.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from vllm_ops.errors import BadInput, RuntimeFailure
from vllm_ops.launch import procs
from vllm_ops.launch.backend import PrefixedProcessBackend
from vllm_ops.launch.diagnosis import Context, Diagnosis, diagnose
from vllm_ops.launch.launcher import launch
from vllm_ops.launch.state import StateStore, check_name, write_atomic

DEFAULT_RAY_PORT = 6379
RAY_START_TIMEOUT_S = 120.0
PROBE_TIMEOUT_S = 90.0

# prints Ray's own view of the cluster as one JSON line (run by the cluster's Python)
_PROBE = (
    "import json, sys, ray\n"
    "ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False)\n"
    "nodes = [{'ip': n.get('NodeManagerAddress'), 'alive': bool(n.get('Alive')),\n"
    "          'resources': n.get('Resources') or {}} for n in ray.nodes()]\n"
    "print('VLLM_OPS_RAY ' + json.dumps({'total': ray.cluster_resources(), 'nodes': nodes}))\n"
    "ray.shutdown()\n"
)


class NotEnoughResources(RuntimeFailure):
    """The Ray cluster holds less than the plan needs (raised before vLLM starts)."""


# ------------------------------------------------------------------------------ Ray nodes
@dataclass
class RayNodeOptions:
    ray: str                                  # the `ray` executable (beside vLLM's Python)
    node_ip: str | None = None                # --node-ip-address
    port: int = DEFAULT_RAY_PORT              # head only
    num_cpus: int | None = None
    num_gpus: int | None = None
    object_store_memory: int | None = None    # bytes
    temp_dir: str | None = None               # --temp-dir (one per node when nodes share a host)
    prefix: Sequence[str] = ()                # run it elsewhere: ("ssh", "host") / ("ip", "netns", "exec", "ns")
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    timeout: float = RAY_START_TIMEOUT_S
    extra: Sequence[str] = ()


@dataclass
class RayNode:
    """One Ray node vllm-ops started (its daemons are the process group ``pgid``)."""
    role: str                                 # "head" | "worker"
    address: str                              # head: "ip:port"; worker: the head it joined
    node_ip: str | None
    pgid: int
    pid_start_ticks: int | None
    temp_dir: str | None
    log_path: str | None
    prefix: list[str] = field(default_factory=list)
    started_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RayNode":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def find_ray(python: str | None = None) -> str:
    """The `ray` script beside vLLM's interpreter (so the cluster and vLLM share one Ray), else
    `ray` on PATH."""
    import shutil

    if python:
        cand = Path(python).with_name("ray")
        if cand.exists():
            return str(cand)
    found = shutil.which("ray")
    if not found:
        raise RuntimeFailure("Ray is not installed: no `ray` beside vLLM's Python nor on PATH",
                             hint="pip install ray into vLLM's environment")
    return found


def _start_argv(opts: RayNodeOptions, head: bool, address: str | None) -> list[str]:
    argv = [opts.ray, "start"]
    if head:
        argv += ["--head", f"--port={opts.port}", "--include-dashboard=false"]
    else:
        argv += [f"--address={address}"]
    if opts.node_ip:
        argv.append(f"--node-ip-address={opts.node_ip}")
    if opts.num_cpus is not None:
        argv.append(f"--num-cpus={int(opts.num_cpus)}")
    if opts.num_gpus is not None:
        argv.append(f"--num-gpus={int(opts.num_gpus)}")
    if opts.object_store_memory:
        argv.append(f"--object-store-memory={int(opts.object_store_memory)}")
    if opts.temp_dir:
        argv.append(f"--temp-dir={opts.temp_dir}")
    argv.append("--disable-usage-stats")
    return [*opts.prefix, *argv, *opts.extra]


def _ray_start(opts: RayNodeOptions, head: bool, address: str | None) -> RayNode:
    argv = _start_argv(opts, head, address)
    env = {**os.environ, **opts.env, "RAY_USAGE_STATS_ENABLED": "0"}
    log_path = opts.log_path
    if log_path:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        if log_path:
            out.write(f"=== vllm-ops: {shlex.join(argv)}\n".encode())
            out.flush()
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True, close_fds=True)
        except OSError as exc:
            raise RuntimeFailure(f"cannot run `ray start` ({argv[0]}): {exc.strerror}") from exc
        ticks = procs.start_ticks(proc.pid)
        try:
            code = proc.wait(opts.timeout)
        except subprocess.TimeoutExpired:
            procs.stop_group(proc.pid, 5.0)
            raise RuntimeFailure(f"`ray start` did not finish within {opts.timeout:.0f} s",
                                 hint=f"log: {log_path}" if log_path else None) from None
    finally:
        if log_path:
            out.close()
    node = RayNode(role="head" if head else "worker",
                   address=f"{opts.node_ip or '127.0.0.1'}:{opts.port}" if head else str(address),
                   node_ip=opts.node_ip, pgid=proc.pid, pid_start_ticks=ticks, temp_dir=opts.temp_dir,
                   log_path=str(log_path) if log_path else None, prefix=list(opts.prefix),
                   started_at=time.time())
    if code != 0:
        stop_nodes([node], grace=5.0)
        raise RuntimeFailure(f"`ray start{' --head' if head else ''}` failed (exit status {code}): "
                             f"{_last_error(log_path)}", hint=f"log: {log_path}" if log_path else None)
    return node


def _last_error(log_path: Path | None) -> str:
    if not log_path:
        return "see its output"
    try:
        lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "see its log"
    for ln in reversed(lines):
        if re.search(r"error|failed|exception|refused|unable", ln, re.I):
            return ln[:200]
    return lines[-1][:200] if lines else "no output"


def start_head(opts: RayNodeOptions) -> RayNode:
    """`ray start --head` in a new session; returns once Ray says it runs."""
    return _ray_start(opts, True, None)


def join(address: str, opts: RayNodeOptions) -> RayNode:
    """`ray start --address ADDRESS` (a worker node) in a new session."""
    if not re.match(r"^[\w.\-\[\]:]+:\d+$", address or ""):
        raise BadInput(f"Ray address {address!r} is not HOST:PORT")
    return _ray_start(opts, False, address)


def node_alive(node: RayNode) -> bool:
    return bool(procs.group_members(node.pgid)) and (
        node.pid_start_ticks is None or not procs.alive(node.pgid)
        or procs.alive(node.pgid, node.pid_start_ticks))


def stop_nodes(nodes: Sequence[RayNode], grace: float = 15.0) -> list[int]:
    """Stop the process groups of the Ray nodes vllm-ops started (workers first). Returns the
    pgids that needed SIGKILL."""
    killed = []
    for node in sorted(nodes, key=lambda n: n.role == "head"):
        if procs.group_members(node.pgid) and procs.stop_group(node.pgid, grace):
            killed.append(node.pgid)
    return killed


def nodes_status(nodes: Sequence[RayNode]) -> list[dict[str, Any]]:
    return [{"role": n.role, "address": n.address, "node_ip": n.node_ip, "pgid": n.pgid,
             "alive": bool(procs.group_members(n.pgid)), "processes": len(procs.group_members(n.pgid))}
            for n in nodes]


# ----------------------------------------------------------------------- cluster records
class ClusterStore:
    """``<state>/ray/<name>.json``: the Ray nodes a launch started, for `status`/`stop`."""

    def __init__(self, store: StateStore | None = None):
        self.root = (store or StateStore()).root / "ray"

    def path(self, name: str) -> Path:
        return self.root / f"{check_name(name)}.json"

    def save(self, name: str, nodes: Sequence[RayNode], **extra: Any) -> None:
        doc = {"name": name, "nodes": [n.to_dict() for n in nodes], **extra}
        write_atomic(self.path(name), json.dumps(doc, indent=2) + "\n")

    def load(self, name: str) -> list[RayNode]:
        try:
            doc = json.loads(self.path(name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except ValueError:
            return []
        return [RayNode.from_dict(n) for n in doc.get("nodes", [])]

    def remove(self, name: str) -> None:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            pass

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.json")) if self.root.is_dir() else []


# --------------------------------------------------------------------- Ray's view of resources
@dataclass
class ClusterResources:
    total: dict[str, float]
    nodes: list[dict[str, Any]]               # {"ip", "alive", "resources"}

    def alive_nodes(self) -> list[dict[str, Any]]:
        return [n for n in self.nodes if n.get("alive")]


def cluster_resources(address: str, *, python: str, prefix: Sequence[str] = (),
                      timeout: float = PROBE_TIMEOUT_S, ray: str | None = None) -> ClusterResources:
    """Ray's own view of the cluster at ``address``: ``ray.cluster_resources()`` and ``ray.nodes()``
    through the Ray of the cluster's Python; if that fails, ``ray status`` parsed."""
    argv = [*prefix, python, "-c", _PROBE, address]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        for line in out.stdout.splitlines():
            if line.startswith("VLLM_OPS_RAY "):
                doc = json.loads(line[len("VLLM_OPS_RAY "):])
                return ClusterResources(total=doc["total"], nodes=doc["nodes"])
        why = (out.stderr.strip().splitlines() or ["no output"])[-1][:200]
    except subprocess.TimeoutExpired:
        why = f"no answer within {timeout:.0f} s"
    except (OSError, ValueError) as exc:
        why = str(exc)
    if ray:
        try:
            st = subprocess.run([*prefix, ray, "status", f"--address={address}"], capture_output=True,
                                text=True, timeout=timeout, stdin=subprocess.DEVNULL)
            if st.returncode == 0:
                return parse_ray_status(st.stdout)
            why += "; ray status: " + ((st.stderr or st.stdout).strip().splitlines() or ["failed"])[-1][:200]
        except (OSError, subprocess.TimeoutExpired):
            pass
    raise RuntimeFailure(f"cannot read the Ray cluster's resources at {address}: {why}",
                         hint="is the Ray head running (`ray start --head`) and reachable?")


_USAGE = re.compile(r"^\s*([\d.]+)(?:[KMGT]i?B|B)?/([\d.]+)(?:([KMGT]i?B|B))?\s+(\S+)", re.M)
_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "KB": 1e3, "MB": 1e6, "GB": 1e9}


def parse_ray_status(text: str) -> ClusterResources:
    """The ``Resources`` totals and the number of active nodes from ``ray status`` output."""
    total: dict[str, float] = {}
    sec = text.split("Resources", 1)[-1]
    for m in _USAGE.finditer(sec.split("Pending Demands", 1)[0].split("From request_resources", 1)[0]):
        value = float(m.group(2)) * _UNITS.get(m.group(3) or "", 1)
        total[m.group(4)] = value
    active = text.split("Active:", 1)[-1].split("Pending:", 1)[0] if "Active:" in text else ""
    n_active = sum(int(m.group(1)) for m in re.finditer(r"^\s*(\d+)\s+node_\w+", active, re.M))
    nodes = [{"ip": None, "alive": True, "resources": {}} for _ in range(n_active)]
    return ClusterResources(total=total, nodes=nodes)


@dataclass
class Requirement:
    key: str                                  # "GPU" (or "CPU" for the CPU build)
    per_node: int                             # ranks (one each) on each node of a replica
    nodes: int                                # nodes one replica spans
    total: int                                # TP x PP

    def describe(self) -> str:
        return (f"{self.total} {self.key} (TP x PP = {self.total}"
                + (f", {self.per_node} on each of {self.nodes} nodes" if self.nodes > 1 else "") + ")")


def requirement(plan: Any) -> Requirement:
    va = plan.vllm_args or {}
    tp = int(va.get("tensor_parallel_size") or 1)
    pp = int(va.get("pipeline_parallel_size") or 1)
    world = tp * pp
    span = int(va.get("nnodes") or 0) or len({n.name for n in (plan.nodes or []) if n.replica == 0}) or 1
    span = max(1, min(span, world))
    per = max(1, world // span)
    return Requirement(key="CPU" if plan.cpu else "GPU", per_node=per, nodes=span, total=world)


def check_resources(plan: Any, res: ClusterResources, address: str) -> Requirement:
    """Raise :class:`NotEnoughResources` (one line) when Ray's cluster cannot place one replica."""
    need = requirement(plan)
    have = float(res.total.get(need.key, 0.0))
    alive = res.alive_nodes()
    desc = f"the Ray cluster at {address} has {have:g} {need.key} on {len(alive)} node(s)"
    if have < need.total:
        raise NotEnoughResources(f"{desc}; the plan needs {need.describe()}: not starting vLLM",
                                 hint=f"add nodes (`ray start --address={address} --num-"
                                      f"{need.key.lower()}s=N`) or plan for fewer {need.key}s")
    if need.nodes > 1 and any(n.get("resources") for n in alive):
        fit = [n for n in alive if float((n.get("resources") or {}).get(need.key, 0.0)) >= need.per_node]
        if len(fit) < need.nodes:
            raise NotEnoughResources(
                f"{desc}; the plan needs {need.per_node} {need.key} on each of {need.nodes} nodes and only "
                f"{len(fit)} node(s) have that: not starting vLLM",
                hint="vLLM's Ray executor keeps a pipeline stage's tensor-parallel ranks on one node")
    return need


# -------------------------------------------------------------------------------- diagnosis
def diagnose_ray(log_text: str) -> Diagnosis | None:
    """Only the Ray rules of :data:`vllm_ops.launch.diagnosis.RULES` (the log of a Ray start)."""
    return diagnose(log_text, Context(flags={"distributed_executor_backend": "ray"}), only="ray-")


# ----------------------------------------------------------------------------- the launch
@dataclass
class RayLaunch:
    """How to run one plan on Ray. Either ``address`` (a running cluster: nothing of it is
    started or stopped) or ``head`` options (vllm-ops starts the head here and owns it)."""
    python: str                               # vLLM's interpreter (has Ray)
    address: str | None = None
    head: RayNodeOptions | None = None
    cluster_name: str | None = None           # record name (default: the deployment name)
    vllm_prefix: Sequence[str] = ()           # run vLLM elsewhere too (e.g. `ip netns exec ns`)
    probe_timeout: float = PROBE_TIMEOUT_S


@dataclass
class RayLaunchResult:
    address: str
    requirement: Requirement
    resources: ClusterResources
    started: list[RayNode]
    launch: Any = None                        # launcher.LaunchResult


def ray_plan(plan: Any) -> Any:
    """The plan with vLLM's Ray executor forced (and the native multi-node flags removed)."""
    va = {k: v for k, v in (plan.vllm_args or {}).items()
          if k not in ("nnodes", "node_rank", "master_addr", "master_port", "headless")}
    va["distributed_executor_backend"] = "ray"
    return replace(plan, vllm_args=va)


def launch_ray(plan: Any, ray: RayLaunch, opts: Any, progress: Callable[[str, str], None] | None = None
               ) -> RayLaunchResult:
    """Start (or join) the Ray cluster, check its resources, then start vLLM on it.

    ``opts`` is the launcher's :class:`~vllm_ops.launch.launcher.LaunchOptions`; vLLM gets
    ``RAY_ADDRESS`` and ``--distributed-executor-backend ray``. A refused resource check stops
    the Ray head this call started (a joined cluster is left alone) and raises
    :class:`NotEnoughResources` before vLLM is started. A failed vLLM start is diagnosed by the
    launcher's table (the Ray rules come first in it).
    """

    progress = progress or (lambda stage, detail="": None)
    if bool(ray.address) == bool(ray.head):
        raise BadInput("give a Ray address to join or head options to start one, not both")
    started: list[RayNode] = []
    if ray.head is not None:
        node = start_head(ray.head)
        started.append(node)
        address = node.address
        progress("ray head", f"started at {address} (pgid {node.pgid})")
    else:
        address = str(ray.address)
    name = ray.cluster_name or opts.name or "ray"
    clusters = ClusterStore(opts.store)
    if started:
        clusters.save(name, started, address=address)
    prefix = list(ray.head.prefix) if ray.head else list(ray.vllm_prefix)
    try:
        res = cluster_resources(address, python=ray.python, prefix=prefix, timeout=ray.probe_timeout,
                                ray=str(Path(ray.python).with_name("ray")))
        need = check_resources(plan, res, address)
    except BaseException:
        if started:
            stop_nodes(started)
            clusters.remove(name)
        raise
    progress("ray resources", f"{need.describe()} needed; cluster has {res.total.get(need.key, 0):g} "
                              f"{need.key} on {len(res.alive_nodes())} node(s)")
    rplan = ray_plan(plan)
    env = {**opts.env, "RAY_ADDRESS": address}
    lopts = replace(opts, env=env, backend=PrefixedProcessBackend(ray.vllm_prefix or prefix))
    # a failed start is diagnosed by the launcher with the one table (diagnosis.RULES): the Ray
    # rules apply because the flags say --distributed-executor-backend ray
    result = launch(rplan, lopts, progress)
    return RayLaunchResult(address=address, requirement=need, resources=res, started=started, launch=result)


def stop_cluster(name: str, store: StateStore | None = None, grace: float = 15.0) -> list[RayNode]:
    """Stop the Ray nodes the launch called ``name`` started (never a joined cluster)."""
    clusters = ClusterStore(store)
    nodes = clusters.load(name)
    stop_nodes(nodes, grace)
    clusters.remove(name)
    return nodes


__all__ = ["ClusterResources", "ClusterStore", "NotEnoughResources", "RayLaunch", "RayLaunchResult",
           "RayNode", "RayNodeOptions", "Requirement", "check_resources", "cluster_resources",
           "diagnose_ray", "find_ray", "join", "launch_ray", "nodes_status", "parse_ray_status",
           "ray_plan", "requirement", "start_head", "stop_cluster", "stop_nodes"]
