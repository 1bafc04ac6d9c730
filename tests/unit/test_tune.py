"""`vllm-ops tune`'s pure parts: which candidates it starts, how a measurement is judged, the
profile and calibration records it writes. The real launches are in tests/real/test_tune.py."""
from __future__ import annotations

import pytest

from tests.unit.test_slo import _search, stand_in  # noqa: F401  (the stand-in performance model)


def test_pick_trials_takes_the_best_of_each_layout_first():
    from vllm_ops.launch.tune import pick_trials

    r = _search(slo="tpot_ms=30", concurrency=16)
    picked = pick_trials(r, 3)
    assert len(picked) == 3 and len({c.layout_key for c in picked}) == 3
    assert all(c.fits for c in picked)
    assert picked[0] is r.candidates[0]
    assert pick_trials(r, 1) == [r.candidates[0]]


def _trial(r, measured):
    from vllm_ops.launch.tune import Trial, _judge

    t = Trial(candidate=r.candidates[0], started=True, measured=measured)
    _judge(t, r)
    return t


def test_judge_scales_one_replica_to_the_box_and_checks_the_slo():
    r = _search(slo="tpot_ms=30,ttft_ms=500", concurrency=16, pins={"tensor_parallel_size": 1})
    c = r.candidates[0]
    assert c.replicas == 4 and c.load == {"concurrency": 4}
    t = _trial(r, {"ttft_ms": 100.0, "tpot_ms": 20.0, "output_tokens_per_s": 150.0, "failed": 0})
    assert t.meets and t.box_output_tokens_per_s == 600.0 and t.goodput_per_gpu == 150.0
    t = _trial(r, {"ttft_ms": 900.0, "tpot_ms": 40.0, "output_tokens_per_s": 150.0, "failed": 1})
    assert not t.meets and len(t.misses) == 3


def test_best_trial_prefers_meeting_then_goodput():
    from vllm_ops.launch.tune import Trial, best_trial

    r = _search(slo="tpot_ms=30", concurrency=16)
    a, b, c = (Trial(candidate=x) for x in r.candidates[:3])
    a.measured, a.meets, a.goodput_per_gpu = {"tpot_ms": 25}, True, 100.0
    b.measured, b.meets, b.goodput_per_gpu = {"tpot_ms": 29}, True, 120.0
    c.measured, c.meets, c.goodput_per_gpu = {"tpot_ms": 40}, False, 500.0
    assert best_trial([a, b, c], r.slo) is b
    assert best_trial([c], r.slo) is c
    assert best_trial([Trial(candidate=r.candidates[0], error="x")], r.slo) is None


def test_profile_written_reads_back_and_pins_the_layout(tmp_path):
    from vllm_ops.launch.tune import TuneResult, Trial, write_profile
    from vllm_ops.models import load_model_spec
    from vllm_ops.planning import plan
    from vllm_ops.profiles import load_profile

    base = load_profile("l4x4")
    r = _search(slo="tpot_ms=30", concurrency=16, profile=base, pins={"tensor_parallel_size": 2})
    t = Trial(candidate=r.candidates[0], started=True, measured={"ttft_ms": 50.0, "tpot_ms": 20.0},
              meets=True, goodput_per_gpu=300.0)
    path = write_profile(TuneResult(trials=[t], best=t), r, tmp_path, base=base)
    assert path.name == "l4x4-qwen2.5-coder-7b-instruct.yaml"
    prof = load_profile(path.stem, tmp_path)
    assert prof.gpu == "L4" and prof.count == 4 and prof.vllm_defaults["tensor_parallel_size"] == 2
    assert "vllm-ops tune" in prof.notes[-1]
    # the planner takes the profile's layout (as the profile's default, overridable by a pin)
    spec = load_model_spec("Qwen/Qwen2.5-Coder-7B-Instruct", offline=True)
    p = plan(spec, prof.inventory(), profile=prof)
    assert p.vllm_args["tensor_parallel_size"] == 2 and len(p.replicas) == 2
    assert "default" in p.reasons["tensor_parallel_size"]
    assert plan(spec, prof.inventory(), profile=prof, pins={"tensor_parallel_size": 4}).vllm_args[
        "tensor_parallel_size"] == 4


def test_perf_record_is_skipped_by_the_memory_lookup(tmp_path):
    from vllm_ops.launch import calibration
    from vllm_ops.launch.tune import Trial, perf_record

    r = _search(slo="tpot_ms=30", concurrency=16)
    t = Trial(candidate=r.candidates[0], measured={"ttft_ms": 50.0, "tpot_ms": 20.0, "output_tokens_per_s": 400.0,
                                                   "requests_per_s": 1.5, "load": {"concurrency": 16}})
    rec = perf_record(t, r)
    assert rec["kind"] == "perf" and rec["measured"]["tpot_ms"] == 20.0
    assert rec["predicted"]["tpot_ms"] == pytest.approx(r.candidates[0].performance["tpot_ms"])
    assert rec["workload"] == {"input_len": 512, "output_len": 256, "concurrency": 16}
    calibration.append(rec, tmp_path)
    assert calibration.lookup(rec["model_id"], rec["gpu_key"], rec["vllm_version"], rec["flags"],
                              state_dir=tmp_path) is None
    from vllm_ops.planning.performance import Workload

    found = calibration.lookup_perf(r.candidates[0].plan, Workload(512, 256, concurrency=16), state_dir=tmp_path)
    assert found == rec


def test_tune_refuses_bad_input_before_starting(capsys):
    from vllm_ops.cli import main

    rc = main(["tune", "--profile", "cpu", "--model", "Qwen/Qwen2.5-0.5B", "--input-len", "8", "--output-len", "8",
               "--concurrency", "2"])
    assert rc == 2 and "--slo" in capsys.readouterr().err
    rc = main(["tune", "--profile", "cpu", "--model", "Qwen/Qwen2.5-0.5B", "--slo", "tpot_ms=9", "--input-len",
               "8", "--output-len", "8", "--concurrency", "2", "--max-starts", "0"])
    assert rc == 2 and "--max-starts" in capsys.readouterr().err
    rc = main(["tune", "--profile", "cpu", "--model", "Qwen/Qwen2.5-0.5B", "--slo", "tpot_ms=9", "--input-len",
               "8", "--output-len", "8", "--concurrency", "2", "--prefix-cache-hit", "0.5"])
    assert rc == 2 and "--prefix-cache-hit" in capsys.readouterr().err


def test_profile_from_probed_like_hardware(tmp_path):
    """No base profile (probed or --gpus hardware): the box is described from the plan."""
    from vllm_ops.launch.tune import TuneResult, Trial, write_profile
    from vllm_ops.profiles import load_profile

    r = _search(gpus="2xH100", slo="tpot_ms=30", concurrency=8)
    t = Trial(candidate=r.candidates[0], started=True, measured={"ttft_ms": 50.0, "tpot_ms": 10.0},
              meets=True, goodput_per_gpu=900.0)
    path = write_profile(TuneResult(trials=[t], best=t), r, tmp_path)
    prof = load_profile(path.stem, tmp_path)
    assert prof.kind == "gpu" and prof.count == 2 and prof.gpu.startswith("H100")
    assert path.stem.startswith("tuned-")


def test_keep_writes_the_trial_plan_and_bench_report_for_regression_data(tmp_path):
    import json

    from vllm_ops.launch.tune import Trial, TuneOptions, _keep
    from vllm_ops.loadtest.report import BenchReport
    from vllm_ops.planning.plan import Plan

    r = _search(slo="tpot_ms=30", concurrency=16)
    t = Trial(candidate=r.candidates[0])
    rep = BenchReport(url="http://x", model="m", input_len=1024, output_len=256, num_prompts=8, mode="concurrency")
    _keep(t, rep, TuneOptions(vllm=None, store=None, name="tn", keep_dir=str(tmp_path)))
    d = tmp_path / f"tn-{t.candidate.rank}"
    assert Plan.from_dict(json.loads((d / "plan.json").read_text())).vllm_args == t.candidate.plan.vllm_args
    assert json.loads((d / "bench-1024-256-cNone.json").read_text())["input_len"] == 1024
    _keep(t, rep, TuneOptions(vllm=None, store=None, name="other"))        # no keep_dir: nothing written
    assert not (tmp_path / f"other-{t.candidate.rank}").exists()


def test_tune_predicts_the_protocol_it_benches():
    """tune benches each candidate with --num-prompts requests (first wave included): its candidates are
    predicted for that many requests, `plan --slo` for the steady state."""
    import argparse

    from vllm_ops.commands import tune as tune_cmd
    from vllm_ops.commands._slo import search_from_args

    ap = argparse.ArgumentParser()
    tune_cmd.configure(ap)
    args = ap.parse_args(["--gpus", "1xH200", "--model", "Qwen/Qwen2.5-7B-Instruct", "--slo", "tpot_ms=15",
                          "--input-len", "1024", "--output-len", "256", "--concurrency", "64", "--num-prompts", "128",
                          "--vllm-version", "0.25.0"])
    assert search_from_args(args, cmd="tune", vllm_version="0.25.0",
                            num_requests=args.num_prompts).workload.num_requests == 128
    assert search_from_args(args, cmd="plan", vllm_version="0.25.0").workload.num_requests is None
    import inspect

    assert "num_requests=args.num_prompts" in inspect.getsource(tune_cmd.run)


def test_tune_judges_the_ttft_slo_on_the_median_when_the_level_paid_a_compile():
    r = _search(slo="tpot_ms=30,ttft_ms=500", concurrency=16, pins={"tensor_parallel_size": 1})
    base = {"ttft_ms": 900.0, "tpot_ms": 20.0, "output_tokens_per_s": 150.0, "failed": 0}
    assert not _trial(r, base).meets
    t = _trial(r, {**base, "ttft_ms_median": 120.0, "ttft_note": "a one-time cost"})
    assert t.meets
    t = _trial(r, {**base, "ttft_ms_median": 600.0, "ttft_note": "a one-time cost"})
    assert t.misses == ["median TTFT 600.0 ms > 500 ms"]
    from vllm_ops.launch.tune import perf_record

    t.measured["load"] = {"concurrency": 16}
    assert "ttft_ms" not in perf_record(t, r)["measured"]
