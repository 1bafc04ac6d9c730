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


# ------------------------------------ no usable state: the environment marker (VLLM_OPS_DEPLOYMENT)
def _marked_group(state, name="x"):
    """A process group started the way ProcessBackend starts vLLM (new session, marker env), with
    its state file written: (deployment, the unique command-line marker of its processes)."""
    from vllm_ops.launch.backend import LaunchSpec, ProcessBackend
    from vllm_ops.launch.state import StateStore

    marker = f"rel-orphan-{uuid.uuid4().hex[:8]}"
    store = StateStore(state)
    spec = LaunchSpec(name=name, argv=["bash", "-c", f"exec -a {marker} sleep 120 & exec -a {marker} sleep 120 & wait"],
                      env_added={}, log_path=store.log_path(name), port=8000, host="127.0.0.1", served_name="m",
                      model_id="m", state_dir=str(state))
    dep = ProcessBackend().start(spec)
    store.save(dep)
    deadline = time.monotonic() + 5
    while len(processes_with(marker)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return dep, marker


def _wait_gone(marker, timeout=15.0):
    deadline = time.monotonic() + timeout
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    return processes_with(marker)


@pytest.mark.parametrize("damage", ["rm-rf", "truncated", "emptied"])
def test_no_usable_state_status_shows_orphan_and_stop_stops_it(damage, state):
    count_fault("state-deleted" if damage == "rm-rf" else "state-corrupt")
    dep, marker = _marked_group(state)
    try:
        f = state / "deployments" / "x.json"
        if damage == "rm-rf":
            shutil.rmtree(state)
        else:
            f.write_text(f.read_text()[:30] if damage == "truncated" else "")
        p = _cli_subprocess(state, "status", "--json")
        assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
        (row,) = json.loads(p.stdout)["deployments"]
        assert row["alive"] is True and dep.pgid in row["pgids"], row
        assert row["status"] == ("orphaned" if damage == "rm-rf" else "unreadable"), row
        p = _cli_subprocess(state, "stop", "x", "--grace", "5")
        assert_one_line_error(p.returncode, p.stderr, (0,), what=f"stop after {damage}")
        assert "marker" in p.stderr
        assert _wait_gone(marker) == [], "stop left the orphaned group running"
        p = _cli_subprocess(state, "status", "--json")
        assert json.loads(p.stdout)["deployments"] == []
    finally:
        for pid, _ in processes_with(marker):
            os.kill(pid, 9)


@pytest.mark.parametrize("bad", [{"started_at": "yesterday"}, {"port": "8000"}, {"log_path": 5},
                                 {"started_at": None, "port": [1], "log_path": ""}])
def test_bad_nonessential_field_stop_still_stops(bad, state):
    """Observation 2: a wrong type in a field stop does not need: status says corrupted (and alive),
    stop warns, acts through the valid pid/pgid/start ticks, and the group is gone."""
    count_fault("state-corrupt")
    dep, marker = _marked_group(state)
    try:
        f = state / "deployments" / "x.json"
        d = json.loads(f.read_text())
        d.update(bad)
        f.write_text(json.dumps(d))
        p = _cli_subprocess(state, "status", "--json")
        (row,) = json.loads(p.stdout)["deployments"]
        assert row["status"] == "corrupted" and row["alive"] is True and row["broken_fields"] == sorted(bad), row
        p = _cli_subprocess(state, "stop", "x", "--grace", "5")
        assert_one_line_error(p.returncode, p.stderr, (0,), what=f"stop with {bad}")
        assert "partly corrupted" in p.stderr and ", ".join(sorted(bad)) in p.stderr
        assert _wait_gone(marker) == []
        assert not f.exists()
    finally:
        for pid, _ in processes_with(marker):
            os.kill(pid, 9)


def test_marker_of_another_state_dir_or_an_untrusted_view_is_never_signalled(state, tmp_path):
    """A marked group of another state directory is not listed and not stopped (not even by
    --all); a partly corrupted file without start ticks is never stopped through."""
    count_fault("state-wrong-pid", 2)
    other = tmp_path / "other-state"
    dep, marker = _marked_group(other)
    try:
        for argv in (("stop", "x"), ("stop", "--all")):
            p = _cli_subprocess(state, *argv, "--grace", "1")
            assert_one_line_error(p.returncode, p.stderr, (0, 1), what=str(argv))
        p = _cli_subprocess(state, "status", "--json")
        assert json.loads(p.stdout)["deployments"] == []
        assert len(processes_with(marker)) >= 2, "stop signalled a group of another state dir"
        # our state dir, a partly corrupted file (bad port) whose pid/pgid name a live group
        # vllm-ops never started and that records no start ticks: never trusted, nothing signalled
        victim_mark = f"rel-victim-{uuid.uuid4().hex[:8]}"
        victim = subprocess.Popen(["bash", "-c", f"exec -a {victim_mark} sleep 120"], start_new_session=True)
        try:
            time.sleep(0.3)
            _write_state(state, json.dumps(_dep(state, pid=victim.pid, pgid=victim.pid, port="x")))
            p = _cli_subprocess(state, "stop", "x", "--grace", "1")
            assert_one_line_error(p.returncode, p.stderr, (2,), what="stop, no ticks, bad port")
            assert "pid_start_ticks" in p.stderr
            assert victim.poll() is None, "stop killed a process vllm-ops never started"
        finally:
            victim.kill()
            victim.wait(5)
        assert len(processes_with(marker)) >= 2
    finally:
        for pid, _ in processes_with(marker):
            os.kill(pid, 9)
