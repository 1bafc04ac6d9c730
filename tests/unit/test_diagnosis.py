"""Failure diagnosis against real vLLM logs (tests/data/logs/, sources in sources.md)."""
from __future__ import annotations

from pathlib import Path

import pytest

from vllm_ops.launch.diagnosis import RULES, Context, diagnose

LOGS = Path(__file__).resolve().parent.parent / "data" / "logs"


def _diag(name: str, **ctx):
    return diagnose((LOGS / name).read_text(encoding="utf-8"), Context(**ctx))


@pytest.mark.parametrize("name", ["cpu-success.log", "cpu-success-debug.log",
                                  "gpu-success-0.25-debug.log", "gpu-success-0.6.5-table.log"])
def test_successful_starts_are_not_diagnosed(name):
    assert _diag(name) is None


def test_removed_swap_space_flag():
    d = _diag("cpu-unrecognized-swap-space.log")
    assert d.code == "unrecognized-arguments"
    assert "--swap-space was removed in vLLM v0.18.0" in d.fix
    assert d.change.remove_flags == ["--swap-space"]
    assert d.evidence.endswith("error: unrecognized arguments: --swap-space")


@pytest.mark.parametrize("name,flag,removed_in", [
    ("cpu-unrecognized-disable-log-requests.log", "--disable-log-requests", "v0.17.0 (PR #35723)"),
    ("cpu-unrecognized-guided-decoding-backend.log", "--guided-decoding-backend", "v0.12.0"),
])
def test_other_removed_flags(name, flag, removed_in):
    d = _diag(name)
    assert d.code == "unrecognized-arguments"
    assert f"{flag} was removed in vLLM {removed_in}" in d.fix
    assert d.change.remove_flags == [flag]


def test_unknown_flag_is_named():
    d = diagnose("api_server.py: error: unrecognized arguments: --frobnicate 3")
    assert "--frobnicate is not a flag of this vLLM" in d.fix
    assert d.change.remove_flags == ["--frobnicate"]


def test_cpu_kv_cache_too_small_gives_the_length_that_fits():
    d = _diag("cpu-kv-too-small.log", flags={"max_model_len": 2000000})
    assert d.code == "kv-cache-too-small"
    assert "--max-model-len 1048320" in d.fix and "1048448" in d.fix
    assert d.change.set_flags == {"max_model_len": 1048320}


def test_gpu_kv_cache_too_small_v1():
    d = _diag("gpu-kv-too-small.log")
    assert d.code == "kv-cache-too-small"
    assert d.change.set_flags == {"max_model_len": 34560}


def test_gpu_kv_cache_too_small_old_engine():
    d = _diag("gpu-kv-too-small-0.6.log")
    assert d.code == "kv-cache-too-small"
    assert d.change.set_flags == {"max_model_len": 23552}


def test_kv_cache_too_small_without_estimate_scales_the_length():
    d = diagnose("ValueError: To serve at least one request with the model's max seq len (32768), "
                 "(4.0 GiB KV cache is needed, which is larger than the available KV cache memory "
                 "(1.0 GiB). Try increasing `gpu_memory_utilization`")
    assert d.change.set_flags == {"max_model_len": 8192}


def test_sampler_warmup_oom_halves_max_num_seqs():
    d = _diag("gpu-sampler-oom.log")
    assert d.code == "sampler-warmup-oom"
    assert d.change.set_flags == {"max_num_seqs": 512}
    assert "--max-num-seqs 512" in d.fix


def test_weights_oom_doubles_tp_when_gpus_allow():
    d = _diag("gpu-weights-oom.log", flags={"tensor_parallel_size": 1}, gpus_available=2)
    assert d.code == "weights-oom"
    assert d.change.set_flags == {"tensor_parallel_size": 2}
    alone = _diag("gpu-weights-oom.log", flags={"tensor_parallel_size": 1}, gpus_available=1)
    assert alone.change is None and "quantiz" in alone.fix


def test_heads_not_divisible():
    d = _diag("gpu-heads-not-divisible.log")
    assert d.code == "heads-not-divisible"
    assert d.change.set_flags == {"tensor_parallel_size": 4, "pipeline_parallel_size": 2}


def test_free_memory_below_utilization():
    d = _diag("gpu-free-memory-below-utilization.log")
    assert d.code == "free-memory-below-utilization"
    assert d.change.set_flags == {"gpu_memory_utilization": 0.88}


def test_nccl_error():
    d = _diag("gpu-nccl-error.log")
    assert d.code == "nccl-error"
    assert "NCCL_DEBUG=INFO" in d.fix


def test_triton_moe_compile():
    d = _diag("gpu-triton-moe.log")
    assert d.code == "triton-moe-compile"
    assert "TRITON_CACHE_DIR" in d.change.env


@pytest.mark.parametrize("name", ["cpu-port-in-use.log", "gpu-port-in-use.log"])
def test_port_in_use(name):
    d = _diag(name)
    assert d.code == "port-in-use"
    assert d.change.new_port


def test_generic_oom_depends_on_stage():
    text = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.74 GiB."
    early = diagnose(text, Context(flags={"tensor_parallel_size": 1}, stage="weights loading",
                                   gpus_available=4))
    assert early.change.set_flags == {"tensor_parallel_size": 2}
    late = diagnose(text, Context(flags={"gpu_memory_utilization": 0.92, "max_num_seqs": 256},
                                  stage="KV cache sized"))
    assert late.change.set_flags == {"gpu_memory_utilization": 0.87}
    assert "--max-num-seqs 128" in late.fix


def test_every_rule_has_a_code_and_cause():
    for rule in RULES:
        assert rule.code and rule.cause and callable(rule.fix)


def test_an_oom_under_kv_cache_memory_bytes_lowers_that_flag():
    """--kv-cache-memory-bytes sizes the KV cache whatever --gpu-memory-utilization says: the retry lowers it."""
    text = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.74 GiB."
    d = diagnose(text, Context(flags={"gpu_memory_utilization": 0.92, "kv_cache_memory_bytes": "20G"},
                               stage="KV cache sized"))
    assert d.change.set_flags == {"kv_cache_memory_bytes": int(20 * 2**30 * 0.9)}
    assert "--gpu-memory-utilization does not size it" in d.fix
