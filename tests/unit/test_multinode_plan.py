"""planning.plan on several nodes: one `nodes` shape (planning.multinode's) for plan, render and
launch, the single-node memory model, and the shared CLI flags --distributed-backend / --master-port."""
from __future__ import annotations

import json

import pytest

from vllm_ops.errors import ImpossiblePin
from vllm_ops.hardware import parse_gpu_spec
from vllm_ops.hardware.inventory import Inventory, Node
from vllm_ops.models import load_model_spec
from vllm_ops.planning import plan
from vllm_ops.planning.multinode import plan_multinode
from vllm_ops.planning.planner import plan_layout

V = "0.33.0"
M405 = "meta-llama/Llama-3.1-405B-Instruct"
NODE_KEYS = {"name", "address", "rank", "replica", "head", "gpu_ids", "env"}


@pytest.fixture(scope="module")
def m405():
    return load_model_spec(M405)


def test_plan_routes_several_nodes_through_plan_multinode(m405):
    inv = parse_gpu_spec("2x(8xH100)")
    p = plan(m405, inv, vllm_version=V)
    assert p.to_dict() == plan_multinode(m405, inv, vllm_version=V).to_dict()
    assert (p.vllm_args["tensor_parallel_size"], p.vllm_args["pipeline_parallel_size"]) == (8, 2)
    assert p.vllm_args["distributed_executor_backend"] == "ray" and "nnodes" not in p.vllm_args
    assert all(NODE_KEYS <= set(vars(n)) for n in p.nodes)
    assert [(n.rank, n.replica, n.head) for n in p.nodes] == [(0, 0, True), (1, 0, False)]
    assert [w.code for w in p.warnings].count("inter-node-bandwidth") == 1
    assert "pipeline hand-off" in next(w.message for w in p.warnings if w.code == "inter-node-bandwidth")


def test_memory_figures_are_the_single_node_models(m405):
    inv = parse_gpu_spec("2x(8xH100)")
    ref = plan_layout(m405, inv, pins={"tensor_parallel_size": 8, "pipeline_parallel_size": 2}, vllm_version=V)
    for backend in ("ray", "native"):
        p = plan(m405, inv, vllm_version=V, backend=backend)
        assert p.memory == ref.memory and p.margin_gib == ref.margin_gib and p.fits == ref.fits
        assert p.alternatives == ref.alternatives


def test_native_backend_and_master_port(m405):
    p = plan(m405, parse_gpu_spec("2x(8xH100)"), vllm_version=V, backend="native", master_port=29555)
    va = p.vllm_args
    assert (va["distributed_executor_backend"], va["nnodes"], va["node_rank"], va["master_addr"],
            va["master_port"]) == ("mp", 2, 0, "node0", 29555)
    assert "--nnodes 2 --node-rank 0 --master-addr node0 --master-port 29555" in p.command


def test_one_node_keeps_the_single_node_plan(m405):
    one = parse_gpu_spec("8xH100")
    assert plan(m405, one, vllm_version=V).to_dict() == plan_layout(m405, one, vllm_version=V).to_dict()
    assert plan(m405, one, vllm_version=V).nodes == []


def test_replicas_per_node_use_the_same_shape():
    m = load_model_spec("Qwen/Qwen2.5-Coder-7B-Instruct")
    p = plan(m, parse_gpu_spec("2x(4xL4)"), vllm_version=V)
    assert [(n.name, n.rank, n.replica) for n in p.nodes] == [("node0", 0, None), ("node1", 0, None)]
    assert {r.node for r in p.replicas} == {"node0", "node1"}
    assert "inter-node-bandwidth" not in {w.code for w in p.warnings}


def test_cpu_nodes_default_to_native(tmp_path):
    from tests.support.testbed import make_tiny_model

    spec = load_model_spec(str(make_tiny_model(tmp_path / "tiny")))
    inv = Inventory(nodes=tuple(Node(gpus=(), hostname=f"h{i}", address=f"10.200.0.{i + 1}", cpu_count=1,
                                     ram_bytes=24 * 2**30) for i in range(2)))
    p = plan(spec, inv, vllm_version="0.32.0", env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    assert p.vllm_args["nnodes"] == 2 and p.vllm_args["master_addr"] == "10.200.0.1"
    with pytest.raises(ImpossiblePin, match="does not support ray"):
        plan(spec, inv, vllm_version="0.32.0", backend="ray")


def test_secrets_stay_out_of_multinode_plans(m405):
    p = plan(m405, parse_gpu_spec("2x(8xH100)"), vllm_version=V, extra_args=["--api-key", "sk-SENTINEL"],
             env_secrets=["MY_TOKEN"])
    assert "sk-SENTINEL" not in p.to_json() and {"VLLM_API_KEY", "MY_TOKEN"} <= set(p.env_secrets)


def test_cli_plan_flags(run_cli):
    rc, out, err = run_cli("plan", "--gpus", "2x(8xH100)", "--model", M405, "--offline", "--json",
                           "--distributed-backend", "native", "--master-port", "29600")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["vllm_args"]["master_port"] == 29600 and doc["vllm_args"]["nnodes"] == 2
    assert [n["rank"] for n in doc["nodes"]] == [0, 1]
    rc, out, err = run_cli("plan", "--gpus", "2x(8xH100)", "--model", M405, "--offline")
    assert rc == 0 and "nodes (ray)" in out and "inter-node-bandwidth" in out
    rc, out, err = run_cli("plan", "--gpus", "2x(8xH100)", "--model", M405, "--master-port", "70000")
    assert rc == 2 and "--master-port" in err
    rc, out, err = run_cli("plan", "--gpus", "2x(8xH100)", "--model", M405, "--distributed-backend", "mpi")
    assert rc == 2


def test_cli_render_uses_the_plans_path(run_cli):
    rc, out, err = run_cli("render", "--gpus", "2x(8xH100)", "--model", M405, "--offline", "-f", "all",
                           "--distributed-backend", "native", "--json")
    assert rc == 0, err
    assert json.loads(out)["files"] == ["lws.yaml", "node-0.sh", "node-1.sh", "vllm.env"]
    rc, out, err = run_cli("render", "--gpus", "2x(8xH100)", "--model", M405, "--offline", "-f", "all", "--json")
    assert rc == 0 and json.loads(out)["files"] == ["lws.yaml", "ray-head.sh", "ray-worker.sh", "vllm.env"]
