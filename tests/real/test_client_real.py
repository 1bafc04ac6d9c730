"""The bundled client against a real vLLM server (CPU build, tiny random-weight model).

A random-weight model says nothing sensible, so these tests check what the server *guarantees*:
constrained outputs obey their constraint, beams come back, an adapter changes greedy output.
"""
from __future__ import annotations

import asyncio
import json
import re
import time

import jsonschema
import pytest
from pydantic import BaseModel, Field

from vllm_ops.client import NotFoundError, VLLMConnectionError, VLLMProvider
from tests.support.testbed import free_port

pytestmark = pytest.mark.real
REPEAT = 3

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z]{1,8}$"},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age", "ok"],
    "additionalProperties": False,
}


@pytest.fixture
def llm(vllm_server, monkeypatch):
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    with VLLMProvider(vllm_server.base_url, model=vllm_server.model, max_retries=1, timeout=120) as p:
        yield p


def test_server_facts(llm, vllm_server):
    assert llm.health() is True
    assert llm.version() == "0.32.0"
    assert [m.id for m in llm.list_models() if m.parent is None] == ["tiny"]
    tok = llm.tokenize("hello world")
    assert tok.count == len(tok.tokens) > 0 and tok.max_model_len == 1024
    llm.generate("warm up", max_tokens=2)
    m = llm.metrics()
    assert m.types.get("vllm:num_requests_running") == "gauge"
    assert (m.value("vllm:prompt_tokens_total") or 0) > 0


def test_guided_json_validates_against_its_schema(llm):
    for i in range(REPEAT):
        r = llm.generate(f"person {i}", guided_json=SCHEMA, max_tokens=300, seed=i)
        assert r.finish_reason == "stop", r.content
        jsonschema.validate(json.loads(r.content), SCHEMA)


def test_guided_regex_fullmatches(llm):
    pattern = r"[a-c]{3}-[0-9]{2}"
    for i in range(REPEAT):
        r = llm.generate(f"code {i}", guided_regex=pattern, max_tokens=20, seed=i)
        assert re.fullmatch(pattern, r.content), r.content


def test_guided_choice(llm):
    choices = ["positive", "negative", "neutral"]
    for i in range(REPEAT):
        r = llm.generate(f"mood {i}", guided_choice=choices, max_tokens=10, seed=i)
        assert r.content in choices


def test_guided_grammar(llm):
    grammar = 'root ::= ("yes" | "no") " " [0-9] [0-9]'
    for i in range(REPEAT):
        r = llm.generate(f"answer {i}", guided_grammar=grammar, max_tokens=20, seed=i,
                         endpoint="completions" if i % 2 else "chat")
        assert re.fullmatch(r"(yes|no) [0-9]{2}", r.content), r.content


class Person(BaseModel):
    name: str = Field(pattern=r"^[a-z]{1,8}$")
    age: int = Field(ge=0, le=120)
    ok: bool


def test_response_model_returns_the_pydantic_object(llm):
    for i in range(REPEAT):
        r = llm.generate(f"person {i}", response_model=Person, max_tokens=300, seed=i)
        assert isinstance(r.parsed, Person)
        assert Person.model_validate_json(r.content) == r.parsed


def test_beam_search_returns_best_of_beams(llm):
    for width, endpoint in ((3, "chat"), (2, "completions"), (4, "chat")):
        r = llm.generate("beam me", use_beam_search=True, best_of=width, max_tokens=4, endpoint=endpoint)
        assert len(r.choices) == width
        assert all(isinstance(c.text, str) for c in r.choices)


def test_adapter_load_route_unload(llm, vllm_server):
    name = "client-test-a"
    prompt = "The capital of France is"
    base = llm.generate(prompt, temperature=0, max_tokens=12).content
    assert llm.generate(prompt, temperature=0, max_tokens=12).content == base  # greedy is stable
    assert "success" in llm.load_adapter(name, str(vllm_server.adapters["lora-a"])).lower()
    try:
        assert name in llm.list_adapters()
        listed = {m.id: m for m in llm.list_adapter_models()}
        assert listed[name].parent == "tiny" and listed[name].root == str(vllm_server.adapters["lora-a"])
        r = llm.generate(prompt, model=name, temperature=0, max_tokens=12)
        assert r.model == name
        assert r.content != base, "the adapter's greedy output equals the base model's"
    finally:
        llm.unload_adapter(name)
    assert name not in llm.list_adapters()
    with pytest.raises(NotFoundError):
        llm.generate(prompt, model=name, max_tokens=2)


def test_stream_yields_text(llm):
    for i in range(REPEAT):
        deltas = list(llm.stream(f"tell me {i}", max_tokens=8, seed=i, ignore_eos=True))
        assert deltas and all(isinstance(d, str) for d in deltas)
    deltas = list(llm.stream("tell me", max_tokens=6, endpoint="completions", ignore_eos=True))
    assert deltas


async def test_astream_and_concurrent_agenerate(vllm_server):
    async with VLLMProvider(vllm_server.root_url, model="tiny") as p:  # root URL accepted
        assert await p.ahealth()
        deltas = [d async for d in p.astream("hello", max_tokens=8, ignore_eos=True)]
        assert deltas
        rs = await asyncio.gather(*[p.agenerate(f"q {i}", max_tokens=6) for i in range(8)])
        assert len(rs) == 8 and all(r.usage.completion_tokens >= 1 for r in rs)
        assert (await p.ametrics()).value("vllm:num_requests_running") is not None


async def test_stream_events_and_keep_alive_against_vllm(vllm_server):
    async with VLLMProvider(vllm_server.base_url, model="tiny", max_retries=0) as p:
        for i in range(4):
            evs = [e async for e in p.astream_events(f"count {i}", max_tokens=6, ignore_eos=True,
                                                     endpoint="completions",
                                                     stream_options={"include_usage": True})]
            assert evs[-1].done and evs[-1].data is None
            tokens = [e for e in evs if e.choices]
            usage = [e.usage for e in evs if e.usage is not None]
            assert len(tokens) == 6 and all(isinstance(e.text, str) for e in tokens)
            assert usage and usage[-1].completion_tokens == 6
            assert [e.time for e in evs] == sorted(e.time for e in evs)
        chat = [e async for e in p.astream_events("and chat", max_tokens=4, ignore_eos=True)]
        assert chat[-1].done and sum(1 for e in chat if e.text) >= 1  # chat starts with a role chunk
        texts = [d async for d in p.astream("and text", max_tokens=4, ignore_eos=True)]
        assert texts
        await p.agenerate("plain", max_tokens=2)
        # every request above went over the one kept-alive connection
        assert p._ahttp.connections_opened == 1


def test_sync_stream_events_and_detokenize(llm):
    evs = list(llm.stream_events("hi", max_tokens=5, ignore_eos=True, endpoint="completions"))
    assert evs[-1].done and sum(1 for e in evs if e.choices) == 5
    tok = llm.tokenize("hello world, again", add_special_tokens=False)
    assert llm.detokenize(tok.tokens) == "hello world, again"
    assert asyncio.run(llm.adetokenize(tok.tokens)) == "hello world, again"


def test_unknown_model_is_not_found_with_vllms_message(llm):
    for _ in range(2):
        with pytest.raises(NotFoundError) as info:
            llm.generate("x", model="no-such-model", max_tokens=2)
        assert info.value.status_code == 404
        assert "no-such-model" in info.value.message and "does not exist" in info.value.message


def test_nothing_listening_raises_connection_error_after_retries():
    port = free_port()
    p = VLLMProvider(f"http://127.0.0.1:{port}/v1", model="tiny", max_retries=3, retry_backoff=0.1,
                     connect_timeout=2)
    t0 = time.monotonic()
    with pytest.raises(VLLMConnectionError):
        p.generate("x", max_tokens=1)
    elapsed = time.monotonic() - t0
    assert 0.7 <= elapsed < 10, elapsed  # waited 0.1 + 0.2 + 0.4 s between the 4 attempts
    assert p.health() is False
