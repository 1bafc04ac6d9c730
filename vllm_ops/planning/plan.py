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

from vllm_ops.planning.argv import SECRET_FLAGS, split_secret_args  # noqa: F401  (re-exported)

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
    env_secrets: list[str] = field(default_factory=list) # secret variables expected (names only, never values)
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
        return cls(**d)

    @classmethod
    def load(cls, path: str) -> "Plan":
        """A saved ``vllm-ops plan --json`` document; MalformedFile (exit 2) when it is missing,
        not JSON, not a JSON object, or not shaped like a plan."""
        from vllm_ops.errors import MalformedFile

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


def _json_type(x: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(x), "a number")
