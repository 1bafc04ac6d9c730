"""The step model against NVIDIA's B300 per-step table (benchmarks/perf_step_fpm.py): read by no fit, a GPU generation
no fit has seen. Guards, not targets: first measured 2026-12-05 at held-out median 9.7 % (p90 20.4 %), the plain
roofline 55.7 % (76.2 %)."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import perf_step_fpm as F  # noqa: E402


def test_the_table_holds_every_tp_and_shape_with_its_repeats():
    rows = F.load_rows()
    assert sorted({r["tp"] for r in rows}) == [1, 2, 4, 8]
    shapes = {r["shape"] for r in rows}
    assert len(rows) == 4 * len(shapes) == 36
    for r in rows:
        n_pre = sum(t for t, _p in r["chunks"])
        assert r["samples"] and all(x > 0 for x in r["samples"])
        assert n_pre or r["n_dec"], r
        if r["shape"].startswith("ctx"):
            assert n_pre == int(r["shape"][3:]) and r["n_dec"] == 0
        if r["shape"].startswith("mix"):
            assert n_pre == int(r["shape"][3:].split("+")[0]) and r["n_dec"] == int(r["shape"].split("+")[1])


def test_prefill_context_counts_each_token_and_its_prefix():
    assert F.prefill_context([(1, 0)]) == 1
    assert F.prefill_context([(3, 0)]) == 1 + 2 + 3
    assert F.prefill_context([(2, 10)]) == 11 + 12
    assert F.prefill_context([(2, 0), (1, 5)]) == 3 + 6


def test_the_model_predicts_b300_steps_it_never_saw_far_better_than_a_roofline():
    doc = F.run()
    assert doc["fitted_on_these_rows"] is False
    held = doc["held-out"]
    assert len(held["rows"]) == 36 and all(r["predicted_ms"] > 0 for r in held["rows"])
    assert held["model"]["all"]["median"] <= 15.0 and held["model"]["all"]["p90"] <= 30.0
    better = sum(abs(r["error_pct"]) < abs(r["roofline_error_pct"]) for r in held["rows"])
    assert better >= 0.9 * len(held["rows"])


def test_a_plan_outside_the_fitted_gpus_says_it_extrapolates_and_what_was_checked():
    from vllm_ops.planning import perf_fit

    assert perf_fit.gpu_note("H200", [9, 0]) is None and perf_fit.gpu_note("H100-SXM", [9, 0]) is None
    b200 = perf_fit.gpu_note("B200", [10, 0])
    assert "extrapolates" in b200 and "B300" in b200 and "9.7 %" in b200 and "not measured" in b200
    l4 = perf_fit.gpu_note("L4", [8, 9])
    assert "extrapolates" in l4 and "no measurement on this GPU" in l4 and "B300" not in l4


def test_the_note_reaches_the_plans_performance_notes():
    from vllm_ops.hardware import parse_gpu_spec
    from vllm_ops.models import load_model_spec
    from vllm_ops.planning import plan
    from vllm_ops.planning.performance import Workload, predict

    spec = load_model_spec("Qwen/Qwen3-8B", offline=True)
    w = Workload(input_len=512, output_len=64, concurrency=4)
    for gpus, expect in (("1xB200", True), ("1xH200", False)):
        perf = predict(plan(spec, parse_gpu_spec(gpus)), w, spec=spec)
        assert perf.tpot_ms is not None
        assert any("extrapolates" in n for n in perf.notes) is expect, gpus
