"""Multi-node planning (TP in a node, PP across nodes, DP over node groups), the Ray resource
check, Ray status parsing and the native multi-node commands. No real parts here."""
from __future__ import annotations

import shlex
from dataclasses import replace

import pytest

from vllm_ops.errors import BadInput, ImpossiblePin
from vllm_ops.hardware import parse_gpu_spec
from vllm_ops.hardware.inventory import Inventory, Node
from vllm_ops.launch import ray_backend as rb
from vllm_ops.launch.locate import VllmCommand
from vllm_ops.launch.multinode import HEADLESS_BOOTSTRAP, NativeLaunch, node_command, rank_plan
from vllm_ops.models import load_model_spec
from vllm_ops.planning import plan as plan_single
from vllm_ops.planning.multinode import node_args, plan_multinode
from vllm_ops.planning.plan import Plan

V = "0.25.0"


@pytest.fixture(scope="module")
def m405():
    return load_model_spec("meta-llama/Llama-3.1-405B-Instruct")


@pytest.fixture(scope="module")
def m70():
    return load_model_spec("meta-llama/Llama-3.1-70B-Instruct")


def test_405b_on_two_h100_nodes_is_tp8_pp2(m405):
    p = plan_multinode(m405, parse_gpu_spec("2x(8xH100)"), vllm_version=V)
    assert p.fits
    assert p.vllm_args["tensor_parallel_size"] == 8
    assert p.vllm_args["pipeline_parallel_size"] == 2
    assert p.vllm_args["distributed_executor_backend"] == "ray"
    assert [(n.name, n.rank, n.replica, n.gpu_ids) for n in p.nodes] == [
        ("node0", 0, 0, list(range(8))), ("node1", 1, 0, list(range(8)))]
    assert len(p.replicas) == 1
    assert [w.code for w in p.warnings].count("inter-node-bandwidth") == 1
    assert "--pipeline-parallel-size 2" in p.command and "--distributed-executor-backend ray" in p.command


def test_memory_is_the_single_node_planners(m405):
    """The multi-node plan's memory is exactly what the single-node planner gives for that layout."""
    inv = parse_gpu_spec("2x(8xH100)")
    p = plan_multinode(m405, inv, vllm_version=V)
    ref = plan_single(m405, inv, pins={"tensor_parallel_size": 8, "pipeline_parallel_size": 2}, vllm_version=V)
    assert p.memory == ref.memory
    assert p.margin_gib == ref.margin_gib


def test_four_nodes_give_two_replicas_with_their_own_masters(m405):
    inv = parse_gpu_spec("4x(8xH100)")
    p = plan_multinode(m405, inv, vllm_version=V, backend="native", master_port=29555)
    assert len(p.replicas) == 2
    assert [r.port for r in p.replicas] == [8000, 8001]
    assert [(n.rank, n.replica) for n in p.nodes] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    va = p.vllm_args
    assert (va["nnodes"], va["node_rank"], va["master_addr"], va["master_port"]) == (2, 0, "node0", 29555)
    assert va["distributed_executor_backend"] == "mp"
    # the replica-1 worker talks to its own head, with --headless
    w = node_args(p, p.nodes[3])
    assert (w["node_rank"], w["master_addr"], w["headless"]) == (1, "node2", True)
    assert "2 per replica" in p.reasons["replicas"]


def test_model_that_fits_one_node_makes_a_replica_per_node(m70):
    p = plan_multinode(m70, parse_gpu_spec("2x(8xH100)"), vllm_version=V)
    assert p.vllm_args["pipeline_parallel_size"] == 1
    assert "distributed_executor_backend" not in p.vllm_args
    assert len(p.replicas) >= 2 and {r.node for r in p.replicas} == {"node0", "node1"}
    assert not any(w.code == "inter-node-bandwidth" for w in p.warnings)


def test_addresses_from_a_list_of_nodes(m405):
    one = parse_gpu_spec("8xH100").nodes[0]
    inv = Inventory(nodes=(replace(one, hostname="gpu-a", address="192.0.2.10"),
                           replace(one, hostname="gpu-b", address="192.0.2.11")))
    p = plan_multinode(m405, inv, vllm_version=V, backend="native")
    assert p.vllm_args["master_addr"] == "192.0.2.10"
    assert [n.name for n in p.nodes] == ["gpu-a", "gpu-b"]
    assert p.nodes[1].address == "192.0.2.11"


def test_tp_across_nodes_is_warned_loudly(m405):
    p = plan_multinode(m405, parse_gpu_spec("2x(8xH100)"), vllm_version=V,
                       pins={"tensor_parallel_size": 16})
    w = [w.message for w in p.warnings if w.code == "inter-node-bandwidth"]
    assert w and "spans 2 nodes" in w[0] and "all-reduce" in w[0]


def test_unequal_nodes_are_refused(m405):
    inv = Inventory(nodes=(parse_gpu_spec("8xH100").nodes[0], parse_gpu_spec("4xH100").nodes[0]))
    with pytest.raises(BadInput, match="node1 has 4 GPU"):
        plan_multinode(m405, inv, vllm_version=V)


def test_too_many_pinned_nodes(m405):
    with pytest.raises(ImpossiblePin):
        plan_multinode(m405, parse_gpu_spec("2x(8xH100)"), vllm_version=V,
                       pins={"tensor_parallel_size": 8, "pipeline_parallel_size": 3})


def test_plan_round_trips(m405):
    p = plan_multinode(m405, parse_gpu_spec("2x(8xH100)"), vllm_version=V, backend="native")
    assert Plan.from_dict(p.to_dict()).nodes == p.nodes


# -- CPU nodes --------------------------------------------------------------------------------
def _cpu_nodes(n=2):
    return Inventory(nodes=tuple(Node(gpus=(), hostname=f"h{i}", address=f"10.200.0.{i + 1}", cpu_count=1,
                                      ram_bytes=24 * 2**30) for i in range(n)))


def _tiny(tmp_path):
    from tests.support.testbed import make_tiny_model

    return load_model_spec(str(make_tiny_model(tmp_path / "tiny")))


def test_cpu_nodes_native_pp2(tmp_path):
    p = plan_multinode(_tiny(tmp_path), _cpu_nodes(), vllm_version="0.32.0", backend="native",
                       env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    va = p.vllm_args
    assert (va["tensor_parallel_size"], va["pipeline_parallel_size"], va["nnodes"]) == (1, 2, 2)
    assert va["master_addr"] == "10.200.0.1"
    assert "VLLM_CPU_OMP_THREADS_BIND" not in p.env and p.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert [n.env["VLLM_HOST_IP"] for n in p.nodes] == ["10.200.0.1", "10.200.0.2"]
    py = VllmCommand(("/v/python", "-m", "vllm.entrypoints.openai.api_server"), "module", python="/v/python")
    nl = NativeLaunch(node_env={0: {"VLLM_CPU_OMP_THREADS_BIND": "0"}, 1: {"VLLM_CPU_OMP_THREADS_BIND": "1"}})
    head = node_command(p, 0, py, nl)
    assert head[:3] == ["/v/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert "--headless" not in head and head[head.index("--node-rank") + 1] == "0"
    worker = node_command(p, 1, py, nl)
    assert worker[:3] == ["/v/python", "-c", HEADLESS_BOOTSTRAP]
    assert "--headless" in worker and worker[worker.index("--node-rank") + 1] == "1"
    assert "--port" not in worker
    assert rank_plan(p, 1, nl).env["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    serve = VllmCommand(("vllm", "serve"), "serve")
    assert node_command(p, 1, serve, nl)[:2] == ["vllm", "serve"]


def test_cpu_with_ray_is_refused_by_the_planner(tmp_path):
    with pytest.raises(ImpossiblePin, match="does not support ray"):
        plan_multinode(_tiny(tmp_path), _cpu_nodes(), vllm_version="0.32.0", backend="ray")


# -- Ray: resources, status parsing, diagnosis -----------------------------------------------------
def _res(gpus_per_node, cpus=1):
    nodes = [{"ip": f"10.0.0.{i}", "alive": True, "resources": {"GPU": float(g), "CPU": float(cpus)}}
             for i, g in enumerate(gpus_per_node)]
    total = {"GPU": float(sum(gpus_per_node)), "CPU": float(cpus * len(gpus_per_node))}
    return rb.ClusterResources(total=total, nodes=nodes)


def test_resource_check(m405):
    p = plan_multinode(m405, parse_gpu_spec("2x(8xH100)"), vllm_version=V)
    need = rb.check_resources(p, _res([8, 8]), "h:6379")
    assert (need.key, need.total, need.per_node, need.nodes) == ("GPU", 16, 8, 2)
    with pytest.raises(rb.NotEnoughResources) as e:
        rb.check_resources(p, _res([8]), "h:6379")
    msg = e.value.one_line()
    assert "has 8 GPU on 1 node(s)" in msg and "needs 16 GPU" in msg and "not starting vLLM" in msg
    assert "\n" not in msg
    with pytest.raises(rb.NotEnoughResources, match="8 GPU on each of 2 nodes"):
        rb.check_resources(p, _res([12, 4]), "h:6379")


RAY_STATUS = """======== Autoscaler status: 2026-11-25 23:49:21.040374 ========
Node status
---------------------------------------------------------------
Active:
 1 node_76963f80dc2af8517bf7cbbb828901321200c068f9f1b03cad53f805
 1 node_729a79a338c43ab4dcd17d6f6b1ad200e6834f97e36b915822bc9755
Pending:
 (no pending nodes)
Recent failures:
 (no failures)

Resources
---------------------------------------------------------------
Total Usage:
 0.0/2.0 CPU
 0.0/4.0 GPU
 0B/34.86GiB memory
 0B/190.73MiB object_store_memory

From request_resources:
 (none)
Pending Demands:
 (no resource demands)
"""


def test_parse_ray_status():
    """Output of a real `ray status` (Ray 2.60, two nodes; a GPU line added)."""
    r = rb.parse_ray_status(RAY_STATUS)
    assert r.total["CPU"] == 2.0 and r.total["GPU"] == 4.0
    assert r.total["memory"] == pytest.approx(34.86 * 2**30)
    assert len(r.alive_nodes()) == 2


def test_ray_start_argv():
    o = rb.RayNodeOptions(ray="/v/ray", node_ip="10.200.0.1", port=6390, num_cpus=1, num_gpus=0,
                          object_store_memory=10**8, temp_dir="/tmp/r", prefix=("ip", "netns", "exec", "a"))
    head = rb._start_argv(o, True, None)
    assert head[:6] == ["ip", "netns", "exec", "a", "/v/ray", "start"]
    for w in ("--head", "--port=6390", "--include-dashboard=false", "--node-ip-address=10.200.0.1",
              "--num-cpus=1", "--num-gpus=0", "--object-store-memory=100000000", "--temp-dir=/tmp/r",
              "--disable-usage-stats"):
        assert w in head
    worker = rb._start_argv(o, False, "10.200.0.1:6390")
    assert "--address=10.200.0.1:6390" in worker and "--head" not in worker


def test_join_checks_the_address():
    with pytest.raises(BadInput):
        rb.join("no-port", rb.RayNodeOptions(ray="ray"))


def test_ray_diagnosis_of_the_real_cpu_error():
    log = ("(EngineCore pid=22382) ERROR 11-25 23:50:38 [core.py:1510] ValueError: current platform cpu "
           "does not support ray.\n")
    d = rb.diagnose_ray(log)
    assert d.code == "ray-unsupported-platform"
    assert "current platform cpu does not support ray" in d.evidence
    assert "--nodes" in d.fix


def test_ray_plan_forces_the_executor(m405):
    p = plan_multinode(m405, parse_gpu_spec("2x(8xH100)"), vllm_version=V, backend="native")
    r = rb.ray_plan(p)
    assert r.vllm_args["distributed_executor_backend"] == "ray"
    assert not {"nnodes", "node_rank", "master_addr", "master_port"} & set(r.vllm_args)


def test_command_is_shell_safe(m405):
    p = plan_multinode(m405, parse_gpu_spec("2x(8xH100)"), vllm_version=V, backend="native",
                       extra_args=["--enable-prefix-caching"])
    words = shlex.split(p.command)
    assert words[-1] == "--enable-prefix-caching"
    assert words[words.index("--nnodes") + 1] == "2"


def test_multinode_diagnosis_of_the_real_gloo_loopback_error():
    """Rank 0's log when rank 1 (another network namespace) advertised its hostname's 127.0.0.1."""
    from vllm_ops.launch.multinode import diagnose_multinode

    log = ("[E1125 23:57:33.216601653 ProcessGroupGloo.cpp:67] Gloo connectFullMesh failed with "
           "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:152] timed out connecting: "
           "SO_ERROR: Connection refused, remote=[127.0.0.1]:4526$0\n")
    d = diagnose_multinode(log)
    assert d.code == "multinode-loopback-address" and "GLOO_SOCKET_IFNAME" in d.fix
    assert diagnose_multinode(log.replace("127.0.0.1", "10.0.0.2")).code == "multinode-connect"


def test_requirement_of_a_replica_per_node_plan(m70):
    p = plan_multinode(m70, parse_gpu_spec("2x(8xH100)"), vllm_version=V)
    need = rb.requirement(p)
    tp = p.vllm_args["tensor_parallel_size"]
    assert (need.total, need.nodes, need.per_node) == (tp, 1, tp)


def test_multinode_diagnosis_of_the_real_host_ip_hang():
    from vllm_ops.launch.multinode import diagnose_multinode

    log = ("/x/vllm/v1/executor/multiproc_executor.py:152: UserWarning: Failed to get the IP address, using "
           "0.0.0.0 by default. The value can be set by the environment variable VLLM_HOST_IP or HOST_IP.\n")
    assert diagnose_multinode(log).code == "multinode-host-ip"
