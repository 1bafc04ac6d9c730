"""The docker/compose backends without a daemon: argument, env, mount and request shapes, and the
clean-up rules, against a fake Docker SDK client (the real engine: tests/real/test_docker.py)."""
from __future__ import annotations


import docker.errors
import pytest

from vllm_ops.errors import BadInput
from vllm_ops.launch import docker_backend as db
from vllm_ops.launch.backend import LaunchSpec
from vllm_ops.launch.docker_backend import DockerBackend, DockerOptions


# ------------------------------------------------------------------------------ pure helpers
def test_container_args_from_serve_and_module_forms():
    serve = ["/m", "--served-model-name", "x", "--port", "8123", "--host",
             "127.0.0.1", "--max-model-len", "1024"]
    module = ["--model", "/m", "--served-model-name", "x", "--port=8123", "--max-model-len", "1024"]
    want = ["--model", "/m", "--served-model-name", "x", "--max-model-len", "1024",
            "--host", "0.0.0.0", "--port", "8000"]
    assert db.container_args(serve) == want
    assert db.container_args(module) == want


def test_saved_plans_without_cpu_or_image_are_upgraded_once():
    """The image and the CPU flag are the planner's (Plan.cpu, Plan.image); a plan saved before
    they were settled gets them from its other fields when it is loaded."""
    from vllm_ops.planning.plan import Plan

    base = {"model": {"id": "m"}, "vllm_version": "0.32.0", "replicas": [{"gpu_ids": [0]}],
            "vllm_args": {}, "memory": {}, "fits": True}
    gpu = {**base, "image": "", "hardware": {"gpus": [{"name": "H100"}]}}
    cpu = {**base, "profile": "cpu", "image": "vllm/vllm-openai:v0.32.0", "hardware": {},
           "replicas": [{"gpu_ids": []}]}
    assert Plan.from_dict(gpu).image == "vllm/vllm-openai:v0.32.0" and not Plan.from_dict(gpu).cpu
    assert Plan.from_dict({**gpu, "image": "vllm/vllm-openai:v0.31.1"}).image == "vllm/vllm-openai:v0.31.1"
    assert Plan.from_dict(cpu).image == "vllm/vllm-openai-cpu:v0.32.0" and Plan.from_dict(cpu).cpu
    bare = {**base, "image": "", "hardware": {"nodes": [{"gpus": []}]}, "replicas": [{"gpu_ids": []}]}
    assert Plan.from_dict(bare).cpu and Plan.from_dict(bare).image == "vllm/vllm-openai-cpu:v0.32.0"
    assert Plan.from_dict({**gpu, "cpu": False}).served_name == "m"


def test_env_passes_secrets_by_env_only_and_drops_host_only():
    caller = {"VLLM_API_KEY": "sk-1", "HF_TOKEN": "hf-2", "PATH": "/bin", "VLLM_OPS_X": "1"}
    env = db.container_env({"VLLM_CPU_KVCACHE_SPACE": "1", "CUDA_VISIBLE_DEVICES": "2,3"},
                           caller=caller)
    assert env == {"VLLM_API_KEY": "sk-1", "HF_TOKEN": "hf-2", "VLLM_CPU_KVCACHE_SPACE": "1",
                   "PYTHONUNBUFFERED": "1"}
    assert "VLLM_API_KEY" not in db.container_env({}, removed=("VLLM_API_KEY",), caller=caller)


def test_replica_index():
    assert db.replica_index("qwen-8000") == 0
    assert db.replica_index("qwen-8000-r2") == 2


def test_volumes_and_model_dir_binds(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    opts = DockerOptions(hf_cache=str(tmp_path / "hf"), volumes=[f"{tmp_path}:/data:ro", "/x:/y"])
    binds = db.binds_for(["--model", str(model), "--tokenizer", "org/tok"], opts)
    assert binds[str(tmp_path / "hf")] == {"bind": db.CONTAINER_HF_CACHE, "mode": "rw"}
    assert binds[str(model)] == {"bind": str(model), "mode": "ro"}
    assert binds[str(tmp_path)] == {"bind": "/data", "mode": "ro"}
    assert binds["/x"] == {"bind": "/y", "mode": "rw"}
    assert (tmp_path / "hf").is_dir()
    for bad in ("nocolon", "/a:relative", "/a:/b:rx"):
        with pytest.raises(BadInput):
            db.parse_volume(bad)


# ---------------------------------------------------------------------------- fake client
class FakeContainer:
    def __init__(self, client, cid, kw):
        self.client, self.id, self.kw = client, cid, kw
        self.name = kw["name"]
        self.labels = kw.get("labels", {})
        self.status = "created"
        self.attrs = {"State": {"Pid": 4242, "ExitCode": 0}, "Config": {"Image": kw["image"]}}

    def start(self):
        if self.client.fail_start:
            raise docker.errors.APIError("driver failed programming external connectivity",
                                         explanation="port is already allocated")
        self.status = "running"

    def reload(self):
        pass

    def stop(self, timeout=10):
        self.client.calls.append(("stop", self.name, timeout))
        self.status, self.attrs["State"]["ExitCode"] = "exited", 0

    def remove(self, force=False, v=False):
        self.client.calls.append(("remove", self.name, force, v))
        self.client.containers.items.pop(self.id, None)

    def logs(self, stream=False, follow=False, tail="all"):
        return iter([b"line 1\n", b"line 2\n"])


class FakeContainers:
    def __init__(self, client):
        self.client, self.items = client, {}

    def create(self, **kw):
        self.client.calls.append(("create", kw))
        c = FakeContainer(self.client, f"c{len(self.items) + 1:064d}", kw)
        self.items[c.id] = c
        return c

    def get(self, key):
        for c in self.items.values():
            if key in (c.id, c.name):
                return c
        raise docker.errors.NotFound("no such container")

    def list(self, all=False, filters=None):
        label = (filters or {}).get("label", "")
        k, _, v = label.partition("=")
        return [c for c in self.items.values() if not k or c.labels.get(k) == v]


class FakeImages:
    def __init__(self, client, present):
        self.client, self.present = client, set(present)

    def get(self, name):
        if name not in self.present:
            raise docker.errors.ImageNotFound(f"No such image: {name}")
        return object()

    def pull(self, repo, tag=None):
        self.client.calls.append(("pull", repo, tag))
        raise docker.errors.APIError("pull failed",
                                     explanation="Get https://registry-1.docker.io/v2/: dial tcp: lookup failed")


class FakeClient:
    def __init__(self, images=("img:1",), fail_start=False):
        self.calls: list = []
        self.fail_start = fail_start
        self.containers = FakeContainers(self)
        self.images = FakeImages(self, images)


class QuietBackend(DockerBackend):
    def _log_stream(self, container):
        class Closer:
            def close(self):
                pass
        return iter([b"(APIServer pid=1) INFO vLLM API server version 0.32.0\n"]), Closer()


def _spec(tmp_path, **kw) -> LaunchSpec:
    model = tmp_path / "m"
    model.mkdir(exist_ok=True)
    args = [str(model), "--served-model-name", "tiny", "--port", "8000", "--host", "127.0.0.1"]
    base = dict(name="tiny-8000", argv=["vllm", "serve", *args], args=args,
                env_added={"VLLM_CPU_KVCACHE_SPACE": "1"}, log_path=tmp_path / "logs" / "t.log",
                port=18000, host="127.0.0.1", served_name="tiny", model_id="tiny",
                vllm_version="0.32.0", plan={"profile": "cpu", "vllm_version": "0.32.0"}, cpu=True,
                image="vllm/vllm-openai-cpu:v0.32.0")
    base.update(kw)
    return LaunchSpec(**base)


def test_start_builds_one_labelled_container(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", "sk-secret")
    client = FakeClient()
    be = QuietBackend(DockerOptions(image="img:1", hf_cache=str(tmp_path / "hf")), client=client)
    dep = be.start(_spec(tmp_path))
    (_, kw), = [c for c in client.calls if c[0] == "create"]
    assert kw["image"] == "img:1" and kw["name"] == "vllm-ops-tiny-8000"
    assert kw["labels"] == {"vllm-ops.deployment": "tiny-8000", "vllm-ops.replica": "0",
                            "vllm-ops.managed": "1"}
    assert kw["ports"] == {"8000/tcp": ("127.0.0.1", 18000)}
    assert kw["command"][-4:] == ["--host", "0.0.0.0", "--port", "8000"]
    assert "sk-secret" not in " ".join(kw["command"])           # never on the command line
    assert kw["environment"]["VLLM_API_KEY"] == "sk-secret"    # container env only
    assert kw["ipc_mode"] == "host" and "device_requests" not in kw
    assert kw["cap_add"] == ["SYS_NICE"]                       # CPU plan
    assert dep.backend == "docker" and dep.host == "127.0.0.1" and dep.port == 18000
    assert dep.pid == 0 and dep.pgid == 0                      # never signalled by pid
    assert dep.env["VLLM_API_KEY"] == "***"                    # state never holds the secret
    assert "sk-secret" not in repr(dep.to_dict())
    from vllm_ops.launch.state import StateStore

    store = StateStore(tmp_path / "state")                     # another shell reads it back
    store.save(dep)
    assert store.load(dep.name).backend == "docker"
    assert "sk-secret" not in store.path(dep.name).read_text()
    be._drain("tiny-8000")
    assert "vLLM API server version" in (tmp_path / "logs" / "t.log").read_text()
    assert be.alive(dep)
    assert be.stop(dep) is False
    assert ("remove", "vllm-ops-tiny-8000", True, True) in client.calls
    assert client.containers.items == {} and not be.alive(dep)


def test_gpu_replica_gets_device_request_with_its_ids(tmp_path):
    client = FakeClient()
    be = QuietBackend(DockerOptions(image="img:1", hf_cache=None, shm_size="8g"), client=client)
    be.start(_spec(tmp_path, name="q-8001-r1", env_added={"CUDA_VISIBLE_DEVICES": "2,3"},
                   plan={"hardware": {"gpus": [{}, {}, {}, {}]}}, cpu=False, gpu_ids=[2, 3]))
    (_, kw), = [c for c in client.calls if c[0] == "create"]
    (req,) = kw["device_requests"]
    assert req["Driver"] == "nvidia" and req["DeviceIDs"] == ["2", "3"]
    assert req["Capabilities"] == [["gpu"]]
    assert "CUDA_VISIBLE_DEVICES" not in kw["environment"]
    assert kw["shm_size"] == "8g" and "ipc_mode" not in kw
    assert kw["labels"]["vllm-ops.replica"] == "1"


def test_missing_image_that_cannot_be_pulled_is_one_clear_error(tmp_path):
    client = FakeClient(images=())
    be = QuietBackend(DockerOptions(image="vllm/vllm-openai-cpu:v0.32.0"), client=client)
    with pytest.raises(db.ImageUnavailable) as info:
        be.start(_spec(tmp_path))
    msg = info.value.one_line()
    assert "vllm/vllm-openai-cpu:v0.32.0" in msg and "docker pull" in msg and "\n" not in msg
    assert ("pull", "vllm/vllm-openai-cpu", "v0.32.0") in client.calls
    assert not [c for c in client.calls if c[0] == "create"]


def test_start_failure_removes_the_container(tmp_path):
    client = FakeClient(fail_start=True)
    be = QuietBackend(DockerOptions(image="img:1", hf_cache=None), client=client)
    with pytest.raises(db.ContainerFailure, match="port is already allocated"):
        be.start(_spec(tmp_path))
    assert client.containers.items == {}


def test_leftover_stopped_container_is_replaced_running_one_refused(tmp_path):
    client = FakeClient()
    be = QuietBackend(DockerOptions(image="img:1", hf_cache=None), client=client)
    dep = be.start(_spec(tmp_path))
    with pytest.raises(BadInput, match="already running"):
        be.start(_spec(tmp_path))
    client.containers.get("vllm-ops-tiny-8000").status = "exited"
    assert be.exit_code(dep) == 0 and not be.alive(dep)
    be.start(_spec(tmp_path))
    assert len(client.containers.items) == 1


def test_daemon_unreachable_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    with pytest.raises(db.DockerUnavailable) as info:
        db.connect(timeout=2)
    assert info.value.exit_code == 1
    assert f"unix://{tmp_path}/nothing.sock" in info.value.one_line()


# ---------------------------------------------------------------------------------- compose
def test_compose_missing_is_a_clear_error():
    from vllm_ops.launch.compose_backend import ComposeMissing, find_compose

    class P:
        returncode = 1

    with pytest.raises(ComposeMissing) as info:
        find_compose(run=lambda *a, **k: P(), which=lambda n: "/usr/bin/docker" if n == "docker" else None)
    assert info.value.exit_code == 1 and "docker compose" in info.value.one_line()
    assert find_compose(run=lambda *a, **k: P(), which=lambda n: f"/usr/bin/{n}") == ["/usr/bin/docker-compose"]


def test_compose_override_adapts_the_rendered_service():
    from vllm_ops.launch.compose_backend import override_doc

    cmd = db.container_args(["/m", "--host", "127.0.0.1", "--port", "9001"], 9001)
    doc = override_doc("vllm", "tiny", cmd, DockerOptions(image="img:1", volumes=["/usr:/usr:ro"]),
                       caller={"HF_TOKEN": "hf-secret"})
    svc = doc["services"]["vllm"]
    assert svc["labels"]["vllm-ops.deployment"] == "tiny" and svc["labels"]["vllm-ops.replica"] == "0"
    assert svc["command"] == ["--model", "/m", "--host", "0.0.0.0", "--port", "9001"]
    assert svc["restart"] == "no" and svc["image"] == "img:1"
    assert svc["volumes"] == [{"type": "bind", "source": "/usr", "target": "/usr", "read_only": True}]
    assert svc["environment"] == ["HF_TOKEN"]                 # by name: compose copies the value
    assert "hf-secret" not in repr(doc)
