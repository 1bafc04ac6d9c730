"""`vllm-ops stop [NAME | --all] [--grace S]`: stop deployments started by `launch --detach`.

The deployment's recorded backend stops it: a process (SIGTERM to vLLM's whole process group:
API server, engine core, workers; SIGKILL after the grace period), a docker/compose deployment
(its containers stopped AND removed; compose: ``down --volumes``), a native multi-node rank 0
(with every ``NAME-rank<R>`` worker it started), a Ray deployment (with the Ray head vllm-ops
started for it; a cluster it only joined is left alone). A Ray worker node joined with
``launch --backend ray --node-rank R`` is stopped by its name too. The state file is removed,
the log is kept. An unknown name exits 1 with one line;
a corrupted state file is removed (nothing can be stopped through it) with a warning.
"""
from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="deployment (default: the only one)")
    parser.add_argument("--all", action="store_true", help="stop every deployment")
    parser.add_argument("--grace", type=float, default=20.0,
                        help="seconds between SIGTERM and SIGKILL (default 20)")


def run(args: argparse.Namespace) -> int:
    from vllm_ops.commands.logs import resolve
    from vllm_ops.errors import BadInput, RuntimeFailure
    from vllm_ops.launch.backend import backend_for
    from vllm_ops.launch.launcher import stop
    from vllm_ops.launch.multinode import worker_names
    from vllm_ops.launch.ray_backend import ClusterStore, stop_cluster
    from vllm_ops.launch.state import StateStore, check_name
    from vllm_ops.output import info, warn
    from vllm_ops.settings import load_settings

    store = StateStore(load_settings().state_dir)
    clusters = ClusterStore(store)
    if args.all and args.name:
        raise BadInput("give NAME or --all, not both")
    lone_clusters: list[str] = []        # Ray nodes recorded without a deployment (a joined worker node)
    if args.all:
        targets = []
        for name, dep, error in store.all():
            if dep is None:
                warn(f"{name}: {error}; removing its state file")
                store.remove(name)
            else:
                targets.append(dep)
        lone_clusters = [n for n in clusters.names() if n not in {d.name for d in targets}]
        if not targets and not lone_clusters:
            info("no deployments to stop")
    elif args.name and check_name(args.name) and args.name not in store.names() and clusters.load(args.name):
        targets, lone_clusters = [], [args.name]
    else:
        try:
            targets = [resolve(store, args.name)]
        except RuntimeFailure:
            if args.name is None and len(clusters.names()) == 1 and not store.names():
                targets, lone_clusters = [], clusters.names()
            else:
                raise
    # a worker rank goes with its rank 0 (stop_companions): stop heads first, skip ranks already gone
    for dep in sorted(targets, key=lambda d: d.backend == "native-worker"):
        if dep.backend == "native-worker" and dep.name not in store.names():
            continue
        backend = backend_for(dep.backend)
        workers = worker_names(store, dep.name)
        ray_nodes = clusters.load(dep.name)
        killed = stop(dep, store, backend, grace=args.grace)
        store.remove(dep.name)
        what = f"pid {dep.pid}" if dep.pid else f"{dep.backend} container removed"
        more = (f", {len(workers)} worker rank(s)" if workers else "") + \
               (f", {len(ray_nodes)} Ray node(s) it started" if ray_nodes else "")
        info(f"stopped {dep.name} ({what}{more}{', SIGKILL needed' if killed else ''})")
    for name in lone_clusters:
        nodes = stop_cluster(name, store, grace=min(args.grace, 15.0))
        info(f"stopped {name} ({len(nodes)} Ray node(s) vllm-ops started)")
    return 0
