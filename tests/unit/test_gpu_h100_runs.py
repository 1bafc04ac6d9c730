"""Our two `vllm-ops bench` runs on one H100 (session 22, 2026-12-06, vLLM 0.25.0, dummy weights; in no fit), each
predicted before it ran (tests/data/gpu-runs/h100x1/perf/README.md):

* q32h: Qwen3-32B bf16. It asked whether the public TP 2 rows' 4096-token TTFT miss (20-38 % low) is the card's: on
  the same card and model at TP 1 a lone 4096- or 8192-token prompt comes out 11-14 % faster than predicted, so it is
  not. Its decode is 7-17 % slower than predicted, as the same model's on the H200 (named, not modelled).
* q30t: Qwen3-30B-A3B-FP8 with Triton's fused MoE, the control session 21 committed for its DeepGEMM run: TPOT
  within 7 % of the plan and 9 % of the DeepGEMM plan's hint.
* q14h, q15h: Qwen2.5-14B and Qwen2.5-1.5B (in no fit), the H200 unseen grid: the 14B within 5 % on both cards; the
  1.5B at 128 requests 2.3x (2.0x on the H200), which plans now name (perf_fit.HIGH_LOAD_CHECK)."""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from tests.unit.test_gpu_warmup_runs import A, _err, _levels
from vllm_ops.planning import perf_fit

RUNS = Path(__file__).resolve().parents[1] / "data" / "gpu-runs"
Q32H = RUNS / "h100x1" / "perf" / "q32h"
Q30T = RUNS / "h100x1" / "perf" / "q30t"
Q14H, Q15H = RUNS / "h100x1" / "perf" / "q14h", RUNS / "h100x1" / "perf" / "q15h"
H100 = "NVIDIA H100 80GB HBM3, 81559 MiB"
# (requests, prompt, output tokens) -> (TPOT ms, TTFT ms) committed before the run (d72fb6c), shipped constants
COMMITTED_Q32H = {(1, 1024, 4): (22.24, 125), (1, 4096, 4): (22.48, 486), (1, 8192, 4): (22.80, 1017),
                  (8, 1024, 512): (23.15, 845), (8, 4096, 512): (27.65, 2383), (4, 4096, 128): (29.17, 1187),
                  (16, 4096, 512): (31.22, 9884)}
# requests -> (TPOT ms, TTFT ms) of the plan, and the DeepGEMM plan's hint (TPOT), committed in session 21 (406943d)
COMMITTED_Q30T = {1: (4.55, 30), 4: (6.17, 80), 16: (10.70, 229), 64: (19.29, 573), 8: (7.84, 153)}
HINT_Q30T = {1: 4.5, 4: 6.2, 16: 10.5, 64: 18.2, 8: 7.8}
# committed before those runs (ddebac7): (requests, prompt, output tokens) -> (TPOT ms, TTFT ms)
COMMITTED_Q14H = {(1, 1024, 128): (10.86, 63), (16, 1024, 128): (13.69, 610), (64, 1024, 128): (28.82, 1542),
                  (16, 4096, 512): (18.30, 1711)}
COMMITTED_Q15H = {(1, 1024, 128): (2.60, 19), (8, 1024, 128): (2.72, 76), (32, 1024, 128): (3.77, 180),
                  (128, 1024, 128): (15.45, 425), (16, 4096, 512): (3.76, 300)}


def _by_shape(run: Path) -> dict[tuple[int, int, int], tuple[dict, dict]]:
    """(requests, prompt, output tokens) -> (the level, the prediction bench printed beside it)."""
    return {(lv["concurrency"], doc["input_len"], doc["output_len"]): (lv, printed)
            for doc, lv, printed in _levels(run).values()}


def test_the_predictions_bench_printed_are_the_committed_ones():
    for run, committed in ((Q32H, COMMITTED_Q32H), (Q14H, COMMITTED_Q14H), (Q15H, COMMITTED_Q15H)):
        assert H100 in (run / "gpu.txt").read_text(encoding="utf-8")
        got = {k: (round(p["tpot_ms"], 2), round(p["ttft_ms"])) for k, (_lv, p) in _by_shape(run).items()}
        assert got == committed, run.name
    assert H100 in (Q30T / "gpu.txt").read_text(encoding="utf-8")
    got = {c: (round(p["tpot_ms"], 2), round(p["ttft_ms"])) for (c, _i, _o), (_lv, p) in _by_shape(Q30T).items()}
    assert got == COMMITTED_Q30T


def test_the_h100_prefills_long_prompts_as_predicted_unlike_the_public_tp2_rows():
    """Lone 4096/8192-token prompts: predicted 1.10-1.15x what vLLM took (its own prefill time is the TTFT); every
    public TP 2 row of the same model and card at 4096 tokens and 8-32 requests: predicted at most 0.81x measured."""
    levels = _by_shape(Q32H)
    for isl in (4096, 8192):
        lv, printed = levels[(1, isl, 4)]
        assert 1.10 < printed["ttft_ms"] / lv["ttft_ms"]["mean"] < 1.15, isl
        assert lv["server"]["prefill_ms"] / lv["ttft_ms"]["mean"] > 0.97
    rows = [c for c in A.public_cases() if c.model == "Qwen/Qwen3-32B" and not c.excluded and "_tp2_" in c.name
            and c.workload.input_len == 4096 and c.workload.concurrency <= 32]
    ratios = [p.ttft_ms / c.ttft_ms for c, p in A.predict_all(rows, A.held_out_efficiency("Qwen/Qwen3-32B"))]
    assert len(ratios) == 9 and max(ratios) < 0.81, ratios


def test_a_large_dense_models_decode_is_slower_than_predicted_on_both_cards():
    """TPOT 7-17 % above the printed prediction at every level here; the same model on the H200 (h200x1/perf/q32,
    held out) 12-15 % at 1 and 8 requests. Named in the data README, not modelled."""
    errs = [_err(p["tpot_ms"], lv["tpot_ms"]["mean"]) for lv, p in _by_shape(Q32H).values()]
    assert all(-18.0 < e < -6.0 for e in errs), errs
    h200 = [(c, p) for c, p in A.unseen_pairs(A.GPU_RUNS) if c.name.startswith("q32/") and c.workload.concurrency <= 8]
    assert len(h200) == 2 and all(1.10 < c.tpot_ms / p.tpot_ms < 1.2 for c, p in h200)


def test_past_the_kv_cache_the_plan_said_so_and_vllm_preempted():
    lv, printed = _by_shape(Q32H)[(16, 4096, 512)]
    assert printed["bound"] == "kv-capacity"
    assert (lv["server"]["max_running"], lv["server"]["preemptions"]) == (11.0, 3.0)   # the plan: 10 of 16 fit
    assert abs(_err(printed["ttft_ms"], lv["ttft_ms"]["mean"])) < 10.0


def test_the_triton_control_serves_as_planned_and_as_the_deepgemm_hint_said():
    for (c, _i, _o), (lv, printed) in _by_shape(Q30T).items():
        assert abs(_err(printed["tpot_ms"], lv["tpot_ms"]["mean"])) < 7.0, c
        assert abs(_err(HINT_Q30T[c], lv["tpot_ms"]["mean"])) < 9.0, c
    steps = (Q30T / "steps.txt").read_text(encoding="utf-8")
    assert re.search(r"compiled during c\d+ \w+:\n\s+\d+ ", steps) is None      # no level compiled a kernel
    assert "Using TRITON Fp8 MoE backend" in (Q30T / "vllm-trim.log").read_text(encoding="utf-8", errors="replace")


def test_the_memory_plans_against_vllm():
    """Qwen3-32B: KV cache 48,128 tokens planned, 47,360 in vLLM's log (+1.6 %; activation peak 1.39 GiB planned,
    1.61 profiled). Qwen3-30B-A3B-FP8 (Triton): 466,480 planned, 464,416 (+0.4 %). Qwen2.5-14B: +1.4 %, 1.5B: +0.1 %."""
    for run, tokens, act in ((Q32H, (48128, 47360), (1.39, 1.61)), (Q30T, (466480, 464416), (0.66, 0.87)),
                             (Q14H, (240608, 237248), (0.97, 1.61)), (Q15H, (2574688, 2573216), (0.96, 0.93))):
        launch = json.loads((run / "launch.json").read_text(encoding="utf-8"))
        pred, got = launch["predicted"], launch["actual"]
        assert (pred["kv_cache_tokens"], got["kv_cache_tokens"]) == tokens
        assert (pred["activation_peak_gib"], got["activation_peak_gib"]) == act
        assert 0.0 <= (tokens[0] - tokens[1]) / tokens[1] < 0.02


def test_a_small_dense_model_at_high_load_carries_the_tpot_caveat_the_runs_measured(run_cli):
    """perf_fit.HIGH_LOAD_CHECK, recomputed: every level of our runs whose held-out prediction carries the caveat (a
    dense model of at most 20 GiB per GPU, 64+ requests running), predicted over measured TPOT. A plan for such a
    layout says it; a 32B model's or a low load's does not."""
    d = perf_fit.HIGH_LOAD_CHECK
    xs, models = [], set()
    for folder in (A.GPU_RUNS, A.UNSEEN_RUNS, A.SCHED_RUNS, A.H100_RUNS):
        for c, p in A.unseen_pairs(folder):          # each level by the fold that never saw its family
            if any("running requests on a dense model" in x for x in p.caveats):
                xs.append(round(p.tpot_ms / c.tpot_ms, 2))
                models.add(c.model)
    assert (len(xs), len(models), (min(xs), max(xs))) == (d["levels"], d["models"], d["x"])
    assert (round(statistics.median(xs), 2), sum(x >= 1.1 for x in xs)) == (d["median_x"], d["high"])
    for model, c, expect in (("Qwen/Qwen2.5-1.5B-Instruct", "128", True), ("Qwen/Qwen3-32B", "128", False),
                             ("Qwen/Qwen2.5-1.5B-Instruct", "16", False)):
        rc, out, err = run_cli("plan", model, "--gpus", "1xH100", "--input-len", "1024", "--output-len", "128",
                               "--concurrency", c, "--json")
        assert rc == 0, err
        caveats = json.loads(out)["performance"]["caveats"]
        assert any("within that range" in x and "dense model" in x for x in caveats) == expect, (model, c, caveats)


def test_the_14b_serves_on_the_h100_as_on_the_h200():
    """Qwen2.5-14B (in no fit), the same grid on both cards: TPOT within 8 % of the prediction at every level of both."""
    h100 = [_err(p["tpot_ms"], lv["tpot_ms"]["mean"]) for lv, p in _by_shape(Q14H).values()]
    h200 = [_err(p.tpot_ms, c.tpot_ms) for c, p in A.unseen_pairs(A.UNSEEN_RUNS) if c.name.startswith("q14/")]
    assert len(h100) == len(h200) == 4 and max(abs(e) for e in h100 + h200) < 8.0, (h100, h200)
