"""Resolution: local dir, HF cache (temp HF_HOME), catalog, and the Hub (a local HTTP server
serving the Hub's URL layout from tests/data/models/hub)."""
from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest

from vllm_ops.errors import BadInput, UnknownModel
from vllm_ops.models import load_model_spec

HUB_FILES = Path(__file__).resolve().parent.parent / "data" / "models" / "hub"
TOKEN = "hf_secret_token_do_not_leak_123"
GATED = {"acme/gated-7b"}


class _HubHandler(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def log_message(self, *a):  # quiet
        pass

    def do_GET(self):  # noqa: N802
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        parts = self.path.strip("/").split("/")
        if len(parts) != 5 or parts[2] != "resolve" or parts[3] != "main":
            return self._send(404, b'{"error":"Entry not found"}')
        repo, fname = f"{parts[0]}/{parts[1]}", parts[4]
        if repo in GATED and self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._send(401, b'{"error":"Access to model is restricted"}')
        f = HUB_FILES / parts[0] / parts[1] / fname
        if fname not in ("config.json", "model.safetensors.index.json") or not f.is_file():
            return self._send(404, b'{"error":"Repository not found"}')
        self._send(200, f.read_bytes())

    def _send(self, code, body):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    _HubHandler.seen = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HubHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{srv.server_address[1]}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("VLLM_OPS_PREFER_HUB", raising=False)
    yield _HubHandler
    srv.shutdown()
    srv.server_close()


def test_hub_public_repo(hub):
    s = load_model_spec("acme/open-7b")
    assert s.source == "hub" and s.num_layers == 28
    assert s.index_total_size == 15231233024 and s.weight_bytes_source == "safetensors-index"
    paths = [p for p, _ in hub.seen]
    assert paths == ["/acme/open-7b/resolve/main/config.json",
                     "/acme/open-7b/resolve/main/model.safetensors.index.json"]


def test_hub_gated_without_token(hub, run_cli):
    with pytest.raises(BadInput) as ei:
        load_model_spec("acme/gated-7b")
    msg = ei.value.one_line()
    assert "401" in msg and "HF_TOKEN" in msg
    rc, out, err = run_cli("models", "show", "acme/gated-7b")
    assert rc == 2 and err.count("\n") == 1 and "401" in err


def test_hub_gated_with_wrong_token_never_leaks(hub, monkeypatch, run_cli):
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_secret_value_987")
    rc, out, err = run_cli("models", "show", "acme/gated-7b")
    assert rc == 2 and "refused" in err
    assert "hf_wrong_secret_value_987" not in err + out
    assert hub.seen[0][1] == "Bearer hf_wrong_secret_value_987"


def test_hub_gated_with_token(hub, monkeypatch, run_cli):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    s = load_model_spec("acme/gated-7b")
    assert s.source == "hub" and s.index_total_size == 15231233024
    assert all(auth == f"Bearer {TOKEN}" for _, auth in hub.seen)
    rc, out, err = run_cli("models", "show", "acme/gated-7b", "--json")
    assert rc == 0 and TOKEN not in out + err
    assert json.loads(out)["spec"]["source"] == "hub"


def test_hub_missing_repo(hub, run_cli):
    with pytest.raises(UnknownModel) as ei:
        load_model_spec("acme/no-such-model")
    assert "404" in str(ei.value)
    rc, _, err = run_cli("models", "show", "acme/no-such-model")
    assert rc == 2 and err.count("\n") == 1


def test_hub_unreachable_one_line(monkeypatch, tmp_path, run_cli):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")   # discard port: refused
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    rc, _, err = run_cli("models", "show", "acme/whatever")
    assert rc == 1 and "cannot reach the Hub" in err and err.count("\n") == 1


def test_offline_skips_hub(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UnknownModel) as ei:
        load_model_spec("acme/open-7b")
    assert "offline" in str(ei.value)
    assert hub.seen == []
    with pytest.raises(UnknownModel):
        load_model_spec("acme/open-7b", offline=True)


def test_catalog_before_hub_and_prefer_hub(hub, monkeypatch):
    s = load_model_spec("Qwen/Qwen2.5-7B-Instruct")
    assert s.source == "catalog" and hub.seen == []
    # --online / VLLM_OPS_PREFER_HUB: the Hub first; on 404 the catalog still answers
    s = load_model_spec("Qwen/Qwen2.5-7B-Instruct", prefer_hub=True)
    assert s.source == "catalog" and len(hub.seen) == 1


def _make_cache(root: Path, repo: str, config: dict, *, rev="abc123", ref=True, index=None):
    base = root / ("models--" + repo.replace("/", "--"))
    snap = base / "snapshots" / rev
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(config))
    if index is not None:
        (snap / "model.safetensors.index.json").write_text(json.dumps(index))
    if ref:
        (base / "refs").mkdir()
        (base / "refs" / "main").write_text(rev)
    return snap


def test_hf_cache_with_hf_home(monkeypatch, tmp_path):
    cfg = json.loads((HUB_FILES / "acme" / "open-7b" / "config.json").read_text())
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snap = _make_cache(tmp_path / "hf" / "hub", "myorg/my-model", cfg,
                       index={"metadata": {"total_size": 15231233024}, "weight_map": {}})
    # an older snapshot that refs/main does not name
    old = tmp_path / "hf" / "hub" / "models--myorg--my-model" / "snapshots" / "old000"
    old.mkdir()
    (old / "config.json").write_text(json.dumps(dict(cfg, num_hidden_layers=2)))
    s = load_model_spec("myorg/my-model")
    assert s.source == "hf-cache" and s.num_layers == 28 and s.local_dir == str(snap)
    assert s.index_total_size == 15231233024 and s.id == "myorg/my-model"


def test_hf_cache_overrides_catalog_and_hub_cache_env(monkeypatch, tmp_path):
    cfg = json.loads((HUB_FILES / "acme" / "open-7b" / "config.json").read_text())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hc"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "ignored"))
    _make_cache(tmp_path / "hc", "Qwen/Qwen2.5-7B-Instruct", dict(cfg, num_hidden_layers=3), ref=False)
    s = load_model_spec("Qwen/Qwen2.5-7B-Instruct", offline=True)
    assert s.source == "hf-cache" and s.num_layers == 3


def test_local_dir_and_config_file(tmp_path):
    cfg = json.loads((HUB_FILES / "acme" / "open-7b" / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    s = load_model_spec(str(tmp_path))
    assert s.source == "dir" and s.local_dir == str(tmp_path.resolve())
    s2 = load_model_spec(str(tmp_path / "config.json"))
    assert s2.num_layers == 28
    with pytest.raises(UnknownModel):
        load_model_spec(str(tmp_path / "nope"))


def test_import_is_light():
    import subprocess
    import sys

    code = ("import sys, vllm_ops.models as m; m.load_model_spec('Qwen/Qwen2.5-7B-Instruct', offline=True);"
            "bad=[k for k in sys.modules if k.split('.')[0] in ('httpx','pydantic','rich','jinja2')];"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
