"""`vllm-ops plan`: choose vLLM flags for a model on some GPUs and show the per-GPU memory.

Hardware, in order: ``--gpus SPEC`` (simulated) → ``--profile P`` → this machine's GPUs (probed)
→ the embedded default (the ``l4x4`` profile, said on stderr). Pins are vLLM's own flags; they are
kept and evaluated, never overridden. Anything after ``--`` is passed to vLLM verbatim.
Exit 0 fits · 3 does not fit (the JSON is printed either way) · 2 bad input.
"""
from __future__ import annotations

import argparse
import sys

DEFAULT_MODEL = "Qwen/Qwen2.5-Coder-7B-Instruct"
DEFAULT_PROFILE = "l4x4"
DEFAULT_GPUS = "4xL4"

_PINS = (
    ("--tensor-parallel-size", "-tp"), ("--pipeline-parallel-size", "-pp"), ("--data-parallel-size", "-dp"),
    ("--gpu-memory-utilization",), ("--max-model-len",), ("--max-num-seqs",), ("--max-num-batched-tokens",),
    ("--kv-cache-dtype",), ("--dtype",), ("--quantization", "-q"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", default=None,
                        help=f"HF id, catalog name or model directory (default {DEFAULT_MODEL})")
    parser.add_argument("--gpus", default=None, help="simulated GPUs, e.g. 4xL4, 2xH100, 1x79.18GiB")
    parser.add_argument("--profile", default=None, help="a hardware profile (see 'vllm-ops profiles')")
    parser.add_argument("--vllm-version", default=None, help="vLLM version whose rules to apply (default 0.33.0)")
    parser.add_argument("--port", type=int, default=8000, help="port of the first server (default 8000)")
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for the server (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON document")
    parser.add_argument("--explain", action="store_true", help="show the memory arithmetic")
    parser.add_argument("--offline", action="store_true", default=None, help="never ask the Hub")
    pins = parser.add_argument_group("pins (vLLM's own flags; kept as given)")
    for names in _PINS:
        pins.add_argument(*names, dest=names[0][2:].replace("-", "_"), default=None, metavar="V")
    pins.add_argument("--enforce-eager", action="store_true", default=False)


def run(args: argparse.Namespace) -> int:
    from vllm_ops import output
    from vllm_ops.errors import BadInput
    from vllm_ops.planning import plan
    from vllm_ops.planning.versions import DEFAULT_VLLM_VERSION

    env: dict[str, str] = {}
    for item in args.env or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadInput(f"--env wants KEY=VALUE, not {item!r}")
        env[key] = value

    inventory, profile = _hardware(args, output)
    model_name = args.model
    if not model_name:
        model_name = DEFAULT_MODEL
        output.info(f"vllm-ops plan: no --model given: planning the embedded default {DEFAULT_MODEL} "
                    f"(built-in catalog, offline)")
    from vllm_ops.models import load_model_spec

    spec = load_model_spec(model_name, offline=True if not args.model else args.offline)

    pins = {names[0][2:].replace("-", "_"): getattr(args, names[0][2:].replace("-", "_"))
            for names in _PINS if getattr(args, names[0][2:].replace("-", "_")) is not None}
    if args.enforce_eager:
        pins["enforce_eager"] = True
    result = plan(spec, inventory, pins=pins, vllm_version=args.vllm_version or DEFAULT_VLLM_VERSION,
                  profile=profile, extra_args=tuple(getattr(args, "passthrough", None) or ()), env=env,
                  served_name=args.served_model_name, port=args.port)
    if args.json:
        output.print_json(result.to_dict())
    else:
        _print_table(result, explain=args.explain)
    return 0 if result.fits else 3


def _hardware(args, output):
    from vllm_ops.hardware import is_available, parse_gpu_spec

    if args.gpus:
        return parse_gpu_spec(args.gpus), _maybe_profile(args.profile)
    if args.profile:
        prof = _maybe_profile(args.profile)
        return prof.inventory(), prof
    if _gpu_device_present() and is_available():
        from vllm_ops.hardware import probe

        return probe(), None
    try:
        prof = _maybe_profile(DEFAULT_PROFILE)
        inv = prof.inventory()
        output.info(f"vllm-ops plan: no GPU found and no --gpus/--profile: planning for the embedded default "
                    f"(profile {DEFAULT_PROFILE}: 4x NVIDIA L4)")
        return inv, prof
    except Exception:  # noqa: BLE001 — profiles not available: simulate the same box
        output.info(f"vllm-ops plan: no GPU found and no --gpus/--profile: planning for the embedded default "
                    f"(simulated {DEFAULT_GPUS})")
        return parse_gpu_spec(DEFAULT_GPUS), None


def _gpu_device_present() -> bool:
    """Cheap pre-check: no NVIDIA device node means no GPU (spares importing NVML on CPU boxes)."""
    import glob
    import os

    return os.path.exists("/dev/nvidiactl") or bool(glob.glob("/dev/nvidia[0-9]*")) or \
        bool(os.environ.get("VLLM_OPS_FORCE_PROBE"))


def _maybe_profile(name):
    if not name:
        return None
    from vllm_ops.profiles import load_profile

    return load_profile(name)


def _bar(parts: list[tuple[str, float, str]], total: float, width: int = 48) -> str:
    out = ""
    for _label, gib, style in parts:
        n = int(round(width * max(gib, 0) / total)) if total else 0
        out += f"[{style}]{'█' * n}[/]"
    return out


def _print_table(p, *, explain: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from rich.markup import escape

    con = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 132)
    m = p.memory
    cpu = p.image.startswith("vllm/vllm-openai-cpu")
    hw = p.hardware
    gpus = hw.get("gpu_count", 0)
    con.print(f"[bold]{p.model['id']}[/] on {hw.get('spec') or ''} ({gpus} GPU(s), {hw.get('source')}) "
              f"with vLLM {p.vllm_version} ({p.image})")
    status = "[green]fits[/]" if p.fits else f"[red]does not fit: {p.failure_stage}[/]"
    con.print(f"{status}; margin {p.margin_gib:.2f} GiB per GPU")
    if not cpu:
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
    t = Table(title="memory per GPU (GiB)", show_header=True)
    for c in ("total", "budget", "weights", "activation", "non-torch", "graphs", "sampler", "KV", "KV tokens",
              "concurrency"):
        t.add_column(c, justify="right")
    t.add_row(*(f"{x:.2f}" for x in (m.total_gib, m.budget_gib, m.weights_gib, m.activation_peak_gib,
                                     m.non_torch_gib, m.cuda_graph_gib, m.sampler_warmup_gib, m.kv_cache_gib)),
              f"{m.kv_cache_tokens:,}", f"{m.max_concurrency:.2f}x")
    con.print(t)
    if p.alternatives:
        a = Table(title="same layout at other --max-num-seqs", show_header=True)
        for c in ("max-num-seqs", "activation", "graphs", "KV GiB", "KV tokens", "concurrency", "margin", "verdict"):
            a.add_column(c, justify="right")
        for alt in p.alternatives:
            verdict = ("fits" if alt["fits"] else f"fails: {alt['failure_stage']}") + (" (thin)" if alt["thin_margin"] else "")
            a.add_row(str(alt["max_num_seqs"]), f"{alt['activation_peak_gib']:.2f}", f"{alt['cuda_graph_gib']:.2f}",
                      f"{alt['kv_cache_gib']:.2f}", f"{alt['kv_cache_tokens']:,}", f"{alt['max_concurrency']:.2f}x",
                      f"{alt['margin_gib']:.2f}", verdict)
        con.print(a)
    r = Table(title="choices", show_header=True)
    r.add_column("flag")
    r.add_column("why")
    for k, v in p.reasons.items():
        r.add_row(k, escape(v))
    con.print(r)
    con.print("replicas: " + ", ".join(f"GPUs {rep.gpu_ids} → :{rep.port}" + (f" on {rep.node}" if rep.node else "")
                                       for rep in p.replicas))
    for w in p.warnings:
        con.print(f"[yellow]warning[/] {escape('[' + w.code + ']')} {escape(w.message)}")
    if p.env:
        con.print("env: " + " ".join(f"{k}={v}" for k, v in p.env.items()))
    con.print(f"[bold]command:[/] {escape(p.command)}")
    if explain:
        con.print("[bold]arithmetic:[/]")
        for line in p.explain:
            con.print("  " + escape(line))
        con.print("[bold]assumptions:[/]")
        for line in p.assumptions:
            con.print("  - " + escape(line))
    sys.stdout.flush()
