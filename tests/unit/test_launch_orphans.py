"""Deployments whose state is gone or partly corrupted: the environment marker ProcessBackend puts
on vLLM (``VLLM_OPS_DEPLOYMENT`` / ``VLLM_OPS_STATE_DIR``), the /proc scan that finds it again,
and the minimal state-file view `stop` acts through. Processes here are plain ``sleep`` groups."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from tests.unit.test_launch import _plan
from vllm_ops.errors import BadInput, MalformedFile
from vllm_ops.launch import procs
from vllm_ops.launch.backend import LaunchSpec, ProcessBackend
from vllm_ops.launch.launcher import LaunchOptions, launch
from vllm_ops.launch.locate import VllmCommand
from vllm_ops.launch.state import Deployment, StateStore, stop_view

GROUP = ["bash", "-c", "sleep 60 & sleep 60 & wait"]


def _start(store: StateStore, name: str, argv=GROUP) -> tuple[ProcessBackend, Deployment]:
    spec = LaunchSpec(name=name, argv=list(argv), env_added={}, log_path=store.log_path(name), port=8000,
                      host="127.0.0.1", served_name="m", model_id="m", state_dir=str(store.root))
    backend = ProcessBackend()
    dep = backend.start(spec)
    store.save(dep)
    deadline = time.monotonic() + 5
    while len(procs.group_members(dep.pgid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    return backend, dep


@pytest.fixture
def cleanup():
    started: list[Deployment] = []
    yield started
    for dep in started:
        procs.stop_group(dep.pgid, grace=1, min_ticks=dep.pid_start_ticks)


def _gone(pgid: int, ticks: int | None, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while procs.group_members(pgid, ticks) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not procs.group_members(pgid, ticks)


# ------------------------------------------------------------------------ the marker
def test_process_backend_marks_vllm_and_the_scan_finds_the_group(tmp_path, cleanup):
    store = StateStore(tmp_path / "state")
    backend, dep = _start(store, "a")
    cleanup.append(dep)
    assert procs.read_marker(dep.pid) == ("a", os.path.abspath(store.root))
    assert "VLLM_OPS_DEPLOYMENT" not in dep.env            # not recorded as a variable the user added
    deadline = time.monotonic() + 5.0                     # bash forks its two children after it starts
    while True:
        (g,) = procs.marked_groups(store.root, "a")
        if len(g.members) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert g.pgid == dep.pgid and g.leader_ticks == dep.pid_start_ticks
    assert len(g.members) >= 3 and dep.pid in g.pids      # the children inherit the marker
    assert g.argv[:2] == ["bash", "-c"]
    assert procs.marked_groups(store.root, "b") == []
    assert procs.marked_groups(tmp_path / "other-state") == []   # another state dir: not ours
    assert procs.marked_groups(str(store.root) + "/", "a")       # the same dir, spelled otherwise
    backend.stop(dep, grace=5)
    assert procs.marked_groups(store.root) == []


def test_stop_marked_rechecks_the_leader(tmp_path, cleanup):
    store = StateStore(tmp_path / "state")
    _, dep = _start(store, "a")
    cleanup.append(dep)
    (g,) = procs.marked_groups(store.root, "a")
    stale = procs.MarkedGroup(g.name, g.state_dir, g.pgid, (g.leader_ticks or 0) + 1, g.members)
    assert procs.stop_marked(stale, grace=1) is False          # start ticks differ: nothing signalled
    other = procs.MarkedGroup("b", g.state_dir, g.pgid, g.leader_ticks, g.members)
    assert procs.stop_marked(other, grace=1) is False          # another marker: nothing signalled
    assert len(procs.group_members(dep.pgid, dep.pid_start_ticks)) >= 3
    assert procs.stop_marked(g, grace=5) is False
    assert _gone(dep.pgid, dep.pid_start_ticks)


def test_marker_outside_a_new_session_is_never_ours(tmp_path):
    """A marked process in vllm-ops' own group/session (and one whose live leader carries no
    marker) is never listed: only groups whose leader is marked, or whose leader is gone."""
    state = tmp_path / "state"
    env = dict(os.environ, **procs.marker_env("a", state))
    p = subprocess.Popen(["sleep", "60"], env=env)          # pytest's own group and session
    try:
        time.sleep(0.2)
        assert procs.read_marker(p.pid) == ("a", str(state))
        assert procs.marked_groups(state) == []
    finally:
        p.kill()
        p.wait()


LEADER_EXITS = textwrap.dedent("""
    import os, subprocess, sys, time
    subprocess.Popen(["sleep", "60"])
    subprocess.Popen(["sleep", "60"])
    time.sleep(0.3)
    os._exit(0)
""")


def test_leaderless_group_members_are_stopped_one_by_one(tmp_path):
    store = StateStore(tmp_path / "state")
    backend, dep = _start(store, "a", [sys.executable, "-c", LEADER_EXITS])
    backend._reap(dep)                                        # the leader exits; its children stay
    deadline = time.monotonic() + 5
    while procs.alive(dep.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        (g,) = procs.marked_groups(store.root, "a")
        assert g.leader_ticks is None and g.pgid == dep.pgid and len(g.members) == 2
        assert procs.stop_marked(g, grace=5) is False
        assert procs.marked_groups(store.root) == [] and _gone(dep.pgid, None)
    finally:
        procs.stop_group(dep.pgid, grace=1)


LEADER_EXITS_ONE_RENAMED = textwrap.dedent("""
    import os, subprocess, sys, time
    subprocess.Popen(["sleep", "60"])
    # vLLM's engine core renames itself (setproctitle), which hides its environment in /proc:
    # a child started without the marker shows the same
    subprocess.Popen(["sleep", "60"], env={k: v for k, v in os.environ.items() if not k.startswith("VLLM_OPS_")})
    time.sleep(0.3)
    os._exit(0)
""")


def test_leaderless_session_members_without_the_marker_are_stopped_too(tmp_path):
    """The API server killed, its state file gone: the orphaned engine core shows no marker, yet
    it is in the session the marked process vouches for; `stop NAME` must end it (its GPU memory)."""
    store = StateStore(tmp_path / "state")
    backend, dep = _start(store, "a", [sys.executable, "-c", LEADER_EXITS_ONE_RENAMED])
    backend._reap(dep)
    deadline = time.monotonic() + 5
    while procs.alive(dep.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        (g,) = procs.marked_groups(store.root, "a")
        assert g.leader_ticks is None and len(g.members) == 2, g
        assert [procs.read_marker(p) is None for p in g.pids].count(True) == 1
        assert procs.marked_groups(store.root, "b") == []
        assert procs.stop_marked(g, grace=5) is False
        assert procs.marked_groups(store.root) == [] and _gone(dep.pgid, None)
    finally:
        procs.stop_group(dep.pgid, grace=1)


# ------------------------------------------------------------- the minimal stop view
def _dict(**kw):
    d = {"name": "x", "pid": 4242, "pgid": 4242, "port": 8000, "host": "h", "served_name": "m",
         "model_id": "m", "log_path": "/tmp/x.log", "started_at": 1.0, "pid_start_ticks": 7}
    d.update(kw)
    return d


@pytest.mark.parametrize("bad", [{"port": "x"}, {"started_at": "yesterday"}, {"log_path": 5},
                                 {"port": None, "log_path": "", "host": 3}, {"started_at": float("nan")}])
def test_stop_view_keeps_what_stop_needs(bad):
    dep, broken = stop_view(_dict(**bad, plan="garbage", argv="$(id)"), "x")
    assert sorted(bad) == sorted(broken)
    assert (dep.pid, dep.pgid, dep.pid_start_ticks, dep.backend) == (4242, 4242, 7, "process")
    assert dep.plan is None and dep.argv == [] and isinstance(dep.port, int) and isinstance(dep.log_path, str)


@pytest.mark.parametrize("bad", [{"pid": "1"}, {"pgid": 0}, {"pgid": 1.5}, {"pid_start_ticks": "7"},
                                 {"backend": ["process"]}, {"container_id": 5}, {"pid": None}])
def test_stop_view_refuses_a_bad_stop_field(bad):
    from vllm_ops.launch.state import _BadField

    with pytest.raises(_BadField):
        stop_view(_dict(**bad), "x")
    d = _dict()
    del d["pgid"]
    with pytest.raises(_BadField, match="pgid"):
        stop_view(d, "x")


def test_load_for_stop(tmp_path):
    store = StateStore(tmp_path)
    (tmp_path / "deployments").mkdir()
    (tmp_path / "deployments" / "x.json").write_text(json.dumps(_dict(port="x", name="other")))
    with pytest.raises(MalformedFile, match="'port'"):
        store.load("x")
    dep, broken = store.load_for_stop("x")
    assert dep.name == "x" and broken == ["name", "port"]     # the file's name, never the field's
    (tmp_path / "deployments" / "x.json").write_text('{"name": "x", "pid": 1')
    with pytest.raises(MalformedFile):
        store.load_for_stop("x")
    with pytest.raises(KeyError):
        store.load_for_stop("nope")


# ------------------------------------------------------------------------ the CLI
def test_cli_state_dir_deleted_status_orphaned_and_stop(tmp_path, monkeypatch, run_cli, cleanup):
    state = tmp_path / "state"
    monkeypatch.setenv("VLLM_OPS_STATE_DIR", str(state))
    store = StateStore(state)
    _, dep = _start(store, "a")
    cleanup.append(dep)
    import shutil

    shutil.rmtree(state)
    rc, out, err = run_cli("status", "--json")
    (row,) = json.loads(out)["deployments"]
    assert rc == 0 and row["status"] == "orphaned" and row["alive"] is True and row["pgids"] == [dep.pgid]
    assert "orphaned (no state)" in row["error"]
    rc, out, err = run_cli("status")
    assert rc == 0 and "orphaned (no state)" in err
    rc, out, err = run_cli("status", "a", "--json")
    assert rc == 0 and json.loads(out)["deployments"][0]["status"] == "orphaned"
    rc, out, err = run_cli("stop", "b")
    assert rc == 1 and "no deployment named b" in err
    assert procs.group_members(dep.pgid, dep.pid_start_ticks)
    rc, out, err = run_cli("stop", "a", "--grace", "5")
    assert rc == 0 and "orphaned" in err and f"process group {dep.pgid}" in err, err
    assert _gone(dep.pgid, dep.pid_start_ticks)
    rc, out, err = run_cli("status", "--json")
    assert json.loads(out)["deployments"] == []


def test_cli_status_names_the_processes_left_when_the_api_server_exited(tmp_path, monkeypatch, run_cli):
    """The API server gone, its group still running (an orphaned engine core keeps its GPU memory):
    status says exited AND names what is left; `stop NAME` ends it; then nothing is left."""
    state = tmp_path / "state"
    monkeypatch.setenv("VLLM_OPS_STATE_DIR", str(state))
    backend, dep = _start(StateStore(state), "a", [sys.executable, "-c", LEADER_EXITS])
    backend._reap(dep)
    deadline = time.monotonic() + 5
    while procs.alive(dep.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        rc, out, err = run_cli("status", "--json")
        (row,) = json.loads(out)["deployments"]
        assert rc == 0 and row["status"] == "exited" and row["alive"] is False
        assert len(row["leftover_pids"]) == 2 and "`vllm-ops stop a` ends them" in row["error"], row
        rc, out, err = run_cli("status")
        assert rc == 0 and "2 process(es) of its group still run" in err, err
        rc, out, err = run_cli("stop", "a", "--grace", "5")
        assert rc == 0 and _gone(dep.pgid, dep.pid_start_ticks), err
    finally:
        procs.stop_group(dep.pgid, grace=1)


def test_cli_stop_all_stops_orphans_too(tmp_path, monkeypatch, run_cli, cleanup):
    state = tmp_path / "state"
    monkeypatch.setenv("VLLM_OPS_STATE_DIR", str(state))
    store = StateStore(state)
    _, a = _start(store, "a")
    _, b = _start(store, "b")
    cleanup.extend([a, b])
    store.remove("a")                                          # a: no state file
    store.path("b").write_text('{"name": "b", "pid"')          # b: truncated
    rc, out, err = run_cli("status", "--json")
    rows = {r["name"]: r for r in json.loads(out)["deployments"]}
    assert rows["a"]["status"] == "orphaned"
    assert rows["b"]["status"] == "unreadable" and rows["b"]["alive"] is True and rows["b"]["pgids"] == [b.pgid]
    rc, out, err = run_cli("stop", "--all", "--grace", "5")
    assert rc == 0 and "Traceback" not in err
    assert _gone(a.pgid, a.pid_start_ticks) and _gone(b.pgid, b.pid_start_ticks)
    assert store.names() == []


def test_cli_truncated_state_file_stop_name_falls_back_to_the_marker(tmp_path, monkeypatch, run_cli, cleanup):
    state = tmp_path / "state"
    monkeypatch.setenv("VLLM_OPS_STATE_DIR", str(state))
    store = StateStore(state)
    _, dep = _start(store, "a")
    cleanup.append(dep)
    store.path("a").write_text(store.path("a").read_text()[:40])
    rc, out, err = run_cli("stop", "a", "--grace", "5")
    assert rc == 0 and "corrupted" in err and "marker" in err, err
    assert _gone(dep.pgid, dep.pid_start_ticks) and store.names() == []
    store.path("a").write_text("{")                           # nothing marked any more: an error, as before
    rc, out, err = run_cli("stop", "a")
    assert rc == 2 and "corrupted" in err


@pytest.mark.parametrize("bad", [{"port": "x"}, {"started_at": "yesterday"}, {"log_path": 5}])
def test_cli_stop_through_a_partly_corrupted_file(bad, tmp_path, monkeypatch, run_cli, cleanup):
    state = tmp_path / "state"
    monkeypatch.setenv("VLLM_OPS_STATE_DIR", str(state))
    store = StateStore(state)
    _, dep = _start(store, "a")
    cleanup.append(dep)
    d = json.loads(store.path("a").read_text())
    d.update(bad)
    store.path("a").write_text(json.dumps(d))
    rc, out, err = run_cli("status", "--json")
    (row,) = json.loads(out)["deployments"]
    assert row["status"] == "corrupted" and row["alive"] is True and row["broken_fields"] == sorted(bad)
    rc, out, err = run_cli("status")
    assert "corrupted" in err and "stop a` still works" in err
    rc, out, err = run_cli("stop", "a", "--grace", "5")
    assert rc == 0 and "partly corrupted" in err and f"stopped a (pid {dep.pid}" in err, err
    assert _gone(dep.pgid, dep.pid_start_ticks) and store.names() == []


def test_launch_refuses_a_name_whose_orphan_still_runs(tmp_path, monkeypatch, run_cli, cleanup):
    from tests.unit.test_launch import FAKE_VLLM, _free_port

    script = tmp_path / "fake_vllm.py"
    script.write_text(FAKE_VLLM)
    fake = VllmCommand((sys.executable, str(script)), "module", python=sys.executable)
    store = StateStore(tmp_path / "state")
    opts = LaunchOptions(vllm=fake, port=_free_port(), store=store, name="a", validate=False,
                         record_calibration=False, ready_timeout=30, stop_grace=5)
    res = launch(_plan(), opts)
    cleanup.append(res.deployment)
    store.remove("a")
    with pytest.raises(BadInput, match="still running"):
        launch(_plan(), LaunchOptions(vllm=fake, port=_free_port(), store=store, name="a", validate=False))
    monkeypatch.setenv("VLLM_OPS_STATE_DIR", str(store.root))
    rc, out, err = run_cli("stop", "a", "--grace", "5")
    assert rc == 0
    assert _gone(res.deployment.pgid, res.deployment.pid_start_ticks)


def test_stop_view_needs_start_ticks_for_a_process_group():
    from vllm_ops.launch.state import _BadField

    with pytest.raises(_BadField, match="pid_start_ticks"):
        stop_view(_dict(port="x", pid_start_ticks=None), "x")
    dep, broken = stop_view(_dict(port="x", pid=0, pgid=0, pid_start_ticks=None, backend="docker",
                                  container_id="abc"), "x")
    assert dep.container_id == "abc" and broken == ["port"]
