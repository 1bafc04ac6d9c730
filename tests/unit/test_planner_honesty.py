"""Issue #20: the planner is never silently wrong. For each model class it either models what vLLM
does (dtype overrides, float32 checkpoints, quantized checkpoints, vision encoders, sliding-window
hybrids) or names the part it does not model (a memory term, a warning code, or a refusal, exit 2).
Real data points quoted here are from vLLM 0.25.0 on 1x H200 (139.80 GiB CUDA total)."""
from __future__ import annotations

import copy
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vllm_ops.hardware import parse_gpu_spec
from vllm_ops.models import catalog, load_model_spec, spec_from_config
from vllm_ops.planning import plan
from vllm_ops.planning.coverage import NotModelled
from vllm_ops.planning.dtypes import served_dtype
from vllm_ops.launch import calibration

H200 = "1xH200"
V = "0.25.0"


def _plan(model, gpus=H200, version=V, pins=None, extra=()):
    spec = load_model_spec(model, offline=True) if isinstance(model, str) else model
    return plan(spec, parse_gpu_spec(gpus), pins=pins or {}, vllm_version=version, extra_args=extra)


def _codes(p) -> set[str]:
    return {w.code for w in p.warnings}


def _cfg(model_id: str) -> dict:
    return copy.deepcopy(catalog.get_entry(model_id)["config"])


# -- dtype ----------------------------------------------------------------------------------------
def test_dtype_float32_doubles_the_weights_of_a_bf16_checkpoint():
    auto = _plan("Qwen/Qwen2.5-14B-Instruct")
    fp32 = _plan("Qwen/Qwen2.5-14B-Instruct", pins={"dtype": "float32"})
    assert abs((fp32.memory.weights_gib - 0.04) / (auto.memory.weights_gib - 0.04) - 2.0) < 0.01
    assert fp32.memory.kv_bytes_per_token == 2 * auto.memory.kv_bytes_per_token      # auto KV follows
    assert "float32" in fp32.reasons["dtype"]


def test_dtype_float32_real_run_qwen25_14b_h200():
    # real: vLLM 0.25.0, 1x H200, --dtype float32: "Model loading took 55.04 GiB", KV 70.14 GiB
    p = _plan("Qwen/Qwen2.5-14B-Instruct", pins={"dtype": "float32"})
    assert abs(p.memory.weights_gib - 55.04) / 55.04 < 0.01
    assert abs(p.memory.kv_cache_gib - 70.14) / 70.14 < 0.05


def test_float32_checkpoint_is_served_in_16_bits_under_auto():
    cfg = _cfg("Qwen/Qwen2.5-7B-Instruct")
    bf16 = spec_from_config(cfg, model_id="q7-bf16")
    cfg["torch_dtype"] = "float32"
    f32 = spec_from_config(cfg, model_id="q7-fp32")
    assert f32.weight_bytes == 2 * bf16.weight_bytes                 # the checkpoint on disk
    assert served_dtype(f32, "auto")[0] == "bfloat16"
    assert served_dtype(f32, "auto", bf16_ok=False)[0] == "float16"
    a, b = _plan(bf16), _plan(f32)
    assert a.memory.weights_gib == b.memory.weights_gib and a.memory.kv_cache_gib == b.memory.kv_cache_gib
    assert _plan(f32, pins={"dtype": "float32"}).memory.weights_gib > 1.9 * a.memory.weights_gib - 0.1


# -- quantized checkpoints --------------------------------------------------------------------------
def test_incomplete_awq_config_is_refused_with_vllms_error():
    with pytest.raises(NotModelled) as exc:
        _plan("Qwen/QwQ-32B-AWQ")
    assert exc.value.exit_code == 2 and exc.value.code == "quant-config-incomplete"
    assert "Cannot find any of ['q_group_size', 'group_size']" in str(exc.value)   # vLLM 0.25.0's words
    with pytest.raises(NotModelled, match="desc_act"):
        _plan("Qwen/Qwen2.5-72B-Instruct-GPTQ-Int4")


def test_compressed_tensors_without_groups_is_planned_unquantized_as_vllm_loads_it():
    # real: vLLM 0.25.0 loaded this reconstructed config at 131.45 GiB and had no room for KV
    p = _plan("RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic")
    assert abs(p.memory.weights_gib - 131.45) / 131.45 < 0.01
    assert not p.fits and "quant-config-incomplete" in _codes(p)


def test_verbatim_fp8_configs_are_complete_and_counted():
    for mid, gib in (("Qwen/Qwen3-32B-FP8", 32.0), ("Qwen/Qwen3-30B-A3B-FP8", 29.0),
                     ("nvidia/Llama-3.1-70B-Instruct-FP8", 67.7)):
        spec = load_model_spec(mid, offline=True)
        assert spec.quantization.method == "fp8" and spec.quantization.incomplete is None
        assert abs(spec.weight_bytes / 1024**3 - gib) / gib < 0.02, mid
        assert spec.catalog_source.startswith("verbatim")


def test_modelopt_hf_quant_config_fp8_kv_cache_by_version():
    spec = load_model_spec("nvidia/Llama-3.1-70B-Instruct-FP8", offline=True)
    assert spec.quantization.source_file == "hf_quant_config.json"
    assert spec.quantization.kv_cache_scheme == "fp8"
    new, old = _plan(spec), _plan(spec, version="0.12.0")
    per_layer_fp8 = 2 * 8 * 128 * 1
    assert new.memory.kv_bytes_per_token == 80 * per_layer_fp8
    assert old.memory.kv_bytes_per_token == 2 * 80 * per_layer_fp8
    assert _plan(spec, pins={"kv_cache_dtype": "bfloat16"}).memory.kv_bytes_per_token == 2 * 80 * per_layer_fp8
    # the reason names the checkpoint only where the estimate took fp8 from it
    assert new.reasons["kv_cache_dtype"].startswith("auto: fp8, as the checkpoint's hf_quant_config.json names")
    assert "checkpoint" not in old.reasons["kv_cache_dtype"]


def test_modelopt_dir_reads_hf_quant_config(tmp_path):
    entry = catalog.get_entry("nvidia/Llama-3.1-70B-Instruct-FP8")
    (tmp_path / "config.json").write_text(json.dumps(entry["config"]))
    plain = load_model_spec(str(tmp_path))
    assert plain.quantization is None
    (tmp_path / "hf_quant_config.json").write_text(json.dumps(entry["hf_quant_config"]))
    q = load_model_spec(str(tmp_path))
    assert q.quantization.method == "fp8" and q.weight_bytes < 0.55 * plain.weight_bytes


# -- vision-language models ------------------------------------------------------------------------
def test_vision_tower_is_counted_from_vision_config():
    for mid, params in (("google/gemma-3-27b-it", 27.43e9), ("meta-llama/Llama-3.2-11B-Vision", 10.67e9),
                        ("mistralai/Mistral-Small-3.2-24B-Instruct-2506", 24.0e9)):
        spec = load_model_spec(mid, offline=True)
        assert spec.vision is not None and abs(spec.param_count - params) / params < 0.01, mid
        assert any("vision tower counted" in n for n in spec.notes)


def test_encoder_profile_is_a_named_term_and_text_only_skips_it():
    p = _plan("google/gemma-3-27b-it")
    assert p.memory.encoder_profile_gib > 0 and "encoder-profile-estimated" in _codes(p)
    assert p.memory.activation_peak_gib >= p.memory.encoder_profile_gib
    assert any("encoder profile" in line for line in p.explain)
    t = _plan("google/gemma-3-27b-it", extra=("--limit-mm-per-prompt", '{"image": 0}'))
    assert t.memory.encoder_profile_gib == 0 and "encoder-profile-estimated" not in _codes(t)
    assert t.memory.kv_cache_gib > p.memory.kv_cache_gib
    one = _plan("google/gemma-3-27b-it", extra=("--limit-mm-per-prompt=image=1",),
                pins={"max_num_seqs": 4})
    assert 0 < one.memory.encoder_profile_gib < p.memory.encoder_profile_gib


def test_v0_vision_profile_is_named_not_modelled():
    p = _plan("meta-llama/Llama-3.2-11B-Vision", gpus="1xH100", version="0.6.5",
              pins={"max_model_len": 65536, "max_num_seqs": 128})
    assert {"encoder-profile-not-modelled", "cross-attention-kv-not-modelled"} <= _codes(p)


# -- hybrid models ------------------------------------------------------------------------------------
def test_sliding_window_hybrid_is_modelled_without_warning():
    p = _plan("openai/gpt-oss-20b")
    full = _plan(spec_from_config({**_cfg("openai/gpt-oss-20b"), "layer_types": None, "sliding_window": None},
                                  model_id="oss-all-full"))
    assert p.fits and p.memory.max_concurrency > 1.5 * full.memory.max_concurrency
    blocks = p.memory.kv_cache_gib * 1024**3 // (16 * 12 * p.memory.kv_bytes_per_token / 24)
    assert abs(p.memory.kv_pool_tokens / (blocks // 2 * 16) - 1) < 1e-3    # the pool: num_blocks // groups x block
    # what vLLM >= 0.25 prints as "GPU KV cache size": max concurrency x max_model_len (versions.kv_tokens_report)
    mml = p.vllm_args["max_model_len"]
    assert abs(p.memory.kv_cache_tokens / (p.memory.max_concurrency * mml) - 1) < 1e-3
    old = _plan("openai/gpt-oss-20b", version="0.19.0")
    assert old.memory.kv_cache_tokens == old.memory.kv_pool_tokens
    assert not _codes(p) & {"hybrid-state-not-modelled", "encoder-profile-estimated"}


@pytest.mark.parametrize("extra", [
    {"model_type": "qwen3_next", "full_attention_interval": 4},                      # Gated DeltaNet
    {"layer_types": ["linear_attention", "linear_attention", "linear_attention", "full_attention"] * 7},
    {"model_type": "nemotron_h", "hybrid_override_pattern": "M-M-M*-" * 4},           # Mamba2
    {"model_type": "jamba", "attn_layer_period": 8, "attn_layer_offset": 4},
])
def test_mamba_and_linear_attention_state_is_refused(extra):
    cfg = {**_cfg("Qwen/Qwen2.5-7B-Instruct"), **extra}
    spec = spec_from_config(cfg, model_id="hybrid")
    assert spec.state_layers
    with pytest.raises(NotModelled) as exc:
        _plan(spec)
    assert exc.value.code == "hybrid-state-not-modelled" and exc.value.exit_code == 2


def test_cli_refusal_is_one_line_exit_2():
    r = subprocess.run([sys.executable, "-m", "vllm_ops", "plan", "-m", "Qwen/QwQ-32B-AWQ", "--gpus", H200,
                        "--offline", "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "quant-config-incomplete" in r.stderr and "Traceback" not in r.stderr


# -- calibration records --------------------------------------------------------------------------------
def _record(p, **actual):
    hw = calibration.hardware_of(p.hardware, 1)
    return calibration.make_record(model_id=p.model["id"], hardware=hw, vllm_version=p.vllm_version,
                                   flags=p.vllm_args, predicted={}, actual=actual, ts=1.0)


def test_plan_uses_a_matching_calibration_record(tmp_path, monkeypatch):
    from vllm_ops.planning.calibrated import apply_calibration

    p = _plan("Qwen/Qwen2.5-7B-Instruct", pins={"max_model_len": 32768})
    predicted_kv = p.memory.kv_cache_gib
    calibration.append(_record(p, weights_gib=14.37, kv_cache_gib=112.9, kv_cache_tokens=2114032), tmp_path)
    other = _plan("Qwen/Qwen2.5-7B-Instruct", pins={"max_model_len": 16384})
    assert apply_calibration(other, tmp_path).calibration is None                      # flags differ
    q = apply_calibration(p, tmp_path)
    assert q.calibration["measured"]["kv_cache_gib"] == 112.9
    assert q.calibration["predicted"]["kv_cache_gib"] == predicted_kv
    assert q.memory.kv_cache_gib == 112.9 and q.memory.kv_cache_tokens == 2114032 and q.memory.weights_gib == 14.37
    assert "calibrated" in _codes(q) and any(line.startswith("calibrated:") for line in q.explain)


def test_cli_plan_reads_records_from_the_state_dir(tmp_path):
    p = _plan("Qwen/Qwen2.5-7B-Instruct")
    calibration.append(_record(p, kv_cache_gib=100.5), tmp_path)
    env = {**__import__("os").environ, "VLLM_OPS_STATE_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "vllm_ops", "plan", "-m", "Qwen/Qwen2.5-7B-Instruct", "--gpus", H200,
                        "--vllm-version", V, "--offline", "--json"], capture_output=True, text=True, timeout=120,
                       env=env)
    doc = json.loads(r.stdout)
    assert doc["calibration"]["measured"] == {"kv_cache_gib": 100.5}
    assert doc["memory"]["kv_cache_gib"] == 100.5


# -- per-class accuracy on public startup logs (held-out for the #20 terms) --------------------------
PUBLIC = Path(__file__).resolve().parents[1] / "data" / "reference" / "vllm-memory-calibration.csv"


def _public_row(row_id: str) -> dict:
    return next(r for r in csv.DictReader(open(PUBLIC, encoding="utf-8")) if r["row_id"] == row_id)


def _replay_public(row_id: str):
    from vllm_ops.planning.versions import batch_defaults, rules_for

    r = _public_row(row_id)
    version = re.search(r"(\d+\.\d+(?:\.\d+)?)", r["vllm_version"]).group(1)
    spec = load_model_spec(r["model_id"], offline=True)
    mml = int(r["max_model_len"]) if r["max_model_len"] else spec.max_position_embeddings
    total = float(r["total_gpu_memory_gib"])
    seqs = int(r["max_num_seqs"]) if r["max_num_seqs"] else \
        batch_defaults(rules_for(version), gpu_total_gib=total, max_model_len=mml)[0]
    pins = {"max_model_len": mml, "max_num_seqs": seqs, "gpu_memory_utilization": float(r["gpu_memory_utilization"])}
    if r["dtype"]:
        pins["dtype"] = r["dtype"].split(" ")[0]
    if r["enforce_eager"] == "true":
        pins["enforce_eager"] = True
    p = plan(spec, parse_gpu_spec(f"1x{total}GiB"), pins=pins, vllm_version=version)
    return p, float(r["kv_cache_gib"])


@pytest.mark.parametrize("row_id", ["21", "22", "43"])
def test_public_dtype_and_sliding_window_rows_within_5_percent(row_id):
    # 21/22: --dtype float16 of bf16 checkpoints on a T4 (0.7.2 / 0.6.6); 43: gpt-oss-20b on H100 (0.11.0),
    # MXFP4 experts + sliding-window/full hybrid. In-sample for the shared sampler/non-torch constants
    # (planning/versions.py), held-out for the dtype, MXFP4 and hybrid-layout terms (nothing fitted).
    p, kv = _replay_public(row_id)
    assert p.fits and abs(p.memory.kv_cache_gib - kv) / kv < 0.05, (p.memory.kv_cache_gib, kv)


def test_public_v0_vision_row_is_flagged_not_silent():
    # row 3: Llama-3.2-11B-Vision on the V0 engine: 14.65 GiB KV after a 36.63 GiB multimodal profile
    p, kv = _replay_public("3")
    assert p.memory.kv_cache_gib > 2 * kv
    assert "encoder-profile-not-modelled" in _codes(p)


def test_dynamic_resolution_vision_tower_is_named_not_modelled():
    cfg = {**_cfg("Qwen/Qwen2.5-7B-Instruct"), "architectures": ["Qwen2_5_VLForConditionalGeneration"],
           "model_type": "qwen2_5_vl", "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420,
                                                         "out_hidden_size": 3584, "patch_size": 14,
                                                         "spatial_merge_size": 2, "model_type": "qwen2_5_vl"}}
    spec = spec_from_config(cfg, model_id="qwen25-vl-like")
    assert spec.vision is not None and not spec.vision.sized
    p = _plan(spec)
    assert "encoder-profile-not-modelled" in _codes(p) and p.memory.encoder_profile_gib == 0
    t = _plan(spec, extra=("--limit-mm-per-prompt", '{"image": 0}'))
    assert "encoder-profile-not-modelled" not in _codes(t)
