"""Bad input on the command line: unknown GPUs and GPU specs, unknown models, impossible pins.
Each is one line naming the problem, exit 2 (3 only for a plan that honestly does not fit)."""
from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.reliability.conftest import assert_one_line_error, count_input
from tests.reliability.strategies import RELIABLE, hostile_text
from vllm_ops.planning.planner import KV_CACHE_DTYPE_FAMILIES, KV_CACHE_DTYPES

M = "Qwen/Qwen2.5-Coder-7B-Instruct"

BAD_GPUS = ["0xL4", "4xL5", "99999xL4", "4x", "x", "L", "4xl4xl4", "1x0GiB", "1x1e9GiB", "1x-5GiB",
            "2x(2x(L4))", "2x(", "()", "4xL4;rm -rf /", "$(id)xL4", "4xL4,4xH100", "1x80GB", "1x80G",
            "5000x(1xL4)", "0x(1xL4)", "4x🙂", "9" * 400 + "xL4", "x" * 5000, "1xNaNGiB",
            "1x.5GiB", "1xinfGiB"]


@pytest.mark.parametrize("spec", BAD_GPUS)
def test_bad_gpu_spec(spec, check_cli):
    rc, out, err = check_cli("plan", "--model", M, "--gpus", spec, "--json", category="gpu-spec")
    assert out == ""
    assert "GPU" in err


@RELIABLE
@given(spec=st.one_of(hostile_text, st.from_regex(r"\A[0-9]{0,4}[x×*]?[A-Za-z0-9.\-()]{0,12}\Z")))
def test_generated_gpu_specs(spec, run_cli):
    if spec.startswith("-"):
        spec = "=" + spec
    count_input("gpu-spec-generated", key=spec)
    rc, out, err = run_cli("plan", "--model", M, "--gpus", spec, "--json")
    # only a well-formed spec may plan (exit 0, or 3 when it does not fit); anything else is exit 2
    expect = (0, 2, 3) if _spec_well_formed(spec) else (2,)
    assert_one_line_error(rc, err, expect, what=repr(spec))


_NAME = r"(?:[A-Za-z][A-Za-z0-9.\-]*|\d+(?:\.\d+)?[A-Za-z]+)"          # a GPU name or a raw size
_COUNTED = rf"(?:[1-9]\d*[x×*])?{_NAME}"


def _spec_well_formed(spec: str) -> bool:
    """The spec grammar, written independently of the parser: empty (not given: the default),
    [N x]NAME, or M x([N x]NAME) - counts from 1, no other characters."""
    s = re.sub(r"\s+", "", spec)
    return not s or re.fullmatch(rf"{_COUNTED}|[1-9]\d*[x×*]\({_COUNTED}\)", s, re.I) is not None


BAD_PINS = [
    ("--tensor-parallel-size", "3"), ("--tensor-parallel-size", "0"), ("--tensor-parallel-size", "-1"),
    ("--tensor-parallel-size", "8"), ("--tensor-parallel-size", "1e3"), ("--tensor-parallel-size", "two"),
    ("--tensor-parallel-size", "9" * 40), ("--pipeline-parallel-size", "5"), ("--data-parallel-size", "5"),
    ("--pipeline-parallel-size", "0"), ("--gpu-memory-utilization", "0"), ("--gpu-memory-utilization", "1.5"),
    ("--gpu-memory-utilization", "-1"), ("--gpu-memory-utilization", "nan"), ("--gpu-memory-utilization", "inf"),
    ("--gpu-memory-utilization", "-inf"), ("--gpu-memory-utilization", "abc"), ("--gpu-memory-utilization", ""),
    ("--max-model-len", "99999999"), ("--max-model-len", "-5"), ("--max-model-len", "0"),
    ("--max-model-len", "9" * 40), ("--max-model-len", "1.5"), ("--max-num-seqs", "0"), ("--max-num-seqs", "-1"),
    ("--max-num-batched-tokens", "0"), ("--kv-cache-dtype", "bogus"), ("--vllm-version", "banana"),
    ("--env", "=x"), ("--env", "NOEQUALS"), ("--port", "eighty"),
]


@pytest.mark.parametrize("flag,value", BAD_PINS, ids=[f"{f}={v[:12]}" for f, v in BAD_PINS])
def test_impossible_pins(flag, value, check_cli):
    check_cli("plan", "--model", M, "--gpus", "4xL4", f"{flag}={value}", "--json", category="pin")


def test_tp_times_pp_above_gpus(check_cli):
    _, _, err = check_cli("plan", "--model", M, "--gpus", "2xL4", "--tensor-parallel-size", "2",
                          "--pipeline-parallel-size", "2", "--json", category="pin")
    assert "GPU" in err


@pytest.mark.parametrize("fmt", ["command", "compose", "systemd", "k8s"])
def test_render_impossible_pins(fmt, check_cli):
    check_cli("render", "--model", M, "--gpus", "4xL4", "--format", fmt, "--tp", "3", category="pin")
    check_cli("render", "--model", M, "--gpus", "4xL4", "--format", fmt, "--gpu-memory-utilization", "1.5",
              category="pin")


@RELIABLE
@given(flag=st.sampled_from(["--tensor-parallel-size", "--pipeline-parallel-size", "--max-model-len",
                             "--max-num-seqs", "--max-num-batched-tokens", "--gpu-memory-utilization",
                             "--data-parallel-size", "--kv-cache-dtype"]),
       value=st.one_of(st.integers(min_value=-(2**64), max_value=2**64).map(str),
                       st.floats(allow_nan=True, allow_infinity=True).map(repr), hostile_text))
def test_generated_pins(flag, value, run_cli):
    count_input("pin-generated", key=(flag, value))
    rc, out, err = run_cli("plan", "--model", M, "--gpus", "4xL4", f"{flag}={value}", "--json")
    # a value of the wrong kind is exit 2; a well-formed one may still be impossible here (exit 2)
    expect = (0, 2, 3) if _pin_well_formed(flag, value) else (2,)
    assert_one_line_error(rc, err, expect, what=f"{flag}={value!r}")


def _pin_well_formed(flag: str, value: str) -> bool:
    """What each flag accepts (vLLM's own types): a positive integer, a fraction in (0, 1], or one of
    vLLM's KV-cache dtypes."""
    if flag == "--kv-cache-dtype":
        return value in KV_CACHE_DTYPES or value.startswith(KV_CACHE_DTYPE_FAMILIES)
    try:
        number = float(value) if flag == "--gpu-memory-utilization" else int(value)
    except ValueError:
        return False
    if flag == "--gpu-memory-utilization":
        return math.isfinite(number) and 0 < number <= 1
    return number >= 1


BAD_MODELS = ["nope", "Qwen/NoSuchModel-7B", "qwen2.5-coder-7b-instruct-typo", "../../etc", "/etc/passwd",
              "/nonexistent/dir/", " ", "\x00", "/proc/self", "http://evil.example/x", "a/b/c/d",
              "$(id)", "org/" + "n" * 200]


@pytest.mark.parametrize("model", BAD_MODELS)
def test_unknown_models(model, check_cli):
    check_cli("plan", "--model", model, "--gpus", "4xL4", "--json", category="model-name")
    check_cli("models", "show", model, "--json", category="model-name")


@pytest.mark.parametrize("argv", [
    ("nosuchcommand",), ("plan", "--nosuchflag"), ("models",), ("models", "show"), ("profiles", "show"),
    ("render", "--format", "pdf", "--model", M), ("render",), ("render", "--plan", "/nonexistent.json"),
    ("render", "--plan", "/etc/passwd"), ("launch",), ("stop", "--all", "x"), ("status", "../../etc"),
    ("logs", "bad name"), ("bench", "--url", "http://127.0.0.1:9", "--concurrency", "x"),
])
def test_usage_errors(argv, check_cli):
    check_cli(*argv, expect=(1, 2), category="usage")


def test_render_of_corrupt_saved_plans(tmp_path, check_cli):
    for i, text in enumerate(["", "{", '{"model": 5}', '{"replicas": "x"}', "\udcff"]):
        p = tmp_path / f"plan{i}.json"
        p.write_bytes(text.encode("utf-8", "surrogateescape"))
        check_cli("render", "--plan", str(p), "--format", "command", category="saved-plan")


# ---- known problems ----------------------------------------------------------------------------
@pytest.mark.parametrize("cmd", [("models", "show"), ("plan", "--gpus", "4xL4", "--model")])
def test_very_long_model_name(cmd, check_cli):
    check_cli(*cmd, "a" * 5000, category="model-name")


@pytest.mark.parametrize("port", ["-1", "0", "99999"])
def test_port_out_of_range(port, check_cli):
    check_cli("plan", "--model", M, "--gpus", "4xL4", f"--port={port}", "--json", category="pin")


def test_plan_env_name_checked(check_cli):
    check_cli("plan", "--model", M, "--gpus", "4xL4", "--env", "A B=1", "--json", category="pin")


def test_absurd_gpu_memory(check_cli):
    check_cli("plan", "--model", M, "--gpus", "1x100000TiB", "--json", category="gpu-spec")


@pytest.mark.parametrize("text", ["[]", "null", "5"])
def test_render_saved_plan_not_an_object(text, tmp_path, check_cli):
    p = tmp_path / "plan.json"
    p.write_text(text)
    check_cli("render", "--plan", str(p), "--format", "command", category="saved-plan")


def test_validate_rejects_a_non_url(check_cli):
    check_cli("validate", "--url", "not a url", category="usage")
