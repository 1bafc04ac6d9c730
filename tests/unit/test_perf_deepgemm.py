"""DeepGEMM's padded MoE grouped GEMM in the performance model (planning/perf_kernels.py).

vLLM 0.12 runs block-FP8 MoE layers on Hopper with DeepGEMM's contiguous grouped GEMM, its rows padded to 128 per
local expert at every batch size. Measured on 1x H200 with vLLM 0.25.0 and ``--moe-backend deep_gemm``
(tests/data/gpu-runs/h200x1/deepgemm/): the step grows with the padding rows. The two constants are fitted on those
runs; NVIDIA's public Qwen3-235B-A22B-FP8 rows (vLLM 0.12), which no fit reads, are the held-out test: before the
term the model put them 45 % low (median), their decode flat from 4 to 48 requests."""
from __future__ import annotations

import dataclasses
import json
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DG = ROOT / "tests" / "data" / "gpu-runs" / "h200x1" / "deepgemm"
sys.path.insert(0, str(ROOT / "benchmarks"))

import perf_model_accuracy as A  # noqa: E402

from vllm_ops.hardware import parse_gpu_spec  # noqa: E402
from vllm_ops.models import load_model_spec  # noqa: E402
from vllm_ops.planning import perf_fit, plan  # noqa: E402
from vllm_ops.planning.perf_kernels import moe_padding, padded_rows  # noqa: E402
from vllm_ops.planning.performance import Workload, predict  # noqa: E402


def test_the_runs_ran_deepgemm_and_kept_their_plans():
    for name in ("t235dg", "q30dg"):
        log = (DG / name / "vllm-trim.log").read_text(encoding="utf-8")
        assert "Using DEEPGEMM Fp8 MoE backend" in log
        p = json.loads((DG / name / "plan.json").read_text(encoding="utf-8"))
        assert p["vllm_version"] == "0.25.0" and "deep_gemm" in p["extra_args"]
        assert len(list((DG / name).glob("bench-*-c*.json"))) == 4


def test_padding_rows_follow_vllm():
    assert padded_rows("", 40, 128) == 40
    assert padded_rows("all", 32, 128) == 16384            # 0.12: 4 tokens x top-8 + 128 x 127, in 128-row blocks
    assert padded_rows("all", 128, 128) == 16384
    assert padded_rows("routed", 8, 128) == 1024           # 0.25: only as many experts as routed rows
    assert padded_rows("routed", 512, 128) == 16768          # 64 tokens: every expert padded


@pytest.mark.parametrize("version,gpu,tp,extra,env,mode", [
    ("0.12.0", "H200", 2, [], {}, "all"),
    ("0.13.0", "H100", 4, [], {}, "all"),
    ("0.12.0", "H200", 8, [], {}, ""),                                      # PR #29346: Triton at TP 8
    ("0.12.0", "H200", 2, [], {"VLLM_MOE_USE_DEEP_GEMM": "0"}, ""),
    ("0.12.0", "A100-80GB", 2, [], {}, ""),                                  # not Hopper
    ("0.11.0", "H200", 2, [], {}, ""),
    ("0.18.0", "H200", 2, [], {}, ""),                                       # not checked: costed as Triton
    ("0.25.0", "H200", 1, [], {}, ""),
    ("0.25.0", "H200", 1, ["--moe-backend", "deep_gemm"], {}, "routed"),
    ("0.25.0", "H200", 1, ["--moe-backend=triton"], {}, ""),
])
def test_which_kernel_runs_block_fp8_moe(version, gpu, tp, extra, env, mode):
    from vllm_ops.hardware import catalog

    spec = load_model_spec("Qwen/Qwen3-235B-A22B-FP8", offline=True)
    g = catalog.find(gpu)
    pad = moe_padding(spec=spec, version=version, compute_capability=g.compute_capability, tp=tp, dp=1, ep=False,
                      extra_args=extra, env=env)
    assert pad.mode == mode
    if version == "0.18.0":
        assert "not checked" in pad.note


@pytest.mark.parametrize("model", ["Qwen/Qwen3-32B", "Qwen/Qwen3-30B-A3B"])
def test_no_padding_without_block_fp8_experts(model):
    spec = load_model_spec(model, offline=True)
    assert moe_padding(spec=spec, version="0.12.0", compute_capability=(9, 0), tp=1, dp=1, ep=False,
                       extra_args=[], env={}).mode == ""


def test_each_run_held_out_from_the_deepgemm_constants():
    pairs = A.deepgemm_pairs()
    assert {c.model.rsplit("/", 1)[-1] for c, _p in pairs} == {"Qwen__Qwen3-235B-A22B-FP8-tp2shard",
                                                               "Qwen__Qwen3-30B-A3B-FP8"}
    errs = sorted(abs(p.tpot_ms / c.tpot_ms - 1) for c, p in pairs)
    assert len(errs) == 8 and errs[-1] < 0.2, errs
    assert A.score(pairs, len(pairs))["tpot_median"] <= 10.0


def test_the_shipped_constants_are_the_fit_on_both_runs():
    assert A.fit_deepgemm(A._kept_cases(A.DEEPGEMM_RUNS)) == (perf_fit.MOE_PAD_FLOPS, perf_fit.MOE_PAD_LAYER_US)
    assert perf_fit.EFFICIENCY.moe_pad_flops == perf_fit.MOE_PAD_FLOPS


def _public_235b():
    return [c for c in A.public_cases() if not c.excluded and c.model == "Qwen/Qwen3-235B-A22B-FP8"]


def _tpot_errors(cases, signed=False):
    out = [(p.tpot_ms / c.tpot_ms - 1) * 100 for c in cases
           for _c, p in A.predict_all([c], A.held_out_efficiency(c.model))]
    return out if signed else [abs(e) for e in out]


def test_the_public_235b_rows_held_out():
    cases = _public_235b()
    assert len(cases) == 51 and all(c.not_fitted for c in cases)      # no fit reads them
    with_term = _tpot_errors(cases)
    off = [dataclasses.replace(c, plan=dataclasses.replace(c.plan, env={"VLLM_MOE_USE_DEEP_GEMM": "0"}))
           for c in cases]
    without = _tpot_errors(off)
    assert statistics.median(with_term) < 16.0 < 40.0 < statistics.median(without)
    signed = _tpot_errors(cases, signed=True)
    dp = [int(c.plan.vllm_args.get("data_parallel_size") or 1) > 1 for c in cases]
    tp_only = [abs(e) for e, d in zip(signed, dp) if not d]
    assert statistics.median(tp_only) < 12.0 and max(tp_only) < 35.0, sorted(tp_only)
    # attention data parallelism: the ranks step together (perf_lockstep, tests/unit/test_perf_lockstep.py); the
    # rows stay the model's worst (the ranks' per-step coordination is not modelled, said in the plan)
    dp_only = [abs(e) for e, d in zip(signed, dp) if d]
    assert len(dp_only) == 19 and statistics.median(dp_only) < 21.0 and max(dp_only) < 35.0, sorted(dp_only)


def test_a_012_plan_decodes_slower_than_with_deepgemm_off_and_says_why():
    spec, gpus = load_model_spec("Qwen/Qwen3-30B-A3B-FP8", offline=True), parse_gpu_spec("1xH100")
    w = Workload(1024, 128, concurrency=4)
    on = predict(plan(spec, gpus, vllm_version="0.12.0"), w)
    off = predict(plan(spec, gpus, vllm_version="0.12.0", env={"VLLM_MOE_USE_DEEP_GEMM": "0"}), w)
    assert on.tpot_ms > 1.5 * off.tpot_ms
    assert any("DeepGEMM's grouped GEMM" in n for n in on.notes)
    assert any("VLLM_MOE_USE_DEEP_GEMM=0" in n for n in off.notes) and off.hint is None
    # the hint beside the padded plan: about the TPOT the same load gets with DeepGEMM's MoE turned off
    assert on.hint and "VLLM_MOE_USE_DEEP_GEMM=0" in on.hint
    about = float(on.hint.rsplit("TPOT about ", 1)[1].split(" ms")[0])
    assert abs(about / off.tpot_ms - 1) < 0.15
    # vLLM 0.25 runs Triton: no padding, nothing said
    now = predict(plan(spec, gpus, vllm_version="0.25.0"), w)
    assert not any("DeepGEMM" in n for n in now.notes)


def test_the_upgrade_check_names_the_kernel_change_for_block_fp8_moe_only():
    from vllm_ops.planning.upgrade import _applies

    moe = load_model_spec("Qwen/Qwen3-30B-A3B-FP8", offline=True)
    dense = load_model_spec("Qwen/Qwen3-32B", offline=True)
    assert _applies("fp8_block_moe_hopper", moe, False, {})
    assert not _applies("fp8_block_moe_hopper", dense, False, {})


def test_no_moe_activation_warning_on_deepgemm_where_the_peak_was_under_plan():
    # Triton's fused MoE peaked 1.4 GiB above the plan's activation estimate for this architecture (eager/t235e: KV
    # 10 % below plan, the warning); DeepGEMM's grouped GEMM peaked under it: KV within 2 % of plan
    for name in ("t235dg", "q30dg"):
        launch = json.loads((DG / name / "launch.json").read_text(encoding="utf-8"))
        pred, act = launch["predicted"]["kv_cache_tokens"], launch["actual"]["kv_cache_tokens"]
        assert 0 <= pred / act - 1 < 0.02, name
    spec, gpus = load_model_spec(str(DG / "t235dg" / "model"), offline=True), parse_gpu_spec("1xH200")
    codes = lambda p: {w.code for w in p.warnings}  # noqa: E731
    assert "moe-activation-under" in codes(plan(spec, gpus, vllm_version="0.25.0", pins={"max_num_seqs": 64}))
    dg = plan(spec, gpus, vllm_version="0.25.0", pins={"max_num_seqs": 64},
              extra_args=("--moe-backend", "deep_gemm"))
    assert "moe-activation-under" not in codes(dg)


def _slo_search(version: str, model: str = "Qwen/Qwen3-30B-A3B-FP8", **kw):
    from vllm_ops.planning.slo import parse_slo, search

    spec = load_model_spec(model, offline=True)
    return search(spec, parse_gpu_spec("2xH100"), parse_slo("tpot_ms=12"), Workload(1024, 128, concurrency=16),
                  vllm_version=version, **kw)


def test_slo_search_tries_deepgemm_off_where_vllm_pads_by_default():
    from vllm_ops.planning.slo import chosen_plan

    res = _slo_search("0.12.0")
    envs = {tuple(sorted(c.env.items())) for c in res.candidates}
    assert envs == {(), (("VLLM_MOE_USE_DEEP_GEMM", "0"),)}
    assert any("MoE kernel tried both ways" in n for n in res.notes)
    # at 16 requests Triton's fused MoE decodes faster than DeepGEMM's padded GEMM: the search keeps it, says why,
    # and the plan carries the variable (rendered and launched with it)
    assert res.chosen.env == {"VLLM_MOE_USE_DEEP_GEMM": "0"} and "VLLM_MOE_USE_DEEP_GEMM=0" in res.chosen.changed
    p = chosen_plan(res)
    assert p.env.get("VLLM_MOE_USE_DEEP_GEMM") == "0" and "VLLM_MOE_USE_DEEP_GEMM" in p.reasons
    same = [c for c in res.candidates if c.layout_key == res.chosen.layout_key and c.fits
            and c.max_num_seqs == res.chosen.max_num_seqs and c.kv_cache_dtype == res.chosen.kv_cache_dtype
            and c.max_num_batched_tokens == res.chosen.max_num_batched_tokens and not c.env]
    assert same and same[0].performance["tpot_ms"] > res.chosen.performance["tpot_ms"]


@pytest.mark.parametrize("version,model,kw", [
    ("0.25.0", "Qwen/Qwen3-30B-A3B-FP8", {}),                                   # Triton by default: nothing to try
    ("0.12.0", "Qwen/Qwen3-30B-A3B", {}),                                       # bf16 experts: not DeepGEMM's
    ("0.12.0", "Qwen/Qwen3-30B-A3B-FP8", {"plan_kwargs": {"env": {"VLLM_MOE_USE_DEEP_GEMM": "1"}}}),  # the caller's
])
def test_slo_search_leaves_the_kernel_alone_elsewhere(version, model, kw):
    res = _slo_search(version, model, **kw)
    assert all(not c.env for c in res.candidates)
