"""A stand-in vLLM for measuring the load generator itself (not vLLM).

A small asyncio server that answers `vllm-ops bench`'s calls (/health, /v1/models, /tokenize, streaming
/v1/completions) and, like vLLM's decode steps, emits one token to every open stream every STEP_MS, the
first one TTFT_MS after the request arrived. Whatever `vllm-ops bench` measures above those two figures is
the client's own cost (and, on a small machine, this server's: compare its step period, /stats).

    python scripts/fake_stream_server.py PORT [STEP_MS=8] [TTFT_MS=50] &
    vllm-ops bench --url http://127.0.0.1:PORT --concurrency 1,32,128 --num-prompts 384 \\
        --input-len 1024 --output-len 128
    curl -s 127.0.0.1:PORT/stats        # {"steps": N, "elapsed": s}: the server's own step period

The usage chunk reports 1 completion token, so bench's TPOT column stays empty here; read its ITL.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field

TOKEN_EVENT = b'data: {"id":"x","object":"text_completion","choices":[{"index":0,"text":" a"}]}\n\n'
USAGE_EVENT = (b'data: {"id":"x","object":"text_completion","choices":[],'
               b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}\n\n')
MODELS = b'{"object":"list","data":[{"id":"fake","object":"model","max_model_len":32768}]}'
TOKENS = json.dumps({"tokens": list(range(100, 300)), "count": 200}).encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@dataclass
class Stream:
    writer: asyncio.StreamWriter
    remaining: int
    start_at: float
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Engine:
    def __init__(self, step_ms: float, ttft_ms: float) -> None:
        self.step_s, self.ttft_s = step_ms / 1e3, ttft_ms / 1e3
        self.streams: list[Stream] = []
        self.steps, self.t0 = 0, time.monotonic()

    def add(self, writer: asyncio.StreamWriter, max_tokens: int) -> Stream:
        s = Stream(writer, max_tokens, time.monotonic() + self.ttft_s)
        self.streams.append(s)
        return s

    def step(self) -> None:
        """One token to every started stream; finished streams get usage, [DONE] and the last chunk."""
        now, keep = time.monotonic(), []
        for s in self.streams:
            if now < s.start_at:
                keep.append(s)
            elif s.remaining > 0:
                s.writer.write(chunk(TOKEN_EVENT))
                s.remaining -= 1
                keep.append(s)
            else:
                s.writer.write(chunk(USAGE_EVENT) + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
                s.done.set()
        self.streams = keep
        self.steps += 1

    async def run(self) -> None:
        while True:
            t0 = time.monotonic()
            self.step()
            await asyncio.sleep(max(0.0, self.step_s - (time.monotonic() - t0)))


def _reply(writer: asyncio.StreamWriter, status: str, body: bytes, ctype: str = "application/json") -> None:
    writer.write(b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s"
                 % (status.encode(), ctype.encode(), len(body), body))


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    length = next((int(h.split(":", 1)[1]) for h in head[1:] if h.lower().startswith("content-length:")), 0)
    return head[0], (await reader.readexactly(length) if length else b"")


def handler(engine: Engine):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line, body = await _read_request(reader)
                if line.startswith("POST") and "/completions" in line:
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                 b"transfer-encoding: chunked\r\n\r\n")
                    await engine.add(writer, int(json.loads(body).get("max_tokens", 16))).done.wait()
                elif line.startswith("GET /stats"):
                    _reply(writer, "200 OK", json.dumps({"steps": engine.steps,
                                                         "elapsed": time.monotonic() - engine.t0}).encode())
                elif line.startswith("GET /health"):
                    _reply(writer, "200 OK", b"")
                elif "/tokenize" in line or "/v1/models" in line:
                    _reply(writer, "200 OK", TOKENS if "/tokenize" in line else MODELS)
                else:
                    _reply(writer, "404 Not Found", b'{"error":"not served here"}')
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
    return handle


async def main(port: int, step_ms: float, ttft_ms: float) -> None:
    engine = Engine(step_ms, ttft_ms)
    server = await asyncio.start_server(handler(engine), "127.0.0.1", port, backlog=1024)
    runner = asyncio.create_task(engine.run())
    async with server:
        try:
            await server.serve_forever()
        finally:
            runner.cancel()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(int(args[0]), float(args[1]) if len(args) > 1 else 8.0, float(args[2]) if len(args) > 2 else 50.0))
