"""Raw streaming for load tests and checks, on the client's public API.

The load generator consumes :meth:`VLLMProvider.astream_events` directly (each
:class:`~vllm_ops.client.StreamEvent` carries its arrival time and usage). ``astream_chunks`` is
the older dict-per-chunk view of the same stream, kept for callers that want only the decoded
JSON plus whether ``data: [DONE]`` ended it.
"""
from __future__ import annotations

from typing import Any, AsyncIterator

from vllm_ops.client import VLLMProvider


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
    async for ev in provider.astream_events(**kwargs):
        if ev.done:
            st.done = True
            return
        if ev.usage is not None:
            st.usage = ev.data["usage"]
        st.chunks += 1
        yield ev.data
