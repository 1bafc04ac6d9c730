"""Raw stream events, keep-alive reuse, detokenize and the async face's own HTTP/1.1 pool.

Keep-alive is checked against a tiny counting HTTP/1.1 server on 127.0.0.1 (a thread running an
asyncio server written here, not a real part): it counts the TCP connections it accepted.
"""
from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest

from vllm_ops.client import (BadRequestError, NotFoundError, SSEDecoder, StreamEvent, VLLMProvider,
                             VLLMTimeoutError)
from vllm_ops.client._sse import SSEDataDecoder
from vllm_ops.client.settings import ClientSettings


def _sse(events, done=True, crlf=False) -> bytes:
    nl = "\r\n" if crlf else "\n"
    text = "".join(f"data: {json.dumps(e)}{nl}{nl}" for e in events)
    if done:
        text += f"data: [DONE]{nl}{nl}"
    return text.encode()


def _completion_events(n, chat=False):
    if chat:
        ev = [{"choices": [{"index": 0, "delta": {"content": f"t{i}"}}]} for i in range(n)]
    else:
        ev = [{"choices": [{"index": 0, "text": f"t{i}"}]} for i in range(n)]
    ev.append({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": 3 + n}})
    return ev


class CountingServer:
    """HTTP/1.1 keep-alive server in a thread. ``connections``: TCP connections accepted."""

    def __init__(self, *, close_idle_after_response=False, stall=False):
        self.connections = 0
        self.requests = []
        self.close_idle = close_idle_after_response
        self.stall = stall
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self._ready.wait(10)
        self.url = f"http://127.0.0.1:{self.port}"

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def start():
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            self._ready.set()
        self.loop.run_until_complete(start())
        self.loop.run_forever()

    async def _handle(self, reader, writer):
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                doc = json.loads(body) if body else None
                self.requests.append((method, path, headers, doc))
                if self.stall:
                    await asyncio.sleep(5)
                if path.endswith("/completions") and doc and doc.get("stream"):
                    if doc.get("max_tokens") == 99:
                        data = json.dumps({"error": {"message": "max_tokens too big", "type": "BadRequestError",
                                                     "code": 400}}).encode()
                        writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                                     b"content-length: %d\r\n\r\n%s" % (len(data), data))
                    else:
                        payload = _sse(_completion_events(doc.get("max_tokens", 3), chat="messages" in doc))
                        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                     b"transfer-encoding: chunked\r\n\r\n")
                        for i, part in enumerate(payload.split(b"\n\n")[:-1]):
                            part += b"\n\n"
                            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                            await writer.drain()
                            if i == 0 and doc.get("max_tokens") == 50:
                                await asyncio.sleep(0.3)  # a slow stream: abandoned mid-body
                        writer.write(b"0\r\nx-trailer: 1\r\n\r\n")
                else:
                    if path == "/detokenize":
                        answer = {"prompt": "text of " + ",".join(map(str, doc["tokens"]))}
                    elif path == "/v1/models":
                        answer = {"data": [{"id": "tiny", "parent": None}]}
                    else:
                        answer = {"version": "0.32.0"}
                    data = json.dumps(answer).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (len(data), data))
                await writer.drain()
                if self.close_idle:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def stop(self):
        async def shutdown():
            self.server.close()
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()
            await asyncio.sleep(0.01)
        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def server():
    s = CountingServer()
    yield s
    s.stop()


def _llm(url, **kw):
    return VLLMProvider(settings=ClientSettings(base_url=url + "/v1", model="tiny", max_retries=0, **kw))


# -- keep-alive ---------------------------------------------------------------------------------
async def test_async_streams_and_calls_reuse_one_connection(server):
    llm = _llm(server.url)
    for _ in range(5):
        assert [t async for t in llm.astream("x", endpoint="completions", max_tokens=3)] == ["t0", "t1", "t2"]
    for _ in range(3):
        assert len([e async for e in llm.astream_events("x", max_tokens=2)]) == 4
    assert await llm.adetokenize([1, 2]) == "text of 1,2"
    assert await llm.aversion() == "0.32.0"
    assert server.connections == 1
    await llm.aclose()


def test_sync_stream_reuses_its_connection(server):
    with _llm(server.url) as llm:
        for _ in range(4):
            assert list(llm.stream("x", endpoint="completions", max_tokens=2)) == ["t0", "t1"]
        evs = list(llm.stream_events("x", max_tokens=2))
        assert evs[-1].done and [e.text for e in evs[:-1]] == ["t0", "t1", None]
        assert llm.detokenize([7]) == "text of 7"
    assert server.connections == 1


async def test_concurrent_streams_use_one_connection_each_and_keep_them(server):
    llm = _llm(server.url)

    async def one():
        return [e async for e in llm.astream_events("x", endpoint="completions", max_tokens=4)]
    for _ in range(3):
        results = await asyncio.gather(*(one() for _ in range(4)))
        assert all(r[-1].done and len(r) == 6 for r in results)
    assert server.connections <= 4
    await llm.aclose()


async def test_max_connections_bounds_the_pool(server):
    llm = _llm(server.url, max_connections=2)
    results = await asyncio.gather(*(llm.agenerate("x", endpoint="completions") for _ in range(6)),
                                   return_exceptions=True)
    assert server.connections <= 2 and len(results) == 6
    await llm.aclose()


async def test_a_server_closing_idle_connections_is_reconnected_to():
    s = CountingServer(close_idle_after_response=True)
    try:
        llm = _llm(s.url)
        for _ in range(3):
            await asyncio.sleep(0.05)
            assert await llm.aversion() == "0.32.0"
            llm._version_known = False
        assert s.connections == 3
        await llm.aclose()
    finally:
        s.stop()


async def test_an_abandoned_stream_closes_its_connection_and_the_next_works(server):
    llm = _llm(server.url)
    agen = llm.astream_events("x", endpoint="completions", max_tokens=50)
    first = await agen.__anext__()
    assert first.text == "t0"
    await agen.aclose()
    assert [t async for t in llm.astream("x", endpoint="completions", max_tokens=2)] == ["t0", "t1"]
    assert server.connections == 2
    await llm.aclose()


# -- events -------------------------------------------------------------------------------------
async def test_stream_events_shape(server):
    llm = _llm(server.url)
    evs = [e async for e in llm.astream_events([1, 2, 3], endpoint="completions", max_tokens=3,
                                               ignore_eos=True, stream_options={"include_usage": True})]
    assert all(isinstance(e, StreamEvent) for e in evs)
    assert [e.text for e in evs[:3]] == ["t0", "t1", "t2"] and all(e.choices for e in evs[:3])
    usage_ev, done = evs[3], evs[4]
    assert usage_ev.text is None and usage_ev.choices == [] and usage_ev.usage.completion_tokens == 3
    assert usage_ev.data["usage"]["prompt_tokens"] == 3
    assert done.done and done.data is None and len(evs) == 5
    times = [e.time for e in evs]
    assert times == sorted(times)
    body = server.requests[-1][3]
    assert body["prompt"] == [1, 2, 3] and body["stream"] is True and body["ignore_eos"] is True
    await llm.aclose()


def _mock(body: bytes, status=200):
    def handler(request):
        return httpx.Response(status, headers={"content-type": "text/event-stream"}, content=body)
    return VLLMProvider(settings=ClientSettings(base_url="http://s/v1", model="tiny", max_retries=0),
                        transport=httpx.MockTransport(handler))


def test_no_done_marker_without_done():
    evs = list(_mock(_sse(_completion_events(2), done=False)).stream_events("x", endpoint="completions"))
    assert [e.text for e in evs] == ["t0", "t1", None] and not any(e.done for e in evs)


def test_crlf_streams_decode_the_same():
    evs = list(_mock(_sse(_completion_events(2, chat=True), crlf=True)).stream_events("x"))
    assert [e.text for e in evs[:2]] == ["t0", "t1"] and evs[-1].done


async def test_error_status_on_the_own_pool_is_mapped(server):
    llm = _llm(server.url)
    with pytest.raises(BadRequestError, match="max_tokens too big"):
        async for _ in llm.astream_events("x", endpoint="completions", max_tokens=99):
            pass
    assert [t async for t in llm.astream("x", endpoint="completions", max_tokens=1)] == ["t0"]
    assert server.connections == 1
    await llm.aclose()


async def test_read_timeout_on_the_own_pool():
    s = CountingServer(stall=True)
    try:
        llm = _llm(s.url, timeout=0.2)
        with pytest.raises(VLLMTimeoutError):
            await llm.aversion()
        await llm.aclose()
    finally:
        s.stop()


# -- detokenize ---------------------------------------------------------------------------------
def test_detokenize_request_shape():
    seen = []

    def handler(request):
        seen.append(request)
        if request.url.path == "/detokenize":
            return httpx.Response(200, json={"prompt": "hello"})
        return httpx.Response(404, json={"error": {"message": "nope", "type": "NotFoundError"}})
    p = VLLMProvider(settings=ClientSettings(base_url="http://srv:8000/v1", model="tiny", max_retries=0),
                     transport=httpx.MockTransport(handler))
    assert p.detokenize([5, 6], model="m2") == "hello"
    assert str(seen[0].url) == "http://srv:8000/detokenize" and seen[0].method == "POST"
    assert json.loads(seen[0].content) == {"tokens": [5, 6], "model": "m2"}
    assert asyncio.run(p.adetokenize([1])) == "hello"
    assert json.loads(seen[1].content) == {"tokens": [1], "model": "tiny"}


def test_detokenize_errors_are_mapped():
    p = _mock(b"", status=404)
    with pytest.raises(NotFoundError):
        p.detokenize([1])


# -- the bytes decoder agrees with the text decoder -----------------------------------------------
@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 10_000])
@pytest.mark.parametrize("stream", [
    b'data: {"a": 1}\n\ndata: {"b": "\xc3\xa9\xe6\x95\x8f"}\n\n: ping\n\ndata: [DONE]\n\n',
    b'\xef\xbb\xbfevent: x\ndata: one\ndata: two\nid: 3\n\n\n\ndata:nospace\n\ndata\n\ndata: tail',
    b'data: a\r\n\r\ndata: b\rdata: c\r\r\ndata: d\n\n',
    b'data: a\n\ndata: b\r\n\r\n',
])
def test_data_decoder_matches_sse_decoder(stream, step):
    d = SSEDataDecoder()
    got = []
    for i in range(0, len(stream), step):
        got += d.feed(stream[i:i + step])
    got += d.flush()
    full = SSEDecoder()
    evs = full.feed(stream.decode("utf-8")) + full.flush()
    assert [g.decode() if isinstance(g, bytes) else g for g in got] == [e.data for e in evs]
