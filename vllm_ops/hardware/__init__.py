"""Hardware: what GPUs a box has (probed through NVML) or would have (simulated from a spec).

    probe() -> Inventory                    read this machine's GPUs (raises NoGPU with a hint)
    is_available() -> bool                  NVML usable and at least one GPU; never raises
    parse_gpu_spec("4xL4") -> Inventory     a simulated box (see hardware.spec)
    catalog.lookup / match_nvml_name / all_gpus

pynvml is imported lazily, inside ``hardware._nvml``; importing this package is cheap.
"""
from __future__ import annotations

from vllm_ops.hardware import catalog
from vllm_ops.hardware.catalog import GpuType
from vllm_ops.hardware.inventory import GPU, GpuLink, GpuProcess, Inventory, Node
from vllm_ops.hardware.spec import parse_gpu_spec

__all__ = [
    "GPU", "GpuLink", "GpuProcess", "GpuType", "Inventory", "Node",
    "catalog", "is_available", "parse_gpu_spec", "probe",
]


def probe() -> Inventory:
    """Read this machine's GPUs through NVML. Raises ``vllm_ops.errors.NoGPU`` (with a hint)
    when the NVIDIA library or driver is missing or no GPU is present; an unsupported query reads
    as ``None``."""
    from vllm_ops.hardware._probe import probe as _probe

    return _probe()


def is_available() -> bool:
    """True when NVML initialises and reports at least one GPU. Never raises."""
    try:
        from vllm_ops.hardware import _nvml

        return (_nvml.device_count() or 0) > 0
    except Exception:  # noqa: BLE001 — documented: never raises
        return False
