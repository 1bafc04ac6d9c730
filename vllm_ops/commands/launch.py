"""`vllm-ops launch`: plan for the installed vLLM (or take a saved plan), start it, wait until
it is ready in stages, print the memory figures beside the plan's prediction.

    vllm-ops launch --model M [--profile P | probed] [--plan PLAN.json] [--port N]
                    [--env KEY=VALUE ...] [--detach] [--no-validate] [--auto-retry]
                    [--vllm-version V] [--ready-timeout S] [--name NAME] [--json]
                    [-- <extra vLLM args>]

Foreground (default): after ready, launch stays until Ctrl-C or SIGTERM, then stops vLLM and
every process it started (or returns 1 if vLLM dies on its own). ``--detach``: returns once
ready and leaves vLLM running; `vllm-ops status/logs/stop NAME` manage it from any shell.
A failed start prints the cause found in vLLM's log and the change that fixes it (exit 1);
``--auto-retry`` applies that change once and starts again.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Any


def configure(parser: argparse.ArgumentParser) -> None:
    from vllm_ops.commands._planargs import add_plan_arguments

    add_plan_arguments(parser, model_default_help=False)   # --model --gpus --profile --force --port --env pins ...
    parser.add_argument("--plan", help="launch a saved `vllm-ops plan --json` document")
    parser.add_argument("--replica", type=int, default=0, metavar="I",
                        help="which replica of the plan to start (default 0; each has its own GPUs and port)")
    parser.add_argument("--detach", action="store_true",
                        help="return once ready and leave vLLM running")
    parser.add_argument("--no-validate", dest="validate", action="store_false",
                        help="skip the validation suite before calling it ready")
    parser.add_argument("--auto-retry", action="store_true",
                        help="on a recognised failure, apply the fix once and start again")
    parser.add_argument("--ready-timeout", type=float, metavar="S",
                        help="seconds to wait for ready (default: 120 + 30/GiB of weights, x2 on CPU)")
    parser.add_argument("--name", help="deployment name (default: <served-name>-<port>)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON document")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def _parse_env(items: list[str]) -> dict[str, str]:
    """``--env KEY=VALUE`` → dict, the same rule as plan/render (names checked)."""
    from vllm_ops.commands._planargs import parse_env

    return parse_env(items)


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from vllm_ops.errors import BadInput
    from vllm_ops.launch.launcher import LaunchFailed, LaunchOptions, launch, split_secrets
    from vllm_ops.launch.locate import find_vllm, installed_version
    from vllm_ops.launch.state import StateStore
    from vllm_ops.output import Progress, info, print_json
    from vllm_ops.planning.plan import is_secret_name
    from vllm_ops.planning.planner import check_port
    from vllm_ops.settings import load_settings

    if bool(args.model) == bool(args.plan):
        raise BadInput("give --model M (to plan now) or --plan PLAN.json, not both")
    if args.port is not None:
        check_port(args.port)
    previous = signal.signal(signal.SIGTERM, _sigterm)   # SIGTERM stops vLLM like Ctrl-C
    try:
        settings = load_settings()
        store = StateStore(settings.state_dir)
        vllm = find_vllm(settings.vllm)
        env = _parse_env(args.env)
        extra, secret_env = split_secrets(list(args.passthrough or []))
        secrets = {k: v for k, v in env.items() if is_secret_name(k)}
        plain_env = {k: v for k, v in env.items() if k not in secrets}
        version = args.vllm_version or settings.vllm_version
        if args.plan:
            from vllm_ops.planning.plan import Plan

            plan = Plan.load(args.plan)
            version = version or installed_version(vllm) or plan.vllm_version
            passthrough = extra
        else:
            version = version or installed_version(vllm)
            plan = _make_plan(args, version, extra, plain_env, sorted({*secrets, *secret_env}))
            passthrough = []   # the planner put them into plan.extra_args
        progress = Progress(quiet=args.quiet or False)
        info(f"vllm-ops: starting vLLM {version or '(version unknown)'} via {vllm.source}: "
             f"{plan.model.get('id')} on port {args.port or plan.replicas[0].port}")
        opts = LaunchOptions(vllm=vllm, vllm_version=version, name=args.name, port=args.port,
                             env={**plain_env, **secrets, **secret_env}, extra_args=passthrough,
                             ready_timeout=args.ready_timeout, validate=args.validate,
                             auto_retry=args.auto_retry, store=store, replica=args.replica)
        try:
            result = launch(plan, opts, _stage_printer(progress))
        except LaunchFailed as exc:
            _print_failure(exc)
            if args.json:
                print_json({"ready": False, "error": exc.one_line(),
                            "diagnosis": exc.diagnosis.to_dict() if exc.diagnosis else None,
                            "name": exc.deployment.name if exc.deployment else None})
            return 1
        dep = result.deployment
        _print_figures(result)
        info(f"vllm-ops: {dep.name} ready in {result.ready_s:.1f} s at {dep.url} "
             f"(model {dep.served_name}, pid {dep.pid}); log {dep.log_path}")
        if args.json:
            print_json({"ready": True, "name": dep.name, "url": dep.url, "pid": dep.pid,
                        "port": dep.port, "served_name": dep.served_name,
                        "ready_s": round(result.ready_s, 2),
                        "health_s": round(result.health_s, 2) if result.health_s else None,
                        "stages": {k: round(v, 2) for k, v in result.stage_times.items()},
                        "predicted": result.predicted, "actual": result.actual,
                        "retried": result.retried.to_dict() if result.retried else None,
                        "calibration": result.calibration_path, "log": dep.log_path})
        if args.detach:
            info(f"vllm-ops: detached; stop it with `vllm-ops stop {dep.name}`")
            return 0
        return _foreground(dep, store, opts)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _make_plan(args: argparse.Namespace, version: str | None, extra: list[str],
               env: dict[str, str], secret_names: list[str] = ()):
    """Plan for this vLLM, as `vllm-ops plan` would (same hardware choice and pins). Flags after
    `--` that the planner can pin (--max-model-len, --tensor-parallel-size, ...) become pins too,
    so the prediction is for what really starts."""
    from vllm_ops import planning
    from vllm_ops.commands._planargs import choose_hardware, pins_from_args
    from vllm_ops.launch.launcher import parse_flags, strip_flags
    from vllm_ops.launch.locate import base_version
    from vllm_ops.models import load_model_spec
    from vllm_ops.output import warn
    from vllm_ops.planning.planner import PIN_KEYS

    spec = load_model_spec(args.model, offline=args.offline)
    inventory, profile = choose_hardware(args, cmd="launch")
    extra_pins = {k: v for k, v in parse_flags(extra).items() if k in PIN_KEYS}
    pins = {**extra_pins, **pins_from_args(args)}
    rest = strip_flags(extra, set(extra_pins))
    plan = planning.plan(spec, inventory, pins=pins, vllm_version=base_version(version),
                         profile=profile, extra_args=rest, env=env, port=args.port or 8000,
                         served_name=args.served_model_name, env_secrets=secret_names)
    if not plan.fits:
        warn(f"the plan predicts this does not fit ({plan.failure_stage}); starting anyway: "
             f"vLLM's log will say")
    return plan


def _stage_printer(progress):
    last = {"stage": None, "t": 0.0}

    def show(stage: str, detail: str = "") -> None:
        now = progress.elapsed()
        took = f" (+{now - last['t']:.1f}s)" if last["stage"] else ""
        last["stage"], last["t"] = stage, now
        progress(stage, f"{detail}{took}")

    return show


def _print_failure(exc) -> None:
    from vllm_ops.output import info

    d = exc.diagnosis
    if d is not None:
        info(f"vllm-ops: vLLM failed to start: {d.cause}")
        info(f"  log says: {d.evidence}")
        info(f"  fix: {d.fix}")
        if d.change is not None:
            info(f"  (--auto-retry would apply: {d.change.describe()})")
    else:
        info(f"vllm-ops: {' '.join(str(exc).split())}")
    if exc.hint:
        info(f"  {exc.hint}")


_ROWS = (("weights_gib", "weights (GiB)"), ("activation_peak_gib", "activation peak (GiB)"),
         ("non_torch_gib", "non-torch (GiB)"), ("cuda_graph_gib", "CUDA graphs (GiB)"),
         ("kv_cache_gib", "KV cache (GiB)"), ("kv_cache_tokens", "KV cache (tokens)"),
         ("max_concurrency", "max concurrency (x)"))


def _print_figures(result) -> None:
    from vllm_ops.output import info

    rows = [(label, result.predicted.get(k), result.actual.get(k)) for k, label in _ROWS
            if result.predicted.get(k) is not None or result.actual.get(k) is not None]
    if not rows:
        return
    info(f"{'memory (per GPU)':<24}{'plan':>14}{'vLLM log':>14}")
    for label, p, a in rows:
        info(f"{label:<24}{_fmt(p):>14}{_fmt(a):>14}")
    if result.calibration_path:
        info(f"(recorded in {result.calibration_path})")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _foreground(dep, store, opts) -> int:
    from vllm_ops.launch.launcher import stop
    from vllm_ops.output import info

    info("vllm-ops: running in the foreground; Ctrl-C or SIGTERM stops it")
    try:
        while opts.backend.alive(dep):
            time.sleep(0.5)
    except KeyboardInterrupt:
        info(f"vllm-ops: stopping {dep.name}...")
        stop(dep, store, opts.backend)
        store.remove(dep.name)
        return 0
    code = opts.backend.exit_code(dep)
    dep.status = "stopped"
    store.save(dep)
    sys.stderr.write(f"vllm-ops: error: vLLM exited on its own (status {code}); log {dep.log_path}\n")
    return 1
