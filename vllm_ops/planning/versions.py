"""What changes with the vLLM version: ONE table of rules the memory model and the planner read.

Each :class:`Rule` row applies from ``since`` (inclusive) until the next row of the same ``key``.
``rules_for("0.25.0")`` folds the table into a :class:`VersionRules` for one version, and records
every rule it used (with its source) so the plan can say what it assumed.

Sources: vLLM 0.33.0's source (``vllm/engine/arg_utils.py`` ``EngineArgs.get_batch_defaults``,
``vllm/v1/worker/gpu_worker.py``), the measured vLLM 0.25.0 H100 runs
(``tests/data/reference/vllm-h100-runs.csv``) and the public startup logs in
``tests/data/reference/vllm-memory-calibration.csv`` (row numbers below).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_VLLM_VERSION = "0.33.0"


@dataclass(frozen=True)
class Rule:
    key: str
    since: str                # first version the value applies to
    value: Any
    why: str


# key                              since     value                     why
RULES: tuple[Rule, ...] = (
    # -- engine / model runner --------------------------------------------------------------
    Rule("engine", "0.0.0", "V0", "V0 engine (vLLM < 0.8)"),
    Rule("engine", "0.8.0", "V1", "V1 engine is the default from v0.8.0"),
    # model runner used for dense (non-MoE) models; MoE models stayed on the V1 runner (measured 0.25.0)
    Rule("dense_runner", "0.0.0", "v1", "dense models on the V1 GPU model runner"),
    Rule("dense_runner", "0.25.0", "v2",
         "dense models on Model Runner V2 (measured on 0.25.0: 'Using V2 Model Runner'; default in 0.33)"),
    Rule("moe_runner", "0.0.0", "v1", "MoE models on the V1 GPU model runner (measured on 0.25.0)"),
    Rule("async_scheduling", "0.0.0", False,
         "synchronous scheduling by default (SchedulerConfig.async_scheduling = False in 0.12.0 and 0.13.0)"),
    Rule("async_scheduling", "0.14.0", True,
         "async scheduling on by default from v0.14.0 (SchedulerConfig.async_scheduling = None: on unless "
         "incompatible; PR #27614): lower TPOT, higher TTFT under load (measured on 1x H200, vLLM 0.25.0: "
         "GPU-TESTING-GUIDE.md 4c')"),
    # -- kernels the performance model costs differently ---------------------------------------
    # block-FP8 (128x128) MoE layers on Hopper (SM 9.0): which grouped GEMM vLLM runs them with
    Rule("fp8_block_moe_hopper", "0.0.0", "triton",
         "block-FP8 MoE on Hopper: Triton fused MoE (DeepGEMM opt-in)"),
    Rule("fp8_block_moe_hopper", "0.12.0", "deep_gemm_padded",
         "block-FP8 MoE on Hopper runs DeepGEMM's contiguous grouped GEMM at every batch size wherever DeepGEMM is "
         "installed (vLLM's Docker image): VLLM_USE_DEEP_GEMM / VLLM_MOE_USE_DEEP_GEMM default 1 and E8M0 scales on "
         "Hopper (PR #26197) leave no Triton fallback for small batches; TP 8 excepted (PR #29346); its rows padded "
         "to 128 per local expert whatever the batch (compute_aligned_M = tokens x top-k + local experts x 127); "
         "0.13 assumed the same, 0.11.1 likely (not checked)"),
    Rule("fp8_block_moe_hopper", "0.14.0", "unchecked",
         "block-FP8 MoE on Hopper: vLLM's MoE oracle picks the kernel (FlashInfer CUTLASS where installed in "
         "0.15, vllm#34249; Triton first for TP by 0.25); which one in 0.14-0.24 is not checked: costed as Triton"),
    Rule("fp8_block_moe_hopper", "0.25.0", "triton",
         "block-FP8 MoE on Hopper: Triton for TP ('Using TRITON Fp8 MoE backend', measured on 0.25.0); "
         "--moe-backend deep_gemm pads its rows to 128 per expert a token routes to (measured)"),
    # -- defaults -------------------------------------------------------------------------
    Rule("gpu_memory_utilization", "0.0.0", 0.9, "default --gpu-memory-utilization 0.9"),
    Rule("gpu_memory_utilization", "0.21.0", 0.92,
         "default --gpu-memory-utilization 0.92 from v0.21.0 (PR #38284, with CUDA-graph memory profiling)"),
    # V0: 256 seqs; batched tokens = max(max_model_len, 2048) unless chunked prefill (auto on > 32K)
    Rule("batch_defaults", "0.0.0", "v0",
         "V0 defaults: max_num_seqs 256; max_num_batched_tokens = max(max_model_len, 2048) without "
         "chunked prefill (auto-enabled above 32K tokens, then 2048)"),
    Rule("batch_defaults", "0.8.0", "hw",
         "V1 hardware defaults (EngineArgs.get_batch_defaults): >=160 GiB 1024/16384; >=70 GiB and not "
         "A100/GB10 1024/8192; others 256/2048"),
    # -- memory accounting ------------------------------------------------------------------
    # non-torch memory growth during the profile at TP=1 (NCCL/cuBLAS workspaces, attention buffers)
    Rule("non_torch_tp1_gib", "0.0.0", 0.10, "non-torch growth ~0.1 GiB at TP1 (V0 logs, rows 21-32)"),
    Rule("non_torch_tp1_gib", "0.8.0", 0.13, "non-torch growth 0.13 GiB at TP1 (V1 v0.11 H100 logs, rows 43-48)"),
    Rule("non_torch_tp1_gib", "0.25.0", 0.22, "non-torch growth 0.22 GiB at TP1 (measured, H100 v0.25.0)"),
    # growth with the world size: a step at TP2 (communicators: NCCL, custom all-reduce buffers), then
    # a smaller step per further doubling
    Rule("non_torch_first_tp_doubling_gib", "0.0.0", 0.19,
         "non-torch grows ~0.19 GiB per doubling of TP (0.22 at TP1 -> 0.6 at TP4, vllm PR #48601 log)"),
    Rule("non_torch_first_tp_doubling_gib", "0.25.0", 0.32,
         "non-torch +0.32 GiB at TP2 (measured 0.54 GiB on 2x H200, Llama-3.1-70B TP2, vLLM 0.25.0; 0.22 at TP1)"),
    Rule("non_torch_per_tp_doubling_gib", "0.0.0", 0.19,
         "non-torch grows ~0.19 GiB per doubling of TP (0.22 at TP1 -> 0.6 at TP4, vllm PR #48601 log)"),
    Rule("non_torch_per_tp_doubling_gib", "0.25.0", 0.06,
         "non-torch +0.06 GiB per doubling of TP beyond TP2 (0.54 at TP2 on 0.25.0 -> 0.6 at TP4, vllm PR "
         "#48601's Model Runner V2 log)"),
    # sampler term in the profiled activation peak, in fp32 (num_reqs x vocab) copies
    Rule("sampler_copies_v1_runner", "0.0.0", 9.6,
         "V0/V1-runner sampler profile: peak ~9.6 fp32 copies of num_reqs x vocab logits (sort values+int64 "
         "indices, probs, masks, penalties; fits rows 1,22,23,31,43,47,48)"),
    Rule("sampler_copies_v1_runner", "0.12.0", 2.9,
         "V1-runner sampler profile ~2.9 fp32 copies of num_reqs x vocab (0.17.1 rows 53/58: activation + "
         "non-torch 0.52 GiB at 256 seqs; changed between 0.11.0 and 0.17.1, assumed from 0.12.0)"),
    # Model Runner V2 profile peak = max(dummy forward, dummy sampler run) + a little sampler state that
    # is live through both. Every V2 point (vLLM 0.25.0 unless said), measured -> this fit:
    #   Qwen2.5-7B   TP1 1024 seqs / 8192 tok  1.13 GiB (H100; 2x H200 box twice)  -> 1.14 (fwd 1.01 + 0.12)
    #   Qwen2.5-7B   TP1  128 / 8192           1.13     (H100 d1)                  -> 1.03 (-9%)
    #   Llama-3.1-8B TP1 1024 / 8192           1.10     (H100 d3)                  -> 0.93 (-16%)
    #   Llama-3.1-70B TP2 1024 / 8192          1.16     (H200, per GPU)            -> 1.10 (-6%)
    #   Qwen2.5-7B   TP2 1024 / 8192 (Ray)     0.97     (budget - weights - KV - 0.54 non-torch) -> 0.96
    #   Qwen3.6-27B-FP8 TP4 1024 / 8192 (0.2x) 1.54     (vllm PR #48601, vocab 248,320)      -> 1.56
    #   Qwen2.5-Coder-7B emulated L4, 256 vs 128 seqs: 256 has ~1% less KV (seed run)    -> 0.4%
    # The data disagree on the additive sampler term: the Qwen2.5-7B pair (1.13 GiB at both 128 and
    # 1024 seqs) allows ~0, the emulated-L4 pair wants ~0.6 fp32 num_reqs x vocab copies. 0.21 is the
    # compromise that keeps both within their checks; the forward's hidden-size copies (2.7) are then
    # fitted so the Qwen 1024-seq runs (3 of the 6 runs, the 1-GiB-KV H100 among them) land within 1%.
    # All three checks sit near their edges (d1 1.03 vs 1.13 +-0.1; L4 0.4% vs >=0.3%; H100 18,528 tokens
    # vs 18,432 needed): a DEBUG-level emulated-L4 run would settle the additive term.
    # The sampler run shows only where the per-rank forward is small (TP2/TP4): 1.44 + 0.21 copies.
    Rule("forward_hidden_copies_v2_runner", "0.0.0", 2.7,
         "Model Runner V2 forward peak per token = 3 x intermediate/TP + 2.7 x hidden (fitted to the 0.25.0 "
         "Qwen2.5-7B runs at 1024 seqs / 8192 tokens: 1.13 GiB on H100 and H200)"),
    Rule("sampler_copies_v2_runner", "0.0.0", 1.44,
         "Model Runner V2 dummy sampler run peaks at ~1.44 fp32 num_reqs x vocab copies after the forward's "
         "temporaries are freed: activation = max(forward, sampler) + sampler state (Qwen2.5-7B TP2 0.97 GiB, "
         "Qwen3.6-27B TP4 1.54 GiB at 1024 seqs)"),
    Rule("sampler_profiled_copies_v2_runner", "0.0.0", 0.21,
         "Model Runner V2: ~0.21 fp32 num_reqs x vocab copies of sampler state live through the whole profile "
         "(emulated L4: 256 seqs ~1% less KV than 128; Qwen2.5-7B: 1.13 GiB at both 128 and 1024 seqs)"),
    # CUDA graphs
    Rule("cudagraph_in_budget", "0.0.0", False,
         "CUDA graphs are captured after KV sizing and sit outside the gpu-memory-utilization budget"),
    Rule("cudagraph_in_budget", "0.21.0", True,
         "V1 runner subtracts a CUDA-graph estimate from the budget (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1, "
         "default since v0.21.0); Model Runner V2 estimated 0 on 0.25.0 (graphs outside the budget)"),
    Rule("cudagraph_max_capture", "0.0.0", "min(max_num_seqs,256)", "V0 captures batch sizes up to 256"),
    Rule("cudagraph_max_capture", "0.8.0", "min(2*max_num_seqs,512)",
         "V1 captures sizes up to min(2 x max_num_seqs, 512)"),
    # sampler warm-up after the KV cache is allocated needs more than was profiled
    Rule("kv_cache_dtype_auto_from_checkpoint", "0.0.0", False,
         "--kv-cache-dtype auto is the model dtype even when the checkpoint names an FP8 KV cache"),
    Rule("kv_cache_dtype_auto_from_checkpoint", "0.13.0", True,
         "--kv-cache-dtype auto follows a checkpoint's kv_cache_quant_algo FP8 (ModelOpt hf_quant_config.json) "
         "or kv_cache_scheme (vLLM PR #30785, merged 2025-12-16; first release assumed 0.13.0)"),
    # what "GPU KV cache size: N tokens" reports (kv_cache_tokens); equal for one KV cache group, not for hybrid models
    Rule("kv_tokens_report", "0.0.0", "blocks_per_group",
         "'GPU KV cache size' = num_blocks // KV cache groups x block size (kv_cache_utils; vllm issue #40691 shows it "
         "on 0.19.0)"),
    Rule("kv_tokens_report", "0.25.0", "concurrency_x_len",
         "'GPU KV cache size' = int(max concurrency x max_model_len) (vllm PRs #38364/#40694; measured on 0.25.0: "
         "gemma-3-27b-it 693,059 tokens = 5.29x x 131,072; first release between 0.20 and 0.25 not known, 0.25.0 assumed)"),
    # how many requests the scheduler runs once they no longer fit the KV cache at their whole length (perf_sim)
    Rule("kv_reserve", "0.0.0", "whole",
         "a request runs when the KV cache holds its whole length (input + output): NVIDIA's public vLLM 0.12 rows "
         "past that edge (Qwen3-32B TP 2 on H100) ran as slow or slower (perf_fit.KV_EDGE_CHECK)"),
    Rule("kv_reserve", "0.25.0", "mean",
         "vLLM allocates blocks as requests grow and preempts when they run out: measured on 0.25.0 past the "
         "whole-length edge (104/125/187 % of the cache), requests ran as if each held its mean length "
         "(input + output/2) (tests/data/gpu-runs/h100x1/capacity; first release between 0.13 and 0.25 not known, "
         "0.25.0 assumed)"),
    Rule("warmup_unprofiled_copies", "0.0.0", 0.0,
         "the sampler peak is fully profiled before the KV cache is sized"),
    Rule("warmup_unprofiled_copies", "0.12.0", 6.7,
         "the post-KV sampler warm-up allocates ~6.7 fp32 num_reqs x vocab copies beyond the profiled peak, "
         "out of the memory left outside the budget (rows 53/54: RTX 3090 v0.17.1, identical flags once OK, "
         "once OOM in 'sampler warm-up (256 dummy requests)')"),
    Rule("warmup_unprofiled_copies", "0.21.0", 0.0,
         "the sampler warm-up is covered by the profile (and graphs are estimated), so it only shrinks the "
         "KV cache"),
)


# -- releases this table knows ------------------------------------------------------------------
# Every `vllm` release on PyPI from 0.6.5 (the first release with the memory profiling these rules
# model: vllm PR #10511; the calibration logs start there) to 0.33.0 (the release whose source the
# table was read from), as `pip index versions vllm` listed them on 2026-12-03. Later releases
# (0.34.0 was published by then) and earlier ones are refused, not guessed: add a release here only
# with the rule rows it changes.
KNOWN_RELEASES: tuple[str, ...] = (
    "0.6.5", "0.6.6", "0.6.6.post1", "0.7.0", "0.7.1", "0.7.2", "0.7.3",
    "0.8.0", "0.8.1", "0.8.2", "0.8.3", "0.8.4", "0.8.5", "0.8.5.post1",
    "0.9.0", "0.9.0.1", "0.9.1", "0.9.2", "0.10.0", "0.10.1", "0.10.1.1", "0.10.2",
    "0.11.0", "0.11.1", "0.11.2", "0.12.0", "0.13.0", "0.14.0", "0.14.1", "0.15.0", "0.15.1", "0.16.0",
    "0.17.0", "0.17.1", "0.18.0", "0.18.1", "0.19.0", "0.19.1", "0.20.0", "0.20.1", "0.20.2",
    "0.21.0", "0.22.0", "0.22.1", "0.23.0", "0.24.0", "0.25.0", "0.25.1", "0.26.0", "0.27.0", "0.27.1",
    "0.28.0", "0.29.0", "0.30.0", "0.31.0", "0.32.0", "0.33.0",
)


# -- what a deployment passes or sends that a release removed --------------------------------------
@dataclass(frozen=True)
class FlagRemoval:
    flag: str              # as written on the command line
    removed_in: str        # first release that rejects it ("unrecognized arguments")
    values: int            # how many values follow it
    pr: str                # the vLLM pull request that removed it
    source: str            # release notes / public reports that date it
    fix: str


REMOVED_FLAGS: tuple[FlagRemoval, ...] = (
    FlagRemoval("--swap-space", "0.18.0", 1, "PR #36216",
                "vllm PR #36216 (2026-03-06); present in 0.17.1, absent from 0.18.0 on (unslothai/unsloth-zoo "
                "issue #1210 read EngineArgs of every release 0.15.0-0.29.0)",
                "V1 never swaps to CPU (preemption recomputes); drop it"),
    FlagRemoval("--disable-log-requests", "0.17.0", 0, "PR #35723",
                "vllm PR #35723 (Mar 2026; deprecated since PR #21739, Aug 2025); llm-d/llm-d-benchmark PR #781: "
                "'removed from vLLM 0.17.0'",
                "request logging is off by default now; drop it (--enable-log-requests turns it on)"),
    FlagRemoval("--guided-decoding-backend", "0.12.0", 1, "PR #29326", "vllm PR #29326 (v0.12.0 release notes)",
                "use --structured-outputs-config '{\"backend\": \"...\"}'"),
    FlagRemoval("--guided-decoding-disable-fallback", "0.12.0", 0, "PR #29326",
                "vllm PR #29326 (v0.12.0 release notes)", "use --structured-outputs-config"),
    FlagRemoval("--guided-decoding-disable-any-whitespace", "0.12.0", 0, "PR #29326",
                "vllm PR #29326 (v0.12.0 release notes)", "use --structured-outputs-config"),
    FlagRemoval("--guided-decoding-disable-additional-properties", "0.12.0", 0, "PR #29326",
                "vllm PR #29326 (v0.12.0 release notes)", "use --structured-outputs-config"),
)


@dataclass(frozen=True)
class RequestChange:
    fields: tuple[str, ...]   # request fields (or metric names) that changed
    since: str                # first release with the change
    what: str
    source: str
    fix: str
    client: str               # what the bundled client (vllm_ops.client) does about it
    removed: bool = True      # False: deprecated only (still honoured)


REQUEST_CHANGES: tuple[RequestChange, ...] = (
    RequestChange(("guided_json", "guided_regex", "guided_choice", "guided_grammar"), "0.11.0",
                  "the `structured_outputs` object replaces the top-level guided_* fields (deprecated)",
                  "vllm PR #22772 (v0.11.0)", "send structured_outputs.{json,regex,choice,grammar}",
                  "sends structured_outputs to >= 0.11.0 and guided_* to older servers (by GET /version)",
                  removed=False),
    RequestChange(("guided_json", "guided_regex", "guided_choice", "guided_grammar",
                   "guided_whitespace_pattern", "guided_decoding_backend"), "0.12.0",
                  "guided_* request fields removed: the server answers 200 with UNCONSTRAINED output",
                  "vllm PR #29326 (v0.12.0 release notes)",
                  "callers that send guided_* themselves must send structured_outputs (or response_format)",
                  "never sends guided_* to >= 0.11.0"),
    RequestChange(("best_of",), "0.12.0", "best_of removed: silently ignored (one choice comes back)",
                  "vllm PR #29090 (v0.12.0 release notes)",
                  "use n=K, or use_beam_search=true with n as the beam width",
                  "refuses best_of without beam search against >= 0.12.0 (InvalidRequestError)"),
    RequestChange(("vllm:gpu_cache_usage_perc", "vllm:gpu_prefix_cache_queries", "vllm:gpu_prefix_cache_hits"),
                  "0.12.0", "metrics renamed (dashboards and alerts reading them go blank)",
                  "vllm PR #29330 (v0.12.0 release notes)",
                  "read vllm:kv_cache_usage_perc and vllm:prefix_cache_{queries,hits}_total",
                  "reads vllm:kv_cache_usage_perc"),
)

# version-table keys that are vLLM defaults a deployment can pin: key -> the flags that pin it
# (no flags: no vLLM flag overrides it here; the planner models its effect)
DEFAULT_KEYS: dict[str, tuple[str, ...]] = {
    "gpu_memory_utilization": ("gpu_memory_utilization",),
    "batch_defaults": ("max_num_seqs", "max_num_batched_tokens"),
    "engine": (),
    "dense_runner": (),
    "moe_runner": (),
    "cudagraph_in_budget": (),
    "cudagraph_max_capture": (),
    "async_scheduling": ("async_scheduling",),
    "fp8_block_moe_hopper": (),
}


def parse_version(v: str) -> tuple[int, ...]:
    """"0.25.0" / "v0.7.3" / "0.6.6.post1" / "~0.11" → (0, 25, 0)."""
    s = str(v).strip().lstrip("~v")
    out: list[int] = []
    for part in s.split("."):
        num = ""
        for ch in part:
            if ch.isdigit():
                num += ch
            else:
                break
        if not num:
            break
        out.append(int(num))
        if len(out) == 3:
            break
    if not out:
        from vllm_ops.errors import BadInput

        raise BadInput(f"bad vLLM version {v!r}", hint="like 0.33.0")
    while len(out) < 3:
        out.append(0)
    return tuple(out)


@dataclass
class VersionRules:
    version: str
    values: dict[str, Any] = field(default_factory=dict)
    used: dict[str, str] = field(default_factory=dict)     # key -> why

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def assumptions(self) -> list[str]:
        """What the plan assumed of this release; kernel rules only the performance model reads are said in its
        notes where they apply (PERF_ONLY_KEYS), not in every plan."""
        return [f"vLLM {self.version}: {why}" for key, why in self.used.items() if key not in PERF_ONLY_KEYS]


PERF_ONLY_KEYS = frozenset({"fp8_block_moe_hopper", "kv_reserve"})
_CACHE: dict[str, VersionRules] = {}


def rules_for(version: str) -> VersionRules:
    if version in _CACHE:
        return _CACHE[version]
    v = parse_version(version)
    r = VersionRules(version=version)
    for rule in RULES:
        if parse_version(rule.since) <= v:
            r.values[rule.key] = rule.value
            r.used[rule.key] = rule.why
    _CACHE[version] = r
    return r


def batch_defaults(rules: VersionRules, *, gpu_total_gib: float | None, gpu_name: str = "",
                   max_model_len: int, cpu: bool = False, world_size: int = 1) -> tuple[int, int, str]:
    """(max_num_seqs, max_num_batched_tokens, why) that vLLM picks when neither is set."""
    if cpu:
        return 128 * world_size, 2048 * world_size, "CPU backend defaults 128 x ws seqs, 2048 x ws tokens"
    if rules["batch_defaults"] == "v0":
        if max_model_len > 32768:
            return 256, 2048, "V0: 256 seqs; chunked prefill (auto above 32K) with 2048 tokens"
        return 256, max(max_model_len, 2048), "V0: 256 seqs; batched tokens = max(max_model_len, 2048)"
    name = gpu_name.upper()
    total = gpu_total_gib or 0.0
    if total >= 160:
        return 1024, 16384, f"{total:.0f} GiB GPU (>=160 GiB class): 1024 seqs / 16384 tokens"
    if total >= 70 and "A100" not in name and "GB10" not in name:
        return 1024, 8192, f"{total:.0f} GiB GPU (H100/H200 class): 1024 seqs / 8192 tokens"
    return 256, 2048, f"{total:.0f} GiB GPU: 256 seqs / 2048 tokens"


def kv_reserve(version: str) -> str:
    """What vLLM ``version`` lets a running request hold in the KV cache before it preempts: "whole" or "mean"
    (the ``kv_reserve`` rule; perf_sim.reserved_tokens)."""
    return str(rules_for(str(version))["kv_reserve"])


def is_known_release(version: str) -> bool:
    return str(version).strip().lstrip("v") in KNOWN_RELEASES


def check_release(version: str, what: str = "vLLM release") -> str:
    """``version`` as written in :data:`KNOWN_RELEASES` ("v0.25.0" -> "0.25.0"); BadInput (exit 2)
    naming the known releases when the table does not know it."""
    from vllm_ops.errors import BadInput

    v = str(version or "").strip().lstrip("v")
    if v in KNOWN_RELEASES:
        return v
    raise BadInput(f"unknown {what} {str(version)!r}: this version table knows " + " ".join(KNOWN_RELEASES),
                   hint="releases outside the table are refused, not guessed")


def rules_between(old: str, new: str) -> list[Rule]:
    """The rule rows that take effect after ``old`` up to and including ``new`` (old < since <= new)."""
    lo, hi = parse_version(old), parse_version(new)
    return [r for r in RULES if lo < parse_version(r.since) <= hi]


def removed_flag(flag: str) -> FlagRemoval | None:
    return next((r for r in REMOVED_FLAGS if r.flag == flag), None)
