"""`vllm-ops validate`: check a running server's features (exit 0 only when nothing failed)."""
from __future__ import annotations

import argparse

from vllm_ops import output
from vllm_ops.commands._server import add_server_flags, report_console, server_from_args
from vllm_ops.errors import BadInput
from vllm_ops.validate.runner import parse_lora_specs, run_validation

__all__ = ["configure", "run", "report_console"]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="the served model to expect (default: the listed base model)")
    p.add_argument("--lora", action="append", default=[], metavar="NAME=PATH",
                   help="an adapter to check (PATH on the server's machine); repeatable: each is "
                        "checked alone, then all are loaded at once and checked side by side")
    p.add_argument("--concurrency", type=int, default=8, help="parallel requests of the concurrency check (default 8)")
    p.add_argument("--repeats", type=int, default=3, help="answers per structured-output check (default 3)")
    p.add_argument("--only", default=None, metavar="CHECK,...",
                   help="run only these checks or groups (e.g. structured,lora,stream)")
    p.add_argument("--junit", default=None, metavar="FILE", help="also write JUnit XML for CI")
    add_server_flags(p, timeout=120.0)


def run(args: argparse.Namespace) -> int:
    if args.concurrency < 1 or args.repeats < 1:
        raise BadInput("--concurrency and --repeats must be at least 1")
    loras = parse_lora_specs(args.lora)
    server = server_from_args(args)
    # run_validation asks GET /health first: an unreachable or unhealthy server is one line, exit 1
    report = run_validation(server.url, args.model, loras=loras, concurrency=args.concurrency,
                            api_key=server.api_key, timeout=server.timeout, repeats=args.repeats,
                            only=[x.strip() for x in args.only.split(",") if x.strip()] if args.only else None,
                            progress=output.Progress(quiet=args.quiet or args.json))
    if args.junit:
        try:
            with open(args.junit, "w", encoding="utf-8") as f:
                f.write(report.to_junit_xml())
        except OSError as exc:
            raise BadInput(f"cannot write {args.junit}: {exc.strerror}") from None
    if args.json:
        output.print_json(report.to_dict())
    else:
        report.print_table(report_console())
    return 0 if report.ok else 1
