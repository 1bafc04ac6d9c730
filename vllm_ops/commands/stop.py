"""`vllm-ops stop [NAME | --all] [--grace S]`: stop deployments started by `launch --detach`.

SIGTERM to vLLM's whole process group (API server, engine core, workers), SIGKILL after the
grace period; the state file is removed, the log is kept. An unknown name exits 1 with one line;
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
    from vllm_ops.errors import BadInput
    from vllm_ops.launch.backend import ProcessBackend
    from vllm_ops.launch.launcher import stop
    from vllm_ops.launch.state import StateStore
    from vllm_ops.output import info, warn
    from vllm_ops.settings import load_settings

    store = StateStore(load_settings().state_dir)
    if args.all and args.name:
        raise BadInput("give NAME or --all, not both")
    if args.all:
        targets = []
        for name, dep, error in store.all():
            if dep is None:
                warn(f"{name}: {error}; removing its state file")
                store.remove(name)
            else:
                targets.append(dep)
        if not targets:
            info("no deployments to stop")
    else:
        targets = [resolve(store, args.name)]
    backend = ProcessBackend()
    for dep in targets:
        killed = stop(dep, store, backend, grace=args.grace)
        store.remove(dep.name)
        info(f"stopped {dep.name} (pid {dep.pid}{', SIGKILL needed' if killed else ''})")
    return 0
