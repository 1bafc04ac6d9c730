"""validate's pure parts: constraint verifiers, report (JSON, JUnit XML, exit rule), --lora parsing."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from vllm_ops.errors import BadInput
from vllm_ops.validate import constraints as c
from vllm_ops.validate.report import CheckResult, ValidationReport
from vllm_ops.validate.runner import parse_lora_specs


@pytest.mark.parametrize("kind,good,bad", [
    ("json", '{"ok": true, "color": "red", "size": "M"}', '{"ok": "yes", "color": "red", "size": "M"}'),
    ("json", '{ "size":"S",\n"color" : "blue", "ok":false }', '{"ok": true, "color": "red"}'),
    ("json", '{"ok": true, "color": "red", "size": "L"}', '{"ok": true, "color": "red", "size": "L", "x": 1}'),
    ("json", '{"ok": false, "color": "green", "size": "S"}', 'hello {"ok": true}'),
    ("regex", "abc-47", "abc-4"),
    ("regex", "cba-00", "abd-12"),
    ("choice", "beta", "Beta"),
    ("grammar", "sum(1,23)", "sum(01,2)"),
    ("grammar", "sum(9,9)", "sum(9,9) "),
])
def test_verifiers_accept_conforming_and_reject_the_rest(kind, good, bad):
    assert c.verify(kind, good) is None
    assert c.verify(kind, bad)


def test_schema_subset():
    s = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "maxItems": 2}
    assert c.schema_errors([1, 2], s) == []
    assert c.schema_errors([1, 2, 3], s)
    assert c.schema_errors([10], s)
    assert c.schema_errors([True], s)  # a bool is not an integer


def _report(*statuses):
    return ValidationReport(url="http://x:1", model="m", version="0.32.0", checks=[
        CheckResult(f"c{i}", s, "why" if s != "pass" else "", 12.0) for i, s in enumerate(statuses)])


def test_ok_means_no_failure_skips_allowed():
    assert _report("pass", "skip").ok
    assert not _report("pass", "fail", "skip").ok
    assert _report("pass", "fail", "skip").counts() == {"pass": 1, "fail": 1, "skip": 1}


def test_skip_needs_a_reason_and_status_is_checked():
    with pytest.raises(ValueError):
        CheckResult("x", "skip")
    with pytest.raises(ValueError):
        CheckResult("x", "warn", "?")


def test_json_and_junit():
    rep = _report("pass", "fail", "skip")
    doc = json.loads(json.dumps(rep.to_dict()))
    assert doc["ok"] is False and [x["status"] for x in doc["checks"]] == ["pass", "fail", "skip"]
    root = ET.fromstring(rep.to_junit_xml())
    suite = root.find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "1" and suite.get("skipped") == "1"
    cases = suite.findall("testcase")
    assert cases[1].find("failure").get("message") == "why"
    assert cases[2].find("skipped") is not None and cases[0].find("failure") is None


def test_table_prints(capsys):
    from rich.console import Console

    _report("pass", "fail").print_table(Console(width=120, force_terminal=False))
    out = capsys.readouterr().out
    assert "c1" in out and "FAILED" in out


def test_parse_lora_specs():
    assert parse_lora_specs(["a=/x", "b = /y/z"]) == {"a": "/x", "b": "/y/z"}
    for bad in ("a", "=x", "a="):
        with pytest.raises(BadInput):
            parse_lora_specs([bad])


def test_cli_rejects_bad_flags(run_cli):
    rc, out, err = run_cli("validate", "--url", "http://127.0.0.1:9", "--lora", "nopath")
    assert rc == 2 and "NAME=PATH" in err
    rc, out, err = run_cli("validate", "--url", "http://127.0.0.1:9", "--concurrency", "0")
    assert rc == 2


@pytest.mark.parametrize("command", [
    ["validate", "--only", "health,version,chat", "--json"],
    ["validate"],
    ["bench", "--concurrency", "1", "--num-prompts", "1"],
    ["generate", "hi"],
    ["generate", "hi", "--json"],
])
def test_unreachable_server_is_one_line_naming_the_url(run_cli, command):
    # nothing listens on port 9: one line naming the URL and the error, exit 1, nothing else
    rc, out, err = run_cli(*command, "--url", "http://127.0.0.1:9")
    assert rc == 1, (out, err)
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("vllm-ops: error: cannot reach the server at http://127.0.0.1:9: ")
    assert "refused" in err.lower() or "connect call failed" in err.lower()


def test_health_check_is_the_one_pre_check_request():
    # request shape: the pre-check's GET /health is the health check's result (one request, not two)
    import httpx

    from vllm_ops.client import VLLMProvider
    from vllm_ops.client.settings import ClientSettings
    from vllm_ops.validate.runner import run_validation

    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200 if request.url.path == "/health" else 404)

    llm = VLLMProvider(settings=ClientSettings(base_url="http://srv:8000/v1", model="tiny", max_retries=0),
                       transport=httpx.MockTransport(answer))
    report = run_validation("http://srv:8000", "tiny", only=["health"], provider=llm)
    assert [(c.name, c.status, c.detail) for c in report.checks] == [("health", "pass", "GET /health: 200")]
    assert seen == ["/health"]
