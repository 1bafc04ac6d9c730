"""Processes by /proc (Linux), no psutil: is a PID alive, which processes belong to a group,
and stopping a whole process group (SIGTERM, then SIGKILL after a grace period)."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

_PROC = Path("/proc")


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
    if pid <= 0:
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


def group_members(pgid: int) -> list[int]:
    """Live processes whose process group or session is ``pgid`` (vLLM's engine core and
    workers stay in the group of the server they were forked from)."""
    out = []
    for entry in _PROC.iterdir() if _PROC.is_dir() else ():
        if not entry.name.isdigit():
            continue
        f = _stat_fields(int(entry.name))
        if not f or f[0] in ("Z", "X"):
            continue
        if int(f[2]) == pgid or int(f[3]) == pgid:
            out.append(int(entry.name))
    return out


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in group_members(pgid):  # members that moved to their own group but kept the session
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_group(pgid: int, grace: float = 20.0, poll: float = 0.1) -> bool:
    """SIGTERM the group, wait up to ``grace`` seconds, then SIGKILL what is left.
    Returns True when SIGKILL was needed. Zombies count as gone (their parent reaps them)."""
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_members(pgid):
            return False
        time.sleep(poll)
    _signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and group_members(pgid):
        time.sleep(poll)
    return True

