"""config.json → ModelSpec: architecture facts, the catalog, hostile files, the CLI."""
from __future__ import annotations

import json

import pytest

from vllm_ops.errors import MalformedFile
from vllm_ops.models import ModelSpec, load_model_spec, spec_from_config
from vllm_ops.models.catalog import list_models

BASE = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
    "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 1000, "max_position_embeddings": 2048,
    "torch_dtype": "bfloat16",
}


def test_catalog_has_at_least_30_sane_models():
    names = list_models()
    assert len(names) >= 30
    for n in names:
        s = load_model_spec(n, offline=True)
        assert s.source == "catalog" and s.catalog_source
        assert s.num_layers > 0 and s.head_dim > 0 and s.vocab_size > 1000
        assert s.num_attention_heads % s.num_kv_heads == 0
        assert 1e8 < s.param_count < 2e12
        assert 0.2 < s.computed_weight_bytes / s.param_count < 4.1
        assert s.max_model_len and s.max_model_len >= 2048
        assert ModelSpec.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_catalog_coverage():
    names = set(list_models())
    for must in ("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-405B-Instruct",
                 "meta-llama/Llama-3.2-1B-Instruct", "Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-72B-Instruct",
                 "Qwen/Qwen2.5-Coder-7B-Instruct", "Qwen/Qwen3-30B-A3B", "Qwen/Qwen3-Coder-30B-A3B-Instruct",
                 "mistralai/Mistral-7B-Instruct-v0.3", "mistralai/Mixtral-8x7B-Instruct-v0.1",
                 "mistralai/Mistral-Small-3.2-24B-Instruct-2506", "deepseek-ai/DeepSeek-V2.5",
                 "deepseek-ai/DeepSeek-R1", "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
                 "google/gemma-2-9b-it", "google/gemma-3-27b-it", "microsoft/Phi-4-mini-instruct",
                 "openai/gpt-oss-20b", "openai/gpt-oss-120b"):
        assert must in names, must


def test_architecture_facts():
    q = load_model_spec("qwen/qwen2.5-7b-instruct", offline=True)   # case-insensitive
    assert (q.num_layers, q.num_attention_heads, q.num_kv_heads, q.head_dim) == (28, 28, 4, 128)
    assert q.sliding_window is None and q.max_model_len == 32768

    r1 = load_model_spec("deepseek-ai/DeepSeek-R1", offline=True)
    assert r1.mla.kv_lora_rank == 512 and r1.mla.q_lora_rank == 1536
    assert r1.moe.num_experts == 256 and r1.moe.num_shared_experts == 1
    assert r1.moe.num_dense_layers == 3 and r1.quantization.method == "fp8"
    assert r1.max_model_len == 163840                       # yarn: 4096 x 40

    oss = load_model_spec("openai/gpt-oss-20b", offline=True)
    assert oss.quantization.method == "mxfp4" and oss.num_sliding_layers == 12
    assert oss.sliding_window == 128 and oss.torch_dtype == "bfloat16"
    assert oss.max_model_len == 131072

    g3 = load_model_spec("google/gemma-3-27b-it", offline=True)
    assert g3.multimodal and g3.vocab_size == 262208 and g3.num_layers == 62
    assert g3.num_sliding_layers == 62 - 10 and g3.max_model_len == 131072   # gemma3: no rope scaling
    assert any("vision" in n for n in g3.notes)

    g2 = load_model_spec("google/gemma-2-9b-it", offline=True)
    assert g2.num_sliding_layers == 21 and g2.tie_word_embeddings

    m = load_model_spec("mistralai/Mistral-Small-3.2-24B-Instruct-2506", offline=True)
    assert m.multimodal and m.sliding_window is None and m.num_layers == 40

    q3 = load_model_spec("Qwen/Qwen3-235B-A22B-FP8", offline=True)
    assert q3.moe.num_experts == 128 and q3.moe.num_dense_layers == 0
    assert q3.quantization.method == "fp8" and q3.quantization.modules_not_converted


def test_head_dim_and_defaults():
    s = spec_from_config(dict(BASE), model_id="tiny")
    assert s.head_dim == 64 and s.num_kv_heads == 2 and s.source == "config"
    c = dict(BASE, head_dim=96)
    assert spec_from_config(c, model_id="t").head_dim == 96
    c = dict(BASE)
    del c["num_key_value_heads"]
    assert spec_from_config(c, model_id="t").num_kv_heads == 4
    c = dict(BASE, rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024})
    assert spec_from_config(c, model_id="t").max_model_len == 4096
    c = dict(BASE, max_position_embeddings=None)
    s = spec_from_config(c, model_id="t")
    assert s.max_model_len == 2048 and any("2048" in n for n in s.notes)


def test_index_total_kept_and_compared():
    s = spec_from_config(dict(BASE), model_id="t", index_total_size=123456789)
    assert s.weight_bytes == 123456789 and s.weight_bytes_source == "safetensors-index"
    assert s.computed_weight_bytes and s.computed_weight_bytes != s.weight_bytes


HOSTILE = [
    ("invalid json", "{not json"),
    ("non-dict", "[1, 2, 3]"),
    ("missing layers", {k: v for k, v in BASE.items() if k != "num_hidden_layers"}),
    ("missing hidden", {k: v for k, v in BASE.items() if k != "hidden_size"}),
    ("negative hidden", dict(BASE, hidden_size=-256)),
    ("zero heads", dict(BASE, num_attention_heads=0)),
    ("heads not dividing hidden", dict(BASE, hidden_size=250)),
    ("kv not dividing heads", dict(BASE, num_key_value_heads=3)),
    ("absurd layers", dict(BASE, num_hidden_layers=10 ** 18)),
    ("string size", dict(BASE, vocab_size="1000")),
    ("bool size", dict(BASE, num_hidden_layers=True)),
    ("float size", dict(BASE, hidden_size=256.5)),
    ("nan", '{"hidden_size": NaN}'),
    ("bad quant", dict(BASE, quantization_config="awq")),
    ("bad sliding window", dict(BASE, sliding_window=-1)),
    ("bad layer_types", dict(BASE, layer_types=["full_attention"])),
    ("too many experts per token", dict(BASE, num_local_experts=4, num_experts_per_tok=8)),
    ("deep nesting", "[" * 100000 + "]" * 100000),
]


@pytest.mark.parametrize("label,content", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_config_one_line_and_exit_2(tmp_path, run_cli, label, content):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(MalformedFile) as ei:
        load_model_spec(str(d))
    msg = ei.value.one_line()
    assert "\n" not in msg and len(msg) < 300
    rc, out, err = run_cli("models", "show", str(d))
    assert rc == 2, (label, err)
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err


def test_hostile_index(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(BASE))
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": -5}}))
    with pytest.raises(MalformedFile):
        load_model_spec(str(d))


def test_dir_without_config(tmp_path, run_cli):
    rc, _, err = run_cli("models", "show", str(tmp_path))
    assert rc == 2 and "no config.json" in err


def test_cli_list_json(run_cli):
    rc, out, _ = run_cli("models", "list", "--json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["count"] == len(doc["models"]) >= 30


def test_cli_show(run_cli):
    rc, out, _ = run_cli("models", "show", "Qwen/Qwen2.5-7B-Instruct", "--json", "--offline")
    assert rc == 0
    doc = json.loads(out)
    assert doc["summary"]["kv_bytes_per_token_bf16"] == 57344
    assert doc["summary"]["weight_bytes_source"] == "safetensors-index"
    rc, out, err = run_cli("models", "show", "deepseek-ai/DeepSeek-R1")
    assert rc == 0 and "MLA" in out and "fp8" in out


def test_cli_unknown_model(run_cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc, out, err = run_cli("models", "show", "Qwen/Qwen2.5-7B-Instrct")
    assert rc == 2 and "did you mean" in err and "Qwen/Qwen2.5-7B-Instruct" in err
    assert err.count("\n") == 1
