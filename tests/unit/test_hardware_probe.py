"""The NVML probe, replayed from answers recorded on a real 2x H200 box (tests/data/nvml/h200x2),
checked against what nvidia-smi and torch said on the same machine in the same call."""
from __future__ import annotations

import ctypes
import json
import re
from pathlib import Path

import pytest

from vllm_ops.errors import NoGPU
from vllm_ops.hardware import _nvml, is_available, probe
from vllm_ops.hardware.record import ReplayNvml, load_record

DATA = Path(__file__).resolve().parents[1] / "data" / "nvml" / "h200x2"
MiB = 1024**2

NOT_SUPPORTED, DRIVER_NOT_LOADED, LIBRARY_NOT_FOUND, FUNCTION_NOT_FOUND, GPU_IS_LOST = 3, 9, 12, 13, 15
LIB_RM_MISMATCH = 18


# ------------------------------------------------------------ reference parsers (nvidia-smi text)

def parse_smi_q(text: str) -> dict:
    """nvidia-smi -q → {"driver":..., "cuda":..., "gpus": [{name, uuid, bus, total, reserved, ...}]}."""
    out = {"gpus": []}
    gpu = None
    section = None
    for line in text.splitlines():
        if m := re.match(r"^Driver Version\s*:\s*(\S+)", line):
            out["driver"] = m.group(1)
        elif m := re.match(r"^CUDA Version\s*:\s*(\S+)", line):
            out["cuda"] = m.group(1)
        elif m := re.match(r"^GPU (\S+)$", line):
            gpu = {"bus": m.group(1)}
            out["gpus"].append(gpu)
        elif gpu is not None and (m := re.match(r"^    (\S[^:]*?)\s*$", line)):
            section = m.group(1)
        elif gpu is not None and (m := re.match(r"^\s+(\S[^:]*?)\s*:\s*(.*?)\s*$", line)):
            key, value = m.groups()
            indent = len(line) - len(line.lstrip())
            if indent == 4:
                section = None
                if key == "Product Name":
                    gpu["name"] = value
                elif key == "GPU UUID":
                    gpu["uuid"] = value
            elif section == "FB Memory Usage" and key in ("Total", "Reserved", "Used", "Free"):
                gpu[key.lower()] = int(value.split()[0])
            elif section == "MIG Mode" and key == "Current":
                gpu["mig"] = value
            elif section == "ECC Mode" and key == "Current":
                gpu["ecc"] = value
            elif section == "GPU Power Readings" and key == "Current Power Limit":
                gpu["power_limit_w"] = float(value.split()[0])
            elif key == "Bus Id":
                gpu["bus_id"] = value
    return out


def parse_topo(text: str) -> list[list[str]]:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    rows = [ln.split("\t") for ln in text.splitlines() if re.match(r"^GPU\d+\t", ln)]
    n = len(rows)
    return [[c.strip() for c in r[1:1 + n]] for r in rows]


@pytest.fixture(scope="module")
def smi():
    return parse_smi_q((DATA / "smi-q.txt").read_text())


@pytest.fixture(scope="module")
def torch_totals():
    return [int(ln.split()[-1]) for ln in (DATA / "torch.txt").read_text().splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def record():
    return load_record(str(DATA / "nvml-record.json"))


@pytest.fixture
def replay(record):
    def _make(**kw):
        return ReplayNvml(record, **kw)
    return _make


@pytest.fixture
def h200(replay):
    fake = replay()
    with _nvml.use_backend(fake):
        inv = probe()
    assert fake.misses == []  # every query the probe made was recorded
    return inv


# ------------------------------------------------------------ against nvidia-smi / torch

def test_parsers_read_the_reference_files(smi):
    assert smi["driver"] == "580.159.04" and len(smi["gpus"]) == 2
    assert {"name", "uuid", "bus_id", "total", "reserved", "mig", "ecc", "power_limit_w"} <= set(smi["gpus"][0])


def test_system_versions_match_nvidia_smi(h200, smi):
    assert h200.driver_version == smi["driver"]
    assert h200.cuda_driver_version == smi["cuda"]
    assert h200.nvml_version.endswith(smi["driver"])
    assert h200.source == "probed" and h200.gpu_count == len(smi["gpus"])


def test_each_gpu_matches_nvidia_smi(h200, smi):
    for g, s in zip(h200.gpus, smi["gpus"]):
        assert g.name == s["name"]
        assert g.uuid == s["uuid"]
        assert g.pci_bus_id == s["bus_id"]
        assert g.memory_total_bytes == s["total"] * MiB
        # nvidia-smi rounds MiB up: 644,939,776 B reserved shows as 616 MiB
        assert abs(g.memory_reserved_bytes / MiB - s["reserved"]) <= 1
        assert abs(g.memory_free_bytes / MiB - s["free"]) <= 1
        assert g.memory_used_bytes // MiB == s["used"]
        assert g.power_limit_w == s["power_limit_w"]
        assert g.mig_mode is (s["mig"] == "Enabled")
        assert g.ecc_mode is (s["ecc"] == "Enabled")
        assert g.compute_capability == (9, 0)
        assert g.catalog_key == "H200"
        assert g.processes == ()


def test_cuda_total_is_nvml_total_minus_reserved_and_equals_torch(h200, torch_totals):
    assert [g.memory_cuda_total_bytes for g in h200.gpus] == torch_totals
    for g in h200.gpus:
        assert g.memory_cuda_total_bytes == g.memory_total_bytes - g.memory_reserved_bytes
        assert g.budget_total_bytes == g.memory_cuda_total_bytes


def test_nvlink_matches_topo_m(h200):
    ref = parse_topo((DATA / "topo.txt").read_text())
    assert ref == [["X", "NV18"], ["NV18", "X"]]
    from vllm_ops.commands.probe import topo_matrix

    assert topo_matrix(h200.nodes[0]) == ref
    link = h200.nodes[0].link(0, 1)
    assert link.nvlink_links == 18 and link.p2p_nvlink is True and link.kind == "nvlink"
    # the common ancestor is the host bridge (PCIe path), yet the pair is NVLink-connected
    assert link.common_ancestor == "hostbridge"
    assert h200.interconnect == "nvlink"


def test_active_links_match_nvlink_s(h200):
    text = (DATA / "nvlink.txt").read_text()
    per_gpu = [len(re.findall(r"Link \d+: [\d.]+ GB/s", block)) for block in text.split("GPU ")[1:]]
    assert [g.nvlink_active_links for g in h200.gpus] == per_gpu == [18, 18]


def test_probe_json_recorded_on_the_box_matches_the_replay(h200):
    """The CLI output recorded there and the replay here describe the same GPUs."""
    doc = json.loads((DATA / "probe.json").read_text())
    live = doc["nodes"][0]
    here = json.loads(json.dumps(h200.to_dict()))["nodes"][0]
    for a, b in zip(live["gpus"], here["gpus"]):
        assert a == b
    assert live["links"] == here["links"]


# ------------------------------------------------------------ the P2P READ tuple guard

def test_tuple_read_index_is_guarded(replay):
    fake = replay()  # the record keeps NVML_P2P_CAPS_INDEX_READ == (0,), as that nvidia-ml-py has it
    assert fake.NVML_P2P_CAPS_INDEX_READ == (0,)
    with _nvml.use_backend(fake):
        inv = probe()
        # the raw tuple call raised ctypes.ArgumentError there: the choke point turns it into default
        h0 = _nvml.nvml_query("nvmlDeviceGetHandleByIndex", 0)
        h1 = _nvml.nvml_query("nvmlDeviceGetHandleByIndex", 1)
        assert _nvml.nvml_query("nvmlDeviceGetP2PStatus", h0, h1, (0,), default="dflt") == "dflt"
    assert inv.nodes[0].link(0, 1).p2p_read is True


def test_non_nvml_exception_reads_as_unknown(replay):
    fake = replay(fail={"nvmlDeviceGetUUID": ctypes.ArgumentError("argument 1: bad")})
    with _nvml.use_backend(fake):
        inv = probe()
    assert all(g.uuid is None for g in inv.gpus)
    assert inv.gpus[0].name == "NVIDIA H200"


# ------------------------------------------------------------ injected NVML error codes

@pytest.mark.parametrize("code", [NOT_SUPPORTED, GPU_IS_LOST])
def test_per_query_errors_read_as_unknown(replay, code):
    fake = replay(fail={
        "nvmlDeviceGetMemoryInfo": code, "nvmlDeviceGetEccMode": code, "nvmlDeviceGetMigMode": code,
        "nvmlDeviceGetEnforcedPowerLimit": code, "nvmlDeviceGetPowerManagementLimit": code,
        "nvmlDeviceGetNvLinkState": code, "nvmlDeviceGetP2PStatus": code,
        "nvmlDeviceGetTopologyCommonAncestor": code, "nvmlDeviceGetComputeRunningProcesses": code,
    })
    with _nvml.use_backend(fake):
        inv = probe()
    g = inv.gpus[0]
    assert g.name == "NVIDIA H200" and g.uuid.startswith("GPU-")
    assert (g.memory_cuda_total_bytes, g.memory_reserved_bytes, g.memory_free_bytes) == (None, None, None)
    assert (g.ecc_mode, g.mig_mode, g.power_limit_w, g.nvlink_active_links) == (None, None, None, None)
    link = inv.nodes[0].link(0, 1)
    assert (link.nvlink_links, link.p2p_nvlink, link.common_ancestor) == (None, None, None)
    assert link.kind == "unknown" and inv.interconnect == "unknown"


def test_memory_v2_missing_falls_back_to_v1(replay, record):
    calls = {k: v for k, v in record["calls"].items() if "version=" not in k}
    fake = ReplayNvml({**record, "calls": calls})
    with _nvml.use_backend(fake):
        inv = probe()
    g = inv.gpus[0]
    assert g.memory_total_bytes == 143771 * MiB
    assert g.memory_reserved_bytes is None and g.memory_cuda_total_bytes is None
    assert g.budget_total_bytes == g.memory_total_bytes


def test_function_not_found_is_logged_once(replay, caplog):
    fake = replay(fail={"nvmlDeviceGetNvLinkRemoteDeviceType": FUNCTION_NOT_FOUND})
    with caplog.at_level("INFO", logger="vllm_ops.hardware"), _nvml.use_backend(fake):
        inv = probe()
        assert "nvmlDeviceGetNvLinkRemoteDeviceType" in _nvml.missing_functions()
    msgs = [r.getMessage() for r in caplog.records if "nvmlDeviceGetNvLinkRemoteDeviceType" in r.getMessage()]
    assert len(msgs) == 1  # 36 calls, one line
    # without the remote type the pair is still NVLink (P2P over NVLink OK, 18 active links)
    assert inv.nodes[0].link(0, 1).nvlink_links == 18


@pytest.mark.parametrize("code,words", [
    (LIBRARY_NOT_FOUND, "libnvidia-ml.so.1"),
    (DRIVER_NOT_LOADED, "driver is not loaded"),
    (LIB_RM_MISMATCH, "differ in version"),
])
def test_library_and_driver_failures_raise_nogpu_with_a_hint(replay, code, words):
    fake = replay(fail={"nvmlInit": code})
    with _nvml.use_backend(fake):
        with pytest.raises(NoGPU) as info:
            probe()
        assert is_available() is False
    assert words in str(info.value) and info.value.hint
    assert "\n" not in info.value.one_line()


def test_gpu_lost_at_handle_keeps_the_gpu_visible(replay):
    fake = replay(fail={"nvmlDeviceGetHandleByIndex": GPU_IS_LOST})
    with _nvml.use_backend(fake):
        inv = probe()
    assert inv.gpu_count == 2 and all(g.name.startswith("unknown") for g in inv.gpus)
    assert inv.nodes[0].link(0, 1).kind == "unknown"


def test_zero_gpus_is_nogpu_not_an_empty_inventory(record):
    fake = ReplayNvml({**record, "calls": {**record["calls"], "nvmlDeviceGetCount()": {"value": 0}}})
    with _nvml.use_backend(fake):
        with pytest.raises(NoGPU):
            probe()
        assert is_available() is False


def test_pynvml_not_installed(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pynvml(name, *a, **k):
        if name == "pynvml":
            raise ImportError("No module named 'pynvml'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_pynvml)
    monkeypatch.setattr(_nvml, "_backend", None)
    monkeypatch.setattr(_nvml, "_initialized", False)
    with pytest.raises(NoGPU) as info:
        probe()
    assert "pip install nvidia-ml-py" in info.value.one_line()
    assert is_available() is False


def test_is_available_true_on_the_replayed_box(replay):
    with _nvml.use_backend(replay()):
        assert is_available() is True


def test_probe_does_not_import_torch(replay):
    import subprocess
    import sys

    code = ("import sys, vllm_ops.hardware as h, vllm_ops.hardware._probe, vllm_ops.hardware.record;"
            "print('torch' in sys.modules, 'pynvml' in sys.modules, 'rich' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False"]


def test_inventory_round_trips_through_dict(h200):
    from vllm_ops.hardware.inventory import Inventory

    assert Inventory.from_dict(json.loads(json.dumps(h200.to_dict()))) == h200
