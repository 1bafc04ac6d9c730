"""A vllm-ops flag written after `--` (`vllm-ops plan M -- --json`) would go to vLLM, whose parser refuses a flag it
does not know, and the user's own flag would silently not apply: bad input (exit 2), one line naming the flag. vLLM's
own flags after `--` stay vLLM's, also where vllm-ops has a flag of the same name (`--port`)."""
from __future__ import annotations

import json

import pytest

from vllm_ops.cli import main

M = "Qwen/Qwen3-8B"


@pytest.mark.parametrize("cmd, after", [("plan", ["--json"]), ("plan", ["--gpus=1xL4"]),
                                        ("render", ["--format", "compose"]), ("launch", ["--detach"])])
def test_own_flag_after_separator_is_bad_input(capsys, cmd, after):
    with pytest.raises(SystemExit) as e:
        main([cmd, M, "--gpus", "1xH100", "--offline", "--", "--load-format", "dummy", *after])
    err = capsys.readouterr().err
    flag = after[0].partition("=")[0]
    assert e.value.code == 2 and err.count("\n") == 1
    assert f"{flag} comes after '--'" in err and f"vllm-ops {cmd} --help" in err


def test_vllm_flag_of_the_same_name_stays_vllms(capsys):
    rc = main(["plan", M, "--gpus", "1xH100", "--offline", "--json", "--", "--port", "9000", "--enable-lora"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and "--port 9000" in doc["command"] and "--enable-lora" in doc["command"]
