"""`vllm-ops generate` over a MockTransport: flags → request body, output modes, error exit codes."""
from __future__ import annotations

import json

import httpx
import pytest

import vllm_ops.client as client_pkg


@pytest.fixture
def server(monkeypatch):
    seen: list[httpx.Request] = []
    answer = {"status": 200, "content": "abc-12"}

    def handler(request):
        if request.method == "POST":
            seen.append(request)
        if answer["status"] != 200:
            return httpx.Response(answer["status"], json={"error": {"message": answer["content"], "type": "NotFoundError"}})
        return httpx.Response(200, json={"model": "tiny", "choices": [
            {"index": 0, "message": {"content": answer["content"]}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}})

    real = client_pkg.VLLMProvider

    class Patched(real):
        def __init__(self, *a, **kw):
            kw.setdefault("model", "tiny")
            kw["transport"] = httpx.MockTransport(handler)
            kw.setdefault("max_retries", 0)
            super().__init__(*a, **kw)

    monkeypatch.setattr(client_pkg, "VLLMProvider", Patched)
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    return seen, answer


def test_generate_regex_plain_output(run_cli, server):
    seen, _ = server
    rc, out, err = run_cli("generate", "--url", "http://h:9", "--regex", "[a-c]{3}-[0-9]{2}", "--max-tokens", "9", "hi")
    assert rc == 0 and out == "abc-12\n"
    body = json.loads(seen[0].content)
    assert str(seen[0].url) == "http://h:9/v1/chat/completions"
    assert body["structured_outputs"] == {"regex": "[a-c]{3}-[0-9]{2}"} and body["max_tokens"] == 9


def test_generate_choice_and_json(run_cli, server):
    seen, _ = server
    rc, out, _ = run_cli("generate", "--url", "http://h:9", "--choice", "a, b", "--json", "hi")
    assert rc == 0
    doc = json.loads(out)
    assert doc["content"] == "abc-12" and doc["usage"]["total_tokens"] == 5
    assert json.loads(seen[0].content)["structured_outputs"] == {"choice": ["a", "b"]}


def test_generate_json_schema_file(run_cli, server, tmp_path):
    seen, _ = server
    f = tmp_path / "s.json"
    f.write_text('{"type": "object"}')
    assert run_cli("generate", "--url", "http://h:9", "--json-schema", str(f), "hi")[0] == 0
    assert json.loads(seen[0].content)["structured_outputs"] == {"json": {"type": "object"}}
    rc, _, err = run_cli("generate", "--json-schema", str(tmp_path / "missing.json"), "hi")
    assert rc == 2 and "cannot read" in err


def test_generate_constraints_are_exclusive(run_cli, server):
    rc, _, _ = run_cli("generate", "--regex", "a", "--choice", "b", "hi")
    assert rc == 2


def test_generate_server_error_exits_1_with_vllms_message(run_cli, server):
    _, answer = server
    answer.update(status=404, content="The model `x` does not exist. Valid aliases: tiny.")
    rc, out, err = run_cli("generate", "--url", "http://h:9", "--model", "x", "hi")
    assert rc == 1 and out == ""
    assert "does not exist" in err and err.count("\n") == 1
