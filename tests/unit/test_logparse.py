"""vLLM startup-log parsing against real logs (tests/data/logs/, sources in sources.md)."""
from __future__ import annotations

from pathlib import Path

import pytest

from vllm_ops.launch.logparse import STAGES, StartupLog, parse_figures, stage_of

LOGS = Path(__file__).resolve().parent.parent / "data" / "logs"


def _read(name: str) -> str:
    return (LOGS / name).read_text(encoding="utf-8")


def _stages(text: str) -> tuple[list[str], StartupLog]:
    log = StartupLog()
    seen = [s for s in (log.feed(line) for line in text.splitlines()) if s]
    return seen, log


def test_cpu_success_stages_in_order_without_cuda_graphs():
    seen, log = _stages(_read("cpu-success.log"))
    assert seen == ["process started", "weights loading", "memory profiling", "KV cache sized",
                    "API server up"]
    assert log.stage == "API server up"
    assert log.server_starting


def test_cpu_success_figures():
    f = parse_figures(_read("cpu-success.log"))
    assert f.vllm_version == "0.32.0"
    assert f.device == "CPU"
    assert f.kv_cache_gib == 1.0
    assert f.total_gib == 9.34
    assert f.kv_cache_tokens == 1_048_576
    assert f.concurrency_tokens == 1024
    assert f.max_concurrency == 1024.0
    assert f.init_engine_s == 3.01
    assert f.weights_gib is None          # the CPU runner does not print it


def test_cpu_debug_log_gives_the_same_figures():
    f = parse_figures(_read("cpu-success-debug.log"))
    assert (f.kv_cache_gib, f.kv_cache_tokens, f.max_concurrency) == (1.0, 1_048_576, 1024.0)


def test_gpu_025_debug_all_memory_figures():
    text = _read("gpu-success-0.25-debug.log")
    f = parse_figures(text)
    assert f.weights_gib == 14.29
    assert f.weights_load_s == pytest.approx(1.415135)
    assert f.activation_peak_gib == 1.13
    assert f.non_torch_gib == 0.22
    assert f.non_kv_gib == 15.64
    assert f.cuda_graph_gib == 0.37
    assert f.kv_cache_gib == 55.62
    assert f.kv_cache_tokens == 1_041_472
    assert (f.concurrency_tokens, f.max_concurrency) == (8192, 127.13)
    assert f.total_gib == 79.18
    assert f.device == "GPU"
    seen, _ = _stages(text)
    assert "CUDA graph capture" in seen and "weights loading" in seen


def test_gpu_065_memory_table():
    f = parse_figures(_read("gpu-success-0.6.5-table.log"))
    assert (f.weights_gib, f.non_torch_gib, f.activation_peak_gib, f.kv_cache_gib, f.total_gib) == \
        (14.96, 1.79, 1.26, 53.29, 79.22)


def test_gpu_06_one_line_profile_and_blocks():
    f = parse_figures(_read("gpu-kv-too-small-0.6.log"))
    assert f.weights_gib == 14.9888          # "GB" label, GiB value
    assert f.kv_cache_gib == 2.89
    assert f.non_torch_gib == 0.35
    assert f.activation_peak_gib is None      # peak_torch_memory includes the weights: not taken
    assert f.gpu_blocks == 1478
    assert (f.concurrency_tokens, f.max_concurrency) == (29000, 0.82)


def test_stage_of_single_lines_and_no_false_stage():
    assert stage_of("(Worker pid=1) INFO [gpu_model_runner.py] Graph capturing finished in 3 secs, "
                    "took 0.37 GiB") == "CUDA graph capture"
    assert stage_of("INFO:     Application startup complete.") == "API server up"
    assert stage_of("WARNING Found ulimit of 20000") is None


def test_stages_never_go_backwards():
    log = StartupLog()
    assert log.feed("Starting vLLM server on http://0.0.0.0:8000") == "API server up"
    assert log.feed("Starting to load model x...") is None
    assert log.stage == STAGES[-1]


def test_tail_is_bounded():
    log = StartupLog(tail_lines=5)
    for i in range(20):
        log.feed(f"line {i}")
    assert log.text().splitlines() == [f"line {i}" for i in range(15, 20)]
