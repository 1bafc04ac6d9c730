"""Request shapes of the bundled client, pinned with httpx.MockTransport (no server)."""
from __future__ import annotations

import json

import httpx
import pytest
from pydantic import BaseModel

from vllm_ops.client import (GenerateResponse, InvalidRequestError, VLLMProvider, create_llm)
from vllm_ops.client.settings import ClientSettings


def chat_answer(content="ok", n=1, model="tiny"):
    return {"id": "c1", "object": "chat.completion", "model": model,
            "choices": [{"index": i, "message": {"role": "assistant", "content": f"{content}{i or ''}"},
                         "finish_reason": "stop"} for i in range(n)],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


class Recorder:
    """A MockTransport handler: records every request, answers per path."""

    def __init__(self, version="0.32.0", answers=None):
        self.requests: list[httpx.Request] = []
        self.version = version
        self.answers = answers or {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path in self.answers:
            a = self.answers[path]
            return a(request) if callable(a) else a
        if path == "/version":
            return httpx.Response(200, json={"version": self.version})
        if path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [
                {"id": "tiny", "root": "/m", "parent": None, "max_model_len": 1024},
                {"id": "lora-a", "root": "/a", "parent": "tiny", "max_model_len": None},
                {"id": "other-lora", "root": "/o", "parent": "other", "max_model_len": None},
            ]})
        if path == "/v1/chat/completions":
            body = json.loads(request.content)
            return httpx.Response(200, json=chat_answer(n=body.get("n", 1), model=body["model"]))
        if path == "/v1/completions":
            body = json.loads(request.content)
            return httpx.Response(200, json={"model": body["model"], "choices": [
                {"index": i, "text": f"t{i}", "finish_reason": "length"} for i in range(body.get("n", 1))]})
        return httpx.Response(404, json={"error": {"message": f"no route {path}", "type": "NotFoundError"}})

    def bodies(self, path=None):
        return [json.loads(r.content) for r in self.requests
                if r.method == "POST" and (path is None or r.url.path == path)]

    def paths(self):
        return [r.url.path for r in self.requests]


def make(rec=None, **kw):
    rec = rec or Recorder()
    kw.setdefault("model", "tiny")
    settings = ClientSettings(base_url=kw.pop("base_url", "http://srv:8000/v1"), api_key=kw.pop("api_key", None),
                              model=kw.pop("model"), max_retries=kw.pop("max_retries", 0),
                              retry_backoff=0.0, **kw)
    return VLLMProvider(settings=settings, transport=httpx.MockTransport(rec)), rec


@pytest.fixture(autouse=True)
def _no_client_env(monkeypatch):
    for k in ("VLLM_BASE_URL", "VLLM_API_KEY", "VLLM_OPS_CLIENT_MODEL", "VLLM_OPS_CLIENT_MAX_RETRIES"):
        monkeypatch.delenv(k, raising=False)


def test_prompt_becomes_a_user_message_on_chat():
    p, rec = make()
    r = p.generate("hi", max_tokens=7, temperature=0.5, top_p=0.9, top_k=5, min_p=0.1, stop=["x"], seed=3)
    assert isinstance(r, GenerateResponse)
    assert rec.paths() == ["/v1/chat/completions"]
    assert rec.bodies()[0] == {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                               "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 5,
                               "min_p": 0.1, "stop": ["x"], "seed": 3}
    assert r.content == "ok" and r.model == "tiny" and r.finish_reason == "stop"
    assert r.usage.total_tokens == 5 and r.raw["id"] == "c1"


def test_messages_system_prompt_and_default_max_tokens():
    p, rec = make()
    p.generate("more", messages=[{"role": "user", "content": "a"}], system_prompt="be brief")
    body = rec.bodies()[0]
    assert body["messages"] == [{"role": "system", "content": "be brief"},
                                {"role": "user", "content": "a"}, {"role": "user", "content": "more"}]
    assert body["max_tokens"] == 256  # the settings' default


def test_completions_endpoint_sends_the_raw_prompt():
    p, rec = make()
    r = p.generate("once upon", endpoint="completions", max_tokens=3, n=2)
    assert rec.paths() == ["/v1/completions"]
    assert rec.bodies()[0] == {"model": "tiny", "prompt": "once upon", "max_tokens": 3, "n": 2}
    assert [c.text for c in r.choices] == ["t0", "t1"] and r.content == "t0"
    with pytest.raises(InvalidRequestError):
        p.generate(messages=[{"role": "user", "content": "x"}], endpoint="completions")


def test_model_routes_to_an_adapter_and_default_model_is_discovered_once():
    p, rec = make(model=None)
    p.generate("a")
    p.generate("b", model="lora-a")
    p.generate("c")
    assert rec.paths() == ["/v1/models", "/v1/chat/completions", "/v1/chat/completions", "/v1/chat/completions"]
    assert [b["model"] for b in rec.bodies()] == ["tiny", "lora-a", "tiny"]


def test_no_version_lookup_on_the_plain_path():
    p, rec = make()
    for _ in range(3):
        p.generate("a", max_tokens=1)
    assert "/version" not in rec.paths()


SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


@pytest.mark.parametrize("kw, expected", [
    ({"guided_json": SCHEMA}, {"json": SCHEMA}),
    ({"guided_regex": "[a-c]{3}"}, {"regex": "[a-c]{3}"}),
    ({"guided_choice": ["yes", "no"]}, {"choice": ["yes", "no"]}),
    ({"guided_grammar": 'root ::= "a" | "b"'}, {"grammar": 'root ::= "a" | "b"'}),
])
def test_guided_fields_are_sent_as_structured_outputs(kw, expected):
    p, rec = make()
    p.generate("x", **kw)
    body = rec.bodies("/v1/chat/completions")[0]
    assert body["structured_outputs"] == expected
    assert not any(k.startswith("guided_") for k in body)


@pytest.mark.parametrize("kw, field", [
    ({"guided_json": SCHEMA}, "guided_json"), ({"guided_regex": "a+"}, "guided_regex"),
    ({"guided_choice": ["y"]}, "guided_choice"), ({"guided_grammar": "root ::= \"a\""}, "guided_grammar"),
])
def test_legacy_guided_fields_only_for_servers_older_than_0_11(kw, field):
    p, rec = make(Recorder(version="0.10.2"))
    p.generate("x", **kw)
    p.generate("y", **kw)
    body = rec.bodies("/v1/chat/completions")[0]
    assert field in body and "structured_outputs" not in body
    assert rec.paths().count("/version") == 1  # read once, cached


@pytest.mark.parametrize("version", ["0.11.0", "0.11.0rc1", "0.32.0", "1.2.3"])
def test_structured_outputs_from_0_11(version):
    p, rec = make(Recorder(version=version))
    p.generate("x", guided_regex="a")
    assert rec.bodies("/v1/chat/completions")[0]["structured_outputs"] == {"regex": "a"}


def test_unknown_version_is_treated_as_current():
    rec = Recorder(answers={"/version": httpx.Response(404, json={"detail": "Not Found"})})
    p, _ = make(rec)
    p.generate("x", guided_choice=["a"])
    assert rec.bodies("/v1/chat/completions")[0]["structured_outputs"] == {"choice": ["a"]}


def test_structured_outputs_options_merge_and_one_constraint_only():
    p, rec = make()
    p.generate("x", guided_regex="a", structured_outputs={"disable_any_whitespace": True})
    assert rec.bodies()[-1]["structured_outputs"] == {"regex": "a", "disable_any_whitespace": True}
    with pytest.raises(InvalidRequestError):
        p.generate("x", guided_regex="a", guided_choice=["b"])


class Person(BaseModel):
    name: str
    age: int


def test_response_model_sends_its_schema_and_parses():
    rec = Recorder(answers={"/v1/chat/completions": httpx.Response(200, json=chat_answer('{"name": "al", "age": 3}'))})
    p, _ = make(rec)
    r = p.generate("x", response_model=Person)
    assert rec.bodies("/v1/chat/completions")[0]["structured_outputs"] == {"json": Person.model_json_schema()}
    assert r.parsed == Person(name="al", age=3) and r.content == '{"name": "al", "age": 3}'
    assert r.choices[0].parsed == r.parsed


def test_response_model_mismatch_is_a_response_error():
    from vllm_ops.client import ResponseError
    rec = Recorder(answers={"/v1/chat/completions": httpx.Response(200, json=chat_answer('{"name": "al"'))})
    p, _ = make(rec)
    with pytest.raises(ResponseError, match="Person"):
        p.generate("x", response_model=Person)


def test_beam_search_sends_n_as_width_and_never_best_of():
    p, rec = make()
    r = p.generate("x", use_beam_search=True, best_of=3)
    body = rec.bodies("/v1/chat/completions")[0]
    assert body["use_beam_search"] is True and body["n"] == 3 and "best_of" not in body
    assert len(r.choices) == 3
    p.generate("x", use_beam_search=True, n=2)
    assert rec.bodies("/v1/chat/completions")[1]["n"] == 2
    assert "/version" not in rec.paths()


def test_best_of_without_beam_search():
    p, rec = make(Recorder(version="0.12.0"))
    with pytest.raises(InvalidRequestError, match="best_of"):
        p.generate("x", best_of=3)
    assert rec.bodies("/v1/chat/completions") == []
    old, rec2 = make(Recorder(version="0.10.1"))
    old.generate("x", best_of=3, n=1)
    assert rec2.bodies("/v1/chat/completions")[0]["best_of"] == 3


def test_extra_fields_pass_through():
    p, rec = make()
    p.generate("x", repetition_penalty=1.1, ignore_eos=True)
    body = rec.bodies()[0]
    assert body["repetition_penalty"] == 1.1 and body["ignore_eos"] is True


def test_bearer_header_only_when_a_key_is_set(monkeypatch):
    p, rec = make()
    p.generate("x")
    assert "authorization" not in rec.requests[0].headers
    p2, rec2 = make(api_key="sekrit")
    p2.generate("x")
    assert rec2.requests[0].headers["authorization"] == "Bearer sekrit"
    monkeypatch.setenv("VLLM_API_KEY", "from-env")
    rec3 = Recorder()
    p3 = VLLMProvider("http://srv:8000/v1", model="tiny", transport=httpx.MockTransport(rec3))
    p3.generate("x")
    assert rec3.requests[0].headers["authorization"] == "Bearer from-env"
    assert "from-env" not in repr(p3)


def test_env_settings_and_constructor_overrides(monkeypatch):
    monkeypatch.setenv("VLLM_BASE_URL", "http://envhost:9000/v1")
    monkeypatch.setenv("VLLM_OPS_CLIENT_MAX_RETRIES", "7")
    p = VLLMProvider()
    assert (p.base_url, p.root_url, p.settings.max_retries) == ("http://envhost:9000/v1", "http://envhost:9000", 7)
    p = VLLMProvider("http://arg:1/v1", max_retries=1)
    assert (p.base_url, p.settings.max_retries) == ("http://arg:1/v1", 1)
    monkeypatch.delenv("VLLM_BASE_URL")
    assert VLLMProvider().base_url == "http://localhost:8000/v1"


@pytest.mark.parametrize("url, root, base", [
    ("http://h:1/v1", "http://h:1", "http://h:1/v1"),
    ("http://h:1/v1/", "http://h:1", "http://h:1/v1"),
    ("http://h:1", "http://h:1", "http://h:1/v1"),
    ("http://h:1/", "http://h:1", "http://h:1/v1"),
])
def test_root_and_v1_urls(url, root, base):
    p = VLLMProvider(url)
    assert (p.root_url, p.base_url) == (root, base)
    q = VLLMProvider.from_root_url(root)
    assert (q.root_url, q.base_url) == (root, base)


def test_root_routes_and_adapter_routes():
    rec = Recorder(answers={
        "/health": httpx.Response(200),
        "/tokenize": httpx.Response(200, json={"count": 2, "max_model_len": 1024, "tokens": [5, 6]}),
        "/metrics": httpx.Response(200, text="# TYPE vllm:num_requests_running gauge\n"
                                             'vllm:num_requests_running{model_name="tiny"} 2.0\n'),
        "/v1/load_lora_adapter": httpx.Response(200, text="Success: LoRA adapter 'a' added successfully."),
        "/v1/unload_lora_adapter": httpx.Response(200, text="Success: LoRA adapter 'a' removed successfully."),
    })
    p, _ = make(rec)
    assert p.health() is True
    assert p.version() == "0.32.0"
    t = p.tokenize("hi")
    assert t.tokens == [5, 6] and t.count == 2
    assert p.metrics().value("vllm:num_requests_running", model_name="tiny") == 2.0
    assert "added" in p.load_adapter("a", "/adapters/a")
    assert "removed" in p.unload_adapter("a")
    assert p.list_adapters() == ["lora-a"]          # names: `if "x" not in llm.list_adapters()` works
    assert "lora-a" in p.list_adapters() and "other-lora" not in p.list_adapters()
    assert [(m.id, m.parent) for m in p.list_adapter_models()] == [("lora-a", "tiny")]
    assert [m.id for m in p.list_models()] == ["tiny", "lora-a", "other-lora"]
    by_path = {r.url.path: r for r in rec.requests}
    assert str(by_path["/health"].url) == "http://srv:8000/health"
    assert json.loads(by_path["/tokenize"].content) == {"prompt": "hi", "model": "tiny"}
    assert json.loads(by_path["/v1/load_lora_adapter"].content) == {"lora_name": "a", "lora_path": "/adapters/a"}
    assert json.loads(by_path["/v1/unload_lora_adapter"].content) == {"lora_name": "a"}


def test_health_is_false_instead_of_raising():
    p, _ = make(Recorder(answers={"/health": httpx.Response(503)}))
    assert p.health() is False


async def test_async_face_sends_the_same_bodies():
    rec = Recorder(answers={"/health": httpx.Response(200),
                            "/metrics": httpx.Response(200, text="vllm:x 1\n")})
    p, _ = make(rec)
    r = await p.agenerate("hi", guided_choice=["a", "b"], max_tokens=2)
    sync_p, sync_rec = make()
    sync_p.generate("hi", guided_choice=["a", "b"], max_tokens=2)
    assert rec.bodies("/v1/chat/completions") == sync_rec.bodies("/v1/chat/completions")
    assert r.content == "ok"
    assert await p.ahealth() is True
    assert (await p.ametrics())["vllm:x"][0].value == 1.0
    assert await p.alist_adapters() == p.list_adapters() == ["lora-a"]
    assert [m.root for m in await p.alist_adapter_models()] == ["/a"]
    await p.aclose()


def test_create_llm_and_context_manager():
    with create_llm("vllm", model="tiny", base_url="http://h:1/v1") as llm:
        assert isinstance(llm, VLLMProvider) and llm.model == "tiny"
    with pytest.raises(ValueError):
        create_llm("openai")


def test_async_face_survives_a_new_event_loop():
    import asyncio
    p, rec = make()
    assert asyncio.run(p.agenerate("a")).content == "ok"
    assert asyncio.run(p.agenerate("b")).content == "ok"
    asyncio.run(p.aclose())
