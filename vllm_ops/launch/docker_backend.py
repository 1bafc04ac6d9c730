"""The docker backend of ``vllm-ops launch``: one container per replica, through the Docker SDK.

It implements :class:`vllm_ops.launch.backend.LaunchBackend` (``start``/``alive``/``exit_code``/
``stop``), so :func:`vllm_ops.launch.launcher.launch` drives it exactly like the process backend:
the same staged readiness, progress, diagnosis and calibration. Differences:

- ``start`` turns the spec into a container: the plan's image (the planner pins
  ``vllm/vllm-openai:v<version>`` on GPU hosts, ``vllm/vllm-openai-cpu:v<version>`` for CPU plans)
  or :attr:`DockerOptions.image`; the spec's vLLM args become the container's command
  (the image's ENTRYPOINT is ``vllm serve``), with ``--host 0.0.0.0 --port 8000`` inside and
  8000 published on the spec's host port; GPUs as an nvidia device request with the replica's
  GPU ids (``spec.gpu_ids``; ``CUDA_VISIBLE_DEVICES`` is not passed in: inside, they count from 0);
  ``ipc_mode="host"`` (or ``shm_size``); ``~/.cache/huggingface`` bound to
  ``/root/.cache/huggingface``; local model/tokenizer directories bound read-only at the same
  path; extra ``--volume`` binds; labels ``vllm-ops.deployment=<name>``, ``vllm-ops.replica=<i>``.
- The container's environment is only what vllm-ops adds (the plan's ``env``) plus the caller's
  secrets (``VLLM_API_KEY``, ``HF_TOKEN``, ...): container env, never its command line.
- The container's log stream is appended to the deployment's log file by a thread, so the
  launcher's log reader, progress and diagnosis work unchanged; after ``launch`` returns,
  :meth:`DockerBackend.logs` reads the log from Docker (works from another shell).
- ``stop`` stops AND removes the container; ``status``/``logs``/``stop`` find containers by the
  deployment label (and the recorded container id), so they work from another shell.

The ``docker`` package is imported only when this backend is used. Docker's errors become
one-line :class:`~vllm_ops.errors.RuntimeFailure` subclasses (:func:`docker_errors`).
"""
from __future__ import annotations

import contextlib
import os
import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from vllm_ops.errors import BadInput, RuntimeFailure
from vllm_ops.launch.state import Deployment, redact_env
from vllm_ops.planning.argv import drop, model_as_flag, value_of

CONTAINER_PORT = 8000
CONTAINER_HF_CACHE = "/root/.cache/huggingface"
LABEL_DEPLOYMENT = "vllm-ops.deployment"
LABEL_REPLICA = "vllm-ops.replica"
LABEL_MANAGED = "vllm-ops.managed"
# caller environment passed into the container when set (secrets: env only, never argv)
PASS_ENV: tuple[str, ...] = ("VLLM_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT",
                             "HF_HUB_OFFLINE")
# variables that must not reach the container (device numbering restarts at 0 inside)
_HOST_ONLY_ENV = ("CUDA_VISIBLE_DEVICES",)
_PATH_FLAGS = ("--model", "--tokenizer", "--chat-template", "--download-dir")


class DockerUnavailable(RuntimeFailure):
    """The Docker daemon cannot be reached (not running, wrong DOCKER_HOST, no permission)."""


class ImageUnavailable(RuntimeFailure):
    """The image is not on this host and could not be pulled."""


class ContainerFailure(RuntimeFailure):
    """Docker refused to create or start the container."""


@dataclass
class DockerOptions:
    image: str | None = None                 # --image: wins over the plan's
    volumes: list[str] = field(default_factory=list)   # "HOST:CONTAINER[:ro|rw]" binds
    hf_cache: str | None = "~/.cache/huggingface"      # None: no HF cache bind
    shm_size: str | None = None              # set: --shm-size instead of --ipc=host
    pull: bool = True                        # pull a missing image (else fail at once)
    env: dict[str, str] = field(default_factory=dict)  # extra container env
    gpu_driver: str = "nvidia"


# ------------------------------------------------------------------------- pure helpers
def container_args(args: Sequence[str], port: int = CONTAINER_PORT) -> list[str]:
    """The container's command from vLLM's arguments (``spec.args``, model positional or
    ``--model M``): ``--model M ...`` with ``--host``/``--port`` replaced by the container's own
    (0.0.0.0:``port``)."""
    rest = model_as_flag(drop(list(args), ("--host", "--port")))
    return [*rest, "--host", "0.0.0.0", "--port", str(port)]


def parse_volume(spec: str) -> tuple[str, str, str]:
    """``HOST:CONTAINER[:ro|rw]`` → (absolute host path, container path, mode)."""
    parts = spec.split(":")
    if len(parts) == 2:
        parts.append("rw")
    if len(parts) != 3 or parts[2] not in ("ro", "rw") or not parts[0] or not parts[1].startswith("/"):
        raise BadInput(f"bad volume {spec!r}", hint="use HOST:CONTAINER or HOST:CONTAINER:ro")
    return str(Path(parts[0]).expanduser().resolve()), parts[1], parts[2]


def binds_for(args: Sequence[str], opts: DockerOptions) -> dict[str, dict[str, str]]:
    """The SDK's ``volumes=`` mapping: HF cache, local model paths (read-only), extra volumes."""
    binds: dict[str, dict[str, str]] = {}
    if opts.hf_cache:
        cache = Path(opts.hf_cache).expanduser()
        cache.mkdir(parents=True, exist_ok=True)
        binds[str(cache.resolve())] = {"bind": CONTAINER_HF_CACHE, "mode": "rw"}
    for flag in _PATH_FLAGS:
        value = value_of(args, flag)
        if value and value.startswith("/") and os.path.exists(value):
            binds.setdefault(value, {"bind": value, "mode": "ro"})
    for spec in opts.volumes:
        host, target, mode = parse_volume(spec)
        binds[host] = {"bind": target, "mode": mode}
    return binds


def container_env(env_added: dict[str, str], removed: Sequence[str] = (),
                  extra: dict[str, str] | None = None,
                  caller: dict[str, str] | None = None) -> dict[str, str]:
    """What the container's environment holds: the caller's secrets (``PASS_ENV``), then what
    vllm-ops adds; host-only variables (``CUDA_VISIBLE_DEVICES``) are left out."""
    caller = os.environ if caller is None else caller
    env = {k: caller[k] for k in PASS_ENV if caller.get(k) and k not in removed}
    env.update({k: v for k, v in env_added.items() if k not in _HOST_ONLY_ENV})
    env.update(extra or {})
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def replica_index(name: str) -> int:
    """The launcher names replica i>0 ``<name>-r<i>``."""
    head, sep, tail = name.rpartition("-r")
    return int(tail) if sep and head and tail.isdigit() else 0


def container_name(deployment: str) -> str:
    return f"vllm-ops-{deployment}"


# ---------------------------------------------------------------------- errors mapping
def _host_label() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


@contextlib.contextmanager
def docker_errors(what: str) -> Iterator[None]:
    """Re-raise the Docker SDK's errors as one-line RuntimeFailures (``from`` the original)."""
    import docker.errors
    import requests.exceptions

    try:
        yield
    except (docker.errors.NotFound, docker.errors.ImageNotFound):
        raise
    except docker.errors.APIError as exc:
        msg = " ".join(str(exc.explanation or exc).split())
        raise ContainerFailure(f"docker {what} failed: {msg}") from exc
    except (requests.exceptions.ConnectionError, docker.errors.DockerException,
            ConnectionError, FileNotFoundError) as exc:
        raise DockerUnavailable(f"cannot reach the Docker daemon at {_host_label()} ({what})",
                                hint="start dockerd / the Docker service, or set DOCKER_HOST") from exc


def connect(timeout: int = 60):
    """A ``docker.DockerClient`` from the environment, pinged; DockerUnavailable otherwise."""
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - a dependency of vllm-ops
        raise RuntimeFailure("the docker backend needs the Python package 'docker'",
                             hint="pip install docker") from exc
    with docker_errors("connect"):
        client = docker.from_env(timeout=timeout)
        client.ping()
    return client


# ---------------------------------------------------------------------------- backend
class DockerBackend:
    """vLLM in containers (one per replica). See the module doc."""
    name = "docker"

    def __init__(self, options: DockerOptions | None = None, client: Any = None):
        self.options = options or DockerOptions()
        self._client = client
        self._followers: dict[str, threading.Thread] = {}

    @property
    def client(self):
        if self._client is None:
            self._client = connect()
        return self._client

    # -- LaunchBackend -----------------------------------------------------------------
    def start(self, spec: Any) -> Deployment:
        import docker.errors

        image = self.options.image or spec.image
        if not image:
            raise BadInput(f"{spec.name}: the plan names no image", hint="pass --image")
        args = container_args(spec.args)
        env = container_env(spec.env_added, spec.env_removed, self.options.env)
        gpus = [] if spec.cpu else [str(g) for g in spec.gpu_ids]
        binds = binds_for(args, self.options)
        publish_host = spec.host if spec.host not in ("", "0.0.0.0", "::") else "0.0.0.0"
        name = container_name(spec.name)
        client = self.client
        self._ensure_image(image)
        self._remove_leftover(name, spec.name)
        kwargs: dict[str, Any] = dict(
            image=image, command=args, name=name, detach=True, environment=env,
            labels={LABEL_DEPLOYMENT: spec.name,
                    LABEL_REPLICA: str(spec.extra.get("replica", replica_index(spec.name))),
                    LABEL_MANAGED: "1"},
            ports={f"{CONTAINER_PORT}/tcp": (publish_host, int(spec.port))},
            volumes=binds, stdin_open=False, tty=False)
        if gpus:
            kwargs["device_requests"] = [docker.types.DeviceRequest(
                driver=self.options.gpu_driver, device_ids=gpus, capabilities=[["gpu"]])]
        if self.options.shm_size:
            kwargs["shm_size"] = self.options.shm_size
        else:
            kwargs["ipc_mode"] = "host"
        if spec.cpu:  # vLLM's documented CPU container settings (NUMA binding)
            kwargs["cap_add"] = ["SYS_NICE"]
            kwargs["security_opt"] = ["seccomp=unconfined"]

        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(spec.log_path, "ab") as log:
            log.write((f"=== vllm-ops launch {spec.name} {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                       f"docker run {image} {shlex.join(args)}\n").encode())
        container = None
        try:
            with docker_errors(f"create container {name}"):
                container = client.containers.create(**kwargs)
            with docker_errors(f"start container {name}"):
                container.start()
                container.reload()
            self._follow(container, spec.log_path)
        except BaseException:
            if container is not None:
                self._remove(container)
            raise
        # pid/pgid 0: no local process (state.check_deployment_dict); nothing is ever signalled
        # by pid for a container: the container id/name and the labels identify it
        dep = Deployment(
            name=spec.name, pid=0, pgid=0, port=int(spec.port),
            host=publish_host, served_name=spec.served_name, model_id=spec.model_id,
            log_path=str(spec.log_path), started_at=time.time(), backend=self.name,
            status="starting", vllm_version=spec.vllm_version,
            argv=["docker", "run", "--name", name, image, *args], env=redact_env(env), plan=spec.plan)
        _set_if_field(dep, container_id=container.id, container_name=name, image=image)
        return dep

    def alive(self, dep: Deployment) -> bool:
        running = any(c.status in ("running", "created", "restarting") for c in self.containers(dep))
        if not running:
            self._drain(dep.name)
        return running

    def exit_code(self, dep: Deployment) -> int | None:
        for c in self.containers(dep):
            state = c.attrs.get("State") or {}
            if c.status in ("exited", "dead"):
                return int(state.get("ExitCode", 0))
        return None

    def stop(self, dep: Deployment, grace: float = 20.0) -> bool:
        """Stop and remove the deployment's containers; True when one had to be killed."""
        killed = False
        for c in self.containers(dep):
            with docker_errors(f"stop container {c.name}"):
                if c.status == "running":
                    t0 = time.monotonic()
                    c.stop(timeout=max(1, int(grace)))
                    c.reload()
                    state = c.attrs.get("State") or {}
                    killed = killed or (state.get("ExitCode") == 137
                                        and time.monotonic() - t0 >= grace)
            self._remove(c)
        self._drain(dep.name)
        return killed

    # -- beyond the protocol: status / logs from another shell --------------------------
    def containers(self, dep: Deployment | str) -> list[Any]:
        """The deployment's containers (by recorded id, else by the deployment label)."""
        import docker.errors

        name = dep if isinstance(dep, str) else dep.name
        cid = None if isinstance(dep, str) else getattr(dep, "container_id", None)
        with docker_errors("list containers"):
            if cid:
                try:
                    return [self.client.containers.get(cid)]
                except docker.errors.NotFound:
                    pass
            return self.client.containers.list(all=True, filters={"label": f"{LABEL_DEPLOYMENT}={name}"})

    def describe(self, dep: Deployment) -> list[dict[str, Any]]:
        """One dict per container: id, name, image, status, exit code (for ``status --json``)."""
        out = []
        for c in self.containers(dep):
            state = c.attrs.get("State") or {}
            out.append({"id": c.id[:12], "name": c.name, "status": c.status,
                        "image": (c.attrs.get("Config") or {}).get("Image"),
                        "replica": c.labels.get(LABEL_REPLICA),
                        "exit_code": state.get("ExitCode") if c.status == "exited" else None})
        return out

    def logs(self, dep: Deployment, tail: int | None = None, follow: bool = False) -> Iterator[str]:
        """The container log as text chunks (the deployment's log file when no container is left)."""
        found = self.containers(dep)
        if not found:
            path = Path(dep.log_path)
            if path.exists():
                lines = path.read_text(errors="replace").splitlines(keepends=True)
                yield "".join(lines[-tail:] if tail else lines)
            return
        with docker_errors("read container logs"):
            stream = found[0].logs(stream=True, follow=follow, tail=tail if tail else "all")
            for chunk in stream:
                yield chunk.decode("utf-8", "replace")

    # -- internals ----------------------------------------------------------------------
    def _ensure_image(self, image: str) -> None:
        import docker.errors

        with docker_errors(f"inspect image {image}"):
            try:
                self.client.images.get(image)
                return
            except docker.errors.ImageNotFound:
                pass
        if not self.options.pull:
            raise ImageUnavailable(f"image {image} is not on this host",
                                   hint="docker pull it, docker load it, or pass --image")
        repo, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
        try:
            with docker_errors(f"pull {image}"):
                self.client.images.pull(repo, tag=tag)
        except (ContainerFailure, docker.errors.NotFound, docker.errors.ImageNotFound) as exc:
            reason = " ".join(str(getattr(exc, "explanation", None) or exc).split())
            raise ImageUnavailable(
                f"image {image} is not on this host and `docker pull {image}` failed: {reason[:200]}",
                hint="no registry reachable? docker load the image, or pass --image") from exc

    def _remove_leftover(self, cname: str, deployment: str) -> None:
        """A stopped container of the same name (a crashed earlier run) is removed; a running
        one means the deployment is already up."""
        import docker.errors

        with docker_errors(f"inspect container {cname}"):
            try:
                old = self.client.containers.get(cname)
            except docker.errors.NotFound:
                return
        if old.status == "running":
            raise BadInput(f"container {cname} of deployment {deployment} is already running",
                           hint=f"vllm-ops stop {deployment}, or pass --name")
        self._remove(old)

    def _remove(self, container: Any) -> None:
        import docker.errors

        with docker_errors(f"remove container {getattr(container, 'name', '?')}"):
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass

    def _log_stream(self, container: Any) -> tuple[Iterator[bytes], Any]:
        """(chunks of the container's log, following it; a closer). On its own connection:
        one client is not shared between threads."""
        import docker

        api = docker.from_env(timeout=60).api
        return api.logs(container.id, stream=True, follow=True), api

    def _follow(self, container: Any, log_path: Path) -> None:
        """Append the container's log stream to ``log_path`` until the container ends."""
        with docker_errors("follow container logs"):
            stream, closer = self._log_stream(container)

        def run() -> None:
            try:
                with open(log_path, "ab") as out:
                    for chunk in stream:
                        out.write(chunk)
                        out.flush()
            except Exception:  # noqa: BLE001 — the container went away; alive() reports it
                pass
            finally:
                with contextlib.suppress(Exception):
                    closer.close()

        name = container.labels.get(LABEL_DEPLOYMENT) or container.name
        t = threading.Thread(target=run, name=f"docker-logs-{name}", daemon=True)
        t.start()
        self._followers[name] = t

    def _drain(self, name: str, timeout: float = 5.0) -> None:
        """Let the log follower write the last lines of a container that ended."""
        t = self._followers.get(name)
        if t is not None:
            t.join(timeout)
            if not t.is_alive():
                self._followers.pop(name, None)


def _set_if_field(dep: Deployment, **values: Any) -> None:
    """Record values on Deployment fields that exist (``container_id`` etc. are optional)."""
    from dataclasses import fields

    known = {f.name for f in fields(dep)}
    for k, v in values.items():
        if k in known:
            setattr(dep, k, v)
