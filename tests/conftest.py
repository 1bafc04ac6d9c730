"""Shared test helpers.

Real parts (the vLLM CPU server, Docker Engine, ...) are required under CI: a missing part skips
a test locally with its reason, but FAILS it when the environment variable ``CI`` is set.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = (REPO.parent / "shared") if (REPO.parent / "shared").is_dir() else None
UNDER_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require_real(available: bool, reason: str) -> None:
    """Skip (locally) or fail (under CI) when a real part is missing."""
    if available:
        return
    if UNDER_CI:
        pytest.fail(f"real part missing under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    require_real(SHARED is not None, "../shared (reference data) is not beside the checkout")
    return SHARED


@pytest.fixture
def run_cli(capsys):
    """Run `vllm-ops ARGS` in-process: returns (exit_code, stdout, stderr)."""
    from vllm_ops.cli import main

    def _run(*argv: str):
        try:
            rc = main(list(argv))
        except SystemExit as exc:  # argparse usage errors
            rc = exc.code if isinstance(exc.code, int) else 2
        out, err = capsys.readouterr()
        return rc, out, err

    return _run
