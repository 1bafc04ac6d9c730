"""The Plan: what `vllm-ops plan --json` prints and what render/launch consume.

A plain dataclass with ``to_dict()`` / ``from_dict()``; ``from_dict(plan.to_dict())`` round-trips,
so a saved ``vllm-ops plan --json > plan.json`` can be rendered or launched later.
Memory figures are per GPU in GiB (as vLLM prints them); tokens and concurrency per replica.

Secrets never enter a plan (it is printed by ``plan --json``, saved, rendered and stored in
deployment state). A secret is an environment variable whose name matches :data:`SECRET_NAME`
(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL, any case) or a value given with ``--api-key`` /
``--hf-token`` (:data:`SECRET_FLAGS`). The planner keeps only their *names*, in
``plan.env_secrets`` (e.g. ``["VLLM_API_KEY"]``): render lists those names in the env file (and
the Kubernetes Secret references), and launch takes the values from its own environment (or
its ``--env``) at start time, refusing to start when one is missing. Values are dropped with a
plan warning, never stored.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from vllm_ops.errors import BadInput, MalformedFile
from vllm_ops.planning.argv import SECRET_FLAGS, check_text, split_secret_args  # noqa: F401  (re-exported)

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.I)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_secret_name(name: str) -> bool:
    """True for an environment variable name that holds a secret (VLLM_API_KEY, HF_TOKEN, ...)."""
    return bool(SECRET_NAME.search(str(name)))


@dataclass
class Replica:
    gpu_ids: list[int]
    port: int = 8000
    node: str | None = None


@dataclass
class PlanNode:
    """One node of a multi-node plan: the one shape plan, render and launch read."""
    name: str                                   # hostname, or "node<i>"
    address: str | None = None                  # how the other nodes reach it (None: unknown)
    rank: int = 0                               # rank inside its replica; 0 = Ray head / vLLM master (serves the API)
    replica: int | None = None                  # the replica it is part of; None: it runs whole replicas of its own
    head: bool = True                           # rank 0
    gpu_ids: list[int] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)   # per-node additions (VLLM_HOST_IP, CPU thread binding)
    head_address: str | None = None             # rank 0 of its replica (spanning nodes)


@dataclass
class PlanWarning:
    code: str                                   # e.g. "moe-triton-compile", "tp-over-pcie", "thin-margin"
    message: str


@dataclass
class Memory:
    total_gib: float = 0.0                      # per GPU, as CUDA/torch reports it
    budget_gib: float = 0.0                     # total × gpu_memory_utilization
    weights_gib: float = 0.0
    activation_peak_gib: float = 0.0
    non_torch_gib: float = 0.0
    cuda_graph_gib: float = 0.0
    sampler_warmup_gib: float = 0.0
    kv_cache_gib: float = 0.0
    kv_cache_tokens: int = 0
    max_concurrency: float = 0.0                # at max_model_len
    kv_bytes_per_token: int = 0                 # per GPU (per TP rank)
    encoder_profile_gib: float = 0.0            # vision encoder profiling peak (estimate; in activation_peak_gib)
    kv_pool_tokens: int = 0                     # tokens of short requests the pool holds (hybrid models: below
                                                # kv_cache_tokens, which vLLM >= 0.25 prints as concurrency x max_model_len)


@dataclass
class Plan:
    model: dict[str, Any]                       # {"id", "served_name", "path", ...}
    vllm_version: str
    image: str
    hardware: dict[str, Any]                    # Inventory.to_dict() + {"source": "probed"|"simulated"|"profile"}
    replicas: list[Replica]
    vllm_args: dict[str, Any]                   # every vLLM flag chosen (per replica), underscore names
    memory: Memory
    fits: bool
    failure_stage: str | None = None            # None | "weights" | "activation" | "kv_cache" | "sampler_warmup" | "cuda_graph" | "startup" (free < budget) | "kv_cache_allocation" (--kv-cache-memory-bytes beyond free memory)
    margin_gib: float = 0.0
    warnings: list[PlanWarning] = field(default_factory=list)
    command: str = ""                           # the `vllm serve ...` of replica 0
    env: dict[str, str] = field(default_factory=dict)   # non-secret environment the server needs
    env_secrets: list[str] = field(default_factory=list) # secret variables expected (names only, never values)
    extra_args: list[str] = field(default_factory=list) # passed to vLLM verbatim (after `--`)
    nodes: list[PlanNode] = field(default_factory=list)        # multi-node plans (one entry per node)
    profile: str | None = None
    reasons: dict[str, str] = field(default_factory=dict)      # flag → why it was chosen
    assumptions: list[str] = field(default_factory=list)       # what the planner assumed (version rules, ...)
    calibration: dict[str, Any] | None = None   # a calibration record used, if any
    explain: list[str] = field(default_factory=list)           # the memory arithmetic, line by line
    alternatives: list[dict[str, Any]] = field(default_factory=list)  # same layout at other max_num_seqs
    performance: dict[str, Any] | None = None   # planning/performance.py at the --input-len/--output-len load
    slo: dict[str, Any] | None = None           # `plan --slo`: the targets, workload and search (planning/slo.py)
    candidates: list[dict[str, Any]] = field(default_factory=list)   # `plan --slo`: ranked, predicted figures
    cpu: bool = None                            # type: ignore[assignment]  # the CPU build (set by the planner; None → from an older plan)
    served_name: str = ""                       # the name clients ask for (set by the planner)

    def __post_init__(self) -> None:
        """Plans saved before ``cpu``/``served_name``/``image``/``nodes`` were settled by the planner
        are upgraded here, once; every consumer reads the fields."""
        if self.cpu is None:
            self.cpu = _legacy_cpu(self)
        self.cpu = bool(self.cpu)
        m = self.model if isinstance(self.model, dict) else {}
        self.served_name = str(self.served_name or m.get("served_name") or m.get("id") or m.get("path") or "")
        self.image = _legacy_image(str(self.image or "").strip(), str(self.vllm_version or ""), self.cpu)
        self.nodes = _nodes(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Plan":
        """The plan in ``d`` (a ``to_dict()`` document). TypeError when ``d`` or one of its
        parts has the wrong shape (not an object, replicas not a list of objects, ...)."""
        if not isinstance(d, dict):
            raise TypeError(f"a plan is a JSON object, not {_json_type(d)}")
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        for key, want in (("replicas", list), ("memory", dict), ("warnings", list), ("env", dict),
                          ("env_secrets", list), ("extra_args", list), ("vllm_args", dict),
                          ("model", dict), ("hardware", dict), ("nodes", list)):
            if key in d and not isinstance(d[key], want):
                raise TypeError(f"'{key}' must be a JSON {'object' if want is dict else 'array'}, "
                                f"not {_json_type(d[key])}")
        for key in ("replicas", "warnings"):
            if any(not isinstance(x, dict) for x in d.get(key, [])):
                raise TypeError(f"every item of '{key}' must be a JSON object")
        d["replicas"] = [Replica(**r) for r in d.get("replicas", [])]
        d["memory"] = Memory(**{k: v for k, v in d.get("memory", {}).items()
                                if k in {f.name for f in fields(Memory)}})
        d["warnings"] = [PlanWarning(**w) for w in d.get("warnings", [])]
        return cls(**d)                         # __post_init__ upgrades older shapes

    @classmethod
    def load(cls, path: str) -> "Plan":
        """A saved ``vllm-ops plan --json`` document; MalformedFile (exit 2) when it is missing,
        not JSON, not a JSON object, or not shaped like a plan."""
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            raise MalformedFile(f"plan file not found: {path}") from None
        except IsADirectoryError:
            raise MalformedFile(f"{path}: is a directory, not a plan file") from None
        except json.JSONDecodeError as exc:
            raise MalformedFile(f"{path}: not a vllm-ops plan (not JSON: {exc})") from None
        except (ValueError, OSError) as exc:  # not UTF-8, unreadable
            raise MalformedFile(f"{path}: not a vllm-ops plan ({type(exc).__name__})") from None
        if not isinstance(doc, dict):
            raise MalformedFile(f"{path}: a plan is a JSON object, not {_json_type(doc)}")
        try:
            return cls.from_dict(doc)
        except (ValueError, TypeError, KeyError) as exc:
            raise MalformedFile(f"{path}: not a vllm-ops plan ({exc})") from None


GPU_IMAGE = "vllm/vllm-openai"
CPU_IMAGE = "vllm/vllm-openai-cpu"


def default_image(vllm_version: str, cpu: bool) -> str:
    """The image the planner pins: ``vllm/vllm-openai[-cpu]:v<version>``."""
    return f"{CPU_IMAGE if cpu else GPU_IMAGE}:v{str(vllm_version).strip().lstrip('v')}"


def pinned_image(plan: "Plan") -> str:
    """The plan's image, refused (BadInput) unless pinned to a version or a digest."""
    image = plan.image
    repo = CPU_IMAGE if plan.cpu else GPU_IMAGE
    if not image:
        raise BadInput("plan: neither image nor vllm_version is set; cannot pin the image")
    check_text(image, "image")
    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    if "@sha256:" in image:
        return image                            # a digest pins it
    if not tag or tag.startswith("latest") or "@" in name:
        raise BadInput(f"plan: image {image!r} is not pinned to a version",
                       hint=f"use {repo}:v{str(plan.vllm_version or '<version>').lstrip('v')}")
    return image


# -- older saved plans (upgraded once, in Plan.__post_init__) ------------------------------------
def _legacy_cpu(plan: "Plan") -> bool:
    """Plans saved before ``cpu`` existed: the CPU image, the cpu profile, VLLM_TARGET_DEVICE=cpu,
    or hardware without GPUs and replicas without GPU ids."""
    hw = plan.hardware if isinstance(plan.hardware, dict) else {}
    if hw.get("kind") == "cpu" or CPU_IMAGE in str(plan.image or "") or "cpu" in str(plan.profile or "").lower():
        return True
    if (plan.env or {}).get("VLLM_TARGET_DEVICE") == "cpu":
        return True
    gpus = hw.get("gpu_count")
    if gpus is None:
        gpus = len(hw.get("gpus") or ()) + sum(len(n.get("gpus") or ()) for n in hw.get("nodes") or ()
                                               if isinstance(n, dict))
    return not gpus and all(not getattr(r, "gpu_ids", None) for r in plan.replicas or ())


def _legacy_image(image: str, version: str, cpu: bool) -> str:
    if not image:
        return default_image(version, cpu) if version.strip().lstrip("v") else ""
    if cpu and image.startswith(GPU_IMAGE + ":"):
        return CPU_IMAGE + image[len(GPU_IMAGE):]
    return image


def _nodes(plan: "Plan") -> list[PlanNode]:
    """``plan.nodes`` as PlanNodes; older plans held dicts of the planner's shape, one
    ``{"replica", "nodes": [names]}`` group per replica, or a flat list of hosts."""
    raw = list(plan.nodes or [])
    if all(isinstance(n, PlanNode) for n in raw):
        return raw
    if all(isinstance(n, dict) and "rank" in n for n in raw):
        keys = {f.name for f in fields(PlanNode)}
        return [PlanNode(**{k: v for k, v in n.items() if k in keys}) for n in raw]
    groups = [n for n in raw if isinstance(n, dict) and isinstance(n.get("nodes"), list)]
    if groups:
        return [PlanNode(name=str(x), rank=j, replica=int(g.get("replica") or 0) if len(g["nodes"]) > 1 else None,
                         head=j == 0, head_address=str(g["nodes"][0]))
                for g in groups for j, x in enumerate(g["nodes"])]
    return _flat_nodes(plan, raw)


def _flat_nodes(plan: "Plan", raw: list[Any]) -> list[PlanNode]:
    """A flat list of hosts: a replica spans nodes when TP x PP is more than one node's GPUs."""
    def addr(n: Any) -> str:
        return str((n.get("address") or n.get("hostname") or n.get("node") or n.get("name") or "")
                   if isinstance(n, dict) else n or "")

    def gpus(n: Any) -> list[int]:
        g = n.get("gpus") if isinstance(n, dict) else None
        return list(range(g)) if isinstance(g, int) else [int(x) for x in g] if isinstance(g, list) else []

    va = plan.vllm_args if isinstance(plan.vllm_args, dict) else {}
    world = int(va.get("tensor_parallel_size") or 1) * int(va.get("pipeline_parallel_size") or 1)
    per_node = next((len(gpus(n)) for n in raw if gpus(n)), 0)
    if not per_node:
        hw_nodes = (plan.hardware or {}).get("nodes") or ()
        per_node = len(hw_nodes[0].get("gpus") or ()) if hw_nodes and isinstance(hw_nodes[0], dict) else 0
    per_node = per_node or max((len(r.gpu_ids) for r in plan.replicas or ()), default=1) or 1
    span = -(-world // per_node) if len(raw) > 1 and not plan.cpu and world > per_node else 1
    out = []
    for i, n in enumerate(raw):
        name = str((n.get("name") or n.get("hostname") or n.get("address")) if isinstance(n, dict) else n or "") \
            or f"node{i}"
        address = (n.get("address") if isinstance(n, dict) else str(n)) or None
        rank, group = (i % span, i // span) if span > 1 else (0, None)
        out.append(PlanNode(name=name, address=address, rank=rank, replica=group, head=rank == 0,
                            gpu_ids=gpus(n), head_address=addr(raw[i - rank]) if span > 1 else None))
    return out


def _json_type(x: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(x), "a number")
