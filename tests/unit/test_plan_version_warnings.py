"""A plan names what its vLLM release does not accept or what the version table does not know."""
from __future__ import annotations

import json


def _codes(run_cli, *argv):
    rc, out, _err = run_cli("plan", "--gpus", "1xH200", "--json", *argv)
    assert rc == 0
    return [w["code"] for w in json.loads(out)["warnings"]], json.loads(out)


def test_removed_flag_is_named_for_releases_that_refuse_it(run_cli):
    codes, doc = _codes(run_cli, "--vllm-version", "0.25.0", "--", "--swap-space", "4")
    assert "flag-removed" in codes
    msg = next(w["message"] for w in doc["warnings"] if w["code"] == "flag-removed")
    assert "--swap-space" in msg and "0.18.0" in msg


def test_removed_flag_is_quiet_before_its_removal(run_cli):
    codes, _ = _codes(run_cli, "--vllm-version", "0.17.1", "--", "--swap-space", "4")
    assert "flag-removed" not in codes


def test_unknown_release_is_named(run_cli):
    codes, _ = _codes(run_cli, "--vllm-version", "9.9.9")
    assert "vllm-version-unknown" in codes
    codes, _ = _codes(run_cli, "--vllm-version", "0.25.0")
    assert "vllm-version-unknown" not in codes
