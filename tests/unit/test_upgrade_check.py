"""`vllm-ops upgrade-check`: a deployment checked against another vLLM release (issue #24)."""
from __future__ import annotations

import json

import pytest

from vllm_ops.planning import versions

MODEL = "Qwen/Qwen2.5-Coder-7B-Instruct"


@pytest.fixture
def plan_0171(run_cli, tmp_path):
    """A plan for vLLM 0.17.1 on one L4 that passes --swap-space 4 (util and batch left to vLLM)."""
    rc, out, err = run_cli("plan", "--model", MODEL, "--gpus", "1xL4", "--vllm-version", "0.17.1", "--json",
                           "--", "--swap-space", "4")
    assert rc == 0, err
    path = tmp_path / "plan.json"
    path.write_text(out)
    return str(path)


def test_swap_space_plan_to_0250_needs_edits(run_cli, plan_0171):
    rc, out, err = run_cli("upgrade-check", "--plan", plan_0171, "--to", "0.25.0")
    assert rc == 1, err
    assert "needs edits (exit 1)" in out
    assert "--swap-space was removed in vLLM 0.18.0" in out
    assert "fix 1: remove `--swap-space 4`" in out
    assert "--gpu-memory-utilization: default 0.9 -> 0.92" in out and "0.21.0" in out
    # the command for the new release no longer passes the flag
    line = next(ln for ln in out.splitlines() if ln.startswith("command for 0.25.0"))
    assert "--swap-space" not in line


def test_json_is_one_document_with_each_change_and_its_release(run_cli, plan_0171):
    rc, out, _ = run_cli("upgrade-check", "--plan", plan_0171, "--to", "0.25.0", "--json")
    doc = json.loads(out)
    assert rc == doc["exit_code"] == 1
    by_subject = {f["subject"]: f for f in doc["findings"]}
    assert by_subject["--swap-space"]["since"] == "0.18.0"
    assert by_subject["--swap-space"]["action"] == "edit"
    assert "PR #36216" in by_subject["--swap-space"]["source"]
    util = by_subject["--gpu-memory-utilization"]
    assert util["since"] == "0.21.0" and util["action"] == "info" and "PR #38284" in util["source"]
    assert doc["before"]["flags"]["gpu_memory_utilization"] == 0.9
    assert doc["after"]["flags"]["gpu_memory_utilization"] == 0.92
    assert doc["before"]["memory"]["kv_cache_tokens"] > 0 and doc["after"]["memory"]["kv_cache_tokens"] > 0
    assert doc["after"]["fits"] is True
    assert all(f["since"] for f in doc["findings"])


def test_same_release_runs_unchanged(run_cli, plan_0171):
    rc, out, err = run_cli("upgrade-check", "--plan", plan_0171, "--to", "0.17.1", "--json")
    doc = json.loads(out)
    assert rc == 0, err
    assert doc["findings"] == [] and doc["verdict"] == "runs unchanged"
    assert doc["before"]["memory"] == doc["after"]["memory"]


@pytest.mark.parametrize("to", ["0.26.5", "0.34.0", "1.0", "latest"])
def test_unknown_release_is_refused_with_the_known_ones(run_cli, plan_0171, to):
    rc, out, err = run_cli("upgrade-check", "--plan", plan_0171, "--to", to)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"unknown target vLLM release (--to) '{to}'" in err
    assert "0.17.1" in err and "0.33.0" in err


def test_downgrade_is_refused(run_cli, plan_0171):
    rc, _, err = run_cli("upgrade-check", "--plan", plan_0171, "--to", "0.12.0")
    assert rc == 2 and "downgrade checks are refused" in err


def test_no_longer_fits_exit_3(run_cli):
    """Qwen3-Coder-30B-A3B (MoE, so still on the V1 model runner) on one H100 with
    --gpu-memory-utilization 0.9 pinned and --max-model-len 136192 (the longest that fits on 0.17.1
    by the version table): from 0.21.0 the V1 runner subtracts its CUDA-graph estimate from the
    budget, so on 0.25.0 the KV cache no longer holds one full-length sequence."""
    cmd = ("vllm serve Qwen/Qwen3-Coder-30B-A3B-Instruct --gpu-memory-utilization 0.9 "
           "--max-model-len 136192 --max-num-seqs 1024")
    rc, out, err = run_cli("upgrade-check", "--command", cmd, "--from", "0.17.1", "--to", "0.25.0",
                           "--gpus", "1xH100", "--json")
    doc = json.loads(out)
    assert rc == 3 == doc["exit_code"], err
    assert doc["before"]["fits"] is True and doc["after"]["fits"] is False
    assert doc["after"]["failure_stage"] == "kv_cache"
    fit = next(f for f in doc["findings"] if f["kind"] == "fit")
    assert fit["action"] == "no-longer-fits" and fit["fix"]
    graphs = next(f for f in doc["findings"] if f["subject"] == "cudagraph in budget")
    assert graphs["since"] == "0.21.0"
    # the utilisation default moved, but the deployment pins it
    util = next(f for f in doc["findings"] if f["subject"] == "--gpu-memory-utilization")
    assert "pinned by the deployment at 0.9: not affected" in util["what"]


def test_rendered_compose_pins_every_flag(run_cli, plan_0171, tmp_path):
    rc, _, err = run_cli("render", "--plan", plan_0171, "--format", "compose", "--output", str(tmp_path / "r"))
    assert rc == 0, err
    compose = str(tmp_path / "r" / "docker-compose.yml")
    rc, out, err = run_cli("upgrade-check", "--compose", compose, "--to", "0.25.0", "--gpus", "1xL4", "--json")
    doc = json.loads(out)
    assert rc == 1, err
    assert doc["from_version"] == "0.17.1"          # from the image tag
    assert "--swap-space" not in doc["command_after"] and "--max-num-seqs 128" in doc["command_after"]
    util = next(f for f in doc["findings"] if f["subject"] == "--gpu-memory-utilization")
    assert "pinned by the deployment at 0.9" in util["what"]
    assert doc["after"]["flags"]["gpu_memory_utilization"] == 0.9


def test_request_fields_across_0_12(run_cli):
    rc, out, err = run_cli("upgrade-check", "--command", f"vllm serve {MODEL}", "--from", "0.11.0",
                           "--to", "0.12.0", "--gpus", "1xH100", "--json")
    doc = json.loads(out)
    assert rc == 1, err
    callers = [f for f in doc["findings"] if f["action"] == "callers"]
    subjects = " ".join(f["subject"] for f in callers)
    assert "guided_json" in subjects and "best_of" in subjects
    assert all(f["since"] == "0.12.0" and "PR #" in f["source"] for f in callers)
    assert not [f for f in doc["findings"] if f["kind"] == "removed-flag"]


def test_guided_decoding_flag_and_already_removed_flag(run_cli):
    cmd = f"vllm serve {MODEL} --guided-decoding-backend xgrammar --disable-log-requests"
    rc, out, err = run_cli("upgrade-check", "--command", cmd, "--from", "0.11.2", "--to", "0.17.0", "--gpus",
                           "1xH100")
    assert rc == 1, err
    assert "--guided-decoding-backend was removed in vLLM 0.12.0" in out
    assert "--disable-log-requests was removed in vLLM 0.17.0" in out
    assert "--structured-outputs-config" in out


def test_bad_inputs(run_cli, tmp_path):
    rc, _, err = run_cli("upgrade-check", "--command", f"vllm serve {MODEL}", "--to", "0.25.0", "--gpus", "1xL4")
    assert rc == 2 and "--from" in err
    bad = tmp_path / "c.yml"
    bad.write_text("services: {lb: {image: nginx}}\n")
    rc, _, err = run_cli("upgrade-check", "--compose", str(bad), "--to", "0.25.0", "--from", "0.17.1")
    assert rc == 2 and "no service runs a vllm/* image" in err
    rc, _, err = run_cli("upgrade-check", "--plan", str(tmp_path / "missing.json"), "--to", "0.25.0")
    assert rc == 2 and "plan file not found" in err
    rc, _, err = run_cli("upgrade-check", "--command", f"vllm serve {MODEL}", "--from", "0.5.0", "--to", "0.25.0",
                         "--gpus", "1xL4")
    assert rc == 2 and "unknown current vLLM release '0.5.0'" in err


def test_plan_pins_are_only_what_the_plan_chose():
    from vllm_ops.hardware import parse_gpu_spec
    from vllm_ops.models import load_model_spec
    from vllm_ops.planning import plan
    from vllm_ops.planning.upgrade import plan_pins

    p = plan(load_model_spec(MODEL, offline=True), parse_gpu_spec("1xH100"), vllm_version="0.17.1",
             pins={"max_num_seqs": 64, "enforce_eager": True})
    assert plan_pins(p) == {"max_num_seqs": 64, "enforce_eager": True}


def test_version_table_is_consistent():
    from vllm_ops.launch.diagnosis import REMOVED_FLAGS as DIAG

    order = [versions.parse_version(v) for v in versions.KNOWN_RELEASES]
    assert order == sorted(order)
    for r in versions.REMOVED_FLAGS:
        assert r.removed_in in versions.KNOWN_RELEASES and r.pr.startswith("PR #") and r.source
        assert DIAG[r.flag][0] == f"v{r.removed_in} ({r.pr})"       # diagnosis reads the same table
    for c in versions.REQUEST_CHANGES:
        assert c.since in versions.KNOWN_RELEASES and "PR #" in c.source
    for rule in versions.RULES:
        assert rule.since == "0.0.0" or rule.since in versions.KNOWN_RELEASES, rule
    assert versions.check_release("v0.25.0") == "0.25.0"


def test_command_line_short_flags_and_entry_points():
    from vllm_ops.hardware import parse_gpu_spec
    from vllm_ops.planning.upgrade import deployment_from_argv

    inv = parse_gpu_spec("2xL4")
    for argv in (["vllm", "serve", MODEL, "-tp", "2", "--max-model-len=8192", "--swap-space", "4"],
                 ["python", "-m", "vllm.entrypoints.openai.api_server", "--model", MODEL, "-tp", "2",
                  "--max-model-len", "8192", "--swap-space", "4"]):
        dep = deployment_from_argv(argv, version="0.17.1", inventory=inv, source="command")
        assert dep.model == MODEL
        assert dep.pins == {"tensor_parallel_size": 2, "max_model_len": 8192}
        assert dep.extra_args == ["--swap-space", "4"]
    dep = deployment_from_argv(["vllm", "serve", MODEL, "-tp=2", "--device-memory-utilization", "0.8", "-O3",
                                "--served-model-name", "a", "b"], version="0.17.1", inventory=inv, source="command")
    assert dep.pins == {"tensor_parallel_size": 2, "gpu_memory_utilization": 0.8}
    assert dep.extra_args == ["-O3", "--served-model-name", "a", "b"] and dep.served_name is None
