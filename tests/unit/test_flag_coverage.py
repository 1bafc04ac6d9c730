"""The planner is never silently wrong about vLLM's own flags either (planning/coverage.py FLAG_GAPS): a flag after
``--`` that changes what vLLM allocates or how fast it serves is modelled (``--kv-cache-memory-bytes``,
``--num-gpu-blocks-override``, ``--no-enable-chunked-prefill``'s batch) or named: a coded plan warning, a performance
caveat, or a refused prediction where the figures would be far off. The CPU server checks the modelled three for real
(tests/real/test_launch.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vllm_ops.errors import BadInput, ImpossiblePin
from vllm_ops.hardware import parse_gpu_spec
from vllm_ops.models import load_model_spec
from vllm_ops.planning import plan
from vllm_ops.planning.argv import chunked_prefill_off, human_int, kv_cache_bytes_from_args
from vllm_ops.planning.coverage import FLAG_GAPS, flag_gaps, performance_gaps
from vllm_ops.planning.memory import GiB
from vllm_ops.planning.perf_sim import reserved_tokens
from vllm_ops.planning.performance import Workload, kv_reserve, predict

REPO = Path(__file__).resolve().parents[2]
W = Workload(1000, 200, concurrency=8)


def _plan(extra=(), pins=None, gpus="1xH100-SXM", model="Qwen/Qwen3-8B", **kw):
    return plan(load_model_spec(model, offline=True), parse_gpu_spec(gpus), pins=pins or {}, vllm_version="0.25.0",
                extra_args=list(extra), **kw)


def _codes(p) -> set[str]:
    return {w.code for w in p.warnings}


# -- vLLM's human-readable integers -----------------------------------------------------------------
@pytest.mark.parametrize("text,value", [("8G", 8 * 2**30), ("8g", 8 * 10**9), ("25.6k", 25_600), ("1536M", 1536 * 2**20),
                                        ("1610612736", 1_610_612_736), (" 2T ", 2 * 2**40)])
def test_human_int_reads_as_vllm(text, value):
    assert human_int(text, "--x") == value


@pytest.mark.parametrize("text", ["1.5G", "lots", "8GiB", ""])
def test_human_int_refuses_what_vllm_refuses(text):
    with pytest.raises(BadInput):
        human_int(text, "--kv-cache-memory-bytes")


def test_flag_readers():
    assert kv_cache_bytes_from_args(["--kv-cache-memory-bytes=2G"]) == 2 * GiB
    assert kv_cache_bytes_from_args(["--kv-cache-memory-bytes", "3g"]) == 3 * 10**9
    assert kv_cache_bytes_from_args(["--max-model-len", "8"]) is None
    with pytest.raises(BadInput):
        kv_cache_bytes_from_args(["--kv-cache-memory-bytes", "0"])
    assert chunked_prefill_off(["--no-enable-chunked-prefill"])
    assert chunked_prefill_off(["--enable-chunked-prefill=false"])
    assert not chunked_prefill_off(["--enable-chunked-prefill"])
    assert not chunked_prefill_off(["--no-enable-chunked-prefill", "--enable-chunked-prefill"])   # the last wins
    assert not chunked_prefill_off(["--enable-chunked-prefill", "false"])   # vLLM 0.32: on, "false" a stray word


# -- which flags are gaps ---------------------------------------------------------------------------
@pytest.mark.parametrize("args,code", [
    (["--speculative-config", '{"method": "ngram", "num_speculative_tokens": 4}'], "speculative-decoding-not-modelled"),
    (["-sc", "{}"], "speculative-decoding-not-modelled"),
    (["--cpu-offload-gb=10"], "cpu-offload-not-modelled"),
    (["--kv-transfer-config", '{"kv_connector": "NixlConnector", "kv_role": "kv_both"}'], "kv-connector-not-modelled"),
    (["--kv-offloading-size", "64"], "kv-offload-not-modelled"),
    (["--hf-overrides", '{"num_hidden_layers": 8}'], "hf-overrides-not-modelled"),
    (["-O0"], "compilation-config-not-modelled"),
    (["-O", "3"], "compilation-config-not-modelled"),
    (["--max-cudagraph-capture-size", "64"], "compilation-config-not-modelled"),
    (["--enable-eplb"], "eplb-not-modelled"),
    (["--disable-custom-all-reduce"], "custom-all-reduce-off-not-modelled"),
    (["--no-enable-chunked-prefill"], "chunked-prefill-off-not-modelled"),
    (["--max-num-partial-prefills", "2"], "scheduler-limits-not-modelled"),
    (["--enable-lora", "--max-loras", "2"], "lora-compute-not-modelled"),
    (["-dcp", "2"], "context-parallel-not-modelled"),
    (["--prefill-context-parallel-size=2"], "context-parallel-not-modelled"),
])
def test_each_gap_is_named_in_the_plan(args, code):
    assert [g.code for g, _f in flag_gaps(args)] == [code]
    assert code in _codes(_plan(args))


@pytest.mark.parametrize("args", [[], ["--cpu-offload-gb", "0"], ["--enable-chunked-prefill"], ["--load-format", "dummy"],
                                  ["--enable-prefix-caching"], ["--kv-cache-memory-bytes", "20G"], ["-dcp", "1"],
                                  ["--num-gpu-blocks-override", "1000"]])
def test_no_gap_where_nothing_is_left_out(args):
    assert flag_gaps(args) == []
    p = _plan(args)
    assert not {w.code for w in p.warnings if w.code.endswith("-not-modelled")}
    assert predict(p, W).caveats == []


def test_every_gap_says_what_it_leaves_out():
    codes = [g.code for g in FLAG_GAPS]
    assert len(codes) == len(set(codes))
    for g in FLAG_GAPS:
        assert g.performance and all(f.startswith("-") for f in g.flags)
        assert not (g.refuse and not g.memory)          # a refused prediction is for a flag that moves memory too


def test_far_off_predictions_are_refused_the_rest_carry_a_caveat():
    spec = predict(_plan(["--speculative-config", "{}"]), W)
    assert spec.ttft_ms is None and spec.tpot_ms is None and spec.reason.startswith("--speculative-config:")
    off = predict(_plan(["--cpu-offload-gb", "8"]), W)
    assert off.tpot_ms is None and "PCIe" in off.reason
    lora = predict(_plan(["--enable-lora"]), W)
    plain = predict(_plan(), W)
    assert lora.tpot_ms == plain.tpot_ms and lora.caveats == [performance_gaps(["--enable-lora"])[1][0]]
    both = predict(_plan(["--kv-transfer-config", "{}", "--disable-custom-all-reduce"]), W)
    assert [c.split(":")[0] for c in both.caveats] == ["--kv-transfer-config", "--disable-custom-all-reduce"]


def test_the_text_shows_caveats_and_refusals():
    def run(*extra):
        p = subprocess.run([sys.executable, "-m", "vllm_ops.cli", "plan", "--model", "Qwen/Qwen3-8B", "--gpus",
                            "1xH100-SXM", "--input-len", "1000", "--output-len", "200", "--concurrency", "8", "--",
                            *extra], capture_output=True, text=True, cwd=REPO, timeout=120)
        assert p.returncode == 0, p.stderr
        return p.stdout.replace("\n", " ")
    assert "caveat: --kv-transfer-config:" in run("--kv-transfer-config", "{}")
    out = run("--speculative-config", "{}")
    assert "not predicted: --speculative-config: speculative decoding" in out
    assert "speculative-decoding-not-modelled" in out


# -- --kv-cache-memory-bytes: modelled ---------------------------------------------------------------
def test_kv_cache_memory_bytes_sizes_the_kv_cache():
    base, given = _plan(), _plan(["--kv-cache-memory-bytes", "20G"])
    assert given.memory.kv_cache_gib == 20.0 and base.memory.kv_cache_gib > 50
    per_token = base.memory.kv_bytes_per_token
    assert given.memory.kv_cache_tokens == 20 * GiB // per_token // 16 * 16          # whole blocks of 16
    assert given.fits and "kv_cache_memory_bytes" in given.reasons
    assert given.memory.weights_gib == base.memory.weights_gib                          # only the KV cache moves
    # the performance model sees the smaller cache: queueing at a load the default cache holds
    heavy = Workload(8000, 2000, concurrency=256)
    assert predict(given, heavy).effective_concurrency < predict(base, heavy).effective_concurrency


def test_kv_cache_memory_bytes_beyond_the_gpu_does_not_fit_and_max_len_stays():
    p = _plan(["--kv-cache-memory-bytes", "80G"])
    assert not p.fits and p.failure_stage == "kv_cache_allocation"
    assert p.vllm_args["max_model_len"] == 40960                 # lowering the length would not help: not tried
    assert p.margin_gib < -15


def test_kv_cache_memory_bytes_too_small_for_one_request_lowers_the_length():
    p = _plan(["--kv-cache-memory-bytes", "1G"])                  # 1 GiB holds ~7,000 tokens of Qwen3-8B
    assert p.fits and p.vllm_args["max_model_len"] < 8192 and "max-model-len-lowered" in _codes(p)


# -- --num-gpu-blocks-override: modelled -------------------------------------------------------------
def test_gpu_blocks_override_sets_the_kv_cache():
    base, given = _plan(), _plan(["--num-gpu-blocks-override", "4000"])
    assert given.memory.kv_cache_tokens == 4000 * 16                                    # blocks of 16 tokens
    assert abs(given.memory.kv_cache_gib - 4000 * 16 * base.memory.kv_bytes_per_token / GiB) < 0.01
    assert given.fits and "num_gpu_blocks_override" in given.reasons
    assert given.memory.weights_gib == base.memory.weights_gib
    heavy = Workload(8000, 2000, concurrency=64)
    held = reserved_tokens(8000, 2000, kv_reserve(given))                             # per running request
    assert predict(given, heavy).effective_concurrency == 64000 // held < predict(base, heavy).effective_concurrency
    with pytest.raises(BadInput, match="num-gpu-blocks-override"):
        _plan(["--num-gpu-blocks-override", "many"])


def test_gpu_blocks_override_beyond_the_gpu_does_not_fit():
    p = _plan(["--num-gpu-blocks-override", "600000"])           # ~82 GiB of Qwen3-8B's KV cache
    assert not p.fits and p.failure_stage == "kv_cache_allocation" and p.margin_gib < -15


def _cli_plan(*args):
    p = subprocess.run([sys.executable, "-m", "vllm_ops.cli", "plan", "--json", *args], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_cpu_kv_cache_memory_bytes_beats_the_profile_not_the_users_variable():
    flag = ("--", "--kv-cache-memory-bytes", "1536M")
    given = _cli_plan("--profile", "cpu", "--model", "Qwen/Qwen3-0.6B", *flag)
    assert given["memory"]["kv_cache_gib"] == 1.5 and "VLLM_CPU_KVCACHE_SPACE" not in given["env"]
    default = _cli_plan("--profile", "cpu", "--model", "Qwen/Qwen3-0.6B")
    assert default["memory"]["kv_cache_gib"] == 4.0 and default["env"]["VLLM_CPU_KVCACHE_SPACE"] == "4"
    both = _cli_plan("--profile", "cpu", "--model", "Qwen/Qwen3-0.6B", "--env", "VLLM_CPU_KVCACHE_SPACE=2", *flag)
    assert both["memory"]["kv_cache_gib"] == 2.0 and both["env"]["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert "flag-overridden" in {w["code"] for w in both["warnings"]}


# -- chunked prefill off: vLLM's batch rule -----------------------------------------------------------
def test_chunked_prefill_off_raises_the_batch_to_max_model_len():
    p = _plan(["--no-enable-chunked-prefill"], pins={"max_model_len": 16384})
    assert p.vllm_args["max_num_batched_tokens"] == 16384
    assert "chunked prefill off" in p.reasons["max_num_batched_tokens"]
    on = _plan(pins={"max_model_len": 16384})
    assert on.vllm_args["max_num_batched_tokens"] == 8192
    assert p.memory.activation_peak_gib > on.memory.activation_peak_gib            # the profile's bigger batch
    with pytest.raises(ImpossiblePin, match="below --max-model-len 16384 with chunked prefill off"):
        _plan(["--no-enable-chunked-prefill"], pins={"max_model_len": 16384, "max_num_batched_tokens": 8192})


def test_plan_json_names_them():
    p = subprocess.run([sys.executable, "-m", "vllm_ops.cli", "plan", "--model", "Qwen/Qwen3-8B", "--gpus", "1xH100-SXM",
                        "--json", "--", "--cpu-offload-gb", "4", "--kv-cache-memory-bytes", "30G"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    doc = json.loads(p.stdout)
    assert p.returncode == 0 and doc["memory"]["kv_cache_gib"] == 30.0
    assert [w["code"] for w in doc["warnings"] if w["code"].endswith("-not-modelled")] == ["cpu-offload-not-modelled"]


# -- vLLM's other spellings and human-readable values: planned for, not passed through beside the plan's ----------
@pytest.mark.parametrize("extra,key,value", [
    (["-tp", "2"], "tensor_parallel_size", 2), (["-tp=2"], "tensor_parallel_size", 2),
    (["--device-memory-utilization", "0.5"], "gpu_memory_utilization", 0.5),
    (["--max-model-len", "32k"], "max_model_len", 32_000), (["--max-model-len", "32K"], "max_model_len", 32_768),
    (["--max-num-batched-tokens", "16K"], "max_num_batched_tokens", 16_384),
])
def test_other_spellings_are_planned_for(extra, key, value):
    p = _plan(extra, gpus="2xH100-SXM")
    assert p.vllm_args[key] == value
    flags = p.command.split()
    long = "--" + key.replace("_", "-")
    assert flags.count(long) == 1 and not set(flags) & {"-tp", "--device-memory-utilization", "-tp=2"}


def test_max_model_len_auto_is_the_planners_longest_that_fits():
    auto, plain = _plan(["--max-model-len", "auto"]), _plan()
    assert auto.vllm_args["max_model_len"] == plain.vllm_args["max_model_len"] == 40960
    assert "--max-model-len auto" not in auto.command and auto.command.count("--max-model-len") == 1
    assert _plan(["--max-model-len=-1"]).command.count("--max-model-len") == 1
    with pytest.raises(BadInput, match="32K = 32,768"):
        _plan(["--max-model-len", "1.5K"])


def test_no_prefix_caching_serves_no_prompt_from_the_cache():
    w = Workload(4000, 200, concurrency=16, prefix_cache_hit=0.9)
    on, off = predict(_plan(), w), predict(_plan(["--no-enable-prefix-caching"]), w)
    cold = predict(_plan(), Workload(4000, 200, concurrency=16))
    assert off.ttft_ms == cold.ttft_ms and off.tpot_ms == cold.tpot_ms and on.ttft_ms < 0.5 * off.ttft_ms
    assert any("off (--no-enable-prefix-caching)" in n for n in off.notes)
    assert predict(_plan(["--enable-prefix-caching"]), w).ttft_ms == on.ttft_ms


def test_a_given_block_size_is_planned_with_and_written_once():
    p = _plan(["--block-size", "32"])
    assert p.vllm_args["block_size"] == 32 and p.command.split().count("--block-size") == 1
    assert p.memory.kv_cache_tokens % 32 == 0 and p.reasons["block_size"] == "32 (given)"
    with pytest.raises(BadInput):
        _plan(["--block-size", "big"])


def test_a_port_after_the_separator_is_the_plans_port():
    p = _plan(["--port", "9000"], gpus="2xH100-SXM")
    assert [r.port for r in p.replicas] == [9000, 9001] and p.command.split().count("--port") == 1
    kept = _plan(["--port=9000"], gpus="2xH100-SXM", port=7000)
    assert [r.port for r in kept.replicas] == [7000, 7001] and "flag-overridden" in _codes(kept)
    with pytest.raises(BadInput):
        _plan(["--port", "99999"])


def test_served_names_after_the_separator_are_the_plans():
    p = _plan(["--served-model-name", "coder", "alias"])
    assert p.served_name == "coder" and p.model["served_name"] == "coder"
    assert p.command.split().count("--served-model-name") == 1 and p.command.endswith("--served-model-name coder alias "
                                                                                       "--port 8000")
    kept = _plan(["--served-model-name=other"], served_name="mine")
    assert kept.served_name == "mine" and "flag-overridden" in _codes(kept) and "other" not in kept.command
