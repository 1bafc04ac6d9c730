"""`vllm-ops upgrade-check`: does this deployment still work on another vLLM release?

    vllm-ops upgrade-check --plan plan.json --to 0.25.0 [--json]
    vllm-ops upgrade-check --compose docker-compose.yml --to 0.25.0 [--gpus 1xL4] [--from 0.17.1]
    vllm-ops upgrade-check --command "vllm serve M --swap-space 4" --from 0.17.1 --to 0.25.0 --gpus 1xL4

Re-plans the same model, hardware and pins for the new release and lists every change that
matters, each with the release that made it (:mod:`vllm_ops.planning.upgrade`). A compose file or
command line holds no GPU type: give ``--gpus``/``--profile`` (else this machine's GPUs, else the
embedded default, said on stderr). The current release comes from the plan, the compose image tag,
or ``--from``. Downgrades are refused (exit 2).
Exit 0 runs unchanged · 1 needs edits (fixes printed) · 3 no longer fits · 2 bad input (an unknown
release: one line listing the known ones).
"""
from __future__ import annotations

import argparse

from vllm_ops import output
from vllm_ops.commands._planargs import choose_hardware
from vllm_ops.errors import BadInput, MalformedFile
from vllm_ops.planning import upgrade
from vllm_ops.planning.plan import is_secret_name
from vllm_ops.planning.upgrade import check_upgrade
from vllm_ops.profiles import read_yaml_mapping


def configure(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--plan", metavar="FILE", help="a plan saved by `vllm-ops plan --json`")
    src.add_argument("--compose", metavar="FILE", help="a compose file (rendered by `vllm-ops render`)")
    src.add_argument("--command", metavar="CMD", help="a `vllm serve MODEL ...` command line (one string)")
    parser.add_argument("--to", required=True, metavar="VERSION", help="the vLLM release to move to")
    parser.add_argument("--from", dest="from_version", metavar="VERSION", default=None,
                        help="the vLLM release it runs now (default: the plan's / the compose image tag)")
    hw = parser.add_argument_group("hardware (for --compose / --command)")
    hw.add_argument("--gpus", default=None, help="simulated GPUs, e.g. 4xL4, 2xH100")
    hw.add_argument("--profile", default=None, help="a hardware profile (see 'vllm-ops profiles')")
    hw.add_argument("--profiles-dir", metavar="DIR", default=None, help="user profiles directory")
    hw.add_argument("--force", action="store_true", help="use --profile even when this machine's GPUs differ")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON document")


def run(args: argparse.Namespace) -> int:
    dep = _deployment(args)
    report = check_upgrade(dep, args.to)
    if args.json:
        output.print_json(report.to_dict())
    else:
        _print(report)
    return report.exit_code


def _deployment(args: argparse.Namespace):
    if args.plan:
        from vllm_ops.planning.plan import Plan

        if args.gpus or args.profile:
            raise BadInput("--gpus/--profile go with --compose/--command; a plan holds its hardware")
        dep = upgrade.deployment_from_plan(Plan.load(args.plan), f"plan {args.plan}")
        if args.from_version:
            dep.version = args.from_version
        return dep
    if args.compose:
        argv, tag, env = _read_compose(args.compose)
        source = f"compose {args.compose}"
    else:
        import shlex

        try:
            argv = shlex.split(args.command)
        except ValueError as exc:
            raise BadInput(f"--command: {exc}") from None
        tag, env, source = None, {}, "command"
    version = args.from_version or tag
    if not version:
        raise BadInput(f"{source}: which vLLM release runs it now?",
                       hint="pass --from VERSION (the compose image has no release tag)" if args.compose
                       else "pass --from VERSION")

    inventory, _profile = choose_hardware(args, cmd="upgrade-check")
    return upgrade.deployment_from_argv(argv, version=version, inventory=inventory, source=source, env=env)


def _read_compose(path: str) -> tuple[list[str], str | None, dict[str, str]]:
    """(vLLM argv, release from the image tag or None, non-secret environment) of the first
    service that runs a vLLM image."""
    import re
    import shlex
    from pathlib import Path

    try:
        doc = read_yaml_mapping(Path(path), max_bytes=1 << 20)
    except MalformedFile as exc:
        raise MalformedFile(str(exc).replace("a profile is", "a compose file is")) from None
    services = doc.get("services")
    if not isinstance(services, dict):
        raise MalformedFile(f"{path}: no 'services' mapping: not a compose file")
    for svc in services.values():
        image = str((svc or {}).get("image") or "") if isinstance(svc, dict) else ""
        if not image.startswith("vllm/") or svc.get("command") is None:
            continue
        cmd = svc["command"]
        argv = shlex.split(cmd) if isinstance(cmd, str) else [str(w) for w in cmd]
        m = re.search(r":v?(\d+\.\d+\.\d+(?:\.\w+)?)(?:-[\w.]+)?$", image)
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(str(e).split("=", 1) for e in env if "=" in str(e))
        env = {str(k): str(v) for k, v in env.items() if not is_secret_name(str(k)) and "${" not in str(v)}
        return argv, (m.group(1) if m else None), env
    raise MalformedFile(f"{path}: no service runs a vllm/* image with a command")


def _print(r) -> None:
    print(f"{r.model} ({r.source}): vLLM {r.from_version} -> {r.to_version}: {r.verdict} (exit {r.exit_code})")
    if r.findings:
        print("changes:")
    for f in r.findings:
        print(f"  [{f.action}] {f.since:<8} {f.subject}: {f.what}")
        if f.fix:
            print(f"      fix: {f.fix}")
        if f.source and f.source not in f.what:
            print(f"      source: {f.source}")
    if not r.findings:
        print("no change in the version table between these releases touches this deployment")
    b, a = r.before, r.after
    print(f"{'per GPU (GiB)':<28} {r.from_version:>12} {r.to_version:>12}")
    for key, label in (("budget_gib", "budget"), ("weights_gib", "weights"), ("activation_peak_gib", "activation"),
                       ("non_torch_gib", "non-torch"), ("cuda_graph_gib", "CUDA graphs"),
                       ("kv_cache_gib", "KV cache"), ("kv_cache_tokens", "KV tokens"),
                       ("max_concurrency", "concurrency")):
        print(f"  {label:<26} {_num(b['memory'][key]):>12} {_num(a['memory'][key]):>12}")
    for key, val in b["flags"].items():
        if val != a["flags"][key]:
            print(f"  --{key.replace('_', '-'):<24} {_num(val):>12} {_num(a['flags'][key]):>12}")
    print(f"  {'runner':<26} {str(b['runner']):>12} {str(a['runner']):>12}")
    print(f"  {'fits (margin)':<26} {_fit(b):>12} {_fit(a):>12}")
    for n in r.notes:
        print(f"note: {n}")
    what = "compose `command:`" if r.source.startswith("compose") else "command"
    print(f"{what} for {r.to_version}: {r.command_after}")
    for i, fix in enumerate(r.fixes(), 1):
        print(f"fix {i}: {fix}")


def _num(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) >= 1 or v == 0 else f"{v:g}"
    return str(v)


def _fit(f: dict) -> str:
    return f"{'yes' if f['fits'] else 'NO'} ({f['margin_gib']:.2f})"
