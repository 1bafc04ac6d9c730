"""``VLLMProvider``: the sync and async faces over one model layer (:mod:`vllm_ops.client._base`).

Only sending (with retries), sleeping and stream iteration are written twice here; every request
body, URL and response parse lives once in the base. One ``httpx.HTTPTransport`` (sync calls) and
one lean asyncio keep-alive pool (async calls, :mod:`._aio`; an injected ``async_transport`` or
``transport`` replaces it with httpx) per provider, each created on first use: one connection pool
per face. Close with ``close()`` / ``aclose()`` or use ``with`` / ``async with``.

Streams are read to their end after ``data: [DONE]`` so the connection goes back to the pool
(keep-alive); a stream abandoned early closes its connection.

Endpoint choice: ``generate`` sends ``/v1/chat/completions`` by default — a ``prompt`` is wrapped
as a user message (appended after ``messages`` when both are given; ``system_prompt`` is put
first). ``endpoint="completions"`` sends ``/v1/completions`` with the raw prompt instead.
"""
from __future__ import annotations

import asyncio
import time
from time import perf_counter
from typing import Any, AsyncIterator, Iterable, Iterator, Sequence

import httpx

from vllm_ops.client._aio import AioPool
from vllm_ops.client._base import (_DONE, BaseProvider, Flow, Req, gen_args, status_error, transport_error,
                                   unavailable_error)
from vllm_ops.client._models import GenerateResponse, ModelInfo, StreamEvent, Tokenized
from vllm_ops.client._prometheus import Metrics
from vllm_ops.client._sse import SSEDataDecoder
from vllm_ops.client.errors import VLLMError, VLLMStatusError

__all__ = ["VLLMProvider", "create_llm"]


class VLLMProvider(BaseProvider):
    """Client for one vLLM OpenAI-compatible server.

    ``VLLMProvider(base_url=None, api_key=None, *, model=None, timeout=None, connect_timeout=None,
    max_retries=None, retry_backoff=None, retry_max_wait=None, retry_budget=None, max_tokens=None,
    max_connections=None, headers=None, transport=None, async_transport=None, settings=None)``

    Unset arguments come from the environment (``VLLM_BASE_URL``, ``VLLM_API_KEY``,
    ``VLLM_OPS_CLIENT_*``; see :mod:`vllm_ops.client.settings`). ``base_url`` may be the ``/v1``
    URL or the server root. ``model=None`` uses the server's base model (asked once).
    ``model=<adapter name>`` on a call routes it to that LoRA adapter.
    """

    _http: httpx.BaseTransport | None = None
    _ahttp: Any = None  # AioPool, or the injected httpx async transport
    _aloop: asyncio.AbstractEventLoop | None = None

    # -- the two senders ----------------------------------------------------------------------
    # The hot path talks to the transport (httpx's connection pool) directly: requests are built
    # with prepared headers/timeouts, skipping the Client layer's cookie, redirect and hook work
    # (~30 % less CPU per request). ``transport=`` still injects any httpx transport.
    def _pool(self) -> httpx.BaseTransport:
        if self._http is None:
            self._http = self._transport or httpx.HTTPTransport(limits=self._limits)
        return self._http

    def _apool(self) -> Any:
        # an async pool's connections belong to one event loop: a new loop (another
        # asyncio.run) gets a new pool; the old one cannot be closed from here and is dropped
        loop = asyncio.get_running_loop()
        if self._ahttp is None or self._aloop is not loop:
            self._aloop = loop
            if self._async_transport is not None:
                self._ahttp = self._async_transport
            else:
                s = self.settings
                self._ahttp = AioPool(s.max_connections, connect_timeout=s.connect_timeout,
                                      read_timeout=s.timeout)
        return self._ahttp

    def _send(self, req: Req) -> httpx.Response:
        pool = self._http or self._pool()
        started = time.monotonic()
        attempt = 0
        while True:
            cause: Exception | None = None
            request = self._request(req)
            try:
                resp = pool.handle_request(request)
                resp.request = request
                if not req.stream or resp.status_code >= 400:
                    try:
                        resp.read()
                    finally:
                        resp.close()
            except httpx.TransportError as exc:
                err: VLLMError = transport_error(exc, req)
                cause = exc
            else:
                if resp.status_code < 400:
                    return resp
                err = status_error(resp)
            wait = self._retry_wait(req, attempt, err, started)
            if wait is None:
                raise err from cause
            time.sleep(wait)
            attempt += 1

    async def _asend(self, req: Req) -> Any:
        """Send on the async face; the response (``AioResponse`` or ``httpx.Response``) with its
        body read, or — ``req.stream`` and a success status — still to be read."""
        pool = self._ahttp if self._aloop is asyncio.get_running_loop() else self._apool()
        aio = type(pool) is AioPool
        if aio:
            headers = self._plain_headers if req.body is None else self._json_headers
            content = None if req.body is None else self._content(req)
        started = time.monotonic()
        attempt = 0
        while True:
            cause: Exception | None = None
            try:
                if aio:
                    resp = await pool.request(req.method, req.url, headers, content, stream=req.stream)
                else:
                    request = self._request(req)
                    resp = await pool.handle_async_request(request)
                    resp.request = request
                    if not req.stream or resp.status_code >= 400:
                        try:
                            await resp.aread()
                        finally:
                            await resp.aclose()
            except httpx.TransportError as exc:
                err: VLLMError = transport_error(exc, req)
                cause = exc
            else:
                if resp.status_code < 400:
                    return resp
                err = status_error(resp)
            wait = self._retry_wait(req, attempt, err, started)
            if wait is None:
                raise err from cause
            await asyncio.sleep(wait)
            attempt += 1

    def _drive(self, flow: Flow) -> Any:
        try:
            req = next(flow)
            while True:
                try:
                    resp: Any = self._send(req)
                except VLLMStatusError as exc:
                    if not req.tolerate:
                        raise
                    resp = exc
                req = flow.send(resp)
        except StopIteration as stop:
            return stop.value

    async def _adrive(self, flow: Flow) -> Any:
        try:
            req = next(flow)
            while True:
                try:
                    resp: Any = await self._asend(req)
                except VLLMStatusError as exc:
                    if not req.tolerate:
                        raise
                    resp = exc
                req = flow.send(resp)
        except StopIteration as stop:
            return stop.value

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the sync connection pool (the async one needs ``aclose()``)."""
        if self._http is not None:
            if self._http is not self._transport:
                self._http.close()
            self._http = None

    async def aclose(self) -> None:
        """Close both connection pools."""
        if self._ahttp is not None:
            if self._ahttp is not self._async_transport:
                if self._aloop is asyncio.get_running_loop():
                    await self._ahttp.aclose()
            self._ahttp = self._aloop = None
        self.close()

    def __enter__(self) -> "VLLMProvider":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> "VLLMProvider":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- generation -------------------------------------------------------------------------
    def generate(self, prompt: str | None = None, *, messages: Sequence[dict] | None = None,
                 model: str | None = None, system_prompt: str | None = None,
                 max_tokens: int | None = None, temperature: float | None = None,
                 top_p: float | None = None, top_k: int | None = None, min_p: float | None = None,
                 stop: str | list[str] | None = None, seed: int | None = None, n: int | None = None,
                 guided_json: Any = None, guided_regex: str | None = None,
                 guided_choice: Sequence[str] | None = None, guided_grammar: str | None = None,
                 response_model: type | None = None, use_beam_search: bool = False,
                 best_of: int | None = None, endpoint: str = "chat", **extra: Any) -> GenerateResponse:
        """One completion. ``guided_*``/``response_model`` constrain the output (sent as vLLM's
        ``structured_outputs``; legacy fields only to servers < 0.11); ``response_model`` (a
        pydantic class) also parses the answer into ``.parsed``. ``use_beam_search`` sends
        ``n = best_of or n`` beams (all in ``.choices``). ``**extra`` goes into the body as is
        (``repetition_penalty``, ``ignore_eos``, ``structured_outputs`` options, ...).
        """
        return self._drive(self._generate_flow(gen_args(locals())))

    async def agenerate(self, prompt: str | None = None, *, messages: Sequence[dict] | None = None,
                        model: str | None = None, system_prompt: str | None = None,
                        max_tokens: int | None = None, temperature: float | None = None,
                        top_p: float | None = None, top_k: int | None = None, min_p: float | None = None,
                        stop: str | list[str] | None = None, seed: int | None = None, n: int | None = None,
                        guided_json: Any = None, guided_regex: str | None = None,
                        guided_choice: Sequence[str] | None = None, guided_grammar: str | None = None,
                        response_model: type | None = None, use_beam_search: bool = False,
                        best_of: int | None = None, endpoint: str = "chat", **extra: Any) -> GenerateResponse:
        """Async :meth:`generate`."""
        return await self._adrive(self._generate_flow(gen_args(locals())))

    def stream(self, prompt: str | None = None, *, messages: Sequence[dict] | None = None,
               model: str | None = None, system_prompt: str | None = None,
               max_tokens: int | None = None, temperature: float | None = None,
               top_p: float | None = None, top_k: int | None = None, min_p: float | None = None,
               stop: str | list[str] | None = None, seed: int | None = None, n: int | None = None,
               guided_json: Any = None, guided_regex: str | None = None,
               guided_choice: Sequence[str] | None = None, guided_grammar: str | None = None,
               response_model: type | None = None, use_beam_search: bool = False,
               best_of: int | None = None, endpoint: str = "chat", **extra: Any) -> Iterator[str]:
        """Text deltas of the first choice as they arrive (no beam search: vLLM can't stream it)."""
        for ev in self._events(gen_args(locals())):
            if ev.text:
                yield ev.text

    async def astream(self, prompt: str | None = None, *, messages: Sequence[dict] | None = None,
                      model: str | None = None, system_prompt: str | None = None,
                      max_tokens: int | None = None, temperature: float | None = None,
                      top_p: float | None = None, top_k: int | None = None, min_p: float | None = None,
                      stop: str | list[str] | None = None, seed: int | None = None, n: int | None = None,
                      guided_json: Any = None, guided_regex: str | None = None,
                      guided_choice: Sequence[str] | None = None, guided_grammar: str | None = None,
                      response_model: type | None = None, use_beam_search: bool = False,
                      best_of: int | None = None, endpoint: str = "chat", **extra: Any) -> AsyncIterator[str]:
        """Async :meth:`stream`."""
        async for ev in self._aevents(gen_args(locals())):
            if ev.text:
                yield ev.text

    def stream_events(self, prompt: str | None = None, *, messages: Sequence[dict] | None = None,
                      model: str | None = None, system_prompt: str | None = None,
                      max_tokens: int | None = None, temperature: float | None = None,
                      top_p: float | None = None, top_k: int | None = None, min_p: float | None = None,
                      stop: str | list[str] | None = None, seed: int | None = None, n: int | None = None,
                      guided_json: Any = None, guided_regex: str | None = None,
                      guided_choice: Sequence[str] | None = None, guided_grammar: str | None = None,
                      response_model: type | None = None, use_beam_search: bool = False,
                      best_of: int | None = None, endpoint: str = "chat", **extra: Any) -> Iterator[StreamEvent]:
        """The raw stream: one :class:`StreamEvent` per decoded chunk (its JSON ``data``, arrival
        ``time`` from ``time.perf_counter()``, choice 0's ``text`` delta, ``usage`` when present),
        then a final ``done`` marker once ``data: [DONE]`` arrived. Same arguments as
        :meth:`generate` (``stream_options={"include_usage": True}`` adds the usage chunk).
        An error status raises before any event; an ``error`` event raises its
        :class:`VLLMStatusError`."""
        return self._events(gen_args(locals()))

    def astream_events(self, prompt: str | None = None, *, messages: Sequence[dict] | None = None,
                       model: str | None = None, system_prompt: str | None = None,
                       max_tokens: int | None = None, temperature: float | None = None,
                       top_p: float | None = None, top_k: int | None = None, min_p: float | None = None,
                       stop: str | list[str] | None = None, seed: int | None = None, n: int | None = None,
                       guided_json: Any = None, guided_regex: str | None = None,
                       guided_choice: Sequence[str] | None = None, guided_grammar: str | None = None,
                       response_model: type | None = None, use_beam_search: bool = False,
                       best_of: int | None = None, endpoint: str = "chat", **extra: Any) -> AsyncIterator[StreamEvent]:
        """Async :meth:`stream_events`."""
        return self._aevents(gen_args(locals()))

    def _chunk_events(self, datas: Iterable[bytes], now: float, chat: bool) -> Iterator[StreamEvent]:
        """Pure step shared by both faces: decoded SSE data items → events; the final marker
        (``data: [DONE]``) is yielded as a ``done`` event and ends the sequence."""
        event = self.stream_event
        for data in datas:
            ev = event(data, now, chat)
            if ev is _DONE:
                yield StreamEvent(None, now, done=True)
                return
            if ev is not None:
                yield ev

    def _events(self, args: dict) -> Iterator[StreamEvent]:
        req, ep = self._drive(self._generate_flow(args, stream=True))
        chat = ep == "chat"
        resp = self._send(req)
        try:
            decoder = SSEDataDecoder()
            raw = resp.iter_bytes()
            for chunk in raw:
                for ev in self._chunk_events(decoder.feed(chunk), perf_counter(), chat):
                    if ev.done:
                        for _ in raw:  # the rest (the last chunk's end): the connection is reusable
                            pass
                    yield ev
                    if ev.done:
                        return
            yield from self._chunk_events(decoder.flush(), perf_counter(), chat)
        except httpx.TransportError as exc:
            raise transport_error(exc, req) from exc
        finally:
            resp.close()

    async def _aevents(self, args: dict) -> AsyncIterator[StreamEvent]:
        req, ep = await self._adrive(self._generate_flow(args, stream=True))
        chat = ep == "chat"
        resp = await self._asend(req)
        try:
            decoder = SSEDataDecoder()
            raw = resp.aiter_bytes()
            async for chunk in raw:
                for ev in self._chunk_events(decoder.feed(chunk), perf_counter(), chat):
                    if ev.done:
                        async for _ in raw:  # read to the end: the connection goes back to the pool
                            pass
                    yield ev
                    if ev.done:
                        return
            for ev in self._chunk_events(decoder.flush(), perf_counter(), chat):
                yield ev
        except httpx.TransportError as exc:
            raise transport_error(exc, req) from exc
        finally:
            await resp.aclose()

    # -- server, models, adapters -----------------------------------------------------------
    def health(self) -> bool:
        """True when ``GET /health`` answers 200 (never raises, never retries)."""
        try:
            return self._drive(self._health_flow())
        except VLLMError:
            return False

    async def ahealth(self) -> bool:
        try:
            return await self._adrive(self._health_flow())
        except VLLMError:
            return False

    def require_healthy(self) -> None:
        """``GET /health`` once (never retried); unless it answers 2xx, raise one
        :class:`VLLMError` whose message names the server root and why (``cannot reach the server
        at http://host:port: [Errno 111] Connection refused``, ``... is not healthy: GET /health
        answered 503``). Commands call it before anything else."""
        try:
            self._drive(self._health_flow())
        except VLLMError as exc:
            raise unavailable_error(exc, self.root_url) from exc

    async def arequire_healthy(self) -> None:
        try:
            await self._adrive(self._health_flow())
        except VLLMError as exc:
            raise unavailable_error(exc, self.root_url) from exc

    def version(self) -> str:
        """The server's vLLM version (``GET /version``, cached)."""
        return self._drive(self._version_text_flow())

    async def aversion(self) -> str:
        return await self._adrive(self._version_text_flow())

    def list_models(self) -> list[ModelInfo]:
        """``GET /v1/models``: base models and loaded LoRA adapters."""
        return self._drive(self._models_flow())

    async def alist_models(self) -> list[ModelInfo]:
        return await self._adrive(self._models_flow())

    def list_adapters(self) -> list[str]:
        """Names of the loaded LoRA adapters (``/v1/models`` entries whose ``parent`` is the base
        model), so ``if "sql" not in llm.list_adapters(): llm.load_adapter("sql", path)`` works.
        Their paths and parents: :meth:`list_adapter_models`."""
        return [m.id for m in self._drive(self._adapters_flow())]

    async def alist_adapters(self) -> list[str]:
        return [m.id for m in await self._adrive(self._adapters_flow())]

    def list_adapter_models(self) -> list[ModelInfo]:
        """The loaded LoRA adapters' ``/v1/models`` entries: ``id``, ``root`` (the path the server
        loaded), ``parent`` (the base model)."""
        return self._drive(self._adapters_flow())

    async def alist_adapter_models(self) -> list[ModelInfo]:
        return await self._adrive(self._adapters_flow())

    def load_adapter(self, name: str, path: str, *, load_inplace: bool = False) -> str:
        """``POST /v1/load_lora_adapter`` (server needs ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``);
        ``path`` is on the server's machine. Returns the server's message."""
        return self._drive(self._load_adapter_flow(name, str(path), load_inplace))

    async def aload_adapter(self, name: str, path: str, *, load_inplace: bool = False) -> str:
        return await self._adrive(self._load_adapter_flow(name, str(path), load_inplace))

    def unload_adapter(self, name: str) -> str:
        """``POST /v1/unload_lora_adapter``. Returns the server's message."""
        return self._drive(self._unload_adapter_flow(name))

    async def aunload_adapter(self, name: str) -> str:
        return await self._adrive(self._unload_adapter_flow(name))

    def tokenize(self, text: str, *, model: str | None = None,
                 add_special_tokens: bool | None = None) -> Tokenized:
        """``POST /tokenize`` at the server root."""
        return self._drive(self._tokenize_flow(text, model, add_special_tokens))

    async def atokenize(self, text: str, *, model: str | None = None,
                        add_special_tokens: bool | None = None) -> Tokenized:
        return await self._adrive(self._tokenize_flow(text, model, add_special_tokens))

    def detokenize(self, tokens: Sequence[int], *, model: str | None = None) -> str:
        """``POST /detokenize`` at the server root: the text of ``tokens``."""
        return self._drive(self._detokenize_flow(list(tokens), model))

    async def adetokenize(self, tokens: Sequence[int], *, model: str | None = None) -> str:
        return await self._adrive(self._detokenize_flow(list(tokens), model))

    def metrics(self) -> Metrics:
        """``GET /metrics`` parsed: ``{name: [Sample(labels, value), ...]}`` (+ ``.types``, ``.value()``)."""
        return self._drive(self._metrics_flow())

    async def ametrics(self) -> Metrics:
        return await self._adrive(self._metrics_flow())


def create_llm(provider: str, model: str | None = None, **kwargs: Any) -> VLLMProvider:
    """The seed's entry point: ``create_llm("vllm", model="...", base_url=..., api_key=...)``."""
    if provider.lower() != "vllm":
        raise ValueError(f"unknown provider {provider!r}: this toolkit bundles only 'vllm'")
    return VLLMProvider(model=model, **kwargs)
