"""vLLM's own flags (planning/vllm_flags.py): abbreviations read in full as vLLM's parser reads them, and flags vLLM
would refuse named before it starts. The stored flag list and the argparse rules are checked against the real
parser in tests/real/test_vllm_flags_real.py."""
from __future__ import annotations

import pytest

from vllm_ops.hardware import parse_gpu_spec
from vllm_ops.models import load_model_spec
from vllm_ops.planning import plan
from vllm_ops.planning.vllm_flags import CHECKED_RELEASE, known_flags, spelled_out, unknown_flag_warnings


def test_the_stored_parser_holds_the_flags_the_planner_writes():
    flags = known_flags()
    assert len(flags) > 400
    for f in ("--tensor-parallel-size", "--max-num-seqs", "--kv-cache-memory-bytes", "--no-enable-prefix-caching",
              "--served-model-name", "--port", "--block-size", "--speculative-config", "-tp", "-q"):
        assert f in flags, f


@pytest.mark.parametrize("given,full", [
    (["--max-num-seq", "64"], ["--max-num-seqs", "64"]),
    (["--kv-cache-memory=20G"], ["--kv-cache-memory-bytes=20G"]),
    (["--max-num-seqs", "8"], ["--max-num-seqs", "8"]),                 # exact: unchanged
    (["--max-num", "8"], ["--max-num", "8"]),                           # ambiguous: left for the warning
    (["--foo", "1", "--"], ["--foo", "1", "--"]),
])
def test_abbreviations_are_spelled_out(given, full):
    assert spelled_out(given) == full


def test_unknown_flags_are_named_by_release():
    args = ["--enable-prefix-cache", "--max-num", "2", "--foo-bar", "--swap-space", "4", "--max-num-seq", "3"]
    on = dict((m.split()[0], m) for _c, m in unknown_flag_warnings(args, CHECKED_RELEASE))
    assert set(on) == {"--enable-prefix-cache", "--max-num", "--foo-bar"}   # --swap-space: the removed table's
    assert "did you mean --enable-prefix-caching?" in on["--enable-prefix-cache"]
    assert "ambiguous" in on["--max-num"] and "abbreviates 6 flags" in on["--max-num"]
    later = dict((m.split()[0], m) for _c, m in unknown_flag_warnings(args, "0.33.0"))
    assert set(later) == {"--enable-prefix-cache", "--max-num"} and "0.33.0 may differ" in later["--max-num"]
    assert unknown_flag_warnings(args, "0.25.0") == []


def test_an_abbreviated_pin_is_planned_for_and_a_typo_is_named():
    p = plan(load_model_spec("Qwen/Qwen3-8B", offline=True), parse_gpu_spec("1xH100-SXM"), vllm_version="0.32.0",
             extra_args=["--max-num-seq", "64", "--kv-cache-memory", "20G", "--enable-prefix-cache"])
    assert p.vllm_args["max_num_seqs"] == 64 and p.command.split().count("--max-num-seqs") == 1
    assert p.memory.kv_cache_gib == 20.0
    assert [w.code for w in p.warnings if w.code == "flag-unknown"] == ["flag-unknown"]


def test_a_value_on_an_on_off_flag_is_named():
    (code, msg), = unknown_flag_warnings(["--enable-chunked-prefill=false"], CHECKED_RELEASE)
    assert code == "flag-unknown" and "--no-enable-chunked-prefill" in msg and "ignored explicit argument" in msg
    assert unknown_flag_warnings(["--no-enable-chunked-prefill", "--enable-chunked-prefill"], CHECKED_RELEASE) == []
