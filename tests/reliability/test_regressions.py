"""Regression tests for the reliability fixes beyond the tracked bugs' own tests: the smaller
observations of docs/engineering-notes/reliability.md (long error echoes, ``--model ''``, dtype choices, profile
limits), and the edges of the fixes themselves (secrets as names only, the open-bind warning,
process-group safety, state-file typing, port ranges)."""
from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest

from tests.reliability.conftest import count_fault, count_input
from vllm_ops.errors import BadInput, MalformedFile, VllmOpsError, shorten
from vllm_ops.hardware import parse_gpu_spec
from vllm_ops.models import load_model_spec
from vllm_ops.planning import plan as make_plan

M = "Qwen/Qwen2.5-Coder-7B-Instruct"


# ---- error lines: echoed input is cut once, in VllmOpsError.one_line ------------------------
def test_shorten_cuts_long_words_and_long_lines():
    assert shorten("a  b\n c") == "a b c"
    s = shorten("bad 'x" + "y" * 5000 + "'")
    assert len(s) < 300 and "…(5003 chars)" in s
    s = shorten(" ".join(["ab"] * 3000))
    assert len(s) < 1100 and s.endswith("chars)")
    e = VllmOpsError("unknown model '" + "m" * 5000 + "'", hint="h" * 5000)
    assert len(e.one_line()) < 600 and "\n" not in e.one_line()


@pytest.mark.parametrize("argv", [
    ("plan", "--gpus", "x" * 5000, "--json"),
    ("plan", "--model", "m" * 5000, "--gpus", "4xL4"),
    ("models", "show", "a/" + "b" * 5000),
    ("plan", "--port", "9" * 5000),                       # argparse's own message
])
def test_error_line_echoing_a_huge_input_stays_short(argv, check_cli):
    rc, out, err = check_cli(*argv, category="long-echo")
    assert len(err) < 1200, f"{len(err)} characters on stderr"


# ---- plan --model '' -----------------------------------------------------------------------
@pytest.mark.parametrize("model", ["", "   "])
def test_empty_model_is_bad_input_not_the_default(model, check_cli):
    _, out, err = check_cli("plan", "--model", model, "--gpus", "4xL4", "--json", category="model-name")
    assert out == "" and "empty" in err


# ---- dtype / kv-cache-dtype: vLLM's choices (reference §5); quantization: a warning ----------
@pytest.mark.parametrize("flag,value", [("--dtype", "bogus"), ("--dtype", "fp8"), ("--dtype", "int8"),
                                        ("--kv-cache-dtype", "half"), ("--kv-cache-dtype", "float32"),
                                        ("--kv-cache-dtype", "turboquant_"), ("--kv-cache-dtype", "ultraquant_x")])
def test_dtype_outside_vllms_choices_is_refused(flag, value, check_cli):
    _, _, err = check_cli("plan", "--model", M, "--gpus", "4xL4", f"{flag}={value}", "--json", category="pin")
    assert value in err and "accepts" in err


@pytest.mark.parametrize("flag,value,want", [("--dtype", "half", "half"), ("--dtype", "BFloat16", "bfloat16"),
                                             ("--dtype", "float32", "float32"),
                                             ("--kv-cache-dtype", "fp8_e5m2", "fp8_e5m2"),
                                             ("--kv-cache-dtype", "turboquant_3bit", "turboquant_3bit"),
                                             ("--kv-cache-dtype", "nvfp4", "nvfp4")])
def test_dtype_choices_vllm_accepts_plan(flag, value, want, run_cli):
    rc, out, err = run_cli("plan", "--model", M, "--gpus", "1xH100", f"{flag}={value}", "--json")
    assert rc in (0, 3), err
    assert json.loads(out)["vllm_args"][flag[2:].replace("-", "_")] == want


def test_unknown_quantization_is_a_warning(run_cli):
    rc, out, err = run_cli("plan", "--model", M, "--gpus", "1xH100", "--quantization", "bogus", "--json")
    assert rc in (0, 3), err
    assert "unknown-quantization" in [w["code"] for w in json.loads(out)["warnings"]]
    rc, out, err = run_cli("plan", "--model", M, "--gpus", "1xH100", "--quantization", "fp8", "--json")
    assert "unknown-quantization" not in [w["code"] for w in json.loads(out)["warnings"]]


# ---- profiles: limits, kv_cache_memory_bytes, cpu.threads, dtype ----------------------------
@pytest.mark.parametrize("text,field", [
    ("gpu: L4\ncount: 1\nlimits:\n  dtype: 4\n", "limits.dtype"),
    ("gpu: L4\ncount: 1\nlimits:\n  new_flag: 4\n", "limits.new_flag"),
    ("gpu: L4\ncount: 1\nvllm_defaults:\n  kv_cache_memory_bytes: -5\n", "kv_cache_memory_bytes"),
    ("gpu: L4\ncount: 1\nvllm_defaults:\n  kv_cache_memory_bytes: lots\n", "kv_cache_memory_bytes"),
    ("gpu: L4\ncount: 1\nvllm_defaults:\n  dtype: bogus\n", "dtype"),
    ("gpu: L4\ncount: 1\nvllm_defaults:\n  kv_cache_dtype: half\n", "kv_cache_dtype"),
    ("gpu: L4\ncount: 1\nenv:\n  WANDB_API_KEY: x\n", "WANDB_API_KEY"),
    ("gpu: L4\ncount: 257\ninterconnect: pcie\n", "count"),
    ("kind: cpu\ncpu:\n  kv_cache_space_gib: 4\n  threads: 100000000000000000000\n", "cpu.threads"),
])
def test_profile_values_out_of_range_are_refused(text, field, tmp_path, check_cli):
    (tmp_path / "p.yaml").write_text(text)
    _, _, err = check_cli("profiles", "show", "p", "--profiles-dir", str(tmp_path), category="profile-yaml")
    assert field in err


def test_profile_values_in_range_load(tmp_path, run_cli):
    (tmp_path / "p.yaml").write_text("gpu: L4\ncount: 256\ninterconnect: pcie\nvllm_defaults:\n"
                                     "  kv_cache_memory_bytes: 8G\n  dtype: half\n  kv_cache_dtype: fp8\n"
                                     "limits:\n  max_num_seqs: 64\n")
    rc, out, err = run_cli("profiles", "show", "p", "--profiles-dir", str(tmp_path), "--json")
    assert rc == 0, err


# ---- ports ---------------------------------------------------------------------------------
def test_last_replica_port_above_65535_is_refused(check_cli):
    _, _, err = check_cli("plan", "--model", M, "--gpus", "4xL4", "-tp", "1", "--port", "65534", "--json",
                          category="pin")
    assert "65535" in err
    check_cli("plan", "--model", M, "--gpus", "4xL4", "-tp", "1", "--port", "65532", "--json",
              expect=(0, 3), category="pin")


@pytest.mark.parametrize("port", [0, -1, 65536, True])
def test_launch_port_override_checked(port):
    from tests.unit.test_launch import _plan
    from vllm_ops.launch.launcher import LaunchOptions, build_spec
    from vllm_ops.launch.locate import VllmCommand

    with pytest.raises(BadInput, match="port"):
        build_spec(_plan(), LaunchOptions(vllm=VllmCommand(("vllm", "serve"), "serve"), port=port))


def test_launch_cli_port_checked(check_cli):
    check_cli("launch", "--model", M, "--gpus", "1xL4", "--port", "0", category="pin")


# ---- validate --url ------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["ftp://h:1", "http://", "http://h:99999", "http://h:x", "localhost:8000",
                                 "http://a b"])
def test_validate_rejects_urls_it_cannot_use(url, check_cli):
    _, _, err = check_cli("validate", "--url", url, category="usage")
    assert "http(s) server URL" in err


def test_validate_checks_vllm_base_url_too(check_cli, monkeypatch):
    monkeypatch.setenv("VLLM_BASE_URL", "nonsense")
    _, _, err = check_cli("validate", category="usage")
    assert "VLLM_BASE_URL" in err


# ---- saved plans of the wrong shape ----------------------------------------------------------
@pytest.mark.parametrize("doc", [{"replicas": 5}, {"replicas": [1]}, {"memory": []}, {"env": "x"},
                                 {"warnings": ["w"]}])
def test_saved_plan_with_parts_of_the_wrong_shape(doc, tmp_path, check_cli):
    base = make_plan(load_model_spec(M), parse_gpu_spec("1xL4")).to_dict()
    base.update(doc)
    p = tmp_path / "plan.json"
    p.write_text(json.dumps(base))
    _, _, err = check_cli("render", "--plan", str(p), "--format", "command", category="saved-plan")
    assert "plan" in err


# ---- model_type nested under text_config ---------------------------------------------------
def test_nested_model_type_not_a_string(tmp_path, check_cli):
    cfg = {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava", "vision_config": {},
           "text_config": {"model_type": ["llama"], "hidden_size": 256, "num_attention_heads": 4,
                           "num_hidden_layers": 2, "intermediate_size": 512, "vocab_size": 512,
                           "max_position_embeddings": 2048}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    _, _, err = check_cli("models", "show", str(tmp_path), category="model-config")
    assert "text_config.model_type" in err and "must be a string" in err


# ---- secrets: names only, values from the environment at launch -------------------------------
def test_planner_keeps_only_secret_names():
    p = make_plan(load_model_spec(M), parse_gpu_spec("1xL4"),
                  env={"HF_TOKEN": "hf_x", "MY_PASSWORD": "pw", "VLLM_LOGGING_LEVEL": "DEBUG"},
                  extra_args=("--api-key=sk-x", "--enable-log-requests"), env_secrets=["EXTRA_SECRET"])
    text = json.dumps(p.to_dict())
    assert "hf_x" not in text and "sk-x" not in text and '"pw"' not in text
    assert p.env == {"VLLM_LOGGING_LEVEL": "DEBUG"}
    assert p.env_secrets == ["EXTRA_SECRET", "HF_TOKEN", "MY_PASSWORD", "VLLM_API_KEY"]
    assert p.extra_args == ["--enable-log-requests"] and "--api-key" not in p.command


def test_plan_env_secret_names_render_into_the_env_file_and_k8s_secret(run_cli):
    from vllm_ops.render import render

    p = make_plan(load_model_spec(M), parse_gpu_spec("1xL4"), env={"WANDB_API_KEY": "w"})
    art = render(p, "all")
    assert "WANDB_API_KEY=\n" in art.files["vllm.env"]
    assert "w\n" not in art.files["vllm.env"].split("WANDB_API_KEY=")[1][:2]
    assert '"WANDB_API_KEY"' in art.files["k8s.yaml"]


def test_hand_edited_plan_with_a_secret_in_env_is_refused_by_render():
    from vllm_ops.render import render

    p = make_plan(load_model_spec(M), parse_gpu_spec("1xL4"))
    p.env["SOME_TOKEN"] = "t"
    with pytest.raises(BadInput, match="secret"):
        render(p, "command")
    p.env.pop("SOME_TOKEN")
    p.extra_args = ["--hf-token", "t"]
    with pytest.raises(BadInput, match="HF_TOKEN"):
        render(p, "command")


def _fake_vllm():
    from vllm_ops.launch.locate import VllmCommand

    return VllmCommand((sys.executable, "-c", "pass"), "module", python=sys.executable)


def test_launch_refuses_a_plan_whose_secret_is_not_in_the_environment(tmp_path, monkeypatch):
    from tests.unit.test_launch import _plan
    from vllm_ops.launch.launcher import LaunchOptions, launch
    from vllm_ops.launch.state import StateStore

    plan = _plan(port=8123)
    plan.env_secrets = ["VLLM_API_KEY"]
    store = StateStore(tmp_path / "st")
    with pytest.raises(BadInput, match="VLLM_API_KEY"):
        launch(plan, LaunchOptions(vllm=_fake_vllm(), store=store, host="127.0.0.1"))
    assert store.names() == []                       # nothing was started


def test_open_bind_warning_only_without_a_key_on_all_interfaces(capsys, monkeypatch):
    from tests.unit.test_launch import _plan
    from vllm_ops.launch.launcher import LaunchOptions, _warn_open_bind, build_spec

    count_input("open-bind", 4)

    def warned(host, env=None):
        _warn_open_bind(build_spec(_plan(), LaunchOptions(vllm=_fake_vllm(), host=host, env=env or {})))
        return "api key" in capsys.readouterr().err.lower()

    assert warned(None)                        # no --host: vLLM's default is every interface
    assert warned("::")
    assert not warned("127.0.0.1")
    assert not warned("0.0.0.0", {"VLLM_API_KEY": "k"})
    monkeypatch.setenv("VLLM_API_KEY", "k")    # inherited from the environment counts too
    assert not warned(None)


def test_render_notes_an_open_bind_and_not_a_local_one(run_cli):
    rc, out, err = run_cli("render", "--model", M, "--gpus", "1xL4", "--format", "command")
    assert rc == 0 and "WARNING: vLLM listens on all interfaces" in out and "all interfaces" in err
    rc, out, err = run_cli("render", "--model", M, "--gpus", "1xL4", "--format", "command", "--",
                           "--host", "127.0.0.1")
    assert rc == 0 and "WARNING" not in out and "all interfaces" not in err


# ---- process-group safety (bugs 1, 2) ----------------------------------------------------------
def test_groups_never_signalled():
    from vllm_ops.launch import procs

    count_fault("state-wrong-pid", 6)
    for pgid in (0, 1, -1, os.getpgrp(), os.getsid(0), True, "5", procs.PID_LIMIT + 1):
        assert not procs.signalable_group(pgid), pgid
        assert procs.group_members(pgid) == []
    assert procs.stop_group(0, grace=0.1) is False
    assert procs.stop_group(os.getpgrp(), grace=0.1) is False   # we are still here


def test_stale_leftover_members_are_not_counted():
    """A process that started before the recorded leader cannot belong to its group."""
    import subprocess

    from vllm_ops.launch import procs

    p = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        ticks = procs.start_ticks(p.pid)
        assert procs.group_members(p.pid, ticks) == [p.pid]
        assert procs.group_members(p.pid, ticks + 10**6) == []          # "started later than it did"
        assert procs.stop_group(p.pid, grace=0.5, min_ticks=ticks + 1) is False   # leader's ticks differ
        assert p.poll() is None
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(5)


# ---- state files: typed fields, container backends keep pid 0 -------------------------------------
def _state(tmp_path, **kw):
    from vllm_ops.launch.state import StateStore

    d = {"name": "x", "pid": 4242, "pgid": 4242, "port": 8000, "host": "127.0.0.1", "served_name": "m",
         "model_id": "m", "log_path": str(tmp_path / "x.log"), "started_at": time.time()}
    d.update(kw)
    store = StateStore(tmp_path / "state")
    store.deployments.mkdir(parents=True, exist_ok=True)
    (store.deployments / "x.json").write_text(json.dumps(d))
    return store


@pytest.mark.parametrize("kw", [{"pid": 0}, {"pgid": 1}, {"pid": True}, {"port": 70000}, {"port": "8000"},
                                {"started_at": "now"}, {"log_path": ""}, {"log_path": ["a"]},
                                {"pid_start_ticks": "1"}, {"host": 5}, {"backend": 3}])
def test_state_file_field_types(kw, tmp_path):
    count_fault("state-corrupt")
    with pytest.raises(MalformedFile, match="corrupted"):
        _state(tmp_path, **kw).load("x")


def test_container_backend_state_keeps_pid_zero(tmp_path):
    dep = _state(tmp_path, pid=0, pgid=0, backend="compose").load("x")
    assert dep.pid == 0 and dep.backend == "compose"
    from vllm_ops.launch.backend import ProcessBackend

    assert ProcessBackend().stop(dep, grace=0.1) is False       # never killpg(0)
