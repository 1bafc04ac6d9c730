"""`vllm-ops render`: a plan → launch script, Compose, systemd, Kubernetes or Ray files.

    vllm-ops render --model M --profile P --format command|compose|systemd|k8s|ray|all [--output DIR]
    vllm-ops render --plan plan.json --format k8s        (a saved `vllm-ops plan --json`)

Without --output the file is printed on stdout (several files: each after a `# ==> NAME <==` line);
with --output the files are written atomically and listed (an existing vllm.env is kept).
"""
from __future__ import annotations

import argparse

from vllm_ops.commands._planargs import add_multinode_arguments, add_plan_arguments, plan_from_args
from vllm_ops.errors import BadInput
from vllm_ops.output import info, print_json, warn
from vllm_ops.render import render

FORMAT_CHOICES = ("command", "compose", "systemd", "k8s", "ray", "all")


def configure(parser: argparse.ArgumentParser) -> None:
    """`vllm-ops plan`'s own flags (model, hardware, pins, --port, --env, --json ...), plus render's."""
    add_plan_arguments(parser)
    add_multinode_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the rendered files as one JSON document")
    parser.add_argument("--plan", metavar="PLAN.json", help="render a saved `vllm-ops plan --json` instead of planning")
    out = parser.add_argument_group("output")
    out.add_argument("--format", "-f", choices=FORMAT_CHOICES, default="command", help="what to render (default command)")
    out.add_argument("--output", "-o", metavar="DIR", help="write the files here (atomically); else print them")


def run(args: argparse.Namespace) -> int:
    if args.plan:
        if args.model or args.profile or args.gpus:
            raise BadInput("--plan renders a saved plan; --model/--profile/--gpus would plan again",
                           hint="give either --plan or --model")
        from vllm_ops.planning.plan import Plan

        plan = Plan.load(args.plan)
    elif args.model:
        plan = make_plan(args)
    else:
        raise BadInput("nothing to render", hint="give --model M [--profile P | --gpus SPEC] or --plan PLAN.json")
    for w in plan.warnings:
        warn(f"{w.code}: {w.message}")
    if not plan.fits:
        warn(f"this plan does not fit memory ({plan.failure_stage or 'see vllm-ops plan --explain'}): "
             "rendering it anyway")
    art = render(plan, args.format, output_dir=args.output)
    for n in art.notes:
        info(n)
    if args.json:
        doc = art.to_dict()
        doc["contents"] = art.files
        print_json(doc)
        return 0
    if args.output:
        for p in art.written:
            info(f"wrote {p}")
        for p in art.kept:
            info(f"kept {p} (already there: it may hold your secrets)")
        return 0
    import sys

    shown = [p for p in art.files if not p.endswith(".env")]
    if len(shown) == 1:
        sys.stdout.write(art.files[shown[0]])
    else:
        for p in shown:
            sys.stdout.write(f"# ==> {p} <==\n{art.files[p]}\n")
    info("secrets: fill in vllm.env (HF_TOKEN=, VLLM_API_KEY=) beside these files; use --output DIR to write it")
    return 0


def make_plan(args: argparse.Namespace):
    """Plan as `vllm-ops plan` does; a --profile is first checked against this machine's GPUs."""
    return plan_from_args(args, cmd="render", default_model=False)
