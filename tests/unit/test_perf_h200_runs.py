"""The performance model answers every level of our real H200 runs (tests/data/gpu-runs/h200x1/perf/).
Accuracy is printed by benchmarks/perf_h200_runs.py (held-out); this checks behaviour only."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from vllm_ops.planning.performance import BOUNDS

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "perf_h200_runs.py"


def _load():
    spec = importlib.util.spec_from_file_location("perf_h200_runs", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_measured_level_is_predicted():
    rows = _load().rows()
    assert len(rows) >= 14                      # 2+ runs x 7 workloads
    assert all(r["held_out"] for r in rows)     # every run's model has a leave-one-model-out fold
    for r in rows:
        assert r["reason"] is None, r
        assert r["bound"] in BOUNDS
        for key in ("ttft", "tpot", "tok_s"):
            pred, meas = r[key]
            assert pred is not None and pred > 0 and meas > 0, (key, r)
