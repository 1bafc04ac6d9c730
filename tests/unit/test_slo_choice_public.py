"""benchmarks/slo_choice_public.py: the --slo TP choice on the public measured runs, held-out
(each model predicted with the efficiencies fitted without it) and in-sample beside."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# the goal, asserted: held-out (Qwen3-32B predicted with efficiencies fitted on every other model's rows,
# public and our H200 runs, leave-one-family-out, fit.json of 2026-12-04 session 11) the chosen TP is within 10% of
# the best measured in 92% of the 180 cases with plan --slo's default headroom (7 %, session 12; 88% without it),
# in-sample 92%, against 38% / 36% for the fixed rules
HELD_OUT_FLOOR = 0.85


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


def test_held_out_choice_beats_both_fixed_rules():
    b = _bench()
    gs = b.groups(b._csv())
    assert gs and all(len(v) >= 2 for v in gs.values())
    out = b.evaluate(in_sample=True)
    h = out["held_out"]
    assert out["in_sample_only"] is None                     # every model here has its own fold
    assert h["cases"] == len(gs) * len(b.TARGET_FACTORS) and h["unanswered"] == 0
    for model, pm in h["per_model"].items():
        assert pm["fitted_on"] and model not in pm["fitted_on"]      # really held out
    share = h["within_10pct_share"]
    print(f"held-out SLO choice within 10% of the best: {share['search']:.0%} "
          f"(smallest {share['smallest']:.0%}, largest {share['largest']:.0%}); "
          f"in-sample {out['in_sample']['within_10pct_share']['search']:.0%}")
    assert share["search"] > max(share["smallest"], share["largest"])
    assert share["search"] >= HELD_OUT_FLOOR
    assert out["meets_goal"]
    assert out["in_sample"]["cases"] == h["cases"]
    assert "HELD-OUT" in "\n".join(b.report(out))


def test_a_model_without_a_fold_is_in_sample_and_left_out(monkeypatch):
    from vllm_ops.planning import perf_fit

    b = _bench()
    monkeypatch.setattr(perf_fit, "HELD_OUT", {})
    out = b.evaluate()
    assert out["held_out"]["cases"] == 0 and not out["meets_goal"]
    assert out["in_sample_only"]["cases"] > 0 and out["in_sample"] is None
    assert any("IN-SAMPLE ONLY" in line for line in b.report(out))


def test_the_default_headroom_is_the_models_error_on_models_in_no_fit_and_helps_here(monkeypatch):
    """plan --slo's default headroom comes from accuracy.json's unseen set (other models, not these rows); on these
    rows it lifts the held-out choice from 88 % (no headroom) to 92 %."""
    from vllm_ops.planning import perf_fit

    b = _bench()
    assert b.headroom() == perf_fit.expected_error("tpot_ms") == 0.069       # 0.07 until session 23
    with_h = b.evaluate()["held_out"]["within_10pct_share"]["search"]
    monkeypatch.setattr(b, "HEADROOM", 0.0)
    without = b.evaluate()["held_out"]["within_10pct_share"]["search"]
    assert (round(with_h, 3), round(without, 3)) == (0.917, 0.883)
