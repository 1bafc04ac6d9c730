"""Raw streaming on the bundled client's path: every decoded chunk (usage included) and whether
the stream ended with ``data: [DONE]``.

``VLLMProvider.astream`` yields only text deltas; a load test needs each chunk's arrival time and
the usage chunk, and ``validate`` needs to see the terminating ``[DONE]``. This wraps the same
request building (``_generate_flow``), sending (``_asend``: auth, error mapping) and SSE decoder
the provider uses, and hands back the chunks themselves.
"""
from __future__ import annotations

import json
from typing import Any, AsyncIterator

import httpx

from vllm_ops.client import SSEDecoder, VLLMProvider
from vllm_ops.client.errors import ResponseError, error_for_status


def generate_args(prompt: Any = None, *, messages: Any = None, model: str | None = None,
                  system_prompt: str | None = None, max_tokens: int | None = None,
                  temperature: float | None = None, top_p: float | None = None,
                  top_k: int | None = None, min_p: float | None = None, stop: Any = None,
                  seed: int | None = None, n: int | None = None, guided_json: Any = None,
                  guided_regex: str | None = None, guided_choice: Any = None,
                  guided_grammar: str | None = None, response_model: Any = None,
                  use_beam_search: bool = False, best_of: int | None = None,
                  endpoint: str = "chat", **extra: Any) -> dict:
    """The argument dict of ``VLLMProvider.generate`` (what its flows take)."""
    return dict(locals())


class StreamState:
    """What one raw stream showed: ``done`` ([DONE] seen), ``usage`` (the last usage object)."""

    __slots__ = ("done", "usage", "chunks")

    def __init__(self) -> None:
        self.done = False
        self.usage: dict | None = None
        self.chunks = 0


async def astream_chunks(provider: VLLMProvider, state: StreamState | None = None,
                         **kwargs: Any) -> AsyncIterator[dict]:
    """Decoded stream chunks of one request (``kwargs`` as for ``generate``).

    Stops at ``[DONE]`` (``state.done`` = True); an ``error`` event raises the matching
    :class:`~vllm_ops.client.VLLMStatusError`; an HTTP error status raises before any chunk.
    """
    st = state if state is not None else StreamState()
    req, _ = await provider._adrive(provider._generate_flow(generate_args(**kwargs), stream=True))
    resp = await provider._asend(req)
    try:
        decoder = SSEDecoder()
        # read to the end of the body even after [DONE]: an unread body makes httpx close the
        # connection instead of returning it to the pool (a new TCP connection per request)
        async for text in resp.aiter_text():
            if st.done:
                continue
            for ev in decoder.feed(text):
                chunk = _decode(ev.data, st)
                if st.done:
                    break
                if chunk is not None:
                    yield chunk
        if not st.done:
            for ev in decoder.flush():
                chunk = _decode(ev.data, st)
                if chunk is not None and not st.done:
                    yield chunk
    except httpx.TransportError as exc:
        from vllm_ops.client._base import transport_error

        raise transport_error(exc, req) from exc
    finally:
        await resp.aclose()


def _decode(data: str, st: StreamState) -> dict | None:
    if data == "[DONE]":
        st.done = True
        return None
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise ResponseError(f"a stream event is not JSON: {data[:200]!r}") from exc
    if not isinstance(obj, dict):
        return None
    err = obj.get("error")
    if err:
        if isinstance(err, dict):
            code = err.get("code")
            status = code if isinstance(code, int) and 400 <= code < 600 else 500
            raise error_for_status(status, str(err.get("message") or err), error_type=err.get("type"), body=obj)
        raise error_for_status(500, str(err), body=obj)
    if obj.get("usage"):
        st.usage = obj["usage"]
    st.chunks += 1
    return obj
