"""Convert a ``vllm bench serve --save-detailed`` result into vllm-ops bench's layout (one level, per-request
start/TTFT/end), so that the performance model's accuracy scripts read vLLM's own benchmark like ours.

  python scripts/vllm_bench_convert.py RESULT.json OUT.json [--prefix-hit F] [--hit-source TEXT]

TPOT per request is (e2e - TTFT) / (output tokens - 1), the mean over requests as vllm bench reports it."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from vllm_ops.loadtest.stats import Distribution


def _stats(seconds: list[float]) -> dict | None:
    """vllm-ops bench's summary of a latency (ms), None when there is nothing to summarise."""
    return Distribution.of(seconds).to_dict() if seconds else None


def convert(d: dict, name: str, hit: float | None = None, hit_source: str | None = None) -> dict:
    ttft_s = list(d["ttfts"])
    e2e_s = [t + sum(g) for t, g in zip(ttft_s, d["itls"])]
    t0 = min(d["start_times"])
    outs = list(d["output_lens"])
    tpot_s = [(e - t) / (n - 1) for e, t, n in zip(e2e_s, ttft_s, outs) if n > 1]
    ttft, e2e = [t * 1e3 for t in ttft_s], [e * 1e3 for e in e2e_s]
    level = {"concurrency": d["max_concurrency"], "request_rate": None, "num_requests": d["num_prompts"],
             "completed": d["completed"], "failed": d["failed"], "duration_s": d["duration"],
             "request_throughput": d["request_throughput"], "output_throughput": d["output_throughput"],
             "total_output_tokens": d["total_output_tokens"], "total_prompt_tokens": d["total_input_tokens"],
             "ttft_ms": _stats(ttft_s), "itl_ms": _stats([g for gs in d["itls"] for g in gs]),
             "tpot_ms": _stats(tpot_s), "e2e_ms": _stats(e2e_s), "errors": [e for e in d.get("errors", []) if e]}
    if hit is not None:
        level["server"] = {"prefix_cache_hit_rate": hit, "source": hit_source or "stated"}
    return {"harness": "vllm bench serve (vLLM's own benchmark, random dataset, --ignore-eos, closed loop at "
                       "--max-concurrency)",
            "source": f"converted from its --save-detailed result {name} by scripts/vllm_bench_convert.py; "
                      "per-request start/TTFT/end in requests",
            "model": Path(d["model_id"]).name, "version": None, "mode": "concurrency",
            "input_len": d["input_lens"][0], "output_len": d["output_lens"][0], "num_prompts": d["num_prompts"],
            "dataset": None, "seed": None, "prompt_pool": None, "ok": d["failed"] == 0, "levels": [level],
            "requests": {"start_ms": [round((s - t0) * 1e3, 2) for s in d["start_times"]],
                         "ttft_ms": [round(x, 2) for x in ttft], "e2e_ms": [round(x, 2) for x in e2e],
                         "output_len": outs}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("result")
    ap.add_argument("out")
    ap.add_argument("--version", default=None, help="the vLLM version that ran it")
    ap.add_argument("--prefix-hit", type=float, default=None, help="the server's prefix-cache hit fraction")
    ap.add_argument("--hit-source", default=None, help="where the hit fraction comes from")
    a = ap.parse_args()
    doc = convert(json.loads(Path(a.result).read_text()), Path(a.result).name, a.prefix_hit, a.hit_source)
    doc["version"] = a.version
    Path(a.out).write_text(json.dumps(doc) + "\n")


if __name__ == "__main__":
    main()
