"""Why a vLLM start failed, read from its log, and the concrete change that fixes it.

One table, :data:`RULES`: (code, pattern, cause, fix builder, condition) — single-node, Ray
(``launch --backend ray``) and native multi-node (``launch --nodes``) failures alike. The first rule whose pattern
matches the log wins, so specific rules come before general ones. A fix builder gets the match
and a :class:`Context` (the flags vLLM was started with) and returns the advice line and, where
a safe automatic change exists, a :class:`Change` that ``launch --auto-retry`` applies once.

Messages were taken from real logs (tests/data/logs/, sources in tests/data/logs/sources.md)
and from vLLM's source; several eras of wording are matched where they differ.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from vllm_ops.planning.argv import human_int
from vllm_ops.planning.versions import REMOVED_FLAGS as _VERSION_REMOVED_FLAGS

# Flags vLLM removed: flag → (release and PR that removed it, number of values it took, advice).
# The one table is planning/versions.py REMOVED_FLAGS (upgrade-check reads it too).
REMOVED_FLAGS: dict[str, tuple[str, int, str]] = {
    r.flag: (f"v{r.removed_in} ({r.pr})", r.values, r.fix)
    for r in _VERSION_REMOVED_FLAGS
}


@dataclass
class Change:
    """A change to the vLLM command: set flags (underscore names → value), remove flags (with
    the values that follow them), add environment variables, or move to a free port."""
    set_flags: dict[str, Any] = field(default_factory=dict)
    remove_flags: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    new_port: bool = False

    def describe(self) -> str:
        parts = []
        for k, v in self.set_flags.items():
            flag = "--" + k.replace("_", "-")
            parts.append(f"remove {flag}" if v is None else
                         (flag if v is True else f"{flag} {v}"))
        if self.remove_flags:
            parts.append("remove " + " ".join(self.remove_flags))
        parts += [f"{k}={v}" for k, v in self.env.items()]
        if self.new_port:
            parts.append("another free port")
        return ", ".join(parts)


@dataclass
class Diagnosis:
    code: str
    cause: str
    fix: str
    evidence: str                     # the log line that matched (trimmed)
    change: Change | None = None      # what --auto-retry applies; None: no safe automatic change

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Context:
    """What the failed start was asked to do (flags in underscore form, as the plan holds them)."""
    flags: dict[str, Any] = field(default_factory=dict)
    gpus_available: int | None = None  # GPUs on the box (for a TP increase), None = unknown
    is_moe: bool = False
    stage: str | None = None           # the furthest startup stage the log reached

    def get(self, name: str, default: Any = None) -> Any:
        v = self.flags.get(name)
        return default if v is None else v


FixBuilder = Callable[[re.Match[str], Context], tuple[str, Change | None]]


@dataclass(frozen=True)
class Rule:
    code: str
    pattern: re.Pattern[str]
    cause: str
    fix: FixBuilder
    when: Callable[[Context, str], bool] | None = None   # None: always; else only when it says so


# ---------------------------------------------------------------- fix builders
def _fix_unrecognized(m: re.Match[str], ctx: Context) -> tuple[str, Change | None]:
    advice, remove = [], []
    for tok in m.group(1).split():
        flag = tok.split("=", 1)[0]
        if not flag.startswith("-"):
            continue            # a value argparse listed with its flag
        if flag in REMOVED_FLAGS:
            version, _, how = REMOVED_FLAGS[flag]
            advice.append(f"{flag} was removed in vLLM {version}: {how}")
        else:
            advice.append(f"{flag} is not a flag of this vLLM (check `vllm serve --help`)")
        remove.append(flag)
    if not remove:
        return f"remove the stray argument(s) {m.group(1).strip()}", None
    return "; ".join(advice), Change(remove_flags=remove)


def _fix_max_model_len(m: re.Match[str], ctx: Context) -> tuple[str, Change | None]:
    want, fits = int(m.group(1)), int(m.group(2))
    new = _round_len(fits)
    return (f"--max-model-len {new} (vLLM estimates {fits} tokens fit; asked for {want}), "
            f"or raise --gpu-memory-utilization / add GPUs"), Change(set_flags={"max_model_len": new})


def _fix_max_model_len_ratio(m: re.Match[str], ctx: Context) -> tuple[str, Change | None]:
    want, need, have = int(m.group(1)), float(m.group(2)), float(m.group(3))
    new = _round_len(int(want * have / need)) if need > 0 else 0
    if new <= 0:
        return "raise --gpu-memory-utilization or use more GPUs: no context length fits", None
    return (f"--max-model-len {new} (the KV cache holds {have} of the {need} GiB "
            f"{want} tokens need)"), Change(set_flags={"max_model_len": new})


def _fix_old_kv_tokens(m: re.Match[str], ctx: Context) -> tuple[str, Change | None]:
    want, fits = int(m.group(1)), int(m.group(2))
    new = _round_len(fits)
    return f"--max-model-len {new} (the KV cache holds {fits} tokens; asked for {want})", \
        Change(set_flags={"max_model_len": new})


def _round_len(n: int) -> int:
    """Round a token count down to a multiple of 256 (of 16 below 1024)."""
    step = 256 if n >= 1024 else 16
    return max(step, n // step * step) if n >= step else n


def _fix_sampler(m: re.Match[str], ctx: Context) -> tuple[str, Change | None]:
    n = int(m.group(1))
    half = max(1, n // 2)
    return (f"--max-num-seqs {half} (the sampler warm-up with {n} sequences ran out of memory), "
            f"or lower --gpu-memory-utilization"), Change(set_flags={"max_num_seqs": half})


def _fix_load_oom(m: re.Match[str], ctx: Context) -> tuple[str, Change | None]:
    tp = int(ctx.get("tensor_parallel_size", 1))
    if ctx.gpus_available and ctx.gpus_available >= 2 * tp:
        return (f"--tensor-parallel-size {2 * tp} (weights do not fit {tp} GPU(s)), "
                f"or a quantized checkpoint / --quantization fp8"), \
            Change(set_flags={"tensor_parallel_size": 2 * tp})
    return (f"a quantized model or --quantization fp8 (halves bf16 weights), or more GPUs "
            f"(--tensor-parallel-size {2 * tp})"), None


def _fix_free_memory(m: re.Match[str], ctx: Context) -> tuple[str, Change | None]:
    free, total, asked = float(m.group(1)), float(m.group(2)), float(m.group(3))
    util = math.floor((free / total - 0.01) * 100) / 100 if total else 0.0
    if util < 0.1:
        return (f"free the GPU: only {free}/{total} GiB free (another process holds it; "
                f"see nvidia-smi)"), None
    return (f"--gpu-memory-utilization {util:.2f} (only {free} of {total} GiB free; asked for "
            f"{asked}), or stop what else uses the GPU"), \
        Change(set_flags={"gpu_memory_utilization": round(util, 2)})


def _fix_heads(m: re.Match[str], ctx: Context) -> tuple[str, Change | None]:
    heads, tp = int(m.group(1)), int(m.group(2))
    ok = max(d for d in range(1, tp + 1) if heads % d == 0)
    alt = tp // ok if tp % ok == 0 else None
    advice = f"--tensor-parallel-size {ok} ({heads} heads divide by {ok}, not by {tp})"
    if alt and alt > 1:
        advice += f", with --pipeline-parallel-size {alt} to still use {tp} GPUs"
        return advice, Change(set_flags={"tensor_parallel_size": ok, "pipeline_parallel_size": alt})
    return advice, Change(set_flags={"tensor_parallel_size": ok})


def _fix_no_kv_memory(m: re.Match[str], ctx: Context) -> tuple[str, Change | None]:
    util = float(ctx.get("gpu_memory_utilization", 0.9))
    new = min(0.95, round(util + 0.05, 2))
    if new <= util:
        return "weights and activations fill the budget: use more GPUs or a quantized model", None
    return (f"--gpu-memory-utilization {new:.2f} (nothing was left for the KV cache), or more "
            f"GPUs / a quantized model"), Change(set_flags={"gpu_memory_utilization": new})


def _fix_port(m: re.Match[str], ctx: Context) -> tuple[str, Change | None]:
    return "pick a free port (--port N) or stop what listens there", Change(new_port=True)


def _fix_nccl(m: re.Match[str], ctx: Context) -> tuple[str, Change | None]:
    return ("rerun with NCCL_DEBUG=INFO to see the cause; in containers give --ipc=host or a "
            "large --shm-size; on boxes without working P2P set NCCL_P2P_DISABLE=1"), \
        Change(env={"NCCL_P2P_DISABLE": "1"})


def _fix_triton(m: re.Match[str], ctx: Context) -> tuple[str, Change | None]:
    return ("clear the Triton cache (rm -rf ~/.triton/cache) and check that triton matches "
            "torch; a stale or shared cache breaks the fused-MoE kernel compile (a fresh "
            "TRITON_CACHE_DIR per server avoids it)"), \
        Change(env={"TRITON_CACHE_DIR": "{state_dir}/triton-cache/{name}"})


def _fix_cpu_kv(m: re.Match[str], ctx: Context) -> tuple[str, Change | None]:
    avail = float(m.group(1))
    new = max(1, int(avail * 0.5))
    return (f"VLLM_CPU_KVCACHE_SPACE={new} (only {avail} GiB RAM free on the node)"), \
        Change(env={"VLLM_CPU_KVCACHE_SPACE": str(new)})


def _fix_cpu_head_dim(m: re.Match[str], ctx: Context) -> tuple[str, Change | None]:
    return (f"the CPU attention kernel does not support head_dim={m.group(1)}: use a model with "
            f"head_dim 32/64/80/96/112/128/..."), None


def _fix_numa(m: re.Match[str], ctx: Context) -> tuple[str, Change | None]:
    return ("set VLLM_CPU_OMP_THREADS_BIND to one core list per worker, e.g. '0|1'"), None


def _fix_generic_oom(m: re.Match[str], ctx: Context) -> tuple[str, Change | None]:
    if ctx.stage in (None, "process started", "weights loading"):
        return _fix_load_oom(m, ctx)
    kv_bytes = ctx.get("kv_cache_memory_bytes")
    if kv_bytes is not None:                 # the flag sizes the KV cache: --gpu-memory-utilization would not help
        new = int(human_int(str(kv_bytes), "--kv-cache-memory-bytes") * 0.9)
        return (f"--kv-cache-memory-bytes {new} (the KV cache it asks for left too little for activations or CUDA "
                f"graphs; --gpu-memory-utilization does not size it)"), \
            Change(set_flags={"kv_cache_memory_bytes": new})
    seqs = ctx.get("max_num_seqs")
    util = float(ctx.get("gpu_memory_utilization", 0.9))
    new = round(max(0.5, util - 0.05), 2)
    extra = f" or --max-num-seqs {int(seqs) // 2}" if seqs else ""
    return (f"--gpu-memory-utilization {new:.2f} (out of memory after the KV cache was sized: "
            f"activations or CUDA graphs need more room){extra}"), \
        Change(set_flags={"gpu_memory_utilization": new})


def _advice(text: str) -> FixBuilder:
    """A fix with advice only (no safe automatic change)."""
    return lambda m, ctx: (text, None)


# ---------------------------------------------------------------- conditions
def _uses_ray(ctx: Context, text: str) -> bool:
    return str(ctx.get("distributed_executor_backend", "")) == "ray"


def _multinode(ctx: Context, text: str) -> bool:
    return int(ctx.get("nnodes", 1) or 1) > 1 or bool(ctx.get("headless"))


def _moe(ctx: Context, text: str) -> bool:
    return ctx.is_moe or "fused_moe" in text


def _rule(code: str, pattern: str, cause: str, fix: FixBuilder, flags: int = 0,
          when: Callable[[Context, str], bool] | None = None) -> Rule:
    return Rule(code, re.compile(pattern, flags), cause, fix, when)


# Ray (``launch --backend ray``) and vLLM's native multi-node mode (``launch --nodes``): the
# failures were seen for real (tests/real/test_multinode_real.py) or quoted from vLLM/Ray source.
_RAY_RULES: tuple[Rule, ...] = (
    _rule("ray-unsupported-platform", r"current platform (\w+) does not support ray",
          "this vLLM build's platform cannot use the Ray executor",
          _advice("drop --backend ray: on the CPU build use vLLM's native multi-node mode "
                  "(`vllm-ops launch --nodes`, --distributed-executor-backend mp)"), re.I),
    _rule("ray-not-installed", r"(?:Failed to import Ray|No module named 'ray'|Ray is not installed)",
          "vLLM's Python has no Ray",
          _advice("pip install ray into vLLM's environment (the same Ray as the cluster's)"), re.I),
    _rule("ray-not-enough-gpus",
          r"(?:The number of required GPUs exceeds the total number of available GPUs in the placement "
          r"group|Current node has no GPU available|required_resources=.*exceeds)",
          "the Ray cluster has fewer GPUs than vLLM's placement group asks for",
          _advice("start more Ray nodes with GPUs or lower TP x PP"), re.I, _uses_ray),
    _rule("ray-placement-timeout",
          r"(?:placement group.*(?:timed out|cannot be created|pending)|Cannot provide a placement group)",
          "Ray could not place vLLM's workers",
          _advice("check `ray status`: every node needs the GPUs of one pipeline stage"), re.I, _uses_ray),
    _rule("ray-connect",
          r"(?:Failed to connect to GCS|Could not find any running Ray instance|ConnectionError: .*ray)",
          "vLLM could not reach the Ray cluster",
          _advice("set RAY_ADDRESS to the head (HOST:6379) and check the head runs"), re.I, _uses_ray),
)
_MULTINODE_RULES: tuple[Rule, ...] = (
    _rule("multinode-loopback-address", r"Gloo connectFullMesh failed.*remote=\[127\.\d+\.\d+\.\d+\]",
          "a rank told the others to reach it at a loopback address (its hostname resolves to 127.x)",
          _advice("set GLOO_SOCKET_IFNAME (CPU, gloo) / NCCL_SOCKET_IFNAME and GLOO_SOCKET_IFNAME (GPU) "
                  "to the interface that carries the node's address, on every node "
                  "(--node-env R:GLOO_SOCKET_IFNAME=eth0)")),
    _rule("multinode-bad-options", r"Invalid data-parallel launch options: (.+)",
          "vLLM rejected the multi-node options",
          _advice("fix --nnodes/--node-rank as the message says")),
    _rule("multinode-host-ip", r"Failed to get the IP address, using 0\.0\.0\.0 by default",
          "a rank could not find its own address (no default route) and advertised 0.0.0.0, so the "
          "ranks never connect",
          _advice("set VLLM_HOST_IP to each node's address (plan.nodes[i].address: plan with addresses, "
                  "or --node-env R:VLLM_HOST_IP=ADDR)"), when=_multinode),
    _rule("multinode-connect",
          r"(?:Gloo connectFullMesh failed|timed out connecting|DistNetworkError|"
          r"The client socket has timed out after)",
          "the ranks could not connect to each other over torch.distributed",
          _advice("check that --master-addr is rank 0's address, --master-port is open between the "
                  "nodes and every rank was started with the same --nnodes/--master-port"),
          when=_multinode),
)


RULES: tuple[Rule, ...] = (
    *_RAY_RULES,          # specific to one executor / mode: before the generic rules
    *_MULTINODE_RULES,
    _rule("unrecognized-arguments", r"error: unrecognized arguments: (.+)",
          "vLLM does not accept a flag it was given", _fix_unrecognized),
    _rule("heads-not-divisible",
          r"Total number of attention heads \((\d+)\) must be divisible by tensor parallel size \((\d+)\)",
          "the model's attention heads do not divide by the tensor-parallel size", _fix_heads),
    _rule("free-memory-below-utilization",
          r"Free memory on device (?:\S+ )?\(([\d.]+)/([\d.]+) GiB\) on startup is less than "
          r"desired GPU memory utilization \(([\d.]+)",
          "less GPU memory is free than --gpu-memory-utilization asks for", _fix_free_memory),
    _rule("kv-cache-too-small",
          r"max seq len \((\d+)\)[^\n]*?estimated maximum model length is (\d+)",
          "the KV cache cannot hold one request of --max-model-len tokens", _fix_max_model_len),
    _rule("kv-cache-too-small",
          r"max seq len \((\d+)\), \(([\d.]+) GiB KV cache is needed, which is larger than the "
          r"available KV cache memory \(([\d.]+) GiB\)",
          "the KV cache cannot hold one request of --max-model-len tokens", _fix_max_model_len_ratio),
    _rule("kv-cache-too-small",
          r"The model's max seq len \((\d+)\) is larger than the maximum number of tokens that "
          r"can be stored in KV cache \((\d+)\)",
          "the KV cache cannot hold one request of --max-model-len tokens", _fix_old_kv_tokens),
    _rule("no-kv-cache-memory", r"No available memory for the cache blocks",
          "weights and activation peak leave no memory for the KV cache", _fix_no_kv_memory),
    _rule("sampler-warmup-oom",
          r"out of memory occurred when warming up sampler with (\d+) dummy requests",
          "the sampler warm-up (max-num-seqs × vocabulary logits) ran out of memory", _fix_sampler),
    _rule("weights-oom", r"Failed to load model - not enough GPU memory",
          "the weights do not fit the GPU memory", _fix_load_oom),
    _rule("cpu-kv-cache-memory",
          r"Available memory on node \d+ \(([\d.]+)/[\d.]+ GiB\) on kv cache allocation is less "
          r"than requested memory for kv",
          "the CPU KV cache asked for more RAM than the node has free", _fix_cpu_kv),
    _rule("cpu-head-dim", r"Unsupported CPU attention configuration: head_dim=(\d+)",
          "the CPU attention kernel does not support this head size", _fix_cpu_head_dim),
    _rule("cpu-numa-binding", r"Not enough allowed NUMA nodes to bind threads",
          "CPU workers cannot each get their own cores", _fix_numa),
    _rule("port-in-use",
          r"\[Errno 98\] (?:error while attempting to bind on address|Address already in use)",
          "the port is already in use", _fix_port),
    _rule("nccl-error", r"NCCL error|ncclSystemError|ncclInternalError|ncclUnhandledCudaError",
          "NCCL (GPU-to-GPU communication) failed to initialise", _fix_nccl),
    _rule("triton-moe-compile",
          r"triton\.compiler\.errors\.\w+|PassManager::run failed|CompilationError|"
          r"fused_moe\.py:\d+:\d+: error",
          "compiling the Triton fused-MoE kernel failed", _fix_triton, when=_moe),
    _rule("cuda-oom", r"(?:torch\.(?:cuda\.)?OutOfMemoryError|CUDA out of memory|CUDA error: out of memory)",
          "the GPU ran out of memory", _fix_generic_oom),
)


def diagnose(log_text: str, ctx: Context | None = None, *, only: str | None = None) -> Diagnosis | None:
    """The first rule that matches the log, with its fix; None when no rule knows the failure.
    ``only``: consider only the rules whose code starts with it (e.g. ``"ray-"``)."""
    ctx = ctx or Context()
    for rule in RULES:
        if only is not None and not rule.code.startswith(only):
            continue
        if rule.when is not None and not rule.when(ctx, log_text):
            continue
        m = rule.pattern.search(log_text)
        if not m:
            continue
        fix, change = rule.fix(m, ctx)
        return Diagnosis(rule.code, rule.cause, fix, _evidence(log_text, m), change)
    return None


def _evidence(text: str, m: re.Match[str]) -> str:
    start = text.rfind("\n", 0, m.start()) + 1
    end = text.find("\n", m.start())
    line = text[start: end if end >= 0 else len(text)].strip()
    line = re.sub(r"^\((?:APIServer|EngineCore\w*|VllmWorker[^)]*|Worker[^)]*) pid=\d+\)\s*", "", line)
    return line if len(line) <= 300 else line[:297] + "..."
