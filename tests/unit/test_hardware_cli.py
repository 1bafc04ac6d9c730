"""`vllm-ops probe`: without a driver (one line, exit 1; --json still valid) and on a replayed box."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vllm_ops.hardware import _nvml
from vllm_ops.hardware.record import ReplayNvml, load_record

DATA = Path(__file__).resolve().parents[1] / "data" / "nvml" / "h200x2"


def _nvml_present() -> bool:
    try:
        import ctypes

        ctypes.CDLL("libnvidia-ml.so.1")
        return True
    except OSError:
        return False


@pytest.fixture
def no_driver():
    fake = ReplayNvml(load_record(str(DATA / "nvml-record.json")), fail={"nvmlInit": 12})  # LIBRARY_NOT_FOUND
    with _nvml.use_backend(fake):
        yield


@pytest.fixture
def h200_box():
    with _nvml.use_backend(ReplayNvml(load_record(str(DATA / "nvml-record.json")))):
        yield


def test_probe_on_this_machine_without_driver(run_cli):
    if _nvml_present():
        pytest.skip("this machine has an NVIDIA driver")
    rc, out, err = run_cli("probe")
    assert rc == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "NVIDIA" in err and "Traceback" not in err
    rc, out, err = run_cli("probe", "--json")
    assert rc == 1
    doc = json.loads(out)
    assert doc["available"] is False and doc["gpu_count"] == 0 and doc["nodes"][0]["gpus"] == []


def test_probe_without_driver_injected(run_cli, no_driver):
    rc, out, err = run_cli("probe")
    assert rc == 1 and out == ""
    assert err.strip().splitlines() == [err.strip()]
    assert "libnvidia-ml.so.1" in err and "4xL4" in err


def test_probe_json_without_driver_injected(run_cli, no_driver):
    rc, out, err = run_cli("probe", "--json")
    assert rc == 1
    doc = json.loads(out)
    assert doc["available"] is False and doc["nodes"][0]["gpus"] == [] and doc["gpu_count"] == 0
    assert "libnvidia-ml.so.1" in doc["error"] and doc["hint"]
    assert "Traceback" not in err


def test_probe_json_on_replayed_box(run_cli, h200_box):
    rc, out, _ = run_cli("probe", "--json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["available"] is True and doc["gpu_count"] == 2 and doc["interconnect"] == "nvlink"
    assert doc["topology"] == [[["X", "NV18"], ["NV18", "X"]]]
    assert doc["catalog"]["H200"]["memory_bytes"] == doc["nodes"][0]["gpus"][0]["memory_cuda_total_bytes"]


def test_probe_table_on_replayed_box(run_cli, h200_box, monkeypatch):
    monkeypatch.setenv("COLUMNS", "220")
    rc, out, err = run_cli("probe")
    assert rc == 0
    assert "NVIDIA H200" in out and "NV18" in out and "GPU-abf114ca-903c-e33a-39ef-017e3ccb3aef" in out
    assert "143771" in out and "139.80" in out


_PIPED_PROBE = """
import sys
from vllm_ops.cli import main
from vllm_ops.hardware import _nvml
from vllm_ops.hardware.record import ReplayNvml, load_record
with _nvml.use_backend(ReplayNvml(load_record(sys.argv[1]))):
    sys.exit(main(["probe"]))
"""


@pytest.mark.parametrize("box", ["h100x1", "h200x2", "h200x4"])
def test_probe_table_piped_at_80_columns_keeps_its_headers(box):
    """stdout is a pipe (not a TTY) and COLUMNS=80: every header word and every figure is printed,
    no line is wider than 80 (the long identifiers have their own table)."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(repo)}
    env.pop("FORCE_COLOR", None)
    p = subprocess.run([sys.executable, "-c", _PIPED_PROBE, str(DATA.parent / box / "nvml-record.json")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert max(len(ln) for ln in out.splitlines()) <= 80, out
    header = next(ln for ln in out.splitlines() if ln.split()[:2] == ["GPU", "name"])
    for word in ("catalog", "NVML", "MiB", "CUDA", "GiB", "used", "CC", "power", "MIG", "ECC"):
        assert word in header.split(), (word, header)
    doc = json.loads((DATA.parent / box / "probe.json").read_text())
    for g in doc["nodes"][0]["gpus"]:
        assert g["uuid"] in out and g["pci_bus_id"] in out
        assert f"{g['memory_cuda_total_bytes'] / 1024**3:.2f}" in out
