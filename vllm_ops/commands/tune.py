"""`vllm-ops tune`: measure the top `plan --slo` candidates on this box and keep the best.

    vllm-ops tune --model M [--profile P | --gpus G | probed] --slo tpot_ms=X[,ttft_ms=Y]
                  --input-len ISL --output-len OSL (--concurrency C | --rate R)
                  [--max-starts 3] [--num-prompts 50] [--backend process|docker] [--image IMAGE]
                  [--profile-name NAME] [--profiles-dir DIR] [--json] [-- <extra vLLM args>]

Plans the candidates (the `plan --slo` search), then starts them one after another (each
candidate's first replica; at most ``--max-starts``, never a restart: memory is planned), benches
each with the workload, stops it, and writes the best measured as a profile
(``<profiles-dir>/<name>.yaml``; default dir ``VLLM_OPS_PROFILES_DIR``, else
``~/.config/vllm-ops/profiles``) plus calibration records (``calibration.jsonl`` in the state
dir). Ctrl-C / SIGTERM stop the server running at that moment; nothing is left behind.
Exit 0: the best measured meets the targets · 3: none did · 1: no candidate started · 2: bad input.
"""
from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import Any

from vllm_ops import output
from vllm_ops.commands._planargs import add_plan_arguments, load_profile_arg, parse_env
from vllm_ops.commands._perfargs import workload_from_args
from vllm_ops.commands._slo import add_slo_arguments, print_candidates, search_from_args
from vllm_ops.errors import BadInput
from vllm_ops.launch.backend import backend_for
from vllm_ops.launch.locate import resolve_vllm
from vllm_ops.launch.state import StateStore
from vllm_ops.launch.tune import DEFAULT_MAX_STARTS, TuneOptions, tune, write_profile
from vllm_ops.planning.argv import split_secret_args
from vllm_ops.planning.plan import is_secret_name
from vllm_ops.planning.slo import parse_headroom, parse_slo

DEFAULT_PROFILES_DIR = "~/.config/vllm-ops/profiles"


def configure(parser: argparse.ArgumentParser) -> None:
    add_plan_arguments(parser, model_default_help=False)
    add_slo_arguments(parser)
    t = parser.add_argument_group("tuning")
    t.add_argument("--max-starts", type=int, default=DEFAULT_MAX_STARTS, metavar="N",
                   help=f"server starts at most (default {DEFAULT_MAX_STARTS}; one per candidate)")
    t.add_argument("--num-prompts", type=int, default=50, metavar="N", help="requests per bench (default 50)")
    t.add_argument("--backend", choices=("process", "docker"), default="process",
                   help="process (default): vLLM here; docker: one container")
    t.add_argument("--image", default=None, help="container image (--backend docker)")
    t.add_argument("--ready-timeout", type=float, default=None, metavar="S", help="seconds to wait for each start")
    t.add_argument("--profile-name", default=None, metavar="NAME",
                   help="name of the profile written (default <profile>-<model>)")
    t.add_argument("--name", default="vllm-ops-tune", help="deployment name prefix (default vllm-ops-tune)")
    t.add_argument("--keep", default=None, metavar="DIR",
                   help="keep each candidate's plan.json and bench JSON under DIR/<name>-<rank>/")
    t.add_argument("--json", action="store_true", help="print the result as one JSON document")
    t.add_argument("--quiet", action="store_true", help="no progress lines")


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _check(args: argparse.Namespace) -> None:
    if args.slo is None:
        raise BadInput("tune needs --slo tpot_ms=X[,ttft_ms=Y] and the workload "
                       "(--input-len, --output-len, --concurrency or --rate)")
    if args.max_starts < 1:
        raise BadInput(f"--max-starts must be at least 1, not {args.max_starts}")
    if args.num_prompts < 1:
        raise BadInput(f"--num-prompts must be at least 1, not {args.num_prompts}")
    if args.image and args.backend != "docker":
        raise BadInput("--image needs --backend docker")
    if not args.model:
        raise BadInput("no model given", hint="pass --model M (an HF id, catalog name or model directory)")
    if getattr(args, "prefix_cache_hit", 0.0):
        raise BadInput("tune benches every candidate with fresh prompts: it cannot measure --prefix-cache-hit",
                       hint="rank the layouts with `vllm-ops plan --slo ... --prefix-cache-hit F`")


def run(args: argparse.Namespace) -> int:
    from vllm_ops.settings import load_settings

    _check(args)
    parse_slo(args.slo, parse_headroom(args.slo_headroom))          # bad input before anything is located
    workload_from_args(args, required_by="--slo")
    settings = load_settings()
    store = StateStore(settings.state_dir)
    vllm, backend, version = _vllm_and_backend(args, settings)
    # each candidate is benched with --num-prompts requests: predict that, first wave included
    result = search_from_args(args, cmd="tune", vllm_version=version, num_requests=args.num_prompts)
    if not args.json:
        print_candidates(result, output.console(stderr=True))
    # the planner kept the extra vLLM args in each plan (secrets as names only): launch needs the values
    _, secret_env = split_secret_args(list(args.passthrough or []))
    secrets = {**{k: v for k, v in parse_env(args.env).items() if is_secret_name(k)}, **secret_env}
    opts = TuneOptions(vllm=vllm, store=store, backend=backend, max_starts=args.max_starts,
                       num_prompts=args.num_prompts, port=args.port, ready_timeout=args.ready_timeout,
                       env=secrets, vllm_version=version, name=args.name, keep_dir=args.keep,
                       api_key=secrets.get("VLLM_API_KEY") or os.environ.get("VLLM_API_KEY"))
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        out = tune(result, opts, output.Progress(quiet=args.quiet))
    finally:
        signal.signal(signal.SIGTERM, previous)
    if out.best is not None and not out.interrupted:
        out.profile_path = str(_write_profile(out, result, args))
    _report(out, result, args)
    if out.interrupted:
        return 130
    if out.best is None:
        return 1
    return 0 if out.best.meets else 3


def _vllm_and_backend(args: argparse.Namespace, settings: Any) -> tuple[Any, Any, str | None]:
    docker = args.backend == "docker"
    vllm, version = resolve_vllm(not docker, settings.vllm, args.vllm_version or settings.vllm_version)
    return vllm, (backend_for("docker", image=args.image) if docker else backend_for("process")), version


def _write_profile(out: Any, result: Any, args: argparse.Namespace) -> Path:
    directory = args.profiles_dir or os.environ.get("VLLM_OPS_PROFILES_DIR") or DEFAULT_PROFILES_DIR
    base = load_profile_arg(args.profile, args.profiles_dir) if args.profile and not args.gpus else None
    return write_profile(out, result, directory, name=args.profile_name, base=base)


def _report(out: Any, result: Any, args: argparse.Namespace) -> None:
    if args.json:
        doc = out.to_dict()
        doc["search"] = result.to_dict()
        output.print_json(doc)
        return
    from rich.table import Table

    con = output.console(pipe_width=160)
    t = Table(title=f"vllm-ops tune: {out.starts} start(s), predicted beside measured (one replica at its load)",
              title_justify="left")
    for col in ("rank", "layout", "seqs", "batched tok", "KV", "load", "TTFT ms pred/meas", "TPOT ms pred/meas",
                "out tok/s/GPU pred/meas", "verdict"):
        t.add_column(col, justify="left" if col in ("layout", "KV", "verdict") else "right")
    for tr in out.trials:
        c, m, p = tr.candidate, tr.measured, tr.candidate.performance or {}
        load = c.load.get("concurrency", c.load.get("rate", "-"))
        verdict = ("[red]start failed[/]" if tr.error else "[green]meets[/]" if tr.meets
                   else "[red]" + "; ".join(tr.misses) + "[/]") + (" [bold]← best[/]" if tr is out.best else "")
        t.add_row(str(c.rank), c.layout, str(c.max_num_seqs), str(c.max_num_batched_tokens), c.kv_cache_dtype,
                  str(load), f"{_f(p.get('ttft_ms'), 0)} / {_f(m.get('ttft_ms'), 0)}",
                  f"{_f(p.get('tpot_ms'))} / {_f(m.get('tpot_ms'))}",
                  f"{_f(c.output_tokens_per_s_per_gpu)} / {_f(tr.goodput_per_gpu)}", verdict)
    con.print(t)
    for tr in out.trials:
        if tr.error:
            con.print(f"[red]{tr.candidate.layout}:[/] {tr.error}")
    if out.best is not None:
        b = out.best
        con.print(f"best measured: {b.candidate.layout} (predicted rank {b.candidate.rank}), "
                  f"{_f(b.goodput_per_gpu)} output tok/s per GPU" + ("" if b.meets else " — misses the targets"))
    top = next((tr for tr in out.trials if tr.measured), None)
    if out.best is not None and top is not None and out.best.goodput_per_gpu:
        share = (top.goodput_per_gpu or 0.0) / out.best.goodput_per_gpu
        con.print(f"the prediction's first measured pick ({top.candidate.layout}, rank {top.candidate.rank}) "
                  f"measured {share:.0%} of the best measured goodput")
    if out.profile_path:
        con.print(f"profile written: {out.profile_path} (use it with --profile "
                  f"{Path(out.profile_path).stem} --profiles-dir {Path(out.profile_path).parent})")
    if out.calibration_path:
        con.print(f"calibration records: {out.calibration_path}")


def _f(x: Any, nd: int = 1) -> str:
    return "-" if x is None else f"{float(x):.{nd}f}"
