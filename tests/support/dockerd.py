"""A real Docker Engine for the tests: use the one that answers, else start Debian's dockerd.

:func:`ensure_dockerd` returns a :class:`Dockerd` whose ``host`` is the ``DOCKER_HOST`` URL to
use. When ``DOCKER_HOST`` is set it is used as it is (never started). Otherwise the default
socket ``/var/run/docker.sock`` is pinged; when nothing answers and ``dockerd`` is installed it
is started there with ``--storage-driver=vfs`` (works inside a container, no kernel overlay
needed), its own ``--data-root`` (``/var/lib/vllm-ops-docker``, kept between sessions so the
test image is built once), a pidfile and a log file, and left running for the session.

Several test sessions may share one daemon: each holds a shared ``flock`` on a users file while
it runs; at the end :meth:`Dockerd.release` stops the daemon only when the fixture started it
(a marker file says so) and no other session still holds the lock.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SOCKET = "/var/run/docker.sock"
DATA_ROOT = Path(os.environ.get("VLLM_OPS_TEST_DOCKER_ROOT", "/var/lib/vllm-ops-docker"))
PIDFILE = Path("/var/run/vllm-ops-dockerd.pid")
LOGFILE = Path("/var/log/vllm-ops-dockerd.log")
MARKER = Path("/var/run/vllm-ops-dockerd.started-by-tests")
USERS = Path("/var/run/vllm-ops-dockerd.users")
START_LOCK = Path("/var/run/vllm-ops-dockerd.start.lock")


def ping(host: str, timeout: float = 2.0) -> bool:
    """True when a Docker Engine answers ``GET /_ping`` at ``host`` (unix:// or tcp://)."""
    try:
        if host.startswith("unix://"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(host[len("unix://"):])
        elif host.startswith(("tcp://", "http://")):
            hp = host.split("://", 1)[1].rstrip("/")
            h, _, p = hp.rpartition(":")
            s = socket.create_connection((h, int(p)), timeout=timeout)
        else:
            return False
        with s:
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            data = s.recv(256)
        return data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n", 1)[0] + b" "
    except OSError:
        return False


@dataclass
class Dockerd:
    host: str
    started: bool = False              # this session's fixture started it
    pid: int | None = None
    _users_fd: int | None = field(default=None, repr=False)

    def env(self) -> dict[str, str]:
        """Environment for subprocesses (``DOCKER_HOST``)."""
        return {**os.environ, "DOCKER_HOST": self.host}

    def release(self) -> None:
        """End of session: stop the daemon if the fixture started it and nobody else uses it."""
        if self._users_fd is None:
            return
        fd, self._users_fd = self._users_fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another session still uses it
            if not MARKER.exists():
                return  # not ours: a daemon that was already running
            _stop_daemon()
        finally:
            os.close(fd)


def _read_pid() -> int | None:
    try:
        return int(PIDFILE.read_text().strip())
    except (OSError, ValueError):
        return None


def _gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie child of ours is reaped and counts as gone)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _stop_daemon(timeout: float = 30.0) -> None:
    pid = _read_pid()
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid = None
    deadline = time.monotonic() + timeout
    while pid is not None and time.monotonic() < deadline:
        if _gone(pid):
            break
        time.sleep(0.2)
    else:
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    MARKER.unlink(missing_ok=True)


def _start_daemon(timeout: float) -> int:
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    LOGFILE.parent.mkdir(parents=True, exist_ok=True)
    argv = ["dockerd", "--storage-driver=vfs", f"--data-root={DATA_ROOT}",
            f"--pidfile={PIDFILE}", f"--host=unix://{SOCKET}"]
    with open(LOGFILE, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    MARKER.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping(f"unix://{SOCKET}"):
            return proc.pid
        if proc.poll() is not None:
            break
        time.sleep(0.25)
    tail = "\n".join(LOGFILE.read_text(errors="replace").splitlines()[-15:])
    if proc.poll() is None:
        proc.terminate()
    MARKER.unlink(missing_ok=True)
    raise RuntimeError(f"dockerd did not come up within {timeout:.0f} s; log {LOGFILE}:\n{tail}")


def ensure_dockerd(timeout: float = 60.0) -> Dockerd | None:
    """A running Docker Engine (started when needed), or None when none can be had."""
    explicit = os.environ.get("DOCKER_HOST")
    if explicit:
        return Dockerd(explicit) if ping(explicit) else None
    host = f"unix://{SOCKET}"
    started, pid = False, None
    if not ping(host):
        if shutil.which("dockerd") is None or os.geteuid() != 0:
            return None
        START_LOCK.parent.mkdir(parents=True, exist_ok=True)
        with open(START_LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)       # one session starts it; the others wait
            if not ping(host):
                pid, started = _start_daemon(timeout), True
    users = os.open(USERS, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(users, fcntl.LOCK_SH)
    return Dockerd(host, started=started, pid=pid, _users_fd=users)
