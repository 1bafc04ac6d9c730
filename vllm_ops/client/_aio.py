"""A minimal asyncio HTTP/1.1 keep-alive connection pool: the async face's default transport.

Why not httpx's ``AsyncHTTPTransport``: per streamed chunk it runs h11's event machinery, anyio
wrappers and the pool's request-assignment scan (quadratic in the number of connections), which
made the load generator CPU-bound long before the server. This pool is an ``asyncio.Protocol``
per connection (data arrives by callback into one buffer; the reader awaits a single future), a
hand-written response-head parser, Content-Length / chunked / read-to-close bodies, and one
connection per in-flight request, returned to the pool only when its body was read completely.

Failures raise httpx's exception classes (``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``,
``ReadError``, ``RemoteProtocolError``) so the client maps them exactly as on the httpx path.
A request on a *reused* connection that fails before any response byte arrived (the server
closed the idle connection meanwhile) is re-sent once on a fresh connection.
"""
from __future__ import annotations

import asyncio
import json
import ssl as _ssl
from collections import deque
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

import httpx

__all__ = ["AioPool", "AioResponse"]

_MAX_HEAD = 64 * 1024
_HIGH_WATER = 1 << 20  # pause reading when this much is buffered and nobody reads


class _Conn(asyncio.Protocol):
    __slots__ = ("key", "transport", "buf", "waiter", "lost", "eof", "exc", "paused", "used", "loop")

    def __init__(self, key: tuple, loop: asyncio.AbstractEventLoop) -> None:
        self.key = key
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.lost = False
        self.eof = False
        self.exc: BaseException | None = None
        self.paused = False
        self.used = 0  # requests sent on it

    # -- protocol callbacks --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)
        elif len(self.buf) > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        self.exc = exc
        self._wake()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    # -- reading ---------------------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        return not (self.lost or self.eof or self.transport is None or self.transport.is_closing())

    async def wait(self, timeout: float | None) -> None:
        """Wait for more bytes (or EOF); raise ReadTimeout after ``timeout`` seconds."""
        if self.lost or self.eof:
            raise httpx.RemoteProtocolError("the server closed the connection mid-response")
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        fut = self.loop.create_future()
        self.waiter = fut
        if timeout is None:
            await fut
        else:
            handle = self.loop.call_later(timeout, _expire, fut)
            try:
                await fut
            finally:
                handle.cancel()
        if self.waiter is fut:
            self.waiter = None

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(httpx.ReadTimeout("timed out waiting for the server"))


class _Req:
    """Just enough of ``httpx.Request`` for error messages (``resp.request.url``)."""

    __slots__ = ("method", "url")

    def __init__(self, method: str, url: str) -> None:
        self.method = method
        self.url = url


class AioResponse:
    """One response: status and headers at once; the body read in full or streamed raw.

    Has the ``httpx.Response`` surface the client uses: ``status_code``, ``reason_phrase``,
    ``headers`` (lower-case names), ``content``, ``text``, ``json()``, ``request.url``,
    ``aiter_raw()``/``aiter_bytes()``, ``aread()``, ``aclose()``.
    """

    __slots__ = ("status_code", "reason_phrase", "headers", "request", "_pool", "_conn", "_mode",
                 "_left", "_content", "_done", "_keep", "_timeout")

    def __init__(self, pool: "AioPool", conn: _Conn, status: int, reason: str, headers: dict,
                 request: _Req, mode: str, left: int, keep: bool, timeout: float | None) -> None:
        self.status_code = status
        self.reason_phrase = reason
        self.headers = headers
        self.request = request
        self._pool = pool
        self._conn: _Conn | None = conn
        self._mode = mode  # "length" | "chunked" | "close" | "none"
        self._left = left
        self._content: bytes | None = None
        self._done = mode == "none" or (mode == "length" and left == 0)
        self._keep = keep
        self._timeout = timeout
        if self._done:
            self._content = b""
            self._finish()

    # -- body ------------------------------------------------------------------------------------
    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives (transfer-decoded). Reading it to the end frees the connection."""
        conn = self._conn
        if self._done or conn is None:
            return
        timeout = self._timeout
        buf = conn.buf
        if self._mode == "chunked":
            while True:
                pieces, finished = self._parse_chunks(buf)
                if finished:
                    self._done = True
                    self._finish()
                    if pieces:
                        yield b"".join(pieces)
                    return
                if pieces:
                    yield b"".join(pieces) if len(pieces) > 1 else pieces[0]
                await conn.wait(timeout)
        elif self._mode == "length":
            while True:
                if buf:
                    n = min(len(buf), self._left)
                    piece = bytes(buf[:n])
                    del buf[:n]
                    self._left -= n
                    if self._left == 0:
                        self._done = True
                        self._finish()
                        yield piece
                        return
                    yield piece
                await conn.wait(timeout)
        else:  # read to close
            while True:
                if buf:
                    piece = bytes(buf)
                    buf.clear()
                    yield piece
                if conn.lost or conn.eof:
                    self._done = True
                    self._keep = False
                    self._finish()
                    return
                try:
                    await conn.wait(timeout)
                except httpx.RemoteProtocolError:
                    pass

    aiter_bytes = aiter_raw  # no content-encoding is asked for (no accept-encoding is sent)

    def _parse_chunks(self, buf: bytearray) -> tuple[list[bytes], bool]:
        pieces: list[bytes] = []
        pos = 0
        n = len(buf)
        finished = False
        while True:
            i = buf.find(b"\r\n", pos)
            if i < 0:
                break
            try:
                size = int(bytes(buf[pos:i]).split(b";", 1)[0], 16)
            except ValueError:
                raise httpx.RemoteProtocolError("malformed chunked body") from None
            if size == 0:
                if buf[i + 2:i + 4] == b"\r\n":
                    pos = i + 4
                    finished = True
                else:  # trailers
                    j = buf.find(b"\r\n\r\n", i + 2)
                    if j < 0:
                        break
                    pos = j + 4
                    finished = True
                break
            end = i + 2 + size
            if n < end + 2:
                break
            pieces.append(bytes(buf[i + 2:end]))
            pos = end + 2
        if pos:
            del buf[:pos]
        return pieces, finished

    async def aread(self) -> bytes:
        if self._content is None:
            parts = [p async for p in self.aiter_raw()]
            self._content = b"".join(parts)
        return self._content

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self._keep = False
            self._finish()

    def _finish(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool._release(conn, self._keep and not conn.buf)

    # -- the httpx.Response surface used by the client ----------------------------------------------
    @property
    def content(self) -> bytes:
        if self._content is None:
            raise httpx.ResponseNotRead()
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def is_closed(self) -> bool:
        return self._done


class AioPool:
    """Keep-alive HTTP/1.1 connections to any number of hosts; at most ``max_connections`` in use.

    Belongs to the event loop it was first used on.
    """

    def __init__(self, max_connections: int = 100, *, connect_timeout: float | None = 10.0,
                 read_timeout: float | None = 600.0, ssl_context: _ssl.SSLContext | None = None) -> None:
        self.max_connections = max(1, int(max_connections))
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._ssl = ssl_context
        self._idle: dict[tuple, list[_Conn]] = {}
        self._active = 0
        self._waiters: deque[asyncio.Future] = deque()
        self._targets: dict[str, tuple] = {}
        self._heads: dict[tuple, bytes] = {}
        self._closed = False
        self.connections_opened = 0  # for tests and diagnostics

    # -- request ---------------------------------------------------------------------------------
    def _target(self, url: str) -> tuple:
        t = self._targets.get(url)
        if t is None:
            u = urlsplit(url)
            if u.scheme not in ("http", "https") or not u.hostname:
                raise httpx.UnsupportedProtocol(f"cannot send to {url!r}")
            port = u.port or (443 if u.scheme == "https" else 80)
            default = (u.scheme == "http" and port == 80) or (u.scheme == "https" and port == 443)
            host = u.hostname if ":" not in u.hostname else f"[{u.hostname}]"
            path = (u.path or "/") + (f"?{u.query}" if u.query else "")
            t = ((u.scheme, u.hostname, port), path, host if default else f"{host}:{port}")
            self._targets[url] = t
        return t

    async def request(self, method: str, url: str, headers: list[tuple[str, str]], content: bytes | None,
                      *, stream: bool = False, read_error_body: bool = True) -> AioResponse:
        """Send one request; the response with its body read (``stream=False``) or still to read.

        With ``stream=True`` an error status (≥ 400) still has its body read when
        ``read_error_body`` (error messages are short), so the caller can parse it.
        """
        key, path, host = self._target(url)
        hk = (method, url, id(headers), content is not None)
        head = self._heads.get(hk)
        if head is None:
            lines = [f"{method} {path} HTTP/1.1", f"host: {host}"]
            lines += [f"{k}: {v}" for k, v in headers if k.lower() not in ("host", "content-length")]
            head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
            if len(self._heads) > 256:
                self._heads.clear()
            self._heads[hk] = head
        if content is not None:
            data = b"%scontent-length: %d\r\n\r\n%s" % (head, len(content), content)
        else:
            data = head + b"\r\n"
        req = _Req(method, url)
        await self._acquire()
        try:
            conn = self._take_idle(key)
            for attempt in (0, 1):
                if conn is None:
                    conn = await self._connect(key)
                reused = conn.used > 0
                conn.used += 1
                try:
                    conn.transport.write(data)  # type: ignore[union-attr]
                    resp = await self._read_head(conn, req, method)
                except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                    conn.close()
                    if reused and attempt == 0 and not conn.buf:
                        conn = None  # a stale keep-alive connection: once more, on a fresh one
                        continue
                    raise exc
                break
        except BaseException:
            # the slot is ours until a response owns it
            if conn is not None:
                conn.close()
            self._release(None, False)
            raise
        try:
            if not stream or (read_error_body and resp.status_code >= 400):
                await resp.aread()
        except BaseException:
            await resp.aclose()
            raise
        return resp

    async def _read_head(self, conn: _Conn, req: _Req, method: str) -> AioResponse:
        buf = conn.buf
        timeout = self.read_timeout
        while True:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                if len(buf) > _MAX_HEAD:
                    raise httpx.RemoteProtocolError("response head too large")
                if conn.lost or conn.eof:
                    if conn.exc is not None:
                        raise httpx.ReadError(f"connection lost: {conn.exc}")
                    raise httpx.RemoteProtocolError("the server closed the connection without a response")
                await conn.wait(timeout)
                continue
            head = bytes(buf[:i]).decode("latin-1")
            del buf[:i + 4]
            lines = head.split("\r\n")
            parts = lines[0].split(" ", 2)
            try:
                if not parts[0].startswith("HTTP/1."):
                    raise ValueError
                status = int(parts[1])
            except (ValueError, IndexError):
                raise httpx.RemoteProtocolError(f"malformed status line {lines[0][:80]!r}") from None
            reason = parts[2] if len(parts) > 2 else ""
            if 100 <= status < 200 and status != 101:
                continue  # 100 Continue and friends: the real answer follows
            headers: dict[str, str] = {}
            for line in lines[1:]:
                k, sep, v = line.partition(":")
                if not sep:
                    continue
                k = k.strip().lower()
                v = v.strip()
                headers[k] = f"{headers[k]}, {v}" if k in headers else v
            keep = parts[0] != "HTTP/1.0"
            conn_hdr = headers.get("connection")
            if conn_hdr is not None:
                tokens = conn_hdr.lower()
                if "close" in tokens:
                    keep = False
                elif "keep-alive" in tokens:
                    keep = True
            left = 0
            te = headers.get("transfer-encoding")
            if method == "HEAD" or status in (204, 304):
                mode = "none"
            elif te is not None and "chunked" in te.lower():
                mode = "chunked"
            elif "content-length" in headers:
                try:
                    left = int(headers["content-length"])
                except ValueError:
                    raise httpx.RemoteProtocolError("malformed content-length") from None
                mode = "length"
            else:
                mode = "close"
                keep = False
            return AioResponse(self, conn, status, reason, headers, req, mode, left, keep, timeout)

    # -- connections -----------------------------------------------------------------------------
    async def _acquire(self) -> None:
        if self._closed:
            raise httpx.ConnectError("the connection pool is closed")
        if self._active < self.max_connections and not self._waiters:
            self._active += 1
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # the releaser counted us in
        except BaseException:
            if fut.done() and not fut.cancelled():
                self._release(None, False)  # got the slot after all: hand it on
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            raise

    def _release(self, conn: _Conn | None, keep: bool) -> None:
        if conn is not None:
            if keep and conn.usable and not self._closed:
                idle = self._idle.setdefault(conn.key, [])
                if len(idle) < self.max_connections:
                    idle.append(conn)
                else:
                    conn.close()
            else:
                conn.close()
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot passes straight to the waiter
                return
        self._active -= 1

    def _take_idle(self, key: tuple) -> _Conn | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.usable and not conn.buf:
                return conn
            conn.close()
        return None

    async def _connect(self, key: tuple) -> _Conn:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        ssl_ctx = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = _ssl.create_default_context()
            ssl_ctx = self._ssl
        try:
            coro = loop.create_connection(lambda: _Conn(key, loop), host, port, ssl=ssl_ctx)
            if self.connect_timeout is None:
                _, conn = await coro
            else:
                _, conn = await asyncio.wait_for(coro, self.connect_timeout)
        except asyncio.TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}") from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        self.connections_opened += 1
        return conn  # type: ignore[return-value]

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
