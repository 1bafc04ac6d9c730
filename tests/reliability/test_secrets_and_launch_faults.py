"""Secrets set through the environment (VLLM_API_KEY, HF_TOKEN, unique sentinels) never appear in
argv (/proc/<pid>/cmdline of the launched process tree), the deployment log, state files, rendered
files or `--json` output; launch faults (port taken, server killed) leave no orphan and a clear
`status`/`stop`. The server here is the unit suite's small fake vLLM (a real HTTP server process);
the real vLLM CPU server is not started by this module (see docs/engineering-notes/reliability.md)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.reliability.conftest import (assert_one_line_error, count_fault, count_input, kill_marker_processes,
                                        processes_with, wait_no_processes)
from vllm_ops.errors import RuntimeFailure
from vllm_ops.launch.launcher import LaunchOptions, launch
from vllm_ops.launch.lifecycle import stop
from vllm_ops.launch.locate import VllmCommand
from vllm_ops.launch.state import StateStore

API_KEY = "sk-SENTINEL-api-" + uuid.uuid4().hex[:12]
HF_TOKEN = "hf_SENTINEL_tok_" + uuid.uuid4().hex[:12]
REPO = Path(__file__).resolve().parents[2]


def _no_secret(text: str, where: str) -> None:
    assert API_KEY not in text, f"VLLM_API_KEY leaked into {where}"
    assert HF_TOKEN not in text, f"HF_TOKEN leaked into {where}"


@pytest.fixture
def marker():
    m = f"relmark{uuid.uuid4().hex[:10]}"
    yield m
    kill_marker_processes(m)


@pytest.fixture
def fake(tmp_path, marker):
    from tests.unit.test_launch import FAKE_VLLM

    script = tmp_path / f"fake_vllm_{marker}.py"        # the marker rides in every process's argv
    script.write_text(FAKE_VLLM)
    return VllmCommand((sys.executable, str(script)), "module", python=sys.executable)


def _plan(port: int):
    from tests.unit.test_launch import _plan as unit_plan

    return unit_plan(port=port)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tree_cmdlines(pgid: int) -> list[str]:
    from vllm_ops.launch import procs

    out = []
    for pid in procs.group_members(pgid):
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace"))
        except OSError:
            pass
    return out


def test_secrets_never_in_argv_logs_state_or_json(tmp_path, fake, marker, run_cli, monkeypatch):
    import vllm_ops.validate
    from vllm_ops.validate.report import CheckResult, ValidationReport

    monkeypatch.setattr(vllm_ops.validate, "run_validation",
                        lambda url, model, **kw: ValidationReport(url=url, model=model,
                                                                  checks=[CheckResult("chat", "pass")]),
                        raising=False)
    count_input("secret-sentinel", 2)
    store = StateStore(tmp_path / "state")
    opts = LaunchOptions(vllm=fake, vllm_version="0.32.0", port=_free_port(), store=store, host="127.0.0.1",
                         ready_timeout=30, env={"VLLM_API_KEY": API_KEY, "HF_TOKEN": HF_TOKEN},
                         extra_args=["--api-key", API_KEY])         # even given as a flag it must leave argv
    result = launch(_plan(opts.port), opts)
    dep = result.deployment
    try:
        cmdlines = _tree_cmdlines(dep.pgid)
        assert cmdlines and any(marker in c for c in cmdlines)
        for c in cmdlines:
            _no_secret(c, "/proc/<pid>/cmdline")
        env = Path(f"/proc/{dep.pid}/environ").read_bytes()
        assert API_KEY.encode() in env                    # it did reach vLLM, through its environment
        _no_secret(Path(dep.log_path).read_text(errors="replace"), "the deployment log")
        for f in store.root.rglob("*"):
            if f.is_file():
                _no_secret(f.read_text(errors="replace"), str(f))
        monkeypatch.setenv("VLLM_OPS_STATE_DIR", str(store.root))
        rc, out, err = run_cli("status", "--json")
        assert rc == 0 and json.loads(out)["deployments"][0]["alive"] is True
        _no_secret(out + err, "status --json")
        rc, out, err = run_cli("logs", dep.name, "-n", "500")
        _no_secret(out + err, "logs")
    finally:
        stop(dep, store, opts.backend, grace=5)
    assert wait_no_processes(marker) == []


def test_secrets_never_in_plan_or_render_json(tmp_path, run_cli, monkeypatch):
    count_input("secret-sentinel", 2)
    monkeypatch.setenv("VLLM_API_KEY", API_KEY)
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    rc, out, err = run_cli("plan", "--gpus", "1xL4", "--json")
    assert rc in (0, 3)
    _no_secret(out + err, "plan --json")
    for fmt in ("command", "compose", "systemd", "k8s", "ray"):
        rc, out, err = run_cli("render", "--model", "Qwen/Qwen2.5-Coder-7B-Instruct", "--gpus", "1xL4",
                               "--format", fmt, "--json")
        assert rc == 0, err
        _no_secret(out + err, f"render {fmt} --json")
    rc, out, err = run_cli("render", "--model", "Qwen/Qwen2.5-Coder-7B-Instruct", "--profile", "l4x1",
                           "--format", "all", "--output", str(tmp_path / "out"))
    assert rc == 0, err
    for f in (tmp_path / "out").rglob("*"):
        _no_secret(f.read_text(), f"rendered {f.name}")


@pytest.mark.parametrize("where", ["env", "pin", "pin-eq", "hf-token"])
def test_secret_given_on_the_plan_command_line_is_refused_or_redacted(where, run_cli, tmp_path):
    """A secret given to `plan` (``--env VLLM_API_KEY=K``, ``-- --api-key K``) never reaches the
    plan document: only its name is kept, in ``env_secrets``, with a warning; a saved plan renders
    without it (the env file lists the name)."""
    count_input("secret-sentinel")
    argv, name = {
        "env": (["--env", f"VLLM_API_KEY={API_KEY}"], "VLLM_API_KEY"),
        "pin": (["--", "--api-key", API_KEY], "VLLM_API_KEY"),
        "pin-eq": (["--", f"--api-key={API_KEY}", "--enable-log-requests"], "VLLM_API_KEY"),
        "hf-token": (["--", "--hf-token", HF_TOKEN], "HF_TOKEN"),
    }[where]
    rc, out, err = run_cli("plan", "--gpus", "1xL4", "--json", *argv)
    assert "Traceback" not in err
    assert rc in (0, 3), err
    _no_secret(out + err, "plan --json")
    doc = json.loads(out)
    assert doc["env_secrets"] == [name]
    assert name not in doc["env"] and "--api-key" not in doc["command"] and "--api-key" not in doc["extra_args"]
    assert any(w["code"] == "secret-not-kept" for w in doc["warnings"])
    if where == "pin-eq":
        assert doc["extra_args"] == ["--enable-log-requests"]
    saved = tmp_path / "plan.json"
    saved.write_text(out)
    rc, out, err = run_cli("render", "--plan", str(saved), "--format", "all", "--json")
    assert rc == 0, err
    _no_secret(out + err, "render --plan")
    assert f"{name}=" in json.loads(out)["contents"]["vllm.env"]


def test_port_taken_between_plan_and_start(tmp_path, fake, marker):
    count_fault("port-taken")
    port = _free_port()
    plan = _plan(port)                                   # planned while free ...
    with socket.socket() as s:                           # ... taken before the start
        s.bind(("0.0.0.0", port))
        s.listen()
        with pytest.raises(RuntimeFailure, match="in use"):
            launch(plan, LaunchOptions(vllm=fake, port=port, store=StateStore(tmp_path / "st")))
    assert processes_with(marker) == []
    assert StateStore(tmp_path / "st").names() == []


def test_server_killed_mid_request_then_status_and_stop(tmp_path, fake, marker, run_cli, monkeypatch):
    import vllm_ops.validate
    from vllm_ops.client import VLLMConnectionError, VLLMProvider
    from vllm_ops.validate.report import CheckResult, ValidationReport
    from tests.support.slow_proxy import SlowProxy

    monkeypatch.setattr(vllm_ops.validate, "run_validation",
                        lambda url, model, **kw: ValidationReport(url=url, model=model,
                                                                  checks=[CheckResult("chat", "pass")]),
                        raising=False)
    count_fault("server-killed-mid-request")
    store = StateStore(tmp_path / "state")
    monkeypatch.setenv("VLLM_OPS_STATE_DIR", str(store.root))
    opts = LaunchOptions(vllm=fake, vllm_version="0.32.0", port=_free_port(), store=store, host="127.0.0.1",
                         ready_timeout=30)
    dep = launch(_plan(opts.port), opts).deployment
    try:
        with SlowProxy("127.0.0.1", dep.port, delay=2.0) as proxy, \
                VLLMProvider(proxy.base_url, model="tiny", max_retries=0, timeout=20) as llm:
            import threading

            def die():      # the server and every connection to it die while the answer is in flight
                os.killpg(dep.pgid, signal.SIGKILL)
                proxy.kill()

            threading.Timer(0.5, die).start()
            t = time.monotonic()
            with pytest.raises(VLLMConnectionError):
                llm.generate("hi", max_tokens=2)
            assert time.monotonic() - t < 10
        assert wait_no_processes(marker) == []
        rc, out, err = run_cli("status", "--json")
        row = json.loads(out)["deployments"][0]
        assert rc == 0 and row["alive"] is False
        rc, out, err = run_cli("stop", dep.name, "--grace", "1")
        assert_one_line_error(rc, err, (0,), what="stop after kill")
        rc, out, err = run_cli("status", "--json")
        assert json.loads(out)["deployments"] == []
    finally:
        stop(dep, store, opts.backend, grace=2)
    assert processes_with(marker) == []


def test_server_dies_mid_start_leaves_nothing(tmp_path, fake, marker, monkeypatch):
    """vLLM killed while it is starting: launch reports it in one line, no process is left."""
    count_fault("server-killed-mid-start")
    from vllm_ops.launch.launcher import LaunchFailed

    store = StateStore(tmp_path / "state")
    opts = LaunchOptions(vllm=fake, vllm_version="0.32.0", port=_free_port(), store=store, host="127.0.0.1",
                         ready_timeout=30)

    def killer():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            procs = processes_with(marker)
            if procs:
                for pid, _ in procs:
                    os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.02)

    import threading

    threading.Thread(target=killer, daemon=True).start()
    t = time.monotonic()
    with pytest.raises((LaunchFailed, RuntimeFailure)) as ei:
        launch(_plan(opts.port), opts)
    assert time.monotonic() - t < 30
    assert "\n" not in ei.value.one_line()
    assert wait_no_processes(marker) == []


def test_open_bind_without_api_key_warns(tmp_path, fake, marker, capsys, monkeypatch):
    import vllm_ops.validate
    from vllm_ops.validate.report import CheckResult, ValidationReport

    monkeypatch.setattr(vllm_ops.validate, "run_validation",
                        lambda url, model, **kw: ValidationReport(url=url, model=model,
                                                                  checks=[CheckResult("chat", "pass")]),
                        raising=False)
    count_input("open-bind")
    store = StateStore(tmp_path / "state")
    opts = LaunchOptions(vllm=fake, vllm_version="0.32.0", port=_free_port(), store=store, host="0.0.0.0",
                         ready_timeout=30)
    dep = launch(_plan(opts.port), opts).deployment
    try:
        err = capsys.readouterr().err.lower()
    finally:
        stop(dep, store, opts.backend, grace=2)
    assert "api key" in err or "api_key" in err


# ---- the CLI as a subprocess: exactly one stderr line, no traceback, no hang ----------------------
SUBPROCESS_CASES = [
    (["plan", "-m", "Qwen/Qwen2.5-Coder-7B-Instruct", "--gpus", "4xL5"], 2),
    (["plan", "-m", "Qwen/Qwen2.5-Coder-7B-Instruct", "--gpus", "4xL4", "--gpu-memory-utilization", "nan"], 2),
    (["plan", "-m", "Qwen/Qwen2.5-Coder-7B-Instruct", "--gpus", "4xL4", "--tensor-parallel-size", "3"], 2),
    (["plan", "--gpus", "1xT4", "--model", "Qwen/Qwen2.5-Coder-7B-Instruct", "--max-model-len", "32768"], 3),
    (["models", "show", "no/such-model"], 2),
    (["profiles", "show", "nosuch"], 2),
    (["render", "--model", "Qwen/Qwen2.5-Coder-7B-Instruct", "--gpus", "1xL4", "--format", "pdf"], 2),
    (["status", "nosuch"], 1),
    (["stop", "nosuch"], 1),
    (["nosuchcommand"], 2),
]


@pytest.mark.parametrize("argv,code", SUBPROCESS_CASES, ids=[" ".join(a)[:40] for a, _ in SUBPROCESS_CASES])
def test_cli_subprocess_one_line(argv, code, tmp_path):
    count_input("cli-subprocess")
    env = dict(os.environ, HF_HUB_OFFLINE="1", VLLM_OPS_STATE_DIR=str(tmp_path / "state"))
    env.pop("VLLM_OPS_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "vllm_ops", *argv], capture_output=True, text=True, env=env,
                       cwd=REPO, timeout=60)
    assert "Traceback" not in p.stderr
    assert p.returncode == code, p.stderr
    if code != 3:
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("vllm-ops: error: "), p.stderr


def test_cli_subprocess_hostile_profile_dir(tmp_path):
    from tests.reliability.test_profiles_hostile import BAD_PROFILES

    d = tmp_path / "p"
    d.mkdir()
    env = dict(os.environ, HF_HUB_OFFLINE="1", VLLM_OPS_PROFILES_DIR=str(d))
    for name in ("billion-laughs", "binary", "python-tag", "deep-flow"):
        count_input("cli-subprocess")
        (d / f"{name}.yaml").write_bytes(BAD_PROFILES[name])
        p = subprocess.run([sys.executable, "-m", "vllm_ops", "plan", "--profile", name], capture_output=True,
                           text=True, env=env, cwd=REPO, timeout=60)
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
        (d / f"{name}.yaml").unlink()
