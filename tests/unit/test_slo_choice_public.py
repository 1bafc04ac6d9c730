"""benchmarks/slo_choice_public.py: the --slo TP choice on the public measured runs (in-sample)."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("slo_choice_public", ROOT / "benchmarks" / "slo_choice_public.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_measured_goodput_is_per_gpu_and_zero_when_the_target_is_missed():
    b = _bench()
    row = {"silicon_ttft_ms": "100", "silicon_tpot_ms": "10"}
    # 8 requests x 101 tokens in 0.1 + 100 x 0.01 = 1.1 s, over 2 GPUs
    assert math.isclose(b.measured_goodput(row, 101, 8, 2, 20.0), 8 * 101 / 1.1 / 2)
    assert b.measured_goodput(row, 101, 8, 2, 9.9) == 0.0


def test_groups_have_several_tp_sizes_and_the_search_beats_fixed_rules():
    b = _bench()
    gs = b.groups(b._csv())
    assert gs and all(len(v) >= 2 for v in gs.values())
    out = b.evaluate()
    assert out["cases"] == len(gs) * len(b.TARGET_FACTORS) and out["unanswered"] == 0
    share = out["within_10pct_share"]
    assert share["search"] > max(share["smallest"], share["largest"])
    assert out["in_sample"].startswith("IN-SAMPLE")
