"""scripts/vllm_bench_convert.py: vLLM's own benchmark result in vllm-ops bench's layout (the prefill/ and sched/
mi7 data came through it)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "vllm_bench_convert.py"


def _mod():
    spec = importlib.util.spec_from_file_location("vllm_bench_convert", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


RESULT = {"model_id": "/root/models/Org__M", "num_prompts": 2, "max_concurrency": 1, "duration": 0.5,
          "completed": 2, "failed": 0, "total_input_tokens": 200, "total_output_tokens": 8, "request_throughput": 4.0,
          "output_throughput": 16.0, "input_lens": [100, 100], "output_lens": [4, 4],
          "ttfts": [0.010, 0.020], "itls": [[0.001, 0.002, 0.003], [0.003, 0.003, 0.003]],
          "start_times": [100.0, 100.25], "errors": ["", ""]}


def test_per_request_times_and_tpot_by_hand():
    doc = _mod().convert(RESULT, "b.json", hit=0.0, hit_source="off")
    r = doc["requests"]
    assert r["start_ms"] == [0.0, 250.0] and r["ttft_ms"] == [10.0, 20.0] and r["e2e_ms"] == [16.0, 29.0]
    lv = doc["levels"][0]
    assert lv["ttft_ms"]["mean"] == pytest.approx(15.0)
    assert lv["tpot_ms"]["mean"] == pytest.approx((6.0 / 3 + 9.0 / 3) / 2)     # (e2e - TTFT) / (OSL - 1)
    assert lv["server"] == {"prefix_cache_hit_rate": 0.0, "source": "off"} and lv["errors"] == []
    assert (doc["input_len"], doc["output_len"], doc["model"]) == (100, 4, "Org__M")


def test_the_command_line_writes_one_document(tmp_path):
    src, out = tmp_path / "b.json", tmp_path / "bench.json"
    src.write_text(json.dumps(RESULT))
    subprocess.run([sys.executable, str(SCRIPT), str(src), str(out), "--version", "0.25.0"], check=True)
    doc = json.loads(out.read_text())
    assert doc["version"] == "0.25.0" and doc["levels"][0]["completed"] == 2 and "server" not in doc["levels"][0]
