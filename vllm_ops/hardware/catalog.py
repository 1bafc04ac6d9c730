"""The GPU catalog: facts about GPU models, kept as data in ``vllm_ops/data/gpus.json``.

``lookup("h100")`` finds an entry by key or alias (case-insensitive); ``match_nvml_name`` maps
the name NVML reports (``"NVIDIA H100 80GB HBM3"``) to an entry, or ``None`` when unknown.
``memory_bytes`` is the CUDA total (what torch reports and vLLM budgets against), not the NVML
total; ``memory_source`` says whether the figure was measured or derived (see the JSON file). The
performance model reads ``bandwidth_gbs``, the dense ``bf16/fp8/fp4_tflops``, ``nvlink_gbs`` and
``pcie_gbs``; ``perf_source`` names the datasheet they come from.
"""
from __future__ import annotations

import json
import re
import threading
from dataclasses import asdict, dataclass
from typing import Any

from vllm_ops.errors import UnknownGPU

MiB = 1024**2
GiB = 1024**3


@dataclass(frozen=True)
class GpuType:
    key: str                                   # catalog key, e.g. "H100-SXM"
    name: str                                  # the name NVML reports, e.g. "NVIDIA H100 80GB HBM3"
    memory_bytes: int                          # CUDA total (torch total_memory); vLLM budgets against it
    memory_gb: int                             # marketed size, decimal GB
    bandwidth_gbs: float                       # memory bandwidth, GB/s
    compute_capability: tuple[int, int]
    bf16: bool
    fp8: bool
    interconnect: str                          # "nvlink" (SXM boards: every pair NVLink) or "pcie"
    nvlink_gbs: float | None = None            # NVLink bandwidth per GPU (bidirectional), GB/s
    aliases: tuple[str, ...] = ()
    nvml_total_bytes: int | None = None        # what nvidia-smi shows as total
    nvlink_links: int | None = None            # NVLink links per GPU (topo -m shows NV<links>)
    memory_source: str = "derived"             # "measured" / "derived-torch" / "derived-nvml"
    bf16_tflops: float | None = None           # dense 16-bit tensor TFLOP/s (datasheet, no sparsity)
    fp8_tflops: float | None = None            # dense FP8 tensor TFLOP/s; None: no FP8 units
    fp4_tflops: float | None = None            # dense FP4 tensor TFLOP/s; None: no FP4 units
    pcie_gbs: float | None = None              # PCIe bandwidth per direction (x16), GB/s
    perf_source: str | None = None             # the datasheet the performance figures come from

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GiB

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["compute_capability"] = list(self.compute_capability)
        d["aliases"] = list(self.aliases)
        return d


_lock = threading.Lock()
_catalog: tuple[GpuType, ...] | None = None
_by_alias: dict[str, GpuType] = {}

_VENDOR_WORDS = re.compile(r"\b(nvidia|tesla|geforce)\b")


def normalize(name: str) -> str:
    """Case-, punctuation- and vendor-word-insensitive form used for alias matching."""
    s = _VENDOR_WORDS.sub(" ", name.lower())
    return re.sub(r"[^a-z0-9]", "", s)


def _load() -> tuple[GpuType, ...]:
    global _catalog
    if _catalog is not None:
        return _catalog
    with _lock:
        if _catalog is None:
            from vllm_ops.resources import data_dir

            raw = json.loads((data_dir() / "gpus.json").read_text(encoding="utf-8"))
            entries = []
            for g in raw["gpus"]:
                entries.append(GpuType(
                    key=g["key"], name=g["name"], memory_bytes=int(g["memory_bytes"]),
                    memory_gb=g["memory_gb"], bandwidth_gbs=g["bandwidth_gbs"],
                    compute_capability=tuple(g["compute_capability"]), bf16=bool(g["bf16"]),
                    fp8=bool(g["fp8"]), interconnect=g["interconnect"], nvlink_gbs=g.get("nvlink_gbs"),
                    aliases=tuple(g.get("aliases", ())),
                    nvml_total_bytes=(g["nvml_total_mib"] * MiB if g.get("nvml_total_mib") else None),
                    nvlink_links=g.get("nvlink_links"), memory_source=g.get("memory_source", "derived"),
                    bf16_tflops=g.get("bf16_tflops"), fp8_tflops=g.get("fp8_tflops"),
                    fp4_tflops=g.get("fp4_tflops"), pcie_gbs=g.get("pcie_gbs"), perf_source=g.get("perf_source"),
                ))
            index: dict[str, GpuType] = {}
            for e in entries:
                for alias in (e.key, e.name, *e.aliases):
                    n = normalize(alias)
                    other = index.get(n)
                    if other is not None and other.key != e.key:  # pragma: no cover — data error
                        raise ValueError(f"gpus.json: alias {alias!r} names both {other.key} and {e.key}")
                    index[n] = e
            _by_alias.clear()
            _by_alias.update(index)
            _catalog = tuple(entries)
    return _catalog


def all_gpus() -> tuple[GpuType, ...]:
    """Every catalog entry, in catalog order."""
    return _load()


def known_keys() -> list[str]:
    return [g.key for g in _load()]


def known_list() -> str:
    """One line naming the known GPUs, for error messages."""
    return "known GPUs: " + ", ".join(known_keys())


def find(name_or_alias: str) -> GpuType | None:
    """The entry for a key, alias or NVML name (case-insensitive), or None."""
    _load()
    return _by_alias.get(normalize(name_or_alias or ""))


def lookup(name_or_alias: str) -> GpuType:
    """The entry for a key or alias; raises UnknownGPU (one line listing the known GPUs)."""
    entry = find(name_or_alias)
    if entry is None:
        raise UnknownGPU(f"unknown GPU {name_or_alias!r}; {known_list()}",
                         hint="or give the CUDA memory per GPU, e.g. 2x79.2GiB")
    return entry


def match_nvml_name(name: str | None) -> GpuType | None:
    """Catalog entry for the name NVML reports ("NVIDIA A100-SXM4-80GB" → A100-80GB), or None."""
    if not name:
        return None
    return find(name)
