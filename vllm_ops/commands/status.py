"""`vllm-ops status [NAME] [--json]`: the deployments `launch` started (from any shell).

For each: alive (its process group / container runs, asked through the deployment's recorded
backend), healthy (``/health`` answers 200; not probed for worker ranks, which serve no API),
backend, model, port, uptime; then the Ray nodes vllm-ops started. A process deployment whose API
server exited while processes of its group still run (an orphaned engine core holding its GPU
memory) says so: ``leftover_pids`` and a line naming `vllm-ops stop NAME`.
A corrupted state file is listed with what is wrong with it, never a traceback: "corrupted" when
only fields `stop` does not need are wrong (alive is still asked through the valid pid/pgid/start
ticks, and `stop` works), "unreadable" otherwise. Local vLLM process groups that carry a
deployment's environment marker for this state directory but have no state file (the directory
deleted, the file removed) are listed as "orphaned (no state)", found by a /proc scan.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

from vllm_ops.errors import MalformedFile, RuntimeFailure
from vllm_ops.launch import procs
from vllm_ops.launch.backend import backend_for
from vllm_ops.launch.launcher import _http_get
from vllm_ops.launch.ray_backend import ClusterStore, nodes_status
from vllm_ops.launch.state import PROCESS_BACKENDS, StateStore, WORKER_BACKENDS, check_name
from vllm_ops.output import info, print_json


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="one deployment (default: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def describe(dep, backend) -> dict[str, Any]:
    """One row: through the deployment's own backend (process group / containers); a worker rank
    (no API server, port 0) is never probed on ``/health``; a backend that cannot answer (Docker
    daemon gone) gives alive ``None`` and its one-line error, not a traceback."""
    worker = dep.backend in WORKER_BACKENDS or not dep.port
    error = None
    try:
        alive = bool(backend.alive(dep))
    except RuntimeFailure as exc:
        alive, error = None, exc.one_line()
    healthy = None if worker or alive is None else \
        bool(alive and _http_get(dep.url + "/health", None, timeout=2.0)[0] in (200, 401))
    status = dep.status if alive or dep.status in ("failed", "stopped") else "exited"
    if alive is None:
        status = "unknown"
    row = {
        "name": dep.name, "alive": alive, "healthy": healthy, "status": status,
        "role": "worker" if worker else "server",
        "model": dep.served_name, "model_id": dep.model_id, "port": dep.port,
        "url": None if worker else dep.url,
        "pid": dep.pid, "backend": dep.backend, "vllm_version": dep.vllm_version,
        "started_at": dep.started_at,
        "uptime_s": round(time.time() - dep.started_at, 1) if alive else None,
        "log": dep.log_path,
        "diagnosis": dep.diagnosis,
    }
    if error:
        row["error"] = error
    left = _leftover(dep) if alive is False else []
    if left:
        row["leftover_pids"] = left
        row["error"] = (f"its API server exited; {len(left)} process(es) of its group still run (pids "
                        f"{', '.join(map(str, left))}: an orphaned engine core / workers keep their memory); "
                        f"`vllm-ops stop {dep.name}` ends them")
    if hasattr(backend, "describe") and alive is not None:     # containers
        try:
            row["containers"] = backend.describe(dep)
        except RuntimeFailure as exc:
            row["error"] = exc.one_line()
    return row


def _leftover(dep) -> list[int]:
    """The live processes of a process deployment's group whose API server is gone (started no
    earlier than it: :func:`procs.group_members`); none for containers."""
    if dep.backend not in PROCESS_BACKENDS or not procs.signalable_group(dep.pgid):
        return []
    return sorted(procs.group_members(dep.pgid, dep.pid_start_ticks))


def _port_of(argv: list[str]) -> int | None:
    for i, a in enumerate(argv):
        v = argv[i + 1] if a == "--port" and i + 1 < len(argv) else a[7:] if a.startswith("--port=") else None
        if v is not None:
            return int(v) if v.isdigit() and 0 < int(v) < 65536 else None
    return None


def orphan_row(name: str, groups) -> dict[str, Any]:
    """One row for the process groups carrying ``name``'s marker without a usable state file."""
    g = groups[0]
    port = _port_of(g.argv)
    healthy = None if port is None else \
        _http_get(f"http://127.0.0.1:{port}/health", None, timeout=2.0)[0] in (200, 401)
    what = ", ".join(f"pgid {x.pgid}: {len(x.members)} process(es)"
                     + ("" if x.leader_ticks is not None else ", leader gone") for x in groups)
    return {"name": name, "alive": True, "healthy": healthy, "status": "orphaned", "orphaned": True,
            "role": "server", "model": None, "port": port, "pid": g.pgid if g.leader_ticks is not None else None,
            "pgids": [x.pgid for x in groups], "pids": [p for x in groups for p in x.pids],
            "backend": "process", "uptime_s": None,
            "error": f"orphaned (no state): {what}; `vllm-ops stop {name}` stops it"}


def ray_rows(store) -> list[dict[str, Any]]:
    """The Ray nodes vllm-ops started (``ray/<name>.json``), one row per cluster record."""
    clusters = ClusterStore(store)
    rows = []
    for name in clusters.names():
        nodes = nodes_status(clusters.load(name))
        rows.append({"name": name, "nodes": nodes, "alive": any(n["alive"] for n in nodes),
                     "address": nodes[0]["address"] if nodes else None})
    return rows


def run(args: argparse.Namespace) -> int:
    from vllm_ops.settings import load_settings

    store = StateStore(load_settings().state_dir)
    ray = ray_rows(store)
    if args.name:
        check_name(args.name)
        ray = [r for r in ray if r["name"] == args.name]
    entries = _entries(store, args.name, ray)
    marked: dict[str, list] = {}
    for g in procs.marked_groups(store.root, args.name):
        marked.setdefault(g.name, []).append(g)
    rows = [_row(store, name, dep, error, marked) for name, dep, error in entries]
    have = set(store.names())
    for name in sorted(marked):
        if name not in have:
            rows.append(orphan_row(name, marked[name]))
    if args.json:
        print_json({"state_dir": str(store.root), "deployments": rows, "ray_clusters": ray})
        return 0
    if not rows and not ray:
        info(f"no deployments (state dir {store.root})")
        return 0
    _print_rows(rows, ray)
    return 0


def _entries(store: StateStore, name: str | None, ray: list) -> list:
    """(name, deployment or None, error or None) of the deployment asked for, or of every one."""
    if not name:
        return store.all()
    try:
        return [(name, store.load(name), None)]
    except KeyError:
        if not ray and not procs.marked_groups(store.root, name):
            raise RuntimeFailure(f"no deployment named {name}", hint="`vllm-ops status` lists them") from None
        return []
    except MalformedFile as exc:  # reported as a row, not a traceback
        return [(name, None, exc.one_line())]


def _row(store: StateStore, name: str, dep, error: str | None, marked: dict[str, list]) -> dict:
    """One deployment's status row; a state file that cannot be read is a row that says so."""
    broken: list = []
    if dep is None:
        try:
            dep, broken = store.load_for_stop(name)     # wrong only where stop does not look?
        except (KeyError, MalformedFile):
            row = {"name": name, "alive": None, "healthy": None, "status": "unreadable", "error": error}
            if name in marked:
                row.update(alive=True, pgids=[g.pgid for g in marked[name]],
                           error=f"{error}; its processes still run (pgid "
                                 f"{', '.join(str(g.pgid) for g in marked[name])}): "
                                 f"`vllm-ops stop {name}` stops them")
            return row
    try:
        backend = backend_for(dep.backend)
    except Exception:  # noqa: BLE001 — an unknown backend name in a state file
        return {"name": name, "alive": None, "healthy": None, "status": "unreadable",
                "error": f"unknown backend {str(dep.backend)[:40]!r}"}
    row = describe(dep, backend)
    if broken:
        row.update(status="corrupted", broken_fields=broken,
                   error=f"{error}; `vllm-ops stop {name}` still works (pid/pgid/start ticks are valid)")
        if row.get("uptime_s") is not None and "started_at" in broken:
            row["uptime_s"] = None
    return row


def _print_rows(rows: list[dict], ray: list) -> None:
    if rows:
        info(f"{'NAME':<28}{'STATUS':<12}{'BACKEND':<15}{'ALIVE':<7}{'HEALTHY':<9}{'PORT':<7}{'UPTIME':<10}MODEL")
    for r in rows:
        if r["status"] == "unreadable":
            info(f"{r['name']:<28}{'unreadable':<12}{'-':<15}{_yn(r['alive']):<7}{'-':<9}{'-':<7}{'-':<10}"
                 f"{r['error']}")
            continue
        up = _uptime(r["uptime_s"])
        port = str(r["port"]) if r["port"] else "-"
        model = (r["model"] or "?") + (" (worker rank, no API server)" if r["role"] == "worker" else "")
        if r.get("error"):
            model += f"  [{r['error']}]"
        info(f"{r['name']:<28}{r['status']:<12}{r['backend']:<15}{_yn(r['alive']):<7}{_yn(r['healthy']):<9}"
             f"{port:<7}{up:<10}{model}")
    for c in ray:
        info(f"ray cluster {c['name']}: " + ", ".join(
            f"{n['role']} {n['address'] if n['role'] == 'head' else (n['node_ip'] or '?')} "
            f"({'alive' if n['alive'] else 'gone'}, pgid {n['pgid']})" for n in c["nodes"]))


def _yn(v: bool | None) -> str:
    return "-" if v is None else ("yes" if v else "no")


def _uptime(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
