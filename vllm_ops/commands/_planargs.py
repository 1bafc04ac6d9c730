"""Flags and steps shared by every command that plans (plan, render, launch).

One definition of the model/hardware/pin flags, and one `plan_from_args(args)`: parse `--env`,
collect the pins, choose the hardware (``--gpus`` simulated → ``--profile`` (checked against this
machine's GPUs unless ``--force``) → probed → the embedded default), load the model, plan.
"""
from __future__ import annotations

import argparse

from vllm_ops import hardware
from vllm_ops.errors import BadInput, NoGPU
from vllm_ops.hardware import parse_gpu_spec
from vllm_ops.models import load_model_spec
from vllm_ops.output import info
from vllm_ops.planning import plan
from vllm_ops.planning.plan import ENV_NAME
from vllm_ops.planning.versions import DEFAULT_VLLM_VERSION
from vllm_ops.profiles import load_profile

DEFAULT_MODEL = "Qwen/Qwen2.5-Coder-7B-Instruct"
DEFAULT_PROFILE = "l4x4"
DEFAULT_GPUS = "4xL4"
DISTRIBUTED_BACKENDS = ("ray", "native")
MULTINODE_GROUP = "several nodes (--gpus 2x(8xH100), or a profile with several nodes)"

PINS = (
    ("--tensor-parallel-size", "-tp"), ("--pipeline-parallel-size", "-pp"), ("--data-parallel-size", "-dp"),
    ("--gpu-memory-utilization",), ("--max-model-len",), ("--max-num-seqs",), ("--max-num-batched-tokens",),
    ("--kv-cache-dtype",), ("--dtype",), ("--quantization", "-q"),
)


def _dest(names: tuple[str, ...]) -> str:
    return names[0][2:].replace("-", "_")


class _OneModel(argparse.Action):
    """The model, given as the positional word (``vllm-ops plan Qwen/Qwen3-8B``, as ``vllm serve MODEL``) or as
    ``--model``: either, or both when they agree; two different models are bad input."""

    def __call__(self, parser, namespace, value, option_string=None) -> None:
        given = getattr(namespace, "model", None)
        if given is not None and given != value:
            parser.error(f"two models given: {given} and {value}")
        namespace.model = value


def add_plan_arguments(parser: argparse.ArgumentParser, *, model_default_help: bool = True) -> None:
    parser.add_argument("model_word", nargs="?", metavar="MODEL", default=argparse.SUPPRESS, action=_OneModel,
                        help="the model, as --model")
    parser.add_argument("--model", "-m", default=None, action=_OneModel,
                        help=f"HF id, catalog name or model directory" +
                             (f" (default {DEFAULT_MODEL})" if model_default_help else ""))
    parser.add_argument("--gpus", default=None, help="simulated GPUs, e.g. 4xL4, 2xH100, 1x79.18GiB")
    parser.add_argument("--profile", default=None, help="a hardware profile (see 'vllm-ops profiles')")
    parser.add_argument("--profiles-dir", metavar="DIR", default=None,
                        help="user profiles overriding the bundled ones by name (env VLLM_OPS_PROFILES_DIR)")
    parser.add_argument("--force", action="store_true",
                        help="use --profile even when this machine's GPUs differ from it")
    parser.add_argument("--vllm-version", default=None, help="vLLM version whose rules to apply (default 0.33.0)")
    parser.add_argument("--port", type=int, default=None, help="port of the first server (default 8000)")
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for the server (repeatable)")
    parser.add_argument("--offline", action="store_true", default=None, help="never ask the Hub")
    multi = parser.add_argument_group(MULTINODE_GROUP)
    multi.add_argument("--distributed-backend", choices=DISTRIBUTED_BACKENDS, default=None,
                       help="how one replica spans nodes: ray (vLLM's Ray executor; default on GPUs) or native "
                            "(vLLM's own --nnodes/--node-rank/--master-addr, the mp executor; CPU nodes)")
    pins = parser.add_argument_group("pins (vLLM's own flags; kept as given)")
    for names in PINS:
        pins.add_argument(*names, dest=_dest(names), default=None, metavar="V")
    pins.add_argument("--enforce-eager", action="store_true", default=False)


def add_multinode_arguments(parser: argparse.ArgumentParser) -> None:
    """--master-port for plan and render (native multi-node plans). `vllm-ops launch` defines its
    own --master-port (next to --nodes/--node-rank); :func:`multinode_from_args` reads either."""
    multi = next((g for g in parser._action_groups if g.title == MULTINODE_GROUP), None) or \
        parser.add_argument_group(MULTINODE_GROUP)
    multi.add_argument("--master-port", type=int, default=None, metavar="PORT",
                       help="native multi-node: the port rank 0 listens on for the other nodes (default 29500)")


def parse_env(items) -> dict[str, str]:
    """``--env KEY=VALUE`` items → dict. KEY must be an environment variable name
    (``[A-Za-z_][A-Za-z0-9_]*``); BadInput otherwise. Secret names (KEY|TOKEN|SECRET|PASSWORD)
    are returned like the rest: the planner keeps only their names (``plan.env_secrets``) and
    launch passes the values to vLLM through its environment."""
    env: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadInput(f"--env wants KEY=VALUE, not {item!r}")
        if not ENV_NAME.match(key):
            raise BadInput(f"--env {key!r}: not an environment variable name",
                           hint="KEY=VALUE with KEY made of letters, digits and '_', not starting with a digit")
        env[key] = value
    return env


def pins_from_args(args: argparse.Namespace) -> dict:
    pins = {_dest(n): getattr(args, _dest(n)) for n in PINS if getattr(args, _dest(n), None) is not None}
    if getattr(args, "enforce_eager", False):
        pins["enforce_eager"] = True
    return pins


def multinode_from_args(args: argparse.Namespace) -> dict:
    """``backend=`` / ``master_port=`` for ``planning.plan`` from --distributed-backend /
    --master-port (absent flags: the planner's defaults). BadInput for a port outside 1..65535."""
    out: dict = {}
    backend = getattr(args, "distributed_backend", None)
    if backend:
        out["backend"] = backend
    port = getattr(args, "master_port", None)
    if port is not None:
        from vllm_ops.planning.pins import check_port

        out["master_port"] = check_port(port, "--master-port")
    return out


def gpu_device_present() -> bool:
    """Cheap pre-check: no NVIDIA device node means no GPU (spares importing NVML on CPU boxes)."""
    import glob
    import os

    return os.path.exists("/dev/nvidiactl") or bool(glob.glob("/dev/nvidia[0-9]*")) or \
        bool(os.environ.get("VLLM_OPS_FORCE_PROBE"))


def load_profile_arg(name, profiles_dir=None):
    if not name:
        return None

    return load_profile(name, profiles_dir)


def _probe_or_none():
    if not gpu_device_present():
        return None
    try:
        return hardware.probe()
    except NoGPU:
        return None


def choose_hardware(args: argparse.Namespace, *, cmd: str = "plan"):
    """→ (Inventory, Profile | None), saying on stderr what was chosen when it is not obvious."""
    pdir = getattr(args, "profiles_dir", None)
    if args.gpus:   # simulated; a --profile then only gives defaults
        return parse_gpu_spec(args.gpus), load_profile_arg(args.profile, pdir)
    if args.profile:
        from vllm_ops.profiles import check_profile_against

        prof = load_profile_arg(args.profile, pdir)
        for note in check_profile_against(prof, _probe_or_none(), force=getattr(args, "force", False)):
            info(f"vllm-ops {cmd}: {note}")
        return prof.inventory(), prof
    probed = _probe_or_none()
    if probed is not None:
        return probed, None
    try:
        prof = load_profile_arg(DEFAULT_PROFILE, pdir)
        inv = prof.inventory()
        info(f"vllm-ops {cmd}: no GPU found and no --gpus/--profile: planning for the embedded default "
             f"(profile {DEFAULT_PROFILE}: {prof.count}x NVIDIA {prof.gpu})")
        return inv, prof
    except Exception:  # noqa: BLE001 — profiles unavailable: simulate the same box
        info(f"vllm-ops {cmd}: no GPU found and no --gpus/--profile: planning for the embedded default "
             f"(simulated {DEFAULT_GPUS})")
        return parse_gpu_spec(DEFAULT_GPUS), None


def plan_inputs(args: argparse.Namespace, *, cmd: str = "plan", vllm_version: str | None = None,
                default_model: bool = True) -> dict:
    """What the planner needs, from the flags: ``model`` (ModelSpec), ``inventory``, ``pins`` and
    the keyword arguments of ``planning.plan`` (version, profile, extra_args, env, ...)."""
    env = parse_env(getattr(args, "env", None))
    inventory, profile = choose_hardware(args, cmd=cmd)
    model_name = args.model
    if model_name is not None and not model_name.strip():
        raise BadInput("--model is empty", hint="pass --model M (an HF id, catalog name or model directory), "
                                                "or leave --model out for the embedded default")
    if not model_name:
        if not default_model:
            raise BadInput("no model given", hint="pass --model M (an HF id, catalog name or model directory)")
        model_name = DEFAULT_MODEL
        info(f"vllm-ops {cmd}: no --model given: planning the embedded default {DEFAULT_MODEL} "
             f"(built-in catalog, offline)")
    spec = load_model_spec(model_name, offline=True if not args.model else args.offline)
    return {"model": spec, "inventory": inventory, "pins": pins_from_args(args),
            "vllm_version": vllm_version or args.vllm_version or DEFAULT_VLLM_VERSION, "profile": profile,
            "extra_args": tuple(getattr(args, "passthrough", None) or ()), "env": env,
            "served_name": args.served_model_name, "port": args.port if args.port is not None else 8000,
            **multinode_from_args(args)}


def plan_from_args(args: argparse.Namespace, *, cmd: str = "plan", vllm_version: str | None = None,
                   default_model: bool = True):
    """The whole planning step of a command → Plan."""
    return plan_and_spec_from_args(args, cmd=cmd, vllm_version=vllm_version, default_model=default_model)[0]


def plan_and_spec_from_args(args: argparse.Namespace, *, cmd: str = "plan", vllm_version: str | None = None,
                            default_model: bool = True):
    """``plan_from_args`` and the ModelSpec it planned (for what else needs the model's facts)."""
    kw = plan_inputs(args, cmd=cmd, vllm_version=vllm_version, default_model=default_model)
    spec = kw.pop("model")
    return plan(spec, kw.pop("inventory"), **kw), spec
