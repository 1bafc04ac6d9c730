"""Retry, timeout and error-mapping rules of the bundled client (httpx.MockTransport only)."""
from __future__ import annotations

import time

import httpx
import pytest

from vllm_ops.client import (AuthenticationError, BadRequestError, ConnectTimeoutError, NotFoundError,
                             RateLimitError, ServerError, VLLMConnectionError, VLLMError, VLLMProvider,
                             VLLMStatusError, VLLMTimeoutError)
from vllm_ops.client import provider as provider_mod
from vllm_ops.client._base import parse_retry_after, parse_version
from vllm_ops.client.settings import ClientSettings

OK = {"model": "tiny", "choices": [{"index": 0, "message": {"content": "fine"}, "finish_reason": "stop"}]}


def err(status, message, type_="X", headers=None):
    return httpx.Response(status, headers=headers,
                          json={"error": {"message": message, "type": type_, "param": None, "code": status}})


class Script:
    """Answers with the given outcomes in order (an Exception is raised), then 200."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self, request):
        self.calls += 1
        if self.outcomes:
            o = self.outcomes.pop(0)
            if isinstance(o, Exception):
                raise o
            return o
        return httpx.Response(200, json=OK)


def make(script, **kw):
    kw.setdefault("max_retries", 3)
    kw.setdefault("retry_backoff", 0.1)
    settings = ClientSettings(base_url="http://srv:8000/v1", model="tiny", **kw)
    return VLLMProvider(settings=settings, transport=httpx.MockTransport(script))


@pytest.fixture
def sleeps(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(provider_mod.time, "sleep", lambda s: waits.append(s))

    async def fake_asleep(s):
        waits.append(s)
    monkeypatch.setattr(provider_mod.asyncio, "sleep", fake_asleep)
    return waits


@pytest.mark.parametrize("first", [
    err(429, "slow down"), err(503, "not ready"),
    httpx.ConnectError("refused"), httpx.ConnectTimeout("slow connect"),
])
def test_retried_outcomes_then_success(first, sleeps):
    s = Script(first, first)
    r = make(s).generate("x")
    assert r.content == "fine" and s.calls == 3
    assert sleeps == [0.1, 0.2]  # exponential backoff


@pytest.mark.parametrize("status, cls", [(400, BadRequestError), (401, AuthenticationError),
                                         (404, NotFoundError), (422, BadRequestError),
                                         (500, ServerError), (502, ServerError)])
def test_never_retried_statuses(status, cls, sleeps):
    s = Script(err(status, f"vllm says {status}", "SomeError"))
    with pytest.raises(cls) as info:
        make(s).generate("x")
    assert s.calls == 1 and sleeps == []
    e = info.value
    assert e.status_code == status and e.message == f"vllm says {status}" and e.error_type == "SomeError"
    assert isinstance(e, VLLMStatusError) and isinstance(e, VLLMError)
    assert f"vllm says {status}" in str(e)


def test_gives_up_after_max_retries(sleeps):
    s = Script(*[err(503, "down")] * 10)
    with pytest.raises(ServerError, match="down"):
        make(s, max_retries=3).generate("x")
    assert s.calls == 4 and sleeps == [0.1, 0.2, 0.4]


def test_connection_error_after_retries(sleeps):
    s = Script(*[httpx.ConnectError("Connection refused")] * 10)
    with pytest.raises(VLLMConnectionError, match="Connection refused") as info:
        make(s, max_retries=2).generate("x")
    assert s.calls == 3 and isinstance(info.value.__cause__, httpx.ConnectError)


def test_retry_after_is_honoured_and_capped(sleeps):
    s = Script(err(429, "wait", headers={"Retry-After": "2"}), err(429, "wait", headers={"Retry-After": "120"}))
    make(s, retry_max_wait=5).generate("x")
    assert sleeps == [2.0, 5.0]


def test_retry_budget_bounds_total_time(sleeps):
    s = Script(*[err(503, "down")] * 10)
    with pytest.raises(ServerError):
        make(s, max_retries=10, retry_backoff=1.0, retry_budget=3.5).generate("x")
    assert sleeps == [1.0, 2.0]  # a third wait (4 s) would pass the 3.5 s budget


def test_real_waits_are_bounded():
    s = Script(*[httpx.ConnectError("refused")] * 10)
    t0 = time.monotonic()
    with pytest.raises(VLLMConnectionError):
        make(s, max_retries=3, retry_backoff=0.02).generate("x")
    assert s.calls == 4 and time.monotonic() - t0 < 1.0


def test_read_timeout_is_a_timeout_and_not_retried(sleeps):
    s = Script(httpx.ReadTimeout("slow"))
    with pytest.raises(VLLMTimeoutError) as info:
        make(s).generate("x")
    assert s.calls == 1 and not isinstance(info.value, VLLMConnectionError)


def test_connect_timeout_is_both():
    assert issubclass(ConnectTimeoutError, VLLMConnectionError) and issubclass(ConnectTimeoutError, VLLMTimeoutError)


def test_auth_middleware_error_shape():
    s = Script(httpx.Response(401, json={"error": "Unauthorized"}))
    with pytest.raises(AuthenticationError, match="Unauthorized"):
        make(s).generate("x")


def test_fastapi_validation_error_and_plain_text_errors():
    s = Script(httpx.Response(422, json={"detail": [{"loc": ["body", "messages"], "msg": "Field required"}]}))
    with pytest.raises(BadRequestError, match="body.messages: Field required"):
        make(s).generate("x")
    s = Script(httpx.Response(500, text="Internal Server Error"))
    with pytest.raises(ServerError, match="Internal Server Error"):
        make(s).generate("x")


def test_rate_limit_error_carries_retry_after(sleeps):
    s = Script(*[err(429, "busy", headers={"Retry-After": "1"})] * 5)
    with pytest.raises(RateLimitError) as info:
        make(s, max_retries=1).generate("x")
    assert info.value.retry_after == 1.0


def test_health_is_never_retried(sleeps):
    s = Script(httpx.ConnectError("refused"), httpx.ConnectError("refused"))
    assert make(s).health() is False and s.calls == 1


async def test_async_retries_and_errors(sleeps):
    s = Script(err(503, "warming"), httpx.ConnectError("refused"))
    p = make(s)
    r = await p.agenerate("x")
    assert r.content == "fine" and s.calls == 3 and sleeps == [0.1, 0.2]
    s2 = Script(err(404, "The model `nope` does not exist."))
    p2 = make(s2)
    with pytest.raises(NotFoundError, match="does not exist"):
        await p2.agenerate("x", model="nope")
    assert s2.calls == 1
    await p.aclose()
    await p2.aclose()


def test_stream_errors_are_mapped(sleeps):
    s = Script(err(503, "loading"), err(400, "Streaming is not currently supported with beam search"))
    with pytest.raises(BadRequestError, match="Streaming"):
        list(make(s).stream("x"))
    assert s.calls == 2


@pytest.mark.parametrize("text, expected", [
    ("0.32.0", (0, 32, 0)), ("0.11.0rc1", (0, 11, 0)), ("0.10.2.dev5+gabc", (0, 10, 2)),
    ("v1.2", (1, 2, 0)), ("", None), (None, None), ("dev", None),
])
def test_parse_version(text, expected):
    assert parse_version(text) == expected


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after("garbage") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
