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
from dataclasses import dataclass, field
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


def _session(pid: int) -> int | None:
    f = _stat_fields(pid)
    return int(f[3]) if f and len(f) > 3 else None


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



# ------------------------------------------------------------ deployments without a state file
# ProcessBackend.start puts these two variables in vLLM's environment; every process of the
# deployment inherits them, and /proc/<pid>/environ keeps them even when the state file is gone:
# `status` lists such groups as orphaned, `stop NAME` stops them. vLLM's engine core and workers
# rename themselves (``VLLM::EngineCore``: setproctitle overwrites the environment /proc shows),
# so a group's or leaderless session's unmarked processes count as members when a marked process
# vouches for it (Linux never reuses the id of a live group or session: they all descend from it).
MARKER = "VLLM_OPS_DEPLOYMENT"
MARKER_STATE_DIR = "VLLM_OPS_STATE_DIR"


def marker_env(name: str, state_dir: str | os.PathLike) -> dict[str, str]:
    """The environment marker of deployment ``name`` under ``state_dir`` (an absolute path)."""
    return {MARKER: name, MARKER_STATE_DIR: os.path.abspath(os.path.expanduser(os.fspath(state_dir)))}


def same_dir(a: str | os.PathLike | None, b: str | os.PathLike | None) -> bool:
    """True when two state directory paths name the same directory (it may not exist any more)."""
    if a is None or b is None:
        return False
    norm = [os.path.normpath(os.path.abspath(os.path.expanduser(os.fspath(p)))) for p in (a, b)]
    return norm[0] == norm[1] or os.path.realpath(norm[0]) == os.path.realpath(norm[1])


def read_marker(pid: int) -> tuple[str, str | None] | None:
    """(deployment name, state dir) from ``/proc/<pid>/environ``; None when the process carries
    no marker or its environment cannot be read (another user's process, gone, no /proc)."""
    try:
        raw = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    name = state = None
    key, skey = MARKER.encode() + b"=", MARKER_STATE_DIR.encode() + b"="
    for item in raw.split(b"\0"):
        if item.startswith(key):
            name = item[len(key):].decode("utf-8", "replace")
        elif item.startswith(skey):
            state = item[len(skey):].decode("utf-8", "replace")
    return (name, state) if name else None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


@dataclass
class MarkedGroup:
    """A process group whose processes carry a deployment's environment marker.

    ``pgid``: the group (= its leader's pid = the session id: ProcessBackend starts vLLM in a
    new session). ``leader_ticks``: the leader's start time, None when the leader is gone and
    only members are left (then only those members themselves are ever signalled, one by one).
    ``members``: (pid, start ticks) of every live process of it, leader included: the marked ones
    and the group's or session's others (renamed processes show no marker)."""
    name: str
    state_dir: str | None
    pgid: int
    leader_ticks: int | None
    members: list[tuple[int, int]] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)        # the leader's (or first member's) command line

    @property
    def pids(self) -> list[int]:
        return [p for p, _ in self.members]


def marked_groups(state_dir: str | os.PathLike | None = None, name: str | None = None) -> list[MarkedGroup]:
    """The process groups carrying the marker of a deployment (``name``, else any) started under
    ``state_dir`` (else any), found by a scan of the /proc entries we may read.

    A group counts when its leader (pid == pgid) carries the marker; its members are the processes
    of that group or session that started no earlier than the leader (:func:`group_members`), the
    marked ones only when they carry the same marker. Marked processes whose leader is gone form a
    leaderless group keyed by their session, with every live process of that session.
    Never a group :func:`signalable_group` refuses (ours, 0, 1), never vllm-ops itself."""
    recs: list[tuple[int, int, int, int, tuple[str, str | None]]] = []   # pid, pgid, sid, ticks, marker
    me = os.getpid()
    for entry in _PROC.iterdir() if _PROC.is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        m = read_marker(pid)
        if m is None or (name is not None and m[0] != name):
            continue
        if state_dir is not None and not same_dir(m[1], state_dir):
            continue
        f = _stat_fields(pid)
        if not f or f[0] in ("Z", "X") or len(f) <= 19:
            continue
        recs.append((pid, int(f[2]), int(f[3]), int(f[19]), m))
    groups: dict[int, MarkedGroup] = {}
    for pid, pgid, _sid, ticks, m in recs:
        if pid == pgid and signalable_group(pid):
            groups[pid] = MarkedGroup(m[0], m[1], pid, ticks, argv=_cmdline(pid))
    for pid, pgid, sid, ticks, m in recs:
        g = groups.get(pgid) or groups.get(sid)
        if g is not None:
            if (g.name, g.state_dir) == m and ticks >= (g.leader_ticks or 0):
                g.members.append((pid, ticks))
            continue
        # leaderless: keyed by the session vLLM was started in, only when that leader is gone
        # (a live leader without our marker means the group is not ours)
        if not signalable_group(sid) or alive(sid):
            continue
        g = groups.setdefault(sid, MarkedGroup(m[0], m[1], sid, None, argv=_cmdline(pid)))
        if (g.name, g.state_dir) == m:
            g.members.append((pid, ticks))
    for g in groups.values():
        if g.members:
            _add_unmarked(g)
    return sorted((g for g in groups.values() if g.members), key=lambda g: (g.name, g.pgid))


def _add_unmarked(g: MarkedGroup) -> None:
    """Add the group's (or leaderless session's) processes that show no marker (renamed ones)."""
    have = {p for p, _ in g.members}
    for pid in group_members(g.pgid, g.leader_ticks):
        ticks = start_ticks(pid)
        if pid not in have and ticks is not None and read_marker(pid) is None:
            g.members.append((pid, ticks))


def stop_marked(group: MarkedGroup, grace: float = 20.0, poll: float = 0.1) -> bool:
    """Stop a group found by :func:`marked_groups`; True when SIGKILL was needed.

    With a leader: only when the pid ``pgid`` still names the same process (start ticks) and
    still carries the same marker, then :func:`stop_group` (``min_ticks`` = the leader's start).
    Without one: each member alone, each re-checked before every signal (same start ticks, and
    still the marker or still the session); nothing else is touched."""
    marker = (group.name, group.state_dir)
    if group.leader_ticks is not None:
        if start_ticks(group.pgid) != group.leader_ticks or read_marker(group.pgid) != marker:
            return False
        return stop_group(group.pgid, grace, poll, min_ticks=group.leader_ticks)

    def ours(p: int) -> bool:       # a renamed member shows no marker: still in the session then
        return read_marker(p) == marker or (read_marker(p) is None and _session(p) == group.pgid)

    def left() -> list[int]:
        return [p for p, t in group.members if alive(p, t) and signalable_group(p) and ours(p)]

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        pids = left()
        if not pids:
            return sig == signal.SIGKILL
        for p in pids:
            try:
                os.kill(p, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and left():
            time.sleep(poll)
        if not left():
            return sig == signal.SIGKILL
    return True
