"""The human table `vllm-ops plan` prints (and `plan --slo` for its chosen plan): layout, memory
bar, reasons, replicas, nodes, warnings, the command. rich is imported only here, when a table is
printed (plan's start-up budget)."""
from __future__ import annotations

import sys

from vllm_ops import output

def _bar(parts: list[tuple[str, float, str]], total: float, width: int = 48) -> str:
    out = ""
    for _label, gib, style in parts:
        n = int(round(width * max(gib, 0) / total)) if total else 0
        out += f"[{style}]{'█' * n}[/]"
    return out


def print_plan_table(p, *, explain: bool) -> None:
    from rich.markup import escape

    con = output.console(pipe_width=132)
    hw = p.hardware
    gpus = hw.get("gpu_count", 0)
    label = hw.get("spec") or f"{gpus} GPU(s)"
    where = label if hw.get("source") and hw["source"] in label else f"{label} ({gpus} GPU(s), {hw.get('source')})"
    con.print(f"[bold]{p.model['id']}[/] on {escape(where)} "
              f"with vLLM {p.vllm_version} ({p.image})")
    status = "[green]fits[/]" if p.fits else f"[red]does not fit: {p.failure_stage}[/]"
    con.print(f"{status}; margin {p.margin_gib:.2f} GiB per GPU")
    if not p.cpu:
        _print_memory_bar(con, p)
    con.print(_memory_table(p))
    if p.alternatives:
        con.print(_alternatives_table(p.alternatives))
    _print_choices_and_layout(con, p)
    if p.performance:
        _print_performance(con, p.performance)
    con.print(f"[bold]command:[/] {escape(p.command)}")
    if explain:
        con.print("[bold]arithmetic:[/]")
        for line in p.explain:
            con.print("  " + escape(line))
        con.print("[bold]assumptions:[/]")
        for line in p.assumptions:
            con.print("  - " + escape(line))
    sys.stdout.flush()


def _print_memory_bar(con, p) -> None:
    """One GPU's memory as a coloured bar and its legend."""
    m = p.memory
    free = max(m.total_gib - m.budget_gib, 0)
    graphs_out = 0.0 if any("CUDA-graph estimate" in a for a in p.assumptions) else m.cuda_graph_gib
    parts = [("weights", m.weights_gib, "blue"), ("activations", m.activation_peak_gib + m.non_torch_gib, "magenta"),
             ("graphs", m.cuda_graph_gib, "yellow"), ("KV", max(m.kv_cache_gib, 0), "green"),
             ("free", max(free - graphs_out, 0), "white")]
    con.print(f"per GPU {m.total_gib:.2f} GiB  " + _bar(parts, m.total_gib))
    con.print("  [blue]█[/] weights {:.2f}  [magenta]█[/] activations+non-torch {:.2f}  [yellow]█[/] CUDA graphs "
              "{:.2f}  [green]█[/] KV {:.2f}  [white]█[/] free {:.2f}  (budget {:.2f})".format(
                  m.weights_gib, m.activation_peak_gib + m.non_torch_gib, m.cuda_graph_gib, m.kv_cache_gib,
                  max(free - graphs_out, 0), m.budget_gib))


def _memory_table(p):
    """The memory table; with a calibration record, the measured row above the predicted one."""
    from rich.table import Table

    m = p.memory
    t = Table(title="memory per GPU (GiB)", show_header=True)
    for c in ("total", "budget", "weights", "activation", "non-torch", "graphs", "sampler", "KV", "KV tokens",
              "concurrency"):
        t.add_column(c, justify="right")
    t.add_row(*(f"{x:.2f}" for x in (m.total_gib, m.budget_gib, m.weights_gib, m.activation_peak_gib,
                                     m.non_torch_gib, m.cuda_graph_gib, m.sampler_warmup_gib, m.kv_cache_gib)),
              f"{m.kv_cache_tokens:,}", f"{m.max_concurrency:.2f}x")
    if p.calibration:                       # the row above is measured (planning/calibrated.py)
        pr = {**m.__dict__, **(p.calibration.get("predicted") or {})}
        t.add_row("predicted", "", *(f"{pr[k]:.2f}" for k in ("weights_gib", "activation_peak_gib",
                                                             "non_torch_gib", "cuda_graph_gib")),
                  f"{m.sampler_warmup_gib:.2f}", f"{pr['kv_cache_gib']:.2f}", f"{int(pr['kv_cache_tokens']):,}",
                  f"{pr['max_concurrency']:.2f}x")
        t.title = "memory per GPU (GiB): MEASURED by an earlier launch (calibration record), predicted below"
    return t


def _alternatives_table(alternatives: list[dict]):
    from rich.table import Table

    a = Table(title="same layout at other --max-num-seqs", show_header=True)
    for c in ("max-num-seqs", "activation", "graphs", "KV GiB", "KV tokens", "concurrency", "margin", "verdict"):
        a.add_column(c, justify="right")
    for alt in alternatives:
        verdict = ("fits" if alt["fits"] else f"fails: {alt['failure_stage']}") + (" (thin)" if alt["thin_margin"] else "")
        a.add_row(str(alt["max_num_seqs"]), f"{alt['activation_peak_gib']:.2f}", f"{alt['cuda_graph_gib']:.2f}",
                  f"{alt['kv_cache_gib']:.2f}", f"{alt['kv_cache_tokens']:,}", f"{alt['max_concurrency']:.2f}x",
                  f"{alt['margin_gib']:.2f}", verdict)
    return a


def _print_choices_and_layout(con, p) -> None:
    """Why each flag, where the replicas and nodes go, the warnings and the environment."""
    from rich.markup import escape
    from rich.table import Table

    r = Table(title="choices", show_header=True)
    r.add_column("flag")
    r.add_column("why")
    for k, v in p.reasons.items():
        r.add_row(k, escape(v))
    con.print(r)
    con.print("replicas: " + ", ".join(f"GPUs {rep.gpu_ids} → :{rep.port}" + (f" on {rep.node}" if rep.node else "")
                                       for rep in p.replicas))
    spanning = [n for n in p.nodes if n.replica is not None]
    if spanning:
        va = p.vllm_args
        how = (f"native (--nnodes {va.get('nnodes')}, --master-addr {va.get('master_addr')}, "
               f"--master-port {va.get('master_port')}; ranks > 0 --headless)" if va.get("nnodes") else "ray")
        con.print(escape(f"nodes ({how}): " + ", ".join(
            f"{n.name} (replica {n.replica} rank {n.rank}"
            + (f", {n.address}" if n.address else "") + ")" for n in spanning)))
    for w in p.warnings:
        con.print(f"[yellow]warning[/] {escape('[' + w.code + ']')} {escape(w.message)}")
    if p.env:
        con.print("env: " + " ".join(f"{k}={v}" for k, v in p.env.items()))


def _print_performance(con, perf: dict) -> None:
    from rich.markup import escape

    w = perf.get("workload") or {}
    load = f"concurrency {w.get('concurrency')}" if w.get("concurrency") else f"{w.get('rate')} req/s"
    head = f"[bold]performance[/] (one replica, {w.get('input_len')} in / {w.get('output_len')} out, {load}): "
    if perf.get("tpot_ms") is None and perf.get("ttft_ms") is None:
        con.print(head + escape(f"not predicted: {perf.get('reason')}"))
        return
    f = lambda v, u: "-" if v is None else f"{v:.1f}{u}"  # noqa: E731
    con.print(head + f"TTFT {f(perf.get('ttft_ms'), ' ms')}, TPOT {f(perf.get('tpot_ms'), ' ms')} "
              f"(floor {f(perf.get('tpot_floor_ms'), ' ms')}), {f(perf.get('output_tokens_per_s'), ' tok/s')}, "
              f"{f(perf.get('requests_per_s'), ' req/s')}; bound: {perf.get('bound')}; "
              f"running {f(perf.get('effective_concurrency'), '')}")
    if perf.get("reason"):
        con.print("  " + escape(perf["reason"]))
    if perf.get("hint"):
        con.print("  hint: " + escape(perf["hint"]))
    for caveat in perf.get("caveats") or ():
        con.print("  caveat: " + escape(caveat))
    from vllm_ops.planning.perf_fit import accuracy_line

    acc = accuracy_line(perf.get("accuracy"))
    if acc:
        con.print("  " + escape(acc))
    m = perf.get("measured")
    if m:
        con.print(escape(f"  measured before: TTFT {m.get('ttft_ms')} ms, TPOT {m.get('tpot_ms')} ms, "
                         f"{m.get('output_tokens_per_s')} tok/s"))
