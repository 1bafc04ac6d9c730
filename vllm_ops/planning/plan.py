"""The Plan: what `vllm-ops plan --json` prints and what render/launch consume.

A plain dataclass with ``to_dict()`` / ``from_dict()``; ``from_dict(plan.to_dict())`` round-trips,
so a saved ``vllm-ops plan --json > plan.json`` can be rendered or launched later.
Memory figures are per GPU in GiB (as vLLM prints them); tokens and concurrency per replica.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class Replica:
    gpu_ids: list[int]
    port: int = 8000
    node: str | None = None


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
    failure_stage: str | None = None            # None | "weights" | "activation" | "kv_cache" | "sampler_warmup" | "cuda_graph" | "startup" (free < budget)
    margin_gib: float = 0.0
    warnings: list[PlanWarning] = field(default_factory=list)
    command: str = ""                           # the `vllm serve ...` of replica 0
    env: dict[str, str] = field(default_factory=dict)   # non-secret environment the server needs
    extra_args: list[str] = field(default_factory=list) # passed to vLLM verbatim (after `--`)
    nodes: list[dict[str, Any]] = field(default_factory=list)  # multi-node plans
    profile: str | None = None
    reasons: dict[str, str] = field(default_factory=dict)      # flag → why it was chosen
    assumptions: list[str] = field(default_factory=list)       # what the planner assumed (version rules, ...)
    calibration: dict[str, Any] | None = None   # a calibration record used, if any
    explain: list[str] = field(default_factory=list)           # the memory arithmetic, line by line
    alternatives: list[dict[str, Any]] = field(default_factory=list)  # same layout at other max_num_seqs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Plan":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["replicas"] = [Replica(**r) for r in d.get("replicas", [])]
        d["memory"] = Memory(**{k: v for k, v in d.get("memory", {}).items()
                                if k in {f.name for f in fields(Memory)}})
        d["warnings"] = [PlanWarning(**w) for w in d.get("warnings", [])]
        return cls(**d)

    @classmethod
    def load(cls, path: str) -> "Plan":
        from vllm_ops.errors import MalformedFile

        try:
            with open(path, encoding="utf-8") as f:
                return cls.from_dict(json.load(f))
        except FileNotFoundError:
            raise MalformedFile(f"plan file not found: {path}") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise MalformedFile(f"{path}: not a vllm-ops plan ({exc})") from None
