"""The performance model (vllm_ops/planning/performance.py): behaviour of predict(), the scheduler
simulation, the `plan --input-len/--output-len/--concurrency` CLI and the perf calibration records."""
from __future__ import annotations

import json

import pytest

from vllm_ops.errors import BadInput
from vllm_ops.hardware import parse_gpu_spec
from vllm_ops.models import load_model_spec
from vllm_ops.planning import plan
from vllm_ops.planning.perf_sim import simulate
from vllm_ops.planning.performance import BOUNDS, Performance, Workload, predict


def _plan(model="Qwen/Qwen3-32B", gpus="2xH100", vllm_version="0.25.0", **pins):
    spec = load_model_spec(model, offline=True)
    pins.setdefault("tensor_parallel_size", int(gpus.split("x")[0]))
    return plan(spec, parse_gpu_spec(gpus), pins=pins, vllm_version=vllm_version), spec


def test_prediction_has_every_figure_and_respects_the_roofline():
    p, spec = _plan()
    perf = predict(p, Workload(1024, 128, concurrency=16), spec=spec)
    assert perf.reason is None
    for k in ("ttft_ms", "tpot_ms", "output_tokens_per_s", "requests_per_s", "tpot_floor_ms", "effective_concurrency"):
        assert getattr(perf, k) > 0, k
    assert perf.bound in BOUNDS
    assert perf.tpot_ms >= perf.tpot_floor_ms
    assert perf.output_tokens_per_s == pytest.approx(perf.requests_per_s * 128)
    assert any("fitted" in n for n in perf.notes)
    d = perf.to_dict()
    assert set(d) >= {"ttft_ms", "tpot_ms", "output_tokens_per_s", "requests_per_s", "bound", "tpot_floor_ms",
                      "effective_concurrency", "reason", "notes"}


def test_more_load_costs_latency_and_buys_throughput():
    p, spec = _plan()
    lo = predict(p, Workload(1024, 256, concurrency=4), spec=spec)
    hi = predict(p, Workload(1024, 256, concurrency=64), spec=spec)
    assert hi.tpot_ms > lo.tpot_ms
    assert hi.output_tokens_per_s > 2 * lo.output_tokens_per_s
    longer = predict(p, Workload(8192, 256, concurrency=4), spec=spec)
    assert longer.ttft_ms > lo.ttft_ms


def test_more_tensor_parallelism_is_faster_per_token():
    p2, spec = _plan(gpus="2xH100")
    p4, _ = _plan(gpus="4xH100")
    w = Workload(1024, 256, concurrency=8)
    assert predict(p4, w, spec=spec).tpot_ms < predict(p2, w, spec=spec).tpot_ms


def test_fp8_weights_decode_faster_than_bf16():
    p16, spec = _plan(model="meta-llama/Llama-3.1-8B-Instruct", gpus="1xH100")
    p8, _ = _plan(model="meta-llama/Llama-3.1-8B-Instruct", gpus="1xH100", quantization="fp8")
    w = Workload(512, 256, concurrency=1)
    assert predict(p8, w, spec=spec).tpot_ms < predict(p16, w, spec=spec).tpot_ms


def test_moe_reads_only_the_routed_experts_at_small_batch():
    p, spec = _plan(model="Qwen/Qwen3-235B-A22B-FP8", gpus="4xH200")
    one = predict(p, Workload(1000, 200, concurrency=1), spec=spec)
    many = predict(p, Workload(1000, 200, concurrency=32), spec=spec)
    assert one.tpot_ms < many.tpot_ms
    assert one.bound in ("weights-bandwidth", "communication")   # 94 layers x 2 all-reduces rival 8 experts


def test_narrow_experts_lower_the_fused_moe_flops_only_when_the_fall_is_fitted():
    """moe_f_half: the fused-MoE FLOP/s fraction falls as w / (w + moe_f_half), w an expert's intermediate width on
    one GPU (TP shards it, expert parallelism keeps it whole); 0 leaves every figure as it was."""
    from dataclasses import replace

    from vllm_ops.planning import perf_fit
    from vllm_ops.planning.performance import step_cost

    p, spec = _plan(model="Qwen/Qwen3-30B-A3B", gpus="2xH100")
    base = replace(perf_fit.EFFICIENCY, moe_flops=0.4, moe_f_half=0.0)
    flat, _ = step_cost(p, spec, base)
    fall, _ = step_cost(p, spec, replace(base, moe_f_half=384.0))
    assert flat.expert_width == fall.expert_width == spec.moe.moe_intermediate_size // 2       # 768 over TP=2
    # 384 wide is narrower than any fit saw: the fall is taken at 768 (perf_step.MOE_W_FLOOR), and the plan says so
    assert fall._moe_flops_eff(0.5) == pytest.approx(0.4 * 768 / (768 + 384))
    assert any("narrower than any measured (768)" in n for n in fall.notes)
    assert flat._moe_flops_eff(0.5) == pytest.approx(0.4)
    assert fall.step_ms(0, 0.0, 8192, 8192 * 512.0) > flat.step_ms(0, 0.0, 8192, 8192 * 512.0)
    assert fall.step_ms(1, 1024.0) == pytest.approx(flat.step_ms(1, 1024.0), rel=0.02)   # decode reads weights
    ep = plan(spec, parse_gpu_spec("2xH100"), pins={"tensor_parallel_size": 2}, vllm_version="0.25.0",
              extra_args=["--enable-expert-parallel"])
    assert step_cost(ep, spec, base)[0].expert_width == spec.moe.moe_intermediate_size


def test_concurrency_above_max_num_seqs_queues():
    p, spec = _plan(max_num_seqs=8)
    free = predict(p, Workload(1024, 128, concurrency=8), spec=spec)
    over = predict(p, Workload(1024, 128, concurrency=32), spec=spec)
    assert over.bound == "max-num-seqs"
    assert over.effective_concurrency == 8
    assert over.ttft_ms > 3 * free.ttft_ms          # waiting for a slot shows up in TTFT
    assert any("wait in the queue" in n for n in over.notes)


def test_kv_capacity_caps_running_requests():
    """Each running request is counted at what the release lets it hold (versions.py kv_reserve): its whole length
    on vLLM 0.12, its mean length (prompt + half the output) from 0.25 on."""
    for version, per_req in (("0.12.0", 8192 + 1024), ("0.25.0", 8192 + 512)):
        p, spec = _plan(model="Qwen/Qwen3-32B", gpus="2xH100", vllm_version=version)
        cap = p.memory.kv_cache_tokens // per_req
        perf = predict(p, Workload(8192, 1024, concurrency=cap + 20), spec=spec)
        assert perf.bound == "kv-capacity"
        assert perf.effective_concurrency == cap


def test_open_loop_overload_refuses_ttft_with_reason():
    p, spec = _plan()
    ok = predict(p, Workload(1024, 128, rate=0.5), spec=spec)
    assert ok.ttft_ms is not None and ok.requests_per_s == pytest.approx(0.5)
    over = predict(p, Workload(1024, 128, rate=500.0), spec=spec)
    assert over.ttft_ms is None and over.bound == "queueing"
    assert "grow without bound" in over.reason
    assert over.requests_per_s < 500


@pytest.mark.parametrize("kw, why", [
    ({"pipeline_parallel_size": 2}, "pipeline parallelism"),
])
def test_unmodelled_layouts_say_why(kw, why):
    p, spec = _plan(gpus="4xH100", tensor_parallel_size=2, **kw)
    perf = predict(p, Workload(1024, 128, concurrency=4), spec=spec)
    assert perf.tpot_ms is None and perf.ttft_ms is None and why in perf.reason


def test_unknown_gpu_and_too_long_requests_say_why():
    spec = load_model_spec("Qwen/Qwen2.5-7B-Instruct", offline=True)
    p = plan(spec, parse_gpu_spec("1x79.18GiB"), pins={}, vllm_version="0.25.0")
    perf = predict(p, Workload(100, 100, concurrency=1), spec=spec)
    assert perf.tpot_ms is None and "performance figures" in perf.reason
    p2, spec2 = _plan(gpus="1xH100", max_model_len=4096, model="Qwen/Qwen2.5-7B-Instruct")
    perf = predict(p2, Workload(4000, 200, concurrency=1), spec=spec2)
    assert perf.tpot_ms is None and "max-model-len" in perf.reason


def test_bad_workloads_are_bad_input():
    p, spec = _plan()
    for w in (Workload(100, 100), Workload(100, 100, concurrency=2, rate=1.0), Workload(0, 10, concurrency=1),
              Workload(10, 10, concurrency=0), Workload(10, 10, rate=-1.0)):
        with pytest.raises(BadInput):
            predict(p, w, spec=spec)


def test_simulation_matches_hand_arithmetic_for_one_request():
    # one request alone: prefill in one step, then output_len-1 decode steps of fixed cost
    step = lambda n_dec, ctx, n_pre, pre_ctx: 10.0 if n_pre else 2.0  # noqa: E731
    r = simulate(step, input_len=100, output_len=11, max_num_seqs=8, max_batched_tokens=2048,
                 kv_capacity_tokens=10_000, concurrency=1, num_requests=3)
    assert r.ttft_ms == pytest.approx(10.0)
    assert r.tpot_ms == pytest.approx(2.0)
    assert r.e2e_ms == pytest.approx(10.0 + 10 * 2.0)


def test_simulation_chunks_long_prompts_over_the_token_budget():
    step = lambda n_dec, ctx, n_pre, pre_ctx: 1.0 + n_pre / 1000.0  # noqa: E731
    r = simulate(step, input_len=5000, output_len=2, max_num_seqs=8, max_batched_tokens=2000,
                 kv_capacity_tokens=100_000, concurrency=1, num_requests=1)
    assert r.ttft_ms == pytest.approx(3 * 1.0 + 5.0)     # three chunks: 2000 + 2000 + 1000


def test_simulation_prefills_only_what_the_prefix_cache_lacks():
    # 5000-token prompt, 4992 of them cached: one 8-token prefill that attends to the cached 4992
    seen = []

    def step(n_dec, ctx, n_pre, pre_ctx):
        if n_pre:
            seen.append((n_pre, pre_ctx))
        return 1.0 + n_pre / 1000.0

    r = simulate(step, input_len=5000, output_len=2, max_num_seqs=8, max_batched_tokens=2000,
                 kv_capacity_tokens=100_000, concurrency=1, num_requests=1, prompt_cached=4992)
    assert r.ttft_ms == pytest.approx(1.0 + 8 / 1000.0)
    assert seen == [(8, pytest.approx(8 * (4992 + 4)))]
    with pytest.raises(ValueError):       # the last prompt token is always computed: the caller rounds
        simulate(step, input_len=5000, output_len=2, max_num_seqs=8, max_batched_tokens=2000,
                 kv_capacity_tokens=100_000, concurrency=1, num_requests=1, prompt_cached=5000)


def test_prefix_cache_hit_whole_blocks_and_never_the_last_token():
    from vllm_ops.planning.performance import cached_prompt_tokens

    assert cached_prompt_tokens(1000, 0.0, 16) == 0
    assert cached_prompt_tokens(1000, 0.5, 16) == 496        # 500 -> whole 16-token blocks
    assert cached_prompt_tokens(1024, 1.0, 16) == 1008       # the last block holds the last token: computed
    assert cached_prompt_tokens(1, 1.0, 16) == 0


def test_prefix_cache_hits_cut_prefill_work_in_the_prediction(run_cli):
    p, spec = _plan("meta-llama/Llama-3.1-8B-Instruct", "1xH200")
    cold = predict(p, Workload(4000, 100, concurrency=32), spec=spec)
    warm = predict(p, Workload(4000, 100, concurrency=32, prefix_cache_hit=0.9), spec=spec)
    assert warm.ttft_ms < cold.ttft_ms and warm.tpot_ms < cold.tpot_ms
    assert any("prefix cache: 90%" in n for n in warm.notes)
    rc, out, err = run_cli("plan", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpus", "1xH200",
                           "--input-len", "4000", "--output-len", "100", "--concurrency", "32",
                           "--prefix-cache-hit", "0.9", "--json")
    assert rc == 0, err
    assert json.loads(out)["performance"]["workload"]["prefix_cache_hit"] == 0.9
    rc, _out, err = run_cli("plan", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpus", "1xH200",
                            "--input-len", "4000", "--output-len", "100", "--concurrency", "32",
                            "--prefix-cache-hit", "1.5")
    assert rc == 2 and "prefix-cache-hit" in err


def test_plan_cli_adds_performance(run_cli):
    rc, out, err = run_cli("plan", "--model", "Qwen/Qwen3-32B", "--gpus", "2xH100", "--tensor-parallel-size", "2",
                           "--input-len", "1024", "--output-len", "128", "--concurrency", "16", "--json")
    assert rc == 0, err
    perf = json.loads(out)["performance"]
    assert perf["ttft_ms"] > 0 and perf["tpot_ms"] > 0 and perf["bound"] in BOUNDS
    assert perf["workload"] == {"input_len": 1024, "output_len": 128, "concurrency": 16, "rate": None,
                                "prefix_cache_hit": 0.0}
    rc, out, err = run_cli("plan", "--model", "Qwen/Qwen3-32B", "--gpus", "2xH100", "--input-len", "1024",
                           "--output-len", "128", "--concurrency", "16")
    assert rc == 0 and "TPOT" in out and "bound:" in out


def test_plan_cli_without_workload_has_no_performance(run_cli):
    rc, out, _ = run_cli("plan", "--model", "Qwen/Qwen3-32B", "--gpus", "2xH100", "--json")
    assert rc == 0 and json.loads(out)["performance"] is None


@pytest.mark.parametrize("argv", [
    ("--input-len", "1024", "--concurrency", "4"),
    ("--input-len", "1024", "--output-len", "10"),
    ("--input-len", "1024", "--output-len", "10", "--concurrency", "0"),
    ("--input-len", "1024", "--output-len", "10", "--concurrency", "2", "--rate", "1"),
])
def test_plan_cli_incomplete_workload_is_exit_2(run_cli, argv):
    rc, out, err = run_cli("plan", "--model", "Qwen/Qwen3-32B", "--gpus", "2xH100", *argv)
    assert rc == 2
    assert "Traceback" not in err


def test_plan_cli_pins_reach_the_prediction(run_cli):
    base = ("plan", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpus", "1xH200", "--input-len", "2000",
            "--output-len", "200", "--concurrency", "8", "--json", "--vllm-version", "0.25.0")
    rc, out, _ = run_cli(*base)
    bf16 = json.loads(out)["performance"]
    rc, out, _ = run_cli(*base, "--quantization", "fp8", "--kv-cache-dtype", "fp8")
    fp8 = json.loads(out)["performance"]
    assert rc == 0 and fp8["tpot_ms"] < bf16["tpot_ms"]
    rc, out, _ = run_cli("plan", "--model", "Qwen/Qwen3-235B-A22B-FP8", "--gpus", "4xH200", "-tp", "4",
                         "--input-len", "1000", "--output-len", "100", "--concurrency", "8", "--json", "--",
                         "--enable-expert-parallel")
    assert rc == 0 and json.loads(out)["performance"]["tpot_ms"] > 0


def test_plan_round_trips_with_performance():
    from vllm_ops.planning.plan import Plan

    p, spec = _plan()
    p.performance = predict(p, Workload(128, 128, concurrency=2), spec=spec).to_dict()
    q = Plan.from_dict(json.loads(json.dumps(p.to_dict())))
    assert q.performance == p.performance


def test_perf_records_are_found_for_the_same_plan_and_load(tmp_path):
    from vllm_ops.launch import calibration

    p, _ = _plan()
    w = Workload(1024, 128, concurrency=16)
    rec = calibration.make_perf_record(p, {"input_len": 1024, "output_len": 128, "concurrency": 16},
                                       {"ttft_ms": 100.0, "tpot_ms": 20.0}, {"ttft_ms": 110.0, "tpot_ms": 21.0})
    calibration.append(rec, tmp_path)
    got = calibration.lookup_perf(p, w, tmp_path)
    assert got["measured"] == {"ttft_ms": 110.0, "tpot_ms": 21.0}
    assert calibration.lookup_perf(p, Workload(1024, 128, concurrency=8), tmp_path) is None
    assert calibration.lookup(rec["model_id"], rec["gpu_key"], p.vllm_version, p.vllm_args, tmp_path) is None
    # a TPOT of 0 measured nothing (a request's tokens handed over in one chunk): not recorded
    zero = calibration.make_perf_record(p, {"input_len": 8, "output_len": 8, "concurrency": 4}, None,
                                        {"ttft_ms": 50.0, "tpot_ms": 0.0, "output_tokens_per_s": 500.0})
    assert zero["measured"] == {"ttft_ms": 50.0, "output_tokens_per_s": 500.0}


def test_performance_refusal_shape():
    r = Performance(None, None, None, None, None, None, None, reason="x")
    assert r.to_dict()["reason"] == "x"


def _report(levels):
    from vllm_ops.loadtest.report import BenchReport
    from vllm_ops.loadtest.stats import Distribution, LevelStats

    lvs = []
    for c, ttft, tpot in levels:
        lvs.append(LevelStats(concurrency=c, request_rate=None, num_requests=40, completed=40, failed=0,
                              duration_s=10.0, request_throughput=4.0, output_throughput=512.0,
                              total_output_tokens=5120, total_prompt_tokens=40960,
                              ttft_ms=Distribution(count=40, mean=ttft), itl_ms=Distribution(),
                              tpot_ms=Distribution(count=40, mean=tpot), e2e_ms=Distribution()))
    return BenchReport(url="http://x", model="m", input_len=1024, output_len=128, num_prompts=40,
                       mode="concurrency", levels=lvs)


def test_bench_plan_comparison_records_pairs_that_plan_shows(tmp_path, monkeypatch, run_cli):
    from vllm_ops.launch import calibration
    from vllm_ops.loadtest.predicted import compare, load_full_plan

    rc, out, _ = run_cli("plan", "--model", "Qwen/Qwen3-32B", "--gpus", "2xH100", "--json")
    pf = tmp_path / "plan.json"
    pf.write_text(out)
    p = load_full_plan(pf)
    rows = compare(p, _report([(1, 90.0, 15.0), (4, 120.0, 17.0)]), state_dir=tmp_path)
    assert [r["level"] for r in rows] == ["c=1", "c=4"]
    assert all(r["predicted"]["tpot_ms"] > 0 and r["measured"]["tpot_ms"] for r in rows)
    recs = [r for r in calibration.records(tmp_path) if r.get("kind") == "perf"]
    assert len(recs) == 2 and recs[0]["measured"]["ttft_ms"] == 90.0
    monkeypatch.setenv("VLLM_OPS_STATE_DIR", str(tmp_path))
    rc, out, _ = run_cli("plan", "--model", "Qwen/Qwen3-32B", "--gpus", "2xH100", "--json", "--input-len", "1024",
                         "--output-len", "128", "--concurrency", "4")
    perf = json.loads(out)["performance"]
    assert perf["measured"]["tpot_ms"] == 17.0
    assert any("calibration record" in n for n in perf["notes"])


def test_bench_plan_comparison_refuses_datasets(tmp_path):
    from vllm_ops.loadtest.predicted import compare

    p, _ = _plan()
    rep = _report([(2, 100.0, 20.0)])
    rep.dataset = "prompts.jsonl"
    rows = compare(p, rep, state_dir=tmp_path)
    assert rows[0]["predicted"] is None and "dataset" in rows[0]["reason"]


def test_a_plan_says_whether_host_work_overlaps_the_gpu():
    from dataclasses import replace

    from vllm_ops.planning import perf_fit

    p, spec = _plan("Qwen/Qwen2.5-7B-Instruct", "1xH100")
    w = Workload(1024, 128, concurrency=16)
    eff = replace(perf_fit.EFFICIENCY, cpu_step_ms=1.5, cpu_seq_us=20.0)
    said = lambda plan: [n for n in predict(plan, w, spec=spec, efficiency=eff).notes if "host work" in n]  # noqa: E731
    assert "overlapped" in said(p)[0]                                  # 0.25.0: async scheduling by default
    assert "added" in said(replace(p, extra_args=["--no-async-scheduling"]))[0]
    assert "added" in said(replace(p, vllm_version="0.12.0"))[0]
    assert "overlapped" in said(replace(p, vllm_version="0.12.0", extra_args=["--async-scheduling"]))[0]


def test_host_work_adds_to_a_synchronous_step_and_overlaps_an_async_one():
    """vLLM's host work per step (cpu_step_ms + cpu_seq_us per request): synchronous scheduling (vLLM's default
    before 0.14, or --no-async-scheduling) waits for it, async scheduling prepares the next step meanwhile."""
    from dataclasses import replace

    from vllm_ops.planning import perf_fit
    from vllm_ops.planning.performance import step_cost

    spec = load_model_spec("meta-llama/Llama-3.1-8B-Instruct", offline=True)
    eff = replace(perf_fit.EFFICIENCY, cpu_step_ms=2.0, cpu_seq_us=20.0, api_token_us=0.0)
    on = plan(spec, parse_gpu_spec("1xH200"), vllm_version="0.25.0")
    off = plan(spec, parse_gpu_spec("1xH200"), vllm_version="0.25.0", extra_args=["--no-async-scheduling"])
    old = plan(spec, parse_gpu_spec("1xH200"), vllm_version="0.12.0")
    a, s, o = (step_cost(x, spec, eff)[0] for x in (on, off, old))
    assert a.async_sched and not s.async_sched and not o.async_sched
    for n in (1, 64, 256):
        pa, ps = a.parts(n, n * 1100.0), s.parts(n, n * 1100.0)
        assert pa.host_ms == pytest.approx(2.0 + 0.02 * n) == ps.host_ms
        assert ps.total_ms == pytest.approx(ps.gpu_ms + ps.host_ms)
        assert pa.total_ms == pytest.approx(max(pa.gpu_ms, pa.host_ms))
        assert a.step_ms(n, n * 1100.0) == pytest.approx(pa.total_ms)      # the fast path agrees with the parts
        assert s.step_ms(n, n * 1100.0, 512, 512 * 256.0) == pytest.approx(s.parts(n, n * 1100.0, 512, 512 * 256.0).total_ms)
    none = step_cost(on, spec, replace(eff, cpu_step_ms=0.0, cpu_seq_us=0.0))[0]
    assert none.step_ms(8, 8000.0) == pytest.approx(none.parts(8, 8000.0).gpu_ms)


def test_host_bound_when_async_host_work_outlasts_the_gpu():
    from dataclasses import replace

    from vllm_ops.planning import perf_fit

    p, spec = _plan(model="meta-llama/Llama-3.2-1B-Instruct", gpus="1xH200")
    slow_host = replace(perf_fit.EFFICIENCY, cpu_step_ms=3.0, cpu_seq_us=60.0, api_token_us=0.0)
    perf = predict(p, Workload(128, 128, concurrency=256), spec=spec, efficiency=slow_host)
    assert perf.bound == "host"
    assert perf.tpot_ms >= 3.0 + 0.06 * 200


def test_the_api_server_caps_the_streamed_tokens_but_not_the_public_harness():
    """api_token_us: vLLM's API server hands out one token per 83 us at most (measured, unseen/l1b), a floor on a
    step of many requests; the public rows stream through their own frontend (through_harness drops it)."""
    from dataclasses import replace

    from vllm_ops.planning import perf_fit
    from vllm_ops.planning.performance import step_cost

    p, spec = _plan(model="meta-llama/Llama-3.2-1B-Instruct", gpus="1xH200")
    eff = replace(perf_fit.EFFICIENCY, cpu_step_ms=0.0, cpu_seq_us=0.0, api_token_us=83.0)
    cost = step_cost(p, spec, eff)[0]
    assert cost.step_ms(256, 256 * 1100.0) == pytest.approx(256 * 0.083)
    assert cost.step_ms(1, 1100.0) == pytest.approx(cost.parts(1, 1100.0).gpu_ms)
    assert perf_fit.DEFAULT.api_token_us == perf_fit.API_TOKEN_US and eff.through_harness().api_token_us == 0.0
    perf = predict(p, Workload(1024, 128, concurrency=256), spec=spec, efficiency=eff)
    assert perf.bound == "api-server"
    assert perf.output_tokens_per_s < 1.1e6 / 83.0          # running requests dip below 256 between waves


def test_the_api_server_takes_a_wave_of_requests_one_at_a_time():
    """admit_ms: vLLM's API server hands requests to the scheduler one at a time; the k-th of a wave waits k x
    admit_ms, which its TTFT (from the client's send) includes; 0 changes nothing."""
    step = lambda n_dec, sum_ctx, n_pre, pre_ctx: 1.0 + 0.001 * n_pre   # noqa: E731
    kw = dict(input_len=1024, output_len=64, max_num_seqs=256, max_batched_tokens=8192, kv_capacity_tokens=10**7,
              num_requests=128)
    base = simulate(step, concurrency=64, **kw)
    assert simulate(step, concurrency=64, admit_ms=0.0, **kw).ttft_ms == base.ttft_ms
    slow = simulate(step, concurrency=64, admit_ms=4.0, **kw)
    assert slow.ttft_ms > base.ttft_ms + 0.25 * 64 * 4.0           # a wave of 64 spread over 256 ms
    one = simulate(step, concurrency=1, admit_ms=4.0, **{**kw, "num_requests": 4})
    lone = simulate(step, concurrency=1, **{**kw, "num_requests": 4})
    assert one.ttft_ms == pytest.approx(lone.ttft_ms + 4.0, abs=1.01)  # alone, a request waits only for itself
    opened = simulate(step, rate=20.0, admit_ms=4.0, **kw)
    assert opened.requests == 128 and opened.ttft_ms > 4.0


def test_async_scheduling_takes_a_request_arriving_mid_step_into_the_step_after_next():
    # two clients started 25 ms apart, 10 ms steps. The first request: prefill 0-10 (TTFT 10) either way. The
    # second arrives inside the step 20-30: synchronous scheduling prefills it in 30-40 (TTFT 15); async
    # (plan_ahead) planned the step 30-40 when 20-30 began, so it is prefilled in 40-50 (TTFT 25).
    step = lambda n_dec, ctx, n_pre, pre_ctx: 10.0  # noqa: E731
    kw = dict(input_len=100, output_len=50, max_num_seqs=8, max_batched_tokens=2048, kv_capacity_tokens=10**6,
              concurrency=2, stagger_ms=25.0, num_requests=2)
    sync, lag = simulate(step, **kw), simulate(step, plan_ahead=True, **kw)
    assert sync.ttft_ms == pytest.approx((10 + 15) / 2)
    assert lag.ttft_ms == pytest.approx((10 + 25) / 2)
    assert lag.tpot_ms == pytest.approx(sync.tpot_ms)
    # an idle engine takes a request at once: one client alone sees no lag
    one = dict(kw, concurrency=1, stagger_ms=0.0)
    assert simulate(step, plan_ahead=True, **one).ttft_ms == simulate(step, **one).ttft_ms == pytest.approx(10.0)


def test_small_dense_gemms_reach_less_of_the_peak():
    # gemm_w_half: x w / (w + half), w = hidden x intermediate size on one GPU in millions; TP shrinks w
    from dataclasses import replace

    from vllm_ops.planning import perf_fit
    from vllm_ops.planning.performance import step_cost

    spec = load_model_spec("Qwen/Qwen3-32B", offline=True)
    eff = replace(perf_fit.EFFICIENCY, flops=0.6, gemm_w_half=14.0)
    costs = {}
    for tp in (1, 8):
        p = plan(spec, parse_gpu_spec(f"{tp}xH100"), pins={"tensor_parallel_size": tp})
        costs[tp], _ = step_cost(p, spec, eff)
    w1 = spec.hidden_size * spec.intermediate_size / 1e6
    assert costs[1].gemm_width == pytest.approx(w1) and costs[8].gemm_width == pytest.approx(w1 / 8)
    assert costs[1]._gemm_eff() == pytest.approx(0.6 * w1 / (w1 + 14.0))
    assert costs[8]._gemm_eff() < costs[1]._gemm_eff() < 0.6
    flat, _ = step_cost(plan(spec, parse_gpu_spec("1xH100"), pins={"tensor_parallel_size": 1}), spec,
                        replace(eff, gemm_w_half=0.0))
    assert flat._gemm_eff() == 0.6
    # a prefill step is compute-bound: the smaller efficiency makes it longer
    assert costs[1].step_ms(0, 0.0, 8192, 8192 * 4096.0) > flat.step_ms(0, 0.0, 8192, 8192 * 4096.0)


def test_the_public_harness_has_no_vllm_api_server_costs():
    from dataclasses import replace

    from vllm_ops.planning import perf_fit

    e = replace(perf_fit.EFFICIENCY, api_request_ms=4.0, api_token_us=83.0)
    h = e.through_harness()
    assert (h.api_request_ms, h.api_token_us) == (0.0, 0.0) and h.request_ms == e.request_ms + e.harness_ms


def test_send_jitter_holds_each_closed_loop_send_back_by_up_to_the_jitter():
    """send_jitter_ms: a client sends its next request up to this long after its last one ended (the public
    harness's clients; plans use 0). TTFT is measured from the send, so a lone client's TTFT does not change; the
    run gets longer by less than one jitter per request sent after the first."""
    step = lambda n_dec, ctx, n_pre, pre_ctx: 10.0  # noqa: E731
    kw = dict(input_len=100, output_len=5, max_num_seqs=8, max_batched_tokens=2048, kv_capacity_tokens=10**6,
              concurrency=1, num_requests=6)
    base, held = simulate(step, **kw), simulate(step, send_jitter_ms=20.0, **kw)
    assert held.requests == base.requests == 6 and held.ttft_ms == base.ttft_ms == pytest.approx(10.0)
    assert base.duration_ms < held.duration_ms < base.duration_ms + 5 * 20.0
    # a wave in lockstep spreads out: 8 clients, fixed lengths, prompts one per step (budget 100 tokens)
    wave = dict(kw, concurrency=8, num_requests=64, max_batched_tokens=108)
    assert simulate(step, send_jitter_ms=200.0, **wave).ttft_ms < simulate(step, **wave).ttft_ms


def test_only_the_public_harness_sends_with_jitter():
    from dataclasses import replace

    from vllm_ops.planning import perf_fit

    eff = replace(perf_fit.EFFICIENCY, harness_jitter_ms=50.0)
    assert eff.send_jitter_ms == 0.0 and eff.through_harness().send_jitter_ms == 50.0
