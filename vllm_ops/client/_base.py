"""The one model layer of the client: config, pure request building, response parsing, retry policy.

Every operation is written once, as a *flow*: a generator that yields :class:`Req` objects and
receives the (successful, fully read) ``httpx.Response`` for each, then returns the result.
The sync face drives flows with ``httpx.Client``, the async face with ``httpx.AsyncClient``;
only sending, sleeping between retries and stream iteration are written twice.
"""
from __future__ import annotations

import email.utils
import json
import math
import time
from typing import Any, Generator, Mapping

import httpx

from vllm_ops.client._models import GenerateResponse, ModelInfo, StreamEvent, Tokenized, Usage
from vllm_ops.client._prometheus import parse_prometheus
from vllm_ops.client.errors import (ConnectTimeoutError, InvalidRequestError, ResponseError,
                                    VLLMConnectionError, VLLMError, VLLMStatusError, VLLMTimeoutError,
                                    error_for_status)
from vllm_ops.client.settings import ClientSettings, load_client_settings

# vLLM releases that changed the request protocol
STRUCTURED_OUTPUTS_SINCE = (0, 11, 0)  # `structured_outputs` object; guided_* deprecated
BEST_OF_REMOVED_IN = (0, 12, 0)  # best_of (and guided_*) removed: silently ignored after

_GUIDED = (("guided_json", "json"), ("guided_regex", "regex"), ("guided_choice", "choice"),
           ("guided_grammar", "grammar"))
_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "stop", "seed")
_DONE = object()


class Req:
    """One HTTP request a flow wants sent."""

    __slots__ = ("method", "url", "body", "stream", "retry", "tolerate")

    def __init__(self, method: str, url: str, body: Any = None, *, stream: bool = False,
                 retry: bool = True, tolerate: bool = False):
        self.method = method
        self.url = url
        self.body = body
        self.stream = stream
        self.retry = retry  # False: never retried (health probes)
        self.tolerate = tolerate  # True: an error status is sent into the flow, not raised

    def __repr__(self) -> str:
        return f"Req({self.method} {self.url})"


Flow = Generator[Req, Any, Any]


def split_urls(url: str) -> tuple[str, str]:
    """``(root_url, base_url)`` from either the server root or its ``/v1`` URL."""
    u = url.strip().rstrip("/")
    if u.endswith("/v1"):
        return u[:-3], u
    return u, u + "/v1"


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """``"0.11.0rc2"`` → ``(0, 11, 0)``; ``"0.10.2.dev5+gabc"`` → ``(0, 10, 2)``; junk → None."""
    if not text:
        return None
    parts: list[int] = []
    for piece in text.strip().lstrip("v").split(".")[:3]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):
            break
    return tuple(parts + [0] * (3 - len(parts))) if parts else None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        secs = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        secs = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(secs):
        return None
    return max(0.0, secs)


def status_error(resp: httpx.Response) -> VLLMStatusError:
    """The error for an error response, carrying vLLM's own message and type."""
    text = ""
    body: Any = None
    message = error_type = None
    try:
        text = resp.text
        body = json.loads(text) if text else None
    except (ValueError, UnicodeDecodeError, httpx.ResponseNotRead):
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            message, error_type = err.get("message"), err.get("type")
        elif isinstance(err, str):
            message = err
        elif "detail" in body:  # FastAPI validation errors (422)
            detail = body["detail"]
            if isinstance(detail, list):
                message = "; ".join(f"{'.'.join(str(x) for x in d.get('loc', ()))}: {d.get('msg')}"
                                    if isinstance(d, dict) else str(d) for d in detail)
            else:
                message = str(detail)
        elif isinstance(body.get("message"), str):
            message = body["message"]
    if not message:
        message = " ".join(text.split())[:500] or resp.reason_phrase or "error"
    retry_after = parse_retry_after(resp.headers.get("retry-after"))
    return error_for_status(resp.status_code, message, url=str(resp.request.url),
                            error_type=error_type, body=body if body is not None else text,
                            retry_after=retry_after)


def transport_error(exc: Exception, req: Req) -> VLLMError:
    """An httpx transport failure as the most specific :class:`VLLMError`."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout):
        return ConnectTimeoutError(f"timed out connecting to {req.url}", url=req.url)
    if isinstance(exc, httpx.TimeoutException):
        return VLLMTimeoutError(f"no answer from {req.url} in time ({type(exc).__name__})", url=req.url)
    return VLLMConnectionError(f"cannot reach {req.url}: {detail}", url=req.url)


def unavailable_error(exc: VLLMError, root_url: str) -> VLLMError:
    """The one-line error for a server whose ``GET /health`` failed: it names the server root and
    why (no connection, no answer in time, or the error status it answered)."""
    if isinstance(exc, VLLMStatusError):
        said = f": {exc.message}" if exc.message and exc.message.strip() not in ("", "error") else ""
        return error_for_status(exc.status_code, f"the server at {root_url} is not healthy: GET /health "
                                f"answered {exc.status_code}{said}", url=root_url)
    cause = exc.__cause__
    why = " ".join(str(cause).split()) if cause is not None and str(cause) else exc.message
    if isinstance(exc, VLLMConnectionError):
        return type(exc)(f"cannot reach the server at {root_url}: {why}", url=root_url)
    if isinstance(exc, VLLMTimeoutError):
        return VLLMTimeoutError(f"the server at {root_url} did not answer GET /health in time", url=root_url)
    return type(exc)(f"the server at {root_url} is not usable: {exc.message}", url=root_url)


def _json_schema(value: Any) -> Any:
    """A JSON schema from a dict, a JSON string or a pydantic model class."""
    if isinstance(value, type) and hasattr(value, "model_json_schema"):
        return value.model_json_schema()
    return value


def _candidates_part(a: Mapping[str, Any], version: tuple[int, ...] | None, stream: bool, body: dict) -> None:
    """``n``, ``best_of`` and beam search into ``body``: beam search sends its width as ``n`` (never
    ``best_of``) and does not stream; ``best_of`` alone is refused where the server would ignore it."""
    n, best_of = a.get("n"), a.get("best_of")
    if a.get("use_beam_search"):
        if stream:
            raise InvalidRequestError("vLLM does not stream beam search")
        body["use_beam_search"] = True
        body["n"] = best_of or n or 1  # the beam width; best_of itself is never sent
        return
    if best_of is not None:
        if version is None or version >= BEST_OF_REMOVED_IN:
            raise InvalidRequestError(
                "best_of was removed in vLLM 0.12 (the server would silently ignore it): "
                "use n=..., or use_beam_search=True with best_of as the beam width")
        body["best_of"] = best_of
    if n is not None:
        body["n"] = n


def _constraint_part(a: Mapping[str, Any], version: tuple[int, ...] | None, extra: dict, body: dict) -> None:
    """At most one structured-output constraint into ``body``: the legacy top-level ``guided_*`` field for
    servers older than STRUCTURED_OUTPUTS_SINCE, else ``structured_outputs`` (merged with one given in
    ``extra``, which this takes out of ``extra``)."""
    constraints = [(legacy, key, a.get(legacy)) for legacy, key in _GUIDED if a.get(legacy) is not None]
    rm = a.get("response_model")
    if rm is not None:
        constraints.append(("guided_json", "json", rm))
    if len(constraints) > 1:
        raise InvalidRequestError("give at most one of guided_json, guided_regex, guided_choice, "
                                  "guided_grammar, response_model")
    if not constraints:
        return
    legacy, key, value = constraints[0]
    if key == "json":
        value = _json_schema(value)
    elif key == "choice":
        value = [str(c) for c in value]
    if version is not None and version < STRUCTURED_OUTPUTS_SINCE:
        body[legacy] = value
        so = extra.pop("structured_outputs", None)
        if so and so.get("whitespace_pattern") is not None:
            body["guided_whitespace_pattern"] = so["whitespace_pattern"]
    else:
        so = dict(extra.pop("structured_outputs", None) or {})
        so[key] = value
        body["structured_outputs"] = so


class BaseProvider:
    """Config and every pure step; subclasses only send (see ``provider.py``)."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 model: str | None = None, timeout: float | None = None,
                 connect_timeout: float | None = None, max_retries: int | None = None,
                 retry_backoff: float | None = None, retry_max_wait: float | None = None,
                 retry_budget: float | None = None, max_tokens: int | None = None,
                 max_connections: int | None = None, headers: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None,
                 async_transport: httpx.AsyncBaseTransport | None = None,
                 settings: ClientSettings | None = None):
        if settings is None:
            settings = load_client_settings(
                base_url=base_url, api_key=api_key, model=model, timeout=timeout,
                connect_timeout=connect_timeout, max_retries=max_retries, retry_backoff=retry_backoff,
                retry_max_wait=retry_max_wait, retry_budget=retry_budget, max_tokens=max_tokens,
                max_connections=max_connections)
        self.settings = settings
        self.root_url, self.base_url = split_urls(settings.base_url)
        self.model: str | None = settings.model
        self.max_tokens = settings.max_tokens
        self._headers = {"user-agent": "vllm-ops-client", "accept": "application/json"}
        key = settings.api_key.get_secret_value() if settings.api_key is not None else None
        if key:
            self._headers["authorization"] = f"Bearer {key}"
        if headers:
            self._headers.update({k.lower(): v for k, v in headers.items()})
        self._timeout = httpx.Timeout(settings.timeout, connect=settings.connect_timeout)
        self._extensions = {"timeout": self._timeout.as_dict()}
        self._json_headers = list({**self._headers, "content-type": "application/json"}.items())
        self._plain_headers = list(self._headers.items())
        self._urls: dict[str, httpx.URL] = {}
        self._limits = httpx.Limits(max_connections=settings.max_connections,
                                    max_keepalive_connections=settings.max_connections)
        self._transport = transport
        if async_transport is None and hasattr(transport, "handle_async_request"):
            async_transport = transport  # e.g. httpx.MockTransport serves both faces
        self._async_transport = async_transport
        self._chat_url = self.base_url + "/chat/completions"
        self._completions_url = self.base_url + "/completions"
        self._server_version: tuple[int, ...] | None = None
        self._version_text: str | None = None
        self._version_known = False

    @classmethod
    def from_root_url(cls, root_url: str, **kwargs: Any):
        """A client for the server at ``http://host:port`` (its OpenAI routes are under /v1)."""
        return cls(base_url=split_urls(root_url)[0] + "/v1", **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r})"

    def _request(self, req: Req) -> httpx.Request:
        """The ``httpx.Request`` for a :class:`Req` (prepared headers, parsed URLs cached)."""
        url = self._urls.get(req.url)
        if url is None:
            url = self._urls[req.url] = httpx.URL(req.url)
        if req.body is None:
            return httpx.Request(req.method, url, headers=self._plain_headers, extensions=self._extensions)
        return httpx.Request(req.method, url, headers=self._json_headers, content=self._content(req),
                             extensions=self._extensions)

    @staticmethod
    def _content(req: Req) -> bytes:
        return json.dumps(req.body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()

    # -- retry policy (pure) ---------------------------------------------------------------
    def _retry_wait(self, req: Req, attempt: int, err: VLLMError, started: float) -> float | None:
        """Seconds to sleep before retry number ``attempt + 1``, or None: give up.

        Retried: connection errors, 429 and 503 — with exponential backoff
        (``retry_backoff * 2**attempt``), or the server's Retry-After, capped by ``retry_max_wait``;
        never more than ``max_retries`` times, and no retry that would end after ``retry_budget``.
        """
        s = self.settings
        if not req.retry or attempt >= s.max_retries:
            return None
        if isinstance(err, VLLMStatusError):
            if err.status_code not in (429, 503):
                return None
        elif not isinstance(err, VLLMConnectionError):
            return None
        wait = s.retry_backoff * (2 ** attempt)
        retry_after = getattr(err, "retry_after", None)
        if retry_after is not None:
            wait = retry_after
        wait = min(wait, s.retry_max_wait)
        if time.monotonic() - started + wait > s.retry_budget:
            return None
        return wait

    # -- flows: metadata --------------------------------------------------------------------
    def _version_flow(self) -> Flow:
        """The server's version, read once from ``GET /version`` and cached (None if unknown)."""
        if not self._version_known:
            resp = yield Req("GET", self.root_url + "/version", tolerate=True)
            text = None
            if not isinstance(resp, VLLMError):
                try:
                    text = resp.json().get("version")
                except (ValueError, AttributeError):
                    text = None
            self._version_text = text
            self._server_version = parse_version(text)
            self._version_known = True
        return self._server_version

    def _version_text_flow(self) -> Flow:
        yield from self._version_flow()
        if self._version_text is None:
            raise ResponseError("the server did not tell its version (GET /version)",
                                url=self.root_url + "/version")
        return self._version_text

    def _models_flow(self) -> Flow:
        resp = yield Req("GET", self.base_url + "/models")
        data = self._json(resp).get("data") or []
        return [ModelInfo.from_dict(d) for d in data if isinstance(d, dict) and "id" in d]

    def _default_model_flow(self) -> Flow:
        """The client's model, else the server's (first) base model, discovered once."""
        if self.model is None:
            models = yield from self._models_flow()
            base = [m for m in models if m.parent is None] or models
            if not base:
                raise ResponseError("the server lists no models (GET /v1/models)", url=self.base_url + "/models")
            self.model = base[0].id
        return self.model

    def _adapters_flow(self) -> Flow:
        models = yield from self._models_flow()
        bases = {m.id for m in models if m.parent is None}
        target = self.model if self.model in bases else None
        return [m for m in models if m.parent is not None and (target is None or m.parent == target)]

    def _load_adapter_flow(self, name: str, path: str, load_inplace: bool) -> Flow:
        body: dict[str, Any] = {"lora_name": name, "lora_path": str(path)}
        if load_inplace:
            body["load_inplace"] = True
        resp = yield Req("POST", self.base_url + "/load_lora_adapter", body)
        return resp.text

    def _unload_adapter_flow(self, name: str) -> Flow:
        resp = yield Req("POST", self.base_url + "/unload_lora_adapter", {"lora_name": name})
        return resp.text

    def _health_flow(self) -> Flow:
        resp = yield Req("GET", self.root_url + "/health", retry=False)
        return resp.status_code == 200

    def _metrics_flow(self) -> Flow:
        resp = yield Req("GET", self.root_url + "/metrics")
        return parse_prometheus(resp.text)

    def _tokenize_flow(self, text: str, model: str | None, add_special_tokens: bool | None) -> Flow:
        body: dict[str, Any] = {"prompt": text}
        if model or self.model:
            body["model"] = model or self.model
        if add_special_tokens is not None:
            body["add_special_tokens"] = add_special_tokens
        resp = yield Req("POST", self.root_url + "/tokenize", body)
        d = self._json(resp)
        return Tokenized(tokens=d.get("tokens") or [], count=d.get("count", len(d.get("tokens") or [])),
                         max_model_len=d.get("max_model_len"), token_strs=d.get("token_strs"), raw=d)

    def _detokenize_flow(self, tokens: list[int], model: str | None) -> Flow:
        body: dict[str, Any] = {"tokens": [int(t) for t in tokens]}
        if model or self.model:
            body["model"] = model or self.model
        resp = yield Req("POST", self.root_url + "/detokenize", body)
        d = self._json(resp)
        text = d.get("prompt") if isinstance(d, dict) else None
        if not isinstance(text, str):
            raise ResponseError("/detokenize answered without a prompt", url=self.root_url + "/detokenize",
                                content=str(d)[:500])
        return text

    # -- flows: generation --------------------------------------------------------------------
    def _generate_flow(self, a: dict, stream: bool = False) -> Flow:
        """Resolve model/version if needed, build the request; send it (or hand it back to stream)."""
        model = a["model"] or self.model
        if model is None:
            model = yield from self._default_model_flow()
        version = None
        if a["best_of"] is not None and not a["use_beam_search"] or (
                a["response_model"] is not None or a["guided_json"] is not None
                or a["guided_regex"] is not None or a["guided_choice"] is not None
                or a["guided_grammar"] is not None):
            version = yield from self._version_flow()
        url, body, endpoint = self.build_generate(a, model, version, stream=stream)
        req = Req("POST", url, body, stream=stream)
        if stream:
            return req, endpoint
        resp = yield req
        return self.parse_generate(resp, endpoint, a["response_model"])

    def build_generate(self, a: Mapping[str, Any], model: str, version: tuple[int, ...] | None,
                       stream: bool = False) -> tuple[str, dict, str]:
        """Pure: ``(url, json body, endpoint)`` for generate's arguments ``a``.

        ``version`` is the server's (None = unknown, treated as current): servers older than
        0.11.0 get the legacy top-level ``guided_*`` fields, newer ones ``structured_outputs``;
        ``best_of`` without beam search is refused from 0.12.0 on (the server would ignore it).
        """
        extra = dict(a.get("extra") or ())
        endpoint = a.get("endpoint") or "chat"
        body: dict[str, Any] = {"model": model}
        url = self._prompt_part(a, endpoint, body)
        max_tokens = a.get("max_tokens")
        if max_tokens is None:
            max_tokens = self.max_tokens
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        for k in _SAMPLING:
            v = a.get(k)
            if v is not None:
                body[k] = v
        _candidates_part(a, version, stream, body)
        _constraint_part(a, version, extra, body)
        body.update(extra)
        if stream:
            body["stream"] = True
        return url, body, endpoint

    def _prompt_part(self, a: Mapping[str, Any], endpoint: str, body: dict) -> str:
        """The prompt into ``body`` (chat messages with the system prompt first, or a completions prompt);
        the endpoint's URL."""
        prompt, messages = a.get("prompt"), a.get("messages")
        if endpoint == "chat":
            if messages is None and prompt is None:
                raise InvalidRequestError("give a prompt or messages")
            msgs = list(messages) if messages is not None else []
            if a.get("system_prompt") and not any(m.get("role") == "system" for m in msgs):
                msgs.insert(0, {"role": "system", "content": a["system_prompt"]})
            if prompt is not None:
                msgs.append({"role": "user", "content": prompt})
            body["messages"] = msgs
            return self._chat_url
        if endpoint == "completions":
            if messages is not None:
                raise InvalidRequestError("messages need the chat endpoint (endpoint='chat')")
            if prompt is None:
                raise InvalidRequestError("give a prompt")
            body["prompt"] = prompt if a.get("system_prompt") is None else f"{a['system_prompt']}\n\n{prompt}"
            return self._completions_url
        raise InvalidRequestError(f"unknown endpoint {endpoint!r} (chat or completions)")

    def parse_generate(self, resp: httpx.Response, endpoint: str, response_model: Any = None) -> GenerateResponse:
        raw = self._json(resp)
        choices = raw.get("choices") if isinstance(raw, dict) else None
        if not isinstance(choices, list):
            raise ResponseError("the answer has no choices", url=str(resp.request.url), content=resp.text[:500])
        if response_model is None:
            return GenerateResponse(raw, endpoint)
        chat = endpoint == "chat"
        parsed_all = []
        for c in choices:
            text = (c.get("message") or {}).get("content") if chat else c.get("text")
            try:
                parsed_all.append(response_model.model_validate_json(text or ""))
            except ValueError as exc:  # pydantic.ValidationError is a ValueError
                raise ResponseError(f"the answer does not match {response_model.__name__} "
                                    f"(finish_reason={c.get('finish_reason')}): "
                                    f"{' '.join(str(exc).split())[:300]}",
                                    url=str(resp.request.url), content=text) from exc
        return GenerateResponse(raw, endpoint, parsed_all[0] if parsed_all else None, parsed_all)

    @staticmethod
    def stream_event(data: bytes | str, now: float, chat: bool) -> StreamEvent | None:
        """One SSE data payload → a :class:`StreamEvent`; ``_DONE`` at ``[DONE]``; None to skip.

        Raises the matching :class:`VLLMStatusError` on an ``error`` event.
        """
        if data == b"[DONE]" or data == "[DONE]":
            return _DONE  # type: ignore[return-value]
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise ResponseError(f"a stream event is not JSON: {data[:200]!r}") from exc
        if type(obj) is not dict:
            return None
        err = obj.get("error")
        if err:
            if isinstance(err, dict):
                code = err.get("code")
                status = code if isinstance(code, int) and 400 <= code < 600 else 500
                raise error_for_status(status, str(err.get("message") or err), error_type=err.get("type"), body=obj)
            raise error_for_status(500, str(err), body=obj)
        text = None
        choices = obj.get("choices")
        if choices:
            c = choices[0]
            if c.get("index", 0) != 0:
                c = next((x for x in choices if x.get("index", 0) == 0), None)
            if c is not None:
                text = (c.get("delta") or {}).get("content") if chat else c.get("text")
        u = obj.get("usage")
        usage = Usage(u.get("prompt_tokens") or 0, u.get("completion_tokens") or 0,
                      u.get("total_tokens") or 0) if u else None
        return StreamEvent(obj, now, text, usage)

    @staticmethod
    def _json(resp: httpx.Response) -> Any:
        try:
            return json.loads(resp.content)
        except ValueError as exc:
            raise ResponseError(f"the answer is not JSON ({resp.status_code}): {resp.text[:200]!r}",
                                url=str(resp.request.url), content=resp.text[:500]) from exc


def gen_args(loc: dict) -> dict:
    """generate()'s locals() → the argument dict flows take."""
    loc.pop("self", None)
    return loc
