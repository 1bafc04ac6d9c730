"""The server flags validate, bench and generate share (commands/_server.py): declared once,
`--api-key-env VAR` means exactly VAR, and an unhealthy server is one line before anything else."""
from __future__ import annotations

import argparse

import httpx
import pytest

import vllm_ops.client as client_pkg
from vllm_ops.commands import _server
from vllm_ops.errors import BadInput

SHARED = {"--url", "--api-key-env", "--json", "--quiet", "--timeout"}


def _flags(command: str) -> set[str]:
    from vllm_ops.cli import build_parser

    sub = next(a for a in build_parser(command)._actions if isinstance(a, argparse._SubParsersAction))
    return {o for a in sub.choices[command]._actions for o in a.option_strings}


@pytest.mark.parametrize("command", ["validate", "bench", "generate"])
def test_every_server_command_has_the_shared_flags(command):
    assert SHARED <= _flags(command)


def test_the_flags_are_declared_in_one_place():
    from pathlib import Path

    import vllm_ops.commands as pkg

    for name in ("validate", "bench", "generate"):
        text = (Path(pkg.__file__).parent / f"{name}.py").read_text()
        assert "add_server_flags(" in text
        assert not any(f'"{flag}"' in text for flag in SHARED), name


def test_api_key_env_means_exactly_that_variable(monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", "default-key")
    monkeypatch.delenv("OTHER_KEY", raising=False)
    with pytest.raises(BadInput, match="OTHER_KEY is not set"):
        _server.api_key_from("OTHER_KEY")           # no silent fall-back to VLLM_API_KEY
    monkeypatch.setenv("OTHER_KEY", "")
    with pytest.raises(BadInput, match="OTHER_KEY is empty"):
        _server.api_key_from("OTHER_KEY")
    monkeypatch.setenv("OTHER_KEY", "other")
    assert _server.api_key_from("OTHER_KEY") == "other"
    assert _server.api_key_from(None) == "default-key"
    monkeypatch.delenv("VLLM_API_KEY")
    assert _server.api_key_from(None) is None
    with pytest.raises(BadInput):
        _server.api_key_from("not a name")


@pytest.mark.parametrize("command", [["validate"], ["bench"], ["generate", "hi"]])
def test_unset_api_key_env_is_bad_input_before_any_request(run_cli, monkeypatch, command):
    monkeypatch.setenv("VLLM_API_KEY", "default-key")
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    rc, out, err = run_cli(*command, "--url", "http://127.0.0.1:9", "--api-key-env", "NO_SUCH_KEY_VAR")
    assert rc == 2 and err.count("\n") == 1 and "NO_SUCH_KEY_VAR" in err and "not set" in err


def test_bad_url_and_timeout_are_bad_input(run_cli):
    rc, out, err = run_cli("generate", "hi", "--url", "ftp://x:1")
    assert rc == 2 and "not an http(s) server URL" in err
    rc, out, err = run_cli("validate", "--url", "http://127.0.0.1:9", "--timeout", "0")
    assert rc == 2 and "--timeout" in err


@pytest.fixture
def fake_server(monkeypatch):
    """generate's client over a MockTransport: (requests seen, answers by path)."""
    seen: list[httpx.Request] = []
    answers: dict[str, httpx.Response] = {}

    def handler(request):
        seen.append(request)
        if request.url.path in answers:
            return answers[request.url.path]
        if request.url.path == "/health":
            return httpx.Response(200)
        return httpx.Response(200, json={"model": "tiny", "choices": [
            {"index": 0, "message": {"content": "ok"}, "finish_reason": "stop"}]})

    real = client_pkg.VLLMProvider

    class Patched(real):
        def __init__(self, *a, **kw):
            kw.setdefault("model", "tiny")
            kw["transport"] = httpx.MockTransport(handler)
            kw["max_retries"] = 0
            super().__init__(*a, **kw)

    monkeypatch.setattr(client_pkg, "VLLMProvider", Patched)
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    return seen, answers


def test_generate_sends_the_named_variables_key(run_cli, fake_server, monkeypatch):
    seen, _ = fake_server
    monkeypatch.setenv("MY_KEY", "s3cret")
    rc, out, err = run_cli("generate", "hi", "--url", "http://srv:1", "--api-key-env", "MY_KEY")
    assert rc == 0 and out == "ok\n", err
    assert [r.url.path for r in seen] == ["/health", "/v1/chat/completions"]
    assert all(r.headers["authorization"] == "Bearer s3cret" for r in seen)


def test_unhealthy_server_is_one_line_before_the_request(run_cli, fake_server):
    seen, answers = fake_server
    answers["/health"] = httpx.Response(503, text="engine dead")
    rc, out, err = run_cli("generate", "hi", "--url", "http://srv:1")
    assert rc == 1 and out == "" and err.count("\n") == 1
    assert "the server at http://srv:1 is not healthy: GET /health answered 503" in err
    assert [r.url.path for r in seen] == ["/health"]
