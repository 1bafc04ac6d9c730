"""Issue #20's real GPU runs replayed: one model per class (float32 override, quantized checkpoint,
vision-language + sliding-window hybrid, MXFP4 + sliding-window MoE) launched through
`vllm-ops launch` with vLLM 0.25.0 on one H200 (dummy weights). The files are under
tests/data/gpu-runs/h200x1/ (see its README.md); ``runs.json`` there lists each run: the model,
its class, the vLLM log, the flags and extra arguments it ran with, and whether vLLM started.

Every "actual" figure is parsed from the committed vLLM log at test time; every "plan" figure is a
fresh plan of the catalog model on 1x <the H200's torch total> for vLLM 0.25.0 with those flags.
``pytest -s`` prints the table.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest

from tests.unit.test_gpu_runs import err, raw_size, torch_total
from vllm_ops.hardware import parse_gpu_spec
from vllm_ops.launch.logparse import parse_figures
from vllm_ops.models import load_model_spec
from vllm_ops.planning import plan

RUNS = Path(__file__).resolve().parents[1] / "data" / "gpu-runs" / "h200x1"
KV_TOL = 0.05          # issue #20: every real GPU run within 5 %
WEIGHTS_TOL = 0.02


@lru_cache(maxsize=None)
def manifest() -> list[dict]:
    p = RUNS / "runs.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else []


def _names(started_only: bool = False) -> list[str]:
    return [r["name"] for r in manifest() if r.get("started", True) or not started_only]


def _run(name: str) -> dict:
    return next(r for r in manifest() if r["name"] == name)


@lru_cache(maxsize=None)
def actual(name: str) -> dict:
    r = _run(name)
    return parse_figures((RUNS / r["log"]).read_text(encoding="utf-8", errors="replace")).known()


@lru_cache(maxsize=None)
def replan(name: str):
    r = _run(name)
    inv = parse_gpu_spec(f"1x{raw_size(torch_total('h200x2'))}")
    return plan(load_model_spec(r["model"], offline=True), inv, pins=dict(r.get("pins") or {}),
                vllm_version=r.get("vllm_version", "0.25.0"), extra_args=list(r.get("extra_args") or ()))


def test_manifest_lists_one_run_per_class():
    # the runs are data in the repository: a missing manifest fails, it never skips
    assert manifest(), "tests/data/gpu-runs/h200x1/runs.json is missing or empty"
    classes = {r["class"] for r in manifest()}
    assert {"dtype-float32", "quantized"} <= classes


@pytest.mark.parametrize("name", _names(started_only=True))
def test_weights_and_kv_within_tolerance(name):
    a, p = actual(name), replan(name)
    assert a.get("kv_cache_gib"), f"{name}: the log has no 'Available KV cache memory' line"
    if a.get("weights_gib"):
        assert abs(err(p.memory.weights_gib, a["weights_gib"])) <= WEIGHTS_TOL, (p.memory.weights_gib, a)
    assert abs(err(p.memory.kv_cache_gib, a["kv_cache_gib"])) <= KV_TOL, (p.memory.kv_cache_gib, a)
    assert p.fits


def test_print_table():
    rows = []
    for name in _names():
        a, p = actual(name), replan(name)
        cells = []
        for k in ("weights_gib", "activation_peak_gib", "kv_cache_gib", "kv_cache_tokens"):
            e = err(getattr(p.memory, k), a.get(k))
            cells.append(f"{getattr(p.memory, k)}/{a.get(k, '-')}" + (f" {e * 100:+.1f}%" if e is not None else ""))
        rows.append(f"{name:14} {_run(name)['class']:16} " + "  ".join(cells)
                    + "  warnings: " + ",".join(w.code for w in p.warnings))
    print("\n".join(["run            class            weights  activation  KV GiB  KV tokens (plan/vLLM)", *rows]))
