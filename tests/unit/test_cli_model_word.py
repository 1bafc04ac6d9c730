"""The model as a positional word (`vllm-ops plan Qwen/Qwen3-8B`, as `vllm serve MODEL` and `hf download REPO`):
the same plan as --model, in any position among the flags; two different models are bad input (exit 2)."""
from __future__ import annotations

import json

import pytest

from vllm_ops.cli import main

M = "Qwen/Qwen3-8B"


def _plan(capsys, *words: str) -> tuple[int, dict | None, str]:
    rc = main(["plan", *words, "--gpus", "1xH100", "--offline", "--json"])
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if out.strip() else None), err


@pytest.mark.parametrize("words", [(M,), ("--model", M), ("-m", M), (M, "--model", M)])
def test_model_word_plans_as_model_flag(capsys, words):
    rc, doc, _err = _plan(capsys, *words)
    rc_flag, flag, _ = _plan(capsys, "--model", M)
    assert rc == rc_flag == 0 and doc["command"] == flag["command"] and M in doc["command"]


def test_model_word_after_flags_and_before_passthrough(capsys):
    rc = main(["plan", "--gpus", "1xH100", "--offline", "--json", M, "--", "--load-format", "dummy"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["command"].split()[2] == M and "--load-format dummy" in doc["command"]


def test_two_models_are_bad_input(capsys):
    with pytest.raises(SystemExit) as e:
        main(["plan", M, "--model", "Qwen/Qwen3-32B", "--gpus", "1xH100"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "two models given" in err
