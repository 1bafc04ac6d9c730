"""A fault-injecting HTTP proxy for tests: 127.0.0.1, in front of a real vLLM server.

Every request is forwarded to the upstream server unchanged unless a fault is switched on;
each fault makes the server misbehave in exactly one way, so a check of ``vllm-ops validate``
(or the load generator's error accounting) can be shown to fail for the right reason::

    with FaultProxy(server.root_url, base_model="tiny") as proxy:
        proxy.set("strip_structured_outputs")
        run_validation(proxy.root_url, ...)
        proxy.clear()

Faults (names for :meth:`FaultProxy.set`):

===========================  =================================================================
strip_structured_outputs     removes ``structured_outputs`` / ``response_format`` from bodies
drop_beam                    beam-search answers lose their last choice
refuse_adapter_load          ``/v1/load_lora_adapter`` and ``POST /adapters`` answer 500
adapter_as_base              a request naming an adapter is sent with the base model's name
                             (and the answer still echoes the adapter's name)
stream_no_done               streams end without ``data: [DONE]``
stream_no_usage              streams carry no usage (usage chunks and fields removed)
fail_some                    every ``fail_every``-th generation request answers 500
hide_metrics                 /metrics loses the families named in ``hidden_metrics``
wrong_tokenize               /tokenize returns different token ids (each id + 1)
unhealthy                    /health answers 503
model_not_listed             /v1/models omits the base model
bad_version                  /version answers a version nobody can read (``"unknown"``)
empty_chat                   /v1/chat/completions answers with no choices
empty_completion             /v1/completions answers with no choices
swap_adapters                while BOTH adapters named in ``swap`` are loaded (the proxy watches
                             load/unload), a request for one is sent to the other (the answer
                             still echoes the name asked for): multi-LoRA routing gone wrong
===========================  =================================================================
"""
from __future__ import annotations

import http.server
import json
import threading
from typing import Any, Iterable, Iterator

import httpx

FAULTS = frozenset({
    "strip_structured_outputs", "drop_beam", "refuse_adapter_load", "adapter_as_base",
    "stream_no_done", "stream_no_usage", "fail_some", "hide_metrics", "wrong_tokenize",
    "unhealthy", "model_not_listed", "bad_version", "empty_chat", "empty_completion",
    "swap_adapters",
})

_GEN_PATHS = ("/v1/chat/completions", "/v1/completions")
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
        "proxy-connection", "upgrade", "te", "trailer"}


class FaultProxy:
    """Threaded proxy; ``root_url`` is what clients use. Switch faults with :meth:`set`."""

    def __init__(self, upstream_root: str, *, base_model: str, host: str = "127.0.0.1",
                 port: int = 0):
        self.upstream = upstream_root.rstrip("/")
        self.base_model = base_model
        self.faults: set[str] = set()
        self.fail_every = 3
        self.hidden_metrics: tuple[str, ...] = ("vllm:kv_cache_usage_perc",)
        self.swap: tuple[str, str] = ("lora-a", "lora-b")
        self.loaded: set[str] = set()                    # adapters loaded through the proxy
        self.requests: list[tuple[str, str]] = []        # (method, path) seen
        self._gen_count = 0
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=httpx.Timeout(120.0, connect=5.0),
                                    limits=httpx.Limits(max_connections=200))
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.root_url = f"http://{host}:{self.port}"
        self.base_url = self.root_url + "/v1"
        self._thread: threading.Thread | None = None

    # -- control -----------------------------------------------------------------------------
    def set(self, *faults: str, **params: Any) -> "FaultProxy":
        unknown = set(faults) - FAULTS
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}")
        with self._lock:
            self.faults = set(faults)
            self._gen_count = 0
            for k, v in params.items():
                if not hasattr(self, k):
                    raise ValueError(f"unknown proxy parameter {k}")
                setattr(self, k, v)
        return self

    def clear(self) -> "FaultProxy":
        return self.set()

    def has(self, fault: str) -> bool:
        return fault in self.faults

    def swapped(self, model: Any) -> str | None:
        """The adapter a request for ``model`` goes to under ``swap_adapters``, else None."""
        a, b = self.swap
        with self._lock:
            if "swap_adapters" not in self.faults or not {a, b} <= self.loaded:
                return None
        return {a: b, b: a}.get(model)

    def next_gen_fails(self) -> bool:
        with self._lock:
            self._gen_count += 1
            return "fail_some" in self.faults and self._gen_count % self.fail_every == 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "FaultProxy":
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(http.server.BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.0"   # close-delimited answers: streams pass through unbuffered

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # -- the one path ------------------------------------------------------------------------
    def _handle(self, method: str) -> None:
        p = self.owner
        path = self.path.split("?", 1)[0]
        p.requests.append((method, path))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        doc: Any = None
        if body and "json" in (self.headers.get("Content-Type") or ""):
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None

        if path == "/health" and p.has("unhealthy"):
            return self._reply(503, b"", "text/plain")
        if method == "POST" and (path in ("/v1/load_lora_adapter", "/adapters")) \
                and p.has("refuse_adapter_load"):
            return self._json(500, {"error": {"message": "adapter loading refused by fault proxy",
                                              "type": "InternalServerError", "param": None,
                                              "code": 500}})
        requested_model = None
        if path in _GEN_PATHS and isinstance(doc, dict):
            if p.next_gen_fails():
                return self._json(500, {"error": {"message": "injected failure",
                                                  "type": "InternalServerError", "param": None,
                                                  "code": 500}})
            if p.has("strip_structured_outputs"):
                doc.pop("structured_outputs", None)
                doc.pop("response_format", None)
            if p.has("adapter_as_base") and doc.get("model") not in (None, p.base_model):
                requested_model = doc["model"]
                doc["model"] = p.base_model
            other = p.swapped(doc.get("model"))
            if other is not None:
                requested_model, doc["model"] = doc["model"], other
            body = json.dumps(doc).encode()

        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in _HOP and k.lower() != "host"}
        req = p._client.build_request(method, p.upstream + self.path, content=body or None,
                                      headers=headers)
        try:
            resp = p._client.send(req, stream=True)
        except httpx.HTTPError as exc:
            return self._json(502, {"error": {"message": f"proxy: upstream failed: {exc}"}})
        try:
            ctype = resp.headers.get("content-type", "")
            if "text/event-stream" in ctype:
                return self._stream(resp, requested_model)
            data = resp.read()
            self._track_adapters(path, doc, resp.status_code)
            data = self._rewrite(path, doc, data, ctype, requested_model)
            return self._reply(resp.status_code, data, ctype)
        finally:
            resp.close()

    def _track_adapters(self, path: str, doc: Any, status: int) -> None:
        if status != 200 or not isinstance(doc, dict) or not doc.get("lora_name"):
            return
        with self.owner._lock:
            if path == "/v1/load_lora_adapter":
                self.owner.loaded.add(doc["lora_name"])
            elif path == "/v1/unload_lora_adapter":
                self.owner.loaded.discard(doc["lora_name"])

    def _rewrite(self, path: str, doc: Any, data: bytes, ctype: str, requested_model: str | None) -> bytes:
        p = self.owner
        if path == "/version" and p.has("bad_version"):
            return json.dumps({"version": "unknown"}).encode()
        if path == "/metrics" and p.has("hide_metrics"):
            keep = []
            for line in data.decode().splitlines():
                name = line.split()[2] if line.startswith("#") and len(line.split()) > 2 else \
                    line.split("{", 1)[0].split(" ", 1)[0]
                if any(name == h or name.startswith(h + "_") for h in p.hidden_metrics):
                    continue
                keep.append(line)
            return ("\n".join(keep) + "\n").encode()
        if "json" not in ctype:
            return data
        try:
            out = json.loads(data)
        except ValueError:
            return data
        changed = False
        if path == "/tokenize" and p.has("wrong_tokenize") and isinstance(out.get("tokens"), list):
            out["tokens"] = [t + 1 for t in out["tokens"]]
            changed = True
        if path == "/v1/models" and p.has("model_not_listed"):
            out["data"] = [m for m in out.get("data", []) if m.get("id") != p.base_model]
            changed = True
        if path in _GEN_PATHS:
            if requested_model is not None and "model" in out:
                out["model"] = requested_model
                changed = True
            if p.has("empty_chat" if path == _GEN_PATHS[0] else "empty_completion"):
                out["choices"] = []
                changed = True
            if p.has("drop_beam") and isinstance(doc, dict) and doc.get("use_beam_search") \
                    and len(out.get("choices") or []) > 1:
                out["choices"] = out["choices"][:-1]
                changed = True
        return json.dumps(out).encode() if changed else data

    def _stream(self, resp: httpx.Response, requested_model: str | None) -> None:
        p = self.owner
        self.send_response(resp.status_code)
        self.send_header("Content-Type", resp.headers.get("content-type", "text/event-stream"))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        for line in _lines(resp.iter_text()):
            if line.startswith("data:"):
                payload = line[5:].strip()
                if payload == "[DONE]":
                    if p.has("stream_no_done"):
                        continue
                else:
                    try:
                        chunk = json.loads(payload)
                    except ValueError:
                        chunk = None
                    if isinstance(chunk, dict):
                        if p.has("stream_no_usage"):
                            if chunk.get("usage") and not chunk.get("choices"):
                                continue
                            chunk.pop("usage", None)
                        if requested_model is not None and "model" in chunk:
                            chunk["model"] = requested_model
                        line = "data: " + json.dumps(chunk)
            try:
                self.wfile.write((line + "\n").encode())
                if not line:
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return
        self.wfile.flush()

    def _json(self, status: int, doc: Any) -> None:
        self._reply(status, json.dumps(doc).encode(), "application/json")

    def _reply(self, status: int, data: bytes, ctype: str) -> None:
        try:
            self.send_response(status)
            if ctype:
                self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass


def _lines(chunks: Iterable[str]) -> Iterator[str]:
    buf = ""
    for c in chunks:
        buf += c
        while "\n" in buf:
            line, buf = buf.split("\n", 1)
            yield line.rstrip("\r")
    if buf:
        yield buf
