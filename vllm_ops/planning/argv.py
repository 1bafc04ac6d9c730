"""vLLM's command line: the one place it is built, parsed and edited.

    serve_args(plan, replica, *, model_flag=False, overrides=None) -> list[str]   (after the entry point)
    command(plan) -> str                               (``vllm serve ...`` of replica 0: ``plan.command``)
    parse_flags(args) / strip_flags(args, names) / value_of(args, flag) / drop(args, flags)
    split_secret_args(args) -> (args, {"VLLM_API_KEY": ...})
    model_target(plan) / served_name(plan) / bind_host(plan)      (the plan's facts argv is built from)
    check_text(value, what)                             (a string every target can carry literally)

The planner's ``command``, every rendered file and every launched process take their vLLM
arguments from :func:`serve_args`, so they carry the same flags. Pure: no I/O.
"""
from __future__ import annotations

import json
import re
import shlex
from typing import Any, Iterable, Sequence

from vllm_ops.errors import BadInput

SECRET_FLAGS = {"--api-key": "VLLM_API_KEY", "--hf-token": "HF_TOKEN"}   # vLLM flag → its variable
SERVE = ("vllm", "serve")                          # the entry point ``plan.command`` is written with
SHORT_FLAGS = {"-tp": "--tensor-parallel-size", "-pp": "--pipeline-parallel-size", "-dp": "--data-parallel-size",
               "-q": "--quantization"}                 # vLLM's short spellings of planner flags
# every other spelling vLLM's parser takes for a flag the plan reads (vllm/engine/arg_utils.py, the 0.32 parser):
# the planner rewrites them to the long form first, so a pin given as -tp 2 is planned for, not passed through
ALIASES = {**SHORT_FLAGS, "-ep": "--enable-expert-parallel", "-dcp": "--decode-context-parallel-size",
           "-pcp": "--prefill-context-parallel-size", "-sc": "--speculative-config", "-cc": "--compilation-config",
           "-n": "--nnodes", "-r": "--node-rank", "--device-memory-utilization": "--gpu-memory-utilization"}
OPEN_HOSTS = ("", "0.0.0.0", "::", "[::]")         # --host values that listen on every interface
# flags whose vLLM default is on (or "auto"): False must be said as --no-<flag>
DEFAULT_ON = {"enable_prefix_caching", "enable_chunked_prefill", "async_scheduling"}
# flags serve_args writes itself, per replica (not from vllm_args)
_OWN_FLAGS = {"model", "port"}
# vLLM's native multi-node flags (per node: rank, master)
NATIVE_KEYS = ("nnodes", "node_rank", "master_addr", "master_port", "headless")
_SECRET_KEYS = {"api_key", "hf_token"}
_FLAG_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
# what no target carries literally: C0 controls but TAB, DEL, C1 controls (U+0080..U+009F, NEL
# among them: a line break to YAML), lone surrogates (not encodable as UTF-8) and the
# non-characters U+FFFE/U+FFFF (not printable to YAML)
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def check_text(value: object, what: str) -> str:
    """A string every target can carry literally, or BadInput naming ``what``."""
    s = str(value)
    m = _CONTROL.search(s)
    if m:
        c = m.group()
        ch = {"\n": "a newline", "\r": "a carriage return", "\x00": "a NUL byte"}.get(
            c, f"control character U+{ord(c):04X}" if ord(c) < 0xA0 else f"unprintable character U+{ord(c):04X}")
        raise BadInput(f"{what} holds {ch}: {s[:60]!r} cannot be rendered safely",
                       hint="remove it; no deployment format can carry it literally")
    return s


# -- parsing -----------------------------------------------------------------------------------
def flag_name(tok: str) -> str | None:
    """``--max-model-len=8`` → ``"max_model_len"``; None for a value or a bare ``--``."""
    if not tok.startswith("--") or tok == "--":
        return None
    return tok[2:].split("=", 1)[0].replace("-", "_")


def _num(v: str) -> Any:
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v


def parse_flags(args: Sequence[str]) -> dict[str, Any]:
    """A loose parse of vLLM args: ``--a-b v`` → ``{"a_b": "v"}`` (numbers as numbers), a flag
    with no value → True."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        name = flag_name(args[i])
        if name is None:
            i += 1
            continue
        if "=" in args[i]:
            out[name] = _num(args[i].split("=", 1)[1])
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            out[name] = _num(args[i + 1])
            i += 2
        else:
            out[name] = True
            i += 1
    return out


def canonical_args(args: Iterable[str]) -> list[str]:
    """``args`` with vLLM's short and alias spellings (:data:`ALIASES`) in their long form (``-tp 2`` →
    ``--tensor-parallel-size 2``, ``-tp=2`` too); values and everything else unchanged."""
    out: list[str] = []
    for tok in args:
        name, eq, val = str(tok).partition("=")
        out.append(ALIASES[name] + eq + val if name in ALIASES else str(tok))
    return out


def optimization_level(tok: str) -> str | None:
    """The level in vLLM's attached ``-O`` spellings (``-O3``, ``-O=3``, ``-Odecode``: its parser reads them as
    ``--optimization-level``), None for any other word (``-O`` alone takes the next word as its level)."""
    tok = str(tok)
    if not tok.startswith("-O") or tok == "-O":
        return None
    return tok[3:] if tok[2] == "=" else tok[2:]


def strip_flags(args: Sequence[str], names: set[str] | Iterable[str]) -> list[str]:
    """``args`` without the flags in ``names`` (underscore form, ``--no-X`` too) and their values."""
    names = set(names)
    out: list[str] = []
    i = 0
    while i < len(args):
        name = flag_name(args[i])
        if name is not None and (name in names or name.removeprefix("no_") in names):
            i += 1
            if "=" not in args[i - 1]:
                while i < len(args) and not args[i].startswith("--"):
                    i += 1
            continue
        out.append(args[i])
        i += 1
    return out


def drop(args: Sequence[str], flags: Iterable[str]) -> list[str]:
    """``args`` without each ``--flag V`` / ``--flag=V`` in ``flags`` (exactly one value each)."""
    flags = tuple(flags)
    out: list[str] = []
    i = 0
    while i < len(args):
        tok = str(args[i])
        if tok in flags:
            i += 2
            continue
        if tok.split("=", 1)[0] in flags and "=" in tok:
            i += 1
            continue
        out.append(tok)
        i += 1
    return out


def value_of(args: Sequence[str], flag: str) -> str | None:
    """The value of ``--flag V`` / ``--flag=V`` in ``args`` (the last one wins), or None."""
    val = None
    for i, tok in enumerate(args):
        tok = str(tok)
        if tok == flag and i + 1 < len(args):
            val = str(args[i + 1])
        elif tok.startswith(flag + "="):
            val = tok.split("=", 1)[1]
    return val


_HUMAN_INT = re.compile(r"(\d+(?:\.\d+)?)([kKmMgGtT])")


def human_int(value: str, flag: str) -> int:
    """vLLM's human-readable integers (``vllm/utils/argparse_utils.py``): ``8g`` = 8e9, ``8G`` = 8 x 2^30,
    ``25.6k`` = 25,600; decimals only with the decimal (lower-case) suffixes. BadInput as vLLM refuses."""
    v = str(value).strip()
    m = _HUMAN_INT.fullmatch(v)
    try:
        if not m:
            return int(v)
        number, suffix = m.groups()
        if suffix.islower():
            return int(float(number) * 10 ** {"k": 3, "m": 6, "g": 9, "t": 12}[suffix])
        return int(number) * 2 ** {"K": 10, "M": 20, "G": 30, "T": 40}[suffix]
    except ValueError:
        raise BadInput(f"{flag} {v[:40]!r}: not an integer vLLM reads (e.g. 8589934592, 8G = 8 x 2^30, 8g = 8e9; "
                       f"no decimals with K/M/G/T)") from None


def kv_cache_bytes_from_args(args: Sequence[str]) -> int | None:
    """``--kv-cache-memory-bytes`` among vLLM's arguments (per GPU; vLLM then ignores --gpu-memory-utilization
    for the KV cache), or None."""
    val = value_of([str(a) for a in args], "--kv-cache-memory-bytes")
    if val is None:
        return None
    n = human_int(val, "--kv-cache-memory-bytes")
    if n <= 0:
        raise BadInput(f"--kv-cache-memory-bytes {val!r}: must be above 0")
    return n


def gpu_blocks_override_from_args(args: Sequence[str]) -> int | None:
    """``--num-gpu-blocks-override`` among vLLM's arguments (KV blocks per GPU, whatever memory allows), or None."""
    val = value_of([str(a) for a in args], "--num-gpu-blocks-override")
    if val is None:
        return None
    try:
        n = int(val)
    except ValueError:
        raise BadInput(f"--num-gpu-blocks-override {val[:40]!r}: not a whole number of KV blocks") from None
    if n <= 0:
        raise BadInput(f"--num-gpu-blocks-override {val!r}: must be above 0")
    return n


def switched_off(args: Sequence[str], flag: str) -> bool:
    """Whether vLLM's arguments turn a default-on feature off: ``--no-<flag>``, or ``--<flag>=false`` (the last
    one wins); ``flag`` without dashes, e.g. ``enable-chunked-prefill``. ``--<flag> false`` is ON: vLLM's parser
    (BooleanOptionalAction, checked on 0.32) takes the bare flag and leaves ``false`` as a stray word."""
    off = False
    for tok in (str(a) for a in args):
        name, eq, val = tok.partition("=")
        if name == f"--no-{flag}":
            off = True
        elif name == f"--{flag}":
            off = bool(eq) and val.strip().lower() in ("false", "0", "no", "off")
    return off


def chunked_prefill_off(args: Sequence[str]) -> bool:
    """``--no-enable-chunked-prefill``: vLLM then needs max_num_batched_tokens >= max_model_len."""
    return switched_off(args, "enable-chunked-prefill")


def prefix_caching_off(args: Sequence[str]) -> bool:
    """``--no-enable-prefix-caching``: no prompt is served from the cache."""
    return switched_off(args, "enable-prefix-caching")


def image_limit_from_args(args: list[str]) -> int | None:
    """Images per prompt from ``--limit-mm-per-prompt`` among vLLM's arguments (JSON
    ``{"image": 0}`` or the older ``image=0,video=1``); None when it is not given or has no image
    entry (vLLM's default)."""
    val = value_of(args, "--limit-mm-per-prompt")
    if val is None:
        return None
    try:
        doc = json.loads(val)
    except ValueError:
        doc = dict(p.split("=", 1) for p in val.split(",") if "=" in p)
    if not isinstance(doc, dict) or "image" not in doc:
        return None
    v = doc["image"]
    if isinstance(v, dict):
        v = v.get("count")
    try:
        return max(int(v), 0)
    except (TypeError, ValueError):
        return None


def after_entry(words: Sequence[str]) -> list[str]:
    """``vllm serve M ...`` / ``python -m vllm.entrypoints.openai.api_server ...`` → what follows
    the entry point (anything else: the words as they are)."""
    words = list(words)
    if words[:2] == list(SERVE):
        return words[2:]
    for i, w in enumerate(words[:4]):
        if str(w).startswith("vllm.entrypoints"):
            return words[i + 1:]
    return words


def arg_lines(args: Iterable[str]) -> tuple[tuple[str, ...], ...]:
    """Group an argument list (for display and per-flag edits): each ``--flag`` with the values
    that follow it."""
    lines: list[list[str]] = []
    for a in args:
        if not lines or a.startswith("-"):
            lines.append([a])
        else:
            lines[-1].append(a)
    return tuple(tuple(ln) for ln in lines)


def model_as_flag(args: Sequence[str]) -> list[str]:
    """Args in ``vllm serve`` form (model positional) as ``--model M ...`` (the module entry point
    and the image's entrypoint read both)."""
    args = list(args)
    if args and not str(args[0]).startswith("-"):
        return ["--model", args[0], *args[1:]]
    return args


def split_secret_args(args: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """``args`` without ``--api-key K`` / ``--api-key=K`` / ``--hf-token T``, and those values
    as environment variables (``{"VLLM_API_KEY": K}``): a secret never travels in argv."""
    args = list(args)
    out: list[str] = []
    env: dict[str, str] = {}
    i = 0
    while i < len(args):
        tok = str(args[i])
        key = tok.split("=", 1)[0]
        if key in SECRET_FLAGS:
            if "=" in tok:
                env[SECRET_FLAGS[key]] = tok.split("=", 1)[1]
                i += 1
            elif i + 1 < len(args):
                env[SECRET_FLAGS[key]] = str(args[i + 1])
                i += 2
            else:
                i += 1
            continue
        out.append(tok)
        i += 1
    return out, env


# -- the plan's facts --------------------------------------------------------------------------
def model_target(plan: Any) -> str:
    """What vLLM loads: the model's local path, else its id."""
    m = plan.model or {}
    target = m.get("path") or m.get("id")
    if not target:
        raise BadInput("plan: model.id is missing")
    if str(target).startswith("-"):
        raise BadInput(f"model name {target!r} starts with '-': vLLM would read it as a flag")
    return check_text(target, "model name")


def served_name(plan: Any) -> str:
    """The name clients ask for (``/v1/models``)."""
    vn = (plan.vllm_args or {}).get("served_model_name")
    if isinstance(vn, (list, tuple)) and vn:
        vn = vn[0]
    own = getattr(plan, "served_name", None) or (plan.model or {}).get("served_name")
    return check_text(vn or own or (plan.model or {}).get("id") or model_target(plan), "served model name")


def bind_host(plan: Any) -> str:
    """The --host vLLM is given (extra args win over vllm_args); "" when none: vLLM then listens
    on all interfaces."""
    host = (plan.vllm_args or {}).get("host") or ""
    extra = value_of([str(a) for a in plan.extra_args or ()], "--host")
    return str(extra if extra is not None else host)


# -- building ----------------------------------------------------------------------------------
def flag_words(name: str, value: Any) -> list[str]:
    """One vLLM flag as argv words: None → nothing, True → ``--flag``, False → ``--no-flag`` for a
    default-on flag (else nothing), lists as several values, dicts as JSON, floats exactly."""
    flag = "--" + name.replace("_", "-")
    if value is None:
        return []
    if isinstance(value, bool):
        if value:
            return [flag]
        return ["--no-" + name.replace("_", "-")] if name in DEFAULT_ON else []
    if isinstance(value, (list, tuple)):
        items = [check_text(v, f"vLLM flag --{name}") for v in value]
        if any(i.startswith("-") for i in items):
            raise BadInput(f"plan: a value of --{name} starts with '-': vLLM would read it as a flag")
        return [flag, *items] if items else []
    if isinstance(value, dict):
        return [flag, json.dumps(value, separators=(",", ":"), sort_keys=True)]
    if isinstance(value, float) and value.is_integer() and name not in ("gpu_memory_utilization",):
        value = int(value)
    text = check_text(value, f"vLLM flag --{name}")
    if text.startswith("-"):
        return [f"{flag}={text}"]          # argparse would read "-x" as the next option
    return [flag, text]


def nonneg_int(v: Any, what: str) -> int:
    """``v`` when it is a non-negative int (not a bool), else BadInput naming ``what``."""
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise BadInput(f"plan: {what} must be a non-negative integer, got {v!r}")
    return v


def serve_args(plan: Any, replica: Any = None, *, model_flag: bool = False,
               overrides: dict[str, Any] | None = None) -> list[str]:
    """The vLLM argument list for one replica: the model, then plan.vllm_args, then extra_args.

    ``model_flag`` writes ``--model M`` (the api_server module) instead of a positional model
    (``vllm serve M``). ``overrides`` replaces or adds flags (None removes one). Secrets are never
    arguments: argv is visible to every user of the host.
    """
    model = model_target(plan)
    args: list[str] = ["--model", model] if model_flag else [model]
    vargs = dict(plan.vllm_args or {})
    vargs.update(overrides or {})
    for name in vargs:
        if not isinstance(name, str) or not _FLAG_NAME.match(name):
            raise BadInput(f"plan: vllm_args key {name!r} is not a vLLM flag name")
        if name.replace("-", "_") in _SECRET_KEYS:
            raise BadInput(f"plan: vllm_args.{name} is a secret; it belongs in the env file, never in argv")
    served = served_name(plan)
    if "served_model_name" not in vargs and served != model:
        args += flag_words("served_model_name", served)
    for name, value in vargs.items():
        if name.replace("-", "_") in _OWN_FLAGS:
            continue
        args += flag_words(name.replace("-", "_"), value)
    port = replica.port if replica is not None else vargs.get("port")
    if port is not None:
        args += ["--port", str(nonneg_int(port, "replica port"))]
    for a in plan.extra_args or ():
        flag = str(a).split("=", 1)[0]
        if flag in SECRET_FLAGS:
            raise BadInput(f"plan: extra_args holds {flag}; set {SECRET_FLAGS[flag]} in the env file instead")
        args.append(check_text(a, "extra argument"))
    return args


def command(plan: Any) -> str:
    """``vllm serve ...`` of replica 0 (rank 0 on several nodes): what ``plan.command`` holds."""
    replica = plan.replicas[0] if plan.replicas else None
    return shlex.join([*SERVE, *serve_args(plan, replica)])


__all__ = ["ALIASES", "DEFAULT_ON", "NATIVE_KEYS", "OPEN_HOSTS", "SECRET_FLAGS", "SERVE", "SHORT_FLAGS", "after_entry",
           "canonical_args", "optimization_level", "arg_lines", "bind_host", "check_text",
           "command", "drop", "flag_name", "flag_words", "model_as_flag", "model_target", "parse_flags",
           "serve_args", "served_name", "split_secret_args", "strip_flags", "value_of"]
