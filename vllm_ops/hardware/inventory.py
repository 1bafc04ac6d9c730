"""Typed inventory of a box (or several): what the planner plans for.

Plain frozen dataclasses (no pydantic on the plan path: a whole `vllm-ops plan` must start fast).
All sizes are bytes; ``None`` means unknown (a query the GPU or driver does not support).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

GiB = 1024**3

Source = Literal["probed", "simulated", "profile"]


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_bytes: int | None = None
    name: str | None = None


@dataclass(frozen=True)
class GPU:
    index: int                                 # NVML index
    name: str                                  # as NVML reports it, e.g. "NVIDIA H100 80GB HBM3"
    memory_total_bytes: int                    # NVML total (what nvidia-smi shows)
    memory_cuda_total_bytes: int | None = None # NVML total − driver reserved = CUDA/torch total (vLLM budgets against this)
    memory_reserved_bytes: int | None = None
    memory_free_bytes: int | None = None
    memory_used_bytes: int | None = None
    uuid: str | None = None
    pci_bus_id: str | None = None
    compute_capability: tuple[int, int] | None = None
    power_limit_w: float | None = None
    mig_mode: bool | None = None               # current MIG mode enabled
    ecc_mode: bool | None = None               # current ECC mode enabled
    processes: tuple[GpuProcess, ...] = ()
    catalog_key: str | None = None             # matched GPU catalog entry, e.g. "H100-SXM"
    nvlink_active_links: int | None = None     # active NVLink links of this GPU (None = unknown / no NVLink query)

    @property
    def budget_total_bytes(self) -> int:
        """The total vLLM's --gpu-memory-utilization is a fraction of (CUDA's, when known)."""
        return self.memory_cuda_total_bytes or self.memory_total_bytes


@dataclass(frozen=True)
class GpuLink:
    a: int
    b: int
    nvlink_links: int | None = None            # active NVLink links between a and b (None = unknown)
    p2p_nvlink: bool | None = None             # NVML P2P status over NVLink is OK
    p2p_read: bool | None = None
    common_ancestor: str | None = None         # PCIe topology level: "internal", "single", "multiple", "hostbridge", "node", "system"

    @property
    def kind(self) -> str:
        """"NVLink" / "PCIe" / "unknown" as topo -m would summarise it."""
        if self.nvlink_links:
            return "nvlink"
        if self.p2p_nvlink:
            return "nvlink"
        if self.nvlink_links == 0 or self.common_ancestor:
            return "pcie"
        return "unknown"


@dataclass(frozen=True)
class Node:
    gpus: tuple[GPU, ...]
    links: tuple[GpuLink, ...] = ()
    hostname: str | None = None
    address: str | None = None                 # for multi-node plans
    cpu_count: int | None = None
    ram_bytes: int | None = None

    def link(self, a: int, b: int) -> GpuLink | None:
        for ln in self.links:
            if {ln.a, ln.b} == {a, b}:
                return ln
        return None

    @property
    def interconnect(self) -> str:
        """"nvlink" when every pair is NVLink-connected, "pcie" when any pair is not, "none" for <2 GPUs."""
        if len(self.gpus) < 2:
            return "none"
        kinds = {ln.kind for ln in self.links}
        if not self.links or "unknown" in kinds:
            return "unknown"
        return "nvlink" if kinds == {"nvlink"} else "pcie"


@dataclass(frozen=True)
class Inventory:
    nodes: tuple[Node, ...]
    source: Source = "simulated"
    spec: str | None = None                    # the spec it was made from ("4xL4", "2x79.2GiB", profile name)
    driver_version: str | None = None
    cuda_driver_version: str | None = None     # e.g. "13.0"
    nvml_version: str | None = None
    interconnect_override: str | None = None   # from a catalog/profile when links are not probed

    @property
    def gpus(self) -> tuple[GPU, ...]:
        """All GPUs of the first node (most plans are single-node)."""
        return self.nodes[0].gpus if self.nodes else ()

    @property
    def gpu_count(self) -> int:
        return sum(len(n.gpus) for n in self.nodes)

    @property
    def interconnect(self) -> str:
        return self.interconnect_override or (self.nodes[0].interconnect if self.nodes else "none")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gpu_count"] = self.gpu_count
        d["interconnect"] = self.interconnect
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Inventory":
        def gpu(g: dict) -> GPU:
            g = {k: v for k, v in g.items() if k in _GPU_FIELDS}
            if g.get("compute_capability") is not None:
                g["compute_capability"] = tuple(g["compute_capability"])
            g["processes"] = tuple(GpuProcess(**p) for p in g.get("processes", ()))
            return GPU(**g)

        def node(n: dict) -> Node:
            return Node(
                gpus=tuple(gpu(g) for g in n.get("gpus", ())),
                links=tuple(GpuLink(**ln) for ln in n.get("links", ())),
                **{k: n.get(k) for k in ("hostname", "address", "cpu_count", "ram_bytes")},
            )

        return cls(
            nodes=tuple(node(n) for n in d.get("nodes", ())),
            **{k: d.get(k) for k in ("source", "spec", "driver_version", "cuda_driver_version",
                                     "nvml_version", "interconnect_override") if k in d},
        )


_GPU_FIELDS = {f.name for f in fields(GPU)}
