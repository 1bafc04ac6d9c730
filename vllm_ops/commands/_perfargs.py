"""The workload flags of `vllm-ops plan` (--input-len/--output-len/--concurrency/--rate) and the step
that adds ``performance`` to a plan (see vllm_ops/planning/performance.py)."""
from __future__ import annotations

import argparse

from vllm_ops.errors import BadInput

GROUP = "performance (predict TTFT/TPOT/throughput of one replica at this load)"
BOX_GROUP = "workload (the box's load)"
_LOAD_HELP = {
    "replica": ("closed loop: C requests in flight on one replica", "open loop: R requests/s on one replica"),
    "box": ("requests in flight on the whole box (closed loop); replicas split it",
            "requests per second offered to the whole box (open loop) instead of --concurrency"),
}


def add_workload_arguments(parser: argparse.ArgumentParser, *, load_of: str = "replica",
                           group: str = GROUP) -> None:
    """--input-len/--output-len and --concurrency | --rate (the load of one replica, or with
    ``load_of="box"`` of the whole box); nothing when the parser has them already (`plan` defines
    them for its prediction before --slo asks for them)."""
    if "--input-len" in parser._option_string_actions:
        return
    conc_help, rate_help = _LOAD_HELP[load_of]
    g = parser.add_argument_group(group)
    g.add_argument("--input-len", type=int, default=None, metavar="ISL", help="prompt tokens per request")
    g.add_argument("--output-len", type=int, default=None, metavar="OSL", help="output tokens per request")
    load = g.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=int, default=None, metavar="C", help=conc_help)
    load.add_argument("--rate", type=float, default=None, metavar="R", help=rate_help)
    g.add_argument("--prefix-cache-hit", type=float, default=0.0, metavar="F",
                   help="fraction of each prompt vLLM's prefix cache serves (a shared system prompt, chat "
                        "history; default 0: every prompt prefilled in full)")


def workload_from_args(args: argparse.Namespace, *, required_by: str | None = None):
    """The Workload of the flags (BadInput when incomplete or out of range). Without
    ``required_by``: None when no workload flag is given (no prediction asked for); with it (e.g.
    ``"--slo"``) the lengths and the load are required."""
    from vllm_ops.planning.performance import Workload   # only with workload flags: plan's start-up budget

    isl, osl = getattr(args, "input_len", None), getattr(args, "output_len", None)
    c, r = getattr(args, "concurrency", None), getattr(args, "rate", None)
    if required_by is None:
        if isl is None and osl is None and c is None and r is None:
            return None
        if isl is None or osl is None or (c is None and r is None):
            raise BadInput("a performance prediction needs --input-len, --output-len and --concurrency or --rate")
    elif isl is None or osl is None:
        raise BadInput(f"{required_by} needs --input-len ISL and --output-len OSL (tokens per request)")
    elif (c is None) == (r is None):
        raise BadInput("give the load as --concurrency C or --rate R (one of them)")
    if r is not None and not 0 < r < float("inf"):
        raise BadInput(f"--rate must be a positive number of requests per second, not {r}")
    w = Workload(input_len=isl, output_len=osl, concurrency=c, rate=r,
                 prefix_cache_hit=float(getattr(args, "prefix_cache_hit", 0.0) or 0.0))
    w.check()
    return w


def add_performance(plan, w, spec=None) -> None:
    """Fill ``plan.performance`` for the workload ``w`` (None: the flags were not given; measured
    records attached)."""
    if w is None:
        return
    from vllm_ops.planning.performance import predict

    perf = predict(plan, w, spec=spec).to_dict()
    if perf.get("tpot_ms") is not None or perf.get("ttft_ms") is not None:
        from vllm_ops.planning.perf_fit import accuracy_for

        perf["accuracy"] = accuracy_for((plan.model or {}).get("id"))
    perf["workload"] = {"input_len": w.input_len, "output_len": w.output_len, "concurrency": w.concurrency,
                        "rate": w.rate, "prefix_cache_hit": w.prefix_cache_hit}
    try:
        from vllm_ops.launch.calibration import lookup_perf

        rec = lookup_perf(plan, w)
    except Exception:  # noqa: BLE001 — records are a bonus; a broken file never breaks planning
        rec = None
    if rec is not None:
        perf["measured"] = rec.get("measured")
        perf["notes"].append(f"measured on this model, hardware, vLLM version, flags and load "
                             f"(calibration record of {rec.get('ts')}): see 'measured'")
    plan.performance = perf
