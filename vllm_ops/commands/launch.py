"""`vllm-ops launch`: plan for the installed vLLM (or take a saved plan), start it, wait until
it is ready in stages, print the memory figures beside the plan's prediction.

    vllm-ops launch --model M [--profile P | --gpus G | probed] [--plan PLAN.json] [--port N]
                    [--env KEY=VALUE ...] [--detach] [--no-validate] [--auto-retry]
                    [--vllm-version V] [--ready-timeout S] [--name NAME] [--json]
                    [--backend process|docker|compose|ray] [backend flags below]
                    [-- <extra vLLM args>]

Backends (one dispatch; `status`, `logs` and `stop` pick the same backend from the deployment's
recorded ``backend``):

- ``process`` (default): vLLM as a local process group (needs vLLM installed here).
- ``docker``: one container per replica; ``compose``: the rendered Compose file, ``up -d``.
  ``--image IMAGE`` (default: the plan's ``vllm/vllm-openai[-cpu]:v<version>``),
  ``--volume HOST:CONTAINER[:ro]`` (repeatable), ``--shm-size SIZE`` (instead of ``--ipc=host``).
  No local vLLM is needed (the version comes from --vllm-version / the plan).
- ``ray``: vLLM with ``--distributed-executor-backend ray``. ``--ray-address HOST:PORT`` uses a
  running cluster (never stopped by vllm-ops); without it a Ray head is started here
  (``--ray-port``, ``--ray-node-ip``, ``--ray-num-cpus``, ``--ray-num-gpus``, ``--ray-temp-dir``)
  and stopped with the deployment. Ray's resources are checked BEFORE vLLM starts (exit 1, one
  line, when the cluster is too small). On the other nodes:
  ``vllm-ops launch --backend ray --ray-address HEAD:6379 --node-rank R --name NAME`` joins them
  (no vLLM there; `vllm-ops stop NAME` leaves the cluster).

Multi-node (vLLM's native mode, no Ray; or ``--backend ray`` over several nodes):

- ``--nodes ADDR,ADDR,...``: plan one node per address (rank order: the first is rank 0, the
  master / Ray head), each with this machine's hardware (or ``--gpus``/``--profile`` per node).
  A saved ``--plan`` with ``nnodes >= 2`` is multi-node by itself.
- ``--node-rank R``: start only this node's rank (run the same command on every node; rank 0
  serves the API and waits for ready, ranks > 0 are headless workers, recorded as
  ``NAME-rank<R>``). Without it every rank is started from here: rank R through
  ``--node-exec R=PREFIX`` (e.g. ``1='ssh 10.0.0.2'``), else locally.
- ``--node-env R:KEY=VALUE`` (e.g. ``GLOO_SOCKET_IFNAME``/``NCCL_SOCKET_IFNAME``),
  ``--master-addr``, ``--master-port`` (default 29500). ``--gpus 2x(8xH100)`` plans several
  nodes too (without addresses: then give ``--master-addr``). The plan's multi-node backend
  follows ``--backend``: ray → vLLM's Ray executor, otherwise native.

Foreground (default): after ready, launch stays until Ctrl-C or SIGTERM, then stops vLLM and
every process / container / Ray node it started (or returns 1 if vLLM dies on its own).
``--detach``: returns once ready and leaves it running; `vllm-ops status/logs/stop NAME` manage
it from any shell. A failed start prints the cause found in vLLM's log and the change that fixes
it (exit 1); ``--auto-retry`` applies that change once and starts again, and the "plan" column
then shows the re-planned prediction for the flags that started (a saved --plan: marked stale).
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Any

from vllm_ops import planning
from vllm_ops.commands._planargs import (
    add_plan_arguments, choose_hardware, multinode_from_args, parse_env, pins_from_args,
)
from vllm_ops.errors import BadInput
from vllm_ops.launch import lifecycle
from vllm_ops.launch.backend import BACKENDS, backend_for
from vllm_ops.launch.launcher import LaunchFailed, LaunchOptions
from vllm_ops.planning.argv import split_secret_args
from vllm_ops.launch.lifecycle import Topology, stop, topology_mode
from vllm_ops.launch.locate import base_version, resolve_vllm
from vllm_ops.launch.state import StateStore
from vllm_ops.models import load_model_spec
from vllm_ops.output import Progress, info, print_json, warn
from vllm_ops.planning.pins import check_port
from vllm_ops.planning.plan import is_secret_name


def configure(parser: argparse.ArgumentParser) -> None:
    add_plan_arguments(parser, model_default_help=False)   # --model --gpus --profile --force --port --env pins ...
    parser.add_argument("--plan", help="launch a saved `vllm-ops plan --json` document")
    parser.add_argument("--replica", type=int, default=0, metavar="I",
                        help="which replica of the plan to start (default 0; each has its own GPUs and port)")
    parser.add_argument("--detach", action="store_true",
                        help="return once ready and leave vLLM running")
    parser.add_argument("--no-validate", dest="validate", action="store_false",
                        help="skip the validation suite before calling it ready")
    parser.add_argument("--auto-retry", action="store_true",
                        help="on a recognised failure, apply the fix once and start again")
    parser.add_argument("--ready-timeout", type=float, metavar="S",
                        help="seconds to wait for ready (default: 120 + 30/GiB of weights, x2 on CPU)")
    parser.add_argument("--name", help="deployment name (default: <served-name>-<port>)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON document")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")

    parser.add_argument("--backend", choices=BACKENDS, default="process",
                        help="process (default): vLLM here; docker: a container per replica; compose: "
                             "the rendered Compose file; ray: vLLM's Ray executor on a Ray cluster")
    c = parser.add_argument_group("containers (--backend docker|compose)")
    c.add_argument("--image", help="container image (default: the plan's vllm/vllm-openai[-cpu]:v<version>)")
    c.add_argument("--volume", action="append", default=[], metavar="HOST:CONTAINER[:ro]",
                   help="extra bind mount (repeatable)")
    c.add_argument("--shm-size", metavar="SIZE", help="container shared memory instead of --ipc=host (e.g. 16g)")
    r = parser.add_argument_group("Ray (--backend ray)")
    r.add_argument("--ray-address", metavar="HOST:PORT",
                   help="a running Ray cluster to use (rank 0) or join (--node-rank R > 0); default: "
                        "start a Ray head here, stopped with the deployment")
    r.add_argument("--ray-port", type=int, default=6379, help="port of the Ray head started here (6379)")
    r.add_argument("--ray-node-ip", metavar="ADDR", help="this node's address for Ray (--node-ip-address)")
    r.add_argument("--ray-num-cpus", type=int, metavar="N", help="CPUs this Ray node offers")
    r.add_argument("--ray-num-gpus", type=int, metavar="N", help="GPUs this Ray node offers")
    r.add_argument("--ray-temp-dir", metavar="DIR", help="Ray's --temp-dir (one per node sharing a host)")
    n = parser.add_argument_group("multi-node (vLLM's native mode; or --backend ray over several nodes)")
    n.add_argument("--nodes", metavar="ADDR,ADDR,...",
                   help="plan one node per address (first = rank 0), each with this machine's hardware "
                        "(or --gpus/--profile)")
    n.add_argument("--node-rank", type=int, metavar="R",
                   help="start only this node's rank (run launch on every node); default: all ranks from here")
    n.add_argument("--node-exec", action="append", default=[], metavar="R=PREFIX",
                   help="command prefix that runs rank R on its node, e.g. 1='ssh 10.0.0.2' (repeatable)")
    n.add_argument("--node-env", action="append", default=[], metavar="R:KEY=VALUE",
                   help="environment for rank R only, e.g. 1:GLOO_SOCKET_IFNAME=eth0 (repeatable)")
    n.add_argument("--master-addr", metavar="ADDR", help="rank 0's address (default: the plan's)")
    n.add_argument("--master-port", type=int, default=None, metavar="P",
                   help="torch.distributed port of rank 0 (native multi-node; default 29500)")


def _parse_env(items: list[str]) -> dict[str, str]:
    """``--env KEY=VALUE`` → dict, the same rule as plan/render (names checked)."""
    return parse_env(items)


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    if bool(args.model) == bool(args.plan):
        raise BadInput("give --model M (to plan now) or --plan PLAN.json, not both")
    if args.port is not None:
        check_port(args.port)
    _check_backend_args(args)
    previous = signal.signal(signal.SIGTERM, _sigterm)   # SIGTERM stops vLLM like Ctrl-C
    try:
        plan, opts, progress, topo = _prepare(args)
        where = f"{plan.model.get('id')} on port {args.port or (plan.replicas[0].port if plan.replicas else 8000)}"
        info(f"vllm-ops: starting vLLM {opts.vllm_version or '(version unknown)'} via {opts.vllm.source} "
             f"({_describe_mode(topo.mode, args)}): {where}")
        try:
            result = lifecycle.start(plan, opts, topo, _stage_printer(progress))
        except LaunchFailed as exc:
            _print_failure(exc)
            if args.json:
                print_json({"ready": False, "error": exc.one_line(),
                            "diagnosis": exc.diagnosis.to_dict() if exc.diagnosis else None,
                            "name": exc.deployment.name if exc.deployment else None})
            return 1
        if isinstance(result, lifecycle.Started):   # a node without vLLM's API server (worker rank, Ray worker)
            return _started_without_api(result, args, opts)
        return _ready(result, args, opts)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _prepare(args: argparse.Namespace):
    """The plan to launch (loaded or made now), the launch options, the progress printer and the topology."""
    from vllm_ops.settings import load_settings

    settings = load_settings()
    store = StateStore(settings.state_dir)
    # a container backend runs the image's `vllm serve`: nothing local is looked for
    vllm, version = resolve_vllm(args.backend in ("process", "ray"), settings.vllm,
                                 args.vllm_version or settings.vllm_version)
    env = _parse_env(args.env)
    extra, secret_env = split_secret_args(list(args.passthrough or []))
    secrets = {k: v for k, v in env.items() if is_secret_name(k)}
    plain_env = {k: v for k, v in env.items() if k not in secrets}
    replan = None
    if args.plan:
        from vllm_ops.planning.plan import Plan

        plan = Plan.load(args.plan)
        version = version or plan.vllm_version
        passthrough = extra
    else:
        plan, replan = _make_plan(args, version, extra, plain_env, sorted({*secrets, *secret_env}))
        passthrough = []   # the planner put them into plan.extra_args
    progress = Progress(quiet=args.quiet or False)
    topo = _topology(args, plan)
    opts = LaunchOptions(vllm=vllm, vllm_version=version, name=args.name, port=args.port,
                         env={**plain_env, **secrets, **secret_env}, extra_args=passthrough,
                         ready_timeout=args.ready_timeout, validate=args.validate,
                         auto_retry=args.auto_retry, store=store, replica=args.replica,
                         backend=_backend(args), replan=replan)
    return plan, opts, progress, topo


def _started_without_api(result, args: argparse.Namespace, opts: LaunchOptions) -> int:
    """A node that runs no API server (a worker rank, a Ray worker): said, then detached or watched."""
    info(f"vllm-ops: {result.what}; stop it with `vllm-ops stop {result.name}`")
    if args.json:
        print_json({"ready": True, "name": result.name, "role": result.role, "url": None,
                    "workers": result.workers})
    if args.detach or result.deployment is None:
        return 0
    from dataclasses import replace

    return _foreground(result.deployment, opts.store,
                       replace(opts, backend=_process_kind(result.deployment.backend)))


def _ready(result, args: argparse.Namespace, opts: LaunchOptions) -> int:
    """A server that answers: its figures and where it is, then detached or watched in the foreground."""
    dep = result.deployment
    _print_figures(result)
    info(f"vllm-ops: {dep.name} ready in {result.ready_s:.1f} s at {dep.url} "
         f"(model {dep.served_name}, {_where(dep)}); log {dep.log_path}")
    if args.json:
        print_json({"ready": True, "name": dep.name, "url": dep.url, "pid": dep.pid,
                    "port": dep.port, "served_name": dep.served_name, "backend": dep.backend,
                    "ready_s": round(result.ready_s, 2),
                    "health_s": round(result.health_s, 2) if result.health_s else None,
                    "stages": {k: round(v, 2) for k, v in result.stage_times.items()},
                    "predicted": result.predicted, "actual": result.actual,
                    "replanned": result.replanned, "plan_stale": result.plan_stale,
                    "retried": result.retried.to_dict() if result.retried else None,
                    "calibration": result.calibration_path, "log": dep.log_path})
    if args.detach:
        info(f"vllm-ops: detached; stop it with `vllm-ops stop {dep.name}`")
        return 0
    return _foreground(dep, opts.store, opts)


# ------------------------------------------------------------------------------ dispatch
def _check_backend_args(args: argparse.Namespace) -> None:
    """Flags of one backend given to another: BadInput (exit 2) before anything starts."""
    container = args.backend in ("docker", "compose")
    given = lambda *names: [n for n in names if getattr(args, n.lstrip("-").replace("-", "_"), None)]  # noqa: E731
    if not container and (bad := given("--image", "--volume", "--shm-size")):
        raise BadInput(f"{', '.join(bad)} need --backend docker or compose")
    if args.backend != "ray" and (bad := given("--ray-address", "--ray-node-ip", "--ray-num-cpus",
                                               "--ray-num-gpus", "--ray-temp-dir")):
        raise BadInput(f"{', '.join(bad)} need --backend ray")
    if container and (bad := given("--nodes", "--node-rank", "--node-exec", "--node-env", "--master-addr")):
        raise BadInput(f"{', '.join(bad)}: multi-node launches run vLLM as processes "
                       f"(--backend process or ray), not with --backend {args.backend}",
                       hint="`vllm-ops render` writes the multi-node files for containers")
    if args.node_rank is not None and args.node_rank < 0:
        raise BadInput(f"--node-rank {args.node_rank}: ranks count from 0")
    if args.nodes and args.plan:
        raise BadInput("--nodes plans the nodes; a saved --plan already has them: give one")
    dist = getattr(args, "distributed_backend", None)
    if dist == "ray" and args.backend != "ray":
        raise BadInput("--distributed-backend ray: launch it with --backend ray (it starts or joins the Ray cluster)")
    if dist == "native" and args.backend == "ray":
        raise BadInput("--distributed-backend native and --backend ray contradict each other")


def _topology(args: argparse.Namespace, plan):
    """The flags that say how the plan's ranks reach their nodes (lifecycle.Topology)."""
    import shlex

    node_flags = any(getattr(args, n, None) for n in ("node_exec", "node_env", "master_addr"))
    mode = topology_mode(plan, args.backend, node_rank=args.node_rank, node_flags=node_flags)
    return Topology(mode=mode, node_rank=args.node_rank,
                    node_prefix={r: shlex.split(v) for r, v in _ranked(args.node_exec, "=", "exec").items()},
                    node_env=_node_env(args.node_env), master_addr=args.master_addr,
                    master_port=args.master_port, ray_address=args.ray_address, ray_port=args.ray_port,
                    ray_node_ip=args.ray_node_ip, ray_num_cpus=args.ray_num_cpus,
                    ray_num_gpus=args.ray_num_gpus, ray_temp_dir=args.ray_temp_dir)


def _describe_mode(mode: str, args: argparse.Namespace) -> str:
    if mode == "native":
        return ("native multi-node, rank " + str(args.node_rank)) if args.node_rank is not None \
            else "native multi-node, all ranks"
    if mode == "ray-worker":
        return f"Ray worker node joining {args.ray_address}"
    if mode == "ray":
        return f"Ray cluster at {args.ray_address}" if args.ray_address else "Ray head started here"
    return f"backend {args.backend}"


def _backend(args: argparse.Namespace):
    return backend_for(args.backend, image=args.image, volumes=args.volume or None, shm_size=args.shm_size)


def _process_kind(name: str):
    return backend_for(name)


def _where(dep) -> str:
    if dep.pid:
        return f"pid {dep.pid}"
    return f"container {dep.container_name or dep.container_id or dep.name}"


def _ranked(items: list[str], sep: str, what: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for it in items or []:
        rank, found, rest = it.partition(sep)
        if not found or not rank.strip().isdigit() or not rest:
            raise BadInput(f"--node-{what} {it!r}: expected RANK{sep}...")
        out[int(rank)] = rest
    return out


def _node_env(items: list[str]) -> dict[int, dict[str, str]]:
    out: dict[int, dict[str, str]] = {}
    for it in items or []:
        rank, _, kv = it.partition(":")
        r = _ranked([f"{rank}:{kv}"], ":", "env")
        out.setdefault(next(iter(r)), {}).update(parse_env([kv]))
    return out


def _make_plan(args: argparse.Namespace, version: str | None, extra: list[str],
               env: dict[str, str], secret_names: list[str] = ()):
    """(plan, replan) for this vLLM, as `vllm-ops plan` would (same hardware choice and pins).
    Flags after `--` that the planner can pin (--max-model-len, --tensor-parallel-size, ...) become
    pins too, so the prediction is for what really starts. ``replan(pins)``: the same request with
    pins that win over all (the change --auto-retry applied), from the planning front door.
    ``--nodes``: one node per address (multi-node plan)."""
    spec = load_model_spec(args.model, offline=args.offline)
    inventory, profile = choose_hardware(args, cmd="launch")
    pins = pins_from_args(args)      # flags after `--` that pin (--max-num-seqs ...): the planner lifts them
    if args.nodes:
        inventory = _nodes_inventory(inventory, args.nodes)
    multi = multinode_from_args(args)
    multi["backend"] = "ray" if args.backend == "ray" else "native"   # only used for several nodes
    request = dict(pins=pins, vllm_version=base_version(version), profile=profile, extra_args=extra, env=env,
                   port=args.port or 8000, served_name=args.served_model_name, env_secrets=secret_names, **multi)
    plan = planning.plan(spec, inventory, **request)
    if not plan.fits:
        warn(f"the plan predicts this does not fit ({plan.failure_stage}); starting anyway: "
             f"vLLM's log will say")
    return plan, planning.replanner(spec, inventory, **request)


def _nodes_inventory(inventory, nodes: str):
    """``--nodes A,B,...``: the chosen hardware's first node once per address (rank order)."""
    from dataclasses import replace

    addrs = [a.strip() for a in nodes.split(",") if a.strip()]
    if len(addrs) < 2 or len(set(addrs)) != len(addrs):
        raise BadInput(f"--nodes {nodes!r}: give two or more different node addresses, comma-separated")
    if any(c.isspace() or c in "/'\"" for a in addrs for c in a):
        raise BadInput(f"--nodes {nodes!r}: not host names or addresses")
    nodes = inventory.nodes
    if len(nodes) > 1 and len(nodes) != len(addrs):
        raise BadInput(f"--nodes names {len(addrs)} node(s); the hardware has {len(nodes)}")
    nodes = nodes if len(nodes) > 1 else (nodes[0],) * len(addrs)
    return replace(inventory, nodes=tuple(replace(n, address=a, hostname=n.hostname if len(inventory.nodes) > 1
                                                  and n.hostname else a) for n, a in zip(nodes, addrs)))


def _stage_printer(progress):
    last = {"stage": None, "t": 0.0}

    def show(stage: str, detail: str = "") -> None:
        now = progress.elapsed()
        took = f" (+{now - last['t']:.1f}s)" if last["stage"] else ""
        last["stage"], last["t"] = stage, now
        progress(stage, f"{detail}{took}")

    return show


def _print_failure(exc) -> None:
    d = exc.diagnosis
    if d is not None:
        info(f"vllm-ops: vLLM failed to start: {d.cause}")
        info(f"  log says: {d.evidence}")
        info(f"  fix: {d.fix}")
        if d.change is not None:
            info(f"  (--auto-retry would apply: {d.change.describe()})")
    else:
        info(f"vllm-ops: {' '.join(str(exc).split())}")
    if exc.hint:
        info(f"  {exc.hint}")


_ROWS = (("weights_gib", "weights (GiB)"), ("activation_peak_gib", "activation peak (GiB)"),
         ("non_torch_gib", "non-torch (GiB)"), ("cuda_graph_gib", "CUDA graphs (GiB)"),
         ("kv_cache_gib", "KV cache (GiB)"), ("kv_cache_tokens", "KV cache (tokens)"),
         ("max_concurrency", "max concurrency (x)"))


def _print_figures(result) -> None:
    rows = [(label, result.predicted.get(k), result.actual.get(k)) for k, label in _ROWS
            if result.predicted.get(k) is not None or result.actual.get(k) is not None]
    if not rows:
        return
    head = "plan (re-planned)" if result.replanned else ("plan (stale)" if result.plan_stale else "plan")
    info(f"{'memory (per GPU)':<24}{head:>18}{'vLLM log':>14}")
    for label, p, a in rows:
        info(f"{label:<24}{_fmt(p):>18}{_fmt(a):>14}")
    if result.replanned and result.retried is not None:
        info(f"(plan re-made for the retried flags: {result.retried.change.describe()})")
    if result.plan_stale:
        info("(the saved plan was made for the flags before --auto-retry changed them: its figures are "
             "stale; re-plan with the new flags to compare)")
    if result.calibration_path:
        info(f"(recorded in {result.calibration_path})")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _foreground(dep, store, opts) -> int:
    info("vllm-ops: running in the foreground; Ctrl-C or SIGTERM stops it")
    try:
        while opts.backend.alive(dep):
            time.sleep(0.5)
    except KeyboardInterrupt:
        info(f"vllm-ops: stopping {dep.name}...")
        stop(dep, store, opts.backend)        # with its worker ranks / the Ray head it started
        store.remove(dep.name)
        return 0
    code = opts.backend.exit_code(dep)
    dep.status = "stopped"
    store.save(dep)
    sys.stderr.write(f"vllm-ops: error: vLLM exited on its own (status {code}); log {dep.log_path}\n")
    return 1
