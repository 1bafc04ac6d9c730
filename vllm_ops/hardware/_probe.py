"""Read this machine's GPUs through NVML into an :class:`Inventory` (every call via ``nvml_query``).

Each GPU is read once. Memory comes from ``nvmlDeviceGetMemoryInfo_v2`` where the driver has it:
its ``reserved`` is what the driver keeps back, and ``total - reserved`` is the CUDA total that
torch reports and vLLM budgets against (NVML's total is ~0.47 GiB larger on an H100).

NVLink between two GPUs is decided from link state (links whose remote end is the other GPU, or
an NVSwitch while NVML's P2P status over NVLink is OK), never from the common PCIe ancestor, which
only describes the PCIe path.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

from vllm_ops.errors import NoGPU
from vllm_ops.hardware import _nvml
from vllm_ops.hardware._nvml import nvml_query
from vllm_ops.hardware.catalog import match_nvml_name
from vllm_ops.hardware.inventory import GPU, GpuLink, GpuProcess, Inventory, Node

# nvmlGpuTopologyLevel_t → the names GpuLink.common_ancestor uses
TOPOLOGY_LEVELS = {0: "internal", 10: "single", 20: "multiple", 30: "hostbridge", 40: "node", 50: "system"}
NVLINK_DEVICE_TYPE_GPU = 0
NVLINK_DEVICE_TYPE_SWITCH = 2
P2P_STATUS_OK = 0
MAX_LINKS_FALLBACK = 18


@dataclass
class _LinkInfo:
    link: int
    active: bool
    remote_bus: str | None = None
    remote_type: int | None = None


@dataclass
class _Read:
    gpu: GPU
    handle: Any
    links: list[_LinkInfo] | None = None       # None: NVLink state unknown (not supported)
    extra: dict = field(default_factory=dict)


def norm_bus_id(bus: str | None) -> str | None:
    """"00000000:8D:00.0" and "0000:8d:00.0" compare equal (domain width differs between APIs)."""
    if not bus:
        return None
    parts = bus.strip().upper().split(":")
    if len(parts) == 3:
        parts[0] = parts[0][-4:].rjust(4, "0")
    return ":".join(parts)


def _field(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _cuda_version(v: Any) -> str | None:
    if not isinstance(v, int) or v <= 0:
        return None
    return f"{v // 1000}.{(v % 1000) // 10}"


def _p2p_index(name: str, fallback: int) -> int:
    """NVML_P2P_CAPS_INDEX_* constant; some nvidia-ml-py define READ as a tuple ``(0,)``."""
    value = _nvml.constant(name, fallback)
    if isinstance(value, (tuple, list)):
        value = value[0] if value else fallback
    return int(value) if isinstance(value, int) else fallback


def probe() -> Inventory:
    _nvml.init()  # library/driver failures raise NoGPU here
    count = nvml_query("nvmlDeviceGetCount")
    if count is None:
        raise NoGPU("NVML is loaded but could not count the GPUs", hint="run nvidia-smi to see why")
    if count == 0:
        raise NoGPU("the NVIDIA driver is loaded but sees no GPU",
                    hint="check nvidia-smi, or plan with a GPU spec such as --gpus 4xL4")
    reads = [_read_gpu(i) for i in range(int(count))]
    links = _read_links(reads)
    node = Node(
        gpus=tuple(r.gpu for r in reads),
        links=tuple(links),
        hostname=_safe(socket.gethostname),
        cpu_count=os.cpu_count(),
        ram_bytes=_ram_bytes(),
    )
    return Inventory(
        nodes=(node,),
        source="probed",
        driver_version=nvml_query("nvmlSystemGetDriverVersion"),
        cuda_driver_version=_cuda_version(nvml_query("nvmlSystemGetCudaDriverVersion")),
        nvml_version=nvml_query("nvmlSystemGetNVMLVersion"),
    )


def _read_gpu(index: int) -> _Read:
    h = nvml_query("nvmlDeviceGetHandleByIndex", index)
    if h is None:  # GPU lost or not accessible: keep it visible, everything unknown
        return _Read(gpu=GPU(index=index, name="unknown (NVML has no handle for it)", memory_total_bytes=0),
                     handle=None)
    name = nvml_query("nvmlDeviceGetName", h) or "unknown"
    pci = nvml_query("nvmlDeviceGetPciInfo", h)
    mem = nvml_query("nvmlDeviceGetMemoryInfo", h)
    mem_v2 = None
    v2 = _nvml.constant("nvmlMemory_v2")
    if v2 is not None:
        mem_v2 = nvml_query("nvmlDeviceGetMemoryInfo", h, version=v2)
    total = _field(mem_v2, "total") or _field(mem, "total")
    reserved = _field(mem_v2, "reserved")
    used = _field(mem_v2, "used") if mem_v2 is not None else _field(mem, "used")
    free = _field(mem_v2, "free") if mem_v2 is not None else _field(mem, "free")
    cuda_total = total - reserved if (total is not None and reserved is not None) else None

    cc = nvml_query("nvmlDeviceGetCudaComputeCapability", h)
    power_mw = nvml_query("nvmlDeviceGetEnforcedPowerLimit", h)
    if power_mw is None:
        power_mw = nvml_query("nvmlDeviceGetPowerManagementLimit", h)
    mig = nvml_query("nvmlDeviceGetMigMode", h)
    ecc = nvml_query("nvmlDeviceGetEccMode", h)
    entry = match_nvml_name(name)

    gpu = GPU(
        index=index,
        name=name,
        memory_total_bytes=int(total) if total is not None else 0,
        memory_cuda_total_bytes=cuda_total,
        memory_reserved_bytes=reserved,
        memory_free_bytes=free,
        memory_used_bytes=used,
        uuid=nvml_query("nvmlDeviceGetUUID", h),
        pci_bus_id=_field(pci, "busId"),
        compute_capability=tuple(cc) if cc else None,
        power_limit_w=(power_mw / 1000.0) if isinstance(power_mw, (int, float)) else None,
        mig_mode=bool(mig[0]) if mig else None,
        ecc_mode=bool(ecc[0]) if ecc else None,
        processes=_processes(h),
        catalog_key=entry.key if entry else None,
        nvlink_active_links=None,
    )
    read = _Read(gpu=gpu, handle=h)
    read.links = _nvlinks(h)
    if read.links is not None:
        read.gpu = _replace(gpu, nvlink_active_links=sum(1 for ln in read.links if ln.active))
    return read


def _replace(gpu: GPU, **changes: Any) -> GPU:
    from dataclasses import replace

    return replace(gpu, **changes)


def _processes(h: Any) -> tuple[GpuProcess, ...]:
    seen: dict[int, GpuProcess] = {}
    for fn in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        for p in nvml_query(fn, h, default=None) or ():
            pid = _field(p, "pid")
            if pid is None or pid in seen:
                continue
            used = _field(p, "usedGpuMemory")
            seen[pid] = GpuProcess(pid=int(pid), used_bytes=int(used) if isinstance(used, int) else None,
                                   name=nvml_query("nvmlSystemGetProcessName", pid))
    return tuple(seen.values())


def _nvlinks(h: Any) -> list[_LinkInfo] | None:
    max_links = _nvml.constant("NVML_NVLINK_MAX_LINKS", MAX_LINKS_FALLBACK)
    out: list[_LinkInfo] = []
    for link in range(int(max_links)):
        state = nvml_query("nvmlDeviceGetNvLinkState", h, link)
        if state is None:
            continue
        info = _LinkInfo(link=link, active=bool(state))
        if info.active:
            info.remote_bus = norm_bus_id(_field(nvml_query("nvmlDeviceGetNvLinkRemotePciInfo", h, link), "busId"))
            info.remote_type = nvml_query("nvmlDeviceGetNvLinkRemoteDeviceType", h, link)
        out.append(info)
    return out or None


def _read_links(reads: list[_Read]) -> list[GpuLink]:
    nvlink_idx = _p2p_index("NVML_P2P_CAPS_INDEX_NVLINK", 2)
    read_idx = _p2p_index("NVML_P2P_CAPS_INDEX_READ", 0)
    buses = {norm_bus_id(r.gpu.pci_bus_id) for r in reads} - {None}
    out = []
    for i, ra in enumerate(reads):
        for rb in reads[i + 1:]:
            if ra.handle is None or rb.handle is None:
                out.append(GpuLink(a=ra.gpu.index, b=rb.gpu.index))
                continue
            p2p_nv = nvml_query("nvmlDeviceGetP2PStatus", ra.handle, rb.handle, nvlink_idx)
            p2p_rd = nvml_query("nvmlDeviceGetP2PStatus", ra.handle, rb.handle, read_idx)
            level = nvml_query("nvmlDeviceGetTopologyCommonAncestor", ra.handle, rb.handle)
            p2p_nvlink = None if p2p_nv is None else p2p_nv == P2P_STATUS_OK
            out.append(GpuLink(
                a=ra.gpu.index,
                b=rb.gpu.index,
                nvlink_links=_pair_links(ra, rb, p2p_nvlink, buses),
                p2p_nvlink=p2p_nvlink,
                p2p_read=None if p2p_rd is None else p2p_rd == P2P_STATUS_OK,
                common_ancestor=TOPOLOGY_LEVELS.get(level) if isinstance(level, int) else None,
            ))
    return out


def _pair_links(ra: _Read, rb: _Read, p2p_nvlink: bool | None, buses: set) -> int | None:
    """Active NVLink links between two GPUs, as ``nvidia-smi topo -m`` counts them (NV<n>)."""
    if ra.links is None or rb.links is None:
        return None
    bus_b = norm_bus_id(rb.gpu.pci_bus_id)
    bus_a = norm_bus_id(ra.gpu.pci_bus_id)
    direct = sum(1 for ln in ra.links if ln.active and bus_b and ln.remote_bus == bus_b)
    if not direct:
        direct = sum(1 for ln in rb.links if ln.active and bus_a and ln.remote_bus == bus_a)
    if direct:
        return direct
    if p2p_nvlink:
        # through NVSwitches (or remote ends NVML does not name): the links not going straight to
        # another probed GPU; nvidia-smi shows NV<min> for such pairs.
        def switched(r: _Read) -> int:
            return sum(1 for ln in r.links if ln.active and not (ln.remote_bus and ln.remote_bus in buses
                                                               and ln.remote_type != NVLINK_DEVICE_TYPE_SWITCH))
        n = min(switched(ra), switched(rb))
        return n or None
    return 0


def _safe(fn: Any) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001
        return None


def _ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
