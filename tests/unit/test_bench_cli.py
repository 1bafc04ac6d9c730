"""`vllm-ops bench` flags and the plan file reader."""
from __future__ import annotations

import json

from vllm_ops.loadtest.report import PlanLimits


def test_bad_levels_are_usage_errors(run_cli):
    rc, out, err = run_cli("bench", "--concurrency", "1,x")
    assert rc == 2
    rc, out, err = run_cli("bench", "--concurrency", "1", "--request-rate", "2")
    assert rc == 2
    rc, out, err = run_cli("bench", "--num-prompts", "0", "--url", "http://127.0.0.1:9")
    assert rc == 2 and "num-prompts" in err


def test_missing_plan_file_is_bad_input(run_cli, tmp_path):
    rc, out, err = run_cli("bench", "--url", "http://127.0.0.1:9", "--plan", str(tmp_path / "none.json"))
    assert rc == 2 and "plan file not found" in err


def test_plan_file_and_state_file(tmp_path):
    plan = {"memory": {"kv_cache_tokens": 1000, "max_concurrency": 3.9}, "vllm_args": {"max_num_seqs": 16,
                                                                                       "max_model_len": 256}}
    p = tmp_path / "plan.json"
    p.write_text(json.dumps(plan))
    lim = PlanLimits.load(p)
    assert (lim.max_num_seqs, lim.kv_cache_tokens, lim.max_model_len) == (16, 1000, 256)
    assert lim.expected_concurrency(32, 16) == 16  # min(16, 1000 // 48 = 20)
    newer = PlanLimits.from_plan_dict({**plan, "vllm_version": "0.25.0", "vllm_args": {"max_num_seqs": 64}})
    old = PlanLimits.from_plan_dict({**plan, "vllm_version": "0.12.0", "vllm_args": {"max_num_seqs": 64}})
    assert (newer.expected_concurrency(32, 16), old.expected_concurrency(32, 16)) == (25, 20)  # 1000 // 40, // 48
    s = tmp_path / "state.json"
    s.write_text(json.dumps({"name": "d", "port": 8000, "plan": plan}))
    assert PlanLimits.load(s).max_num_seqs == 16


def test_unreachable_server_is_one_line_error(run_cli):
    rc, out, err = run_cli("bench", "--url", "http://127.0.0.1:9", "--concurrency", "1", "--num-prompts", "1",
                           "--quiet")
    assert rc == 1 and "Traceback" not in err and err.count("\n") == 1


def test_plan_document_read_once_gives_limits_and_the_whole_plan(tmp_path, run_cli):
    """bench --plan reads the file once: the limits and (for a whole plan) the Plan come from one document."""
    from vllm_ops.loadtest.predicted import full_plan
    from vllm_ops.loadtest.report import read_plan_file

    rc, out, _ = run_cli("plan", "--model", "Qwen/Qwen2.5-0.5B", "--gpus", "1xL4", "--json")
    assert rc == 0
    p = tmp_path / "plan.json"
    p.write_text(out)
    s = tmp_path / "state.json"
    s.write_text(json.dumps({"name": "d", "port": 8000, "plan": json.loads(out)}))
    for f in (p, s):
        doc = read_plan_file(f)
        assert PlanLimits.from_plan_dict(doc).max_num_seqs == json.loads(out)["vllm_args"]["max_num_seqs"]
        assert full_plan(doc).model["id"] == json.loads(out)["model"]["id"]
    assert full_plan({"memory": {"kv_cache_tokens": 10}}) is None       # limits only: no prediction
