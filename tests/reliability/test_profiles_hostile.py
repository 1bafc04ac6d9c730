"""Malformed and hostile profile YAML through a user profiles directory (`--profiles-dir` and
VLLM_OPS_PROFILES_DIR): every one is a one-line error naming the file, exit 2 — or, when it is
valid after all, the profile plans without a traceback."""
from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tests.reliability.conftest import count_input
from tests.reliability.strategies import FEW, RELIABLE, json_value

GPU = "gpu: L4\ncount: 4\ninterconnect: pcie\n"
BILLION_LAUGHS = "\n".join(
    ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)]) + "\n"

BAD_PROFILES: dict[str, bytes] = {
    "empty": b"",
    "only-comment": b"# nothing\n",
    "billion-laughs": BILLION_LAUGHS.encode(),
    "anchor-merge": b"base: &b {gpu: L4}\nother:\n  <<: *b\n",
    "deep-flow": b"a: " + b"[" * 3000 + b"]" * 3000 + b"\n",
    "deep-block": ("x:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 120))).encode(),
    "oversized": b"description: '" + b"a" * 70_000 + b"'\n",
    "list-doc": b"- gpu: L4\n",
    "scalar-doc": b"42\n",
    "string-doc": b"hello\n",
    "two-docs": (GPU + "---\n" + GPU).encode(),
    "binary": bytes(range(256)) * 4,
    "utf16": GPU.encode("utf-16"),
    "nul-byte": b"gpu: L4\x00\ncount: 1\n",
    "python-tag": b"!!python/object/apply:os.system ['touch /tmp/pwned-vllm-ops']\n",
    "binary-tag": b"gpu: !!binary aGVsbG8=\ncount: 1\n",
    "syntax": b"gpu: [L4\ncount: 1\n",
    "tab-indent": b"gpu: L4\ncount: 1\nenv:\n\tA: b\n",
    "unknown-key": (GPU + "colour: blue\n").encode(),
    "misspelt-key": b"gpu: L4\ncuont: 4\n",
    "gpu-list": b"gpu: [L4]\ncount: 1\n",
    "gpu-unknown": b"gpu: L5\ncount: 1\n",
    "gpu-int": b"gpu: 4\ncount: 1\n",
    "count-str": b"gpu: L4\ncount: four\ninterconnect: pcie\n",
    "count-float": b"gpu: L4\ncount: 4.5\ninterconnect: pcie\n",
    "count-zero": b"gpu: L4\ncount: 0\n",
    "count-neg": b"gpu: L4\ncount: -4\ninterconnect: pcie\n",
    "count-bool": b"gpu: L4\ncount: true\n",
    "missing-count": b"gpu: L4\n",
    "missing-gpu": b"count: 2\ninterconnect: pcie\n",
    "interconnect-bad": b"gpu: L4\ncount: 2\ninterconnect: carrier-pigeon\n",
    "interconnect-none-multi": b"gpu: L4\ncount: 2\ninterconnect: none\n",
    "kind-bad": b"kind: tpu\n",
    "kind-list": b"kind: [gpu]\ngpu: L4\ncount: 1\n",
    "util-zero": (GPU + "vllm_defaults:\n  gpu_memory_utilization: 0\n").encode(),
    "util-1.5": (GPU + "vllm_defaults:\n  gpu_memory_utilization: 1.5\n").encode(),
    "util-neg": (GPU + "vllm_defaults:\n  gpu_memory_utilization: -1\n").encode(),
    "util-nan": (GPU + "vllm_defaults:\n  gpu_memory_utilization: .nan\n").encode(),
    "util-inf": (GPU + "vllm_defaults:\n  gpu_memory_utilization: .inf\n").encode(),
    "util-str": (GPU + "vllm_defaults:\n  gpu_memory_utilization: lots\n").encode(),
    "seqs-neg": (GPU + "vllm_defaults:\n  max_num_seqs: -3\n").encode(),
    "seqs-float": (GPU + "vllm_defaults:\n  max_num_seqs: 2.5\n").encode(),
    "tp-zero": (GPU + "vllm_defaults:\n  tensor_parallel_size: 0\n").encode(),
    "flag-dashes": (GPU + "vllm_defaults:\n  max-num-seqs: 4\n").encode(),
    "flag-misspelt": (GPU + "vllm_defaults:\n  max_num_seq: 4\n").encode(),
    "flag-removed": (GPU + "vllm_defaults:\n  swap_space: 4\n").encode(),
    "flag-api-key": (GPU + "vllm_defaults:\n  api_key: hunter2\n").encode(),
    "flag-mapping": (GPU + "vllm_defaults:\n  dtype: {a: 1}\n").encode(),
    "flag-null": (GPU + "vllm_defaults:\n  dtype: null\n").encode(),
    "flag-newline": (GPU + "vllm_defaults:\n  dtype: \"half\\nrm -rf /\"\n").encode(),
    "defaults-list": (GPU + "vllm_defaults: [1, 2]\n").encode(),
    "limit-inf": (GPU + "limits:\n  max_num_seqs: .inf\n").encode(),
    "limit-str": (GPU + "limits:\n  max_num_seqs: '4'\n").encode(),
    "above-limit": (GPU + "vllm_defaults:\n  max_num_seqs: 512\nlimits:\n  max_num_seqs: 256\n").encode(),
    "env-secret-hf": (GPU + "env:\n  HF_TOKEN: hf_abc\n").encode(),
    "env-secret-key": (GPU + "env:\n  vllm_api_key: sk-abc\n").encode(),
    "env-bad-name": (GPU + "env:\n  1FOO: x\n").encode(),
    "env-space-name": (GPU + "env:\n  'A B': x\n").encode(),
    "env-list": (GPU + "env:\n  FOO: [1]\n").encode(),
    "env-null": (GPU + "env:\n  FOO: null\n").encode(),
    "env-newline": (GPU + "env:\n  FOO: \"a\\nb\"\n").encode(),
    "env-mapping": (GPU + "env: [FOO]\n").encode(),
    "name-mismatch": (GPU + "name: other\n").encode(),
    "name-int": (GPU + "name: 5\n").encode(),
    "name-upper": (GPU + "name: BAD NAME\n").encode(),
    "bool-key": (GPU + "true: x\n").encode(),
    "int-key": (GPU + "5: x\n").encode(),
    "complex-key": (GPU + "? [1, 2]\n: x\n").encode(),
    "date-description": (GPU + "description: 2024-01-01\n").encode(),
    "notes-map": (GPU + "notes: {a: 1}\n").encode(),
    "notes-int": (GPU + "notes: [1]\n").encode(),
    "cpu-in-gpu": (GPU + "cpu:\n  kv_cache_space_gib: 1\n").encode(),
    "cpu-missing-kv": b"kind: cpu\ncpu: {}\n",
    "cpu-kv-zero": b"kind: cpu\ncpu:\n  kv_cache_space_gib: 0\n",
    "cpu-kv-nan": b"kind: cpu\ncpu:\n  kv_cache_space_gib: .nan\n",
    "cpu-kv-str": b"kind: cpu\ncpu:\n  kv_cache_space_gib: '4'\n",
    "cpu-kv-over-ram": b"kind: cpu\ncpu:\n  kv_cache_space_gib: 8\n  ram_gib: 4\n",
    "cpu-with-gpu": b"kind: cpu\ngpu: L4\ncpu:\n  kv_cache_space_gib: 1\n",
    "cpu-interconnect": b"kind: cpu\ninterconnect: nvlink\ncpu:\n  kv_cache_space_gib: 1\n",
    "cpu-list": b"kind: cpu\ncpu: [1]\n",
    "cpu-threads-zero": b"kind: cpu\ncpu:\n  kv_cache_space_gib: 1\n  threads: 0\n",
}


def _write(dirpath, name: str, data: bytes):
    p = dirpath / f"{name}.yaml"
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("name", sorted(BAD_PROFILES))
def test_bad_profile_is_one_line_exit_2(name, tmp_path, check_cli):
    d = tmp_path / "profiles"
    d.mkdir()
    _write(d, name, BAD_PROFILES[name])
    rc, out, err = check_cli("profiles", "show", name, "--profiles-dir", str(d), "--json",
                             category="profile-yaml")
    assert f"{name}.yaml" in err               # names the file
    assert out == ""
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("name", ["billion-laughs", "python-tag", "util-nan", "count-zero", "env-secret-hf",
                                  "binary", "two-docs"])
def test_bad_profile_via_env_var_in_plan_and_render(name, tmp_path, monkeypatch, check_cli):
    d = tmp_path / "profiles"
    d.mkdir()
    _write(d, name, BAD_PROFILES[name])
    monkeypatch.setenv("VLLM_OPS_PROFILES_DIR", str(d))
    check_cli("plan", "--profile", name, "--json", category="profile-yaml")
    check_cli("render", "--model", "Qwen/Qwen2.5-Coder-7B-Instruct", "--profile", name, category="profile-yaml")
    # a listing with one malformed file is still a one-line error, not a traceback
    check_cli("profiles", "list", "--json", category="profile-yaml")


def test_profiles_dir_that_is_not_a_directory(tmp_path, check_cli):
    f = tmp_path / "file"
    f.write_text("x")
    check_cli("profiles", "list", "--profiles-dir", str(f), category="profile-yaml")
    check_cli("profiles", "list", "--profiles-dir", str(tmp_path / "missing"), category="profile-yaml")


def test_unreadable_profile_file(tmp_path, check_cli):
    import os

    d = tmp_path / "profiles"
    d.mkdir()
    (d / "dir.yaml").mkdir()                          # a directory named like a profile: ignored
    link = d / "loop.yaml"
    link.symlink_to(d / "loop.yaml")                  # a symlink loop
    rc, _, _ = check_cli("profiles", "show", "loop", "--profiles-dir", str(d), expect=(2,),
                         category="profile-yaml")
    if os.geteuid() != 0:                             # root reads through chmod 000
        p = _write(d, "secret", b"gpu: L4\ncount: 1\n")
        p.chmod(0)
        check_cli("profiles", "show", "secret", "--profiles-dir", str(d), category="profile-yaml")


# ---- generated: random YAML documents built from the profile's own keys and any values ----------
KEYS = ["name", "description", "kind", "gpu", "count", "interconnect", "vllm_defaults", "limits",
        "env", "notes", "cpu", "bogus"]
FLAGS = ["gpu_memory_utilization", "max_model_len", "max_num_seqs", "tensor_parallel_size", "dtype",
         "enforce_eager", "kv_cache_dtype", "swap_space", "max-num-seqs", "new_flag"]
value = st.one_of(json_value, st.sampled_from(["L4", "H100-SXM", "cpu", "gpu", "pcie", "nvlink", "none"]),
                  st.dictionaries(st.sampled_from(FLAGS + ["kv_cache_space_gib", "threads", "ram_gib", "HF_TOKEN",
                                                          "FOO"]), json_value, max_size=4))
doc = st.dictionaries(st.sampled_from(KEYS), value, max_size=7)


@RELIABLE
@given(doc=doc)
def test_generated_profile_documents(doc, tmp_path_factory, run_cli):
    from tests.reliability.conftest import assert_one_line_error

    d = tmp_path_factory.mktemp("gen")
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        return
    (d / "gen.yaml").write_text(text, encoding="utf-8")
    count_input("profile-yaml-generated", key=text)
    rc, out, err = run_cli("profiles", "show", "gen", "--profiles-dir", str(d), "--json")
    # an unknown top-level key, a name other than the file's, or vllm_defaults/env/cpu that is not
    # a mapping is refused (exit 2); other documents may be valid profiles
    assert_one_line_error(rc, err, (2,) if _surely_bad(doc) else (0, 2), what=text[:200])
    if rc == 0:
        rc, out, err = run_cli("render", "--model", "Qwen/Qwen2.5-Coder-7B-Instruct", "--profile", "gen",
                               "--profiles-dir", str(d), "--format", "command")
        assert_one_line_error(rc, err, (0, 2), what="render " + text[:200])


def _surely_bad(doc: dict) -> bool:
    return ("bogus" in doc or ("name" in doc and doc["name"] != "gen")
            or any(k in doc and not isinstance(doc[k], dict) for k in ("vllm_defaults", "env", "cpu")))


@FEW
@given(data=st.binary(min_size=0, max_size=400))
def test_generated_binary_profiles(data, tmp_path_factory, run_cli):
    from tests.reliability.conftest import assert_one_line_error

    d = tmp_path_factory.mktemp("bin")
    (d / "bin.yaml").write_bytes(data)
    count_input("profile-binary-generated", key=data)
    rc, out, err = run_cli("profiles", "show", "bin", "--profiles-dir", str(d))
    try:
        doc = yaml.safe_load(data)
    except (yaml.YAMLError, ValueError):
        doc = None
    # only bytes that are a YAML mapping can be a profile; anything else is exit 2
    assert_one_line_error(rc, err, (0, 2) if isinstance(doc, dict) else (2,), what=repr(data[:80]))


# ---- known problems (tracked, see docs/engineering-notes/reliability.md) --------------------------------------
def test_profile_count_above_spec_limit_is_refused_at_load(tmp_path, check_cli):
    d = tmp_path / "p"
    d.mkdir()
    _write(d, "huge", b"gpu: L4\ncount: 99999999999999999999\ninterconnect: pcie\n")
    check_cli("profiles", "show", "huge", "--profiles-dir", str(d), category="profile-yaml")


def test_plan_accepts_profiles_dir(tmp_path, run_cli, monkeypatch):
    """`plan --profiles-dir` (bug 14): the flag exists since the planning flags were shared
    (commands/_planargs.add_plan_arguments) and choose_hardware passes it to load_profile. The
    test used to be flaky because its result depended on the machine, not on test order: on a box
    with an NVIDIA device the probed GPUs disagree with the 1xL4 profile (exit 2 without --force).
    Pinned here: no GPU (hermetic), then a disagreeing probe with --force."""
    from vllm_ops import hardware
    from vllm_ops.commands import _planargs
    from vllm_ops.hardware import parse_gpu_spec

    d = tmp_path / "p"
    d.mkdir()
    _write(d, "mine", b"gpu: L4\ncount: 1\n")
    other = tmp_path / "other"
    other.mkdir()
    _write(other, "mine", b"gpu: L4\ncount: 2\ninterconnect: pcie\n")
    monkeypatch.setenv("VLLM_OPS_PROFILES_DIR", str(other))   # the flag wins over the variable
    monkeypatch.setattr(_planargs, "gpu_device_present", lambda: False)
    count_input("cli")
    rc, out, err = run_cli("plan", "--profile", "mine", "--profiles-dir", str(d), "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["profile"] == "mine" and doc["hardware"]["gpu_count"] == 1
    monkeypatch.setattr(_planargs, "gpu_device_present", lambda: True)
    monkeypatch.setattr(hardware, "probe", lambda: parse_gpu_spec("2xH100"))
    rc, out, err = run_cli("plan", "--profile", "mine", "--profiles-dir", str(d), "--json")
    assert rc == 2 and "does not match this machine" in err
    rc, out, err = run_cli("plan", "--profile", "mine", "--profiles-dir", str(d), "--json", "--force")
    assert rc == 0 and json.loads(out)["hardware"]["gpu_count"] == 1