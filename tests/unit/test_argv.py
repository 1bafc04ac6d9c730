"""vLLM's command line has one home (vllm_ops/planning/argv.py): the plan's ``command`` and every
rendered or launched argv carry the same vLLM flags."""
from __future__ import annotations

import shlex

import pytest

from vllm_ops.planning import argv
from vllm_ops.render import render
from tests.unit.test_render_golden import planned, planned_2x8xh100


def _serve_words(script: str) -> list[str]:
    """The words after ``vllm serve`` of a rendered start script (its first such command)."""
    lines = script.splitlines()
    start = next(i for i, ln in enumerate(lines) if "vllm serve" in ln)
    block = []
    for ln in lines[start:]:
        block.append(ln.rstrip().rstrip("\\"))
        if not ln.rstrip().endswith("\\"):
            break
    words = shlex.split(" ".join(block))
    words = words[words.index("serve") + 1:]
    return [w for w in words if w != "&"]


def _flags(words: list[str]) -> tuple[str, dict]:
    return words[0], argv.parse_flags(words[1:])


@pytest.mark.parametrize("case, made, script", [
    ("l4x4", planned, "serve.sh"),
    ("2x8xh100-ray", lambda: planned_2x8xh100("ray"), "ray-head.sh"),
    ("2x8xh100-native", lambda: planned_2x8xh100("native"), "node-0.sh"),
])
def test_plan_command_and_rendered_script_carry_the_same_flags(case, made, script):
    plan = made()
    words = shlex.split(plan.command)
    assert words[:2] == ["vllm", "serve"]
    model, planned_flags = _flags(words[2:])
    text = render(plan, "all").files[script]
    r_model, rendered = _flags(_serve_words(text))
    assert r_model == model
    # the native node script takes rank and master from its environment: same flags, per-node values
    per_node = {k for k, v in rendered.items() if str(v).startswith("$")}
    assert per_node <= set(argv.NATIVE_KEYS)
    assert rendered.keys() == planned_flags.keys()
    assert {k: v for k, v in rendered.items() if k not in per_node} == \
           {k: v for k, v in planned_flags.items() if k not in per_node}
    if case == "l4x4":
        assert len(planned_flags) == 11          # every chosen flag and --port, as serve.sh has them


def test_plan_command_is_the_launched_argv():
    from vllm_ops.launch.launcher import LaunchOptions, build_spec
    from vllm_ops.launch.locate import VllmCommand

    plan = planned()
    spec = build_spec(plan, LaunchOptions(vllm=VllmCommand(prefix=("vllm", "serve"), mode="serve",
                                                           source="test")))
    assert shlex.join(spec.argv) == plan.command
    assert spec.args == shlex.split(plan.command)[2:]


def test_parse_and_edit_helpers():
    args = ["/m", "--port", "8000", "--host=::", "--max-model-len", "1024", "--enforce-eager"]
    assert argv.value_of(args, "--host") == "::" and argv.value_of(args, "--port") == "8000"
    assert argv.value_of(args, "--dtype") is None
    assert argv.drop(args, ("--port", "--host")) == ["/m", "--max-model-len", "1024", "--enforce-eager"]
    assert argv.model_as_flag(args[:1]) == ["--model", "/m"]
    assert argv.model_as_flag(["--model", "/m"]) == ["--model", "/m"]
    assert argv.parse_flags(args) == {"port": 8000, "host": "::", "max_model_len": 1024, "enforce_eager": True}
    assert argv.strip_flags(args, {"max_model_len", "port"}) == ["/m", "--host=::", "--enforce-eager"]
    assert argv.split_secret_args(["--api-key", "k", "--x"]) == (["--x"], {"VLLM_API_KEY": "k"})


def test_flag_words_one_rule():
    assert argv.flag_words("gpu_memory_utilization", 0.2557) == ["--gpu-memory-utilization", "0.2557"]
    assert argv.flag_words("max_model_len", 4096.0) == ["--max-model-len", "4096"]
    assert argv.flag_words("enable_prefix_caching", False) == ["--no-enable-prefix-caching"]
    assert argv.flag_words("enforce_eager", False) == []
    assert argv.flag_words("quantization", None) == []


def test_pinnable_flags_after_the_separator_are_planned_not_just_appended():
    """`plan -- --max-num-seqs 64 --enforce-eager` plans for 64 sequences without CUDA graphs and says each
    flag once (vLLM takes the last of a repeated flag: the command used to carry --max-num-seqs 1024 and 64,
    the memory and performance figures the first, and CUDA-graph memory that --enforce-eager never takes)."""
    from vllm_ops.hardware import parse_gpu_spec
    from vllm_ops.models import load_model_spec
    from vllm_ops.planning import plan
    from vllm_ops.planning.performance import Workload, predict

    spec, gpus = load_model_spec("Qwen/Qwen3-8B", offline=True), parse_gpu_spec("1xH200")
    p = plan(spec, gpus, vllm_version="0.25.0",
             extra_args=["--max-num-seqs", "64", "--enforce-eager", "--load-format", "dummy"])
    pinned = plan(spec, gpus, vllm_version="0.25.0", pins={"max_num_seqs": 64, "enforce_eager": True},
                  extra_args=["--load-format", "dummy"])
    words = shlex.split(p.command)
    assert words.count("--max-num-seqs") == 1 and words[words.index("--max-num-seqs") + 1] == "64"
    assert words.count("--enforce-eager") == 1 and "--load-format" in words
    assert p.vllm_args["max_num_seqs"] == 64 and p.vllm_args["enforce_eager"] is True
    assert p.memory.cuda_graph_gib == 0.0 and p.command == pinned.command
    w = Workload(1024, 128, concurrency=16)
    assert predict(p, w).tpot_ms == predict(pinned, w).tpot_ms
    assert not [x for x in p.warnings if x.code == "flag-overridden"]
    # the same flag pinned and passed through with another value: the pin wins, and the plan says so
    both = plan(spec, gpus, vllm_version="0.25.0", pins={"max_num_seqs": 32}, extra_args=["--max-num-seqs", "64"])
    assert both.vllm_args["max_num_seqs"] == 32 and shlex.split(both.command).count("--max-num-seqs") == 1
    assert [x.code for x in both.warnings if x.code == "flag-overridden"] == ["flag-overridden"]


def test_optimization_level_reads_vllms_attached_spellings():
    """vLLM's parser reads -O3, -O=3 and -Odecode as --optimization-level (argparse_utils, the 0.32 parser); -O alone
    takes the next word, and no other word is an optimization level."""
    from vllm_ops.planning.argv import optimization_level

    assert [optimization_level(t) for t in ("-O3", "-O=3", "-Odecode", "-O0")] == ["3", "3", "decode", "0"]
    assert [optimization_level(t) for t in ("-O", "--optimization-level", "-tp", "3", "--O3")] == [None] * 5
