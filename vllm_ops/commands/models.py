"""`vllm-ops models list|show`: the offline catalog and one model's facts."""
from __future__ import annotations

import argparse

from vllm_ops.errors import BadInput
from vllm_ops.models import catalog, load_model_spec
from vllm_ops.output import console

GIB = 1 << 30


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_cmd", metavar="SUBCOMMAND")
    p_list = sub.add_parser("list", help="models in the offline catalog")
    p_list.add_argument("--json", action="store_true", help="print one JSON document")
    p_show = sub.add_parser("show", help="facts about one model (name, HF id or directory)")
    p_show.add_argument("model", help="HF id (ORG/NAME), catalog name or a model directory")
    p_show.add_argument("--json", action="store_true", help="print one JSON document")
    p_show.add_argument("--offline", action="store_true", default=None,
                        help="never ask the Hub (also HF_HUB_OFFLINE=1)")
    p_show.add_argument("--online", action="store_true",
                        help="ask the Hub before the offline catalog (after local dir and HF cache)")


def run(args: argparse.Namespace) -> int:
    cmd = getattr(args, "models_cmd", None)
    if cmd == "list":
        return _list(args)
    if cmd == "show":
        return _show(args)
    raise BadInput("missing subcommand", hint="use 'vllm-ops models list' or 'vllm-ops models show MODEL'")


def _list(args) -> int:
    names = catalog.list_models()
    if args.json:
        from vllm_ops.output import print_json

        print_json({"models": names, "count": len(names)})
        return 0
    import sys

    for n in names:
        sys.stdout.write(n + "\n")
    return 0


def summary(spec) -> dict:
    """The compact facts `models show` prints."""
    q = spec.quantization
    moe = spec.moe
    mla = spec.mla
    return {
        "model": spec.id,
        "architecture": spec.architecture,
        "layers": spec.num_layers,
        "hidden": spec.hidden_size,
        "heads": spec.num_attention_heads,
        "kv_heads": spec.num_kv_heads,
        "head_dim": spec.head_dim,
        "vocab": spec.vocab_size,
        "max_model_len": spec.max_model_len,
        "moe": (f"{moe.num_experts} experts, top-{moe.experts_per_token}"
                + (f", {moe.num_shared_experts} shared" if moe.num_shared_experts else "")) if moe else None,
        "mla": (f"kv_lora {mla.kv_lora_rank} + rope {mla.qk_rope_head_dim}") if mla else None,
        "sliding_window": spec.sliding_window,
        "quantization": (q.method + (f" w{q.bits}" if q.bits else "")
                         + (f" g{q.group_size}" if q.group_size else "")) if q else None,
        "dtype": spec.torch_dtype,
        "params_b": round(spec.param_count / 1e9, 3),
        "weight_gib": round(spec.weight_bytes / GIB, 2),
        "weight_bytes_source": spec.weight_bytes_source,
        "computed_weight_gib": round((spec.computed_weight_bytes or 0) / GIB, 2),
        "index_weight_gib": round(spec.index_total_size / GIB, 2) if spec.index_total_size else None,
        "kv_bytes_per_token_bf16": spec.kv_bytes_per_token(2),
        "source": spec.source,
    }


def _show(args) -> int:
    offline = True if args.offline else None
    spec = load_model_spec(args.model, offline=offline, prefer_hub=True if args.online else None)
    if args.json:
        from vllm_ops.output import print_json

        print_json({"summary": summary(spec), "spec": spec.to_dict()})
        return 0
    s = summary(spec)

    from rich.table import Table

    t = Table(title=spec.id, show_header=False, box=None)
    t.add_column("fact", style="bold")
    t.add_column("value")
    rows = [
        ("architecture", f"{s['architecture']} ({spec.model_type})"),
        ("layers", str(s["layers"])),
        ("hidden", str(s["hidden"])),
        ("heads / kv heads", f"{s['heads']} / {s['kv_heads']}"),
        ("head_dim", str(s["head_dim"])),
        ("vocab", str(s["vocab"])),
        ("max_model_len (vLLM default)", str(s["max_model_len"])),
        ("MoE", s["moe"] or "-"),
        ("MLA", s["mla"] or "-"),
        ("sliding window", (f"{s['sliding_window']} on {spec.num_sliding_layers}/{spec.num_layers} layers"
                            if s["sliding_window"] else "-")),
        ("quantization", s["quantization"] or "-"),
        ("dtype", s["dtype"]),
        ("params", f"{s['params_b']:.2f} B"),
        ("weights", f"{s['weight_gib']:.2f} GiB ({s['weight_bytes_source']})"),
        ("computed vs index", f"{s['computed_weight_gib']:.2f} GiB vs "
                              + (f"{s['index_weight_gib']:.2f} GiB" if s["index_weight_gib"] else "no index")),
        ("KV bytes/token (bf16)", f"{s['kv_bytes_per_token_bf16']:,}"),
        ("source", spec.source + (f" — {spec.catalog_source[:100]}" if spec.catalog_source else "")
         + (f" — {spec.config_path}" if spec.config_path else "")),
    ]
    for k, v in rows:
        t.add_row(k, v)
    for n in spec.notes:
        t.add_row("note", n)
    console().print(t)
    return 0
