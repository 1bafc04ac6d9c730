"""Reliability suite helpers: a session tally of bad inputs tried and faults injected, the
one-line-error check every bad input goes through, and an orphan-process scan.

The tally counts distinct inputs (a repeated input, or a second command on the same input,
is not counted again). It is printed in the terminal summary and stored in the pytest cache under
``reliability/counts`` (``.pytest_cache/v/reliability/counts``) so the closing note can quote it.
"""
from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

SEEN: set = set()                   # ("inputs"|"faults", category, input key): each DISTINCT input once


def _key(key) -> str:
    """An input's identity: the caller's key (the generated value itself), else the running test's
    id (a parametrized test id names one input)."""
    if key is not None:
        return repr(key)
    return os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]


def count_input(category: str, n: int = 1, key=None) -> None:
    """Count ``n`` distinct bad inputs of ``category``; the same input tried again is not recounted."""
    base = _key(key)
    SEEN.update(("inputs", category, f"{base}#{i}") for i in range(n))


def count_fault(category: str, n: int = 1, key=None) -> None:
    base = _key(key)
    SEEN.update(("faults", category, f"{base}#{i}") for i in range(n))


def totals() -> dict:
    tally = Counter((kind, cat) for kind, cat, _ in SEEN)
    inputs = {cat: v for (kind, cat), v in tally.items() if kind == "inputs"}
    faults = {cat: v for (kind, cat), v in tally.items() if kind == "faults"}
    return {"inputs_total": sum(inputs.values()), "faults_total": sum(faults.values()),
            "inputs": dict(sorted(inputs.items())), "faults": dict(sorted(faults.items()))}


def assert_one_line_error(rc, err: str, expect=(2,), what: str = "") -> None:
    """The error contract: exit status in ``expect``, no traceback, at most one stderr line that
    starts with ``vllm-ops`` when the command failed."""
    assert "Traceback" not in err, f"{what}: traceback on stderr:\n{err}"
    assert rc in expect, f"{what}: exit {rc}, wanted {expect}; stderr: {err!r}"
    if rc not in (0, 3):
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert lines, f"{what}: exit {rc} with nothing on stderr"
        assert lines[-1].startswith("vllm-ops: error: "), f"{what}: last stderr line {lines[-1]!r}"


@pytest.fixture
def check_cli(run_cli):
    """Run the CLI in-process on a bad input and apply the error contract; counts the input."""
    def _check(*argv, expect=(2,), category="cli"):
        count_input(category)
        rc, out, err = run_cli(*argv)
        assert_one_line_error(rc, err, expect, what=" ".join(map(repr, argv))[:300])
        return rc, out, err
    return _check


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No Hub, no stray secrets, a private state directory for every test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for k in ("VLLM_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "VLLM_OPS_PROFILES_DIR",
              "VLLM_OPS_DEBUG", "VLLM_OPS_FORCE_PROBE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("VLLM_OPS_STATE_DIR", str(tmp_path / "state"))


def _stat_fields(entry: Path) -> list[str]:
    """/proc/<pid>/stat after the command name: state, ppid, pgrp, session, ..."""
    stat = (entry / "stat").read_text()
    return stat[stat.rfind(")") + 2:].split()


def processes_with(marker: str) -> list[tuple[int, str]]:
    """Live (non-zombie) processes whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            state = _stat_fields(entry)[0]
        except (OSError, IndexError):
            continue
        if marker in cmd and state not in ("Z", "X"):
            found.append((int(entry.name), cmd))
    return found


_SESSIONS: dict[str, set[int]] = {}    # marker -> sessions its marked processes were seen in


def processes_with_env(marker: str) -> list[tuple[int, str]]:
    """Live (non-zombie) processes of a launched vLLM: those whose ENVIRONMENT holds ``marker``
    (bytes match in /proc/<pid>/environ; processes inside containers too, same kernel), and every
    process in a session such a process was ever seen in. vLLM's engine core and workers rename
    themselves (``VLLM::EngineCore``, setproctitle), which overwrites the environment /proc shows:
    they are found by their session, which orphans keep after the API server dies, so call this
    once while the API server lives."""
    own = os.getsid(0)
    sessions = _SESSIONS.setdefault(marker, set())
    found, needle, rest = [], marker.encode(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fields = _stat_fields(entry)
            if fields[0] in ("Z", "X"):
                continue
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            if needle in (entry / "environ").read_bytes():
                found.append((int(entry.name), cmd))
                if int(fields[3]) not in (0, 1, own):
                    sessions.add(int(fields[3]))
            else:
                rest.append((int(entry.name), cmd, int(fields[3])))
        except (OSError, IndexError, ValueError):
            continue
    return found + [(pid, cmd) for pid, cmd, sid in rest if sid in sessions]


def wait_no_env_processes(marker: str, timeout: float = 15.0) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    left = processes_with_env(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = processes_with_env(marker)
    return left


def kill_env_marker_processes(marker: str) -> None:
    """Last-resort cleanup of processes this suite started (by a unique environment marker)."""
    for pid, _ in processes_with_env(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


class Gate:
    """Processes that run only when the test says so: ``close()`` stops them (SIGSTOP), ``pulse(s)``
    lets them run ``s`` seconds, ``open()`` lets them run again. For a launched vLLM's engine core
    on a 2-core box: left alone, its CPU threads generate the tiny model's 16k tokens in about a
    second, or starve this process and the API server for tens of seconds, depending on the load
    (seen in CI both ways; a free-running 10 % duty cycle still let a request end before a loaded
    test had seen the others start). Pulsed from the test's own loop, the engine advances only as
    fast as the test observes it, and a closed engine leaves the CPU to the clients."""

    def __init__(self, pids: list[int]):
        self.pids = list(pids)

    def _signal(self, sig: int) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass

    def close(self) -> None:
        self._signal(signal.SIGSTOP)

    def pulse(self, seconds: float) -> None:
        self._signal(signal.SIGCONT)
        time.sleep(seconds)
        self._signal(signal.SIGSTOP)

    def open(self) -> None:
        self._signal(signal.SIGCONT)


def wait_no_processes(marker: str, timeout: float = 15.0) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    left = processes_with(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = processes_with(marker)
    return left


def kill_marker_processes(marker: str) -> None:
    """Last-resort cleanup of processes this suite started (by their unique marker)."""
    for pid, _ in processes_with(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    t = totals()
    if not t["inputs_total"] and not t["faults_total"]:
        return
    bugs = [r for r in terminalreporter.stats.get("xfailed", [])
            if "BUG:" in str(getattr(r, "wasxfail", ""))]
    t["bugs_xfail_tracked"] = len(bugs)
    t["failed"] = len(terminalreporter.stats.get("failed", []))
    terminalreporter.write_sep("=", "reliability tally")
    terminalreporter.write_line(f"bad inputs tried: {t['inputs_total']}  "
                                f"faults injected: {t['faults_total']}  "
                                f"bugs tracked (xfail strict): {t['bugs_xfail_tracked']}  failed: {t['failed']}")
    for k, v in t["inputs"].items():
        terminalreporter.write_line(f"  input  {k:<28}{v}")
    for k, v in t["faults"].items():
        terminalreporter.write_line(f"  fault  {k:<28}{v}")
    try:
        config.cache.set("reliability/counts", t)
    except Exception:  # noqa: BLE001 — no cache (-p no:cacheprovider)
        terminalreporter.write_line(json.dumps(t))
