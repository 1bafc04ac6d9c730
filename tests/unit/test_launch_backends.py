"""One dispatch for every launch backend: `backend_for`, the CLI flags of `launch --backend`,
`status`/`stop`/`logs` choosing the deployment's recorded backend, the re-planned prediction after
`--auto-retry`, and the Ray/multi-node rules living in the one diagnosis table. No real parts:
the launch itself runs the small fake server of test_launch.py; Docker is replaced by a recorder."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytest

from tests.unit.test_launch import FAKE_VLLM, _free_port, _plan
from vllm_ops.errors import BadInput
from vllm_ops.launch.backend import ProcessBackend, backend_for
from vllm_ops.launch.diagnosis import RULES, Context, diagnose
from vllm_ops.launch.launcher import LaunchOptions, launch
from vllm_ops.launch.lifecycle import stop
from vllm_ops.launch.locate import VllmCommand
from vllm_ops.launch.state import Deployment, StateStore
from vllm_ops.planning.plan import Memory


@pytest.fixture
def fake(tmp_path):
    import sys

    script = tmp_path / "fake_vllm.py"
    script.write_text(FAKE_VLLM)
    return VllmCommand((sys.executable, str(script)), "module", python=sys.executable)


def _dep(tmp_path, **kw) -> Deployment:
    d = dict(name="x", pid=0, pgid=0, port=8000, host="127.0.0.1", served_name="m", model_id="m",
             log_path=str(tmp_path / "x.log"), started_at=time.time(), backend="docker")
    d.update(kw)
    return Deployment(**d)


# ------------------------------------------------------------------------- backend_for
def test_backend_for_every_recorded_backend():
    from vllm_ops.launch.compose_backend import ComposeBackend
    from vllm_ops.launch.docker_backend import DockerBackend

    assert type(backend_for("process")) is ProcessBackend
    d = backend_for("docker", image="img:1", volumes=["/a:/b:ro"], shm_size=None)
    assert type(d) is DockerBackend and d.options.image == "img:1" and d.options.volumes == ["/a:/b:ro"]
    assert d.options.shm_size is None and d.options.hf_cache     # None options keep the defaults
    assert type(backend_for("compose", shm_size="8g")) is ComposeBackend
    for name in ("ray", "native", "native-worker"):
        b = backend_for(name)
        assert b.name == name and not hasattr(b, "logs")         # a local process group
    assert backend_for("process", prefix=["ssh", "h"]).prefix == ["ssh", "h"]
    with pytest.raises(BadInput, match="unknown launch backend"):
        backend_for("kubernetes")


def test_launch_flags_per_backend():
    from vllm_ops.commands import launch as cmd

    p = argparse.ArgumentParser()
    cmd.configure(p)
    a = p.parse_args(["--plan", "p.json", "--backend", "docker", "--image", "i", "--volume", "/a:/b",
                      "--volume", "/c:/d:ro", "--shm-size", "8g"])
    assert (a.backend, a.image, a.volume, a.shm_size) == ("docker", "i", ["/a:/b", "/c:/d:ro"], "8g")
    a = p.parse_args(["--model", "m", "--backend", "ray", "--ray-address", "10.0.0.1:6379", "--node-rank", "1"])
    assert a.ray_address == "10.0.0.1:6379" and a.node_rank == 1
    a = p.parse_args(["--model", "m", "--nodes", "10.0.0.1,10.0.0.2", "--node-rank", "0",
                      "--node-exec", "1=ssh h1", "--node-env", "1:GLOO_SOCKET_IFNAME=eth0", "--master-port", "29533"])
    assert a.nodes == "10.0.0.1,10.0.0.2" and a.master_port == 29533
    for bad in (["--image", "i"], ["--backend", "docker", "--ray-address", "h:1"],
                ["--backend", "compose", "--nodes", "a,b"], ["--backend", "ray", "--distributed-backend", "native"]):
        with pytest.raises(BadInput):
            cmd._check_backend_args(p.parse_args(["--model", "m", *bad]))
    assert cmd._ranked(["1=ssh h1"], "=", "exec") == {1: "ssh h1"}
    assert cmd._node_env(["1:A=b", "1:C=d"]) == {1: {"A": "b", "C": "d"}}
    with pytest.raises(BadInput):
        cmd._node_env(["x:A=b"])


def test_nodes_inventory_puts_one_address_per_node():
    from vllm_ops.commands.launch import _nodes_inventory
    from vllm_ops.hardware import parse_gpu_spec

    inv = _nodes_inventory(parse_gpu_spec("8xH100"), "10.0.0.1, 10.0.0.2")
    assert [n.address for n in inv.nodes] == ["10.0.0.1", "10.0.0.2"]
    assert all(len(n.gpus) == 8 for n in inv.nodes)
    for bad in ("10.0.0.1", "a,a", "a b,c"):
        with pytest.raises(BadInput):
            _nodes_inventory(parse_gpu_spec("8xH100"), bad)


def test_container_backends_need_no_local_vllm(tmp_path, monkeypatch, run_cli):
    """--backend docker never looks for vLLM here: the error is Docker's (a dead daemon)."""
    import vllm_ops.launch.locate as locate     # resolve_vllm, used by launch and tune, looks up here

    monkeypatch.setattr(locate, "find_vllm", lambda *a, **k: pytest.fail("find_vllm called"))
    monkeypatch.setattr(locate, "installed_version", lambda *a, **k: pytest.fail("installed_version called"))
    monkeypatch.setenv("VLLM_OPS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    plan = tmp_path / "plan.json"
    plan.write_text(_plan(port=_free_port()).to_json())
    rc, out, err = run_cli("launch", "--backend", "docker", "--plan", str(plan), "--detach")
    assert rc == 1 and "none.sock" in err and "Traceback" not in err


# ------------------------------------------------------- status / stop / logs dispatch
class _Recorder:
    name = "docker"

    def __init__(self):
        self.calls = []

    def alive(self, dep):
        self.calls.append(("alive", dep.name))
        return True

    def stop(self, dep, grace=20.0):
        self.calls.append(("stop", dep.name))
        return False

    def describe(self, dep):
        return [{"id": "abc", "status": "running"}]

    def logs(self, dep, tail=None, follow=False):
        self.calls.append(("logs", tail, follow))
        yield "from docker\n"


def test_stop_status_logs_use_the_recorded_backend(tmp_path, monkeypatch, run_cli):
    import importlib

    import vllm_ops.launch.backend as backend

    rec = _Recorder()
    real = backend.backend_for
    fake = lambda name, **o: rec if name == "docker" else real(name, **o)  # noqa: E731
    for where in ("vllm_ops.launch.backend", "vllm_ops.launch.lifecycle", "vllm_ops.commands.status",
                  "vllm_ops.commands.logs"):                  # every module that picks the backend
        monkeypatch.setattr(importlib.import_module(where), "backend_for", fake)
    monkeypatch.setenv("VLLM_OPS_STATE_DIR", str(tmp_path))
    store = StateStore(tmp_path)
    store.save(_dep(tmp_path, name="c1"))
    rc, out, err = run_cli("status", "--json")
    (row,) = json.loads(out)["deployments"]
    assert row["alive"] is True and row["backend"] == "docker" and row["containers"][0]["id"] == "abc"
    rc, out, err = run_cli("logs", "c1", "-n", "5")
    assert rc == 0 and out == "from docker\n" and ("logs", 5, False) in rec.calls
    rc, out, err = run_cli("stop", "c1")
    assert rc == 0 and ("stop", "c1") in rec.calls and "container removed" in err
    assert store.names() == []


def test_status_shows_a_worker_rank_without_probing_it(tmp_path, monkeypatch, run_cli):
    import subprocess
    import sys

    import vllm_ops.launch.launcher as launcher

    monkeypatch.setattr(launcher, "_http_get", lambda *a, **k: pytest.fail("a worker rank was probed"))
    monkeypatch.setenv("VLLM_OPS_STATE_DIR", str(tmp_path))
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        from vllm_ops.launch import procs

        StateStore(tmp_path).save(_dep(tmp_path, name="mn-rank1", pid=p.pid, pgid=p.pid, port=0,
                                       backend="native-worker", pid_start_ticks=procs.start_ticks(p.pid)))
        rc, out, err = run_cli("status", "--json")
        (row,) = json.loads(out)["deployments"]
        assert row["role"] == "worker" and row["alive"] is True and row["healthy"] is None
        assert row["url"] is None
        rc, out, err = run_cli("status")
        assert "worker rank" in err and "Traceback" not in err
    finally:
        p.kill()
        p.wait()


@pytest.fixture
def multinode(tmp_path):
    """A native deployment ``mn`` with one worker rank ``mn-rank1`` (sleeping process groups) and
    one spare group: (store, [rank 0, rank 1, spare])."""
    import subprocess
    import sys

    from vllm_ops.launch import procs

    store = StateStore(tmp_path)
    kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
            for _ in range(3)]
    try:
        for name, p, backend in (("mn", kids[0], "native"), ("mn-rank1", kids[1], "native-worker")):
            store.save(_dep(tmp_path, name=name, pid=p.pid, pgid=p.pid, backend=backend,
                            pid_start_ticks=procs.start_ticks(p.pid), port=0 if "rank" in name else 8000))
        yield store, kids
    finally:
        for p in kids:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_stopping_rank0_stops_its_worker_ranks(multinode):
    store, kids = multinode
    stop(store.load("mn"), store, grace=2)
    for p in kids[:2]:
        p.wait(10)
    assert store.names() == ["mn"]          # the worker's state file went with it


def test_stop_targets_names_the_worker_ranks_and_ray_nodes_it_stopped(multinode):
    from vllm_ops.launch import procs
    from vllm_ops.launch import ray_backend as rb
    from vllm_ops.launch.lifecycle import find_targets, stop_targets

    store, kids = multinode
    ray = kids[2]
    rb.ClusterStore(store).save("mn", [rb.RayNode("head", "127.0.0.1:6379", "127.0.0.1", ray.pid,
                                                  procs.start_ticks(ray.pid), None, None)])
    lines = stop_targets(find_targets(store, all=True), store, grace=2)
    for p in kids:
        p.wait(10)
    assert lines == [f"stopped mn (pid {kids[0].pid}, 1 worker rank(s), 1 Ray node(s) it started)"]
    assert store.names() == [] and rb.ClusterStore(store).names() == []


# ------------------------------------------------------------- re-plan after --auto-retry
def test_auto_retry_replans_the_prediction(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_DIE", "1")     # the fake dies at --max-model-len 4096 (diagnosis: 1024)
    store = StateStore(tmp_path / "state")
    asked = []

    def replan(pins):
        asked.append(pins)
        return _plan(vllm_args={"max_model_len": pins["max_model_len"]}).__class__(
            **{**_plan().__dict__, "memory": Memory(weights_gib=2.0, kv_cache_gib=1.0, kv_cache_tokens=4242)})

    opts = LaunchOptions(vllm=fake, port=_free_port(), store=store, ready_timeout=30, validate=False,
                         auto_retry=True, replan=replan)
    result = launch(_plan(), opts)
    try:
        assert result.retried.code == "kv-cache-too-small"
        assert asked == [{"max_model_len": 1024, "enforce_eager": True, "max_num_seqs": 32}]
        assert result.replanned and not result.plan_stale
        assert result.predicted["kv_cache_tokens"] == 4242            # the re-plan's, not 1048576
        assert "--max-model-len 1024" in " ".join(result.deployment.argv)
        assert result.calibration_path is not None
    finally:
        stop(result.deployment, store, opts.backend, grace=5)


def test_auto_retry_on_a_saved_plan_marks_it_stale(tmp_path, fake, monkeypatch, capsys):
    from vllm_ops.commands.launch import _print_figures

    monkeypatch.setenv("FAKE_DIE", "1")
    store = StateStore(tmp_path / "state")
    opts = LaunchOptions(vllm=fake, port=_free_port(), store=store, ready_timeout=30, validate=False,
                         auto_retry=True)
    result = launch(_plan(), opts)
    try:
        assert result.plan_stale and not result.replanned
        assert result.calibration_path is None          # a stale prediction is never recorded
        _print_figures(result)
        err = capsys.readouterr().err
        assert "plan (stale)" in err and "stale" in err.splitlines()[-1]
    finally:
        stop(result.deployment, store, opts.backend, grace=5)


def test_a_changed_kv_cache_memory_bytes_makes_the_prediction_stale():
    """--kv-cache-memory-bytes is read from the command line, not a pin: a retry that lowers it cannot re-plan
    through the pins, so the first prediction is stale (never recorded), not silently kept."""
    from vllm_ops.launch.diagnosis import Change
    from vllm_ops.launch.launcher import _replan

    said = []
    opts = LaunchOptions(vllm=None, replan=lambda pins: pytest.fail("re-planned through the pins"))
    plan, stale = _replan(_plan(), opts, Change(set_flags={"kv_cache_memory_bytes": 1 << 30}),
                          lambda stage, msg: said.append((stage, msg)))
    assert stale and said[0][0] == "plan stale" and "--kv-cache-memory-bytes" in said[0][1]


# ------------------------------------------------------------------- one diagnosis table
def test_ray_and_multinode_rules_are_in_the_one_table():
    codes = [r.code for r in RULES]
    for code in ("ray-unsupported-platform", "ray-not-installed", "ray-not-enough-gpus", "ray-placement-timeout",
                 "ray-connect", "multinode-loopback-address", "multinode-connect", "multinode-host-ip",
                 "multinode-bad-options"):
        assert code in codes
    log = "(EngineCore pid=1) ERROR ValueError: current platform cpu does not support ray.\n"
    assert diagnose(log).code == "ray-unsupported-platform"            # a plain launch diagnoses it too
    warn = "UserWarning: Failed to get the IP address, using 0.0.0.0 by default.\n"
    assert diagnose(warn) is None                                       # one box: only a warning
    assert diagnose(warn, Context(flags={"nnodes": 2})).code == "multinode-host-ip"
    placement = "placement group creation timed out\n"
    assert diagnose(placement) is None
    assert diagnose(placement, Context(flags={"distributed_executor_backend": "ray"})).code == "ray-placement-timeout"


# --------------------------------------------------------------------------- bench --url
def test_bench_url_is_checked_like_validate(run_cli):
    for bad in ("localhost:8000", "http://h:99999", "ftp://h", "http://a b"):
        rc, out, err = run_cli("bench", "--url", bad, "--concurrency", "1", "--num-prompts", "1")
        assert rc == 2 and "is not an http(s) server URL" in err, (bad, err)


def test_report_console_is_wide_when_not_a_tty(monkeypatch):
    import io
    import sys

    from vllm_ops.commands.validate import report_console

    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert report_console().width == 132
