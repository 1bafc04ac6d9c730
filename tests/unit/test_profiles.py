"""profiles.py and `vllm-ops profiles`: bundled profiles, user overrides, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vllm_ops.errors import BadInput, MalformedFile
from vllm_ops.profiles import (check_profile_against, list_profiles, load_profile, profile_names,
                               validate_profile)

REQUIRED = ["l4x1", "l4x2", "l4x4", "l4x8", "t4x1", "t4x4", "a10gx1", "a10gx4", "l40sx4",
            "a100-40gbx8", "a100-80gbx8", "h100x1", "h100x2", "h100x8", "h200x8", "b200x8",
            "rtx4090x1", "rtx4090x2", "cpu"]


def test_every_required_profile_is_bundled_and_valid():
    names = profile_names()
    assert set(REQUIRED) <= set(names)
    for p in list_profiles():
        assert p.origin == "bundled" and p.description and p.path
        inv = p.inventory()
        assert inv.source == "profile" and inv.spec == p.name
        if p.kind == "gpu":
            assert inv.gpu_count == p.count
            assert {g.catalog_key for g in inv.gpus} == {p.gpu}
            assert inv.interconnect == p.interconnect
            assert 0 < p.vllm_defaults["gpu_memory_utilization"] <= 1
        assert p.limits["max_model_len"] >= p.vllm_defaults.get("max_model_len", 0)


@pytest.mark.parametrize("name,gpu,count,ic", [
    ("l4x4", "L4", 4, "pcie"), ("h100x8", "H100-SXM", 8, "nvlink"), ("a100-40gbx8", "A100-40GB", 8, "nvlink"),
    ("rtx4090x2", "RTX-4090", 2, "pcie"), ("t4x1", "T4", 1, "none"), ("b200x8", "B200", 8, "nvlink"),
])
def test_profile_hardware(name, gpu, count, ic):
    p = load_profile(name)
    assert (p.kind, p.gpu, p.count, p.interconnect, p.hardware_spec) == ("gpu", gpu, count, ic, f"{count}x{gpu}")


def test_cpu_profile():
    p = load_profile("cpu")
    assert p.kind == "cpu" and p.gpu is None and p.count == 0
    assert p.env["VLLM_CPU_KVCACHE_SPACE"] == "4" and p.env["VLLM_TARGET_DEVICE"] == "cpu"
    assert p.env["VLLM_CPU_OMP_THREADS_BIND"] == "auto"
    inv = p.inventory()
    assert inv.gpu_count == 0 and inv.nodes[0].ram_bytes == 32 * 1024**3


def test_t4_defaults_to_fp16_and_4090_pair_disables_p2p():
    assert load_profile("t4x4").vllm_defaults["dtype"] == "half"
    assert load_profile("rtx4090x2").env == {"NCCL_P2P_DISABLE": "1"}


def test_unknown_profile_suggests_close_names():
    with pytest.raises(BadInput, match=r"unknown profile 'l4x3'; did you mean .*l4x4"):
        load_profile("l4x3")


# ---------------------------------------------------------------------------------------------
# user directory overrides by name
# ---------------------------------------------------------------------------------------------
MINI = "gpu: L4\ncount: 1\nvllm_defaults:\n  max_num_seqs: 7\n"


def test_user_dir_overrides_bundled_by_name(tmp_path, monkeypatch):
    (tmp_path / "l4x1.yaml").write_text(MINI)
    (tmp_path / "mybox.yaml").write_text("gpu: h100\ncount: 2\ninterconnect: nvlink\n")
    p = load_profile("l4x1", tmp_path)
    assert p.origin == "user" and p.vllm_defaults == {"max_num_seqs": 7}
    assert load_profile("mybox", tmp_path).gpu == "H100-SXM"       # aliases resolve to catalog keys
    assert load_profile("l4x1").origin == "bundled"
    monkeypatch.setenv("VLLM_OPS_PROFILES_DIR", str(tmp_path))
    assert load_profile("l4x1").origin == "user"
    names = [p.name for p in list_profiles()]
    assert "mybox" in names and names.count("l4x1") == 1
    assert load_profile(str(tmp_path / "mybox.yaml")).origin == "file"


def test_missing_user_dir_is_an_error(tmp_path):
    with pytest.raises(BadInput, match="profiles directory not found"):
        load_profile("l4x1", tmp_path / "nope")


# ---------------------------------------------------------------------------------------------
# malformed profiles: file, field and problem in one line
# ---------------------------------------------------------------------------------------------
BAD = [
    ("gpu: L4\ncount: 1\ngpu_memory_utilisation: 0.9\n", "gpu_memory_utilisation: unknown key"),
    ("gpu: L4\ncount: 1\nvllm_default:\n  max_num_seqs: 1\n", "did you mean 'vllm_defaults'?"),
    ("gpu: L4\ncount: 1\nvllm_defaults:\n  gpu_memory_utilisation: 0.9\n",
     "vllm_defaults.gpu_memory_utilisation: unknown vLLM flag; did you mean 'gpu_memory_utilization'?"),
    ("gpu: L4\ncount: 1\nvllm_defaults:\n  gpu_memory_utilization: 1.5\n",
     "vllm_defaults.gpu_memory_utilization: must be in (0, 1], got number 1.5"),
    ("gpu: L4\ncount: 1\nvllm_defaults:\n  max_num_seqs: '64'\n", "vllm_defaults.max_num_seqs: must be a positive integer, got string '64'"),
    ("gpu: L4\ncount: 1\nvllm_defaults:\n  max-num-seqs: 64\n", "written with underscores"),
    ("gpu: L4\ncount: 1\nvllm_defaults:\n  swap_space: 4\n", "removed from vLLM in v0.18.0"),
    ("gpu: L4\ncount: 1\nvllm_defaults:\n  enforce_eager: 'yes'\n", "enforce_eager: must be true or false"),
    ("gpu: L4\ncount: 1\nlimits:\n  max_model_len: -5\n", "limits.max_model_len: must be > 0"),
    ("gpu: L4\ncount: 1\nvllm_defaults:\n  max_num_seqs: 600\nlimits:\n  max_num_seqs: 512\n", "above its limit"),
    ("gpu: L4\ncount: 0\n", "count: must be >= 1, got 0"),
    ("gpu: L4\ncount: two\n", "count: must be an integer, got string 'two'"),
    ("gpu: L4\ncount: true\n", "count: must be an integer, got boolean"),
    ("gpu: L5\ncount: 1\n", "gpu: unknown GPU catalog key 'L5'; did you mean 'L4'?"),
    ("count: 1\n", "gpu: missing"),
    ("gpu: L4\ncount: 2\n", "interconnect: missing"),
    ("gpu: L4\ncount: 2\ninterconnect: nvswitch\n", "interconnect: must be nvlink, pcie or none"),
    ("kind: tpu\n", "kind: must be 'gpu' or 'cpu'"),
    ("kind: cpu\n", "cpu.kv_cache_space_gib: missing"),
    ("kind: cpu\ncpu:\n  kv_cache_space_gib: 4\n  thread: 2\n", "cpu.thread: unknown key; did you mean 'threads'?"),
    ("kind: cpu\ngpu: L4\ncpu:\n  kv_cache_space_gib: 4\n", "gpu: not allowed with kind: cpu"),
    ("gpu: L4\ncount: 1\nenv:\n  HF_TOKEN: x\n", "env.HF_TOKEN: is a secret"),
    ("gpu: L4\ncount: 1\nenv:\n  A: [1]\n", "env.A: must be a string or number, got list"),
    ("gpu: L4\ncount: 1\nenv:\n  A: \"x\\ny\"\n", "env.A: must not hold newlines"),
    ("gpu: L4\ncount: 1\nnotes: 5\n", "notes: must be a string or a list of strings"),
    ("name: other\ngpu: L4\ncount: 1\n", "name: 'other' does not match the file name"),
    ("gpu: L4\ncount: 1\n1: x\n", "keys must be strings"),
    ("gpu: L4\ncount: [1\n", "YAML syntax error"),
    ("gpu: L4\n  count: 1\n", "line 2"),
    ("- gpu: L4\n", "the document is a list; a profile is a YAML mapping"),
    ("just a string\n", "the document is a string"),
    ("", "empty file"),
    ("gpu: L4\ncount: 1\n---\ngpu: T4\n", "holds 2 YAML documents"),
    ("a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n", "YAML aliases (*a) are not allowed"),
    ("gpu: !!python/object:os.system x\ncount: 1\n", "YAML syntax error"),
]


@pytest.mark.parametrize("text,expected", BAD, ids=[f"bad-{i}" for i in range(len(BAD))])
def test_malformed_profile_is_one_clear_line(text, expected, tmp_path):
    f = tmp_path / "box.yaml"
    f.write_text(text)
    with pytest.raises(MalformedFile) as ei:
        load_profile("box", tmp_path)
    msg = ei.value.one_line()
    assert msg.startswith(f"{f}: ") and expected in msg
    assert "\n" not in str(ei.value)


def test_oversized_and_binary_files_are_refused(tmp_path):
    (tmp_path / "big.yaml").write_text("gpu: L4\ncount: 1\nnotes:\n" + "  - xxxxxxxxxxxxxxxxxxxxxxxxxx\n" * 5000)
    with pytest.raises(MalformedFile, match="more than the 65536 allowed"):
        load_profile("big", tmp_path)
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00gpu")
    with pytest.raises(MalformedFile, match="not UTF-8"):
        load_profile("bin", tmp_path)


def test_yaml_reads_numbers_but_env_values_are_strings():
    p = validate_profile({"gpu": "L4", "count": 1, "env": {"A": 123, "B": True, "C": 1.5}}, stem="x")
    assert p.env == {"A": "123", "B": "1", "C": "1.5"}


def test_cli_malformed_profile_exits_2_with_one_line(tmp_path, run_cli):
    (tmp_path / "l4x4.yaml").write_text("gpu: L4\ncount: 4\ninterconnect: pcie\nlimit: {}\n")
    rc, out, err = run_cli("profiles", "show", "l4x4", "--profiles-dir", str(tmp_path))
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "l4x4.yaml: limit: unknown key; did you mean 'limits'?" in err


# ---------------------------------------------------------------------------------------------
# profile vs probed hardware
# ---------------------------------------------------------------------------------------------
def _inv(spec):
    from vllm_ops.hardware import parse_gpu_spec

    return parse_gpu_spec(spec)


def test_check_profile_against_probed_hardware():
    l4x4 = load_profile("l4x4")
    assert check_profile_against(l4x4, _inv("4xL4")) == []
    with pytest.raises(BadInput, match=r"profile 'l4x4' \(4x L4\) does not match this machine \(2x H100-SXM\)") as ei:
        check_profile_against(l4x4, _inv("2xH100"))
    assert "--force" in ei.value.one_line()
    (note,) = check_profile_against(l4x4, _inv("2xH100"), force=True)
    assert "--force given" in note
    with pytest.raises(BadInput):
        check_profile_against(l4x4, _inv("2xL4"))        # fewer GPUs than the profile
    (note,) = check_profile_against(load_profile("l4x1"), _inv("4xL4"))
    assert "uses 1 of the 4" in note


def test_no_gpu_is_not_a_disagreement():
    from vllm_ops.hardware.inventory import Inventory, Node

    for inv in (None, Inventory(nodes=(Node(gpus=()),), source="probed")):
        (note,) = check_profile_against(load_profile("h100x8"), inv)
        assert "no GPU on this machine" in note and "h100x8" in note
    (note,) = check_profile_against(load_profile("cpu"), _inv("2xH100"))
    assert "CPU-only" in note


def test_render_cli_refuses_a_profile_that_disagrees_with_the_probe(run_cli, monkeypatch):
    from vllm_ops import hardware
    from vllm_ops.commands import _planargs as plan_cmd

    monkeypatch.setattr(plan_cmd, "gpu_device_present", lambda: True)
    monkeypatch.setattr(hardware, "probe", lambda: _inv("2xH100"))
    args = ("render", "--model", "Qwen/Qwen2.5-Coder-7B-Instruct", "--offline", "--profile", "l4x4", "-f", "k8s")
    rc, out, err = run_cli(*args)
    assert rc == 2 and "does not match this machine (2x H100-SXM)" in err and out == ""
    rc, out, err = run_cli(*args, "--force")
    assert rc == 0 and "kind: Deployment" in out and "--force given" in err


def test_render_cli_without_gpu_says_it_renders_for_the_profile(run_cli, monkeypatch):
    from vllm_ops.commands import _planargs as plan_cmd

    monkeypatch.setattr(plan_cmd, "gpu_device_present", lambda: False)
    rc, out, err = run_cli("render", "--model", "Qwen/Qwen2.5-Coder-7B-Instruct", "--offline",
                           "--profile", "cpu", "-f", "command")
    assert rc == 0, err
    assert "python_bin" in out and "export VLLM_CPU_KVCACHE_SPACE=4" in out
    assert "CPU-only box" in err


# ---------------------------------------------------------------------------------------------
# CLI and import cost
# ---------------------------------------------------------------------------------------------
def test_cli_profiles_list_and_show(run_cli, tmp_path):
    rc, out, err = run_cli("profiles", "list")
    assert rc == 0 and all(n in out for n in REQUIRED)
    rc, out, err = run_cli("profiles", "list", "--json")
    doc = json.loads(out)
    assert doc["count"] == len(doc["profiles"]) >= len(REQUIRED)
    rc, out, err = run_cli("profiles", "show", "h100x8", "--json")
    d = json.loads(out)
    assert (d["gpu"], d["count"], d["interconnect"], d["kind"]) == ("H100-SXM", 8, "nvlink", "gpu")
    rc, out, err = run_cli("profiles", "show", "cpu")
    assert rc == 0 and "VLLM_CPU_KVCACHE_SPACE = 4" in out
    (tmp_path / "box.yaml").write_text(MINI)
    rc, out, err = run_cli("profiles", "list", "--profiles-dir", str(tmp_path))
    assert "[user:" in out
    rc, out, err = run_cli("profiles")
    assert rc == 2 and "missing subcommand" in err


def test_importing_profiles_is_cheap():
    """The plan path imports this module: no yaml, pydantic or jinja2 until a profile is read."""
    code = ("import sys, vllm_ops.profiles; "
            "print(sorted(m for m in ('yaml', 'pydantic', 'jinja2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    code = ("import sys, vllm_ops.profiles as p; p.load_profile('l4x4'); "
            "print(sorted(m for m in ('pydantic', 'jinja2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
