"""The state directory deleted, corrupted or pointing at the wrong processes: `status`, `logs` and
`stop` still give one clear line (no traceback) and never signal a process vllm-ops did not start."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from tests.reliability.conftest import assert_one_line_error, count_fault, processes_with

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _never_a_pid() -> int:
    """Above pid_max: no process can have it, so a stop through it can never hit anything."""
    try:
        return int(open("/proc/sys/kernel/pid_max").read()) + 1000
    except OSError:
        return 2**22 + 1000


def _dep(state, **kw):
    dead = _never_a_pid()
    d = {"name": "x", "pid": dead, "pgid": dead, "port": 8000, "host": "127.0.0.1", "served_name": "m",
         "model_id": "m", "log_path": str(state / "logs" / "x.log"), "started_at": time.time()}
    d.update(kw)
    return d


def _cli_subprocess(state, *argv, timeout=60):
    env = dict(os.environ, VLLM_OPS_STATE_DIR=str(state), HF_HUB_OFFLINE="1")
    # its own session: a stop that signals "its own process group" cannot reach pytest
    return subprocess.run([sys.executable, "-m", "vllm_ops", *argv], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=timeout, start_new_session=True)


def _write_state(state, text: str | bytes, name="x"):
    (state / "deployments").mkdir(parents=True, exist_ok=True)
    data = text if isinstance(text, bytes) else text.encode()
    (state / "deployments" / f"{name}.json").write_bytes(data)


@pytest.fixture
def state(tmp_path):
    return tmp_path / "state"          # = VLLM_OPS_STATE_DIR (conftest)


def test_no_state_dir_at_all(state, run_cli):
    count_fault("state-missing")
    rc, out, err = run_cli("status", "--json")
    assert rc == 0 and json.loads(out)["deployments"] == []
    for argv in (("status", "x"), ("logs", "x"), ("stop", "x"), ("logs",), ("stop",)):
        rc, out, err = run_cli(*argv)
        assert_one_line_error(rc, err, (1,), what=str(argv))
    rc, out, err = run_cli("stop", "--all")
    assert rc == 0


def test_state_dir_is_a_file(state, run_cli):
    count_fault("state-corrupt")
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text("not a directory")
    for argv in (("status",), ("status", "x"), ("stop", "x"), ("logs", "x")):
        rc, out, err = run_cli(*argv)
        assert_one_line_error(rc, err, (0, 1, 2), what=str(argv))


CORRUPT = {
    "empty": "", "truncated": '{"name": "x", "pid": 1', "garbage": "\x00\x01garbage",
    "missing-fields": json.dumps({"name": "x"}), "port-string": None, "start-string": None,
    "unknown-fields": None, "log-missing": None,
}


@pytest.mark.parametrize("kind", sorted(CORRUPT))
def test_corrupted_state_file(kind, state, run_cli):
    count_fault("state-corrupt")
    text = CORRUPT[kind]
    if kind == "port-string":
        text = json.dumps(_dep(state, port="x"))
    elif kind == "start-string":
        text = json.dumps(_dep(state, started_at="yesterday"))
    elif kind == "unknown-fields":
        text = json.dumps(dict(_dep(state), evil="$(id)"))
    elif kind == "log-missing":
        text = json.dumps(_dep(state, log_path=str(state / "nope.log")))
    _write_state(state, text)
    rc, out, err = run_cli("status", "--json")
    assert_one_line_error(rc, err, (0,), what="status")
    rows = json.loads(out)["deployments"]
    assert [r["name"] for r in rows] == ["x"]
    for argv in (("status", "x"), ("logs", "x"), ("stop", "x", "--grace", "1")):
        rc, out, err = run_cli(*argv)
        assert_one_line_error(rc, err, (0, 1, 2), what=f"{kind}: {argv}")


def test_state_deleted_while_listed(state, run_cli):
    count_fault("state-deleted")
    _write_state(state, json.dumps(_dep(state)))
    shutil.rmtree(state)
    rc, out, err = run_cli("stop", "x")
    assert_one_line_error(rc, err, (1,), what="stop after rm -rf state")
    rc, out, err = run_cli("status")
    assert rc == 0


@pytest.mark.parametrize("text", [b"[1, 2]", b"null", b'"x"', b"\xff\xfe"])
def test_state_file_not_an_object(text, state, run_cli):
    count_fault("state-corrupt")
    _write_state(state, text)
    rc, out, err = run_cli("status", "--json")
    assert_one_line_error(rc, err, (0,), what="status")


@pytest.mark.parametrize("pid", ["abc", 2**70, 1.5])
def test_state_file_bad_pid(pid, state, run_cli):
    count_fault("state-corrupt")
    _write_state(state, json.dumps(_dep(state, pid=pid, pgid=pid)))
    rc, out, err = run_cli("status", "--json")
    assert_one_line_error(rc, err, (0,), what="status")
    rc, out, err = run_cli("stop", "x", "--grace", "1")
    assert_one_line_error(rc, err, (0, 2), what="stop")


@pytest.mark.parametrize("log_path", ["/", 5])
def test_state_file_bad_log_path(log_path, state):
    # in a subprocess: an integer log_path makes `logs` read and close that file descriptor
    count_fault("state-corrupt")
    _write_state(state, json.dumps(_dep(state, log_path=log_path)))
    p = _cli_subprocess(state, "logs", "x")
    assert_one_line_error(p.returncode, p.stderr, (1, 2), what="logs")
    assert "DEBUG" not in p.stderr


def test_stop_with_pgid_zero_does_not_kill_itself(state):
    count_fault("state-wrong-pid")
    _write_state(state, json.dumps(_dep(state, pid=0, pgid=0)))
    p = _cli_subprocess(state, "stop", "x", "--grace", "1")
    assert p.returncode in (0, 1, 2), f"vllm-ops stop died by signal {-p.returncode}"


def test_stop_never_kills_a_reused_pid(state):
    count_fault("state-wrong-pid")
    marker = f"rel-victim-{uuid.uuid4().hex[:8]}"
    victim = subprocess.Popen(["bash", "-c", f"exec -a {marker} sleep 120"], start_new_session=True)
    try:
        time.sleep(0.3)
        _write_state(state, json.dumps(_dep(state, pid=victim.pid, pgid=victim.pid, pid_start_ticks=1)))
        p = _cli_subprocess(state, "status", "x")
        assert "exited" in p.stderr                    # status knows it is not our process
        p = _cli_subprocess(state, "stop", "x", "--grace", "1")
        assert_one_line_error(p.returncode, p.stderr, (0, 1), what="stop")
        assert victim.poll() is None, "stop killed a process vllm-ops never started"
    finally:
        victim.kill()
        victim.wait(5)
        assert not processes_with(marker)
