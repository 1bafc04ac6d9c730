"""`plan --slo`: the layout search (planning/slo.py) and its CLI (commands/_slo.py).

The performance model (planning/performance.py) is replaced here by a small stand-in with the
contract's shape (Performance.to_dict(), predict(plan, workload, spec=)), so these tests
check the search and the ranking, not the model's figures.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from vllm_ops.cli import main


@dataclass
class FakePerformance:
    ttft_ms: float | None
    tpot_ms: float | None
    output_tokens_per_s: float | None
    requests_per_s: float | None
    bound: str | None = None
    tpot_floor_ms: float | None = None
    effective_concurrency: float | None = None
    reason: str | None = None
    notes: list = field(default_factory=list)

    def to_dict(self):
        return dict(self.__dict__)


CALLS: list = []


def fake_predict(plan, workload, *, spec=None):
    """TPOT falls with TP (weights split) and rises with the batch; fp8 KV / weights are faster;
    a CPU plan cannot be predicted."""
    CALLS.append((plan.vllm_args["tensor_parallel_size"], workload))
    if plan.image.startswith("vllm/vllm-openai-cpu"):
        return FakePerformance(None, None, None, None, reason="the CPU backend is not modelled")
    a = plan.vllm_args
    tp = a["tensor_parallel_size"]
    if workload.concurrency is not None:
        c = workload.concurrency
    else:
        c = workload.rate * 2.0          # a crude Little's law
    running = min(c, a["max_num_seqs"])
    w = 0.5 if a.get("quantization") == "fp8" else 1.0
    kv = 0.5 if str(a.get("kv_cache_dtype")).startswith("fp8") else 1.0
    comm = 3.0 if tp > 1 else 0.0
    tpot = 20.0 * w / tp + 0.4 * kv * running / tp + comm
    queue = max(c - running, 0) / max(running, 1) * workload.output_len * tpot
    ttft = 40.0 * workload.input_len / 1024 / tp + queue
    e2e_s = (ttft + tpot * (workload.output_len - 1)) / 1000
    req = running / e2e_s
    if workload.rate is not None:
        req = min(req, workload.rate)
    return FakePerformance(ttft, tpot, req * workload.output_len, req, bound="weights-bandwidth",
                           tpot_floor_ms=20.0 * w / tp, effective_concurrency=running)


@pytest.fixture(autouse=True)
def stand_in(monkeypatch):
    CALLS.clear()
    from vllm_ops.planning import performance as mod

    monkeypatch.setattr(mod, "predict", fake_predict)
    return mod


def _search(gpus="4xL4", model="Qwen/Qwen2.5-Coder-7B-Instruct", slo="tpot_ms=50", isl=512, osl=256,
            concurrency=16, rate=None, pins=None, allow_fp8=False, profile=None):
    from vllm_ops.hardware import parse_gpu_spec
    from vllm_ops.models import load_model_spec
    from vllm_ops.planning.performance import Workload
    from vllm_ops.planning.slo import parse_slo, search

    spec = load_model_spec(model, offline=True)
    inv = profile.inventory() if profile is not None else parse_gpu_spec(gpus)
    w = Workload(input_len=isl, output_len=osl, concurrency=concurrency, rate=rate)
    return search(spec, inv, parse_slo(slo), w, pins=pins, allow_fp8=allow_fp8, profile=profile)


def test_parse_slo():
    from vllm_ops.errors import BadInput
    from vllm_ops.planning.slo import parse_slo

    assert parse_slo("tpot_ms=50").tpot_ms == 50 and parse_slo("tpot_ms=50").ttft_ms is None
    s = parse_slo(" TPOT_MS=40 , ttft_ms=1500")
    assert (s.tpot_ms, s.ttft_ms) == (40, 1500)
    for bad in ("", "ttft_ms=100", "tpot=5", "tpot_ms=abc", "tpot_ms=-1", "tpot_ms=inf", "tpot_ms"):
        with pytest.raises(BadInput):
            parse_slo(bad)


def test_search_covers_every_layout_and_ranks_meeting_first():
    r = _search(slo="tpot_ms=20", concurrency=16)
    layouts = {c.layout for c in r.candidates}
    assert {"TP=1 x 4", "TP=2 x 2", "TP=4 x 1"} <= layouts
    ranks = [c.rank for c in r.candidates]
    assert ranks == list(range(1, len(ranks) + 1))
    meets = [c.meets for c in r.candidates]
    assert meets == sorted(meets, reverse=True)          # every meeting candidate before any miss
    good = [c.goodput for c in r.candidates if c.meets]
    assert good == sorted(good, reverse=True)
    for c in r.candidates:
        if c.meets:
            assert c.performance["tpot_ms"] <= 20
        else:
            assert c.misses


def test_efficiency_reaches_every_prediction_only_when_given(monkeypatch):
    from vllm_ops.hardware import parse_gpu_spec
    from vllm_ops.models import load_model_spec
    from vllm_ops.planning import slo as slo_mod
    from vllm_ops.planning.performance import Workload
    from vllm_ops.planning.slo import parse_slo, search

    seen = []

    def predict(plan, workload, *, spec=None, **kw):
        seen.append(kw)
        return fake_predict(plan, workload, spec=spec)

    monkeypatch.setattr(slo_mod.performance, "predict", predict)   # the module the search calls
    spec = load_model_spec("Qwen/Qwen2.5-Coder-7B-Instruct", offline=True)
    w = Workload(input_len=512, output_len=256, concurrency=16)
    search(spec, parse_gpu_spec("4xL4"), parse_slo("tpot_ms=50"), w)
    assert seen and all(kw == {} for kw in seen)       # the shipped efficiencies: predict's own default
    seen.clear()
    marker = object()
    search(spec, parse_gpu_spec("4xL4"), parse_slo("tpot_ms=50"), w, efficiency=marker)
    assert seen and all(kw == {"efficiency": marker} for kw in seen)


def test_box_concurrency_is_split_over_replicas():
    r = _search(concurrency=10)
    by = {c.layout: c for c in r.best_per_layout()}
    assert by["TP=1 x 4"].load == {"concurrency": 3}     # 10 over 4: two replicas carry 3, two carry 2
    assert by["TP=2 x 2"].load == {"concurrency": 5}
    assert by["TP=4 x 1"].load == {"concurrency": 10}
    # box throughput = 2 x T(3) + 2 x T(2), over the box's 4 GPUs
    c = by["TP=1 x 4"]
    assert c.output_tokens_per_s_per_gpu == pytest.approx(c.output_tokens_per_s / 4, rel=1e-3)


def test_tight_target_moves_to_more_tensor_parallelism():
    loose = _search(slo="tpot_ms=100", concurrency=16).chosen
    tight = _search(slo="tpot_ms=12", concurrency=16).chosen
    assert loose.meets and tight.meets
    assert tight.tensor_parallel_size > loose.tensor_parallel_size or tight.kv_cache_dtype != "auto"


def test_memory_is_a_hard_constraint():
    # 70B in bf16 does not fit one L4: TP=1 gets pipeline stages from the planner (PP only where needed)
    r = _search(gpus="8xL4", model="meta-llama/Llama-3.1-70B-Instruct", slo="tpot_ms=500", concurrency=8)
    tp1 = [c for c in r.candidates if c.tensor_parallel_size == 1]
    assert tp1 and all(c.pipeline_parallel_size > 1 for c in tp1)
    assert any(c.pipeline_parallel_size == 1 for c in r.candidates)
    assert r.chosen.fits and r.chosen.meets
    # nothing fits at all: the closest candidate, marked
    r = _search(gpus="2xL4", model="meta-llama/Llama-3.1-70B-Instruct", slo="tpot_ms=500", concurrency=8)
    assert not r.feasible and not r.chosen.fits and "does not fit memory" in r.chosen.misses[0]


def test_pins_are_not_searched():
    r = _search(pins={"tensor_parallel_size": 2, "kv_cache_dtype": "auto", "max_num_seqs": 64})
    assert {(c.tensor_parallel_size, c.kv_cache_dtype, c.max_num_seqs) for c in r.candidates} == {(2, "auto", 64)}


def test_fp8_weights_only_when_allowed():
    assert {c.quantization for c in _search().candidates} == {None}
    r = _search(allow_fp8=True, slo="tpot_ms=10")
    assert "fp8" in {c.quantization for c in r.candidates}
    assert any("fp8" in n for n in _search().notes)


def test_rate_keeps_the_fewest_replicas_that_serve_it():
    r = _search(rate=1.0, concurrency=None, slo="tpot_ms=60", isl=256, osl=64)
    c = r.chosen
    assert c.meets and c.replicas < 4 // c.tensor_parallel_size or c.replicas == 1
    assert c.requests_per_s == pytest.approx(1.0, rel=0.01)
    assert c.requests_per_s_per_gpu == pytest.approx(1.0 / c.gpus_used, rel=0.01)


def test_unpredictable_candidates_rank_last_with_the_reason():
    from vllm_ops.profiles import load_profile

    r = _search(profile=load_profile("cpu"), model="Qwen/Qwen2.5-0.5B")
    assert not r.feasible
    assert all("no prediction: the CPU backend is not modelled" in c.misses[0] for c in r.candidates)


def test_an_8_gpu_box_covers_tp_kv_and_weights():
    r = _search(gpus="8xH100", model="meta-llama/Llama-3.1-8B-Instruct", isl=2048, osl=256,
                concurrency=64, allow_fp8=True)
    combos = {(c.tensor_parallel_size, c.replicas, c.kv_cache_dtype, c.quantization) for c in r.candidates}
    assert {(tp, 8 // tp) for tp, *_ in combos} == {(1, 8), (2, 4), (4, 2), (8, 1)}
    assert len(combos) == 16           # 4 layouts x KV auto/fp8 x weights bf16/fp8


def test_lower_max_num_seqs_tried_only_when_the_defaults_miss():
    easy = _search(slo="tpot_ms=100", concurrency=64)
    assert not any("max_num_seqs" in c.changed for c in easy.candidates)
    hard = _search(slo="tpot_ms=9", concurrency=64)
    lowered = [c for c in hard.candidates if "max_num_seqs" in c.changed]
    assert lowered and all(c.max_num_seqs < 64 for c in lowered)


# -- CLI -----------------------------------------------------------------------------------------
def _cli(capsys, *argv):
    try:
        rc = main(list(argv))
    except SystemExit as exc:        # argparse usage errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_seed_question_answers_with_the_three_layouts(capsys):
    """The seed's setup: 4x L4, Qwen2.5-Coder-7B: TP=2 x 2, TP=4 or 4 x TP=1, with the numbers."""
    rc, out, err = _cli(capsys, "plan", "--profile", "l4x4", "--model", "Qwen/Qwen2.5-Coder-7B-Instruct",
                        "--slo", "tpot_ms=40", "--input-len", "512", "--output-len", "256",
                        "--concurrency", "16")
    assert rc == 0, err
    table = out.split("top ")[0]
    for layout in ("TP=1 x 4", "TP=2 x 2", "TP=4 x 1"):
        assert layout in table
    assert "out tok/s/GPU" in out and "chosen:" in out


def test_cli_json_has_chosen_plan_and_ranked_candidates(capsys):
    rc, out, err = _cli(capsys, "plan", "--profile", "l4x4", "--slo", "tpot_ms=40,ttft_ms=3000",
                        "--input-len", "512", "--output-len", "256", "--concurrency", "16", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    best = doc["candidates"][0]
    assert best["rank"] == 1 and best["meets"]
    assert doc["vllm_args"]["tensor_parallel_size"] == best["tensor_parallel_size"]
    assert len(doc["replicas"]) == best["replicas"]
    slo = doc["slo"]["slo"]
    assert doc["slo"]["feasible"] is True and (slo["tpot_ms"], slo["ttft_ms"]) == (40.0, 3000.0)
    # by default a prediction must sit under the target less the model's held-out median error (accuracy.json)
    h = slo["headroom"]
    assert 0 < h["tpot_ms"] < h["ttft_ms"] < 0.5
    assert slo["predicted_limits"]["tpot_ms"] == pytest.approx(40.0 / (1 + h["tpot_ms"]), abs=1e-3)
    assert "--slo" in doc["reasons"]["slo"]


def test_cli_no_feasible_layout_exits_3_with_the_closest(capsys):
    rc, out, err = _cli(capsys, "plan", "--profile", "l4x4", "--slo", "tpot_ms=1", "--input-len", "512",
                        "--output-len", "256", "--concurrency", "16", "--json")
    assert rc == 3
    doc = json.loads(out)
    assert doc["slo"]["feasible"] is False and any(w["code"] == "slo-missed" for w in doc["warnings"])
    assert "no layout meets --slo" in err and "TPOT" in err and "closest" in err


@pytest.mark.parametrize("argv, needle", [
    (("--slo", "tpot_ms=40", "--output-len", "10", "--concurrency", "4"), "--input-len"),
    (("--slo", "tpot_ms=40", "--input-len", "10", "--output-len", "10"), "--concurrency C or --rate R"),
    (("--slo", "tpot_ms=40", "--input-len", "10", "--output-len", "10", "--concurrency", "4", "--rate", "2"),
     "not allowed with"),
    (("--slo", "latency=4", "--input-len", "10", "--output-len", "10", "--concurrency", "4"), "tpot_ms"),
    (("--slo", "tpot_ms=40", "--input-len", "0", "--output-len", "10", "--concurrency", "4"), "at least 1"),
    (("--slo", "tpot_ms=40", "--input-len", "8", "--output-len", "8", "--concurrency", "4", "-dp", "2"),
     "--data-parallel-size"),
    (("--slo", "tpot_ms=40", "--input-len", "8", "--output-len", "8", "--concurrency", "4", "--gpus", "2x(8xH100)"),
     "one node"),
])
def test_cli_bad_input_exits_2(capsys, argv, needle):
    rc, out, err = _cli(capsys, "plan", "--profile", "l4x4", *argv)
    assert rc == 2 and needle in err and "Traceback" not in err


def test_workload_flags_have_one_home_for_plan_slo_and_tune():
    """plan's prediction flags, --slo and tune share _perfargs: the same flags and the same checks."""
    import argparse

    from vllm_ops.commands._perfargs import workload_from_args
    from vllm_ops.errors import BadInput

    def ns(**kw):
        return argparse.Namespace(**{"input_len": None, "output_len": None, "concurrency": None, "rate": None,
                                     **kw})

    assert workload_from_args(ns()) is None
    with pytest.raises(BadInput, match="--slo needs --input-len"):
        workload_from_args(ns(), required_by="--slo")
    with pytest.raises(BadInput, match="one of them"):
        workload_from_args(ns(input_len=8, output_len=8), required_by="--slo")
    for req in (None, "--slo"):
        with pytest.raises(BadInput, match="positive number"):
            workload_from_args(ns(input_len=8, output_len=8, rate=float("inf")), required_by=req)
        with pytest.raises(BadInput, match="at least 1"):
            workload_from_args(ns(input_len=8, output_len=8, concurrency=0), required_by=req)
    w = workload_from_args(ns(input_len=8, output_len=4, concurrency=2), required_by="--slo")
    assert (w.input_len, w.output_len, w.concurrency, w.rate) == (8, 4, 2, None)


def test_headroom_a_prediction_just_under_the_target_does_not_count_as_meeting_it():
    from vllm_ops.planning import perf_fit
    from vllm_ops.planning.slo import _misses, parse_headroom, parse_slo
    from vllm_ops.planning.performance import Workload

    w = Workload(512, 128, concurrency=8)
    perf = {"tpot_ms": 19.5, "ttft_ms": 900.0}
    assert _misses(perf, parse_slo("tpot_ms=20,ttft_ms=1000"), w, 1) == []             # no headroom: meets
    h = parse_headroom("auto")
    assert h == {"tpot_ms": perf_fit.expected_error("tpot_ms"), "ttft_ms": perf_fit.expected_error("ttft_ms")}
    slo = parse_slo("tpot_ms=20,ttft_ms=1000", h)
    assert slo.limits()["tpot_ms"] == pytest.approx(20 / (1 + h["tpot_ms"]))
    assert _misses(perf, slo, w, 1) == ["TPOT 19.5 ms > 18.7 ms (20 less 7% headroom)",
                                        "TTFT 900 ms > 857 ms (1000 less 17% headroom)"]
    assert _misses(perf, parse_slo("tpot_ms=20", parse_headroom("0")), w, 1) == []
    assert parse_headroom("10") == {"tpot_ms": 0.1, "ttft_ms": 0.1}


@pytest.mark.parametrize("bad", ["x", "-1", "100", "nan"])
def test_headroom_bad_input(bad):
    from vllm_ops.errors import BadInput
    from vllm_ops.planning.slo import parse_headroom

    with pytest.raises(BadInput):
        parse_headroom(bad)


def test_cli_headroom_zero_and_bad_value(capsys):
    args = ("plan", "--profile", "l4x4", "--slo", "tpot_ms=40", "--input-len", "512", "--output-len", "256",
            "--concurrency", "16", "--json")
    rc, out, err = _cli(capsys, *args, "--slo-headroom", "0")
    assert rc == 0, err
    assert json.loads(out)["slo"]["slo"]["predicted_limits"]["tpot_ms"] == 40.0
    rc, out, err = _cli(capsys, *args, "--slo-headroom", "lots")
    assert rc == 2 and "--slo-headroom" in err
