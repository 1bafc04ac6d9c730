"""The planner: ModelSpec + Inventory + pinned flags → Plan. Pure (no I/O, no environment reads).

Order: normalise and validate pins (a pin vLLM itself would reject raises ImpossiblePin), pick the
hardware facts, choose TP/PP (smallest TP with a healthy KV cache), then max-model-len, then
max-num-seqs (so the sampler warm-up fits), then replicas, warnings and the rendered command.
Every choice gets a line in ``plan.reasons``; every version rule used goes to ``plan.assumptions``.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Iterable

from vllm_ops.errors import BadInput, ImpossiblePin
from vllm_ops.hardware.inventory import Inventory
from vllm_ops.models.spec import ModelSpec
from vllm_ops.planning.memory import (
    CPU_BLOCK_SIZE, GPU_BLOCK_SIZE, KV_DTYPE_BYTES, LORA_DEFAULT_MAX_LORAS, LORA_DEFAULT_MAX_RANK, VOCAB_PADDING,
    Estimate, Flags, GiB, estimate,
)
from vllm_ops.planning.argv import SECRET_FLAGS, split_secret_args, value_of
from vllm_ops.planning.argv import command as command_of
from vllm_ops.planning.plan import ENV_NAME, Memory, Plan, PlanWarning, Replica, default_image, is_secret_name
from vllm_ops.planning.versions import DEFAULT_VLLM_VERSION, VersionRules, batch_defaults, parse_version, rules_for

HEALTHY_CONCURRENCY = 4          # full-length sequences the KV cache should hold before we stop adding TP
DEFAULT_CPU_KV_GIB = 4.0
PIN_KEYS = (
    "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "gpu_memory_utilization",
    "max_model_len", "max_num_seqs", "max_num_batched_tokens", "kv_cache_dtype", "dtype", "quantization",
    "enforce_eager",
)
PROFILE_LAYOUT_KEYS = ("tensor_parallel_size", "pipeline_parallel_size", "kv_cache_dtype", "quantization")
_INT_PINS = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "max_model_len",
             "max_num_seqs", "max_num_batched_tokens")
_FP8_KV = ("fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc")
# vLLM 0.33's choices (`vllm serve --help`; ../shared/reference/vllm-api-and-memory.md §5): vLLM
# refuses anything else at start, so the planner refuses it first (ImpossiblePin, exit 2)
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
KV_CACHE_DTYPES = ("auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla",
                   "nvfp4_ds_mla", "nvfp4", "nvfp4_4over6", "int8_per_token_head", "fp8_per_token_head",
                   "int4_per_token_head", "ultraquant_4bit")
KV_CACHE_DTYPE_FAMILIES = ("turboquant_", "octave_")          # turboquant_*, octave_*
# --quantization: a plugin may register more methods, so an unknown one is a warning, not an error
QUANTIZATIONS = ("awq", "auto_awq", "fp8", "fbgemm_fp8", "fp_quant", "modelopt", "modelopt_fp4",
                 "modelopt_mxfp8", "modelopt_mixed", "auto_gptq", "gptq", "gptq_marlin", "awq_marlin",
                 "humming", "compressed-tensors", "experts_int8", "quark", "moe_wna16", "torchao", "inc",
                 "mxfp4", "gpt_oss_mxfp4", "deepseek_v4_fp8", "online", "fp8_per_tensor", "fp8_per_block",
                 "fp8_per_channel", "int8_per_channel_weight_only", "nvfp4_per_token", "mxfp8")
MAX_PORT = 65535
_SECRET_FLAG_ITEMS = tuple(SECRET_FLAGS.items())
_ADA_OR_OLDER_MOE_NOTE = (
    "the seed saw Qwen3-Coder-30B-A3B-Instruct on 4x L4 fail while compiling the fused-MoE Triton kernels "
    "(its vLLM version was not recorded)")


# -- helpers ---------------------------------------------------------------------------------
def _truthy(v: Any) -> bool:
    return str(v).strip().lower() in ("1", "true", "yes", "on")


def _norm_pins(pins: dict | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in (pins or {}).items():
        if v is None or v is False and k != "enforce_eager":
            continue
        key = k.replace("-", "_").lstrip("_")
        if key not in PIN_KEYS:
            raise BadInput(f"unknown pinned flag {k!r}", hint="pins are " + ", ".join(PIN_KEYS))
        if key in _INT_PINS:
            try:
                v = int(v)
            except (TypeError, ValueError):
                raise BadInput(f"--{key.replace('_', '-')} must be an integer, not {v!r}") from None
            if v < 1:
                raise ImpossiblePin(f"--{key.replace('_', '-')} must be >= 1, not {v}")
        elif key == "gpu_memory_utilization":
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise BadInput(f"--gpu-memory-utilization must be a number, not {v!r}") from None
            if not 0 < v <= 1:
                raise ImpossiblePin(f"--gpu-memory-utilization must be in (0, 1], not {v}",
                                    hint="it is the fraction of each GPU's total memory vLLM may use")
        elif key == "enforce_eager":
            v = _truthy(v) if not isinstance(v, bool) else v
            if not v:
                continue
        else:
            v = str(v)
        out[key] = v
    return out


def check_port(port: Any, what: str = "--port") -> int:
    """A TCP port: an int in 1..65535 (BadInput otherwise). Replicas take consecutive ports, so
    the planner also checks the last one."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= MAX_PORT:
        raise BadInput(f"{what} must be a port number in 1..{MAX_PORT}, not {str(port)[:40]!r}")
    return port


def lora_from_args(extra_args: Iterable[str]) -> tuple[int, int]:
    """(max_loras, max_lora_rank) when ``--enable-lora`` is among the vLLM arguments, (0, 0) otherwise;
    vLLM's defaults (1 slot, rank 16) where the flags are not given."""
    args = [str(a) for a in extra_args]
    on = False
    for tok in args:
        if tok == "--enable-lora":
            on = True
        elif tok.startswith("--enable-lora="):
            on = _truthy(tok.split("=", 1)[1])
        elif tok == "--no-enable-lora":
            on = False
    if not on:
        return 0, 0

    def num(flag: str, default: int) -> int:
        v = value_of(args, flag)
        try:
            n = int(v) if v is not None else default
        except ValueError:
            raise BadInput(f"{flag} must be an integer, not {v[:40]!r}") from None
        if n < 1:
            raise ImpossiblePin(f"{flag} must be >= 1, not {n}")
        return n

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


def _kv_dtype_ok(kvd: str) -> bool:
    return kvd in KV_CACHE_DTYPES or any(kvd.startswith(f) and len(kvd) > len(f) for f in KV_CACHE_DTYPE_FAMILIES)


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


def _tp_problem(model: ModelSpec, tp: int) -> str | None:
    """Why vLLM would refuse this TP size, or None."""
    if model.num_attention_heads % tp:
        return (f"Total number of attention heads ({model.num_attention_heads}) must be divisible by "
                f"tensor parallel size ({tp})")
    kv = model.num_kv_heads
    if model.mla is None and kv and not (kv % tp == 0 or tp % kv == 0):
        return f"{kv} KV heads and tensor parallel size {tp}: one must be a multiple of the other"
    vpad = math.ceil(model.vocab_size / VOCAB_PADDING) * VOCAB_PADDING
    if vpad % tp:
        return f"padded vocab {vpad} is not divisible by tensor parallel size {tp}"
    if model.moe is None and model.intermediate_size % tp:
        return f"intermediate size {model.intermediate_size} is not divisible by tensor parallel size {tp}"
    if model.moe is not None and model.moe.moe_intermediate_size % tp:
        return f"MoE intermediate size {model.moe.moe_intermediate_size} is not divisible by tensor parallel size {tp}"
    return None


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


# -- the planner -------------------------------------------------------------------------------
def plan(model: ModelSpec, inventory: Inventory, *, pins: dict | None = None,
         vllm_version: str = DEFAULT_VLLM_VERSION, profile=None, extra_args: Iterable[str] = (),
         env: dict | None = None, served_name: str | None = None, port: int = 8000,
         env_secrets: Iterable[str] = (), backend: str | None = None, master_port: int | None = None,
         network_gbs: float | None = None) -> Plan:
    """Plan ``model`` on ``inventory``. ``env``/``extra_args`` may hold secrets (a name matching
    KEY|TOKEN|SECRET|PASSWORD, ``--api-key K``): only their names reach the plan
    (``plan.env_secrets``, with a warning), never the values; ``env_secrets`` adds names of
    secrets the caller passes to vLLM itself (launch).

    An inventory of more than one node is planned by
    :func:`vllm_ops.planning.multinode.plan_multinode` (one ``plan.nodes`` shape for plan, render
    and launch): ``backend`` ``"ray"`` (default for GPUs) or ``"native"`` (vLLM's
    ``--nnodes/--node-rank/--master-addr/--master-port``; the only choice for CPU nodes),
    ``master_port`` (native; default 29500), ``network_gbs`` (per-node network bandwidth, for the
    ``inter-node-bandwidth`` warning). On one node these three are not used."""
    if len(inventory.nodes) > 1:
        from vllm_ops.planning.multinode import DEFAULT_MASTER_PORT, plan_multinode

        cpu = (getattr(profile, "kind", "gpu") == "cpu") or inventory.gpu_count == 0
        return plan_multinode(
            model, inventory, pins=pins, vllm_version=vllm_version, profile=profile,
            backend=backend or ("native" if cpu else "ray"),
            master_port=DEFAULT_MASTER_PORT if master_port is None else master_port,
            extra_args=extra_args, env=env, served_name=served_name, port=port, network_gbs=network_gbs,
            env_secrets=env_secrets)
    return plan_layout(model, inventory, pins=pins, vllm_version=vllm_version, profile=profile,
                       extra_args=extra_args, env=env, served_name=served_name, port=port,
                       env_secrets=env_secrets)


def plan_layout(model: ModelSpec, inventory: Inventory, *, pins: dict | None = None,
                vllm_version: str = DEFAULT_VLLM_VERSION, profile=None, extra_args: Iterable[str] = (),
                env: dict | None = None, served_name: str | None = None, port: int = 8000,
                env_secrets: Iterable[str] = ()) -> Plan:
    """The memory model and the layout search over ``inventory`` as one pool of GPUs (what
    :func:`plan` does on one node; :mod:`~vllm_ops.planning.multinode` calls it for each layout it
    tries and lays the result out over the nodes). ``plan.nodes`` stays empty here."""
    pins = _norm_pins(pins)
    port = check_port(port)
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
    env_out, extra_args, secret_names, warnings = _split_secrets(env_in, extra_args, env_secrets)
    prof_defaults = {k.replace("-", "_"): v for k, v in (getattr(profile, "vllm_defaults", None) or {}).items()}
    # a profile that fixes a layout (one written by `vllm-ops tune`) acts as pins the user may override
    from_profile = [k for k in PROFILE_LAYOUT_KEYS if prof_defaults.get(k) is not None and k not in pins]
    pins.update(_norm_pins({k: prof_defaults[k] for k in from_profile}))
    cpu = (getattr(profile, "kind", "gpu") == "cpu") or not inventory.gpus
    reasons: dict[str, str] = {}
    assumptions = rules.assumptions()

    n_nodes = max(len(inventory.nodes), 1)
    per_node = len(inventory.gpus) if not cpu else 1
    total_gpus = inventory.gpu_count if not cpu else n_nodes

    # -- pins vLLM would reject ---------------------------------------------------------------
    tp_pin = pins.get("tensor_parallel_size")
    pp_pin = pins.get("pipeline_parallel_size")
    dp_pin = pins.get("data_parallel_size")
    if tp_pin:
        why = _tp_problem(model, tp_pin)
        if why:
            raise ImpossiblePin(why, hint=f"valid sizes here: {_valid_tps(model, max(per_node, 8))}")
    if not cpu and (tp_pin or 1) * (pp_pin or 1) * (dp_pin or 1) > total_gpus:
        raise ImpossiblePin(f"TP x PP x DP = {(tp_pin or 1) * (pp_pin or 1) * (dp_pin or 1)} is more than the "
                            f"{total_gpus} GPU(s) planned for")
    allow_long = _truthy(env_out.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "0"))
    mml_pin = pins.get("max_model_len")
    if mml_pin and mml_pin > model.max_position_embeddings and not allow_long:
        raise ImpossiblePin(f"--max-model-len {mml_pin} is above the model's {model.max_position_embeddings}",
                            hint="set VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 if the model really supports it")
    kvd = str(pins.get("kv_cache_dtype", "auto")).strip().lower()
    if not _kv_dtype_ok(kvd):
        raise ImpossiblePin(f"unknown --kv-cache-dtype {kvd!r}",
                            hint="vLLM accepts " + ", ".join(KV_CACHE_DTYPES) + ", turboquant_*, octave_*")

    gtype = None if cpu else _gpu_type(inventory)
    g0 = inventory.gpus[0] if inventory.gpus else None
    cc = (g0.compute_capability if g0 and g0.compute_capability else (gtype.compute_capability if gtype else None))
    has_fp8 = gtype.fp8 if gtype else (cc is not None and tuple(cc) >= (8, 9))

    # dtype: no bf16 below compute capability 8.0
    dtype = str(pins.get("dtype", prof_defaults.get("dtype") or "auto")).strip().lower()
    if dtype not in DTYPES:
        raise ImpossiblePin(f"unknown --dtype {dtype!r}", hint="vLLM accepts " + ", ".join(DTYPES))
    quant = pins.get("quantization")
    if quant is not None and quant not in QUANTIZATIONS:
        warnings.append(PlanWarning(
            "unknown-quantization", f"--quantization {quant!r} is not one of vLLM {version}'s methods "
                                    f"({', '.join(QUANTIZATIONS[:6])}, ...): vLLM refuses it unless a plugin "
                                    f"registers it"))
    ckpt = (model.torch_dtype or "bfloat16").lower()
    if cc is not None and tuple(cc) < (8, 0):
        if dtype in ("bfloat16",):
            raise ImpossiblePin(f"--dtype bfloat16 needs compute capability >= 8.0; this GPU has "
                                f"{cc[0]}.{cc[1]}", hint="use --dtype float16")
        if dtype == "auto" and ckpt in ("bfloat16", "bf16"):
            dtype = "float16"
            reasons["dtype"] = (f"float16: the checkpoint is bfloat16 and compute capability {cc[0]}.{cc[1]} "
                                f"has no bf16 ('auto' would fail)")
            warnings.append(PlanWarning("dtype-fallback", reasons["dtype"]))
    reasons.setdefault("dtype", f"{dtype}" + (" (pinned)" if "dtype" in pins else " (checkpoint dtype)"))

    # gpu memory utilization
    if "gpu_memory_utilization" in pins:
        util = pins["gpu_memory_utilization"]
        reasons["gpu_memory_utilization"] = f"{util} (pinned)"
    elif "gpu_memory_utilization" in prof_defaults:
        util = float(prof_defaults["gpu_memory_utilization"])
        reasons["gpu_memory_utilization"] = f"{util} (profile default)"
    else:
        util = rules["gpu_memory_utilization"]
        reasons["gpu_memory_utilization"] = f"{util} (vLLM {version} default)"

    total_bytes = min((g.budget_total_bytes for g in inventory.gpus), default=0) if not cpu else 0
    free_bytes = None
    if not cpu and inventory.source == "probed":
        frees = [g.memory_free_bytes for g in inventory.gpus if g.memory_free_bytes is not None]
        free_bytes = min(frees) if frees else None
    gname = (g0.name if g0 else "") + " " + (gtype.key if gtype else "")

    model_max = model.max_position_embeddings
    max_len = mml_pin or int(prof_defaults.get("max_model_len", 0) or 0) or model_max
    if not allow_long:
        max_len = min(max_len, model_max)
    block = CPU_BLOCK_SIZE if cpu else GPU_BLOCK_SIZE
    if cpu and model.mla is not None:
        block = 16

    eager = bool(pins.get("enforce_eager")) or _truthy(prof_defaults.get("enforce_eager", False))
    if eager:
        reasons["enforce_eager"] = "on (pinned)" if pins.get("enforce_eager") else "on (profile default)"
    cpu_kv = None
    if cpu:
        cpu_kv = float(env_out.get("VLLM_CPU_KVCACHE_SPACE") or DEFAULT_CPU_KV_GIB)
        env_out["VLLM_CPU_KVCACHE_SPACE"] = f"{cpu_kv:g}"
        reasons["VLLM_CPU_KVCACHE_SPACE"] = f"{cpu_kv:g} GiB of RAM for the KV cache (CPU backend)"

    lora_slots, lora_rank = lora_from_args(extra_args)
    if lora_slots and not cpu:
        reasons["lora"] = (f"--enable-lora: {lora_slots} adapter slot(s) of rank {lora_rank} "
                           f"(buffers counted with the weights)")

    def flags_for(tp: int, pp: int, mlen: int, seqs: int | None = None) -> tuple[Flags, str]:
        ws = tp * pp
        d_seqs, d_tok, why = batch_defaults(rules, gpu_total_gib=total_bytes / GiB if total_bytes else None,
                                            gpu_name=gname, max_model_len=mlen, cpu=cpu, world_size=ws)
        s = seqs or pins.get("max_num_seqs") or int(prof_defaults.get("max_num_seqs", 0) or 0) or d_seqs
        t = pins.get("max_num_batched_tokens") or int(prof_defaults.get("max_num_batched_tokens", 0) or 0) or d_tok
        if "max_num_batched_tokens" not in pins:
            t = min(t, s * mlen)
        if "max_num_seqs" not in pins and not seqs:
            s = min(s, t)
        f = Flags(tp=tp, pp=pp, gpu_memory_utilization=util, max_model_len=mlen, max_num_seqs=s,
                  max_num_batched_tokens=t, kv_cache_dtype=kvd, dtype=dtype,
                  quantization=pins.get("quantization"), enforce_eager=eager, block_size=block,
                  max_loras=lora_slots, max_lora_rank=lora_rank)
        return f, why

    def est(f: Flags) -> Estimate:
        return estimate(model, total_bytes if not cpu else int(_ram(inventory) or 0), f, rules,
                        free_bytes=free_bytes, cpu_kv_space_gib=cpu_kv)

    seqs_free = "max_num_seqs" not in pins and "max_num_seqs" not in prof_defaults and not cpu

    def evaluate(tp: int, pp: int, mlen: int) -> tuple[Flags, Estimate, str]:
        """One layout at its default max-num-seqs, halved while only the sampler warm-up is short."""
        f, why = flags_for(tp, pp, mlen)
        e = est(f)
        note = ""
        s = s0 = f.max_num_seqs
        while seqs_free and s > 64 and (e.failure_stage in ("sampler_warmup", "cuda_graph")
                                        or (e.fits and e.thin and e.warmup_unprofiled_gib > 0)):
            s //= 2
            f, _ = flags_for(tp, pp, mlen, seqs=s)
            e = est(f)
            note = (f"{s}: chosen so the post-KV sampler warm-up fits: lowered from vLLM {version}'s default "
                    f"{s0} ({why}), whose warm-up would not fit in what the budget leaves outside (or only "
                    f"with a thin margin)")
        return f, e, note

    # -- choose TP / PP ----------------------------------------------------------------------
    tps = [tp_pin] if tp_pin else (_valid_tps(model, per_node) if not cpu else [1])
    if cpu and not tps:
        tps = [1]
    pps = [pp_pin] if pp_pin else [1]
    tried: list[tuple[int, int, Estimate]] = []
    notes: dict[tuple[int, int], tuple[Flags, str]] = {}

    def run(tp: int, pp: int, mlen: int) -> tuple[int, int, Estimate]:
        f, e, note = evaluate(tp, pp, mlen)
        notes[(tp, pp)] = (f, note)
        return tp, pp, e

    for pp in pps:
        for tp in tps:
            tried.append(run(tp, pp, max_len))
    chosen = _pick(tried)
    if chosen is None and not pp_pin and not cpu:
        # one node cannot hold it: pipeline stages across nodes (or within the node when TP is capped)
        for pp in range(2, max(total_gpus, 1) + 1):
            for tp in (tps if tp_pin else _valid_tps(model, per_node)):
                if tp * pp > total_gpus:
                    continue
                tried.append(run(tp, pp, max_len))
            chosen = _pick([t for t in tried if t[1] == pp])
            if chosen:
                break
    lowered_from = None
    if chosen is None:
        # nothing holds one full-length sequence: lower max-model-len (unless pinned)
        cands = [t for t in tried if t[2].failure_stage in (None, "kv_cache") and t[2].max_len_that_fits > 0]
        if cands and not mml_pin:
            tp, pp, e = max(cands, key=lambda t: (t[2].max_len_that_fits, -t[0] * t[1], -t[1]))
            new_len = _nice_len(min(e.max_len_that_fits, max_len), block)
            if new_len >= block:
                t2 = run(tp, pp, new_len)
                while not t2[2].fits and t2[2].failure_stage == "kv_cache" and new_len > block:
                    new_len = _nice_len(new_len - block, block)
                    t2 = run(tp, pp, new_len)
                lowered_from, max_len = max_len, new_len
                chosen = t2
        if chosen is None:
            # report the most generous layout's failure
            pool = [t for t in tried if t[0] * t[1] <= total_gpus] or tried
            chosen = max(pool, key=lambda t: (t[0] * t[1], -t[1], t[2].kv_cache_gib))
    tp, pp, e = chosen
    f, seqs_note = notes[(tp, pp)]
    _, _, batch_why = batch_defaults(rules, gpu_total_gib=total_bytes / GiB if total_bytes else None,
                                     gpu_name=gname, max_model_len=max_len, cpu=cpu, world_size=tp * pp)
    seqs_default, tok_default, _ = batch_defaults(
        rules, gpu_total_gib=total_bytes / GiB if total_bytes else None, gpu_name=gname,
        max_model_len=max_len, cpu=cpu, world_size=tp * pp)

    # -- reasons -----------------------------------------------------------------------------
    tp_others = ", ".join(f"TP{t}: " + (f"{x.max_concurrency:.1f}x" if x.fits else f"does not fit ({x.failure_stage})")
                          for t, p, x in tried if p == pp and t != tp)
    if tp_pin:
        reasons["tensor_parallel_size"] = f"{tp} (pinned)"
    elif cpu:
        reasons["tensor_parallel_size"] = "1 (CPU backend)"
    else:
        reasons["tensor_parallel_size"] = (
            f"{tp}: smallest size that fits with a healthy KV cache (>= {HEALTHY_CONCURRENCY} sequences of "
            f"{max_len} tokens: {e.max_concurrency:.1f}x)" if e.fits and e.max_concurrency >= HEALTHY_CONCURRENCY
            else f"{tp}: the layout with the most KV room ({e.max_concurrency:.1f}x at {max_len} tokens)")
        if tp_others:
            reasons["tensor_parallel_size"] += f"; others: {tp_others}"
    reasons["pipeline_parallel_size"] = (f"{pp} (pinned)" if pp_pin else
                                         "1: the model fits within one node's tensor parallel group" if pp == 1 else
                                         f"{pp}: one node's GPUs cannot hold the model")
    if mml_pin:
        reasons["max_model_len"] = f"{max_len} (pinned)"
    elif lowered_from:
        reasons["max_model_len"] = (f"{max_len}: lowered from {lowered_from}, the KV cache cannot hold one "
                                    f"full-length sequence (longest that fits, rounded down)")
        warnings.append(PlanWarning("max-model-len-lowered", reasons["max_model_len"]))
    else:
        reasons["max_model_len"] = f"{max_len}: the model's maximum"
    reasons["max_num_seqs"] = _seqs_reason(f, pins, prof_defaults, profile, seqs_note, version=version,
                                           seqs_default=seqs_default, batch_why=batch_why)
    if "max_num_batched_tokens" in pins:
        reasons["max_num_batched_tokens"] = f"{f.max_num_batched_tokens} (pinned)"
    elif int(prof_defaults.get("max_num_batched_tokens", 0) or 0):
        reasons["max_num_batched_tokens"] = (f"{f.max_num_batched_tokens}: {_profile_label(profile)} default "
                                             f"(vLLM {version} would use {tok_default})")
    else:
        reasons["max_num_batched_tokens"] = f"{f.max_num_batched_tokens}: vLLM {version} default"
    reasons["kv_cache_dtype"] = f"{kvd}" + (" (pinned)" if "kv_cache_dtype" in pins else " (model dtype)")

    for k in from_profile:
        if k in reasons:
            reasons[k] = reasons[k].replace("(pinned)", f"({_profile_label(profile)} default)")
        else:
            reasons[k] = f"{pins[k]} ({_profile_label(profile)} default)"

    # -- replicas ----------------------------------------------------------------------------
    dp = dp_pin or 1
    world = tp * pp * dp
    replicas: list[Replica] = []
    if cpu:
        replicas = [Replica(gpu_ids=[], port=port, node=None)]
        reasons["replicas"] = "1 server (CPU backend)"
    elif world <= per_node:
        k = per_node // world if not dp_pin else 1
        for n, node in enumerate(inventory.nodes):
            nname = (node.hostname or f"node{n}") if n_nodes > 1 else None
            for i in range(k):
                replicas.append(Replica(gpu_ids=[g.index for g in node.gpus[i * world:(i + 1) * world]],
                                        port=port + len(replicas), node=nname))
        if dp_pin:
            reasons["replicas"] = f"1 server with --data-parallel-size {dp} (pinned)"
        else:
            reasons["replicas"] = (f"{len(replicas)}: {per_node} GPU(s) per node / {world} per server"
                                   + (" = separate servers behind a load balancer" if len(replicas) > 1 else ""))
    else:
        need = math.ceil(world / per_node)
        groups = max(n_nodes // need, 1)
        for gidx in range(groups):
            members = inventory.nodes[gidx * need:(gidx + 1) * need]
            ids = [g.index for g in members[0].gpus][:min(world, per_node)] if members else []
            replicas.append(Replica(gpu_ids=ids, port=port + gidx,
                                    node=(members[0].hostname or f"node{gidx * need}") if members else None))
        reasons["replicas"] = f"{len(replicas)}: each server spans {need} node(s) ({world} GPUs)"

    # -- warnings ----------------------------------------------------------------------------
    if not cpu and model.moe is not None and cc is not None and (tuple(cc) == (8, 9) or tuple(cc) < (9, 0)):
        kind = "Ada (L4/L40S/RTX 40xx)" if tuple(cc) == (8, 9) else f"pre-Hopper (compute capability {cc[0]}.{cc[1]})"
        warnings.append(PlanWarning(
            "moe-triton-compile",
            f"{model.id} is a MoE model and these GPUs are {kind}: the fused-MoE Triton kernels have failed "
            f"to compile on such cards; {_ADA_OR_OLDER_MOE_NOTE}. If startup fails while compiling, try "
            f"--enforce-eager or another MoE backend, or check the vLLM version's release notes"))
    if not cpu and tp > 1 and inventory.interconnect == "pcie":
        warnings.append(PlanWarning(
            "tp-over-pcie", f"tensor parallel size {tp} runs its all-reduces over PCIe (no NVLink between these "
                            f"GPUs): expect slower decoding than replicas; prefer NVLink for TP"))
    if not cpu and not has_fp8:
        if kvd in _FP8_KV:
            warnings.append(PlanWarning("fp8-unsupported", f"--kv-cache-dtype {kvd} on a GPU without fp8 support "
                                                           f"(compute capability {cc}); expect errors or slow fallbacks"))
        q = str(pins.get("quantization") or (model.quantization.method if model.quantization else "")).lower()
        if q.startswith("fp8") and cc is not None:
            warnings.append(PlanWarning("fp8-unsupported", f"fp8 weights on a GPU without fp8 support "
                                                           f"(compute capability {cc[0]}.{cc[1]}): vLLM falls back to "
                                                           f"weight-only fp8 (Marlin) kernels"))
    if e.thin:
        warnings.append(PlanWarning(
            "thin-margin",
            f"only {e.margin_gib:.2f} GiB stays free on each GPU after the budget, CUDA context"
            + (", CUDA graphs" if not e.cuda_graph_in_budget and e.cuda_graph_gib else "")
            + (f" and the post-KV sampler warm-up ({e.warmup_unprofiled_gib:.2f} GiB)" if e.warmup_unprofiled_gib else "")
            + ": identical flags may start once and OOM the next time (another process using a few hundred MiB "
              "tips it); lower --gpu-memory-utilization or --max-num-seqs"))
    if free_bytes is not None and not cpu:
        want = math.ceil(total_bytes * util)
        if free_bytes < want:
            warnings.append(PlanWarning(
                "gpu-memory-in-use",
                f"GPU free memory {free_bytes / GiB:.2f} GiB is less than the requested budget "
                f"{want / GiB:.2f} GiB ({util} x {total_bytes / GiB:.2f}): vLLM refuses to start (\"Free memory on "
                f"device ... is less than desired GPU memory utilization\"); other processes hold memory"))
    if cpu and model.head_dim not in (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512) and model.mla is None:
        warnings.append(PlanWarning("cpu-head-size", f"head_dim {model.head_dim} is not supported by the CPU "
                                                     f"attention kernel; the first request will fail"))
    if not e.fits:
        warnings.append(PlanWarning("does-not-fit", f"does not fit: {e.failure_stage} "
                                                    f"(short by {-min(e.margin_gib, 0):.2f} GiB per GPU)"))

    # -- env for CPU PP ------------------------------------------------------------------------
    if cpu and pp > 1 and env_out.get("VLLM_CPU_OMP_THREADS_BIND", "auto") == "auto" \
            and "VLLM_CPU_OMP_THREADS_BIND" not in (env or {}):
        cores = inventory.nodes[0].cpu_count if inventory.nodes and inventory.nodes[0].cpu_count else pp
        per = max(cores // pp, 1)
        env_out["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(
            (f"{i * per}" if per == 1 else f"{i * per}-{i * per + per - 1}") for i in range(pp))
        reasons["VLLM_CPU_OMP_THREADS_BIND"] = "one core range per pipeline rank (required with PP > 1 on CPU)"

    if replicas and max(r.port for r in replicas) > MAX_PORT:
        raise BadInput(f"--port {port}: {len(replicas)} replicas need ports {port}..{max(r.port for r in replicas)}, "
                       f"above {MAX_PORT}", hint="pick a lower --port")

    # -- vLLM args and the command --------------------------------------------------------------
    vargs: dict[str, Any] = {
        "model": model.local_dir or model.id,
        "tensor_parallel_size": tp, "pipeline_parallel_size": pp, "data_parallel_size": dp,
        "gpu_memory_utilization": util, "max_model_len": max_len, "max_num_seqs": f.max_num_seqs,
        "max_num_batched_tokens": f.max_num_batched_tokens, "kv_cache_dtype": kvd, "dtype": dtype,
        "quantization": pins.get("quantization"), "enforce_eager": eager,
        "block_size": block, "port": port,
    }
    if served_name:
        vargs["served_model_name"] = served_name
    if cpu and pp > 1:
        vargs["distributed_executor_backend"] = "mp"

    # -- alternatives: the same layout at other max-num-seqs --------------------------------------
    alternatives = []
    if not cpu:
        for s in sorted({256, 128, f.max_num_seqs}, reverse=True):
            fa, _ = flags_for(tp, pp, max_len, seqs=s)
            if "max_num_batched_tokens" not in pins:
                fa = replace(fa, max_num_batched_tokens=min(f.max_num_batched_tokens, s * max_len)
                             if "max_num_seqs" not in pins else fa.max_num_batched_tokens)
            ea = est(fa)
            alternatives.append({"max_num_seqs": s, "kv_cache_gib": _r(ea.kv_cache_gib),
                                 "kv_cache_tokens": ea.kv_cache_tokens, "max_concurrency": _r(ea.max_concurrency),
                                 "activation_peak_gib": _r(ea.activation_peak_gib),
                                 "cuda_graph_gib": _r(ea.cuda_graph_gib), "margin_gib": _r(ea.margin_gib),
                                 "fits": ea.fits, "failure_stage": ea.failure_stage, "thin_margin": ea.thin})

    mem = Memory(
        total_gib=_r(e.total_gib if not cpu else (_ram(inventory) or 0) / GiB),
        budget_gib=_r(e.budget_gib if not cpu else e.weights_gib + e.kv_cache_gib),
        weights_gib=_r(e.weights_gib), activation_peak_gib=_r(e.activation_peak_gib),
        non_torch_gib=_r(e.non_torch_gib), cuda_graph_gib=_r(e.cuda_graph_gib if not cpu else 0.0),
        sampler_warmup_gib=_r(e.sampler_warmup_gib), kv_cache_gib=_r(e.kv_cache_gib),
        kv_cache_tokens=int(e.kv_cache_tokens), max_concurrency=_r(e.max_concurrency),
        kv_bytes_per_token=int(e.kv_bytes_per_token))
    image = default_image(version, cpu)
    import json

    hw = json.loads(json.dumps(inventory.to_dict()))          # tuples → lists: the plan is JSON data
    hw["source"] = inventory.source
    if not hw.get("spec") and inventory.gpus:
        hw["spec"] = hardware_label(inventory) + (" (probed)" if inventory.source == "probed" else "")
    if profile is not None:
        hw["profile"] = getattr(profile, "name", None)
    mdict = {"id": model.id, "served_name": served_name or model.id, "path": model.local_dir,
             "architecture": model.architecture, "moe": model.moe is not None, "mla": model.mla is not None,
             "max_position_embeddings": model_max, "weight_gib": _r(model.weight_bytes / GiB),
             "quantization": model.quantization.method if model.quantization else None, "source": model.source}
    assumptions = assumptions + [
        f"model runner for this model: {e.runner} ({'MoE' if model.moe else 'dense'})",
        f"CUDA context {0.52} GiB is outside the budget" if not cpu else "CPU backend: KV cache from VLLM_CPU_KVCACHE_SPACE",
        "KV cache per GPU = budget - weights - activation peak - non-torch"
        + (" - CUDA-graph estimate" if e.cuda_graph_in_budget else ""),
    ]
    out = Plan(
        model=mdict, vllm_version=version, image=image, hardware=hw, replicas=replicas, vllm_args=vargs,
        memory=mem, fits=e.fits, failure_stage=e.failure_stage, margin_gib=_r(e.margin_gib), warnings=warnings,
        command="", env=env_out, env_secrets=secret_names, extra_args=list(extra_args), nodes=[],
        profile=getattr(profile, "name", None), reasons=reasons, assumptions=assumptions,
        explain=e.explain, alternatives=alternatives, cpu=cpu, served_name=served_name or model.id,
    )
    out.command = command_of(out)          # the same argv render and launch use (planning.argv)
    return out


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


def _valid_tps(model: ModelSpec, limit: int) -> list[int]:
    return [t for t in range(1, max(limit, 1) + 1) if _tp_problem(model, t) is None]


def _pick(tried: list[tuple[int, int, Estimate]]) -> tuple[int, int, Estimate] | None:
    fitting = [t for t in tried if t[2].fits]
    if not fitting:
        return None
    healthy = [t for t in fitting if t[2].max_concurrency >= HEALTHY_CONCURRENCY]
    if healthy:
        return min(healthy, key=lambda t: (t[0] * t[1], t[0]))
    return max(fitting, key=lambda t: (t[2].max_concurrency, -t[0] * t[1], -t[1]))
