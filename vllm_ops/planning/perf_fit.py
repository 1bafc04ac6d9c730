"""Fitted efficiencies of the performance model, with the data they were fitted on.

The constants live in ``vllm_ops/data/perf/fit.json``, written by
``python benchmarks/perf_model_accuracy.py --fit --write`` and then ``--fit-harness --write`` (the public rows'
harness latency per request and per prompt token, ``harness_fit``: fitted only on the public rows whose prompts the
prefix cache serves, in every fold that saw them; plans never use it):

* ``efficiency``: fitted on every row of the measurement sets named in ``fitted_on`` (what
  ``vllm-ops plan`` uses); ``not_fitted`` names the measured models no fit reads, and why (they are
  still scored under ``held_out``);
* ``held_out``: one entry per ``"<set>:<model>"``, the efficiencies fitted WITHOUT that model's rows,
  on every other model of BOTH sets (``fitted_on`` names them: leave-one-model-out over the union, so the
  MoE/FP8 constants of one MoE model's fold come from the other MoE model) and the errors they give on
  that model's rows (``figures``: held-out, answered fraction and TPOT/TTFT median and p90 absolute % error).

Measurement sets: ``public`` = tests/data/perf/vllm-perf-public.csv (NVIDIA aiconfigurator vLLM rows),
``gpu`` = tests/data/gpu-runs/h200x1/perf/ (``vllm-ops bench`` runs on an H200). Without the file (or for a
field it lacks) the first-principles defaults below apply, said in the notes.
"""
from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from vllm_ops.planning.perf_step import Efficiency

# ALLREDUCE_US: the latency of one small tensor-parallel all-reduce, published, not fitted: vLLM's custom all-reduce on
# H100 SXM (NVLink), 512 B to 32 KB per call, 8.7-11.8 us at TP 2/4/8, timed without CUDA graphs (so with a kernel
# launch in it): the "vllm" table of sgl-project/sglang pull request #2904 (2025-01-15). Until session 10 it was
# fitted, and only the public rows inform it (our own runs are all on one GPU): the fits ran it to its 30 us bound,
# folds that disagreed pulled it both ways. Chosen from that source; before fixing it the Qwen3-32B fold's held-out
# errors were looked at with 5, 10, 20 and 30 us (20 was the best there and was not taken).
ALLREDUCE_US = 10.0
# API_TOKEN_US: vLLM's API server (a process of its own) hands out a streamed token per 33 us at most, measured, not
# fitted (session 23): Llama-3.2-1B and Qwen2.5-1.5B on one H100 host, vLLM 0.25.0, 128x512 at 128 requests
# (tests/data/gpu-runs/h100x1/api): the API server process used 32 and 34 us of CPU per streamed token while streaming
# 32,700 and 30,400 tokens/s, merging 2.18 and 1.75 tokens into each SSE chunk (vLLM's RequestOutputCollector merges
# a request's pending outputs when the server falls behind the engine), so it was saturated there and that is its
# rate. Two models, one level each, one host: close to a guess, said so. Until session 23 it was 83 us, from one model
# on one H200 host (unseen/l1b, 1024x128 at 64 and 256 requests, 1.04 tokens per chunk): a cap on chunks on a slower
# host, which 8 levels of other models streamed past (the 0.6-1.5B models at 128 requests: 1.2-3.3 tokens per chunk).
# The floor rarely binds now: vLLM's engine host work per running request (cpu_seq_us, fitted) is about as large. The
# other constants were fitted with the 83 us floor in place and are not refitted. The public rows stream through a
# Dynamo frontend instead (through_harness: 0).
API_TOKEN_US = 33.0
# CACHED_PROMPT_US: vLLM's serving path takes this long per prompt token its prefix cache serves, measured, not fitted
# (session 27): Qwen3-8B on one H100, vLLM 0.25.0, one request at a time over 4 prompts (tests/data/gpu-runs/h100x1/
# hitpath/gpu): the median request, a cache hit (992 / 7,984 / 15,984 of its 1,000 / 8,000 / 16,000 prompt tokens
# cached), reached its first token in 20.7 / 33.0 / 45.2 ms where the model said 14.7 / 15.2 / 17.0 ms; least squares
# over the three gaps: 1.48 us per prompt token (and 5 ms at none, left to the fitted request_ms). vLLM's own TTFT
# histogram leaves most of it before the engine's queue (the request's token ids parsed, checked and handed over).
# The fitted prefill constants carry such a latency for the tokens a step computes (they were fitted on prefills); a
# cached token has no compute to carry it. The vLLM CPU build gave 1.4 us (0.32, 2 cores, hitpath/cpu). One model,
# three levels, one host. Held out (hitpath/held, committed before it ran): Llama-3.1-8B-Instruct on one H200, hits at
# 1000-16000 tokens within 20 % (without the term 8-51 % low); that host's slope was 1.1 us, so 16000 tokens came out
# 20 % high. The fitted constants were not refitted with it (our runs with cached prompts moved by 0-1 point).
CACHED_PROMPT_US = 1.5
# --enforce-eager (no CUDA graphs, no torch.compile), measured on 1x H200, vLLM 0.25.0 (tests/data/gpu-runs/h200x1/eager/,
# 2026-12-05): a step takes about as long at 1 as at 32 requests (Qwen3-32B: 51 ms at 1, 8 and 32), so eager steps get a
# floor of EAGER_LAUNCH_US per layer plus EAGER_WEIGHTS_X times the time the step's weights take to read. Fitted (a grid,
# squared log error of the mean TPOT) on the 10 levels of the three dense models run that way: Qwen3-8B (36 layers: 1,
# 16, 64, 128 requests), Mistral-7B-Instruct-v0.3 (32 layers: 1, 8, 32) and Qwen3-32B (64 layers: 1, 8, 32), 1024/128;
# each of them predicted by the fit on the other two: TPOT -19..+14 %, median 9.4 % (benchmarks/perf_model_accuracy.py:
# eager_pairs; without the floor the model was 27-69 % low on them). EAGER_MOE_LAUNCH_US, the extra per MoE layer:
# ONE level of ONE model (the per-GPU share of Qwen3-235B-A22B-FP8 at TP2, 94 layers, 1 request: 134 ms per token) -
# a guess, said in the plan's notes.
EAGER_LAUNCH_US = 325.0
EAGER_WEIGHTS_X = 2.2
EAGER_MOE_LAUNCH_US = 1050.0
# DeepGEMM's MoE grouped GEMM (perf_kernels: vLLM 0.12's default for block-FP8 MoE on Hopper, --moe-backend deep_gemm
# on 0.25) pads its rows to 128 per expert. vLLM 0.25's padding ("routed"): the padding rows cost as rows at
# MOE_PAD_FLOPS of the FP8 peak, added to the GEMMs' time, and its extra kernels MOE_PAD_LAYER_US per MoE layer.
# Fitted (a grid over 0.3-1.0 of the peak and 0-40 us, squared log error of the mean TPOT) on the 8 levels of two
# models run with --moe-backend deep_gemm on 1x H200, vLLM 0.25.0 (tests/data/gpu-runs/h200x1/deepgemm/, 2026-12-05):
# one GPU's share of Qwen3-235B-A22B-FP8 at TP2 (1000x100 at 1, 4, 16; 4000x100 at 8) and Qwen3-30B-A3B-FP8 (1024x128
# at 1, 4, 16, 64). The fit sits at the grid's cap, the FP8 peak (the data would take 1.05: the padding rows counted
# are probably a few too many). Held out: the two runs on 1x H100 (tests/data/gpu-runs/h100x1/deepgemm/, session 21,
# both forms' predictions committed before the runs): TPOT within 11 %, median 4 %. Until session 21 the padding rows
# sat inside the compute term, overlapping the weights' read (0.5 of the peak, 25 us, fitted on the same 8 levels): on
# the H100, whose read is 1.4x slower at the same FP8 peak, that hid most of the padding (held-out TPOT 7-25 % low).
# vLLM 0.12's padding ("all", every local expert at every step) keeps that earlier form and its constants
# (MOE_PAD_ALL_*): NVIDIA's public Qwen3-235B-A22B-FP8 rows (vLLM 0.12, read by no fit) are its test, and the added
# form puts them further off (TPOT median 10.9 -> 13.4 %, p90 21.2 -> 31.5 %); why 0.12 overlaps is not known.
MOE_PAD_FLOPS = 1.0
MOE_PAD_LAYER_US = 15.0
MOE_PAD_ALL_FLOPS = 0.5
MOE_PAD_ALL_LAYER_US = 25.0
# measured apart from the fit (the fit's rows run CUDA graphs and cannot move them): these values win over any stored
MEASURED = {"cached_prompt_us": CACHED_PROMPT_US, "api_token_us": API_TOKEN_US, "eager_launch_us": EAGER_LAUNCH_US,
            "eager_weights_x": EAGER_WEIGHTS_X, "eager_moe_launch_us": EAGER_MOE_LAUNCH_US,
            "moe_pad_flops": MOE_PAD_FLOPS, "moe_pad_layer_us": MOE_PAD_LAYER_US,
            "moe_pad_all_flops": MOE_PAD_ALL_FLOPS, "moe_pad_all_layer_us": MOE_PAD_ALL_LAYER_US}
DEFAULT = Efficiency(bw=0.85, flops=0.6, flops_fp8=0.0, step_ms=1.0, layer_us=35.0, allreduce_us=ALLREDUCE_US,
                     request_ms=20.0, moe_bw=1.0, moe_flops=0.0, moe_layer_us=0.0, eager_layer_us=0.0, **MEASURED)
# Requests that start together drift apart or not, depending on the load generator (a property of the
# harness, not of vLLM), modelled as output lengths spread uniformly over +-spread around the mean:
# * OSL_JITTER (0.1, an assumption, not fitted): clients that drift apart - real traffic, and NVIDIA's public rows
#   (aiperf through a Dynamo frontend): with 0 their TTFT comes out 2-4x high (each wave of c=8 would share one
#   8192-token prefill step), with 0.1 as measured within about 20 %;
# * BENCH_OUTPUT_SPREAD (0): `vllm-ops bench` sends fixed-length requests from one event loop and its waves stay
#   together: vLLM 0.25's per-step log of our Qwen3-30B-A3B run (1x H200, 1024/128, c=128, 512 requests,
#   tests/data/gpu-runs/h200x1/perf/q30bf/engine-steps-c128.txt) shows each wave of 128 prefilled in 16 full
#   8192-token steps, decoded together for ~112 steps and re-formed within a step or two of the last finish.
# The public harness's clients also wait up to Efficiency.harness_jitter_ms before each next request (fitted, session
# 12; through_harness only: plans and our own runs send at once).
OSL_JITTER = 0.1
BENCH_OUTPUT_SPREAD = 0.0


def _eff(d: dict) -> Efficiency:
    names = {f.name for f in fields(Efficiency)}
    base = {f.name: getattr(DEFAULT, f.name) for f in fields(Efficiency)}
    base.update({k: float(v) for k, v in (d or {}).items() if k in names})
    base.update(MEASURED)
    return Efficiency(**base)


def _load(name: str = "fit.json") -> dict:
    try:
        from vllm_ops.resources import data_dir

        return json.loads((data_dir() / "perf" / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


_DOC = _load()
EFFICIENCY = _eff(_DOC.get("efficiency") or {}) if _DOC else DEFAULT
FITTED_ON = ", ".join(_DOC.get("fitted_on") or []) or "nothing: first-principles defaults"
# the models the shipped constants saw (any set): a model outside it is held out from EFFICIENCY itself
FITTED_MODELS = frozenset(k.split(":", 1)[-1] for k in _DOC.get("fitted_on") or [])
HELD_OUT = {k: {"efficiency": _eff(v.get("efficiency") or {}), "fitted_on": list(v.get("fitted_on") or []),
                "figures": dict(v.get("figures") or {})}
            for k, v in (_DOC.get("held_out") or {}).items()}


_ACCURACY = _load("accuracy.json")
_FIGURES = ("tpot_median", "tpot_p90", "ttft_median", "ttft_p90", "rows")
LINE_SETS = ("public", "gpu", "unseen")    # the sets the plan's one line quotes (--json has every set)


def accuracy_for(model_id: str | None) -> dict | None:
    """The errors to expect of a prediction: absolute % errors of the performance model on measured runs
    it was not fitted on (each model predicted with constants fitted without its family), pooled per
    measurement set, plus this model's own held-out figures when it was measured
    (vllm_ops/data/perf/accuracy.json, written by benchmarks/perf_model_accuracy.py). None without the file."""
    sets = _ACCURACY.get("sets") or {}
    if not sets:
        return None
    out: dict = {"kind": "held-out absolute % error (models the constants were not fitted on)",
                 "sets": {k: {"what": v.get("what"), **{f: v.get(f) for f in _FIGURES}} for k, v in sets.items()},
                 "source": "vllm_ops/data/perf/accuracy.json"}
    own = (_ACCURACY.get("models") or {}).get(model_id or "")
    if own:
        out["this_model"] = {k: {f: v.get(f) for f in _FIGURES} for k, v in own.items()}
    return out


def expected_error(metric: str, set_name: str = "unseen") -> float:
    """The held-out median absolute error of ``metric`` ("tpot_ms" / "ttft_ms") on a measurement set of
    accuracy.json, as a fraction (0.0 where the file has none): by default the models in no fit."""
    v = ((_ACCURACY.get("sets") or {}).get(set_name) or {}).get(metric.replace("_ms", "_median"))
    return round(float(v) / 100, 4) if v else 0.0


def accuracy_line(acc: dict | None) -> str | None:
    """One line for the plan's table: the median (p90) errors to expect, per measurement set."""
    if not acc:
        return None
    short = {"public": "NVIDIA's public rows", "gpu": "our H200 runs", "unseen": "models in no fit",
             "ab": "async/sync A/B", "prefill": "one request, 128-30k-token prompts", "eager": "--enforce-eager",
             "deepgemm": "DeepGEMM MoE, H200", "deepgemm_h100": "DeepGEMM MoE, H100", "h100": "our H100 runs"}
    parts = [f"{short[k]} TPOT {v['tpot_median']} % ({v['tpot_p90']} %), TTFT {v['ttft_median']} % "
             f"({v['ttft_p90']} %)" for k, v in acc["sets"].items() if k in LINE_SETS]
    line = "expected error, median (p90), on models not fitted on: " + "; ".join(parts)
    for k, v in (acc.get("this_model") or {}).items():
        tpot = f"TPOT {v['tpot_median']} %, " if v.get("tpot_median") is not None else ""
        line += f"; this model held out ({short.get(k, k)}, {v['rows']} levels): {tpot}TTFT {v['ttft_median']} %"
    return line


# The GPUs of the measured runs the efficiencies were fitted on: NVIDIA's public rows (H100 SXM, H200) and our own runs
# (H200). A plan on another GPU extrapolates them, and says so (gpu_note).
FITTED_GPUS = ("H100-SXM", "H200")
# The one check on a GPU outside them: NVIDIA's per-step table of vLLM 0.20.1 serving Qwen3-32B on B300 at TP 1-8
# (benchmarks/perf_step_fpm.py, tests/data/perf/fpm-b300-qwen3-32b.csv; read by no fit), step model only.
BLACKWELL_STEP_CHECK = ("on Blackwell the step model was checked on NVIDIA's B300 per-step table (Qwen3-32B, TP 1-8, "
                        "vLLM 0.20.1; in no fit): 9.7 % median (p90 20.4 %) per step, a plain roofline 55.7 %; "
                        "TTFT and TPOT of a serving run on this GPU generation are not measured")


# What a MoE plan at attention data parallelism should expect of its TTFT: NVIDIA's public Qwen3-235B-A22B-FP8 rows at
# --data-parallel-size 2-4 (vLLM 0.12, 2-4x H200; tests/data/perf/vllm-perf-public.csv, in no fit: NOT_FITTED), measured
# over predicted by the shipped constants (tests/unit/test_perf_lockstep.py recomputes every figure). At 100-token
# outputs the model holds; at 500-2000 most rows took several times as long to their first token, for a reason not
# found (the KV capacity and the lock-step were ruled out). Said in such a plan's caveats, not corrected.
DP_MOE_TTFT_CHECK = {"short_rows": 8, "short_x": (0.95, 1.34), "long_rows": 11, "long_slow": 8,
                     "long_slow_x": (2.1, 7.4), "long_near_x": (1.02, 1.2), "tpot_pct": (-31.0, 5.5)}


def dp_moe_note() -> str:
    """The note a MoE plan at attention data parallelism carries (DP_MOE_TTFT_CHECK)."""
    d = DP_MOE_TTFT_CHECK
    return (f"TTFT at data parallelism, checked on NVIDIA's public Qwen3-235B-A22B-FP8 rows (DP 2-4, vLLM 0.12, H200; in "
            f"no fit): with 100-token outputs measured {d['short_x'][0]:g}-{d['short_x'][1]:g}x this model's "
            f"({d['short_rows']} rows), with 500-2000-token outputs {d['long_slow_x'][0]:g}-{d['long_slow_x'][1]:g}x in "
            f"{d['long_slow']} of {d['long_rows']} rows (the other {d['long_rows'] - d['long_slow']}: "
            f"{d['long_near_x'][0]:g}-{d['long_near_x'][1]:g}x), cause not modelled: read a DP plan's TTFT for long "
            f"outputs as a lower bound (TPOT of all {d['short_rows'] + d['long_rows']} rows predicted "
            f"{d['tpot_pct'][0]:+.1f}..{d['tpot_pct'][1]:+.1f} %)")


# What a plan on vLLM 0.25's DeepGEMM MoE path (--moe-backend deep_gemm) should expect of its TTFT: our five such runs
# (tests/data/gpu-runs/h200x1/deepgemm/, h100x1/deepgemm/ and, since session 27, h200x1/dgheld/: 25 levels,
# 1000-1024-token prompts, one 4000), measured
# over predicted by the shipped constants (tests/unit/test_gpu_warmup_runs.py recomputes every figure). At 1-4
# requests the first token came up to 3x later than predicted: vLLM's own prefill time of a lone 1,000-token prompt was
# 1.6-2.5 ms per layer on the narrow-expert models (Qwen3-30B-A3B-FP8, the 235B's TP2 share; Triton's runs of
# Qwen3-30B-A3B-FP8 miss the same way, h200x1/perf/q30fp8: 54.9 ms measured, 17.7 predicted) where the FLOPs take a
# fraction of a ms, and as predicted on the 1536-wide 20-layer cut; the cause is not modelled. At 8-64 requests within
# 0.59-1.35x (the 40-layer cut on the H200, session 27: 0.59-0.67x, the model high). Said in such a plan's caveats, not
# corrected (five runs).
DEEPGEMM_TTFT_CHECK = {"low_levels": 12, "low_slow": 7, "low_x": (0.85, 3.08), "high_levels": 13, "high_x": (0.59, 1.35)}


def deepgemm_ttft_note() -> str:
    """The caveat of a plan whose MoE runs vLLM 0.25's padded DeepGEMM path (DEEPGEMM_TTFT_CHECK)."""
    d = DEEPGEMM_TTFT_CHECK
    return (f"TTFT on DeepGEMM's MoE path, checked on our runs with --moe-backend deep_gemm (vLLM 0.25, 1x H200 and 1x "
            f"H100; not fitted to TTFT): at 1-4 requests measured {d['low_x'][0]:g}-{d['low_x'][1]:g}x this model's "
            f"({d['low_slow']} of {d['low_levels']} levels 1.3x or more: the prefill of narrow experts is under-predicted, "
            f"on Triton's kernel too), at 8-64 requests {d['high_x'][0]:g}-{d['high_x'][1]:g}x "
            f"({d['high_levels']} levels): read a low-load TTFT as a lower bound")


# A lone prompt's TTFT on fine-grained MoE models (64 routed experts or more): every single-request level of our runs of
# such models (1,000-1,024-token prompts; Triton and DeepGEMM kernels, 1x H200 and 1x H100, vLLM 0.25: the perf, unseen,
# sched, deepgemm and h100 sets), measured minus predicted by the constants that never saw the model's family, per MoE
# layer. Session 22's Triton run on the H100 (h100x1/perf/q30t, 0.87 ms per layer) fell inside the range it was given.
# Dense models' lone prompts land within DENSE_MS_PER_LAYER (every dense single-request level of the same sets); the
# one coarse MoE model (Mixtral-8x7B, 8 experts) came out high. vLLM's own prefill time says the engine spends it
# (tests/unit/test_gpu_warmup_runs.py recomputes every figure). Said in such a plan's caveats, not corrected: the
# cause (small per-expert GEMMs, kernel configurations) is not identified.
MOE_PREFILL_CHECK = {"levels": 9, "models": 5, "ms_per_layer": (0.34, 1.67), "dense_levels": 17,
                     "dense_ms_per_layer": (-0.52, 0.43), "min_experts": 64}


def moe_prefill_note(moe_layers: int) -> str:
    """The caveat of a plan for a fine-grained MoE model (MOE_PREFILL_CHECK)."""
    d = MOE_PREFILL_CHECK
    lo, hi = d["ms_per_layer"]
    return (f"TTFT at low load on a fine-grained MoE model: a lone 1,000-token prompt took {lo:g}-{hi:g} ms per MoE "
            f"layer longer than this model predicts on every such run we measured ({d['levels']} levels, "
            f"{d['models']} models, held out; dense models: {d['dense_ms_per_layer'][0]:+g}..{d['dense_ms_per_layer'][1]:+g} ms "
            f"per layer), here {lo * moe_layers:.0f}-{hi * moe_layers:.0f} ms over {moe_layers} MoE layers: read a "
            f"low-load TTFT as a lower bound")


# TPOT at high load on a small dense model: every level of our runs (the perf, unseen, sched and h100 sets: vLLM 0.25,
# 1x H200 and 1x H100) of a dense model holding at most 20 GiB of weights per GPU with 64 requests or more running,
# predicted by the constants that never saw the model's family, over measured (tests/unit/test_gpu_h100_runs.py
# recomputes every figure). Session 22 (API_TOKEN_US 83 us): 0.94-2.28x, median 1.21x, 23 of 27 at 1.1x or more.
# Session 23 (33 us, re-measured): 0.72-1.71x, median 1.12x, 16 at 1.1x or more: still high up to 1.7x where 8192-token
# prefill steps share the decode (the small-GEMM fall, gemm_w_half, fitted on 1024-token prefills, is applied to
# them; measured lone on 1x H100, tests/data/gpu-runs/h100x1/prefill: such prefills costed 1.5-1.6x high on
# Qwen2.5-1.5B from 4096 tokens on, 1.2-1.3x on Qwen3-8B at every length), now low on Llama-3.2-1B's H200 host
# (0.72-0.82x at 64 and 256 requests: that host's API server streamed at about 83 us per token, the H100 host's at
# 33), so how fast vLLM's API server streams depends on the host. Said in such a plan's caveats, not corrected.
HIGH_LOAD_CHECK = {"levels": 27, "models": 9, "x": (0.72, 1.71), "median_x": 1.12, "high": 16, "max_weight_gib": 20.0,
                   "min_running": 64}


def high_load_note() -> str:
    """The caveat of a plan for a small dense model at high load (HIGH_LOAD_CHECK)."""
    d = HIGH_LOAD_CHECK
    return (f"TPOT at {d['min_running']}+ running requests on a dense model of at most {d['max_weight_gib']:g} GiB per "
            f"GPU: on every such level we measured ({d['levels']} levels, {d['models']} models, held out) this model "
            f"predicted {d['x'][0]:g}-{d['x'][1]:g}x the measured TPOT (median {d['median_x']:g}x, {d['high']} of them "
            f"1.1x or more, high where long prefill steps share the decode; low where the host streams slowly): "
            f"read TPOT and throughput as within that range")


# The KV cache's edge: vLLM allocates blocks as requests grow and preempts (recomputes) when they run out; the
# scheduler simulation counts each running request at its whole length (input + output) or, from vLLM 0.25 on, at its
# mean length (input + output/2) (versions.py kv_reserve, perf_sim.reserved_tokens). Measured past the whole-length
# edge, Qwen3-8B on 1x H100, vLLM 0.25.0, the cache pinned to 315,296 tokens (tests/data/gpu-runs/h100x1/capacity):
# 64 x 4096/1024 (104 % of the cache at full length: all 64 ran, 18 of 384 requests preempted), 64 x 4096/2048 (125 %,
# predicted before the run with the whole-length rule: TTFT 10.1 s where 3.3 s was measured; 43 of 192 preempted,
# 46-64 running) and 128 x 4096/512 (187 %: 41 preempted). The whole-length rule's TTFT was 0.57x / 0.32x / 0.94x
# the measured, TPOT 1.08x / 1.22x / 1.07x; counted at the mean length, TTFT 0.92x / 0.84x / 1.01x and TPOT 1.04x /
# 1.08x / 1.02x (``mean_rule``; in-sample: the rule was chosen on these three runs, no constant fitted). NVIDIA's
# public vLLM 0.12 rows past that edge (Qwen3-32B TP 2 on H100; held out) went the other way: at 104 % TTFT 1.49x
# and TPOT 1.25x the whole-length prediction, and the mean-length rule puts the four such rows further off (TTFT p90
# of the public rows 51.1 -> 52.8 %), so releases before 0.25 keep the whole-length rule and their plans name the
# band where the two rules differ (``ttft_x``/``tpot_x``: the vLLM 0.25 run and the 0.12 row at ``fill``). Below the
# edge (86 %, 94 %: no preemption) both rules are one. Held out (``mean_rule["held"]``: two shapes the rule was not
# chosen on, predicted and committed before the run, 1x H100, session 26): 128 x 2048/1024 and 96 x 2048/2048, both
# 125 % of the cache at full length (58 and 38 preemptions): TTFT 0.97x / 1.13x and TPOT 1.07x / 1.07x the mean
# rule's prediction; the whole-length rule's TTFT was 2.1x / 4.3x the measured. tests/unit/test_gpu_capacity_edge.py
# recomputes every figure.
KV_EDGE_CHECK = {"ttft_x": (0.57, 1.49), "tpot_x": (1.08, 1.25), "fill": 1.04,
                 "mean_rule": {"fills": (1.04, 1.25, 1.87), "ttft_x": (0.84, 1.01), "tpot_x": (1.02, 1.08),
                               "held": {"fills": (1.25, 1.25), "ttft_x": (0.97, 1.13), "tpot_x": (1.07, 1.07)}}}


def _x_range(lo: float, hi: float) -> str:
    return f"{lo:g}x" if lo == hi else f"{lo:g}-{hi:g}x"


def kv_edge_note(fill: float, kv_reserve: str = "whole") -> str:
    """The caveat of a plan whose requests do not fit the KV cache at their whole length (KV_EDGE_CHECK)."""
    d = KV_EDGE_CHECK
    if kv_reserve == "mean":
        m = d["mean_rule"]
        h = m["held"]
        fills = "/".join(f"{f:.0%}" for f in m["fills"])
        return (f"past the KV cache's edge ({fill:.0%} of it at full length): vLLM runs more requests than fit whole "
                f"and preempts, and the model counts each at its mean length (input + output/2); measured on vLLM "
                f"0.25 at {fills} of the cache, TTFT came out {_x_range(*m['ttft_x'])} and TPOT "
                f"{_x_range(*m['tpot_x'])} this rule's prediction (the runs the rule was chosen on), and held out "
                f"at {h['fills'][0]:.0%} TTFT {_x_range(*h['ttft_x'])}, TPOT {_x_range(*h['tpot_x'])}; "
                f"preemption's recompute is not modelled")
    return (f"at the KV cache's edge ({fill:.0%} of it at full length): the model runs only the requests whose whole "
            f"length fits, vLLM runs more and preempts; measured at {d['fill']:.0%} (vLLM 0.25, our run; vLLM 0.12, "
            f"NVIDIA's row) TTFT came out {_x_range(*d['ttft_x'])} and TPOT {_x_range(*d['tpot_x'])} this "
            f"prediction: read them as within that range")


def gpu_note(key: str, compute_capability: Any) -> str | None:
    """What a plan on GPU ``key`` should know of the efficiencies' reach (None on the GPUs they were fitted on)."""
    if key in FITTED_GPUS:
        return None
    line = (f"efficiencies fitted on {' and '.join(FITTED_GPUS)} runs only: on {key} the prediction extrapolates "
            f"them")
    major = int((compute_capability or [0])[0])
    return f"{line}; {BLACKWELL_STEP_CHECK}" if major == 10 else f"{line} (no measurement on this GPU)"


def notes() -> list[str]:
    e = EFFICIENCY
    return [f"fitted efficiencies: {e.bw:.2f} of HBM bandwidth, {e.flops:.2f} of dense 16-bit FLOP/s, "
            f"{(e.flops_fp8 or e.flops):.2f} of FP8 FLOP/s"
            f"{f' (large GEMMs; x w/(w+{e.gemm_w_half:.0f}) for w million weights per GPU in a layer MLP)' if e.gemm_w_half else ''}, "
            f"{e.step_ms:.2f} ms per step + {e.layer_us:.0f} us per "
            f"layer, {e.request_ms:.0f} ms per request "
            f"(fused MoE: x{e.moe_bw:.2f} bandwidth, "
            f"{f'{e.moe_flops:.2f} of FLOP/s' if e.moe_flops else 'dense GEMM FLOP/s'}"
            f"{f' x w/(w+{e.moe_f_half:.0f}) for experts w wide' if e.moe_f_half else ''}, +{e.moe_layer_us:.0f} us per "
            f"MoE layer), vLLM's host work {e.cpu_step_ms:.2f} ms per step + {e.cpu_seq_us:.0f} us per request, "
            f"its API server {e.api_request_ms:.2f} ms per request admitted; fitted on {FITTED_ON} "
            f"(vllm_ops/data/perf/fit.json); not fitted: {e.allreduce_us:.0f} us per all-reduce (published), "
            f"{e.api_token_us:.0f} us per streamed token (measured on two models, one host)"]


def eager_note(moe: bool) -> str:
    """The plan's note for --enforce-eager: the step floor and what it was measured on."""
    e = EFFICIENCY
    return (f"--enforce-eager: no CUDA graphs, so each step takes at least {e.eager_launch_us:.0f} us per layer"
            + (f" (+{e.eager_moe_launch_us:.0f} us per MoE layer)" if moe else "")
            + f" + {e.eager_weights_x:.1f}x the time its weights take to read (measured on three dense models, "
            f"1x H200, vLLM 0.25; each held out: TPOT -19..+14 %"
            + ("; the MoE part from one level of one model: a guess)" if moe else ")"))
