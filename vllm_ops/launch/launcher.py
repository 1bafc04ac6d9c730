"""Start vLLM from a Plan and wait until it is ready, in stages; diagnose a failed start.

    launch(plan, LaunchOptions(...)) -> LaunchResult

Stages: process running → ``/health`` 200 → ``/v1/models`` lists the served name → a
validation request answers. While it starts, vLLM's log is read as it grows and the stages it
passes (weights loading, memory profiling, KV cache sized, CUDA graph capture, API server up)
go to ``progress``. When ready, the memory figures vLLM printed are stored beside the plan's
prediction (state file and ``calibration.jsonl``). When the process dies or the readiness
timeout passes, the log is diagnosed (:mod:`.diagnosis`), the process group is stopped, and
:class:`LaunchFailed` carries the diagnosis; ``auto_retry`` applies its change once first.
"""
from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from vllm_ops.errors import BadInput, RuntimeFailure, VllmOpsError
from vllm_ops.launch import calibration, procs
from vllm_ops.launch.backend import LaunchBackend, LaunchSpec, ProcessBackend
from vllm_ops.launch.diagnosis import Change, Context, Diagnosis, diagnose
from vllm_ops.launch.locate import VllmCommand
from vllm_ops.launch.logparse import StartupLog
from vllm_ops.launch.state import Deployment, StateStore, check_name, default_name
from vllm_ops.planning.argv import OPEN_HOSTS, parse_flags, serve_args, served_name, strip_flags
from vllm_ops.planning.argv import split_secret_args as split_secrets
from vllm_ops.planning.pins import PIN_KEYS, check_port
from vllm_ops.planning.plan import Replica


class LaunchFailed(RuntimeFailure):
    """vLLM did not become ready. ``diagnosis`` is set when the log said why."""

    def __init__(self, message: str, *, diagnosis: Diagnosis | None = None,
                 deployment: Deployment | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.diagnosis = diagnosis
        self.deployment = deployment


@dataclass
class LaunchOptions:
    vllm: VllmCommand
    vllm_version: str | None = None
    name: str | None = None
    port: int | None = None                  # overrides the plan's replica port
    host: str | None = None                  # --host for vLLM (default: the plan's, else vLLM's)
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)   # after `--`; they win over the plan
    ready_timeout: float | None = None       # None: from the model's weight bytes
    validate: bool = True
    auto_retry: bool = False
    replica: int = 0
    store: StateStore = field(default_factory=StateStore)
    backend: LaunchBackend = field(default_factory=ProcessBackend)
    stop_grace: float = 20.0
    record_calibration: bool = True
    # re-plan with pins changed by --auto-retry (``{"max_model_len": 18432}`` → Plan), so the
    # "plan" figures printed beside vLLM's are for the flags that really started; None (a saved
    # --plan): the prediction is marked stale instead
    replan: Callable[[dict[str, Any]], Any] | None = None


@dataclass
class LaunchResult:
    deployment: Deployment
    predicted: dict[str, Any]
    actual: dict[str, Any]
    ready_s: float                           # start → ready
    health_s: float | None                   # start → first /health 200
    stage_times: dict[str, float]            # stage → seconds after start when first seen
    retried: Diagnosis | None = None         # the failure fixed by --auto-retry, if any
    calibration_path: str | None = None
    replanned: bool = False                  # predicted = the re-plan for the retried flags
    plan_stale: bool = False                 # predicted = a plan made for other flags


Progress = Callable[[str, str], None]


# ------------------------------------------------------------------------------- helpers
def port_free(port: int, host: str = "0.0.0.0") -> bool:
    """True when a server could bind ``host:port`` (uvicorn binds with SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_ready_timeout(plan: Any) -> float:
    """120 s + 30 s per GiB of weights (all GPUs of a replica); twice that on CPU."""
    flags = plan.vllm_args or {}
    gpus = int(flags.get("tensor_parallel_size") or 1) * int(flags.get("pipeline_parallel_size") or 1)
    weights = float(getattr(plan.memory, "weights_gib", 0.0) or 0.0) * gpus
    timeout = 120.0 + 30.0 * weights
    return timeout * 2 if plan.cpu else timeout


def _http_get(url: str, api_key: str | None, timeout: float = 2.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (urllib.error.URLError, OSError, ValueError):
        return 0, b""


# ----------------------------------------------------------------------------- the launch
def build_spec(plan: Any, opts: LaunchOptions, flags_override: dict[str, Any] | None = None,
               extra_override: list[str] | None = None,
               env_override: dict[str, str] | None = None) -> LaunchSpec:
    """The command and environment for one replica of ``plan``. The argument list is the
    plan's (:func:`vllm_ops.planning.argv.serve_args`, as rendered and planned); arguments after ``--`` win over the
    plan's flags of the same name; ``--api-key``/``--hf-token`` become environment variables."""
    replicas = plan.replicas or []
    if replicas and opts.replica >= len(replicas):
        raise BadInput(f"the plan has {len(replicas)} replica(s); no replica {opts.replica}")
    replica = replicas[opts.replica] if replicas else Replica(gpu_ids=[], port=8000)
    if opts.port is not None:
        replica = replace(replica, port=check_port(opts.port))
    served = served_name(plan)
    extra, secret_env = split_secrets(list(extra_override if extra_override is not None
                                           else [*(plan.extra_args or []), *opts.extra_args]))
    overrides: dict[str, Any] = dict(flags_override or {})
    if opts.host:
        overrides["host"] = opts.host
    overrides.update({name: None for name in parse_flags(extra)})   # `--` args win
    bare = replace(plan, extra_args=[])
    args = serve_args(bare, replica, model_flag=opts.vllm.mode == "module", overrides=overrides)
    args = [*args, *extra]
    argv = [*opts.vllm.prefix, *args]
    flags = {k: v for k, v in {**(plan.vllm_args or {}), **overrides}.items() if v is not None}
    flags.update(parse_flags(extra))
    env = {str(k): str(v) for k, v in (plan.env or {}).items()}
    cpu = plan.cpu
    if cpu:
        env.setdefault("VLLM_TARGET_DEVICE", "cpu")
    elif replica.gpu_ids:
        env.setdefault("CUDA_VISIBLE_DEVICES", ",".join(str(g) for g in replica.gpu_ids))
    env.update(opts.env)
    env.update(secret_env)
    env.update(env_override or {})
    name = deployment_name(plan, opts, replica.port)
    model = plan.model or {}
    host = flags.get("host")
    return LaunchSpec(name=name, argv=argv, args=args, cpu=cpu, gpu_ids=[] if cpu else list(replica.gpu_ids),
                      image=str(plan.image or ""), env_added=env, log_path=opts.store.log_path(name),
                      port=replica.port, host=str(host or "0.0.0.0"), served_name=served,
                      model_id=str(model.get("id") or model.get("path") or served),
                      vllm_version=opts.vllm_version,
                      plan=plan.to_dict() if hasattr(plan, "to_dict") else None,
                      extra={"flags": flags, "extra": extra, "cpu": cpu, "replica": opts.replica},
                      state_dir=str(opts.store.root))


def deployment_name(plan: Any, opts: LaunchOptions, port: int | None = None) -> str:
    """``opts.name``, else ``<served-name>-<port>`` (``-r<i>`` for replica i > 0)."""
    if opts.name:
        return check_name(opts.name)
    if port is None:
        replicas = plan.replicas or []
        port = opts.port if opts.port is not None else (
            replicas[opts.replica].port if opts.replica < len(replicas) else 8000)
    name = check_name(default_name(served_name(plan), port))
    return f"{name}-r{opts.replica}" if opts.replica else name


def launch(plan: Any, opts: LaunchOptions, progress: Progress | None = None) -> LaunchResult:
    """Start vLLM for ``plan`` and return once it is ready (see the module doc)."""
    progress = progress or (lambda stage, detail="": None)
    spec = build_spec(plan, opts)
    _check_secrets(plan, spec)
    _warn_open_bind(spec)
    try:
        return _attempt(plan, spec, opts, progress)
    except LaunchFailed as exc:
        d = exc.diagnosis
        if not (opts.auto_retry and d and d.change):
            raise
        progress("retry", f"{d.cause}; applying: {d.change.describe()}")
        spec2 = _apply_change(plan, opts, spec, d.change)
        predicted_plan, stale = _replan(plan, opts, d.change, progress)
        result = _attempt(plan, spec2, opts, progress, predicted_plan=predicted_plan, stale=stale)
        result.retried = d
        return result


def _replan(plan: Any, opts: LaunchOptions, change: Change, progress: Progress) -> tuple[Any, bool]:
    """(the plan whose memory figures predict the retried start, stale?). A change of no pin
    (an environment variable, a removed flag, another port) keeps the prediction; a changed pin
    re-plans through ``opts.replan`` (a ``pins → Plan`` callable from the planning front door,
    :func:`vllm_ops.planning.replanner`); without one (a saved --plan) the prediction is stale."""
    changed = {k: v for k, v in change.set_flags.items() if k in PIN_KEYS}
    unpinned = sorted(k for k in change.set_flags if k in calibration.MEMORY_FLAGS and k not in PIN_KEYS)
    if unpinned:                               # a memory flag the planner takes from the command line only
        progress("plan stale", f"the prediction was made for another --{unpinned[0].replace('_', '-')} "
                               f"({change.describe()}); its figures no longer apply")
        return plan, True
    if not changed:
        return plan, False
    # every pinnable flag the first start had, with the change: the plan for what really starts
    pins = {k: v for k, v in (plan.vllm_args or {}).items() if k in PIN_KEYS and v is not None}
    pins.update(changed)
    pins = {k: v for k, v in pins.items() if v is not None}
    if opts.replan is None:
        progress("plan stale", f"the saved plan predicted other flags ({change.describe()}); "
                               f"its figures no longer apply")
        return plan, True
    try:
        new = opts.replan(pins)
    except VllmOpsError as exc:
        progress("plan stale", f"re-planning with {change.describe()} failed: {exc.one_line()}")
        return plan, True
    progress("re-planned", f"prediction for {change.describe()}")
    return new, False


def _check_secrets(plan: Any, spec: LaunchSpec) -> None:
    """A plan names the secrets it expects (``plan.env_secrets``), never their values: they come
    from this process's environment or launch's ``--env``. One missing is BadInput, before
    anything starts (an API key silently missing would leave the server open)."""
    env = spec.environment()
    missing = [n for n in (getattr(plan, "env_secrets", None) or []) if not env.get(n)]
    if missing:
        raise BadInput(f"the plan expects {', '.join(missing)} (env_secrets) but it is not set",
                       hint=f"export {missing[0]}=... before launching, or pass --env {missing[0]}=...; "
                            f"a plan never stores secret values")


def _warn_open_bind(spec: LaunchSpec) -> None:
    """One warning line when vLLM will listen on every interface (no --host: vLLM's default; or
    0.0.0.0 / ::) with no VLLM_API_KEY in its environment."""
    if str(spec.host).strip() in OPEN_HOSTS and not spec.environment().get("VLLM_API_KEY"):
        from vllm_ops.output import warn

        warn(f"{spec.name}: vLLM listens on all interfaces ({spec.host or '0.0.0.0'}:{spec.port}) without "
             f"an API key: anyone who can reach the port can use it; set VLLM_API_KEY, or pass --host 127.0.0.1")


def _apply_change(plan: Any, opts: LaunchOptions, spec: LaunchSpec, change: Change) -> LaunchSpec:
    removed = {f.lstrip("-").replace("-", "_") for f in change.remove_flags}
    extra = strip_flags(spec.extra["extra"], removed | set(change.set_flags))
    flags = {**{n: None for n in removed}, **change.set_flags}   # None: serve_args drops it
    env = {k: v.format(state_dir=opts.store.root, name=spec.name) for k, v in change.env.items()}
    new_opts = replace(opts, port=free_port() if change.new_port else spec.port, name=spec.name,
                       extra_args=[])
    return build_spec(plan, new_opts, flags_override=flags, extra_override=extra, env_override=env)


def _attempt(plan: Any, spec: LaunchSpec, opts: LaunchOptions, progress: Progress,
             predicted_plan: Any = None, stale: bool = False) -> LaunchResult:
    """One start of ``spec``. ``predicted_plan`` (default ``plan``) gives the predicted figures;
    ``stale``: they were made for other flags (shown as such, never recorded for calibration)."""
    store, backend = opts.store, opts.backend
    predicted_plan = plan if predicted_plan is None else predicted_plan
    try:
        old = store.load(spec.name)
    except KeyError:
        old = None
    if old is not None and backend.alive(old):
        raise BadInput(f"a deployment named {spec.name} is already running (pid {old.pid})",
                       hint=f"vllm-ops stop {spec.name}, or pass --name")
    orphans = procs.marked_groups(store.root, spec.name)    # state file deleted/stale: still ours
    if orphans:
        raise BadInput(f"processes of a deployment named {spec.name} are still running "
                       f"(process group {orphans[0].pgid}, found by its {procs.MARKER} marker)",
                       hint=f"vllm-ops stop {spec.name}, or pass --name")
    if not port_free(spec.port, "0.0.0.0" if spec.host in ("", "0.0.0.0") else spec.host):
        raise RuntimeFailure(f"port {spec.port} is already in use",
                             hint="pick another with --port, or stop what listens there")
    log_offset = spec.log_path.stat().st_size if spec.log_path.exists() else 0
    timeout = opts.ready_timeout or default_ready_timeout(plan)

    dep = backend.start(spec)
    store.save(dep)
    t0 = time.monotonic()
    progress("process started", f"pid {dep.pid}, log {spec.log_path}")
    try:
        health_s, stage_times, log = _wait_ready(dep, spec, opts, backend, progress, t0,
                                                  log_offset, timeout)
    except LaunchFailed as exc:
        exc.deployment = dep
        backend.stop(dep, opts.stop_grace)
        dep.status = "failed"
        dep.diagnosis = exc.diagnosis.to_dict() if exc.diagnosis else None
        store.save(dep)
        raise
    except BaseException:  # Ctrl-C / SIGTERM while starting: no orphans
        backend.stop(dep, opts.stop_grace)
        dep.status = "stopped"
        store.save(dep)
        raise
    ready_s = time.monotonic() - t0
    actual = log.figures.known()
    memory = getattr(predicted_plan, "memory", None)
    predicted = {k: v for k, v in (memory.__dict__ if memory else {}).items() if v}
    dep.status, dep.ready_at, dep.figures = "ready", time.time(), actual
    dep.vllm_version = dep.vllm_version or actual.get("vllm_version")
    store.save(dep)
    cal_path = None
    if opts.record_calibration and not stale and any(k in actual for k in calibration.FIGURES):
        flags = spec.extra["flags"]
        gpus = int(flags.get("tensor_parallel_size") or 1) * int(flags.get("pipeline_parallel_size") or 1)
        rec = calibration.make_record(
            model_id=spec.model_id,
            hardware=calibration.hardware_of(plan.hardware or {}, None if spec.extra["cpu"] else gpus),
            vllm_version=opts.vllm_version or actual.get("vllm_version"),
            flags=flags, predicted=predicted, actual=actual)
        cal_path = str(calibration.append(rec, store.root))
    return LaunchResult(deployment=dep, predicted=predicted, actual=actual, ready_s=ready_s,
                        health_s=health_s, stage_times=stage_times, calibration_path=cal_path,
                        replanned=predicted_plan is not plan, plan_stale=stale)


def _wait_ready(dep: Deployment, spec: LaunchSpec, opts: LaunchOptions, backend: LaunchBackend,
                progress: Progress, t0: float, log_offset: int,
                timeout: float) -> tuple[float | None, dict[str, float], StartupLog]:
    log = StartupLog()
    stage_times: dict[str, float] = {"process started": 0.0}
    root = f"http://127.0.0.1:{spec.port}"
    api_key = spec.environment().get("VLLM_API_KEY")
    health_s: float | None = None
    models_ok = False
    next_poll = 0.0
    with open(spec.log_path, "rb") as f:
        f.seek(log_offset)
        pending = b""

        def pump() -> None:
            nonlocal pending
            chunk = f.read()
            if not chunk:
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                stage = log.feed(raw.decode("utf-8", "replace"))
                if stage and stage not in stage_times:
                    now = time.monotonic() - t0
                    stage_times[stage] = now
                    progress(stage, raw.decode("utf-8", "replace").split("] ", 1)[-1][:120])

        while True:
            pump()
            now = time.monotonic()
            if not backend.alive(dep):
                time.sleep(0.2)
                pump()
                if pending:
                    log.feed(pending.decode("utf-8", "replace"))
                raise _failure(f"vLLM exited before it was ready"
                               f"{_status(backend.exit_code(dep))}", log, spec, log_offset)
            if now - t0 > timeout:
                raise _failure(f"vLLM was not ready within {timeout:.0f} s", log, spec, log_offset,
                               hint_extra="raise --ready-timeout if it is only slow")
            if now >= next_poll:
                if health_s is None:
                    status, _ = _http_get(root + "/health", api_key, timeout=1.0)
                    if status == 200:
                        health_s = time.monotonic() - t0
                        stage_times.setdefault("health", health_s)
                        progress("health", "/health answered 200")
                if health_s is not None and not models_ok:
                    status, body = _http_get(root + "/v1/models", api_key, timeout=5.0)
                    if status == 200 and _lists(body, spec.served_name):
                        models_ok = True
                        stage_times["models"] = time.monotonic() - t0
                        progress("models", f"/v1/models lists {spec.served_name}")
                if models_ok:
                    if opts.validate:
                        _validate(root, spec.served_name, api_key, progress)
                        stage_times["validated"] = time.monotonic() - t0
                    pump()
                    return health_s, stage_times, log
                # poll fast once the log says the API server is coming up
                next_poll = time.monotonic() + (0.1 if log.server_starting else 0.5)
            time.sleep(0.05)


def _status(code: int | None) -> str:
    return f" (exit status {code})" if code is not None else ""


def _lists(body: bytes, served: str) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return any(m.get("id") == served for m in data.get("data") or [] if isinstance(m, dict))


def _failure(message: str, log: StartupLog, spec: LaunchSpec, log_offset: int,
             hint_extra: str = "") -> LaunchFailed:
    ctx = Context(flags=spec.extra["flags"], stage=log.stage, is_moe=_is_moe(spec.plan))
    try:  # the whole log of this attempt (a traceback can be longer than the kept tail)
        with open(spec.log_path, "rb") as f:
            f.seek(log_offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        text = log.text()
    d = diagnose(text, ctx)
    hint = f"log: {spec.log_path}" + (f"; {hint_extra}" if hint_extra and d is None else "")
    if d is not None:
        return LaunchFailed(f"{message}: {d.cause} — fix: {d.fix}", diagnosis=d, hint=hint)
    return LaunchFailed(f"{message} (cause not recognised; last stage: {log.stage or 'none'})",
                        hint=hint)


def _is_moe(plan: dict[str, Any] | None) -> bool:
    return bool(((plan or {}).get("model") or {}).get("moe"))     # the planner's model facts


def _validate(root: str, served: str, api_key: str | None, progress: Progress) -> None:
    """The validation suite (:func:`vllm_ops.validate.run_validation`); where it is not
    installed, one chat request through the bundled client."""
    try:
        from vllm_ops.validate import run_validation
    except ImportError:  # pragma: no cover - the suite ships with vllm-ops
        run_validation = None
    try:
        if run_validation is not None:
            report = run_validation(root, served, api_key=api_key or None)
        else:
            from vllm_ops.client import VLLMProvider

            with VLLMProvider(root + "/v1", api_key=api_key or "", model=served, timeout=60,
                              max_retries=0) as llm:
                llm.generate(messages=[{"role": "user", "content": "Say hi"}], max_tokens=4)
            progress("validated", "chat request answered")
            return
    except Exception as exc:  # noqa: BLE001 — any client error means "not ready"
        raise LaunchFailed(f"vLLM answers but validation could not run: "
                           f"{' '.join(str(exc).split())}") from exc
    if not report.ok:
        names = ", ".join(f"{c.name} ({c.detail})" for c in report.failed())
        raise LaunchFailed(f"vLLM answers but validation failed: {names}",
                           hint=f"`vllm-ops validate --url {root}` shows every check")
    c = report.counts()
    progress("validated", f"{c.get('pass', 0)} checks passed, {c.get('skip', 0)} skipped "
                          f"({report.duration_s:.1f}s)")


__all__ = ["LaunchFailed", "LaunchOptions", "LaunchResult", "launch", "build_spec",
           "port_free",
           "default_ready_timeout"]
