"""Golden files: l4x4 + Qwen/Qwen2.5-Coder-7B-Instruct, planned by the real planner, in every format.

``tests/golden/l4x4-qwen2.5-coder-7b-instruct/plan.json`` is what the planner makes of it, and the
other files there are what ``render(plan, "all")`` makes of that plan. After an intended change,
regenerate with ``VLLM_OPS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_render_golden.py``
and review the diff. Also: no secret value from the environment appears in any rendered file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vllm_ops.planning.plan import Plan
from vllm_ops.render import render

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "l4x4-qwen2.5-coder-7b-instruct"
MODEL = "Qwen/Qwen2.5-Coder-7B-Instruct"
VERSION = "0.33.0"
UPDATE = os.environ.get("VLLM_OPS_UPDATE_GOLDEN", "") not in ("", "0")


def planned() -> Plan:
    from vllm_ops.models import load_model_spec
    from vllm_ops.planning import plan
    from vllm_ops.profiles import load_profile

    profile = load_profile("l4x4")
    return plan(load_model_spec(MODEL, offline=True), profile.inventory(), pins={},
                vllm_version=VERSION, profile=profile)


def _golden_files() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(GOLDEN.iterdir()) if p.name != "plan.json"}


def test_planner_output_matches_the_golden_plan():
    doc = json.loads(planned().to_json())
    path = GOLDEN / "plan.json"
    if UPDATE:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    assert doc == json.loads(path.read_text()), "planner output changed: VLLM_OPS_UPDATE_GOLDEN=1 to accept"


def test_rendered_files_match_the_golden_files():
    plan = Plan.load(str(GOLDEN / "plan.json"))
    files = render(plan, "all").files
    if UPDATE:
        for old in GOLDEN.iterdir():
            if old.name != "plan.json" and old.name not in files:
                old.unlink()
        for rel, text in files.items():
            (GOLDEN / rel).write_text(text)
    golden = _golden_files()
    assert sorted(files) == sorted(golden)
    for rel, text in files.items():
        assert text == golden[rel], f"{rel} changed: VLLM_OPS_UPDATE_GOLDEN=1 to accept, then review the diff"


def test_golden_covers_every_format():
    assert sorted(_golden_files()) == ["docker-compose.yml", "k8s.yaml", "nginx.conf", "ray-head.sh",
                                       "ray-worker.sh", "serve.sh", "vllm-0.service", "vllm-1.service",
                                       "vllm.env"]


SENTINELS = {"HF_TOKEN": "hf_SENTINEL_do_not_render_1234", "VLLM_API_KEY": "sk-SENTINEL-api-key-5678",
             "HUGGING_FACE_HUB_TOKEN": "hf_SENTINEL_legacy_9999"}


@pytest.mark.parametrize("fmt", ["command", "compose", "systemd", "k8s", "ray", "all"])
def test_no_secret_value_in_any_rendered_file(fmt, monkeypatch, tmp_path, run_cli):
    for k, v in SENTINELS.items():
        monkeypatch.setenv(k, v)
    from tests.unit.test_render import PLANS

    texts = []
    for mk in list(PLANS.values()) + [planned]:
        try:
            texts += render(mk(), fmt).files.values()
        except Exception as exc:  # formats a plan cannot have (e.g. Ray on CPU) are refused
            assert type(exc).__name__ == "BadInput"
    out = tmp_path / "out"
    rc, stdout, stderr = run_cli("render", "--model", MODEL, "--profile", "l4x4", "--offline",
                                 "-f", fmt, "-o", str(out))
    assert rc == 0, stderr
    texts += [p.read_text() for p in out.iterdir()]
    rc, stdout2, stderr2 = run_cli("render", "--model", MODEL, "--profile", "l4x4", "--offline", "-f", fmt, "--json")
    texts += [stdout, stderr, stdout2, stderr2]
    for text in texts:
        for v in SENTINELS.values():
            assert v not in text
