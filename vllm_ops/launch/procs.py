"""Processes by /proc (Linux), no psutil: is a PID alive, which processes belong to a group,
and stopping a whole process group (SIGTERM, then SIGKILL after a grace period).

Safety: a process group id comes from a state file, which can be stale or corrupted. Nothing
here ever signals group 0 or 1 (``killpg(0)`` is *our own* group), vllm-ops' own process group
or session, or a process that started before the deployment did (``min_ticks``: the recorded
start time of the group leader; every process of a group started at or after its leader).
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

_PROC = Path("/proc")
PID_LIMIT = 1 << 22        # Linux PID_MAX_LIMIT (64-bit): no pid or pgid is ever above it


def signalable_group(pgid: object) -> bool:
    """True when ``pgid`` may be signalled at all: an int in 2..PID_LIMIT that is neither
    vllm-ops' own process group nor its session (``killpg(0, ...)`` would signal ourselves,
    group 1 is init's, and our session holds the user's shell)."""
    if isinstance(pgid, bool) or not isinstance(pgid, int) or not 1 < pgid <= PID_LIMIT:
        return False
    try:
        own = {os.getpgrp(), os.getsid(0), os.getpid()}
    except OSError:  # pragma: no cover - getsid cannot fail for ourselves
        own = {os.getpgrp(), os.getpid()}
    return pgid not in own


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 = state is index 0)."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, OSError):
        return None
    return raw[raw.rfind(")") + 2:].split()


def start_ticks(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (stat field 22)."""
    f = _stat_fields(pid)
    return int(f[19]) if f and len(f) > 19 else None


def alive(pid: int, ticks: int | None = None) -> bool:
    """True when ``pid`` runs (not a zombie) and, when ``ticks`` is given, is the same process
    that was started then (a recycled PID reads as dead)."""
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid <= PID_LIMIT:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    f = _stat_fields(pid)
    if f is None:
        return _PROC.is_dir() is False  # no /proc: trust kill(0)
    if f[0] in ("Z", "X"):
        return False
    return ticks is None or start_ticks(pid) == ticks


def group_members(pgid: int, min_ticks: int | None = None) -> list[int]:
    """Live processes whose process group or session is ``pgid`` (vLLM's engine core and
    workers stay in the group of the server they were forked from). With ``min_ticks`` (the
    leader's recorded start time) a process that started earlier is not counted: it cannot
    belong to that deployment. Never a member of a group :func:`signalable_group` refuses."""
    if not signalable_group(pgid) or _reused(pgid, min_ticks):
        return []
    out = []
    for entry in _PROC.iterdir() if _PROC.is_dir() else ():
        if not entry.name.isdigit():
            continue
        f = _stat_fields(int(entry.name))
        if not f or f[0] in ("Z", "X") or len(f) <= 19:
            continue
        if int(f[2]) == pgid or int(f[3]) == pgid:
            if min_ticks is not None and int(f[19]) < min_ticks:
                continue
            out.append(int(entry.name))
    return out


def _reused(pgid: int, min_ticks: int | None) -> bool:
    """True when the group's leader pid now names a process started at another time than the
    recorded ``min_ticks``: the pid was recycled, so the group we started is gone entirely
    (Linux never recycles a pid while it is still the id of a live group or session)."""
    if min_ticks is None:
        return False
    now = start_ticks(pgid)
    return now is not None and now != min_ticks


def _signal_group(pgid: int, sig: int, min_ticks: int | None = None) -> None:
    if not signalable_group(pgid) or _reused(pgid, min_ticks):
        return
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in group_members(pgid, min_ticks):  # members that moved to their own group but kept the session
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_group(pgid: int, grace: float = 20.0, poll: float = 0.1, min_ticks: int | None = None) -> bool:
    """SIGTERM the group, wait up to ``grace`` seconds, then SIGKILL what is left.
    Returns True when SIGKILL was needed. Zombies count as gone (their parent reaps them).
    A group :func:`signalable_group` refuses (0, 1, our own) is never signalled (returns False);
    ``min_ticks``: see :func:`group_members`."""
    if not signalable_group(pgid):
        return False
    _signal_group(pgid, signal.SIGTERM, min_ticks)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_members(pgid, min_ticks):
            return False
        time.sleep(poll)
    _signal_group(pgid, signal.SIGKILL, min_ticks)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and group_members(pgid, min_ticks):
        time.sleep(poll)
    return True

