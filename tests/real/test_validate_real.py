"""`vllm-ops validate` against the real vLLM CPU server: every check passes on the real server
(with validate's own adapter, one named adapter, two at once), and every check FAILS when a proxy
in front of it misbehaves in exactly that check's way.

The adapters are PEFT-format adapters from the product's maker (vllm_ops/validate/adapters.py),
served by vLLM 0.32's CPU build with runtime LoRA (the session's `vllm_server`, --max-loras 2)."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.support.proxy import FaultProxy
from vllm_ops.validate import run_validation
from vllm_ops.validate.adapters import make_lora_adapter

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


# vLLM CPU builds whose LoRA ops (vllm/lora/ops/torch_ops/lora_ops.py: `lora_b_weights[lora_indices]`)
# index base-model tokens with -1, i.e. the last adapter slot (measured on 0.32.0)
CPU_LAST_SLOT_BUG = ("0.32.0",)


def _lora_flags(server, names=("lora-a", "lora-b")):
    return [a for n in names for a in ("--lora", f"{n}={server.adapters[n]}")]


def test_one_named_adapter_every_check_passes(vllm_server):
    report = run_validation(vllm_server.root_url, vllm_server.model, concurrency=4,
                            loras={"lora-a": str(vllm_server.adapters["lora-a"])})
    st = _statuses(report)
    assert set(st) == ALL_CHECKS - {"lora"} | {"lora.lora-a"}
    assert all(s == "pass" for s in st.values()), [(c.name, c.detail) for c in report.checks]
    lora = report.get("lora.lora-a").data
    assert lora["max_logprob_diff"] > lora["threshold"] >= 0 and lora["prompts"] == 4


def test_two_adapters_at_once_and_the_cli(vllm_server, run_cli, tmp_path):
    junit = tmp_path / "validate.xml"
    rc, out, err = run_cli("validate", "--url", vllm_server.root_url, *_lora_flags(vllm_server),
                           "--json", "--junit", str(junit), "--concurrency", "4")
    doc = json.loads(out)
    st = {c["name"]: c for c in doc["checks"]}
    assert set(st) == ALL_CHECKS - {"lora"} | {"lora.lora-a", "lora.lora-b", "lora.multi", "lora.multi_base"}
    assert [n for n in st if n.startswith("lora")] == ["lora.lora-a", "lora.lora-b", "lora.multi",
                                                        "lora.multi_base"]
    passed = {n for n, c in st.items() if c["status"] == "pass"}
    assert passed >= ALL_CHECKS - {"lora"} | {"lora.lora-a", "lora.lora-b", "lora.multi"}, st
    assert "each answered by its own adapter" in st["lora.multi"]["detail"]
    # vLLM 0.32's CPU LoRA ops pick the LAST adapter slot for base-model tokens (index -1): with
    # --max-loras 2 and both slots filled, base requests batched with adapter requests are answered
    # by an adapter (seen: lora-b's exact logprobs on 3 prompts of 4; in another run lora-a's on 3, which
    # slot a batch lands in varies). lora.multi_base names it; on a correct server it passes like the rest.
    mb = st["lora.multi_base"]
    if doc["version"] in CPU_LAST_SLOT_BUG and mb["status"] != "pass":
        # the bug shows only when a base request shares a batch with adapter requests (it did in every
        # run seen here); when it shows, the check must name the base model and fail the run
        assert mb["status"] == "fail", mb
        assert "a request for tiny (the base model) was answered like lora-" in mb["detail"], mb
        assert rc == 1 and doc["ok"] is False
    else:
        assert mb["status"] == "pass" and rc == 0 and doc["ok"] is True, mb
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == str(len(st))
    assert not _listed_adapters(vllm_server)


def _listed_adapters(server):
    from vllm_ops.client import VLLMProvider

    with VLLMProvider.from_root_url(server.root_url, max_retries=0) as llm:
        return llm.list_adapters()


def test_the_issues_adapter_is_proved_used_and_a_zero_one_unused(vllm_server, tmp_path):
    """The issue's measured case: rank 4, alpha 32, q/v projections only. On the dummy-weight
    model its greedy text can equal the base's on a prompt; its logprobs still differ, far beyond
    the server's measured noise (0 here: the CPU build answers bit-identically). An adapter whose
    weights are all zero changes nothing: identical logprobs on every prompt, the check fails."""
    config = json.loads((Path(vllm_server.model_dir) / "config.json").read_text())
    qv = make_lora_adapter(tmp_path / "qv", config, rank=4, alpha=32, seed=7, targets=("q_proj", "v_proj"))
    zero = make_lora_adapter(tmp_path / "zero", config, seed=8, std=0.0)
    report = run_validation(vllm_server.root_url, vllm_server.model, only=["lora"],
                            loras={"qv": str(qv), "zero": str(zero)})
    st = _statuses(report)
    assert st["lora.qv"] == "pass", report.get("lora.qv").detail
    data = report.get("lora.qv").data
    assert data["max_logprob_diff"] > data["threshold"]
    assert st["lora.zero"] == "fail"
    assert "answered like the base model" in report.get("lora.zero").detail
    assert st["lora.multi"] == "skip" and "not: zero" in report.get("lora.multi").detail
    assert not _listed_adapters(vllm_server)


def test_the_proxy_is_transparent(proxy, vllm_server):
    report = run_validation(proxy.root_url, vllm_server.model, concurrency=4,
                            loras={"lora-a": str(vllm_server.adapters["lora-a"])})
    assert report.ok, [(c.name, c.detail) for c in report.failed()]


# fault → the checks that must fail (and every other check that ran must not)
FAULTS = [
    ("bad_version", ["version"], ["health", "version"]),
    ("empty_chat", ["chat"], ["chat", "completion"]),
    ("empty_completion", ["completion"], ["chat", "completion"]),
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
    proxy.set("bad_version")
    rc, out, err = run_cli("validate", "--url", proxy.root_url, "--only", "health,version", "--quiet")
    assert rc == 1 and "version" in out and "unreadable version 'unknown'" in out
    proxy.clear()
    rc, out, err = run_cli("validate", "--url", proxy.root_url, "--only", "health,version", "--quiet")
    assert rc == 0, out


@pytest.mark.parametrize("command", [["validate"], ["bench", "--concurrency", "1", "--num-prompts", "1"],
                                     ["generate", "hi"]])
def test_unhealthy_server_is_one_line_before_any_check(proxy, run_cli, command):
    proxy.set("unhealthy")
    rc, out, err = run_cli(*command, "--url", proxy.root_url, "--json")
    assert rc == 1 and out == "" and err.count("\n") == 1, (out, err)
    assert f"the server at {proxy.root_url} is not healthy: GET /health answered 503" in err
    assert [p for _, p in proxy.requests[-1:]] == ["/health"]


def test_swapped_adapters_fail_the_multi_lora_check(proxy, vllm_server, run_cli):
    # each adapter alone is fine; once both are loaded the proxy sends a's requests to b and back
    proxy.set("swap_adapters", swap=("lora-a", "lora-b"))
    rc, out, err = run_cli("validate", "--url", proxy.root_url, "--only", "lora.multi",
                           *_lora_flags(vllm_server), "--json")
    st = {c["name"]: c for c in json.loads(out)["checks"]}
    assert rc == 1
    assert st["lora.lora-a"]["status"] == st["lora.lora-b"]["status"] == "pass"
    assert st["lora.multi"]["status"] == "fail"
    assert "a request for lora-a was answered like lora-b" in st["lora.multi"]["detail"]
    assert not _listed_adapters(vllm_server)
