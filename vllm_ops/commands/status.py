"""`vllm-ops status [NAME] [--json]`: the deployments `launch` started (from any shell).

For each: alive (its process runs), healthy (``/health`` answers 200), model, port, uptime.
A corrupted state file is listed with what is wrong with it, never a traceback.
"""
from __future__ import annotations

import argparse
import time
from typing import Any


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="one deployment (default: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def describe(dep, backend) -> dict[str, Any]:
    from vllm_ops.launch.launcher import _http_get

    alive = backend.alive(dep)
    healthy = alive and _http_get(dep.url + "/health", None, timeout=2.0)[0] in (200, 401)
    return {
        "name": dep.name, "alive": alive, "healthy": bool(healthy),
        "status": dep.status if alive or dep.status in ("failed", "stopped") else "exited",
        "model": dep.served_name, "model_id": dep.model_id, "port": dep.port, "url": dep.url,
        "pid": dep.pid, "backend": dep.backend, "vllm_version": dep.vllm_version,
        "started_at": dep.started_at,
        "uptime_s": round(time.time() - dep.started_at, 1) if alive else None,
        "log": dep.log_path,
        "diagnosis": dep.diagnosis,
    }


def run(args: argparse.Namespace) -> int:
    from vllm_ops.errors import MalformedFile, RuntimeFailure
    from vllm_ops.launch.backend import ProcessBackend
    from vllm_ops.launch.state import StateStore, check_name
    from vllm_ops.output import info, print_json
    from vllm_ops.settings import load_settings

    store = StateStore(load_settings().state_dir)
    backend = ProcessBackend()
    if args.name:
        check_name(args.name)
        try:
            entries = [(args.name, store.load(args.name), None)]
        except KeyError:
            raise RuntimeFailure(f"no deployment named {args.name}",
                                 hint="`vllm-ops status` lists them") from None
        except MalformedFile as exc:  # reported as a row, not a traceback
            entries = [(args.name, None, exc.one_line())]
    else:
        entries = store.all()
    rows = []
    for name, dep, error in entries:
        if dep is None:
            rows.append({"name": name, "alive": None, "healthy": None, "status": "unreadable",
                         "error": error})
        else:
            rows.append(describe(dep, backend))
    if args.json:
        print_json({"state_dir": str(store.root), "deployments": rows})
        return 0
    if not rows:
        info(f"no deployments (state dir {store.root})")
        return 0
    info(f"{'NAME':<28}{'STATUS':<12}{'ALIVE':<7}{'HEALTHY':<9}{'PORT':<7}{'UPTIME':<10}MODEL")
    for r in rows:
        if r["status"] == "unreadable":
            info(f"{r['name']:<28}{'unreadable':<12}{'-':<7}{'-':<9}{'-':<7}{'-':<10}{r['error']}")
            continue
        up = _uptime(r["uptime_s"])
        info(f"{r['name']:<28}{r['status']:<12}{_yn(r['alive']):<7}{_yn(r['healthy']):<9}"
             f"{r['port']:<7}{up:<10}{r['model']}")
    return 0


def _yn(v: bool | None) -> str:
    return "-" if v is None else ("yes" if v else "no")


def _uptime(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
