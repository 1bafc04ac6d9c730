"""`vllm-ops stop [NAME | --all] [--grace S]`: stop deployments started by `launch --detach`
(flags and printing; what is stopped and how: :mod:`vllm_ops.launch.lifecycle`).

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

from vllm_ops.errors import BadInput
from vllm_ops.launch.lifecycle import find_targets, stop_targets
from vllm_ops.launch.state import StateStore
from vllm_ops.output import info, warn


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="deployment (default: the only one)")
    parser.add_argument("--all", action="store_true", help="stop every deployment")
    parser.add_argument("--grace", type=float, default=20.0,
                        help="seconds between SIGTERM and SIGKILL (default 20)")


def run(args: argparse.Namespace) -> int:
    from vllm_ops.settings import load_settings

    store = StateStore(load_settings().state_dir)
    if args.all and args.name:
        raise BadInput("give NAME or --all, not both")
    targets = find_targets(store, args.name, all=args.all)
    for note in targets.notes:
        warn(note)
    if args.all and not (targets.deployments or targets.lone_clusters or targets.orphans):
        info("no deployments to stop")
    for line in stop_targets(targets, store, grace=args.grace):
        info(line)
    return 0
