"""`vllm-ops tune` on a real H200 (vLLM 0.25.0, dummy weights), replayed from what it wrote:
tests/data/gpu-runs/h200x1/tune/<run>/ holds the `--json` result (tune.json), its progress lines
(tune.err), the profile it wrote, and tune/calibration.jsonl the records of the whole session.

    vllm-ops tune --model M --slo tpot_ms=15,ttft_ms=1000 --input-len 1024 --output-len 256 \\
        --concurrency 64 --num-prompts 128 --allow-fp8 --max-starts 3 --json -- --load-format dummy

t7 = Qwen2.5-7B-Instruct, t8 = Llama-3.1-8B-Instruct. Checked: at most 3 starts and no restart, every
server stopped, the pick is the best measured within the SLO, the search's first pick measured within
5 % of that best, the profile reads back with the pick's flags, and every trial left a perf record."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vllm_ops.profiles import load_profile

TUNE = Path(__file__).resolve().parents[1] / "data" / "gpu-runs" / "h200x1" / "tune"
RUNS = ("t7", "t8")


def _doc(run: str) -> dict:
    return json.loads((TUNE / run / "tune.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("run", RUNS)
def test_at_most_three_starts_none_repeated_every_server_stopped(run):
    d, log = _doc(run), (TUNE / run / "tune.err").read_text(encoding="utf-8")
    assert 1 <= d["starts"] <= 3 and len(d["trials"]) == d["starts"] and not d["interrupted"]
    assert all(t["started"] and not t["error"] for t in d["trials"])
    assert len({json.dumps(t["flags"], sort_keys=True) for t in d["trials"]}) == len(d["trials"])
    assert log.count("tune: stopped ") == d["starts"]
    assert "tune exit 0" in log


@pytest.mark.parametrize("run", RUNS)
def test_pick_is_the_best_measured_and_the_first_predicted_is_within_5_percent(run):
    d = _doc(run)
    meeting = [t for t in d["trials"] if t["meets"]]
    best = max(meeting, key=lambda t: t["goodput_per_gpu"])
    assert d["best"]["flags"] == best["flags"] and d["best"]["meets"]
    first = min(d["trials"], key=lambda t: t["predicted_rank"])
    assert first["meets"] and first["goodput_per_gpu"] >= 0.95 * best["goodput_per_gpu"]


@pytest.mark.parametrize("run", RUNS)
def test_profile_reads_back_with_the_pick(run):
    d = _doc(run)
    prof = load_profile(f"h200-{run}", TUNE / run)
    for k in ("tensor_parallel_size", "max_num_seqs", "max_num_batched_tokens"):
        assert prof.vllm_defaults[k] == d["best"]["flags"][k]
    assert prof.vllm_defaults.get("quantization") == d["best"]["flags"]["quantization"]


def test_every_start_left_a_memory_record_and_every_trial_a_perf_record():
    recs = [json.loads(line) for line in (TUNE / "calibration.jsonl").read_text(encoding="utf-8").splitlines() if line]
    for run, model in (("t7", "Qwen2.5-7B"), ("t8", "Llama-3.1-8B")):
        mine = [r for r in recs if model in r["model_id"]]
        perf = [r for r in mine if r.get("kind") == "perf"]
        assert len(perf) == _doc(run)["starts"] == len(mine) - len(perf)
        assert all(r["measured"]["tpot_ms"] > 0 and r["predicted"]["tpot_ms"] > 0 for r in perf)
