"""The pure SSE decoder, stream delta extraction and the Prometheus parser."""
from __future__ import annotations

import json
import math

import httpx
import pytest
from hypothesis import given, strategies as st

from vllm_ops.client import BadRequestError, SSEDecoder, SSEEvent, VLLMProvider, parse_prometheus
from vllm_ops.client.settings import ClientSettings


def decode(*chunks):
    d = SSEDecoder()
    out = []
    for c in chunks:
        out += d.feed(c)
    return out + d.flush()


def test_basic_events_and_done():
    evs = decode('data: {"a": 1}\n\ndata: [DONE]\n\n')
    assert [e.data for e in evs] == ['{"a": 1}', "[DONE]"]


@pytest.mark.parametrize("sep", ["\n", "\r\n", "\r"])
def test_line_endings(sep):
    text = f"data: x{sep}{sep}data: y{sep}{sep}"
    assert [e.data for e in decode(text)] == ["x", "y"]


def test_crlf_split_across_chunks_is_one_line_end():
    assert [e.data for e in decode("data: x\r", "\n\r", "\ndata: y\r\n\r\n")] == ["x", "y"]


def test_split_anywhere():
    text = 'event: chunk\ndata: {"k":\ndata: 2}\nid: 7\nretry: 100\n\n: comment\ndata:no-space\n\n'
    for i in range(len(text) + 1):
        evs = decode(text[:i], text[i:])
        assert evs == [SSEEvent('{"k":\n2}', "chunk", "7", 100), SSEEvent("no-space", "message", "7", 100)]


def test_comments_unknown_fields_bom_and_empty_events():
    evs = decode("\ufeff: keep-alive\n\nfoo: bar\ndata\n\n\n\ndata:  two spaces\n\n")
    assert [e.data for e in evs] == ["", " two spaces"]


def test_unterminated_last_event_is_flushed():
    assert [e.data for e in decode("data: tail")] == ["tail"]


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",))),
                min_size=1, max_size=5), st.integers(min_value=1, max_value=7))
def test_roundtrip_any_chunking(payloads, step):
    text = "".join(f"data: {p}\n\n" for p in payloads)
    chunks = [text[i:i + step] for i in range(0, len(text), step)]
    assert [e.data for e in decode(*chunks)] == payloads


def chunk(content, index=0):
    return "data: " + json.dumps({"object": "chat.completion.chunk",
                                  "choices": [{"index": index, "delta": {"content": content}}]}) + "\n\n"


def streaming(body: str):
    def handler(request):
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body.encode())
    return VLLMProvider(settings=ClientSettings(base_url="http://s/v1", model="tiny", max_retries=0),
                        transport=httpx.MockTransport(handler))


def test_stream_yields_deltas_of_choice_zero_and_stops_at_done():
    body = chunk("") + chunk("Hel") + chunk("other", index=1) + chunk("lo") + "data: [DONE]\n\n" + chunk("after")
    assert list(streaming(body).stream("x")) == ["Hel", "lo"]


async def test_astream_same():
    body = chunk("a") + ": ping\n\n" + chunk("b") + "data: [DONE]\n\n"
    p = streaming(body)
    assert [d async for d in p.astream("x")] == ["a", "b"]
    await p.aclose()


def test_stream_error_event_raises_with_vllms_message():
    body = chunk("a") + 'data: {"error": {"message": "bad things", "type": "BadRequestError", "code": 400}}\n\n'
    with pytest.raises(BadRequestError, match="bad things"):
        list(streaming(body).stream("x"))


def test_stream_completions_text():
    body = 'data: {"choices": [{"index": 0, "text": "ab"}]}\n\ndata: [DONE]\n\n'
    assert list(streaming(body).stream("x", endpoint="completions")) == ["ab"]


def test_stream_request_body_has_stream_true():
    seen = []

    def handler(request):
        seen.append(json.loads(request.content))
        return httpx.Response(200, content=b"data: [DONE]\n\n")
    p = VLLMProvider(settings=ClientSettings(base_url="http://s/v1", model="tiny"), transport=httpx.MockTransport(handler))
    assert list(p.stream("x", max_tokens=3)) == []
    assert seen[0]["stream"] is True and seen[0]["max_tokens"] == 3


PROM = r'''# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 1.0
vllm:num_requests_running{engine="1",model_name="tiny"} 2.0
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le="0.3",model_name="tiny"} 4.0
vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="tiny"} 9.0
vllm:e2e_request_latency_seconds_sum{model_name="tiny"} 1.5e+00
process_start_time_seconds 1.7e9 1700000000000
weird{path="a \"quoted\" \\ back\nline",x="y, z"} NaN
inf_metric +Inf
broken{unterminated="x} 1
vllm:lora_requests_info{max_lora="2",running_lora_adapters="",waiting_lora_adapters=""} 1.7e9
'''


def test_prometheus_parser():
    m = parse_prometheus(PROM)
    assert m.types["vllm:num_requests_running"] == "gauge"
    assert m.help["vllm:num_requests_running"].startswith("Number of requests")
    assert m.value("vllm:num_requests_running") == 3.0
    assert m.value("vllm:num_requests_running", engine="1") == 2.0
    assert m.value("nope") is None and m.value("nope", 0.0) == 0.0
    buckets = m["vllm:e2e_request_latency_seconds_bucket"]
    assert buckets[1].labels == {"le": "+Inf", "model_name": "tiny"} and buckets[1].value == 9.0
    assert m.value("vllm:e2e_request_latency_seconds_sum") == 1.5
    assert m.value("process_start_time_seconds") == 1.7e9
    w = m["weird"][0]
    assert w.labels == {"path": 'a "quoted" \\ back\nline', "x": "y, z"} and math.isnan(w.value)
    assert m.value("inf_metric") == math.inf
    assert "broken" not in m
    assert m["vllm:lora_requests_info"][0].labels["running_lora_adapters"] == ""
