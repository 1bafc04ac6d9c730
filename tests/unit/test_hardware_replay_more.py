"""The NVML probe replayed from more real boxes: 1x H100 80GB HBM3 (tests/data/nvml/h100x1) and
4x H200 (tests/data/nvml/h200x4), plus the 2x H200 box of test_hardware_probe.py for symmetry.

Each directory holds what one machine said in one session: ``nvml-record.json`` (every raw NVML
answer the probe used, `python3 -m vllm_ops.hardware.record`), ``smi-q.txt`` (`nvidia-smi -q`),
``topo.txt`` (`nvidia-smi topo -m`), ``nvlink.txt`` (`nvidia-smi nvlink -s`, multi-GPU boxes only),
``torch.txt`` (`torch.cuda.get_device_properties(i).total_memory`) and ``probe.json``
(`vllm-ops probe --json` run there). The replayed probe is checked against the nvidia-smi and torch
text, never against the replay itself.
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest

from tests.unit.test_hardware_probe import parse_smi_q, parse_topo
from vllm_ops.hardware import _nvml, probe
from vllm_ops.hardware.record import ReplayNvml, load_record

NVML = Path(__file__).resolve().parents[1] / "data" / "nvml"
MiB = 1024**2
# nvidia-smi -q names the architecture, not the compute capability; NVML answers the capability
ARCH_CC = {"Hopper": (9, 0), "Ampere": (8, 0), "Ada Lovelace": (8, 9), "Blackwell": (10, 0)}
# catalog key the probe must give each product name seen on these boxes
CATALOG = {"NVIDIA H200": "H200", "NVIDIA H100 80GB HBM3": "H100-SXM"}

BOXES = ["h100x1", "h200x2", "h200x4"]


def _smi_arch(text: str) -> list[str]:
    return re.findall(r"^\s+Product Architecture\s*:\s*(.+?)\s*$", text, re.M)


@functools.lru_cache(maxsize=None)
def _load(name: str) -> dict:
    d = NVML / name
    fake = ReplayNvml(load_record(str(d / "nvml-record.json")))
    with _nvml.use_backend(fake):
        inv = probe()
    smi_text = (d / "smi-q.txt").read_text()
    return {
        "name": name,
        "dir": d,
        "inv": inv,
        "misses": list(fake.misses),
        "smi": parse_smi_q(smi_text),
        "arch": _smi_arch(smi_text),
        "topo": parse_topo((d / "topo.txt").read_text()),
        "torch": [int(ln.split()[-1]) for ln in (d / "torch.txt").read_text().splitlines() if ln.strip()],
        "nvlink": (d / "nvlink.txt").read_text() if (d / "nvlink.txt").exists() else None,
    }


@pytest.fixture(params=BOXES)
def box(request):
    return _load(request.param)


def test_every_probe_query_was_recorded(box):
    assert box["misses"] == []


def test_gpu_count_and_versions_match_nvidia_smi(box):
    inv, smi = box["inv"], box["smi"]
    expected = int(box["name"].split("x")[1])
    assert inv.gpu_count == len(smi["gpus"]) == len(box["torch"]) == expected
    assert inv.driver_version == smi["driver"]
    assert inv.cuda_driver_version == smi["cuda"]
    assert inv.nvml_version.endswith(smi["driver"])
    assert inv.source == "probed"


def test_each_gpu_matches_nvidia_smi(box):
    inv, smi = box["inv"], box["smi"]
    for g, s, arch in zip(inv.gpus, smi["gpus"], box["arch"], strict=True):
        assert g.name == s["name"]
        assert g.uuid == s["uuid"]
        assert g.pci_bus_id == s["bus_id"] == s["bus"]
        assert g.memory_total_bytes == s["total"] * MiB
        # nvidia-smi rounds MiB: 503,316,480 B reserved (H100) is exactly 480 MiB, 644,939,776 B
        # (H200) shows as 616 MiB
        assert abs(g.memory_reserved_bytes / MiB - s["reserved"]) <= 1
        assert abs(g.memory_free_bytes / MiB - s["free"]) <= 1
        assert g.memory_used_bytes // MiB == s["used"]
        assert g.power_limit_w == s["power_limit_w"]
        assert g.mig_mode is (s["mig"] == "Enabled")
        assert g.ecc_mode is (s["ecc"] == "Enabled")
        assert g.compute_capability == ARCH_CC[arch]
        assert g.catalog_key == CATALOG[s["name"]]
        assert g.processes == ()


def test_cuda_total_is_nvml_total_minus_reserved_and_equals_torch(box):
    inv = box["inv"]
    assert [g.memory_cuda_total_bytes for g in inv.gpus] == box["torch"]
    for g in inv.gpus:
        assert g.memory_cuda_total_bytes == g.memory_total_bytes - g.memory_reserved_bytes
        assert g.budget_total_bytes == g.memory_cuda_total_bytes


def test_topology_matches_topo_m(box):
    from vllm_ops.commands.probe import topo_matrix

    inv, ref = box["inv"], box["topo"]
    n = inv.gpu_count
    assert len(ref) == n and all(len(r) == n for r in ref)
    assert topo_matrix(inv.nodes[0]) == ref
    for a in range(n):
        for b in range(n):
            if a == b:
                assert ref[a][b] == "X"
                continue
            cell = ref[a][b]
            link = inv.nodes[0].link(a, b)
            m = re.fullmatch(r"NV(\d+)", cell)
            assert m, f"{box['name']}: GPU{a}-GPU{b} is {cell}, expected an NVLink bond"
            assert link.nvlink_links == int(m.group(1))
            assert link.p2p_nvlink is True and link.kind == "nvlink"
    assert inv.interconnect == ("nvlink" if n > 1 else "none")


def test_h200x4_is_a_full_nv18_mesh():
    ref = parse_topo((NVML / "h200x4" / "topo.txt").read_text())
    assert ref == [["X" if a == b else "NV18" for b in range(4)] for a in range(4)]


def test_single_h100_has_no_links_and_no_nvlink_state():
    box = _load("h100x1")
    inv = box["inv"]
    assert inv.nodes[0].links == ()
    # every nvmlDeviceGetNvLinkState answered NOT_SUPPORTED (3) there: the probe reads it as unknown
    assert inv.gpus[0].nvlink_active_links is None
    assert box["nvlink"] is None       # `nvidia-smi nvlink -s` was not recorded on the 1-GPU box


@pytest.mark.parametrize("name", ["h200x2", "h200x4"])
def test_active_links_match_nvlink_s(name):
    box = _load(name)
    blocks = re.split(r"^GPU (\d+): ", box["nvlink"], flags=re.M)[1:]
    per_gpu = {}
    uuids = {}
    for idx, block in zip(blocks[::2], blocks[1::2]):
        per_gpu[int(idx)] = len(re.findall(r"Link \d+: [\d.]+ GB/s", block))
        uuids[int(idx)] = re.search(r"\(UUID: (GPU-[0-9a-f-]+)\)", block).group(1)
    inv = box["inv"]
    assert [g.nvlink_active_links for g in inv.gpus] == [per_gpu[i] for i in range(inv.gpu_count)]
    assert [g.uuid for g in inv.gpus] == [uuids[i] for i in range(inv.gpu_count)]
    assert set(per_gpu.values()) == {18}


def test_probe_json_recorded_on_the_box_matches_the_replay(box):
    doc = json.loads((box["dir"] / "probe.json").read_text())
    live = doc["nodes"][0]
    here = json.loads(json.dumps(box["inv"].to_dict()))["nodes"][0]
    assert len(live["gpus"]) == len(here["gpus"])
    for a, b in zip(live["gpus"], here["gpus"]):
        assert a == b
    assert live["links"] == here["links"]
