"""`vllm-ops render`: a plan → launch script, Compose, systemd, Kubernetes or Ray files.

    vllm-ops render --model M --profile P --format command|compose|systemd|k8s|ray|all [--output DIR]
    vllm-ops render --plan plan.json --format k8s        (a saved `vllm-ops plan --json`)

Without --output the file is printed on stdout (several files: each after a `# ==> NAME <==` line);
with --output the files are written atomically and listed (an existing vllm.env is kept).
"""
from __future__ import annotations

import argparse

FORMAT_CHOICES = ("command", "compose", "systemd", "k8s", "ray", "all")


def configure(parser: argparse.ArgumentParser) -> None:
    """`vllm-ops plan`'s own flags (model, hardware, pins, --port, --env, --json ...), plus render's."""
    from vllm_ops.commands import plan as plan_cmd
    from vllm_ops.commands.profiles import add_profiles_dir

    plan_cmd.configure(parser)
    parser.add_argument("--plan", metavar="PLAN.json", help="render a saved `vllm-ops plan --json` instead of planning")
    parser.add_argument("--force", action="store_true",
                        help="use --profile even when this machine's GPUs differ from it")
    add_profiles_dir(parser)
    out = parser.add_argument_group("output")
    out.add_argument("--format", "-f", choices=FORMAT_CHOICES, default="command", help="what to render (default command)")
    out.add_argument("--output", "-o", metavar="DIR", help="write the files here (atomically); else print them")


def run(args: argparse.Namespace) -> int:
    from vllm_ops.errors import BadInput
    from vllm_ops.output import info, print_json, warn
    from vllm_ops.render import render

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
    from vllm_ops.commands import plan as plan_cmd
    from vllm_ops.errors import BadInput, NoGPU
    from vllm_ops.models import load_model_spec
    from vllm_ops.output import info
    from vllm_ops.planning import plan
    from vllm_ops.planning.versions import DEFAULT_VLLM_VERSION

    env: dict[str, str] = {}
    for item in args.env or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadInput(f"--env wants KEY=VALUE, not {item!r}")
        env[key] = value
    pins = {}
    for names in plan_cmd._PINS:
        dest = names[0][2:].replace("-", "_")
        if getattr(args, dest, None) is not None:
            pins[dest] = getattr(args, dest)
    if getattr(args, "enforce_eager", False):
        pins["enforce_eager"] = True

    if args.profile and not args.gpus:
        # the profile's hardware, after checking it against this machine's GPUs (if any)
        from vllm_ops.profiles import check_profile_against, load_profile

        profile = load_profile(args.profile, args.profiles_dir)
        probed = None
        if plan_cmd._gpu_device_present():
            from vllm_ops import hardware

            try:
                probed = hardware.probe()
            except NoGPU:
                probed = None
        for note in check_profile_against(profile, probed, force=args.force):
            info(f"vllm-ops render: {note}")
        inventory = profile.inventory()
    else:   # --gpus (simulated; a --profile then only gives defaults), else probe, else the default box
        from vllm_ops import output

        inventory, profile = plan_cmd._hardware(args, output)
    spec = load_model_spec(args.model, offline=args.offline)
    return plan(spec, inventory, pins=pins, vllm_version=args.vllm_version or DEFAULT_VLLM_VERSION,
                profile=profile, extra_args=tuple(getattr(args, "passthrough", None) or ()), env=env,
                served_name=args.served_model_name, port=args.port)
