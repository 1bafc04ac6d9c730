"""Faults between the bundled client and a server: 429/503 bursts, 4xx, a slow server, a server
that drops the connection mid-request and mid-stream, a dead port. The client raises its own
error class within its configured bound — never hangs, never leaks the API key."""
from __future__ import annotations

import socket
import time

import pytest

from tests.reliability.conftest import count_fault
from tests.support.flaky_server import FlakyServer
from tests.support.slow_proxy import SlowProxy
from vllm_ops.client import (AuthenticationError, BadRequestError, RateLimitError, ServerError,
                             VLLMConnectionError, VLLMError, VLLMProvider, VLLMTimeoutError)

SENTINEL_KEY = "sk-reliability-SENTINEL-7c1e5b"


def _llm(url, **kw):
    opts = dict(model="m", max_retries=3, retry_backoff=0.05, retry_max_wait=0.5, retry_budget=10.0,
                timeout=5.0, connect_timeout=2.0)
    opts.update(kw)
    return VLLMProvider(url, **opts)


@pytest.mark.parametrize("burst", [[429, 200], [503, 200], [429, 503, 429, 200], [503, 503, 503, 200]])
def test_429_503_bursts_are_retried_then_succeed(burst):
    count_fault("http-429-503-burst", len(burst) - 1)
    with FlakyServer(burst) as srv, _llm(srv.base_url) as llm:
        assert llm.generate("hi", max_tokens=2).content == "ok"
        assert srv.hits == len(burst)


@pytest.mark.parametrize("code,exc", [(400, BadRequestError), (401, AuthenticationError), (404, VLLMError),
                                      (422, VLLMError), (500, ServerError)])
def test_other_errors_are_not_retried(code, exc):
    count_fault("http-4xx-5xx")
    with FlakyServer([code, 200]) as srv, _llm(srv.base_url) as llm:
        with pytest.raises(exc):
            llm.generate("hi", max_tokens=2)
        assert srv.hits == 1, f"HTTP {code} was retried"


def test_retries_stop_at_max_retries():
    count_fault("http-429-503-burst", 4)
    with FlakyServer([503]) as srv, _llm(srv.base_url, max_retries=3) as llm:
        t = time.monotonic()
        with pytest.raises(ServerError):
            llm.generate("hi", max_tokens=2)
        assert srv.hits == 4 and time.monotonic() - t < 5


def test_huge_retry_after_respects_the_cap_and_budget():
    count_fault("http-429-503-burst", 2)
    with FlakyServer([429], retry_after="86400") as srv, _llm(srv.base_url, retry_max_wait=0.2,
                                                              retry_budget=1.0) as llm:
        t = time.monotonic()
        with pytest.raises(RateLimitError):
            llm.generate("hi", max_tokens=2)
        assert time.monotonic() - t < 5


def test_slow_server_times_out_within_bound():
    count_fault("slow-server")
    with FlakyServer([200]) as srv, SlowProxy("127.0.0.1", srv.port, delay=8.0) as proxy, \
            _llm(proxy.base_url, timeout=1.0, max_retries=0) as llm:
        t = time.monotonic()
        with pytest.raises(VLLMTimeoutError):
            llm.generate("hi", max_tokens=2)
        took = time.monotonic() - t
        assert took < 4.0, f"timeout 1 s took {took:.1f} s"


def test_slow_but_in_time_server_answers():
    count_fault("slow-server")
    with FlakyServer([200]) as srv, SlowProxy("127.0.0.1", srv.port, delay=0.3) as proxy, \
            _llm(proxy.base_url, timeout=5.0, max_retries=0) as llm:
        assert llm.generate("hi", max_tokens=2).content == "ok"


def test_hanging_server_times_out():
    count_fault("server-hang")
    with FlakyServer(["hang"]) as srv, _llm(srv.base_url, timeout=1.0, max_retries=0) as llm:
        t = time.monotonic()
        with pytest.raises(VLLMTimeoutError):
            llm.generate("hi", max_tokens=2)
        assert time.monotonic() - t < 4.0


def test_connection_dropped_mid_request():
    count_fault("drop-mid-request")
    with FlakyServer(["close"]) as srv, _llm(srv.base_url, max_retries=0) as llm:
        with pytest.raises(VLLMConnectionError):
            llm.generate("hi", max_tokens=2)


def test_connection_dropped_mid_request_is_retried():
    count_fault("drop-mid-request")
    with FlakyServer(["close", 200]) as srv, _llm(srv.base_url, max_retries=2) as llm:
        assert llm.generate("hi", max_tokens=2).content == "ok"


def test_stream_cut_mid_stream_raises_not_hangs():
    count_fault("drop-mid-stream")
    with FlakyServer(["stream-cut"]) as srv, _llm(srv.base_url, max_retries=0, timeout=5.0) as llm:
        t = time.monotonic()
        with pytest.raises(VLLMError):
            for _ in llm.stream("hi", max_tokens=8):
                pass
        assert time.monotonic() - t < 8


def test_proxy_killed_mid_request():
    count_fault("kill-mid-request")
    with FlakyServer(["slow:3"]) as srv, SlowProxy("127.0.0.1", srv.port) as proxy, \
            _llm(proxy.base_url, max_retries=0, timeout=10.0) as llm:
        import threading

        threading.Timer(0.5, proxy.kill).start()
        t = time.monotonic()
        with pytest.raises(VLLMConnectionError):
            llm.generate("hi", max_tokens=2)
        assert time.monotonic() - t < 5


def test_dead_port_is_a_connection_error():
    count_fault("dead-port")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with _llm(f"http://127.0.0.1:{port}/v1", max_retries=1) as llm:
        t = time.monotonic()
        with pytest.raises(VLLMConnectionError):
            llm.generate("hi", max_tokens=2)
        assert time.monotonic() - t < 5


async def test_async_hang_times_out():
    count_fault("server-hang")
    with FlakyServer(["hang"]) as srv:
        async with _llm(srv.base_url, timeout=1.0, max_retries=0) as llm:
            t = time.monotonic()
            with pytest.raises(VLLMTimeoutError):
                await llm.agenerate("hi", max_tokens=2)
            assert time.monotonic() - t < 4.0


# ---- secrets in client errors ------------------------------------------------------------------
@pytest.mark.parametrize("script", [[401], [403], [500], ["close"], ["hang"], [429]])
def test_api_key_never_in_errors(script):
    count_fault("auth-error-leak")
    with FlakyServer(script, retry_after="0") as srv, \
            _llm(srv.base_url, api_key=SENTINEL_KEY, timeout=1.0, max_retries=1) as llm:
        with pytest.raises(VLLMError) as ei:
            llm.generate("hi", max_tokens=2)
        assert srv.requests and srv.requests[0].get("authorization") == f"Bearer {SENTINEL_KEY}"
        text = f"{ei.value!s} {ei.value!r} {ei.value.__dict__!r} {llm!r} {llm.settings!r}"
        assert SENTINEL_KEY not in text


def test_api_key_from_environment_never_in_repr(monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", SENTINEL_KEY)
    with FlakyServer([401]) as srv, _llm(srv.base_url) as llm:
        assert SENTINEL_KEY not in repr(llm) + repr(llm.settings) + str(llm.settings)
        with pytest.raises(AuthenticationError) as ei:
            llm.generate("hi", max_tokens=2)
        assert srv.requests[0].get("authorization") == f"Bearer {SENTINEL_KEY}"
        assert SENTINEL_KEY not in str(ei.value) + repr(ei.value)
