"""GPU catalog and simulated inventories (parse_gpu_spec)."""
from __future__ import annotations

import pytest

from vllm_ops.errors import BadInput, UnknownGPU
from vllm_ops.hardware import catalog, parse_gpu_spec

REQUIRED = ["T4", "L4", "A10G", "A10", "L40S", "A40", "A100-40GB", "A100-80GB", "H100-SXM", "H100-PCIe",
            "H100-NVL", "H200", "B200", "RTX-3090", "RTX-4090", "RTX-5090"]


def test_catalog_has_the_required_gpus_with_sane_facts():
    keys = [g.key for g in catalog.all_gpus()]
    assert keys == REQUIRED
    for g in catalog.all_gpus():
        assert 10 * 2**30 < g.memory_bytes < g.memory_gb * 2**30 * 1.02, g.key  # "40GB" is 40 GiB on A100
        if g.nvml_total_bytes:
            assert 0 < g.nvml_total_bytes - g.memory_bytes < 2**30, g.key   # driver keeps < 1 GiB
        assert g.bandwidth_gbs > 0 and len(g.compute_capability) == 2
        assert g.interconnect in ("nvlink", "pcie")
        assert (g.nvlink_gbs is not None) if g.interconnect == "nvlink" else True
        assert g.fp8 == (g.compute_capability >= (8, 9)), g.key
        assert g.bf16 == (g.compute_capability >= (8, 0)), g.key
        assert g.memory_source in ("measured", "derived-torch", "derived-nvml")


def test_measured_figures():
    assert catalog.lookup("H100").memory_bytes == 85_017_493_504          # 79.18 GiB
    assert catalog.lookup("H200").memory_bytes == 150_109_880_320         # tests/data/nvml/h200x2
    assert catalog.lookup("H100").memory_source == catalog.lookup("H200").memory_source == "measured"
    assert catalog.lookup("L4").nvml_total_bytes == 23034 * 2**20
    assert round(catalog.lookup("L4").memory_gib) == 22


@pytest.mark.parametrize("nvml_name,key", [
    ("NVIDIA H100 80GB HBM3", "H100-SXM"), ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
    ("NVIDIA A100-SXM4-40GB", "A100-40GB"), ("NVIDIA A100 80GB PCIe", "A100-80GB"),
    ("NVIDIA L4", "L4"), ("Tesla T4", "T4"), ("NVIDIA A10G", "A10G"), ("NVIDIA A10", "A10"),
    ("NVIDIA L40S", "L40S"), ("NVIDIA A40", "A40"), ("NVIDIA H100 PCIe", "H100-PCIe"),
    ("NVIDIA H100 NVL", "H100-NVL"), ("NVIDIA H200", "H200"), ("NVIDIA B200", "B200"),
    ("NVIDIA GeForce RTX 3090", "RTX-3090"), ("NVIDIA GeForce RTX 4090", "RTX-4090"),
    ("NVIDIA GeForce RTX 5090", "RTX-5090"),
])
def test_match_nvml_name(nvml_name, key):
    assert catalog.match_nvml_name(nvml_name).key == key


def test_unknown_nvml_name_is_none_and_lookup_raises():
    assert catalog.match_nvml_name("NVIDIA L40") is None
    assert catalog.match_nvml_name("") is None
    with pytest.raises(UnknownGPU) as info:
        catalog.lookup("FOO")
    assert "H100-SXM" in info.value.one_line()


@pytest.mark.parametrize("alias", ["h100", "H100", "h100-sxm", "H100 SXM", "h100_sxm5"])
def test_aliases_are_case_insensitive(alias):
    assert catalog.lookup(alias).key == "H100-SXM"


@pytest.mark.parametrize("spec,count,key,interconnect", [
    ("4xL4", 4, "L4", "pcie"), ("2xH100", 2, "H100-SXM", "nvlink"), ("8xA100-80GB", 8, "A100-80GB", "nvlink"),
    ("1xH100", 1, "H100-SXM", "none"), ("L4", 1, "L4", "none"), ("4xl4", 4, "L4", "pcie"),
    ("2 x H100", 2, "H100-SXM", "nvlink"), ("8XH200", 8, "H200", "nvlink"),
])
def test_specs(spec, count, key, interconnect):
    inv = parse_gpu_spec(spec)
    entry = catalog.lookup(key)
    assert inv.source == "simulated" and inv.spec == spec.strip()
    assert inv.gpu_count == count and len(inv.nodes) == 1
    assert [g.index for g in inv.gpus] == list(range(count))
    for g in inv.gpus:
        assert g.catalog_key == key and g.compute_capability == entry.compute_capability
        assert g.memory_cuda_total_bytes == entry.memory_bytes == g.budget_total_bytes
    assert inv.interconnect == interconnect
    assert len(inv.nodes[0].links) == count * (count - 1) // 2


def test_nvlink_box_links_every_pair():
    node = parse_gpu_spec("8xH100").nodes[0]
    assert all(node.link(a, b).nvlink_links == 18 for a in range(8) for b in range(8) if a != b)


@pytest.mark.parametrize("spec,bytes_", [
    ("2x79.2GiB", round(79.2 * 2**30)), ("1x23034MiB", 23034 * 2**20), ("79.18GiB", round(79.18 * 2**30)),
    ("4x22.0gib", 22 * 2**30),
])
def test_raw_memory_specs(spec, bytes_):
    inv = parse_gpu_spec(spec)
    for g in inv.gpus:
        assert g.memory_cuda_total_bytes == bytes_ == g.budget_total_bytes
        assert g.catalog_key is None and g.compute_capability is None


def test_multi_node_spec():
    inv = parse_gpu_spec("2x(8xH100)")
    assert len(inv.nodes) == 2 and inv.gpu_count == 16
    assert all(len(n.gpus) == 8 and n.interconnect == "nvlink" for n in inv.nodes)


@pytest.mark.parametrize("spec,exc", [
    ("4xFOO", UnknownGPU), ("0xL4", BadInput), ("x", BadInput), ("", BadInput), ("3x", BadInput),
    ("4x80GB", BadInput), ("0x(8xH100)", BadInput), ("2x(2x(2xL4))", BadInput), ("999xL4", BadInput),
    ("2x0GiB", BadInput),
])
def test_bad_specs_give_one_line_listing_known_gpus(spec, exc):
    with pytest.raises(exc) as info:
        parse_gpu_spec(spec)
    line = info.value.one_line()
    assert "\n" not in line and "known GPUs:" in line and "L4" in line and "H100-SXM" in line
    assert info.value.exit_code == 2


def test_unknown_gpu_message_keeps_the_users_spelling():
    with pytest.raises(UnknownGPU, match="'FOO'"):
        parse_gpu_spec("4xFOO")
