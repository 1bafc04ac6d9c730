"""The seed's question with the real performance model: on 4x L4 (profile l4x4), does
Qwen2.5-Coder-7B-Instruct serve more within the targets as TP=2 x 2 replicas, TP=4, or 4 x TP=1?
`plan --slo` answers with a table of the three layouts and their predicted figures."""
from __future__ import annotations

import json

from vllm_ops.cli import main

ARGS = ("plan", "--profile", "l4x4", "--model", "Qwen/Qwen2.5-Coder-7B-Instruct", "--slo", "tpot_ms=50,ttft_ms=2000",
        "--input-len", "1024", "--output-len", "256", "--concurrency", "32")


def test_seed_layouts_table(capsys):
    rc = main(list(ARGS))
    out, err = capsys.readouterr()
    assert rc in (0, 3), err
    table = out.split("top ")[0]                      # the per-layout table comes first
    rows = {line.split("│")[2].strip(): line for line in table.splitlines()
            if line.count("│") > 10 and line.split("│")[2].strip()}
    assert {"TP=1 x 4", "TP=2 x 2", "TP=4 x 1"} <= set(rows)
    for line in rows.values():
        cells = [c.strip() for c in line.split("│")]
        assert cells[10] not in ("-", "") and cells[11] not in ("-", "")     # TPOT ms, out tok/s/GPU predicted


def test_seed_json_names_the_three_layouts_with_numbers(capsys):
    rc = main([*ARGS, "--json"])
    doc = json.loads(capsys.readouterr().out)
    layouts = {}
    for c in doc["candidates"]:
        layouts.setdefault(c["layout"], c)
    for name in ("TP=1 x 4", "TP=2 x 2", "TP=4 x 1"):
        c = layouts[name]
        assert c["fits"] and c["performance"]["tpot_ms"] > 0 and c["performance"]["ttft_ms"] > 0
        assert c["output_tokens_per_s_per_gpu"] > 0
    best = doc["candidates"][0]
    assert doc["vllm_args"]["tensor_parallel_size"] == best["tensor_parallel_size"]
    assert (rc == 0) == best["meets"]
