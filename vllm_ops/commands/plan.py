"""`vllm-ops plan`: choose vLLM flags for a model on some GPUs and show the per-GPU memory.

Hardware, in order: ``--gpus SPEC`` (simulated) → ``--profile P`` → this machine's GPUs (probed)
→ the embedded default (the ``l4x4`` profile, said on stderr). Pins are vLLM's own flags; they are
kept and evaluated, never overridden. Anything after ``--`` is passed to vLLM verbatim, except
secrets: ``-- --api-key K`` / ``--hf-token T`` and ``--env NAME=V`` where NAME matches
KEY|TOKEN|SECRET|PASSWORD never reach the plan document — the plan keeps only the *names*, in
``env_secrets`` (e.g. ``["VLLM_API_KEY"]``), with a ``secret-not-kept`` warning; render lists those
names in the env file, and ``vllm-ops launch`` takes the values from its environment (or its own
``--env``) at start time, refusing to start when one is missing (see planning/plan.py).
``--port`` must be 1..65535 (for every replica's port); ``--env`` names must be variable names;
``--dtype`` / ``--kv-cache-dtype`` must be one of vLLM's choices.
``--slo tpot_ms=X[,ttft_ms=Y]`` with ``--input-len/--output-len/--concurrency|--rate`` searches
the layout with the most goodput within the targets (commands/_slo.py, planning/slo.py).
Exit 0 fits · 3 does not fit, or no layout meets --slo (the JSON is printed either way) · 2 bad input.
"""
from __future__ import annotations

import argparse

from vllm_ops import output
from vllm_ops.commands._perfargs import add_performance, add_workload_arguments, workload_from_args
from vllm_ops.commands._planargs import (  # noqa: F401  (re-exported)
    DEFAULT_MODEL, DEFAULT_PROFILE, add_multinode_arguments, add_plan_arguments, plan_and_spec_from_args,
    plan_from_args,
)
from vllm_ops.commands._plantable import print_plan_table as _print_table
from vllm_ops.commands._slo import add_slo_arguments, run_slo
from vllm_ops.planning.calibrated import apply_calibration


def configure(parser: argparse.ArgumentParser) -> None:
    add_plan_arguments(parser)
    add_multinode_arguments(parser)
    add_workload_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON document")
    parser.add_argument("--explain", action="store_true", help="show the memory arithmetic")

    add_slo_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "slo", None) is not None:
        return run_slo(args)

    workload = workload_from_args(args)       # bad workload flags: exit 2 before planning
    result, spec = plan_and_spec_from_args(args, cmd="plan")
    if not result.nodes:
        result = apply_calibration(result)    # measured figures of earlier launches
    add_performance(result, workload, spec=spec)
    if args.json:
        output.print_json(result.to_dict())
    else:
        _print_table(result, explain=args.explain)
    return 0 if result.fits else 3
