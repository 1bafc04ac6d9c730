"""`vllm-ops stop [NAME | --all] [--grace S]`: stop deployments started by `launch --detach`.

The deployment's recorded backend stops it: a process (SIGTERM to vLLM's whole process group:
API server, engine core, workers; SIGKILL after the grace period), a docker/compose deployment
(its containers stopped AND removed; compose: ``down --volumes``), a native multi-node rank 0
(with every ``NAME-rank<R>`` worker it started), a Ray deployment (with the Ray head vllm-ops
started for it; a cluster it only joined is left alone). A Ray worker node joined with
``launch --backend ray --node-rank R`` is stopped by its name too. The state file is removed,
the log is kept. An unknown name exits 1 with one line.

A partly corrupted state file whose pid/pgid/start ticks/backend/container ids are valid is
still stopped through them (a warning names the broken fields). When no usable state exists
(no file: the state directory deleted; a truncated file), the process groups whose leader
carries the deployment's ``VLLM_OPS_DEPLOYMENT`` marker for this state directory (found in
/proc) are stopped instead (:func:`vllm_ops.launch.procs.stop_marked`); without such a group a
corrupted file is an error (exit 2, NAME) or removed with a warning (``--all``).
"""
from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="deployment (default: the only one)")
    parser.add_argument("--all", action="store_true", help="stop every deployment")
    parser.add_argument("--grace", type=float, default=20.0,
                        help="seconds between SIGTERM and SIGKILL (default 20)")


def _rank_of(name: str, group_name: str) -> bool:
    """True when ``group_name`` is a native multi-node worker rank of ``name`` (``NAME-rank<R>``)."""
    rest = group_name[len(name):] if group_name.startswith(name) else ""
    return rest.startswith("-rank") and rest[5:].isdigit()


def _usable(store, name: str):
    """(deployment to stop through or None, warning/error line or None, the MalformedFile or None).

    A well-formed file: (dep, None, None). A partly corrupted one whose pid/pgid/ticks/backend/
    container ids are valid: (minimal view, warning naming the broken fields, None). No file:
    (None, None, None). Nothing usable: (None, error line, the error)."""
    from vllm_ops.errors import MalformedFile

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


def run(args: argparse.Namespace) -> int:
    from vllm_ops.errors import BadInput, RuntimeFailure
    from vllm_ops.launch import procs
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
    orphans: list[procs.MarkedGroup] = []   # groups carrying our marker, no usable state file
    targets = []
    if args.all:
        for name in store.names():
            dep, problem, error = _usable(store, name)
            if dep is not None:
                if problem:
                    warn(problem)
                targets.append(dep)
            elif error is not None:
                warn(f"{name}: {problem}; removing its state file")
                store.remove(name)
        named = {d.name for d in targets}
        orphans = [g for g in procs.marked_groups(store.root) if g.name not in named]
        lone_clusters = [n for n in clusters.names() if n not in named]
        if not targets and not lone_clusters and not orphans:
            info("no deployments to stop")
    else:
        name = args.name
        if name is None:
            names = store.names()
            if len(names) > 1:
                raise RuntimeFailure("name a deployment", hint=", ".join(names))
            if names:
                name = names[0]
            elif len(clusters.names()) == 1:
                lone_clusters = clusters.names()
            else:
                found = sorted({g.name for g in procs.marked_groups(store.root)})
                if len(found) != 1:
                    raise RuntimeFailure("name a deployment" if found else "no deployments",
                                         hint=(", ".join(found) + " (orphaned: no state)") if found else None)
                name = found[0]
        if name is not None:
            check_name(name)
            dep, problem, error = _usable(store, name)
            if dep is not None:
                if problem:
                    warn(problem)
                targets = [dep]
            elif name not in store.names() and clusters.load(name):
                lone_clusters = [name]
            else:
                orphans = [g for g in procs.marked_groups(store.root)
                           if g.name == name or _rank_of(name, g.name)]
                if not orphans:
                    if error is not None:
                        raise error
                    raise RuntimeFailure(f"no deployment named {name}", hint="`vllm-ops status` lists them")
                if error is not None:
                    warn(f"{name}: {problem}; stopping the processes that carry its {procs.MARKER} marker")
                    store.remove(name)
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
    for g in orphans:
        killed = procs.stop_marked(g, grace=args.grace)
        store.remove(g.name)
        what = f"process group {g.pgid}" if g.leader_ticks is not None else \
            f"{len(g.members)} process(es) of group {g.pgid}, its leader gone"
        info(f"stopped {g.name} (orphaned, no usable state: {what}, found by its {procs.MARKER} marker"
             f"{', SIGKILL needed' if killed else ''})")
    for name in lone_clusters:
        nodes = stop_cluster(name, store, grace=min(args.grace, 15.0))
        info(f"stopped {name} ({len(nodes)} Ray node(s) vllm-ops started)")
    return 0
