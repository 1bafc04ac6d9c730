"""Two test hosts on this machine: network namespaces joined by a veth pair.

    with TwoHosts() as hosts:            # needs root and iproute2 (`ip`)
        hosts.a, hosts.b                 # namespace names
        hosts.addr_a, hosts.addr_b       # 10.200.0.1 / 10.200.0.2 (a /24 of their own)
        hosts.dev_a, hosts.dev_b         # the veth device inside each (GLOO_SOCKET_IFNAME)
        hosts.exec_prefix("a")           # ["ip", "netns", "exec", NAME]
        hosts.run("a", [...])            # subprocess.run inside a namespace

These addresses exist only inside the two namespaces the helper creates; tests send traffic to
nothing else. ``close()`` (also on ``__exit__``) kills every process still inside either namespace
(``ip netns pids``), then deletes the namespaces (which removes the veth pair).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from typing import Sequence

SUBNET = "10.200.0"


def available() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    if shutil.which("ip") is None:
        return False, "iproute2 (`ip`) is not installed (scripts/setup-test-parts.sh)"
    return True, ""


class TwoHosts:
    def __init__(self, tag: str | None = None, subnet: str = SUBNET):
        tag = tag or uuid.uuid4().hex[:6]
        self.a, self.b = f"vo-{tag}-a", f"vo-{tag}-b"
        self._va, self._vb = f"vo{tag}a", f"vo{tag}b"
        self.addr_a, self.addr_b = f"{subnet}.1", f"{subnet}.2"
        self._made: list[str] = []

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)

    def open(self) -> "TwoHosts":
        try:
            for ns in (self.a, self.b):
                self._ip("netns", "add", ns)
                self._made.append(ns)
            self._ip("link", "add", self._va, "type", "veth", "peer", "name", self._vb)
            self._ip("link", "set", self._va, "netns", self.a)
            self._ip("link", "set", self._vb, "netns", self.b)
            for ns, dev, addr in ((self.a, self._va, self.addr_a), (self.b, self._vb, self.addr_b)):
                self._ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
                self._ip("-n", ns, "link", "set", dev, "up")
                self._ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    @property
    def dev_a(self) -> str:
        """The veth device inside host A (for GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME)."""
        return self._va

    @property
    def dev_b(self) -> str:
        return self._vb

    def exec_prefix(self, which: str) -> list[str]:
        return ["ip", "netns", "exec", self.a if which == "a" else self.b]

    def run(self, which: str, argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 120)
        return subprocess.run([*self.exec_prefix(which), *argv], **kw)

    def pids(self) -> list[int]:
        out: list[int] = []
        for ns in self._made:
            r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=30)
            out += [int(p) for p in r.stdout.split() if p.isdigit()]
        return out

    def kill_all(self, grace: float = 10.0) -> list[int]:
        """SIGTERM, then SIGKILL, every process left in either namespace; returns those that were."""
        left = self.pids()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.2)
            if not self.pids():
                break
        return left

    def close(self) -> None:
        if self._made:
            self.kill_all()
        for ns in list(self._made):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=30)
            self._made.remove(ns)

    def __enter__(self) -> "TwoHosts":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
