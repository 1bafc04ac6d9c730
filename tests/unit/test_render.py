"""render/: every format for several plans, validated against the real schemas.

Compose files against the official Compose schema (tests/data/reference/compose-spec.schema.json),
Kubernetes manifests against Kubernetes' own schemas (kubernetes-validate, offline, strict),
LeaderWorkerSets against the CRD's openAPIV3Schema (tests/data/reference/lws-crd.yaml), shell scripts
with ``bash -n``, systemd units by splitting ExecStart= back by the unit-file rules.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from vllm_ops.errors import BadInput
from vllm_ops.planning.plan import Memory, Plan, Replica
from vllm_ops.render import FORMATS, render
from vllm_ops.render.quoting import systemd_split
from vllm_ops.render.vars import build_vars

K8S_VERSION = "1.30"
GOLDEN_PLAN = Path(__file__).resolve().parent.parent / "golden" / "l4x4-qwen2.5-coder-7b-instruct" / "plan.json"
REFERENCE = Path(__file__).resolve().parent.parent / "data" / "reference"


# ---------------------------------------------------------------------------------------------
# fixture factory: Plans built directly (the planner is tested elsewhere)
# ---------------------------------------------------------------------------------------------
def make_plan(*, model="Qwen/Qwen2.5-Coder-7B-Instruct", served=None, path=None, tp=1, pp=1,
              replicas=1, nodes=0, cpu=False, env=None, extra_args=(), vllm_args=None,
              version="0.33.0", image=None, weights_gib=14.2, first_port=8000) -> Plan:
    world = tp * pp
    per_node = world // max(nodes, 1)
    reps = [Replica(gpu_ids=[] if cpu else list(range(i * (per_node if nodes else world),
                                                       (i + 1) * (per_node if nodes else world))),
                    port=first_port + (0 if nodes else i),
                    node="node-0" if nodes else None)
            for i in range(replicas)]
    args = {"tensor_parallel_size": tp, "gpu_memory_utilization": 0.92, "max_model_len": 32768,
            "max_num_seqs": 128, "enable_prefix_caching": True}
    if pp > 1:
        args["pipeline_parallel_size"] = pp
    if nodes:
        args["distributed_executor_backend"] = "ray"
    if cpu:
        args = {"max_model_len": 4096, "max_num_seqs": 32, "enforce_eager": True}
    args.update(vllm_args or {})
    model_d = {"id": model, "served_name": served or model}
    if path:
        model_d["path"] = path
    plan_env = dict(env or {})
    if cpu:
        plan_env.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
    return Plan(
        model=model_d, vllm_version=version,
        image=image if image is not None else (f"vllm/vllm-openai{'-cpu' if cpu else ''}:v{version}"),
        hardware={"gpu_count": 0 if cpu else world * replicas, "kind": "cpu" if cpu else "gpu"},
        replicas=reps, vllm_args=args, memory=Memory(weights_gib=weights_gib / world), fits=True,
        env=plan_env, extra_args=list(extra_args),
        nodes=[{"hostname": f"node-{i}", "address": f"10.0.0.{i + 1}"} for i in range(nodes)],
    )


PLANS = {
    "1x-tp1": lambda: make_plan(),
    "tp4": lambda: make_plan(tp=4),
    "4-replicas": lambda: make_plan(replicas=4),
    "2x-tp2": lambda: make_plan(tp=2, replicas=2),
    "cpu": lambda: make_plan(model="Qwen/Qwen2.5-0.5B", cpu=True),
    "cpu-2-replicas": lambda: make_plan(model="Qwen/Qwen2.5-0.5B", cpu=True, replicas=2),
    "local-path": lambda: make_plan(path="/models/my model", served="mine"),
    "multinode-pp2": lambda: make_plan(model="Qwen/Qwen2.5-72B-Instruct", tp=8, pp=2, nodes=2,
                                       weights_gib=135.0),
    # the real planner's plan for l4x4 + Qwen2.5-Coder-7B (tests/golden/)
    "golden-l4x4": lambda: Plan.load(str(GOLDEN_PLAN)),
    # the real planner's multi-node shapes: one replica over 2 nodes (PP), replicas per node
    "planner-spanning": lambda: _planned("Qwen/Qwen2.5-72B-Instruct", "2x(2xL4)"),
    "planner-spread": lambda: _planned("Qwen/Qwen2.5-72B-Instruct", "2x(8xL4)"),
    # planning.multinode through planning.plan: Ray and vLLM's native mode, two replicas of two nodes,
    # and nodes with addresses and per-node network settings
    "planner-405b-ray": lambda: _planned("meta-llama/Llama-3.1-405B-Instruct", "2x(8xH100)"),
    "planner-405b-native": lambda: _planned("meta-llama/Llama-3.1-405B-Instruct", "2x(8xH100)", backend="native"),
    "planner-405b-native-2-replicas": lambda: _planned("meta-llama/Llama-3.1-405B-Instruct", "4x(8xH100)",
                                                       backend="native", master_port=29555),
    "planner-405b-native-addresses": lambda: _addressed("native"),
    "planner-405b-ray-addresses": lambda: _addressed("ray"),
}


def _planned(model: str, gpus: str, **kw) -> Plan:
    from vllm_ops.hardware import parse_gpu_spec
    from vllm_ops.models import load_model_spec
    from vllm_ops.planning import plan

    return plan(load_model_spec(model, offline=True), parse_gpu_spec(gpus), pins={}, vllm_version="0.33.0", **kw)


def _addressed(backend: str) -> Plan:
    from dataclasses import replace

    from vllm_ops.hardware import parse_gpu_spec
    from vllm_ops.hardware.inventory import Inventory
    from vllm_ops.models import load_model_spec
    from vllm_ops.planning import plan

    one = parse_gpu_spec("8xH100").nodes[0]
    inv = Inventory(nodes=(replace(one, hostname="gpu-a", address="192.0.2.10"),
                           replace(one, hostname="gpu-b", address="192.0.2.11")))
    p = plan(load_model_spec("meta-llama/Llama-3.1-405B-Instruct", offline=True), inv, vllm_version="0.33.0",
             backend=backend, env={"GLOO_SOCKET_IFNAME": "ens5"})
    p.nodes[1].env["NCCL_SOCKET_IFNAME"] = "ib0"
    return p


def all_renders():
    for name, mk in PLANS.items():
        yield name, render(mk(), "all")


# ---------------------------------------------------------------------------------------------
# schema helpers
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def compose_validator():
    import jsonschema

    schema = json.loads((REFERENCE / "compose-spec.schema.json").read_text())
    return jsonschema.Draft7Validator(schema)   # the file declares draft-07


@pytest.fixture(scope="session")
def lws_validator():
    import jsonschema

    crd = yaml.load((REFERENCE / "lws-crd.yaml").read_text(), Loader=yaml.CSafeLoader)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(version["schema"]["openAPIV3Schema"])


def k8s_validate(doc: dict) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def check_yaml_docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


# ---------------------------------------------------------------------------------------------
def test_kubernetes_validate_works_offline_and_catches_mistakes():
    import kubernetes_validate

    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"replicas": "two", "selector": {}, "template": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate(bad)
    typo = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"portz": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate(typo)   # strict: unknown fields are errors


@pytest.mark.parametrize("name", list(PLANS))
def test_compose_validates_against_compose_spec(name, compose_validator):
    plan = PLANS[name]()
    if build_vars(plan).multinode or build_vars(plan).spread:
        with pytest.raises(BadInput, match="one host"):
            render(plan, "compose")
        return
    art = render(plan, "compose")
    (doc,) = check_yaml_docs(art.files["docker-compose.yml"])
    errors = sorted(compose_validator.iter_errors(doc), key=str)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]
    v = build_vars(plan)
    for r in v.replicas:
        svc = doc["services"][r.name]
        assert svc["image"] == v.image and ":latest" not in svc["image"]
        assert svc["restart"] in ("unless-stopped", "always", "on-failure")
        assert svc["env_file"] == ["vllm.env"]
        assert svc["healthcheck"]["test"][-1].endswith(f":{r.port}/health")
        if v.cpu:
            assert "deploy" not in svc and svc["image"].startswith("vllm/vllm-openai-cpu:v")
            assert svc["environment"]["VLLM_CPU_KVCACHE_SPACE"] == "4"
        else:
            (dev,) = svc["deploy"]["resources"]["reservations"]["devices"]
            assert dev == {"driver": "nvidia", "device_ids": [str(g) for g in r.gpu_ids],
                           "capabilities": ["gpu"]}
            assert svc["ipc"] == "host"
    if len(v.replicas) > 1:
        lb = doc["services"]["lb"]
        assert lb["ports"] == [f"{v.lb_port}:{v.lb_port}"]
        conf = art.files["nginx.conf"]
        for r in v.replicas:
            assert f"server {r.name}:{r.port} " in conf


@pytest.mark.parametrize("name", list(PLANS))
def test_k8s_manifests_validate(name, lws_validator):
    plan = PLANS[name]()
    v = build_vars(plan)
    art = render(plan, "k8s")
    if v.multinode:
        docs = check_yaml_docs(art.files["lws.yaml"])
        kinds = [d["kind"] for d in docs]
        assert kinds == ["PersistentVolumeClaim", "LeaderWorkerSet", "Service"]
        for d in docs:
            if d["kind"] == "LeaderWorkerSet":
                errors = sorted(lws_validator.iter_errors(d), key=str)
                assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]
                tmpl = d["spec"]["leaderWorkerTemplate"]
                assert tmpl["size"] == v.nnodes >= 2
                for role in ("leaderTemplate", "workerTemplate"):
                    # the pod templates inside also pass Kubernetes' own PodTemplate schema
                    k8s_validate({"apiVersion": "v1", "kind": "PodTemplate",
                                  "metadata": {"name": "x"}, "template": tmpl[role]})
                    c = tmpl[role]["spec"]["containers"][0]
                    assert c["resources"]["limits"]["nvidia.com/gpu"] == v.gpus_per_node
                leader = tmpl["leaderTemplate"]["spec"]["containers"][0]["command"][2].replace("$$", "$")
                worker = tmpl["workerTemplate"]["spec"]["containers"][0]["command"][2].replace("$$", "$")
                assert f"--pipeline-parallel-size {plan.vllm_args['pipeline_parallel_size']}" in leader
                if v.backend == "native":
                    assert "--distributed-executor-backend mp" in leader and "--headless" not in leader
                    assert '--node-rank "$node_rank"' in worker and "--headless" in worker
                    assert "LWS_LEADER_ADDRESS" in worker and "LWS_WORKER_INDEX" in worker
                else:
                    assert "--distributed-executor-backend ray" in leader and "--nnodes" not in leader
                    assert "ray start --address" in worker
                env = {e["name"]: e for e in tmpl["leaderTemplate"]["spec"]["containers"][0]["env"]}
                assert env["VLLM_HOST_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
                assert "GLOO_SOCKET_IFNAME" in env
            else:
                k8s_validate(d)
        return
    docs = check_yaml_docs(art.files["k8s.yaml"])
    assert [d["kind"] for d in docs] == ["PersistentVolumeClaim", "Deployment", "Service"]
    for d in docs:
        k8s_validate(d)
    dep = docs[1]
    assert dep["spec"]["replicas"] == len(plan.replicas)
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == v.image
    if v.cpu:
        assert "resources" not in c
    else:
        assert c["resources"]["limits"]["nvidia.com/gpu"] == plan.vllm_args["tensor_parallel_size"] * \
            plan.vllm_args.get("pipeline_parallel_size", 1)
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["path"] == "/health"
    assert {"name": "shm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert set(refs) == {"HF_TOKEN", "VLLM_API_KEY"}
    assert all("value" not in e for e in c["env"] if e["name"] in refs)


def test_lws_validator_catches_mistakes(lws_validator):
    art = render(PLANS["multinode-pp2"](), "k8s")
    lws = check_yaml_docs(art.files["lws.yaml"])[1]
    lws["spec"]["leaderWorkerTemplate"]["size"] = "two"
    assert list(lws_validator.iter_errors(lws))


@pytest.mark.parametrize("name", list(PLANS))
def test_every_shell_script_passes_bash_n(name, tmp_path):
    for rel, text in render(PLANS[name](), "all").files.items():
        if rel.endswith(".sh"):
            f = tmp_path / rel
            f.write_text(text)
            p = subprocess.run(["bash", "-n", str(f)], capture_output=True, text=True)
            assert p.returncode == 0, (rel, p.stderr)
            assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text


@pytest.mark.parametrize("name", list(PLANS))
def test_systemd_units_parse_back(name):
    plan = PLANS[name]()
    v = build_vars(plan)
    if v.multinode or v.spread:
        with pytest.raises(BadInput):
            render(plan, "systemd")
        return
    art = render(plan, "systemd")
    assert sorted(art.files) == sorted([f"{r.name}.service" for r in v.replicas] + ["vllm.env"])
    for r in v.replicas:
        unit = art.files[f"{r.name}.service"].replace("\\\n", " ")
        (line,) = [ln for ln in unit.splitlines() if ln.startswith("ExecStart=")]
        argv = systemd_split(line[len("ExecStart="):])
        assert argv[:1] == ["/usr/bin/env"]
        if v.cpu:
            assert argv[1:4] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
            assert argv[4:] == list(r.module_argv)
        else:
            assert argv[1:] == ["vllm", "serve", *r.argv]
            assert f'Environment="CUDA_VISIBLE_DEVICES={r.cuda_visible_devices}"' in unit
        assert "Restart=on-failure" in unit and "EnvironmentFile=/etc/vllm/vllm.env" in unit


def test_multinode_shapes_of_the_real_planner():
    spanning = build_vars(PLANS["planner-spanning"]())
    assert (spanning.multinode, spanning.nnodes, spanning.gpus_per_node, spanning.head_address) == \
        (True, 2, 2, "node0")
    assert "--distributed-executor-backend" in spanning.ray_argv
    spread = build_vars(PLANS["planner-spread"]())
    assert (spread.multinode, spread.spread, len(spread.replicas)) == (False, True, 2)
    assert sorted(render(PLANS["planner-spread"](), "all").files) == ["k8s.yaml", "vllm.env"]


def test_native_multinode_node_scripts():
    plan = PLANS["planner-405b-native"]()
    v = build_vars(plan)
    assert (v.multinode, v.backend, v.nnodes, v.master_port) == (True, "native", 2, 29500)
    assert sorted(render(plan, "all").files) == ["lws.yaml", "node-0.sh", "node-1.sh", "vllm.env"]
    files = render(plan, "command").files
    head, worker = files["node-0.sh"], files["node-1.sh"]
    for text in (head, worker):
        assert "--nnodes 2 --node-rank \"$node_rank\" --master-addr \"$master_addr\" --master-port \"$master_port\"" in text
        assert 'master_port="${VLLM_MASTER_PORT:-29500}"' in text and "master_addr=node0" in text
        assert "--distributed-executor-backend mp" in text and "--tensor-parallel-size 8" in text
    assert "node_rank=0" in head and "--headless" not in head and "--port 8000" in head
    assert "node_rank=1" in worker and worker.rstrip().endswith("--headless") and "--port" not in worker
    # Ray formats of a native plan drop the native flags (vLLM refuses --nnodes with the Ray executor)
    ray = render(plan, "ray").files["ray-head.sh"]
    assert "--distributed-executor-backend ray" in ray
    assert not any(f in ray for f in ("--nnodes", "--node-rank", "--master-addr", "--master-port", "backend mp"))
    for fmt in ("compose", "systemd"):
        with pytest.raises(BadInput, match="one host") as exc:
            render(plan, fmt)
        assert "--format command or k8s" in exc.value.hint


def test_ray_multinode_plan_has_no_node_commands():
    plan = PLANS["planner-405b-ray"]()
    assert build_vars(plan).backend == "ray"
    with pytest.raises(BadInput, match="uses Ray"):
        render(plan, "command")
    head = render(plan, "ray").files["ray-head.sh"]
    assert "--pipeline-parallel-size 2" in head and "--distributed-executor-backend ray" in head
    assert '${VLLM_HOST_IP:+"--node-ip-address=$VLLM_HOST_IP"}' in head


def test_native_two_replicas_have_their_own_masters():
    plan = PLANS["planner-405b-native-2-replicas"]()
    files = render(plan, "command").files
    assert sorted(files) == ["replica-0-node-0.sh", "replica-0-node-1.sh", "replica-1-node-0.sh",
                             "replica-1-node-1.sh", "vllm.env"]
    assert "master_addr=node2" in files["replica-1-node-1.sh"] and "--port" not in files["replica-1-node-1.sh"]
    assert "--port 8001" in files["replica-1-node-0.sh"] and "master_addr=node0" in files["replica-0-node-1.sh"]
    assert all('"${VLLM_MASTER_PORT:-29555}"' in t for n, t in files.items() if n.endswith(".sh"))


@pytest.mark.parametrize("backend", ["native", "ray"])
def test_node_network_settings_come_from_the_plan(backend, tmp_path):
    plan = PLANS[f"planner-405b-{backend}-addresses"]()
    files = render(plan, "command" if backend == "native" else "ray").files
    head = files["node-0.sh" if backend == "native" else "ray-head.sh"]
    assert "host_ip=192.0.2.10" in head and 'export VLLM_HOST_IP="${VLLM_HOST_IP:-$host_ip}"' in head
    assert "gloo_ifname=ens5" in head
    if backend == "native":
        worker = files["node-1.sh"]
        assert "host_ip=192.0.2.11" in worker and "nccl_ifname=ib0" in worker and "master_addr=192.0.2.10" in worker
    else:
        worker = files["ray-worker.sh"]
        assert "host_ip=" not in worker and "head_address=192.0.2.10" in worker
    # an unset network variable is reported when the script runs, and an env value wins
    script = tmp_path / "net.sh"
    net = head.split("set -euo pipefail", 1)[1].split("node_rank=" if backend == "native" else "ray start", 1)[0]
    script.write_text("set -euo pipefail\n" + net + 'echo "ip=$VLLM_HOST_IP"\n')
    env = {"PATH": os.environ["PATH"], "VLLM_HOST_IP": "198.51.100.7", "VLLM_ENV_FILE": str(tmp_path / "none")}
    p = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert "ip=198.51.100.7" in p.stdout and "NCCL_SOCKET_IFNAME is not set" in p.stderr


def test_formats_and_files():
    plan = make_plan(replicas=2)
    files = {f: sorted(render(plan, f).files) for f in FORMATS}
    assert files == {
        "command": ["serve.sh", "vllm.env"],
        "compose": ["docker-compose.yml", "nginx.conf", "vllm.env"],
        "systemd": ["vllm-0.service", "vllm-1.service", "vllm.env"],
        "k8s": ["k8s.yaml", "vllm.env"],
        "ray": ["ray-head.sh", "ray-worker.sh", "vllm.env"],
    }
    assert set(render(plan, "all").files) == set().union(*map(set, files.values()))
    multi = render(PLANS["multinode-pp2"](), "all")
    assert sorted(multi.files) == ["lws.yaml", "ray-head.sh", "ray-worker.sh", "vllm.env"]
    with pytest.raises(BadInput, match="unknown format"):
        render(plan, "helm")


def test_args_come_from_the_plan_only():
    plan = make_plan(tp=2, vllm_args={"max_model_len": 12345, "kv_cache_dtype": "fp8",
                                      "enable_chunked_prefill": False, "enforce_eager": False},
                     extra_args=["--enable-auto-tool-choice", "--tool-call-parser", "hermes"])
    v = build_vars(plan)
    argv = list(v.replicas[0].argv)
    assert argv[0] == "Qwen/Qwen2.5-Coder-7B-Instruct"
    assert argv[argv.index("--max-model-len") + 1] == "12345"
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert argv[argv.index("--kv-cache-dtype") + 1] == "fp8"
    assert "--no-enable-chunked-prefill" in argv and "--enforce-eager" not in argv
    assert argv[-3:] == ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
    assert argv[argv.index("--port") + 1] == "8000"
    # one argument list for every format
    art = render(plan, "all")
    compose = yaml.safe_load(art.files["docker-compose.yml"])
    assert compose["services"]["vllm"]["command"] == argv
    dep = check_yaml_docs(art.files["k8s.yaml"])[1]
    assert dep["spec"]["template"]["spec"]["containers"][0]["args"] == argv


def test_no_numbers_in_templates():
    """Every number comes from the plan or vars.py: templates hold none (bar 'v1' API names)."""
    import re

    from vllm_ops.resources import templates_dir

    for t in sorted(Path(templates_dir()).glob("*.j2")):
        text = re.sub(r"\{\{.*?\}\}|\{%.*?%\}", "", t.read_text())
        text = re.sub(r"(apps/v1|leaderworkerset\.x-k8s\.io/v1|\bv1\b|%d|%s|x86-64|\$\d|\$!|1\.1)", "", text)
        text = re.sub(r"(?m)^\s*#.*$", "", text)    # comments may mention numbers
        text = re.sub(r"(?m)^.*python3 -c .*$", "", text)  # the Ray node-count check (code, not settings)
        text = re.sub(r"\bexit \d\b|\d?>&\d|\d?>/dev/null|status=0|0-9", "", text)  # exit statuses, redirections, [0-9]
        nums = re.findall(r"(?<![A-Za-z_])\d+", text)
        assert not nums, (t.name, nums)


def test_image_is_pinned():
    assert build_vars(make_plan()).image == "vllm/vllm-openai:v0.33.0"
    assert build_vars(make_plan(image="")).image == "vllm/vllm-openai:v0.33.0"
    assert build_vars(make_plan(cpu=True, image="")).image == "vllm/vllm-openai-cpu:v0.33.0"
    for bad in ("vllm/vllm-openai:latest", "vllm/vllm-openai"):
        with pytest.raises(BadInput, match="not pinned"):
            build_vars(make_plan(image=bad))


def test_start_period_grows_with_the_weights():
    small = build_vars(make_plan(weights_gib=1.0)).start_period_s
    big = build_vars(make_plan(weights_gib=140.0, tp=8)).start_period_s
    assert 180 <= small < big <= 3600
    art = render(make_plan(weights_gib=140.0, tp=8), "compose")
    hc = yaml.safe_load(art.files["docker-compose.yml"])["services"]["vllm"]["healthcheck"]
    assert hc["start_period"] == f"{big}s"


def test_cpu_plan_uses_the_module_entry_point(tmp_path):
    art = render(make_plan(cpu=True, model="Qwen/Qwen2.5-0.5B"), "command")
    sh = art.files["serve.sh"]
    assert 'exec "$python_bin" -m vllm.entrypoints.openai.api_server' in sh
    assert "export VLLM_CPU_KVCACHE_SPACE=4" in sh and "vllm serve" not in sh
    with pytest.raises(BadInput, match="does not support Ray"):
        render(make_plan(cpu=True), "ray")


def test_write_is_atomic_and_keeps_an_existing_env_file(tmp_path):
    out = tmp_path / "out"
    art = render(make_plan(replicas=2), "all", output_dir=out)
    assert sorted(os.listdir(out)) == sorted(art.files)
    assert not list(out.glob("*.tmp"))
    assert (out / "serve.sh").stat().st_mode & 0o777 == 0o755
    assert (out / "vllm.env").stat().st_mode & 0o777 == 0o600
    (out / "vllm.env").write_text("HF_TOKEN=mine\n")
    art2 = render(make_plan(replicas=2), "command", output_dir=out)
    assert (out / "vllm.env").read_text() == "HF_TOKEN=mine\n"
    assert art2.kept == [str(out / "vllm.env")]


def test_env_file_holds_names_only():
    text = render(make_plan(), "command").files["vllm.env"]
    assigns = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert assigns == ["HF_TOKEN=", "VLLM_API_KEY="]


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def test_cli_render_saved_plan(run_cli, tmp_path):
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(make_plan().to_json())
    rc, out, err = run_cli("render", "--plan", str(plan_file), "--format", "compose")
    assert rc == 0, err
    assert yaml.safe_load(out)["services"]["vllm"]["image"] == "vllm/vllm-openai:v0.33.0"
    rc, out, err = run_cli("render", "--plan", str(plan_file), "--format", "all")
    assert rc == 0 and "# ==> k8s.yaml <==" in out and "# ==> serve.sh <==" in out
    rc, out, err = run_cli("render", "--plan", str(plan_file), "--format", "k8s", "--json")
    doc = json.loads(out)
    assert doc["files"] == ["k8s.yaml", "vllm.env"] and "Deployment" in doc["contents"]["k8s.yaml"]
    rc, out, err = run_cli("render", "--plan", str(plan_file), "-f", "systemd", "-o", str(tmp_path / "o"))
    assert rc == 0 and out == "" and "vllm.service" in err
    assert (tmp_path / "o" / "vllm.service").exists()


def test_cli_render_errors(run_cli, tmp_path):
    rc, out, err = run_cli("render", "--format", "compose")
    assert rc == 2 and "nothing to render" in err
    rc, out, err = run_cli("render", "--plan", str(tmp_path / "missing.json"))
    assert rc == 2 and "plan file not found" in err
    bad = tmp_path / "latest.json"
    bad.write_text(make_plan(image="vllm/vllm-openai:latest").to_json())
    rc, out, err = run_cli("render", "--plan", str(bad), "-f", "compose")
    assert rc == 2 and "not pinned" in err and err.count("\n") == 1
