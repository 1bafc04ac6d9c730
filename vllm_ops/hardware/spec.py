"""Simulated inventories: plan for a box you don't have.

Grammar (case-insensitive, spaces ignored)::

    spec      := node | COUNT "x(" node ")"         2x(8xH100) → 2 nodes of 8 H100 each
    node      := [COUNT "x"] gpu                    "L4" = "1xL4"
    gpu       := catalog key or alias | SIZE        SIZE = 79.2GiB / 23034MiB: the CUDA total per GPU

A SIZE is read as torch reports the total (GiB = 2**30, MiB = 2**20) and becomes
``memory_cuda_total_bytes`` exactly; such a GPU has no catalog entry, so its capability and links
are unknown.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from vllm_ops.errors import BadInput, UnknownGPU
from vllm_ops.hardware import catalog
from vllm_ops.hardware.inventory import GPU, GpuLink, Inventory, Node

MAX_GPUS_PER_NODE = 256
MAX_NODES = 4096

_UNITS = {"gib": 1024**3, "mib": 1024**2, "tib": 1024**4}
MAX_GPU_MEMORY_BYTES = 4 * 1024**4     # 4 TiB per GPU: far above any GPU made; more is a typo
_COUNT = re.compile(r"^(\d+)[x×*](.+)$", re.I)
_NODES = re.compile(r"^(\d+)[x×*]\((.+)\)$", re.I)
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([a-z]+)$", re.I)

_HINT = "a spec looks like 4xL4, 8xA100-80GB, 2x79.2GiB or 2x(8xH100)"


def _bad(spec: str, why: str) -> BadInput:
    return BadInput(f"bad GPU spec {spec!r}: {why}; {catalog.known_list()}", hint=_HINT)


def parse_gpu_spec(spec: str) -> Inventory:
    """``"4xL4"`` → an Inventory of 4 simulated L4s (source="simulated", spec kept)."""
    original = spec
    s = re.sub(r"\s+", "", spec or "")
    if not s:
        raise _bad(original or "", "empty")
    m = _NODES.match(s)
    if m:
        n_nodes = int(m.group(1))
        if not 1 <= n_nodes <= MAX_NODES:
            raise _bad(original, f"node count must be 1..{MAX_NODES}")
        node = _parse_node(m.group(2), original)
        nodes = tuple(node for _ in range(n_nodes))
    else:
        nodes = (_parse_node(s, original),)
    return Inventory(nodes=nodes, source="simulated", spec=original.strip())


def _parse_node(s: str, original: str) -> Node:
    if "(" in s or ")" in s:
        raise _bad(original, "only one level of nodes, as in 2x(8xH100)")
    m = _COUNT.match(s)
    count, what = (int(m.group(1)), m.group(2)) if m else (1, s)
    if not m and re.fullmatch(r"\d+[x×*]?", s, re.I):
        raise _bad(original, "no GPU named")
    if not 1 <= count <= MAX_GPUS_PER_NODE:
        raise _bad(original, f"GPU count must be 1..{MAX_GPUS_PER_NODE}")
    size = _SIZE.match(what)
    unit = size.group(2).lower() if size else None
    if size and unit in _UNITS:
        return _sized_node(count, size.group(1), unit, original)
    if size and unit in ("gb", "mb", "g", "m", "tb", "t"):
        raise _bad(original, f"say GiB or MiB (as torch reports the total), not {size.group(2)!r}")
    gpu_type = catalog.find(what)
    if gpu_type is None:
        raise UnknownGPU(f"unknown GPU {what!r} in spec {original!r}; {catalog.known_list()}",
                         hint=_HINT)
    return simulated_node(gpu_type, count)


def _sized_node(count: int, number: str, unit: str, original: str) -> Node:
    try:
        total = int((Decimal(number) * _UNITS[unit]).to_integral_value())
    except InvalidOperation:  # pragma: no cover — the regex admits only decimals
        raise _bad(original, f"bad size {number!r}")
    if total <= 0:
        raise _bad(original, "memory size must be positive")
    if total > MAX_GPU_MEMORY_BYTES:
        raise _bad(original, "memory size above 4 TiB per GPU")
    label = f"{number}{ {'gib': 'GiB', 'mib': 'MiB', 'tib': 'TiB'}[unit] }"
    gpus = tuple(
        GPU(index=i, name=f"GPU with {label}", memory_total_bytes=total, memory_cuda_total_bytes=total)
        for i in range(count)
    )
    return Node(gpus=gpus, links=())


def simulated_node(gpu_type: catalog.GpuType, count: int) -> Node:
    """``count`` GPUs of one catalog type, linked as the type's boards are (NVLink or PCIe)."""
    nvml_total = gpu_type.nvml_total_bytes or gpu_type.memory_bytes
    gpus = tuple(
        GPU(
            index=i,
            name=gpu_type.name,
            memory_total_bytes=nvml_total,
            memory_cuda_total_bytes=gpu_type.memory_bytes,
            memory_reserved_bytes=(nvml_total - gpu_type.memory_bytes) if gpu_type.nvml_total_bytes else None,
            compute_capability=gpu_type.compute_capability,
            catalog_key=gpu_type.key,
        )
        for i in range(count)
    )
    links = []
    for a in range(count):
        for b in range(a + 1, count):
            if gpu_type.interconnect == "nvlink":
                links.append(GpuLink(a=a, b=b, nvlink_links=gpu_type.nvlink_links or None, p2p_nvlink=True))
            else:
                links.append(GpuLink(a=a, b=b, nvlink_links=0, p2p_nvlink=False))
    return Node(gpus=gpus, links=tuple(links))
