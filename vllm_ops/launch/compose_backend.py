"""``vllm-ops launch --backend compose``: bring up the plan's rendered Compose file.

The file is :func:`vllm_ops.render.render` ``(plan, "compose")`` written under
``<state_dir>/compose/<name>/``, plus a small override file (``vllm-ops.compose.yml``) that adapts
it to this launch: the deployment labels (``vllm-ops.deployment``/``vllm-ops.replica``); the
command the launcher built (``--`` extra args and ``--auto-retry`` changes included) with
``--host 0.0.0.0`` (a container must listen on all its interfaces to be reached through the
published port); ``restart: "no"`` (a start that fails must fail, not loop: the launcher
diagnoses it); ``--image`` and ``--volume`` when given; and the caller's secrets
(``VLLM_API_KEY``, ``HF_TOKEN``, ...) passed through by NAME only (Compose copies the value from
its own environment: no value is written to a file or an argv). Single-replica plans only (one
readiness target); ``--backend docker`` runs one container per replica. The project is
``vllm-ops-<name>``; ``stop`` runs ``down --volumes --remove-orphans`` (containers, the project
network and its anonymous volumes go). The same staged readiness as the other backends follows:
``compose logs -f`` is appended to the deployment's log file.

A Compose implementation must be installed: the ``docker compose`` plugin or ``docker-compose``;
otherwise ``start`` fails at once with one line (exit 1) before anything starts.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from vllm_ops.errors import BadInput, RuntimeFailure
from vllm_ops.launch.docker_backend import (
    DockerBackend, DockerOptions, LABEL_DEPLOYMENT, LABEL_MANAGED, LABEL_REPLICA, PASS_ENV, container_args,
    container_name, docker_errors, parse_volume,
)
from vllm_ops.launch.state import Deployment, redact_env
from vllm_ops.planning.plan import Plan
from vllm_ops.render import render

COMPOSE_FILE = "docker-compose.yml"
OVERRIDE_FILE = "vllm-ops.compose.yml"
PROJECT_LABEL = "com.docker.compose.project"


class ComposeMissing(RuntimeFailure):
    pass


def find_compose(run=subprocess.run, which=shutil.which) -> list[str]:
    """The Compose command: ``docker compose`` (plugin) or ``docker-compose``; ComposeMissing."""
    docker = which("docker")
    if docker:
        try:
            p = run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
            if p.returncode == 0:
                return [docker, "compose"]
        except (OSError, subprocess.TimeoutExpired):
            pass
    legacy = which("docker-compose")
    if legacy:
        return [legacy]
    raise ComposeMissing("no Docker Compose found (neither the `docker compose` plugin nor "
                         "`docker-compose` is installed)",
                         hint="install one, or use --backend docker")


def override_doc(service: str, name: str, command: list[str] | None = None,
                 options: DockerOptions | None = None, caller: dict[str, str] | None = None) -> dict:
    """The override file for the rendered ``service`` (see the module doc)."""
    caller = os.environ if caller is None else caller
    options = options or DockerOptions()
    entry: dict[str, Any] = {"labels": {LABEL_DEPLOYMENT: name, LABEL_REPLICA: "0",
                                        LABEL_MANAGED: "1"},
                             "restart": "no"}
    if command is not None:
        entry["command"] = list(command)
    secrets = [k for k in PASS_ENV if caller.get(k)]
    if secrets:
        entry["environment"] = secrets
    if options.image:
        entry["image"] = options.image
    if options.volumes:
        entry["volumes"] = []
        for spec in options.volumes:
            host, target, mode = parse_volume(spec)
            entry["volumes"].append({"type": "bind", "source": host, "target": target,
                                     "read_only": mode == "ro"})
    return {"services": {service: entry}}


class ComposeBackend(DockerBackend):
    """A rendered Compose project as one deployment (its containers are found by project label)."""
    name = "compose"

    def __init__(self, options: DockerOptions | None = None, compose: list[str] | None = None,
                 client: Any = None):
        super().__init__(options, client=client)
        self._compose = compose
        self._log_procs: dict[str, subprocess.Popen] = {}

    @property
    def compose(self) -> list[str]:
        if self._compose is None:
            self._compose = find_compose()
        return self._compose

    def project_dir(self, spec_or_dep: Any) -> Path:
        return Path(spec_or_dep.log_path).parent.parent / "compose" / spec_or_dep.name

    def _cmd(self, dep: Any, *args: str) -> list[str]:
        d = self.project_dir(dep)
        return [*self.compose, "-p", container_name(dep.name), "-f", str(d / COMPOSE_FILE),
                "-f", str(d / OVERRIDE_FILE), *args]

    def start(self, spec: Any) -> Deployment:
        import yaml

        compose = self.compose          # fails (one line) before anything is written or started
        _ = self.client                 # the daemon must answer too
        plan = Plan.from_dict(json.loads(json.dumps(spec.plan or {})))
        if len(plan.replicas) > 1:
            raise BadInput(f"--backend compose launches single-replica plans; this one has "
                           f"{len(plan.replicas)}", hint="use --backend docker (one container per "
                           "replica), or `vllm-ops render --format compose` and run it yourself")
        if plan.replicas:
            plan.replicas[0].port = int(spec.port)
        art = render(plan, "compose")
        d = self.project_dir(spec)
        art.write(d)
        services = [s for s in (yaml.safe_load(art.files[COMPOSE_FILE]).get("services") or {})
                    if s != "lb"]
        for cache in ("~/.cache/huggingface", "~/.cache/vllm"):   # bind sources must exist
            Path(cache).expanduser().mkdir(parents=True, exist_ok=True)
        doc = override_doc(services[0], spec.name, container_args(spec.args, int(spec.port)),
                           self.options)
        (d / OVERRIDE_FILE).write_text(yaml.safe_dump(doc, sort_keys=False))
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(spec.log_path, "ab") as log:
            log.write(f"=== vllm-ops launch {spec.name} {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                      f"{' '.join(compose)} up -d ({d / COMPOSE_FILE})\n".encode())
        env = spec.environment()
        dep = Deployment(name=spec.name, pid=0, pgid=0, port=int(spec.port), host=spec.host,
                         served_name=spec.served_name, model_id=spec.model_id,
                         log_path=str(spec.log_path), started_at=time.time(), backend=self.name,
                         status="starting", vllm_version=spec.vllm_version,
                         argv=self._cmd(spec, "up", "-d"), env=redact_env(spec.env_added),
                         plan=spec.plan)
        try:
            p = subprocess.run(self._cmd(spec, "up", "-d"), capture_output=True, text=True, env=env,
                               cwd=d, timeout=600)
            if p.returncode != 0:
                lines = [ln for ln in (p.stderr or p.stdout).splitlines() if ln.strip()]
                raise RuntimeFailure(f"`compose up` failed: {lines[-1] if lines else p.returncode}",
                                     hint=f"compose file: {d / COMPOSE_FILE}")
            with open(spec.log_path, "ab") as log:
                self._log_procs[spec.name] = subprocess.Popen(
                    self._cmd(spec, "logs", "-f", "--no-color"), stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=d, env=env)
        except BaseException:
            self.stop(dep, 5)
            raise
        return dep

    def containers(self, dep: Deployment | str) -> list[Any]:
        name = dep if isinstance(dep, str) else dep.name
        with docker_errors("list containers"):
            return self.client.containers.list(
                all=True, filters={"label": f"{PROJECT_LABEL}={container_name(name)}"})

    def alive(self, dep: Deployment) -> bool:
        running = any(c.status in ("running", "created", "restarting") for c in self.containers(dep))
        proc = self._log_procs.get(dep.name)
        if not running and proc is not None:   # let `compose logs -f` write the last lines
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        return running

    def stop(self, dep: Deployment, grace: float = 20.0) -> bool:
        proc = self._log_procs.pop(dep.name, None)
        d = self.project_dir(dep)
        if (d / COMPOSE_FILE).exists():
            p = subprocess.run(self._cmd(dep, "down", "--volumes", "--remove-orphans",
                                         "-t", str(max(1, int(grace)))),
                               capture_output=True, text=True, cwd=d, timeout=grace + 120)
            if p.returncode != 0:
                lines = [ln for ln in (p.stderr or p.stdout).splitlines() if ln.strip()]
                raise RuntimeFailure(f"`compose down` failed: {lines[-1] if lines else p.returncode}")
        for c in self.containers(dep):   # anything compose left (e.g. a half-created project)
            self._remove(c)
        if proc is not None:
            with contextlib.suppress(Exception):
                proc.terminate()
                proc.wait(5)
        return False
