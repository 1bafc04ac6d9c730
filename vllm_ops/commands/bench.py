"""`vllm-ops bench`: load-test a running vLLM server level by level."""
from __future__ import annotations

import argparse
from pathlib import Path

from vllm_ops import output
from vllm_ops.commands._server import add_server_flags, connect, report_console, server_from_args
from vllm_ops.errors import BadInput
from vllm_ops.loadtest.bench import WARMUPS, plan_limits_for, run_bench
from vllm_ops.loadtest.report import PlanLimits, read_plan_file


def _ints(text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError("levels must be integers ≥ 1")
    return vals


def _rates(text: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if not vals or any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError("request rates must be > 0 ('inf' sends all at once)")
    return vals


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="served model or adapter name (default: the base model)")
    lv = p.add_mutually_exclusive_group()
    lv.add_argument("--concurrency", type=_ints, default=None, metavar="N,N,...",
                    help="concurrency levels (default 1,4,16,64)")
    lv.add_argument("--request-rate", type=_rates, default=None, metavar="R,R,...",
                    help="Poisson request rates per second instead of concurrency levels")
    p.add_argument("--num-prompts", type=int, default=100, help="requests per level (default 100)")
    p.add_argument("--input-len", type=int, default=128, help="prompt tokens (default 128)")
    p.add_argument("--output-len", type=int, default=128, help="output tokens, fixed with ignore_eos (default 128)")
    p.add_argument("--dataset", default=None, metavar="FILE",
                   help="prompts from a file (JSONL/JSON with prompt/text, ShareGPT, or text lines)")
    p.add_argument("--plan", default=None, metavar="PLAN.json",
                   help="a `vllm-ops plan --json` file: compare the saturation with it, print the predicted "
                        "TTFT/TPOT/throughput beside the measured ones and record the pairs for calibration")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the random prompts (default: a new one, printed in --json; every level and the "
                        "warm-up get their own prompts, so vLLM's prefix cache never serves a level)")
    p.add_argument("--prompt-pool", type=int, default=None, metavar="N",
                   help="send each level's requests over N distinct prompts (passes in a new order; aiperf's "
                        "default is 100): measures prefix-cache reuse; the cache hit column says how much")
    p.add_argument("--warmup", choices=WARMUPS, default="wave",
                   help="before each level, one untimed wave of fresh prompts as large as the level keeps in "
                        "flight (default 'wave': a server's first batch of a new shape pays one-time costs); "
                        "'request': one request before the first level; 'none'")
    p.add_argument("--sample-interval", type=float, default=0.5, metavar="S",
                   help="seconds between /metrics samples during a level (0: before/after only)")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="write a PNG chart (matplotlib; a terminal chart without it)")
    add_server_flags(p, timeout=600.0)


def run(args: argparse.Namespace) -> int:
    for flag in ("num_prompts", "input_len", "output_len"):
        if getattr(args, flag) < 1:
            raise BadInput(f"--{flag.replace('_', '-')} must be at least 1")
    server = server_from_args(args)
    url = server.url
    plan_doc = read_plan_file(args.plan) if args.plan else None   # read once; a bad file: exit 2 first
    plan_file = PlanLimits.from_plan_dict(plan_doc, source=str(Path(args.plan))) if plan_doc is not None else None
    connect(server, max_retries=0).close()  # unreachable or unhealthy: one line, exit 1, now
    plan = plan_file or plan_limits_for(url)
    progress = output.Progress(quiet=args.quiet)
    report = run_bench(url, model=args.model,
                       concurrency=args.concurrency or [1, 4, 16, 64],
                       request_rates=args.request_rate,
                       num_prompts=args.num_prompts, input_len=args.input_len,
                       output_len=args.output_len, dataset=args.dataset, plan=plan,
                       api_key=server.api_key, timeout=server.timeout, seed=args.seed,
                       prompt_pool=args.prompt_pool, warmup=args.warmup,
                       sample_interval=args.sample_interval,
                       progress=progress)
    if args.plot:
        from vllm_ops.loadtest.plot import have_matplotlib, save_png, terminal_chart

        if have_matplotlib():
            save_png(report, args.plot)
            output.info(f"chart written to {args.plot}")
        else:
            output.warn("matplotlib is not installed (pip install 'vllm-ops[plot]'): terminal chart instead")
            output.info(terminal_chart(report))
    rows = None
    if plan_doc is not None:
        from vllm_ops.loadtest.predicted import compare, full_plan

        full = full_plan(plan_doc)
        rows = compare(full, report) if full is not None else None
    if args.json:
        doc = report.to_dict()
        if rows is not None:
            doc["predicted"] = rows
        output.print_json(doc)
    else:
        from vllm_ops.loadtest.plot import terminal_chart

        report.print_table(report_console())
        if rows is not None:
            from vllm_ops.loadtest.predicted import print_comparison

            print_comparison(rows, report_console())
        print(terminal_chart(report))
    return 0 if report.ok else 1
