"""A tiny OpenAI-shaped HTTP server on 127.0.0.1 that misbehaves on a script, for retry and
fault tests of the bundled client (no vLLM needed).

    with FlakyServer(script=[429, 503, 200]) as srv:      # two failures, then an answer
        VLLMProvider(srv.base_url, model="m").generate("hi")
        assert srv.hits == 3

``script`` lists what each successive request gets: an HTTP status (200 = a valid chat/completion
answer), ``"hang"`` (accept, never answer), ``"close"`` (close the connection without a response),
``"stream-cut"`` (start a chunked SSE stream, send one event, then drop the connection
mid-body) or
``"slow:SECONDS"`` (answer 200 after a delay). The last entry repeats. ``retry_after`` adds a
Retry-After header to 429/503 answers. Every request's headers are kept in ``requests``.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Sequence


def _completion(model: str, chat: bool) -> dict[str, Any]:
    choice = ({"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
              if chat else {"index": 0, "text": "ok", "finish_reason": "stop"})
    return {"id": "x", "object": "chat.completion" if chat else "text_completion", "created": 0,
            "model": model, "choices": [choice],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class FlakyServer:
    def __init__(self, script: Sequence[Any] = (200,), *, model: str = "m", retry_after: str | None = None):
        self.script = list(script) or [200]
        self.model = model
        self.retry_after = retry_after
        self.hits = 0
        self.requests: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _next(self) -> Any:
                with outer._lock:
                    action = outer.script[min(outer.hits, len(outer.script) - 1)]
                    outer.hits += 1
                    outer.requests.append({k.lower(): v for k, v in self.headers.items()})
                return action

            def _json(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                if code in (429, 503) and outer.retry_after is not None:
                    self.send_header("retry-after", outer.retry_after)
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                if self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [{"id": outer.model, "object": "model"}]})
                    return
                if self.path == "/health":
                    self._json(200, {})
                    return
                action = self._next()
                if action == "hang":
                    outer._stop.wait(120)
                    return
                if action == "close":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if isinstance(action, str) and action.startswith("slow:"):
                    outer._stop.wait(float(action[5:]))
                    action = 200
                if action == "stream-cut":
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": outer.model,
                             "choices": [{"index": 0, "delta": {"role": "assistant", "content": "par"},
                                          "finish_reason": None}]}
                    event = f"data: {json.dumps(chunk)}\n\n".encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                    self.wfile.flush()
                    time.sleep(0.1)
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                code = int(action)
                if code == 200:
                    try:
                        req = json.loads(body or b"{}")
                    except ValueError:
                        req = {}
                    self._json(200, _completion(outer.model, "messages" in req))
                else:
                    self._json(code, {"object": "error", "message": f"scripted {code}", "type": "Error",
                                      "code": code})

            do_GET = _handle
            do_POST = _handle

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.root_url + "/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FlakyServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
