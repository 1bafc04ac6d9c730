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
    s = tmp_path / "state.json"
    s.write_text(json.dumps({"name": "d", "port": 8000, "plan": plan}))
    assert PlanLimits.load(s).max_num_seqs == 16


def test_unreachable_server_is_one_line_error(run_cli):
    rc, out, err = run_cli("bench", "--url", "http://127.0.0.1:9", "--concurrency", "1", "--num-prompts", "1",
                           "--quiet")
    assert rc == 1 and "Traceback" not in err and err.count("\n") == 1
