"""The planner: ModelSpec + Inventory + pinned flags → Plan, over one pool of GPUs. Pure (no I/O,
no environment reads). The front door is :func:`vllm_ops.planning.plan` (planning/front.py), which
hands inventories of several nodes to :mod:`~vllm_ops.planning.multinode`.

Order (:func:`plan_layout`, one named step each): normalise and validate pins (a pin vLLM itself
would reject raises ImpossiblePin), pick the hardware facts, choose TP/PP (smallest TP with a
healthy KV cache), then max-model-len, then max-num-seqs (so the sampler warm-up fits), then
replicas, warnings and the command. Every choice gets a line in ``plan.reasons``; every version
rule used goes to ``plan.assumptions``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any, Iterable

from vllm_ops.errors import BadInput, ImpossiblePin
from vllm_ops.hardware.inventory import Inventory
from vllm_ops.models.spec import ModelSpec
from vllm_ops.planning.argv import SECRET_FLAGS, split_secret_args, value_of
from vllm_ops.planning.argv import command as command_of
from vllm_ops.planning.argv import (chunked_prefill_off, gpu_blocks_override_from_args, image_limit_from_args,
                                   kv_cache_bytes_from_args)
from vllm_ops.planning.coverage import coverage_warnings, flag_warnings, refuse_unmodelled
from vllm_ops.planning.memory import (
    CPU_BLOCK_SIZE, GPU_BLOCK_SIZE, LORA_DEFAULT_MAX_LORAS, LORA_DEFAULT_MAX_RANK, Estimate, Flags, GiB, estimate,
)
from vllm_ops.planning.pins import (  # noqa: F401  (PIN_KEYS & co. re-exported for older imports)
    DTYPES, FP8_KV, HEALTHY_CONCURRENCY, KV_CACHE_DTYPE_FAMILIES, KV_CACHE_DTYPES, MAX_PORT, PIN_KEYS,
    PROFILE_LAYOUT_KEYS, QUANTIZATIONS, check_port, kv_dtype_ok, normalize_pins, tp_problem, truthy, valid_tps,
)
from vllm_ops.planning.passthrough import lift, positive_int
from vllm_ops.planning.plan import ENV_NAME, Memory, Plan, PlanWarning, Replica, default_image, is_secret_name
from vllm_ops.planning.vllm_flags import spelled_out, unknown_flag_warnings
from vllm_ops.planning.versions import (
    DEFAULT_VLLM_VERSION, KNOWN_RELEASES, VersionRules, batch_defaults, is_known_release, parse_version, removed_flag,
    rules_for,
)

DEFAULT_CPU_KV_GIB = 4.0
_SECRET_FLAG_ITEMS = tuple(SECRET_FLAGS.items())
_ADA_OR_OLDER_MOE_NOTE = (
    "the seed saw Qwen3-Coder-30B-A3B-Instruct on 4x L4 fail while compiling the fused-MoE Triton kernels "
    "(its vLLM version was not recorded)")


# -- helpers ---------------------------------------------------------------------------------
def lora_from_args(extra_args: Iterable[str]) -> tuple[int, int]:
    """(max_loras, max_lora_rank) when ``--enable-lora`` is among the vLLM arguments, (0, 0) otherwise;
    vLLM's defaults (1 slot, rank 16) where the flags are not given."""
    args = [str(a) for a in extra_args]
    on = False
    for tok in args:
        if tok == "--enable-lora":
            on = True
        elif tok.startswith("--enable-lora="):
            on = truthy(tok.split("=", 1)[1])
        elif tok == "--no-enable-lora":
            on = False
    if not on:
        return 0, 0

    def num(flag: str, default: int) -> int:
        v = value_of(args, flag)
        return positive_int(v, flag) if v is not None else default

    return num("--max-loras", LORA_DEFAULT_MAX_LORAS), num("--max-lora-rank", LORA_DEFAULT_MAX_RANK)


def hardware_label(inventory: Inventory) -> str:
    """'4x NVIDIA H200' (one kind) / '1x NVIDIA A100 + 1x NVIDIA L4' for an inventory with no spec
    (a probed machine); per node when all nodes are alike ('2x(8x NVIDIA H100)')."""
    def one(gpus) -> str:
        counts: dict[str, int] = {}
        for g in gpus:
            counts[g.name or "GPU"] = counts.get(g.name or "GPU", 0) + 1
        return " + ".join(f"{n}x {name}" for name, n in counts.items())

    nodes = [one(n.gpus) for n in inventory.nodes if n.gpus]
    if not nodes:
        return "CPU"
    if len(nodes) > 1:
        return f"{len(nodes)}x({nodes[0]})" if len(set(nodes)) == 1 else " | ".join(nodes)
    return nodes[0]


def _split_secrets(env: dict[str, str], extra_args: Iterable[str],
                   names: Iterable[str]) -> tuple[dict[str, str], list[str], list[str], list[PlanWarning]]:
    """Secrets out of the plan: (env without secret names, extra args without --api-key/--hf-token,
    sorted secret names, warnings). Values are dropped here and never stored (see plan.py)."""
    warnings: list[PlanWarning] = []
    secret_names = set()
    for n in names:
        if not isinstance(n, str) or not ENV_NAME.match(n):
            raise BadInput(f"secret name {str(n)[:80]!r} is not an environment variable name")
        secret_names.add(n)
    plain: dict[str, str] = {}
    for k, v in env.items():
        if is_secret_name(k):
            secret_names.add(k)
            warnings.append(PlanWarning(
                "secret-not-kept", f"{k}: a plan keeps only the names of secrets (env_secrets), never their values; "
                                   f"`vllm-ops launch` reads {k} from its environment (or its --env), render lists "
                                   f"it in the env file"))
        else:
            plain[k] = v
    rest, moved = split_secret_args(extra_args)
    for flag_var in sorted(moved):
        secret_names.add(flag_var)
        flag = next(f for f, var in _SECRET_FLAG_ITEMS if var == flag_var)
        warnings.append(PlanWarning(
            "secret-not-kept", f"{flag} after `--` is not kept in the plan (argv is visible to every user); "
                               f"the server reads {flag_var} from its environment: export it before "
                               f"`vllm-ops launch`, or put it in the rendered env file"))
    return plain, rest, sorted(secret_names), warnings


def _gpu_type(inv: Inventory):
    g = inv.gpus[0]
    try:
        from vllm_ops.hardware import catalog

        if g.catalog_key:
            return catalog.lookup(g.catalog_key)
        return catalog.match_nvml_name(g.name)
    except Exception:  # noqa: BLE001 — raw-size GPUs have no catalog entry
        return None


def _nice_len(n: int, block: int) -> int:
    if n >= 8192:
        return n // 1024 * 1024
    if n >= 1024:
        return n // 256 * 256
    return max(n // block * block, 0)


def _r(x: float) -> float:
    return round(float(x), 2)



# -- the facts plan_layout works over ------------------------------------------------------------
@dataclass
class _Facts:
    """The request, normalised, and what the hardware and pins fix before the layout search."""
    model: ModelSpec
    inventory: Inventory
    profile: Any
    pins: dict[str, Any]
    from_profile: list[str]                  # pins that came from the profile's layout
    prof_defaults: dict[str, Any]
    version: str
    rules: VersionRules
    port: int
    served_name: str | None
    served_aliases: list[str]                # further --served-model-name names (vLLM answers to all)
    block_given: int | None                  # --block-size after `--`
    env_given: dict[str, Any]                # the caller's --env (not the profile's)
    env: dict[str, str]                      # the plan's non-secret environment
    extra_args: list[str]
    secret_names: list[str]
    warnings: list[PlanWarning]
    reasons: dict[str, str]
    cpu: bool
    n_nodes: int
    per_node: int
    total_gpus: int
    # -- fixed by _hardware_facts / _fixed_flags
    gtype: Any = None
    cc: Any = None
    has_fp8: bool = False
    total_bytes: int = 0
    free_bytes: int | None = None
    gname: str = ""
    kvd: str = "auto"
    dtype: str = "auto"
    util: float = 0.0
    allow_long: bool = False
    model_max: int = 0
    max_len: int = 0
    block: int = GPU_BLOCK_SIZE
    eager: bool = False
    cpu_kv: float | None = None
    kv_bytes: int | None = None              # --kv-cache-memory-bytes (GPU: the KV cache per GPU)
    kv_blocks: int | None = None             # --num-gpu-blocks-override (KV blocks per GPU)
    chunked_off: bool = False                # --no-enable-chunked-prefill: max_num_batched_tokens >= max_model_len
    lora_slots: int = 0
    lora_rank: int = 0
    image_limit: Any = None                  # --limit-mm-per-prompt images (models.vision)
    bf16_ok: bool = True                     # compute capability >= 8.0 (or unknown)

    def pin(self, key: str) -> Any:
        return self.pins.get(key)


@dataclass
class _Choice:
    """The layout the search chose, and the flags and memory estimate it runs with."""
    tp: int
    pp: int
    est: Estimate
    flags: Flags
    seqs_note: str
    max_len: int
    lowered_from: int | None
    seqs_default: int
    tok_default: int
    batch_why: str


# -- the planner ---------------------------------------------------------------------------------
def plan_layout(model: ModelSpec, inventory: Inventory, *, pins: dict | None = None,
                vllm_version: str = DEFAULT_VLLM_VERSION, profile=None, extra_args: Iterable[str] = (),
                env: dict | None = None, served_name: str | None = None, port: int = 8000,
                env_secrets: Iterable[str] = ()) -> Plan:
    """The memory model and the layout search over ``inventory`` as one pool of GPUs (what
    :func:`vllm_ops.planning.plan` does on one node; :mod:`~vllm_ops.planning.multinode` calls it
    for each layout it tries and lays the result out over the nodes). ``plan.nodes`` stays empty.

    Named steps: the request → pins vLLM would reject → hardware facts → the flags the layout does
    not change → the TP/PP search (max-model-len, max-num-seqs) → reasons → replicas → warnings →
    the Plan."""
    f = _request(model, inventory, pins=pins, vllm_version=vllm_version, profile=profile,
                 extra_args=extra_args, env=env, served_name=served_name, port=port, env_secrets=env_secrets)
    _check_pins(f)
    _hardware_facts(f)
    _fixed_flags(f)
    search = _Search(f)
    choice = search.choose()
    _layout_reasons(f, choice, search.tried)
    replicas = _replicas(f, choice)
    _warnings(f, choice)
    _cpu_pp_env(f, choice.pp)
    if replicas and max(r.port for r in replicas) > MAX_PORT:
        raise BadInput(f"--port {f.port}: {len(replicas)} replicas need ports {f.port}.."
                       f"{max(r.port for r in replicas)}, above {MAX_PORT}", hint="pick a lower --port")
    return _assemble(f, search, choice, replicas)


def _request(model: ModelSpec, inventory: Inventory, *, pins, vllm_version, profile, extra_args, env,
             served_name, port, env_secrets) -> _Facts:
    """The request normalised: pins, version rules, environment without secrets, profile defaults."""
    pins = normalize_pins(pins)
    port = check_port(port)
    refuse_unmodelled(model)              # Mamba/linear-attention state, quantization configs vLLM refuses
    version = str(vllm_version or DEFAULT_VLLM_VERSION).lstrip("v")
    parse_version(version)
    rules = rules_for(version)
    env_in: dict[str, str] = {}
    if profile is not None:
        env_in.update({k: str(v) for k, v in (getattr(profile, "env", None) or {}).items()})
    for k, v in (env or {}).items():
        if not isinstance(k, str) or not ENV_NAME.match(k):
            raise BadInput(f"--env {str(k)[:80]!r}: not an environment variable name",
                           hint="letters, digits and '_', not starting with a digit")
        env_in[k] = str(v)
    env_out, rest, secret_names, warnings = _split_secrets(env_in, spelled_out(extra_args), env_secrets)
    given = lift(pins, port, served_name, rest, warnings)
    pins, port, names, rest = given.pins, given.port, given.names, given.rest
    prof_defaults = {k.replace("-", "_"): v for k, v in (getattr(profile, "vllm_defaults", None) or {}).items()}
    # a profile that fixes a layout (one written by `vllm-ops tune`) acts as pins the user may override
    from_profile = [k for k in PROFILE_LAYOUT_KEYS if prof_defaults.get(k) is not None and k not in pins]
    pins.update(normalize_pins({k: prof_defaults[k] for k in from_profile}))
    cpu = (getattr(profile, "kind", "gpu") == "cpu") or not inventory.gpus
    n_nodes = max(len(inventory.nodes), 1)
    return _Facts(
        model=model, inventory=inventory, profile=profile, pins=pins, from_profile=from_profile,
        prof_defaults=prof_defaults, version=version, rules=rules, port=port, served_name=names[0] if names else None,
        served_aliases=names[1:], block_given=given.block,
        env_given=dict(env or {}), env=env_out, extra_args=list(rest), secret_names=secret_names,
        warnings=warnings, reasons={}, cpu=cpu, n_nodes=n_nodes,
        per_node=len(inventory.gpus) if not cpu else 1, total_gpus=inventory.gpu_count if not cpu else n_nodes)


def _check_pins(f: _Facts) -> None:
    """Pins vLLM would reject (ImpossiblePin, before any arithmetic)."""
    tp_pin, pp_pin, dp_pin = f.pin("tensor_parallel_size"), f.pin("pipeline_parallel_size"), f.pin("data_parallel_size")
    if tp_pin:
        why = tp_problem(f.model, tp_pin)
        if why:
            raise ImpossiblePin(why, hint=f"valid sizes here: {valid_tps(f.model, max(f.per_node, 8))}")
    if not f.cpu and (tp_pin or 1) * (pp_pin or 1) * (dp_pin or 1) > f.total_gpus:
        raise ImpossiblePin(f"TP x PP x DP = {(tp_pin or 1) * (pp_pin or 1) * (dp_pin or 1)} is more than the "
                            f"{f.total_gpus} GPU(s) planned for")
    f.allow_long = truthy(f.env.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "0"))
    mml_pin = f.pin("max_model_len")
    if mml_pin and mml_pin > f.model.max_position_embeddings and not f.allow_long:
        raise ImpossiblePin(f"--max-model-len {mml_pin} is above the model's {f.model.max_position_embeddings}",
                            hint="set VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 if the model really supports it")
    f.kvd = str(f.pins.get("kv_cache_dtype", "auto")).strip().lower()
    if not kv_dtype_ok(f.kvd):
        raise ImpossiblePin(f"unknown --kv-cache-dtype {f.kvd!r}",
                            hint="vLLM accepts " + ", ".join(KV_CACHE_DTYPES) + ", turboquant_*, octave_*")


def _hardware_facts(f: _Facts) -> None:
    """The GPU type (catalog), compute capability, fp8 support, per-GPU memory and free memory."""
    inv = f.inventory
    f.gtype = None if f.cpu else _gpu_type(inv)
    g0 = inv.gpus[0] if inv.gpus else None
    f.cc = (g0.compute_capability if g0 and g0.compute_capability
            else (f.gtype.compute_capability if f.gtype else None))
    f.has_fp8 = f.gtype.fp8 if f.gtype else (f.cc is not None and tuple(f.cc) >= (8, 9))
    f.total_bytes = min((g.budget_total_bytes for g in inv.gpus), default=0) if not f.cpu else 0
    if not f.cpu and inv.source == "probed":
        frees = [g.memory_free_bytes for g in inv.gpus if g.memory_free_bytes is not None]
        f.free_bytes = min(frees) if frees else None
    f.gname = (g0.name if g0 else "") + " " + (f.gtype.key if f.gtype else "")


def _fixed_flags(f: _Facts) -> None:
    """The flags the layout search does not change: dtype, gpu-memory-utilization, max-model-len
    (before any lowering), block size, eager, the CPU KV space, LoRA slots."""
    _dtype(f)
    if "gpu_memory_utilization" in f.pins:
        f.util = f.pins["gpu_memory_utilization"]
        f.reasons["gpu_memory_utilization"] = f"{f.util} (pinned)"
    elif "gpu_memory_utilization" in f.prof_defaults:
        f.util = float(f.prof_defaults["gpu_memory_utilization"])
        f.reasons["gpu_memory_utilization"] = f"{f.util} (profile default)"
    else:
        f.util = f.rules["gpu_memory_utilization"]
        f.reasons["gpu_memory_utilization"] = f"{f.util} (vLLM {f.version} default)"
    f.model_max = f.model.max_position_embeddings
    f.max_len = f.pin("max_model_len") or int(f.prof_defaults.get("max_model_len", 0) or 0) or f.model_max
    if not f.allow_long:
        f.max_len = min(f.max_len, f.model_max)
    f.block = CPU_BLOCK_SIZE if f.cpu else GPU_BLOCK_SIZE
    if f.cpu and f.model.mla is not None:
        f.block = 16
    if f.block_given:                          # after `--`: planned with it, written once (passthrough.lift)
        f.block = f.block_given
        f.reasons["block_size"] = f"{f.block} (given)"
    f.eager = bool(f.pin("enforce_eager")) or truthy(f.prof_defaults.get("enforce_eager", False))
    if f.eager:
        f.reasons["enforce_eager"] = "on (pinned)" if f.pin("enforce_eager") else "on (profile default)"
    f.kv_bytes = kv_cache_bytes_from_args(f.extra_args)
    f.kv_blocks = gpu_blocks_override_from_args(f.extra_args)
    if f.kv_blocks:
        f.reasons["num_gpu_blocks_override"] = (f"{f.kv_blocks} (given): vLLM takes that many KV blocks per GPU "
                                                f"whatever memory allows")
    f.chunked_off = chunked_prefill_off(f.extra_args)
    if f.cpu:
        _cpu_kv_space(f)
    elif f.kv_bytes:
        f.reasons["kv_cache_memory_bytes"] = (f"{f.kv_bytes} ({f.kv_bytes / GiB:.2f} GiB per GPU, given): vLLM sizes "
                                              f"the KV cache so, not by --gpu-memory-utilization")
    f.lora_slots, f.lora_rank = lora_from_args(f.extra_args)
    f.image_limit = image_limit_from_args([str(a) for a in f.extra_args])
    f.bf16_ok = not (f.cc is not None and tuple(f.cc) < (8, 0))
    if f.lora_slots and not f.cpu:
        f.reasons["lora"] = (f"--enable-lora: {f.lora_slots} adapter slot(s) of rank {f.lora_rank} "
                             f"(buffers counted with the weights)")


def _cpu_kv_space(f: _Facts) -> None:
    """The CPU backend's KV cache: VLLM_CPU_KVCACHE_SPACE GiB, which vLLM lets override --kv-cache-memory-bytes
    (its "legacy setting", vllm/platforms/cpu.py). The flag beats a profile's default (the plan then sets no
    variable); a variable the user gives (--env) beats the flag, as in vLLM."""
    if f.kv_bytes and "VLLM_CPU_KVCACHE_SPACE" not in f.env_given:
        f.env.pop("VLLM_CPU_KVCACHE_SPACE", None)
        f.cpu_kv = f.kv_bytes / GiB
        f.reasons["kv_cache_memory_bytes"] = f"{f.kv_bytes} ({f.cpu_kv:.2f} GiB of RAM for the KV cache, CPU backend)"
        return
    if f.kv_bytes:
        f.warnings.append(PlanWarning("flag-overridden", f"VLLM_CPU_KVCACHE_SPACE={f.env['VLLM_CPU_KVCACHE_SPACE']} "
                                                         f"overrides --kv-cache-memory-bytes on the CPU backend: "
                                                         f"planned and started with the variable"))
    f.cpu_kv = float(f.env.get("VLLM_CPU_KVCACHE_SPACE") or DEFAULT_CPU_KV_GIB)
    f.env["VLLM_CPU_KVCACHE_SPACE"] = f"{f.cpu_kv:g}"
    f.reasons["VLLM_CPU_KVCACHE_SPACE"] = f"{f.cpu_kv:g} GiB of RAM for the KV cache (CPU backend)"


def _dtype(f: _Facts) -> None:
    """--dtype (no bf16 below compute capability 8.0) and the --quantization check."""
    dtype = str(f.pins.get("dtype", f.prof_defaults.get("dtype") or "auto")).strip().lower()
    if dtype not in DTYPES:
        raise ImpossiblePin(f"unknown --dtype {dtype!r}", hint="vLLM accepts " + ", ".join(DTYPES))
    quant = f.pin("quantization")
    if quant is not None and quant not in QUANTIZATIONS:
        f.warnings.append(PlanWarning(
            "unknown-quantization", f"--quantization {quant!r} is not one of vLLM {f.version}'s methods "
                                    f"({', '.join(QUANTIZATIONS[:6])}, ...): vLLM refuses it unless a plugin "
                                    f"registers it"))
    ckpt = (f.model.torch_dtype or "bfloat16").lower()
    cc = f.cc
    if cc is not None and tuple(cc) < (8, 0):
        if dtype in ("bfloat16",):
            raise ImpossiblePin(f"--dtype bfloat16 needs compute capability >= 8.0; this GPU has "
                                f"{cc[0]}.{cc[1]}", hint="use --dtype float16")
        if dtype == "auto" and ckpt in ("bfloat16", "bf16"):
            dtype = "float16"
            f.reasons["dtype"] = (f"float16: the checkpoint is bfloat16 and compute capability {cc[0]}.{cc[1]} "
                                  f"has no bf16 ('auto' would fail)")
            f.warnings.append(PlanWarning("dtype-fallback", f.reasons["dtype"]))
    f.reasons.setdefault("dtype", f"{dtype}" + (" (pinned)" if "dtype" in f.pins else " (checkpoint dtype)"))
    f.dtype = dtype


class _Search:
    """The TP/PP search: the smallest layout with a healthy KV cache, else the one with the most
    room; pipeline stages when one node's tensor parallel group cannot hold the model; a lower
    max-model-len when nothing holds one full-length sequence. Each layout runs at its default
    max-num-seqs, halved while only the sampler warm-up is short."""

    def __init__(self, f: _Facts):
        self.f = f
        self.seqs_free = "max_num_seqs" not in f.pins and "max_num_seqs" not in f.prof_defaults and not f.cpu
        self.tried: list[tuple[int, int, Estimate]] = []
        self.notes: dict[tuple[int, int], tuple[Flags, str]] = {}

    def batch_defaults(self, ws: int, mlen: int) -> tuple[int, int, str]:
        f = self.f
        return batch_defaults(f.rules, gpu_total_gib=f.total_bytes / GiB if f.total_bytes else None,
                              gpu_name=f.gname, max_model_len=mlen, cpu=f.cpu, world_size=ws)

    def flags_for(self, tp: int, pp: int, mlen: int, seqs: int | None = None) -> tuple[Flags, str]:
        f = self.f
        d_seqs, d_tok, why = self.batch_defaults(tp * pp, mlen)
        s = seqs or f.pin("max_num_seqs") or int(f.prof_defaults.get("max_num_seqs", 0) or 0) or d_seqs
        t = f.pin("max_num_batched_tokens") or int(f.prof_defaults.get("max_num_batched_tokens", 0) or 0) or d_tok
        if "max_num_batched_tokens" not in f.pins:
            t = max(t, mlen) if f.chunked_off else min(t, s * mlen)   # vLLM's own rule without chunked prefill
        elif f.chunked_off and t < mlen:
            raise ImpossiblePin(f"--max-num-batched-tokens {t} is below --max-model-len {mlen} with chunked prefill "
                                f"off: vLLM refuses to start (a prompt must fit one step)",
                                hint=f"raise --max-num-batched-tokens to {mlen}, lower --max-model-len, or leave "
                                     f"chunked prefill on")
        if "max_num_seqs" not in f.pins and not seqs:
            s = min(s, t)
        fl = Flags(tp=tp, pp=pp, gpu_memory_utilization=f.util, max_model_len=mlen, max_num_seqs=s,
                   max_num_batched_tokens=t, kv_cache_dtype=f.kvd, dtype=f.dtype,
                   quantization=f.pin("quantization"), enforce_eager=f.eager, block_size=f.block,
                   max_loras=f.lora_slots, max_lora_rank=f.lora_rank, image_limit=f.image_limit,
                   bf16_ok=f.bf16_ok, dp=f.pin("data_parallel_size") or 1, kv_cache_bytes=f.kv_bytes,
                   gpu_blocks=f.kv_blocks)
        return fl, why

    def est(self, fl: Flags) -> Estimate:
        f = self.f
        return estimate(f.model, f.total_bytes if not f.cpu else int(_ram(f.inventory) or 0), fl, f.rules,
                        free_bytes=f.free_bytes, cpu_kv_space_gib=f.cpu_kv)

    def evaluate(self, tp: int, pp: int, mlen: int) -> tuple[Flags, Estimate, str]:
        """One layout at its default max-num-seqs, halved while only the sampler warm-up is short."""
        fl, why = self.flags_for(tp, pp, mlen)
        e = self.est(fl)
        note = ""
        s = s0 = fl.max_num_seqs
        while self.seqs_free and s > 64 and (e.failure_stage in ("sampler_warmup", "cuda_graph")
                                             or (e.fits and e.thin and e.warmup_unprofiled_gib > 0)):
            s //= 2
            fl, _ = self.flags_for(tp, pp, mlen, seqs=s)
            e = self.est(fl)
            note = (f"{s}: chosen so the post-KV sampler warm-up fits: lowered from vLLM {self.f.version}'s "
                    f"default {s0} ({why}), whose warm-up would not fit in what the budget leaves outside (or "
                    f"only with a thin margin)")
        return fl, e, note

    def run(self, tp: int, pp: int, mlen: int) -> tuple[int, int, Estimate]:
        fl, e, note = self.evaluate(tp, pp, mlen)
        self.notes[(tp, pp)] = (fl, note)
        return tp, pp, e

    def choose(self) -> _Choice:
        f = self.f
        tp_pin, pp_pin = f.pin("tensor_parallel_size"), f.pin("pipeline_parallel_size")
        dp = f.pin("data_parallel_size") or 1
        tps = [tp_pin] if tp_pin else (valid_tps(f.model, f.per_node) if not f.cpu else [1])
        if f.cpu and not tps:
            tps = [1]
        if dp > 1 and not f.cpu:               # a server of DP ranks: TP x DP GPUs (_check_pins refused the rest)
            tps = [t for t in tps if t * dp <= f.total_gpus] or tps[:1]
        for pp in ([pp_pin] if pp_pin else [1]):
            for tp in tps:
                self.tried.append(self.run(tp, pp, f.max_len))
        chosen = _pick(self.tried)
        if chosen is None and not pp_pin and not f.cpu:
            chosen = self._pipeline(tps if tp_pin else valid_tps(f.model, f.per_node))
        max_len, lowered_from = f.max_len, None
        if chosen is None:
            chosen, max_len, lowered_from = self._lower_max_len()
        tp, pp, e = chosen
        fl, seqs_note = self.notes[(tp, pp)]
        seqs_default, tok_default, batch_why = self.batch_defaults(tp * pp, max_len)
        return _Choice(tp=tp, pp=pp, est=e, flags=fl, seqs_note=seqs_note, max_len=max_len,
                       lowered_from=lowered_from, seqs_default=seqs_default, tok_default=tok_default,
                       batch_why=batch_why)

    def _pipeline(self, tps: list[int]) -> tuple[int, int, Estimate] | None:
        """One node cannot hold it: pipeline stages across nodes (or within the node when TP is capped)."""
        f = self.f
        dp = f.pin("data_parallel_size") or 1
        for pp in range(2, max(f.total_gpus, 1) + 1):
            for tp in tps:
                if tp * pp * dp > f.total_gpus:
                    continue
                self.tried.append(self.run(tp, pp, f.max_len))
            chosen = _pick([t for t in self.tried if t[1] == pp])
            if chosen:
                return chosen
        return None

    def _lower_max_len(self) -> tuple[tuple[int, int, Estimate], int, int | None]:
        """Nothing holds one full-length sequence: lower max-model-len (unless pinned); else report
        the most generous layout's failure."""
        f = self.f
        cands = [t for t in self.tried if t[2].failure_stage in (None, "kv_cache") and t[2].max_len_that_fits > 0]
        if cands and not f.pin("max_model_len"):
            tp, pp, e = max(cands, key=lambda t: (t[2].max_len_that_fits, -t[0] * t[1], -t[1]))
            new_len = _nice_len(min(e.max_len_that_fits, f.max_len), f.block)
            if new_len >= f.block:
                t2 = self.run(tp, pp, new_len)
                while not t2[2].fits and t2[2].failure_stage == "kv_cache" and new_len > f.block:
                    new_len = _nice_len(new_len - f.block, f.block)
                    t2 = self.run(tp, pp, new_len)
                return t2, new_len, f.max_len
        pool = [t for t in self.tried if t[0] * t[1] <= f.total_gpus] or self.tried
        return max(pool, key=lambda t: (t[0] * t[1], -t[1], t[2].kv_cache_gib)), f.max_len, None


def _layout_reasons(f: _Facts, c: _Choice, tried: list[tuple[int, int, Estimate]]) -> None:
    """Why each layout flag has its value (``plan.reasons``)."""
    r, e, tp, pp, max_len = f.reasons, c.est, c.tp, c.pp, c.max_len
    tp_others = ", ".join(f"TP{t}: " + (f"{x.max_concurrency:.1f}x" if x.fits else f"does not fit ({x.failure_stage})")
                          for t, p, x in tried if p == pp and t != tp)
    if f.pin("tensor_parallel_size"):
        r["tensor_parallel_size"] = f"{tp} (pinned)"
    elif f.cpu:
        r["tensor_parallel_size"] = "1 (CPU backend)"
    else:
        r["tensor_parallel_size"] = (
            f"{tp}: smallest size that fits with a healthy KV cache (>= {HEALTHY_CONCURRENCY} sequences of "
            f"{max_len} tokens: {e.max_concurrency:.1f}x)" if e.fits and e.max_concurrency >= HEALTHY_CONCURRENCY
            else f"{tp}: the layout with the most KV room ({e.max_concurrency:.1f}x at {max_len} tokens)")
        if tp_others:
            r["tensor_parallel_size"] += f"; others: {tp_others}"
    r["pipeline_parallel_size"] = (f"{pp} (pinned)" if f.pin("pipeline_parallel_size") else
                                   f"{pp}: no layout of these {f.total_gpus} GPU(s) holds the model (see the verdict)"
                                   if not e.fits else
                                   "1: the model fits within one node's tensor parallel group" if pp == 1 else
                                   f"{pp}: one node's GPUs cannot hold the model")
    if f.pin("max_model_len"):
        r["max_model_len"] = f"{max_len} (pinned)"
    elif c.lowered_from:
        r["max_model_len"] = (f"{max_len}: lowered from {c.lowered_from}, the KV cache cannot hold one "
                              f"full-length sequence (longest that fits, rounded down)")
        f.warnings.append(PlanWarning("max-model-len-lowered", r["max_model_len"]))
    else:
        r["max_model_len"] = f"{max_len}: the model's maximum"
    r["max_num_seqs"] = _seqs_reason(c.flags, f.pins, f.prof_defaults, f.profile, c.seqs_note, version=f.version,
                                     seqs_default=c.seqs_default, batch_why=c.batch_why)
    if "max_num_batched_tokens" in f.pins:
        r["max_num_batched_tokens"] = f"{c.flags.max_num_batched_tokens} (pinned)"
    elif int(f.prof_defaults.get("max_num_batched_tokens", 0) or 0):
        r["max_num_batched_tokens"] = (f"{c.flags.max_num_batched_tokens}: {_profile_label(f.profile)} default "
                                       f"(vLLM {f.version} would use {c.tok_default})")
    elif f.chunked_off:
        r["max_num_batched_tokens"] = (f"{c.flags.max_num_batched_tokens}: at least --max-model-len, chunked prefill "
                                       f"off (vLLM {f.version}'s own rule)")
    else:
        r["max_num_batched_tokens"] = f"{c.flags.max_num_batched_tokens}: vLLM {f.version} default"
    r["kv_cache_dtype"] = f"{f.kvd}" + (" (pinned)" if "kv_cache_dtype" in f.pins else " (model dtype)")
    for k in f.from_profile:
        if k in r:
            r[k] = r[k].replace("(pinned)", f"({_profile_label(f.profile)} default)")
        else:
            r[k] = f"{f.pins[k]} ({_profile_label(f.profile)} default)"


def _replicas(f: _Facts, c: _Choice) -> list[Replica]:
    """Independent servers: as many TP x PP groups as one node holds (or DP pinned), else one
    server spanning nodes per group of nodes."""
    dp_pin = f.pin("data_parallel_size")
    world = c.tp * c.pp * (dp_pin or 1)
    inv, replicas = f.inventory, []
    if f.cpu:
        f.reasons["replicas"] = "1 server (CPU backend)"
        return [Replica(gpu_ids=[], port=f.port, node=None)]
    if world <= f.per_node:
        k = f.per_node // world if not dp_pin else 1
        for n, node in enumerate(inv.nodes):
            nname = (node.hostname or f"node{n}") if f.n_nodes > 1 else None
            for i in range(k):
                replicas.append(Replica(gpu_ids=[g.index for g in node.gpus[i * world:(i + 1) * world]],
                                        port=f.port + len(replicas), node=nname))
        if dp_pin:
            f.reasons["replicas"] = f"1 server with --data-parallel-size {dp_pin} (pinned)"
        else:
            f.reasons["replicas"] = (f"{len(replicas)}: {f.per_node} GPU(s) per node / {world} per server"
                                     + (" = separate servers behind a load balancer" if len(replicas) > 1 else ""))
        return replicas
    need = math.ceil(world / f.per_node)
    for gidx in range(max(f.n_nodes // need, 1)):
        members = inv.nodes[gidx * need:(gidx + 1) * need]
        ids = [g.index for g in members[0].gpus][:min(world, f.per_node)] if members else []
        replicas.append(Replica(gpu_ids=ids, port=f.port + gidx,
                                node=(members[0].hostname or f"node{gidx * need}") if members else None))
    f.reasons["replicas"] = f"{len(replicas)}: each server spans {need} node(s) ({world} GPUs)"
    return replicas


def _version_warnings(f: _Facts) -> None:
    """A release the version table does not know, and flags that release no longer accepts."""
    if not is_known_release(f.version):
        f.warnings.append(PlanWarning(
            "vllm-version-unknown",
            f"vLLM {f.version} is not in the version table (it knows {KNOWN_RELEASES[0]} .. {KNOWN_RELEASES[-1]}): "
            f"the rules of the nearest known release were applied, and defaults or memory accounting that changed "
            f"since are not modelled"))
    for code, msg in unknown_flag_warnings(f.extra_args, f.version):
        f.warnings.append(PlanWarning(code, msg))
    for tok in f.extra_args:
        r = removed_flag(str(tok).split("=", 1)[0])
        if r is not None and parse_version(f.version) >= parse_version(r.removed_in):
            f.warnings.append(PlanWarning(
                "flag-removed", f"{r.flag} was removed in vLLM {r.removed_in} ({r.pr}): vLLM {f.version} refuses "
                                f"to start with it; {r.fix}"))


# vLLM 0.25.0's profile peak of MoE models routing 8 of 128 experts, measured on 1x H200 against this estimate:
# Qwen3-30B-A3B (hidden 2048) 2.68 GiB vs 1.74 (bf16 and FP8 runs), Qwen3-235B-A22B-FP8's layers (hidden 4096; 40 of its
# layers, and one GPU's share at TP2, graphs and eager) 3.21 vs 1.81 (tests/data/gpu-runs/h200x1: q30-*.log,
# unseen/t235l40, eager/t235e). Two architectures: named as a warning, not yet a term of the estimate. Those runs ran
# Triton's fused MoE; on DeepGEMM's grouped GEMM (vLLM 0.12's default for block-FP8 MoE on Hopper, --moe-backend
# deep_gemm: planning/perf_kernels.py) the same two peaked at 1.71 and 1.01 GiB, under the plan (deepgemm/t235dg,
# q30dg: KV +1.9 % / +0.3 %), so the warning is not given there.
MOE_PEAK_SHORT_GIB = {2048: 0.94, 4096: 1.40}
MOE_PEAK_TOKENS = 8192              # the profile's batch in those runs (max_num_batched_tokens)


def _moe_activation_warning(f: _Facts, c: _Choice) -> None:
    """``moe-activation-under``: the shortfall measured at 8192 batched tokens, scaled to this plan's batch (as
    the rest of the activation estimate scales: an assumption, measured at 8192 only); Triton's fused MoE only."""
    from vllm_ops.planning.perf_kernels import expert_parallel, moe_padding

    m, e, tokens = f.model.moe, c.est, c.flags.max_num_batched_tokens
    if f.cpu or m is None or m.num_experts < 128 or m.experts_per_token < 8 or not e.kv_cache_gib:
        return
    if moe_padding(spec=f.model, version=f.version, compute_capability=f.cc, tp=c.tp, dp=c.flags.dp,
                   ep=expert_parallel(f.extra_args), extra_args=f.extra_args, env=f.env).mode:
        return
    short = MOE_PEAK_SHORT_GIB[4096 if f.model.hidden_size >= 4096 else 2048] * tokens / MOE_PEAK_TOKENS
    f.warnings.append(PlanWarning(
        "moe-activation-under",
        f"MoE models routing {m.experts_per_token} of {m.num_experts} experts peaked above this activation estimate "
        f"in vLLM 0.25's memory profile (two Qwen3-MoE architectures, 0.94-1.40 GiB per GPU at 8192 batched tokens; "
        f"{short:.2f} GiB at this plan's {tokens}): expect about {min(short / e.kv_cache_gib, 1.0):.0%} fewer KV "
        f"cache tokens than planned"))


def _warnings(f: _Facts, c: _Choice) -> None:
    """What may still go wrong with this plan (``plan.warnings``)."""
    e, cc, w = c.est, f.cc, f.warnings
    if not f.cpu and f.model.moe is not None and cc is not None and (tuple(cc) == (8, 9) or tuple(cc) < (9, 0)):
        kind = "Ada (L4/L40S/RTX 40xx)" if tuple(cc) == (8, 9) else f"pre-Hopper (compute capability {cc[0]}.{cc[1]})"
        w.append(PlanWarning(
            "moe-triton-compile",
            f"{f.model.id} is a MoE model and these GPUs are {kind}: the fused-MoE Triton kernels have failed "
            f"to compile on such cards; {_ADA_OR_OLDER_MOE_NOTE}. If startup fails while compiling, try "
            f"--enforce-eager or another MoE backend, or check the vLLM version's release notes"))
    if not f.cpu and c.tp > 1 and f.inventory.interconnect == "pcie":
        w.append(PlanWarning(
            "tp-over-pcie", f"tensor parallel size {c.tp} runs its all-reduces over PCIe (no NVLink between these "
                            f"GPUs): expect slower decoding than replicas; prefer NVLink for TP"))
    if not f.cpu and not f.has_fp8:
        _fp8_warnings(f)
    _version_warnings(f)
    if e.thin and (f.kv_bytes or f.kv_blocks):
        flag = "--num-gpu-blocks-override" if f.kv_blocks else "--kv-cache-memory-bytes"
        w.append(PlanWarning(
            "thin-margin",
            f"only {e.margin_gib:.2f} GiB stays free on each GPU after the weights, the {e.kv_cache_gib:.2f} GiB KV "
            f"cache {flag} asks for, CUDA graphs and the warm-up: identical flags may start once and "
            f"OOM the next time; lower {flag}"))
    elif e.thin:
        w.append(PlanWarning(
            "thin-margin",
            f"only {e.margin_gib:.2f} GiB stays free on each GPU after the budget, CUDA context"
            + (", CUDA graphs" if not e.cuda_graph_in_budget and e.cuda_graph_gib else "")
            + (f" and the post-KV sampler warm-up ({e.warmup_unprofiled_gib:.2f} GiB)" if e.warmup_unprofiled_gib else "")
            + ": identical flags may start once and OOM the next time (another process using a few hundred MiB "
              "tips it); lower --gpu-memory-utilization or --max-num-seqs"))
    _moe_activation_warning(f, c)
    if f.free_bytes is not None and not f.cpu:
        want = math.ceil(f.total_bytes * f.util)
        if f.free_bytes < want:
            w.append(PlanWarning(
                "gpu-memory-in-use",
                f"GPU free memory {f.free_bytes / GiB:.2f} GiB is less than the requested budget "
                f"{want / GiB:.2f} GiB ({f.util} x {f.total_bytes / GiB:.2f}): vLLM refuses to start (\"Free memory "
                f"on device ... is less than desired GPU memory utilization\"); other processes hold memory"))
    if f.cpu and f.model.head_dim not in (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512) and f.model.mla is None:
        w.append(PlanWarning("cpu-head-size", f"head_dim {f.model.head_dim} is not supported by the CPU "
                                              f"attention kernel; the first request will fail"))
    _honesty_notes(f, c)
    if not e.fits:
        w.append(PlanWarning("does-not-fit", f"does not fit: {e.failure_stage} "
                                             f"(short by {-min(e.margin_gib, 0):.2f} GiB per GPU)"))


def _honesty_notes(f: _Facts, c: _Choice) -> None:
    """What the memory model does not cover (coverage warnings, the estimate's own warnings), and
    the dtype / KV dtype the estimate really used."""
    e, model = c.est, f.model
    for code, msg in coverage_warnings(model) + flag_warnings(f.extra_args) + list(e.warnings):
        f.warnings.append(PlanWarning(code, msg))
    if e.dtype != (model.torch_dtype or "bfloat16") or "dtype" in f.pins:
        f.reasons["dtype"] += f"; weights, activations and an auto KV cache in {e.dtype}"
    if e.kv_fp8_from_checkpoint:
        f.reasons["kv_cache_dtype"] = (f"auto: fp8, as the checkpoint's {model.quantization.source_file} names "
                                       f"({model.quantization.kv_cache_scheme}; vLLM {f.version})")


def _fp8_warnings(f: _Facts) -> None:
    cc = f.cc
    if f.kvd in FP8_KV:
        f.warnings.append(PlanWarning("fp8-unsupported", f"--kv-cache-dtype {f.kvd} on a GPU without fp8 support "
                                                         f"(compute capability {cc}); expect errors or slow fallbacks"))
    q = str(f.pin("quantization") or (f.model.quantization.method if f.model.quantization else "")).lower()
    if q.startswith("fp8") and cc is not None:
        f.warnings.append(PlanWarning("fp8-unsupported", f"fp8 weights on a GPU without fp8 support "
                                                         f"(compute capability {cc[0]}.{cc[1]}): vLLM falls back to "
                                                         f"weight-only fp8 (Marlin) kernels"))


def _cpu_pp_env(f: _Facts, pp: int) -> None:
    """The CPU build with PP > 1 needs one core range per pipeline rank."""
    if f.cpu and pp > 1 and f.env.get("VLLM_CPU_OMP_THREADS_BIND", "auto") == "auto" \
            and "VLLM_CPU_OMP_THREADS_BIND" not in f.env_given:
        inv = f.inventory
        cores = inv.nodes[0].cpu_count if inv.nodes and inv.nodes[0].cpu_count else pp
        per = max(cores // pp, 1)
        f.env["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(
            (f"{i * per}" if per == 1 else f"{i * per}-{i * per + per - 1}") for i in range(pp))
        f.reasons["VLLM_CPU_OMP_THREADS_BIND"] = "one core range per pipeline rank (required with PP > 1 on CPU)"


def _assemble(f: _Facts, search: _Search, c: _Choice, replicas: list[Replica]) -> Plan:
    """The Plan: vLLM's flags, the memory figures, the alternatives, hardware and model facts, and
    the command (:func:`vllm_ops.planning.argv.command`, the argv render and launch use too)."""
    e, model = c.est, f.model
    vargs: dict[str, Any] = {
        "model": model.local_dir or model.id,
        "tensor_parallel_size": c.tp, "pipeline_parallel_size": c.pp,
        "data_parallel_size": f.pin("data_parallel_size") or 1,
        "gpu_memory_utilization": f.util, "max_model_len": c.max_len, "max_num_seqs": c.flags.max_num_seqs,
        "max_num_batched_tokens": c.flags.max_num_batched_tokens, "kv_cache_dtype": f.kvd, "dtype": f.dtype,
        "quantization": f.pin("quantization"), "enforce_eager": f.eager, "block_size": f.block, "port": f.port,
    }
    if f.served_name:
        vargs["served_model_name"] = [f.served_name, *f.served_aliases] if f.served_aliases else f.served_name
    if f.cpu and c.pp > 1:
        vargs["distributed_executor_backend"] = "mp"
    mem = Memory(
        total_gib=_r(e.total_gib if not f.cpu else (_ram(f.inventory) or 0) / GiB),
        budget_gib=_r(e.budget_gib if not f.cpu else e.weights_gib + e.kv_cache_gib),
        weights_gib=_r(e.weights_gib), activation_peak_gib=_r(e.activation_peak_gib),
        non_torch_gib=_r(e.non_torch_gib), cuda_graph_gib=_r(e.cuda_graph_gib if not f.cpu else 0.0),
        sampler_warmup_gib=_r(e.sampler_warmup_gib), kv_cache_gib=_r(e.kv_cache_gib),
        kv_cache_tokens=int(e.kv_cache_tokens), max_concurrency=_r(e.max_concurrency),
        kv_bytes_per_token=int(e.kv_bytes_per_token), encoder_profile_gib=_r(e.encoder_profile_gib),
        kv_pool_tokens=int(e.kv_pool_tokens))
    assumptions = f.rules.assumptions() + [
        f"model runner for this model: {e.runner} ({'MoE' if model.moe else 'dense'})",
        f"CUDA context {0.52} GiB is outside the budget" if not f.cpu else "CPU backend: KV cache from VLLM_CPU_KVCACHE_SPACE",
        "KV cache per GPU = budget - weights - activation peak - non-torch"
        + (" - CUDA-graph estimate" if e.cuda_graph_in_budget else ""),
    ]
    out = Plan(
        model=_model_facts(f), vllm_version=f.version, image=default_image(f.version, f.cpu),
        hardware=_hardware_facts_dict(f), replicas=replicas, vllm_args=vargs, memory=mem, fits=e.fits,
        failure_stage=e.failure_stage, margin_gib=_r(e.margin_gib), warnings=f.warnings, command="", env=f.env,
        env_secrets=f.secret_names, extra_args=list(f.extra_args), nodes=[],
        profile=getattr(f.profile, "name", None), reasons=f.reasons, assumptions=assumptions,
        explain=e.explain, alternatives=_alternatives(f, search, c), cpu=f.cpu,
        served_name=f.served_name or model.id,
    )
    out.command = command_of(out)          # the same argv render and launch use (planning.argv)
    return out


def _alternatives(f: _Facts, search: _Search, c: _Choice) -> list[dict[str, Any]]:
    """The same layout at other max-num-seqs (GPU plans)."""
    out: list[dict[str, Any]] = []
    if f.cpu:
        return out
    for s in sorted({256, 128, c.flags.max_num_seqs}, reverse=True):
        fa, _ = search.flags_for(c.tp, c.pp, c.max_len, seqs=s)
        if "max_num_batched_tokens" not in f.pins:
            fa = replace(fa, max_num_batched_tokens=min(c.flags.max_num_batched_tokens, s * c.max_len)
                         if "max_num_seqs" not in f.pins else fa.max_num_batched_tokens)
        ea = search.est(fa)
        out.append({"max_num_seqs": s, "kv_cache_gib": _r(ea.kv_cache_gib),
                    "kv_cache_tokens": ea.kv_cache_tokens, "max_concurrency": _r(ea.max_concurrency),
                    "activation_peak_gib": _r(ea.activation_peak_gib),
                    "cuda_graph_gib": _r(ea.cuda_graph_gib), "margin_gib": _r(ea.margin_gib),
                    "fits": ea.fits, "failure_stage": ea.failure_stage, "thin_margin": ea.thin})
    return out


def _hardware_facts_dict(f: _Facts) -> dict[str, Any]:
    inv = f.inventory
    hw = json.loads(json.dumps(inv.to_dict()))          # tuples → lists: the plan is JSON data
    hw["source"] = inv.source
    if not hw.get("spec") and inv.gpus:
        hw["spec"] = hardware_label(inv) + (" (probed)" if inv.source == "probed" else "")
    if f.profile is not None:
        hw["profile"] = getattr(f.profile, "name", None)
    return hw


def _model_facts(f: _Facts) -> dict[str, Any]:
    model = f.model
    return {"id": model.id, "served_name": f.served_name or model.id, "path": model.local_dir,
            "architecture": model.architecture, "moe": model.moe is not None, "mla": model.mla is not None,
            "max_position_embeddings": f.model_max, "weight_gib": _r(model.weight_bytes / GiB),
            "quantization": model.quantization.method if model.quantization else None, "source": model.source}


def _profile_label(profile) -> str:
    name = getattr(profile, "name", None)
    return f"profile {name}" if name else "profile"


def _seqs_reason(f: Flags, pins: dict, prof_defaults: dict, profile, seqs_note: str, *, version: str,
                 seqs_default: int, batch_why: str) -> str:
    """Where --max-num-seqs came from: pinned, the profile's default, lowered so the sampler
    warm-up fits, or vLLM's own default (and whether max-num-batched-tokens capped it)."""
    n = f.max_num_seqs
    if "max_num_seqs" in pins:
        return f"{n} (pinned)"
    if seqs_note:
        return seqs_note
    prof = int(prof_defaults.get("max_num_seqs", 0) or 0)
    if prof:
        why = f"{n}: {_profile_label(profile)} default"
        if n < prof:
            why += f" {prof}, capped at --max-num-batched-tokens {f.max_num_batched_tokens}"
        if prof != seqs_default:
            why += f" (vLLM {version}'s own default here would be {seqs_default}: {batch_why})"
        return why
    if n < seqs_default:
        return (f"{n}: vLLM {version}'s default {seqs_default} ({batch_why}), capped at "
                f"--max-num-batched-tokens {f.max_num_batched_tokens}")
    return f"{n}: vLLM {version} default ({batch_why})"


def _ram(inv: Inventory) -> int | None:
    return inv.nodes[0].ram_bytes if inv.nodes else None


def _pick(tried: list[tuple[int, int, Estimate]]) -> tuple[int, int, Estimate] | None:
    fitting = [t for t in tried if t[2].fits]
    if not fitting:
        return None
    healthy = [t for t in fitting if t[2].max_concurrency >= HEALTHY_CONCURRENCY]
    if healthy:
        return min(healthy, key=lambda t: (t[0] * t[1], t[0]))
    return max(fitting, key=lambda t: (t[2].max_concurrency, -t[0] * t[1], -t[1]))
