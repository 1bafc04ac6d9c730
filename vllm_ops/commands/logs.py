"""`vllm-ops logs [NAME] [-f] [-n N]`: a deployment's vLLM log (the last N lines; -f follows it
until Ctrl-C or until the deployment's process is gone). NAME may be left out when there is
exactly one deployment. The deployment's recorded backend reads it: a process's log file, or
Docker's log of a docker/compose deployment's container (the file only grows while the
launching process streams it)."""
from __future__ import annotations

import argparse
import sys
import time

from vllm_ops.errors import RuntimeFailure
from vllm_ops.launch.backend import backend_for
from vllm_ops.launch.state import StateStore, check_name


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="deployment (default: the only one)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    parser.add_argument("-n", "--lines", type=int, default=50, help="how many last lines (default 50)")


def resolve(store, name: str | None):
    """The named deployment, or the only one; RuntimeFailure (one line) otherwise."""
    if name is None:
        names = store.names()
        if len(names) != 1:
            raise RuntimeFailure("name a deployment" if names else "no deployments",
                                 hint=", ".join(names) if names else None)
        name = names[0]
    check_name(name)
    try:
        return store.load(name)
    except KeyError:
        raise RuntimeFailure(f"no deployment named {name}",
                             hint="`vllm-ops status` lists them") from None


def tail_lines(path: str, n: int) -> tuple[list[str], int]:
    """The last ``n`` lines of a file and the file's size (to follow from)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        block, data = 65536, b""
        pos = size
        while pos > 0 and data.count(b"\n") <= n:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = data.decode("utf-8", "replace").splitlines()
    return (lines[-n:] if n > 0 else []), size


def run(args: argparse.Namespace) -> int:
    from vllm_ops.settings import load_settings

    store = StateStore(load_settings().state_dir)
    dep = resolve(store, args.name)
    backend = backend_for(dep.backend)
    if hasattr(backend, "logs"):   # containers: Docker keeps the log; the file stops growing with launch
        if args.lines <= 0 and not args.follow:
            return 0
        for chunk in backend.logs(dep, tail=max(0, args.lines), follow=args.follow):
            sys.stdout.write(chunk)
            sys.stdout.flush()
        return 0
    if not isinstance(dep.log_path, str):   # never open(int): that reads and closes a descriptor
        raise RuntimeFailure(f"{dep.name}: the state file's log_path is not a path")
    try:
        lines, offset = tail_lines(dep.log_path, max(0, args.lines))
    except FileNotFoundError:
        raise RuntimeFailure(f"{dep.name}: log file {dep.log_path} is missing") from None
    except OSError as exc:     # a directory, no permission, an I/O error
        raise RuntimeFailure(f"{dep.name}: cannot read log {dep.log_path}: "
                             f"{exc.strerror or type(exc).__name__}") from None
    out = sys.stdout
    for line in lines:
        out.write(line + "\n")
    out.flush()
    if not args.follow:
        return 0
    try:
        f = open(dep.log_path, "rb")
    except OSError as exc:
        raise RuntimeFailure(f"{dep.name}: cannot read log {dep.log_path}: "
                             f"{exc.strerror or type(exc).__name__}") from None
    with f:
        f.seek(offset)
        idle_dead = 0
        while True:
            chunk = f.read()
            if chunk:
                out.write(chunk.decode("utf-8", "replace"))
                out.flush()
                idle_dead = 0
                continue
            if not backend.alive(dep):
                idle_dead += 1
                if idle_dead > 3:      # drained what the last writes left
                    return 0
            time.sleep(0.2)
