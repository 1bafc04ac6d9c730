"""Launch backends: how a vLLM process is started, watched and stopped.

:class:`LaunchBackend` is the protocol; :class:`ProcessBackend` runs vLLM as a local process in
its own session (so its process group holds the API server, the engine core and every worker,
and stopping kills them all). A Docker backend can implement the same four methods.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, Sequence

from vllm_ops.errors import BadInput, RuntimeFailure
from vllm_ops.launch import procs
from vllm_ops.launch.state import Deployment, redact_env


@dataclass
class LaunchSpec:
    """Everything needed to start one vLLM server."""
    name: str
    argv: list[str]                      # the local command: entry point (+ prefix) + args
    env_added: dict[str, str]            # variables vllm-ops sets on top of its own environment
    log_path: Path
    port: int
    host: str
    served_name: str
    model_id: str
    vllm_version: str | None = None
    plan: dict[str, Any] | None = None
    env_removed: tuple[str, ...] = ()    # variables not passed on
    extra: dict[str, Any] = field(default_factory=dict)
    state_dir: str | None = None         # the StateStore root (default: the log's logs/ parent)
    args: list[str] = field(default_factory=list)   # vLLM's arguments alone (planning.argv.serve_args + `--`)
    cpu: bool = False                    # the plan's: the CPU build
    gpu_ids: list[int] = field(default_factory=list)  # the replica's GPUs (host numbering)
    image: str = ""                      # the plan's image (container backends)

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in self.env_removed}
        env.update(self.env_added)
        env.setdefault("PYTHONUNBUFFERED", "1")  # lines reach the log (and the progress) at once
        return env


class LaunchBackend(Protocol):
    name: str

    def start(self, spec: LaunchSpec) -> Deployment: ...

    def alive(self, dep: Deployment) -> bool: ...

    def exit_code(self, dep: Deployment) -> int | None: ...

    def stop(self, dep: Deployment, grace: float = 20.0) -> bool: ...


class ProcessBackend:
    """vLLM as a local process: ``start_new_session=True``, stdout+stderr appended to the log.

    vLLM's environment carries ``VLLM_OPS_DEPLOYMENT=<name>`` and ``VLLM_OPS_STATE_DIR=<dir>``
    (:func:`procs.marker_env`; inherited by the engine core and workers): a deployment whose state
    file was deleted or truncated is still found in /proc (:func:`procs.marked_groups`)."""
    name = "process"

    def __init__(self) -> None:
        self._children: dict[int, subprocess.Popen] = {}

    def start(self, spec: LaunchSpec) -> Deployment:
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(spec.log_path, "ab") as log:
            header = (f"=== vllm-ops launch {spec.name} {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                      f"{shlex.join(spec.argv)}\n")
            log.write(header.encode())
            log.flush()
            env = spec.environment()
            env.update(procs.marker_env(spec.name, spec.state_dir or Path(spec.log_path).parent.parent))
            try:
                proc = subprocess.Popen(spec.argv, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env,
                                        start_new_session=True, close_fds=True)
            except OSError as exc:
                raise RuntimeFailure(f"cannot start vLLM ({spec.argv[0]}): {exc.strerror}",
                                     hint="check VLLM_OPS_VLLM") from exc
        self._children[proc.pid] = proc
        return Deployment(
            name=spec.name, pid=proc.pid, pgid=proc.pid, port=spec.port, host=spec.host,
            served_name=spec.served_name, model_id=spec.model_id, log_path=str(spec.log_path),
            started_at=time.time(), backend=self.name, status="starting",
            pid_start_ticks=procs.start_ticks(proc.pid), vllm_version=spec.vllm_version,
            argv=list(spec.argv), env=redact_env(spec.env_added), plan=spec.plan)

    def alive(self, dep: Deployment) -> bool:
        child = self._children.get(dep.pid)
        if child is not None:
            return child.poll() is None
        return procs.alive(dep.pid, dep.pid_start_ticks)

    def exit_code(self, dep: Deployment) -> int | None:
        child = self._children.get(dep.pid)
        return child.poll() if child is not None else None

    def stop(self, dep: Deployment, grace: float = 20.0) -> bool:
        """Stop the whole process group; True when something had to be killed with SIGKILL.

        Nothing is signalled when the recorded pid now names another process (its start time
        differs from ``pid_start_ticks``: a recycled pid) or when the recorded group is one that
        must never be signalled (0, 1, vllm-ops' own: :func:`procs.signalable_group`). Leftover
        members of the group (the API server died, its workers did not) are stopped only when
        they started no earlier than the recorded leader."""
        ticks = dep.pid_start_ticks
        recycled = ticks is not None and procs.start_ticks(dep.pid) not in (None, ticks)
        if recycled or not procs.signalable_group(dep.pgid):
            self._reap(dep)
            return False
        if not self.alive(dep) and not procs.group_members(dep.pgid, ticks):
            self._reap(dep)
            return False
        killed = procs.stop_group(dep.pgid, grace, min_ticks=ticks)
        self._reap(dep)
        return killed

    def _reap(self, dep: Deployment) -> None:
        child = self._children.pop(dep.pid, None)
        if child is not None:
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover - killed above
                pass


class PrefixedProcessBackend:
    """A :class:`ProcessBackend` with vLLM started under a command prefix (``ssh host``, ``ip netns
    exec ns``); ``name`` is what the deployment records (process, ray, native, native-worker)."""

    def __init__(self, prefix: Sequence[str] = (), name: str = "ray"):
        self._inner = ProcessBackend()
        self.prefix = list(prefix)
        self.name = name

    def start(self, spec: LaunchSpec) -> Deployment:
        spec = replace(spec, argv=[*self.prefix, *spec.argv])
        dep = self._inner.start(spec)
        dep.backend = self.name
        return dep

    def alive(self, dep: Deployment) -> bool:
        return self._inner.alive(dep)

    def exit_code(self, dep: Deployment) -> int | None:
        return self._inner.exit_code(dep)

    def stop(self, dep: Deployment, grace: float = 20.0) -> bool:
        return self._inner.stop(dep, grace)


BACKENDS = ("process", "docker", "compose", "ray")   # what `launch --backend` offers


def backend_for(name: str, **options: Any) -> LaunchBackend:
    """The backend ``launch --backend NAME`` uses, or the one that manages a deployment recorded
    with ``dep.backend == NAME`` (status/logs/stop). ``options``: the container options
    (``image=``, ``volumes=``, ``shm_size=``; None values are left at their defaults) for
    docker/compose, ``prefix=`` (a command prefix such as ``ssh host``) for the process kinds.

    process, ray (vLLM's API server is a local process; its Ray nodes are stopped with the
    deployment by :func:`vllm_ops.launch.lifecycle.stop`), native and native-worker (vLLM's own
    multi-node mode: each rank is a local process group) are process groups; docker and
    compose are containers. An unknown name is BadInput."""
    opts = {k: v for k, v in options.items() if v is not None}
    if name in ("docker", "compose"):
        from vllm_ops.launch.docker_backend import DockerBackend, DockerOptions

        dopts = DockerOptions(**{k: v for k, v in opts.items() if k != "prefix"})
        if name == "compose":
            from vllm_ops.launch.compose_backend import ComposeBackend

            return ComposeBackend(dopts)
        return DockerBackend(dopts)
    if name == "process" and not opts.get("prefix"):
        return ProcessBackend()
    if name in ("process", "ray", "native", "native-worker"):
        return PrefixedProcessBackend(opts.get("prefix") or (), name=name)
    raise BadInput(f"unknown launch backend {name!r}", hint="one of: " + ", ".join(BACKENDS))
