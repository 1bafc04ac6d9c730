"""`vllm-ops plan --slo`: the flags, the search step and the candidates table (shared with tune).

    vllm-ops plan --slo tpot_ms=X[,ttft_ms=Y] --input-len ISL --output-len OSL
                  [--concurrency C | --rate R] [--allow-fp8] [--json]

Exit 0: the chosen layout meets the targets · 3: none does (the closest is printed, with what
misses) · 2: bad input.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from vllm_ops import output
from vllm_ops.commands._perfargs import BOX_GROUP, add_workload_arguments, workload_from_args
from vllm_ops.commands._planargs import plan_inputs
from vllm_ops.commands._plantable import print_plan_table

TABLE_TOP = 8          # variants listed under the per-layout table


def add_slo_arguments(parser: argparse.ArgumentParser) -> None:
    add_workload_arguments(parser, load_of="box", group=BOX_GROUP)
    g = parser.add_argument_group("latency targets (--slo: search the layout with the most goodput)")
    g.add_argument("--slo", default=None, metavar="tpot_ms=X[,ttft_ms=Y]",
                   help="mean TPOT (and TTFT) targets: search TP x replicas, max-num-seqs, "
                        "max-num-batched-tokens and KV dtype for the most output tokens/s per GPU within them; "
                        "with --slo, --concurrency / --rate are the whole box's load (replicas split it)")
    g.add_argument("--slo-headroom", default="auto", metavar="auto|PCT",
                   help="a layout counts as meeting a target when predicted this much under it: auto (default) = "
                        "the performance model's held-out median error on models it was not fitted on, per metric; "
                        "0 = the predictions as they are")
    g.add_argument("--allow-fp8", action="store_true", default=False,
                   help="let --slo try fp8 weights (online quantization: changes the outputs)")


def search_from_args(args: argparse.Namespace, *, cmd: str = "plan", vllm_version: str | None = None,
                     num_requests: int | None = None) -> Any:
    """Parse --slo and the workload, plan every candidate → SearchResult. ``num_requests``: predict a
    benchmark of that many requests (first wave included) instead of the steady state."""
    from vllm_ops.planning.slo import parse_headroom, parse_slo, search

    slo = parse_slo(args.slo, parse_headroom(getattr(args, "slo_headroom", "auto")))
    workload = workload_from_args(args, required_by="--slo")
    if num_requests is not None:
        from dataclasses import replace

        from vllm_ops.planning.perf_fit import BENCH_OUTPUT_SPREAD   # the benchmark is vllm-ops bench's

        workload = replace(workload, num_requests=int(num_requests), output_spread=BENCH_OUTPUT_SPREAD)
    kw = plan_inputs(args, cmd=cmd, vllm_version=vllm_version)
    model, inventory, pins = kw.pop("model"), kw.pop("inventory"), kw.pop("pins")
    version, profile = kw.pop("vllm_version"), kw.pop("profile")
    kw.pop("backend", None), kw.pop("master_port", None)
    return search(model, inventory, slo, workload, pins=pins, vllm_version=version, profile=profile,
                  allow_fp8=bool(getattr(args, "allow_fp8", False)), plan_kwargs=kw)


def run_slo(args: argparse.Namespace) -> int:
    from vllm_ops.planning.slo import chosen_plan

    result = search_from_args(args)
    p = chosen_plan(result)
    if args.json:
        output.print_json(p.to_dict())
    else:
        print_candidates(result)
        print_plan_table(p, explain=args.explain)
    if not result.feasible:
        c = result.chosen
        output.info(f"vllm-ops plan: no layout meets --slo {args.slo}: the closest is {c.layout} "
                    f"({'; '.join(c.misses) or 'no prediction'})")
        return 3
    return 0


def _fmt(x: Any, spec: str = ".1f") -> str:
    return "-" if x is None else format(float(x), spec)


def _row(c: Any) -> list[str]:
    perf = c.performance or {}
    load = c.load.get("concurrency", c.load.get("rate"))
    verdict = "[green]meets[/]" if c.meets else "[red]" + "; ".join(c.misses).replace("[", r"\[") + "[/]"
    return [str(c.rank), c.layout, str(c.gpus_used), str(c.max_num_seqs), str(c.max_num_batched_tokens),
            c.kv_cache_dtype, c.quantization or "auto", _fmt(load, "g") if load is not None else "-",
            _fmt(perf.get("ttft_ms"), ".0f"), _fmt(perf.get("tpot_ms")),
            _fmt(c.output_tokens_per_s_per_gpu), _fmt(c.requests_per_s_per_gpu, ".3f"),
            str(perf.get("bound") or "-"), verdict]


COLUMNS = ("#", "layout", "GPUs", "max-num-seqs", "batched tok", "KV", "weights", "load/replica",
           "TTFT ms", "TPOT ms", "out tok/s/GPU", "req/s/GPU", "bound", "verdict")


def candidates_table(rows: list[Any], title: str) -> Any:
    from rich.table import Table

    t = Table(title=title, show_header=True, title_justify="left")
    for col in COLUMNS:
        t.add_column(col, justify="left" if col in ("layout", "KV", "weights", "bound", "verdict") else "right")
    for c in rows:
        t.add_row(*_row(c))
    return t


def print_candidates(result: Any, console: Any = None) -> None:
    """The best variant of each layout, then the top variants overall, then the search notes."""
    from rich.markup import escape

    con = console or output.console(pipe_width=160)
    w, slo = result.workload, result.slo
    load = f"concurrency {w.concurrency}" if w.concurrency is not None else f"rate {w.rate:g}/s"
    targets = f"TPOT <= {slo.tpot_ms:g} ms" + (f", TTFT <= {slo.ttft_ms:g} ms" if slo.ttft_ms else "")
    if slo.tpot_headroom or slo.ttft_headroom:
        lim = slo.limits()
        targets += (f" (predicted under {lim['tpot_ms']:.1f}" + (f" / {lim['ttft_ms']:.0f}" if slo.ttft_ms else "")
                    + " ms: headroom for the model's error, --slo-headroom)")
    con.print(f"[bold]--slo[/] {targets}; workload in {w.input_len} / out {w.output_len} tokens, {load} "
              f"({'the box, split over replicas' if result.split else 'per replica'}); "
              f"{len(result.candidates)} candidates in {result.elapsed_s * 1000:.0f} ms")
    con.print(candidates_table(result.best_per_layout(), "layouts (the best variant of each; figures per replica, "
                                                         "goodput per GPU)"))
    con.print(candidates_table(result.candidates[:TABLE_TOP], f"top {min(TABLE_TOP, len(result.candidates))} "
                                                              f"candidates"))
    for n in result.notes:
        con.print(f"note: {escape(n)}")
    c = result.chosen
    if result.feasible:
        con.print(f"[bold green]chosen:[/] {c.layout}, max-num-seqs {c.max_num_seqs}, max-num-batched-tokens "
                  f"{c.max_num_batched_tokens}, KV {c.kv_cache_dtype}"
                  + (f", weights {c.quantization}" if c.quantization else "")
                  + f": {c.output_tokens_per_s_per_gpu:.1f} output tok/s per GPU within the targets")
    else:
        con.print(f"[bold red]no layout meets the targets;[/] closest: {c.layout} ({escape('; '.join(c.misses))})")
    sys.stdout.flush()
