"""A level whose first wave paid a one-time cost (a kernel compiled for a batch shape the server had not run):
`vllm-ops bench` says so beside the level (text and JSON), keeps that mean TTFT out of the calibration records
`plan` quotes, and `vllm-ops tune` judges the TTFT SLO on the median, said so (tests/unit/test_tune.py). The
detector is checked against every level stored under tests/data/gpu-runs (real GPU runs): it names exactly the
three known first-wave levels."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from vllm_ops.loadtest.report import BenchReport, level_warnings, one_time_cost_warning
from vllm_ops.loadtest.stats import Distribution, LevelStats, ServerSide

RUNS = Path(__file__).resolve().parents[1] / "data" / "gpu-runs"
FIRST_WAVE = {"h100x1/warmup/t235l20w/bench-1000-100-c4.json", "h200x1/unseen/t235l40/bench-1000-100-c4.json",
              "h200x1/perf/q30bf/bench-1024-128-c8.json"}


def level_of(d: dict) -> LevelStats:
    """A stored bench document's level as the bench's own record."""
    dist = {k: Distribution(**{f: v for f, v in (d.get(k) or {}).items() if f in Distribution.__dataclass_fields__})
            for k in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms")}
    server = ServerSide(**{k: v for k, v in (d.get("server") or {}).items() if k in ServerSide.__dataclass_fields__})
    plain = {f.name: d.get(f.name) for f in dataclasses.fields(LevelStats)
             if f.name not in (*dist, "server", "client_lag_ms", "errors")}
    return LevelStats(**plain, **dist, server=server, errors=list(d.get("errors") or []))


def _stored_levels():
    for f in sorted(RUNS.rglob("bench-*.json")):
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except ValueError:
            continue
        for d in doc.get("levels") or []:
            if (d.get("ttft_ms") or {}).get("count"):
                yield str(f.relative_to(RUNS)), doc, level_of(d)


def test_flags_exactly_the_stored_first_wave_levels():
    levels = list(_stored_levels())
    flagged = {name for name, _doc, lv in levels if one_time_cost_warning(lv)}
    assert len(levels) >= 170 and flagged == FIRST_WAVE


def test_a_partly_cached_level_is_not_a_one_time_cost():
    """--prompt-pool levels (hitpath/cpu: the pool's first pass computed, the rest served by the prefix cache) spread
    their TTFTs for that reason; with the same latencies and nothing cached the detector would speak."""
    pooled = [(name, lv) for name, _doc, lv in _stored_levels() if "hitpath/cpu/" in name]
    assert len(pooled) == 4
    spread = [(name, lv) for name, lv in pooled if lv.ttft_ms.mean >= 2 * lv.ttft_ms.p50]
    assert len(spread) == 3 and all(lv.server.prefix_cache_hit_rate >= 0.75 for _n, lv in spread)
    for _name, lv in spread:
        assert one_time_cost_warning(lv) is None
        fresh = dataclasses.replace(lv, server=dataclasses.replace(lv.server, prefix_cache_hit_rate=0.0))
        assert "one-time cost" in one_time_cost_warning(fresh)


def test_the_warning_is_in_the_text_and_the_json(capsys):
    name = "h100x1/warmup/t235l20w/bench-1000-100-c4.json"
    doc = json.loads((RUNS / name).read_text(encoding="utf-8"))
    lv = level_of(doc["levels"][0])
    assert "349" in one_time_cost_warning(lv) and "2.7x the median (129 ms" in one_time_cost_warning(lv)
    rep = BenchReport(url="u", model="m", input_len=1000, output_len=100, num_prompts=16, mode="concurrency",
                      levels=[lv])
    assert rep.to_dict()["levels"][0]["warnings"] == level_warnings(lv) and len(level_warnings(lv)) == 1
    from rich.console import Console

    rep.print_table(Console(width=400, force_terminal=False))
    assert "one-time cost" in capsys.readouterr().out


def test_compare_keeps_that_ttft_out_of_calibration(tmp_path):
    from vllm_ops.launch import calibration
    from vllm_ops.loadtest.predicted import compare
    from vllm_ops.hardware import parse_gpu_spec
    from vllm_ops.models import load_model_spec
    from vllm_ops.planning import plan as make_plan

    run = RUNS / "h200x1" / "perf" / "q30bf"          # its levels; any plan that predicts will do
    plan = make_plan(load_model_spec("Qwen/Qwen3-8B", offline=True), parse_gpu_spec("1xH200"), vllm_version="0.25.0")
    slow = json.loads((run / "bench-1024-128-c8.json").read_text(encoding="utf-8"))
    fine = json.loads((run / "bench-1024-128-c32.json").read_text(encoding="utf-8"))
    rep = BenchReport(url="u", model="m", input_len=1024, output_len=128, num_prompts=32, mode="concurrency",
                      levels=[level_of(slow["levels"][0]), level_of(fine["levels"][0])])
    rows = compare(plan, rep, state_dir=tmp_path)
    assert "one-time cost" in rows[0]["note"] and "note" not in rows[1]
    recs = [r for r in calibration.records(tmp_path) if r.get("kind") == "perf"]
    assert [sorted(r["measured"]) for r in recs] == [
        ["output_tokens_per_s", "requests_per_s", "tpot_ms"],
        ["output_tokens_per_s", "requests_per_s", "tpot_ms", "ttft_ms"]]
