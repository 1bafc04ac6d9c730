"""Deployment state on disk, so `status`, `logs` and `stop` work from another shell.

Layout under the state directory (``VLLM_OPS_STATE_DIR``, default ``~/.local/state/vllm-ops``)::

    deployments/<name>.json     one Deployment (written atomically: tmp file + os.replace)
    logs/<name>.log             vLLM's stdout+stderr, appended across restarts of that name
    calibration.jsonl           predicted-vs-actual memory records (launch.calibration)

A local vLLM process also carries ``VLLM_OPS_DEPLOYMENT=<name>`` and ``VLLM_OPS_STATE_DIR=<dir>``
in its environment (:mod:`.procs` ``marker_env``): when its state file is deleted or unreadable,
``status`` still finds it in /proc (orphaned) and ``stop NAME`` still stops it.

A state file never holds a secret: environment values whose names look secret are stored as
``"***"`` and argv never carries one (keys travel to vLLM through its environment).
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from vllm_ops.errors import BadInput, MalformedFile
from vllm_ops.launch.procs import PID_LIMIT

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.I)


def default_state_dir() -> Path:
    """``VLLM_OPS_STATE_DIR`` or ``~/.local/state/vllm-ops`` (same rule as ``OpsSettings.state_dir``;
    read directly so the planner's calibration lookup does not import pydantic-settings)."""
    env = os.environ.get("VLLM_OPS_STATE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".local" / "state" / "vllm-ops"


def redact_env(env: dict[str, str]) -> dict[str, str]:
    return {k: ("***" if _SECRET.search(k) else v) for k, v in env.items()}


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise BadInput(f"invalid deployment name {name!r}",
                       hint="letters, digits, '.', '_' and '-', starting with a letter or digit")
    return name


def default_name(served_name: str, port: int) -> str:
    """``<served-name>-<port>`` made safe for a file name (``Qwen/Qwen2.5-7B`` → ``Qwen2.5-7B-8000``)."""
    base = served_name.rstrip("/").rsplit("/", 1)[-1]
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or "vllm"
    return f"{base}-{port}"


# backends whose deployment is a local process group (pid/pgid >= 2); the others (docker,
# compose) record pid 0: nothing is ever signalled by pid for them
PROCESS_BACKENDS = frozenset({"process", "ray", "native", "native-worker"})
WORKER_BACKENDS = frozenset({"native-worker"})        # a rank without an API server (port 0)


@dataclass
class Deployment:
    name: str
    pid: int
    pgid: int
    port: int
    host: str
    served_name: str
    model_id: str
    log_path: str
    started_at: float                         # epoch seconds
    backend: str = "process"                  # process | docker | compose | ray | native | native-worker
    status: str = "starting"                  # starting | ready | failed | stopped
    pid_start_ticks: int | None = None        # /proc/<pid>/stat field 22: guards against PID reuse
    ready_at: float | None = None
    vllm_version: str | None = None
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)   # what vllm-ops added (secrets redacted)
    plan: dict[str, Any] | None = None
    figures: dict[str, Any] | None = None     # actual memory figures read from the log
    diagnosis: dict[str, Any] | None = None
    container_id: str | None = None           # docker/compose (else found by label)
    container_name: str | None = None
    image: str | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Deployment":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class StateStore:
    """The deployments/logs/calibration files under one state directory."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root else default_state_dir()
        self.deployments = self.root / "deployments"
        self.logs = self.root / "logs"

    @property
    def calibration_path(self) -> Path:
        return self.root / "calibration.jsonl"

    def path(self, name: str) -> Path:
        return self.deployments / f"{check_name(name)}.json"

    def log_path(self, name: str) -> Path:
        return self.logs / f"{check_name(name)}.log"

    def save(self, dep: Deployment) -> None:
        self.deployments.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path(dep.name), json.dumps(dep.to_dict(), indent=2, default=str) + "\n")

    def _read(self, name: str) -> Any:
        """The parsed JSON of ``name``'s state file; KeyError / MalformedFile (unreadable, not JSON)."""
        p = self.path(name)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise KeyError(name) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise MalformedFile(f"state file {p} cannot be read ({type(exc).__name__})",
                                hint=f"remove it: rm {p}") from None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise MalformedFile(f"state file {p} is corrupted ({type(exc).__name__})",
                                hint=f"remove it: rm {p}") from None

    def load(self, name: str) -> Deployment:
        """The deployment called ``name``; KeyError when there is none, MalformedFile when its
        state file cannot be read or does not hold a well-typed deployment (see
        :func:`check_deployment_dict`): status then lists it as unreadable (or partly corrupted,
        :meth:`load_for_stop`), and nothing is ever signalled through a field that is wrong."""
        data = self._read(name)
        p = self.path(name)
        try:
            check_deployment_dict(data)
            return Deployment.from_dict(data)
        except (ValueError, TypeError) as exc:
            detail = str(exc) if isinstance(exc, _BadField) else type(exc).__name__
            raise MalformedFile(f"state file {p} is corrupted ({detail})",
                                hint=f"remove it: rm {p}") from None

    def load_for_stop(self, name: str) -> tuple[Deployment, list[str]]:
        """What ``stop`` needs of ``name``'s state file: (deployment, broken fields).

        A well-formed file gives the full deployment and ``[]``. Otherwise the minimal view
        (:func:`stop_view`): pid, pgid, pid_start_ticks, backend and the container ids must be
        valid (checked as strictly as by :func:`check_deployment_dict`); every other field that
        is wrong is replaced by a harmless default and named in the list (for a warning).
        KeyError: no file; MalformedFile: not even the minimal view is valid."""
        data = self._read(name)
        try:
            check_deployment_dict(data)
            return Deployment.from_dict(data), []
        except (ValueError, TypeError):
            pass
        try:
            return stop_view(data, name)
        except _BadField as exc:
            p = self.path(name)
            raise MalformedFile(f"state file {p} is corrupted ({exc})", hint=f"remove it: rm {p}") from None

    def remove(self, name: str) -> None:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            pass

    def names(self) -> list[str]:
        if not self.deployments.is_dir():
            return []
        return sorted(p.stem for p in self.deployments.glob("*.json"))

    def all(self) -> list[tuple[str, Deployment | None, str | None]]:
        """Every state file: (name, deployment or None, error or None) — a corrupted file is
        reported, not fatal."""
        out: list[tuple[str, Deployment | None, str | None]] = []
        for name in self.names():
            try:
                out.append((name, self.load(name), None))
            except MalformedFile as exc:
                out.append((name, None, exc.one_line()))
            except KeyError:  # removed between listing and reading
                continue
        return out


class _BadField(ValueError):
    """A state file field of the wrong type or out of range (the message names it)."""


def _int_in(d: dict, key: str, lo: int, hi: int) -> None:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _BadField(f"{key!r} must be an integer in {lo}..{hi}, not {str(v)[:40]!r}")


def _int_problem(d: dict, key: str, lo: int, hi: int) -> str | None:
    try:
        _int_in(d, key, lo, hi)
    except _BadField as exc:
        return str(exc)
    return None


# the fields `stop` acts through: they must be right even in a partly corrupted file
STOP_FIELDS = ("backend", "pid", "pgid", "pid_start_ticks", "container_id", "container_name")


def _problems(d: dict) -> list[tuple[str, str]]:
    """(field, what is wrong) for every wrong field of a state file's object, in a fixed order."""
    out: list[tuple[str, str]] = []
    required = [f.name for f in fields(Deployment) if f.default is MISSING and f.default_factory is MISSING]
    for key in required:
        if key not in d:
            out.append((key, f"missing {key}"))
    for key in ("name", "host", "served_name", "model_id"):
        if key in d and not isinstance(d[key], str):
            out.append((key, f"{key!r} must be a string"))
    backend = d.get("backend", "process")
    if not isinstance(backend, str):
        out.append(("backend", "'backend' must be a string"))
    low = 2 if isinstance(backend, str) and backend in PROCESS_BACKENDS else 0
    for key, lo, hi in (("pid", low, PID_LIMIT), ("pgid", low, PID_LIMIT), ("port", 0, 65535)):
        problem = key in d and _int_problem(d, key, lo, hi)
        if problem:
            out.append((key, problem))
    if d.get("pid_start_ticks") is not None:
        problem = _int_problem(d, "pid_start_ticks", 0, 2**63 - 1)
        if problem:
            out.append(("pid_start_ticks", problem))
    if "started_at" in d and (isinstance(d["started_at"], bool) or not isinstance(d["started_at"], (int, float))
                              or d["started_at"] != d["started_at"]):
        out.append(("started_at", "'started_at' must be a number (epoch seconds)"))
    if "log_path" in d and (not isinstance(d["log_path"], str) or not d["log_path"] or "\0" in d["log_path"]):
        out.append(("log_path", "'log_path' must be a file path (a string)"))
    for key in ("container_id", "container_name"):
        v = d.get(key)
        if v is not None and (not isinstance(v, str) or not v or "\0" in v):
            out.append((key, f"{key!r} must be a string or null"))
    return out


def check_deployment_dict(d: Any) -> None:
    """Raise ValueError unless ``d`` is a state file's object with well-typed fields.

    The fields `status`/`stop`/`logs` act on are checked strictly, because a corrupted file
    must never become a signal to the wrong process or an ``open()`` of the wrong thing:
    ``pid``/``pgid`` ints in 0..PID_LIMIT (0 = no local process, container backends; a
    ``process`` backend needs both >= 2), ``port`` 1..65535 (0 allowed for a worker without a
    server), ``started_at`` a number, ``log_path`` a non-empty string, ``pid_start_ticks`` an
    int or null, ``host``/``name``/``served_name``/``model_id`` strings, the container id/name
    strings or null."""
    if not isinstance(d, dict):
        raise _BadField(f"a JSON object expected, not {type(d).__name__}")
    problems = _problems(d)
    missing = [k for k, msg in problems if msg == f"missing {k}"]
    if missing:
        raise _BadField("missing " + ", ".join(missing))
    if problems:
        raise _BadField(problems[0][1])


def stop_view(d: Any, name: str) -> tuple[Deployment, list[str]]:
    """The minimal validated view of a partly corrupted state file that ``stop`` acts through:
    (deployment, names of the broken fields). ``pid``/``pgid``/``pid_start_ticks``/``backend``/
    the container ids must be valid, and a process backend needs ``pid_start_ticks`` (_BadField
    otherwise: nothing is stopped through the file);
    the name is the file's; every other wrong field gets a harmless default (port 0, no log
    path, started_at 0) and the extras (plan, argv, env, ...) are dropped."""
    if not isinstance(d, dict):
        raise _BadField(f"a JSON object expected, not {type(d).__name__}")
    problems = _problems(d)
    fatal = [msg for key, msg in problems if key in STOP_FIELDS]
    if fatal:
        raise _BadField(fatal[0])
    if d.get("backend", "process") in PROCESS_BACKENDS and d.get("pid_start_ticks") is None:
        # without the leader's start time nothing tells its pgid from any other group's
        raise _BadField("no 'pid_start_ticks': a partly corrupted file is trusted only with its start time")
    broken = sorted({key for key, _ in problems} | {k for k in ("name",) if d.get("name", name) != name})
    ok = {k: d[k] for k in ("host", "served_name", "model_id", "port", "started_at", "log_path", "image")
          if k in d and k not in broken and (k != "image" or isinstance(d[k], str))}
    dep = Deployment(name=name, pid=d["pid"], pgid=d["pgid"], port=ok.get("port", 0), host=ok.get("host", ""),
                     served_name=ok.get("served_name", ""), model_id=ok.get("model_id", ""),
                     log_path=ok.get("log_path", ""), started_at=ok.get("started_at", 0.0),
                     backend=d.get("backend", "process"), status="starting",
                     pid_start_ticks=d.get("pid_start_ticks"), container_id=d.get("container_id"),
                     container_name=d.get("container_name"), image=ok.get("image"))
    return dep, broken


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def uptime_s(dep: Deployment, now: float | None = None) -> float:
    return max(0.0, (now or time.time()) - dep.started_at)
