"""--enforce-eager in the performance model: measured on 1x H200, vLLM 0.25.0 (tests/data/gpu-runs/h200x1/eager/).

Before the eager floor the model predicted an eager server as fast as one with CUDA graphs: 27-69 % low on every
dense level measured (and 94 % low on the MoE one). The floor's two constants are fitted on the three dense models;
here each model is predicted by the fit on the other two."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EAGER = ROOT / "tests" / "data" / "gpu-runs" / "h200x1" / "eager"
sys.path.insert(0, str(ROOT / "benchmarks"))

import perf_model_accuracy as A  # noqa: E402


def test_the_eager_runs_are_vendored_with_their_plans():
    runs = {d.name for d in EAGER.iterdir() if d.is_dir()}
    assert runs == {"q8e", "mi7e", "q32e", "t235e", "q30e"}
    for name in ("q8e", "mi7e", "q32e", "t235e"):
        plan = json.loads((EAGER / name / "plan.json").read_text(encoding="utf-8"))
        assert plan["vllm_args"]["enforce_eager"] is True and plan["memory"]["cuda_graph_gib"] == 0.0
        launch = json.loads((EAGER / name / "launch.json").read_text(encoding="utf-8"))
        assert launch["actual"]["cuda_graph_gib"] == 0.0
    # q30e (Qwen3-30B-A3B-FP8) did not reach /health within the script's 200 s: its start is kept, no level
    assert not list((EAGER / "q30e").glob("bench-*.json"))


def test_dense_eager_kv_cache_as_planned():
    for name in ("q8e", "mi7e", "q32e"):
        launch = json.loads((EAGER / name / "launch.json").read_text(encoding="utf-8"))
        pred, act = launch["predicted"]["kv_cache_tokens"], launch["actual"]["kv_cache_tokens"]
        assert abs(pred / act - 1) < 0.001, name


def test_each_dense_model_held_out_from_the_eager_floor():
    pairs = A.eager_pairs()
    assert {c.model for c, _p in pairs} == {"Qwen/Qwen3-8B", "Qwen/Qwen3-32B", "mistralai/Mistral-7B-Instruct-v0.3"}
    assert len(pairs) == 10
    errs = sorted(abs(p.tpot_ms / c.tpot_ms - 1) for c, p in pairs)
    assert errs[-1] < 0.25, errs
    assert errs[len(errs) // 2] < 0.12, errs
    s = A.score(pairs, len(pairs))
    assert s["tpot_median"] <= 10.0 and s["ttft_median"] <= 10.0


def test_the_shipped_floor_is_the_fit_on_all_three():
    from vllm_ops.planning import perf_fit

    dense = [c for c in A._kept_cases(A.EAGER_RUNS) if c.spec is not None and c.spec.moe is None]
    assert A.fit_eager(dense) == (perf_fit.EAGER_LAUNCH_US, perf_fit.EAGER_WEIGHTS_X)
    assert perf_fit.EFFICIENCY.eager_launch_us == perf_fit.EAGER_LAUNCH_US


def test_the_moe_eager_level_is_the_one_point_behind_its_constant():
    (c,) = [c for c in A._kept_cases(A.EAGER_RUNS) if c.name.startswith("t235e/")]
    (_c, p), = A.predict_all([c], A._fold_with(c))
    assert abs(p.tpot_ms / c.tpot_ms - 1) < 0.05        # in-sample by construction: said so in perf_fit


@pytest.mark.parametrize("model", ["Qwen/Qwen3-8B", "Qwen/Qwen3-30B-A3B-FP8"])
def test_a_plan_with_enforce_eager_is_slower_and_says_why(model):
    from vllm_ops.hardware import parse_gpu_spec
    from vllm_ops.models import load_model_spec
    from vllm_ops.planning import plan
    from vllm_ops.planning.performance import Workload, predict

    spec, gpus = load_model_spec(model, offline=True), parse_gpu_spec("1xH200")
    w = Workload(1024, 128, concurrency=1)
    graphs = predict(plan(spec, gpus, vllm_version="0.25.0"), w)
    eager = predict(plan(spec, gpus, vllm_version="0.25.0", pins={"enforce_eager": True}), w)
    assert eager.tpot_ms > 2 * graphs.tpot_ms and eager.bound == "host"
    note = next(n for n in eager.notes if n.startswith("--enforce-eager"))
    assert ("MoE" in note) == ("A3B" in model)
    assert not any(n.startswith("--enforce-eager") for n in graphs.notes)


@pytest.mark.parametrize("run, pins", [("eager/t235e", {"enforce_eager": True}), ("unseen/t235l40", {})])
def test_the_moe_activation_warning_says_the_kv_shortfall_measured(run, pins):
    """vLLM 0.25's profile peak of the Qwen3-MoE layers is above the estimate (3.21 vs 1.81 GiB): the plan names the
    KV tokens it will not get (moe-activation-under) - checked against what vLLM printed."""
    import re

    from vllm_ops.hardware import parse_gpu_spec
    from vllm_ops.models import load_model_spec
    from vllm_ops.planning import plan

    folder = ROOT / "tests" / "data" / "gpu-runs" / "h200x1" / run
    spec = load_model_spec(str(folder / "model"), offline=True)
    p = plan(spec, parse_gpu_spec("1xH200"), vllm_version="0.25.0", pins=pins)
    (w,) = [w for w in p.warnings if w.code == "moe-activation-under"]
    said = int(re.search(r"about (\d+)% fewer KV", w.message).group(1))
    launch = json.loads((folder / "launch.json").read_text(encoding="utf-8"))
    short = 100 * (1 - launch["actual"]["kv_cache_tokens"] / launch["predicted"]["kv_cache_tokens"])
    assert abs(said - short) <= 1.5, (said, short)
