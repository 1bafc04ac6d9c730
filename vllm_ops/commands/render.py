"""`vllm-ops render`: a plan → launch script, Compose, systemd, Kubernetes or Ray files.

    vllm-ops render --model M --profile P --format command|compose|systemd|k8s|ray|all [--output DIR]
    vllm-ops render --plan plan.json --format k8s        (a saved `vllm-ops plan --json`)

Without --output the file is printed on stdout (several files: each after a `# ==> NAME <==` line);
with --output the files are written atomically and listed (an existing vllm.env is kept).
"""
from __future__ import annotations

import argparse

FORMAT_CHOICES = ("command", "compose", "systemd", "k8s", "ray", "all")

# pins accepted here when the plan command does not export its own (flag, dest, type, help)
_PINS = (
    ("--tp", "tensor_parallel_size", int, "tensor-parallel size"),
    ("--pp", "pipeline_parallel_size", int, "pipeline-parallel size"),
    ("--max-model-len", "max_model_len", int, "context length"),
    ("--max-num-seqs", "max_num_seqs", int, "concurrent sequences per replica"),
    ("--gpu-memory-utilization", "gpu_memory_utilization", float, "fraction of GPU memory"),
    ("--kv-cache-dtype", "kv_cache_dtype", str, "KV cache dtype"),
    ("--dtype", "dtype", str, "model dtype"),
    ("--quantization", "quantization", str, "quantization method"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    from vllm_ops.commands.profiles import add_profiles_dir

    src = parser.add_argument_group("what to render")
    src.add_argument("--plan", metavar="PLAN.json", help="a saved `vllm-ops plan --json`")
    src.add_argument("--model", help="HF id, catalog name or model directory (plans first)")
    src.add_argument("--profile", help="hardware profile (vllm-ops profiles list)")
    src.add_argument("--gpus", metavar="SPEC", help="simulated GPUs instead of probing, e.g. 4xL4")
    src.add_argument("--vllm-version", help="vLLM version to plan and pin the image for")
    src.add_argument("--force", action="store_true", help="use the profile even if this machine's GPUs differ")
    add_profiles_dir(parser)
    plan_mod = _plan_command()
    if plan_mod is not None and hasattr(plan_mod, "add_pin_arguments"):
        plan_mod.add_pin_arguments(parser)
    else:
        pins = parser.add_argument_group("pins (as in `vllm-ops plan`)")
        for flag, dest, typ, help_ in _PINS:
            pins.add_argument(flag, dest=f"pin_{dest}", type=typ, default=None, help=help_)
    out = parser.add_argument_group("output")
    out.add_argument("--format", "-f", choices=FORMAT_CHOICES, default="command", help="what to render")
    out.add_argument("--output", "-o", metavar="DIR", help="write the files here (atomically)")
    out.add_argument("--json", action="store_true", help="print one JSON document (files and their text)")


def _plan_command():
    try:
        from vllm_ops.commands import plan as plan_mod
    except ImportError:
        return None
    return plan_mod


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
        raise BadInput("nothing to render", hint="give --model M [--profile P] or --plan PLAN.json")
    for w in plan.warnings:
        warn(f"{w.code}: {w.message}")
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
    """Plan like `vllm-ops plan` does: profile (checked against this box), or --gpus, or a probe."""
    from vllm_ops.errors import NoGPU, RuntimeFailure
    from vllm_ops.output import info

    try:
        import vllm_ops.planning as planning
        plan_fn = planning.plan
    except (ImportError, AttributeError):
        raise RuntimeFailure("the planner is not available in this build",
                             hint="render a saved plan with --plan PLAN.json") from None
    from vllm_ops.models import load_model_spec

    plan_mod = _plan_command()
    if plan_mod is not None and hasattr(plan_mod, "pins_from_args"):
        pins = plan_mod.pins_from_args(args)
    else:
        pins = {dest: getattr(args, f"pin_{dest}") for _, dest, _, _ in _PINS
                if getattr(args, f"pin_{dest}", None) is not None}
    spec = load_model_spec(args.model)
    profile = None
    if args.profile:
        from vllm_ops.profiles import check_profile_against, load_profile

        profile = load_profile(args.profile, args.profiles_dir)
        probed = None
        if not args.gpus:
            from vllm_ops import hardware

            try:
                probed = hardware.probe() if hardware.is_available() else None
            except NoGPU:
                probed = None
        else:
            from vllm_ops.hardware import parse_gpu_spec

            probed = parse_gpu_spec(args.gpus)
        for note in check_profile_against(profile, probed, force=args.force):
            info(note)
        inventory = profile.inventory()
    elif args.gpus:
        from vllm_ops.hardware import parse_gpu_spec

        inventory = parse_gpu_spec(args.gpus)
    else:
        from vllm_ops.hardware import probe

        inventory = probe()
    return plan_fn(spec, inventory, pins=pins, vllm_version=args.vllm_version, profile=profile)
