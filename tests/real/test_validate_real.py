"""`vllm-ops validate` against the real vLLM CPU server: every check passes on the real server,
and every check FAILS when a proxy in front of it misbehaves in exactly that check's way."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from tests.support.proxy import FaultProxy
from vllm_ops.validate import run_validation

pytestmark = [pytest.mark.real, pytest.mark.slow]

ALL_CHECKS = {"health", "version", "model.listed", "tokenize", "chat", "completion", "stream",
              "structured.json", "structured.regex", "structured.choice", "structured.grammar",
              "beam_search", "lora", "concurrency", "metrics"}


@pytest.fixture(scope="module")
def proxy(vllm_server):
    with FaultProxy(vllm_server.root_url, base_model=vllm_server.model) as p:
        yield p


@pytest.fixture(autouse=True)
def _clear(request):
    yield
    if "proxy" in request.fixturenames:
        request.getfixturevalue("proxy").clear()


def _statuses(report):
    return {c.name: c.status for c in report.checks}


def test_every_check_passes_on_the_real_server(vllm_server):
    # no --lora: validate writes an adapter for the served model (its directory is readable here)
    report = run_validation(vllm_server.root_url, vllm_server.model, concurrency=8)
    st = _statuses(report)
    assert set(st) == ALL_CHECKS
    assert report.ok, [(c.name, c.detail) for c in report.failed()]
    assert all(s == "pass" for s in st.values()), st
    assert report.version and report.model == "tiny"
    conc = report.get("concurrency").data
    assert conc["n"] == 8 and conc["p50_ms"] > 0 and conc["p95_ms"] >= conc["p50_ms"]


def test_named_adapters_and_the_cli(vllm_server, run_cli, tmp_path):
    junit = tmp_path / "validate.xml"
    lora = [a for name, path in vllm_server.adapters.items() for a in ("--lora", f"{name}={path}")]
    rc, out, err = run_cli("validate", "--url", vllm_server.root_url, "--only", "health,lora",
                           *lora, "--json", "--junit", str(junit))
    assert rc == 0, err
    doc = json.loads(out)
    names = [c["name"] for c in doc["checks"]]
    assert names == ["health"] + [f"lora.{n}" for n in vllm_server.adapters]
    assert all(c["status"] == "pass" for c in doc["checks"]), doc["checks"]
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == str(len(names)) and suite.get("failures") == "0"


def test_the_proxy_is_transparent(proxy, vllm_server):
    report = run_validation(proxy.root_url, vllm_server.model, concurrency=4,
                            loras={"lora-a": str(vllm_server.adapters["lora-a"])})
    assert report.ok, [(c.name, c.detail) for c in report.failed()]


# fault → the checks that must fail (and every other check that ran must not)
FAULTS = [
    ("unhealthy", ["health"], ["health", "version"]),
    ("model_not_listed", ["model.listed"], ["model.listed", "chat"]),
    ("wrong_tokenize", ["tokenize"], ["tokenize"]),
    ("stream_no_done", ["stream"], ["stream", "chat"]),
    ("stream_no_usage", ["stream"], ["stream"]),
    ("strip_structured_outputs", ["structured.json", "structured.regex", "structured.choice",
                                  "structured.grammar"], ["structured"]),
    ("drop_beam", ["beam_search"], ["beam_search", "completion"]),
    ("refuse_adapter_load", ["lora.lora-a"], ["lora"]),
    ("adapter_as_base", ["lora.lora-a"], ["lora"]),
    ("fail_some", ["concurrency"], ["concurrency"]),
    ("hide_metrics", ["metrics"], ["metrics"]),
]


@pytest.mark.parametrize("fault,must_fail,only", FAULTS, ids=[f[0] for f in FAULTS])
def test_each_check_fails_when_the_server_misbehaves(proxy, vllm_server, fault, must_fail, only):
    proxy.set(fault)
    report = run_validation(proxy.root_url, vllm_server.model, concurrency=6, only=only,
                            loras={"lora-a": str(vllm_server.adapters["lora-a"])})
    st = _statuses(report)
    for name in must_fail:
        assert st.get(name) == "fail", (fault, st, [(c.name, c.detail) for c in report.checks])
    assert all(s == "pass" for n, s in st.items() if n not in must_fail), (fault, st)
    assert not report.ok


def test_hidden_metric_is_named(proxy, vllm_server):
    proxy.set("hide_metrics", hidden_metrics=("vllm:num_preemptions_total", "vllm:inter_token_latency_seconds"))
    report = run_validation(proxy.root_url, vllm_server.model, only=["metrics"])
    detail = report.get("metrics").detail
    assert "vllm:num_preemptions_total" in detail and "vllm:inter_token_latency_seconds" in detail
    assert "vllm:kv_cache_usage_perc" not in detail


def test_cli_exit_status_follows_failures(proxy, vllm_server, run_cli):
    proxy.set("unhealthy")
    rc, out, err = run_cli("validate", "--url", proxy.root_url, "--only", "health,version", "--quiet")
    assert rc == 1 and "health" in out and "fail" in out
    proxy.clear()
    rc, out, err = run_cli("validate", "--url", proxy.root_url, "--only", "health,version", "--quiet")
    assert rc == 0, out
