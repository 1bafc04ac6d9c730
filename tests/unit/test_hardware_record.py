"""The recorder and the replaying fake agree: record a synthetic pynvml, replay it, same Inventory.

The synthetic pynvml below is only a stand-in for the recorder's own plumbing (ctypes handles,
structs, errors); values of real GPUs are asserted in test_hardware_probe.py against nvidia-smi.
"""
from __future__ import annotations

import ctypes
import json
from types import SimpleNamespace

import pytest

from vllm_ops.hardware import _nvml
from vllm_ops.hardware._probe import probe
from vllm_ops.hardware.record import FORMAT, RecordingNvml, ReplayNvml, record


class _Mem(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class _MemV2(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint), ("total", ctypes.c_ulonglong), ("reserved", ctypes.c_ulonglong),
                ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class _Pci(ctypes.Structure):
    _fields_ = [("busId", ctypes.c_char * 32), ("domain", ctypes.c_uint)]


class _Err(Exception):
    def __init__(self, value):
        super().__init__(f"NVML error {value}")
        self.value = value


def synthetic_pynvml(n: int = 2, read_index=(0,)):
    """Two NVLink-through-switch GPUs, a tuple READ index (as some nvidia-ml-py have)."""
    handles = [ctypes.c_void_p(0x1000 + i) for i in range(n)]
    idx = {h.value: i for i, h in enumerate(handles)}
    bus = [f"00000000:{0x18 + 0x10 * i:02X}:00.0" for i in range(n)]

    def gi(h):
        if not isinstance(h, ctypes.c_void_p):
            raise ctypes.ArgumentError("argument 1: wrong type")
        return idx[h.value]

    def mem(h, version=None):
        if version:
            return _MemV2(version, 1000 * 2**20, 480 * 2**20, 500 * 2**20, 20 * 2**20)
        return _Mem(1000 * 2**20, 500 * 2**20, 500 * 2**20)

    def nvlink_state(h, link):
        gi(h)
        if link >= 4:
            raise _Err(2)
        return 1

    def p2p(a, b, i):
        gi(a), gi(b)
        if not isinstance(i, int):
            raise ctypes.ArgumentError("argument 3: <class 'TypeError'>: wrong type")
        return 0

    def not_supported(*a, **k):
        raise _Err(3)

    return SimpleNamespace(
        NVMLError=_Err, NVML_NVLINK_MAX_LINKS=6, nvmlMemory_v2=0x02000028,
        NVML_P2P_CAPS_INDEX_READ=read_index, NVML_P2P_CAPS_INDEX_NVLINK=2,
        nvmlInit=lambda: None, nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: n,
        nvmlDeviceGetHandleByIndex=lambda i: handles[i],
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3" if gi(h) >= 0 else None,
        nvmlDeviceGetUUID=lambda h: f"GPU-{gi(h):08d}",
        nvmlDeviceGetPciInfo=lambda h: _Pci(bus[gi(h)].encode(), 0),
        nvmlDeviceGetMemoryInfo=mem,
        nvmlDeviceGetCudaComputeCapability=lambda h: (9, 0),
        nvmlDeviceGetEnforcedPowerLimit=lambda h: 700000,
        nvmlDeviceGetMigMode=not_supported,
        nvmlDeviceGetEccMode=lambda h: [1, 1],
        nvmlDeviceGetComputeRunningProcesses=lambda h: [SimpleNamespace(pid=42, usedGpuMemory=2**30)] if gi(h) == 0 else [],
        nvmlDeviceGetGraphicsRunningProcesses=lambda h: [],
        nvmlSystemGetProcessName=lambda pid: b"python3",
        nvmlDeviceGetNvLinkState=nvlink_state,
        nvmlDeviceGetNvLinkRemotePciInfo=lambda h, link: _Pci(b"00000000:C0:00.0", 0),
        nvmlDeviceGetNvLinkRemoteDeviceType=lambda h, link: 2,
        nvmlDeviceGetP2PStatus=p2p,
        nvmlDeviceGetTopologyCommonAncestor=lambda a, b: 30,
        nvmlSystemGetDriverVersion=lambda: b"580.159.04",
        nvmlSystemGetCudaDriverVersion=lambda: 13000,
        nvmlSystemGetNVMLVersion=lambda: "13.580.159.04",
    )


@pytest.fixture
def recorded(monkeypatch):
    fake = synthetic_pynvml()
    monkeypatch.setattr(_nvml, "_backend", fake)
    monkeypatch.setattr(_nvml, "_initialized", False)
    doc = record()
    return fake, json.loads(json.dumps(doc))  # as it would come back from a file


def test_record_is_json_in_the_documented_format(recorded):
    _, doc = recorded
    assert doc["format"] == FORMAT
    assert doc["calls"]["nvmlDeviceGetHandleByIndex(0)"] == {"handle": "gpu0"}
    assert doc["calls"]["nvmlDeviceGetName(gpu0)"] == {"value": "NVIDIA H100 80GB HBM3"}
    assert doc["calls"]["nvmlDeviceGetMemoryInfo(gpu1, version=33554472)"]["value"]["reserved"] == 480 * 2**20
    assert doc["calls"]["nvmlDeviceGetMigMode(gpu0)"] == {"error": 3, "text": "NVML error 3"}
    # the unguarded tuple READ index is recorded as what it did: a ctypes.ArgumentError
    assert doc["calls"]["nvmlDeviceGetP2PStatus(gpu0, gpu1, (0,))"]["exception"] == "ArgumentError"
    assert doc["constants"]["NVML_P2P_CAPS_INDEX_READ"] == [0]


def test_replay_gives_the_same_inventory_as_the_live_run(recorded, monkeypatch):
    fake, doc = recorded
    monkeypatch.setattr(_nvml, "_initialized", False)
    live = probe()
    replay = ReplayNvml(doc)
    with _nvml.use_backend(replay):
        replayed = probe()
    assert replay.misses == []
    assert replayed.to_dict() == live.to_dict()
    g = replayed.gpus[0]
    assert g.memory_cuda_total_bytes == 520 * 2**20 and g.mig_mode is None and g.ecc_mode is True
    assert g.processes[0].pid == 42 and g.processes[0].name == "python3"
    ln = replayed.nodes[0].link(0, 1)
    assert (ln.nvlink_links, ln.p2p_nvlink, ln.p2p_read, ln.common_ancestor) == (4, True, True, "hostbridge")
