"""Golden files: plans made by the real planner, and what ``render(plan, "all")`` makes of them.

- ``tests/golden/l4x4-qwen2.5-coder-7b-instruct/``: l4x4 + Qwen/Qwen2.5-Coder-7B-Instruct, every
  single-host format;
- ``tests/golden/2x8xh100-llama-3.1-405b-ray/``: ``--gpus 2x(8xH100)`` + meta-llama/Llama-3.1-405B-Instruct
  (TP 8 x PP 2 over two nodes) with Ray: ``ray-head.sh``, ``ray-worker.sh`` and a LeaderWorkerSet;
- ``tests/golden/2x8xh100-llama-3.1-405b-native/``: the same with vLLM's native multi-node mode
  (``--distributed-backend native``): ``node-0.sh`` (serves), ``node-1.sh`` (``--headless``) and a
  LeaderWorkerSet.

Each ``plan.json`` is what the planner makes of it; the other files are the rendered plan. After an
intended change, regenerate with ``VLLM_OPS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest
tests/unit/test_render_golden.py`` and review the diff. Also: no secret value from the environment
appears in any rendered file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vllm_ops.planning.plan import Plan
from vllm_ops.render import render

ROOT = Path(__file__).resolve().parent.parent / "golden"
GOLDEN = ROOT / "l4x4-qwen2.5-coder-7b-instruct"
MODEL = "Qwen/Qwen2.5-Coder-7B-Instruct"
BIG_MODEL = "meta-llama/Llama-3.1-405B-Instruct"
VERSION = "0.33.0"
UPDATE = os.environ.get("VLLM_OPS_UPDATE_GOLDEN", "") not in ("", "0")


def planned() -> Plan:
    from vllm_ops.models import load_model_spec
    from vllm_ops.planning import plan
    from vllm_ops.profiles import load_profile

    profile = load_profile("l4x4")
    return plan(load_model_spec(MODEL, offline=True), profile.inventory(), pins={},
                vllm_version=VERSION, profile=profile)


def planned_2x8xh100(backend: str) -> Plan:
    from vllm_ops.hardware import parse_gpu_spec
    from vllm_ops.models import load_model_spec
    from vllm_ops.planning import plan

    return plan(load_model_spec(BIG_MODEL, offline=True), parse_gpu_spec("2x(8xH100)"), pins={},
                vllm_version=VERSION, backend=backend)


CASES = {
    "l4x4-qwen2.5-coder-7b-instruct": (planned, [
        "docker-compose.yml", "k8s.yaml", "nginx.conf", "ray-head.sh", "ray-worker.sh", "serve.sh",
        "vllm-0.service", "vllm-1.service", "vllm.env"]),
    "2x8xh100-llama-3.1-405b-ray": (lambda: planned_2x8xh100("ray"), [
        "lws.yaml", "ray-head.sh", "ray-worker.sh", "vllm.env"]),
    "2x8xh100-llama-3.1-405b-native": (lambda: planned_2x8xh100("native"), [
        "lws.yaml", "node-0.sh", "node-1.sh", "vllm.env"]),
}


def _golden_files(name: str = GOLDEN.name) -> dict[str, str]:
    d = ROOT / name
    return {p.name: p.read_text() for p in sorted(d.iterdir()) if p.name != "plan.json"} if d.is_dir() else {}


@pytest.mark.parametrize("name", list(CASES))
def test_planner_output_matches_the_golden_plan(name):
    doc = json.loads(CASES[name][0]().to_json())
    path = ROOT / name / "plan.json"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    assert doc == json.loads(path.read_text()), "planner output changed: VLLM_OPS_UPDATE_GOLDEN=1 to accept"


@pytest.mark.parametrize("name", list(CASES))
def test_rendered_files_match_the_golden_files(name):
    d = ROOT / name
    plan = Plan.load(str(d / "plan.json"))
    files = render(plan, "all").files
    if UPDATE:
        for old in d.iterdir():
            if old.name != "plan.json" and old.name not in files:
                old.unlink()
        for rel, text in files.items():
            (d / rel).write_text(text)
    golden = _golden_files(name)
    assert sorted(files) == sorted(golden)
    for rel, text in files.items():
        assert text == golden[rel], f"{rel} changed: VLLM_OPS_UPDATE_GOLDEN=1 to accept, then review the diff"


@pytest.mark.parametrize("name", list(CASES))
def test_golden_covers_every_format(name):
    assert sorted(_golden_files(name)) == CASES[name][1]


def test_multinode_goldens_are_tp8_pp2_over_two_nodes():
    for backend in ("ray", "native"):
        plan = Plan.load(str(ROOT / f"2x8xh100-llama-3.1-405b-{backend}" / "plan.json"))
        va = plan.vllm_args
        assert (va["tensor_parallel_size"], va["pipeline_parallel_size"]) == (8, 2)
        assert [(n.name, n.rank, n.replica) for n in plan.nodes] == [("node0", 0, 0), ("node1", 1, 0)]
        assert "inter-node-bandwidth" in {w.code for w in plan.warnings}
    ray = _golden_files("2x8xh100-llama-3.1-405b-ray")
    assert "--distributed-executor-backend ray" in ray["ray-head.sh"].replace(" \\\n  ", " ")
    for f in ray.values():
        assert "--nnodes" not in f and "--node-rank" not in f and "--master-addr" not in f
    native = _golden_files("2x8xh100-llama-3.1-405b-native")
    assert "--headless" not in native["node-0.sh"] and "--headless" in native["node-1.sh"]
    for f in ("node-0.sh", "node-1.sh"):
        assert '--nnodes 2 --node-rank "$node_rank" --master-addr "$master_addr"' in native[f]
        assert "VLLM_HOST_IP" in native[f] and "GLOO_SOCKET_IFNAME" in native[f] and "NCCL_SOCKET_IFNAME" in native[f]


SENTINELS = {"HF_TOKEN": "hf_SENTINEL_do_not_render_1234", "VLLM_API_KEY": "sk-SENTINEL-api-key-5678",
             "HUGGING_FACE_HUB_TOKEN": "hf_SENTINEL_legacy_9999"}


@pytest.mark.parametrize("fmt", ["command", "compose", "systemd", "k8s", "ray", "all"])
def test_no_secret_value_in_any_rendered_file(fmt, monkeypatch, tmp_path, run_cli):
    for k, v in SENTINELS.items():
        monkeypatch.setenv(k, v)
    from tests.unit.test_render import PLANS

    texts = []
    for mk in list(PLANS.values()) + [c[0] for c in CASES.values()]:
        try:
            texts += render(mk(), fmt).files.values()
        except Exception as exc:  # formats a plan cannot have (e.g. Ray on CPU) are refused
            assert type(exc).__name__ == "BadInput"
    out = tmp_path / "out"
    rc, stdout, stderr = run_cli("render", "--model", MODEL, "--profile", "l4x4", "--offline",
                                 "-f", fmt, "-o", str(out))
    assert rc == 0, stderr
    texts += [p.read_text() for p in out.iterdir()]
    rc, stdout2, stderr2 = run_cli("render", "--model", MODEL, "--profile", "l4x4", "--offline", "-f", fmt, "--json")
    texts += [stdout, stderr, stdout2, stderr2]
    for text in texts:
        for v in SENTINELS.values():
            assert v not in text


# -- the golden files against an independent expectation: the plan.json's vllm_args --------------
def _expected_flags(vllm_args: dict) -> dict:
    """vllm_args as `vllm serve` flags, by vLLM's CLI rules (key → --key-with-dashes, True → a bare
    flag, False/None → left out), written here without the renderer's code."""
    return {"--" + k.replace("_", "-"): (True if v is True else str(v))
            for k, v in vllm_args.items() if k not in ("model", "port") and v is not None and v is not False}


def _flags_of(argv: list[str]) -> tuple[str, dict]:
    """(model, {flag: value}) of a `vllm serve MODEL --flag value ...` argv."""
    model, flags, i = argv[0], {}, 1
    while i < len(argv):
        tok = argv[i]
        assert tok.startswith("--"), (tok, argv)
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            flags[tok], i = argv[i + 1], i + 2
        else:
            flags[tok], i = True, i + 1
    return model, flags


def _serve_argvs_of_script(text: str) -> list[list[str]]:
    import shlex

    joined = text.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        if "vllm serve" in line and not line.lstrip().startswith("#"):
            toks = shlex.split(line.split("vllm serve", 1)[1], comments=True)
            out.append([t for t in toks if t != "&"])
    return out


def test_l4x4_golden_commands_are_the_plans_vllm_args():
    import yaml

    d = ROOT / "l4x4-qwen2.5-coder-7b-instruct"
    doc = json.loads((d / "plan.json").read_text())
    want = _expected_flags(doc["vllm_args"])
    ports = {r["port"] for r in doc["replicas"]}
    argvs = {"serve.sh": _serve_argvs_of_script((d / "serve.sh").read_text())}
    for unit in ("vllm-0.service", "vllm-1.service"):
        text = (d / unit).read_text()
        exec_start = text.split("ExecStart=", 1)[1].replace("\\\n", " ").splitlines()[0]
        argvs[unit] = _serve_argvs_of_script(exec_start)
    compose = yaml.safe_load((d / "docker-compose.yml").read_text())
    argvs["docker-compose.yml"] = [s["command"] for s in compose["services"].values() if "command" in s]
    k8s = [o for o in yaml.safe_load_all((d / "k8s.yaml").read_text()) if o and o.get("kind") == "Deployment"]
    argvs["k8s.yaml"] = [c["args"] for o in k8s for c in o["spec"]["template"]["spec"]["containers"]]
    assert len(argvs["serve.sh"]) == len(doc["replicas"]) == 2
    for name, cmds in argvs.items():
        assert cmds, name
        for argv in cmds:
            model, flags = _flags_of(argv)
            assert model == doc["vllm_args"]["model"], name
            port = flags.pop("--port", None)
            assert flags == want, (name, set(flags.items()) ^ set(want.items()))
            assert port is None or int(port) in ports, (name, port)
