"""A delaying TCP proxy on 127.0.0.1 for timeout tests: bytes from the upstream server are held
back ``delay`` seconds before they are passed on (the request goes through at once), so a client
sees a server that is slow to answer. ``delay`` can be changed while it runs; ``kill()`` drops
every open connection at once (a server that dies mid-request or mid-stream).

    with SlowProxy("127.0.0.1", upstream_port, delay=5.0) as proxy:
        VLLMProvider(proxy.base_url, timeout=1.0).generate("hi")   # → VLLMTimeoutError
"""
from __future__ import annotations

import socket
import threading
import time


class SlowProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, delay: float = 0.0):
        self.upstream = (upstream_host, upstream_port)
        self.delay = delay
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.root_url + "/v1"
        self._closed = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> "SlowProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream, 0.0), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, delay: float | None) -> None:
        try:
            while not self._closed.is_set():
                data = src.recv(65536)
                if not data:
                    break
                wait = self.delay if delay is None else delay
                if wait:
                    self._closed.wait(wait)
                    if self._closed.is_set():
                        break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def kill(self) -> None:
        """Drop every open connection (RST where possible) without closing the listener."""
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            for step in (lambda: s.shutdown(socket.SHUT_RDWR), s.close):
                try:
                    step()
                except OSError:
                    pass

    def close(self) -> None:
        self._closed.set()
        try:
            self._listener.close()
        except OSError:
            pass
        self.kill()
        time.sleep(0.05)
