"""`vllm-ops probe [--json]`: the GPUs NVML sees, and how they are linked.

Without an NVIDIA driver or GPU: one line saying so, exit 1; under ``--json`` still one valid JSON
document (an empty GPU list and an ``error``), exit 1.
"""
from __future__ import annotations

import argparse
from typing import Any

from vllm_ops.errors import NoGPU
from vllm_ops.hardware import catalog, probe
from vllm_ops.hardware.inventory import Inventory, Node
from vllm_ops.output import compact_table, console

GiB = 1024**3
MiB = 1024**2

# GpuLink.common_ancestor → the label `nvidia-smi topo -m` prints
TOPO_LABELS = {"internal": "PIX", "single": "PIX", "multiple": "PXB", "hostbridge": "PHB",
               "node": "NODE", "system": "SYS"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def run(args: argparse.Namespace) -> int:
    try:
        inv = probe()
    except NoGPU as exc:
        if args.json:
            from vllm_ops.output import print_json

            print_json(no_gpu_document(exc))
            from vllm_ops.output import info

            info(f"vllm-ops: {exc.one_line()}")
            return exc.exit_code
        raise
    if args.json:
        from vllm_ops.output import print_json

        print_json(document(inv))
        return 0
    print_table(inv)
    return 0


def document(inv: Any) -> dict:
    doc = inv.to_dict()
    doc["available"] = True
    matched = {g.catalog_key for n in inv.nodes for g in n.gpus if g.catalog_key}
    doc["catalog"] = {k: catalog.lookup(k).to_dict() for k in sorted(matched)}
    doc["topology"] = [topo_matrix(n) for n in inv.nodes]
    return doc


def no_gpu_document(exc: Any) -> dict:
    doc = Inventory(nodes=(Node(gpus=()),), source="probed").to_dict()
    doc.update(available=False, error=str(exc), hint=exc.hint, catalog={}, topology=[])
    return doc


def link_label(link: Any) -> str:
    if link is None:
        return "?"
    if link.nvlink_links:
        return f"NV{link.nvlink_links}"
    if link.p2p_nvlink and link.nvlink_links is None:
        return "NV?"
    return TOPO_LABELS.get(link.common_ancestor or "", "?")


def topo_matrix(node: Any) -> list[list[str]]:
    idx = [g.index for g in node.gpus]
    return [["X" if a == b else link_label(node.link(a, b)) for b in idx] for a in idx]


def _gib(b: int | None) -> str:
    return "?" if b is None else f"{b / GiB:.2f}"


def print_table(inv: Any) -> None:
    from rich.table import Table

    con = console()
    head = (f"driver {inv.driver_version or '?'} · CUDA driver {inv.cuda_driver_version or '?'} · "
            f"NVML {inv.nvml_version or '?'}")
    for node in inv.nodes:
        con.print(f"{node.hostname or 'this machine'}: {len(node.gpus)} GPU(s) · {head}")
        con.print(gpu_table(node.gpus))
        con.print()
        # the long identifiers get their own table, so the figures stay readable at 80 columns
        ids = compact_table()
        for col in ("GPU", "bus id", "UUID"):
            ids.add_column(col, no_wrap=True, overflow="fold")
        for g in node.gpus:
            ids.add_row(str(g.index), g.pci_bus_id or "?", g.uuid or "?")
        con.print(ids)
        procs = [(g.index, p) for g in node.gpus for p in g.processes]
        if procs:
            con.print("processes: " + ", ".join(
                f"GPU{i} pid {p.pid}{' ' + p.name if p.name else ''} {_gib(p.used_bytes)} GiB" for i, p in procs))
        if len(node.gpus) >= 2:
            m = topo_matrix(node)
            tt = Table(title=f"topology (interconnect: {node.interconnect})", title_justify="left")
            tt.add_column("")
            for g in node.gpus:
                tt.add_column(f"GPU{g.index}", justify="center")
            for g, row in zip(node.gpus, m):
                tt.add_row(f"GPU{g.index}", *row)
            con.print(tt)
            con.print("NV#: # NVLink links · PIX/PXB: PCIe switch(es) · PHB: host bridge · "
                      "NODE: within a NUMA node · SYS: across NUMA nodes")


# short headers: the table of a GPU with a long name still fits 80 columns (rich wraps what must)
GPU_COLUMNS = ("GPU", "name", "catalog", "NVML MiB", "CUDA GiB", "used MiB", "CC", "power W", "MIG", "ECC")


def gpu_table(gpus: Any) -> Any:
    t = compact_table()
    for col in GPU_COLUMNS:
        t.add_column(col, overflow="fold")
    for g in gpus:
        t.add_row(
            str(g.index), g.name, g.catalog_key or "-",
            str(g.memory_total_bytes // MiB) if g.memory_total_bytes else "?",
            _gib(g.memory_cuda_total_bytes),
            "?" if g.memory_used_bytes is None else str(g.memory_used_bytes // MiB),
            "?" if g.compute_capability is None else ".".join(map(str, g.compute_capability)),
            "?" if g.power_limit_w is None else f"{g.power_limit_w:.0f}",
            _onoff(g.mig_mode), _onoff(g.ecc_mode),
        )
    return t


def _onoff(v: bool | None) -> str:
    return "?" if v is None else ("on" if v else "off")
