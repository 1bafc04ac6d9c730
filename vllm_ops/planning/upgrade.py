"""Does a deployment still work on another vLLM release? The rules and the diff.

    check_upgrade(deployment, to_version) -> UpgradeReport

A :class:`Deployment` is what runs now: the model, the hardware, the release, the flags the
deployment pins (vLLM's own flags, underscore names) and the other arguments it passes. It comes
from a saved plan (:func:`deployment_from_plan`: the pins are the flags the plan's ``reasons`` say
were pinned, or set by its profile; the rest were vLLM's defaults and are re-chosen) or from a
command line / compose file (:func:`deployment_from_argv`: every flag given is pinned).

The check re-plans the same model, hardware and pins for both releases and lists every change that
matters, each with the release that made it and its source; every release rule comes from the one
version table, :mod:`vllm_ops.planning.versions` (removed flags, request fields, defaults, memory
rules). Only upgrades are checked: a downgrade is refused (BadInput), because the table records
what releases removed and changed, not when flags were added, so an older release could reject a
flag the deployment passes and the check would not see it.

Exit codes (:attr:`UpgradeReport.exit_code`): 0 runs unchanged · 1 needs edits (removed flags it
passes, request fields callers may send) · 3 no longer fits on the new release.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from vllm_ops.errors import BadInput
from vllm_ops.hardware.inventory import Inventory
from vllm_ops.models import load_model_spec
from vllm_ops.planning import plan
from vllm_ops.planning.argv import after_entry, arg_lines, optimization_level, parse_flags, strip_flags
from vllm_ops.planning.vllm_flags import spelled_out
from vllm_ops.planning.pins import PIN_KEYS
from vllm_ops.planning.versions import (
    DEFAULT_KEYS, FlagRemoval, KNOWN_RELEASES, REMOVED_FLAGS, REQUEST_CHANGES, check_release, parse_version,
    rules_between, rules_for,
)

# what a finding asks for; the exit code follows the most severe one
EDIT, CALLERS, INFO, NO_FIT = "edit", "callers", "info", "no-longer-fits"
_EXIT = {NO_FIT: 3, EDIT: 1, CALLERS: 1, INFO: 0}
_SEVERITY = (NO_FIT, EDIT, CALLERS, INFO)
# flags a plan records the reason of, and the words that mark them as the deployment's own choice
_OWN_CHOICE = ("(pinned)", "profile")


@dataclass
class Deployment:
    source: str                         # "plan FILE", "compose FILE", "command"
    version: str                        # the vLLM release it runs now
    model: str                          # id, catalog name or directory (for load_model_spec)
    inventory: Any                      # hardware.Inventory
    pins: dict[str, Any] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)   # every other argument it passes vLLM
    env: dict[str, str] = field(default_factory=dict)
    env_secrets: list[str] = field(default_factory=list)
    served_name: str | None = None
    port: int = 8000
    backend: str | None = None          # multi-node: "ray" | "native"
    command: list[str] | None = None    # the argv as given (command line / compose), None for a plan


@dataclass
class Finding:
    kind: str          # "removed-flag" | "request-field" | "default" | "memory-rule" | "fit"
    action: str        # EDIT | CALLERS | INFO | NO_FIT
    since: str         # the release that made the change
    subject: str       # the flag, field, default or figure
    what: str
    fix: str | None = None
    source: str = ""


@dataclass
class UpgradeReport:
    from_version: str
    to_version: str
    source: str
    model: str
    findings: list[Finding]
    before: dict[str, Any]              # figures on the current release (re-planned with today's rules)
    after: dict[str, Any]               # figures on the new release
    command_after: str                  # the deployment's command for the new release, fixes applied
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return max((_EXIT[f.action] for f in self.findings), default=0)

    @property
    def verdict(self) -> str:
        return {0: "runs unchanged", 1: "needs edits", 3: "no longer fits"}[self.exit_code]

    def fixes(self) -> list[str]:
        return [f.fix for f in self.findings if f.fix and f.action in (EDIT, CALLERS, NO_FIT)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(exit_code=self.exit_code, verdict=self.verdict, fixes=self.fixes())
        return d


# ---------------------------------------------------------------------------- deployments
def plan_pins(plan) -> dict[str, Any]:
    """The flags a saved plan's deployment chose itself: pinned (``reasons`` say "(pinned)") or
    set by its profile; a value the planner took from vLLM's defaults is not a pin."""
    va, why = plan.vllm_args or {}, plan.reasons or {}
    pins = {k: va[k] for k in PIN_KEYS
            if va.get(k) is not None and any(w in str(why.get(k, "")) for w in _OWN_CHOICE)}
    if va.get("quantization"):
        pins["quantization"] = va["quantization"]
    if int(va.get("data_parallel_size") or 1) > 1:
        pins["data_parallel_size"] = int(va["data_parallel_size"])
    if not va.get("enforce_eager"):
        pins.pop("enforce_eager", None)
    return pins


def deployment_from_plan(plan, source: str) -> Deployment:
    """The deployment a saved ``vllm-ops plan --json`` describes."""
    try:
        inventory = Inventory.from_dict(plan.hardware or {})
    except (TypeError, ValueError, KeyError) as exc:
        raise BadInput(f"{source}: its hardware cannot be read ({exc})") from None
    m = plan.model or {}
    model = m.get("path") or m.get("id")
    if not model:
        raise BadInput(f"{source}: the plan names no model")
    served = m.get("served_name")
    va = plan.vllm_args or {}
    return Deployment(
        source=source, version=str(plan.vllm_version), model=str(model), inventory=inventory,
        pins=plan_pins(plan), extra_args=[str(a) for a in plan.extra_args or ()], env=dict(plan.env or {}),
        env_secrets=list(plan.env_secrets or ()), served_name=served if served and served != m.get("id") else None,
        port=int(plan.replicas[0].port) if plan.replicas else int(va.get("port") or 8000),
        backend="native" if va.get("nnodes") else None)


def deployment_from_argv(argv: list[str], *, version: str, inventory, source: str,
                         env: dict[str, str] | None = None) -> Deployment:
    """The deployment a ``vllm serve MODEL --flag v ...`` argument list describes (``vllm serve``
    and the module entry point may lead; the model is the first positional word or ``--model``).
    Every planner flag given is a pin; the other arguments pass through unchanged."""
    words = after_entry(list(argv))
    model = None
    if words and not words[0].startswith("-"):
        model, words = words[0], words[1:]
    pins: dict[str, Any] = {}
    extra: list[str] = []
    served, port = None, 8000
    for group in arg_lines(words):
        group = (*spelled_out(group[:1]), *group[1:])   # -tp, --max-num-seq: vLLM's long names
        if group[0] == "-O" or optimization_level(group[0]) is not None:
            extra += list(group)                              # vLLM's -O3: an optimization level
            continue
        if not group[0].startswith("--"):
            raise BadInput(f"{source}: {group[0]!r} is not a flag (one positional model only)")
        name = group[0][2:].split("=", 1)[0].replace("-", "_")
        value = parse_flags(list(group)).get(name)
        if name in ("model", "model_tag") and not model:
            model = str(value)
        elif name == "served_model_name" and len(group) > 2:
            extra += list(group)                              # several names: the planner keeps them all
        elif name == "served_model_name":
            served = str(value)
        elif name == "port":
            port = int(value)
        elif name in PIN_KEYS and value is not None:
            pins[name] = True if name == "enforce_eager" else value
        else:
            extra += list(group)
    if not model:
        raise BadInput(f"{source}: no model in the command", hint="vllm serve MODEL [flags...]")
    return Deployment(source=source, version=version, model=model, inventory=inventory, pins=pins,
                      extra_args=extra, env=dict(env or {}), served_name=served, port=port,
                      command=list(argv))


# ---------------------------------------------------------------------------- the check
def check_upgrade(dep: Deployment, to_version: str, *,
                  load_model: Callable[[str], Any] | None = None) -> UpgradeReport:
    """Re-plan ``dep`` for ``to_version`` and list what changes. BadInput for a release the
    version table does not know, or a downgrade."""
    old = check_release(dep.version, "current vLLM release")
    new = check_release(to_version, "target vLLM release (--to)")
    if KNOWN_RELEASES.index(new) < KNOWN_RELEASES.index(old):
        raise BadInput(f"--to {new} is older than the deployment's vLLM {old}: downgrade checks are refused",
                       hint="the version table records removals and changed defaults, not when flags were added; "
                            f"plan for {new} directly (vllm-ops plan --vllm-version {new})")
    spec = (load_model or _load_model)(dep.model)
    passed = _flags_passed(dep)
    removed = [r for r in REMOVED_FLAGS if r.flag in passed and parse_version(r.removed_in) <= parse_version(new)]
    kept_args = _strip(dep.extra_args, removed)
    before = _plan(dep, spec, old, dep.extra_args)
    after = _plan(dep, spec, new, kept_args)
    findings = [_removed_finding(r, old, passed[r.flag]) for r in removed]
    findings += _request_findings(old, new)
    findings += _default_findings(dep, spec, old, new, before, after)
    findings += _memory_rule_findings(spec, before, old, new)
    notes: list[str] = []
    if not after.fits:
        findings.append(_fit_finding(before, after, new))
    if not before.fits:
        notes.append(f"the deployment does not fit on vLLM {old} either ({before.failure_stage})")
    if dep.command is not None:
        command_after = _join(_strip(dep.command, removed))
    else:
        command_after = after.command
        if any(f.kind == "default" and "re-planned:" in f.what for f in findings):
            notes.append(f"defaults were re-chosen for {new}; a deployment rendered or launched from the old plan "
                         f"passes every flag explicitly and keeps the old values: re-plan and re-render it")
    notes += [w.message for w in after.warnings if w.code not in {x.code for x in before.warnings}]
    findings.sort(key=lambda f: (_SEVERITY.index(f.action), parse_version(f.since)))
    return UpgradeReport(from_version=old, to_version=new, source=dep.source, model=spec.id, findings=findings,
                         before=_figures(before), after=_figures(after), command_after=command_after, notes=notes)


def _load_model(name: str):
    return load_model_spec(name)


def _plan(dep: Deployment, spec, version: str, extra_args: list[str]):
    return plan(spec, dep.inventory, pins=dict(dep.pins), vllm_version=version, extra_args=tuple(extra_args),
                env=dict(dep.env), served_name=dep.served_name, port=dep.port, env_secrets=dep.env_secrets,
                **({"backend": dep.backend} if dep.backend else {}))


def _flags_passed(dep: Deployment) -> dict[str, str]:
    """flag → the words that pass it (``--swap-space 4``), from everything the deployment gives vLLM."""
    words = dep.command if dep.command is not None else dep.extra_args
    out: dict[str, str] = {}
    for group in arg_lines([str(w) for w in words]):
        flag = group[0].split("=", 1)[0]
        if flag.startswith("--"):
            out.setdefault(flag, " ".join(group))
    return out


def _strip(args: list[str], removed: list[FlagRemoval]) -> list[str]:
    return strip_flags(list(args), {r.flag[2:].replace("-", "_") for r in removed}) if removed else list(args)


def _join(argv: list[str]) -> str:
    import shlex

    return shlex.join(argv)


# ---------------------------------------------------------------------------- findings
def _removed_finding(r: FlagRemoval, old: str, words: str) -> Finding:
    already = parse_version(r.removed_in) <= parse_version(old)
    what = (f"{r.flag} was removed in vLLM {r.removed_in}: vLLM stops at start with 'unrecognized arguments'"
            + (f" (already on {old}: the deployment cannot start now either)" if already else ""))
    return Finding("removed-flag", EDIT, r.removed_in, r.flag, what, f"remove `{words}`: {r.fix}", r.source)


def _request_findings(old: str, new: str) -> list[Finding]:
    lo, hi = parse_version(old), parse_version(new)
    out = []
    for c in REQUEST_CHANGES:
        if lo < parse_version(c.since) <= hi:
            out.append(Finding("request-field", CALLERS if c.removed else INFO, c.since, ", ".join(c.fields),
                               f"{c.what}; the bundled client {c.client}",
                               f"callers: {c.fix}" if c.removed else None, c.source))
    return out


def _default_findings(dep: Deployment, spec, old: str, new: str, before, after) -> list[Finding]:
    cpu = _is_cpu(after)
    out = []
    for r in rules_between(old, new):
        if r.key not in DEFAULT_KEYS or not _applies(r.key, spec, cpu, dep.pins):
            continue
        flags = DEFAULT_KEYS[r.key]
        pinned = [f for f in flags if f in dep.pins]
        was = rules_for(old).values.get(r.key)
        subject = " / ".join("--" + f.replace("_", "-") for f in flags) or r.key.replace("_", " ")
        if flags and len(pinned) == len(flags):
            what = (f"default {was} -> {r.value} ({r.why}); pinned by the deployment at "
                    + ", ".join(f"{dep.pins[f]}" for f in pinned) + ": not affected")
        else:
            what = f"default {was} -> {r.value}: {r.why}" + _effect(flags, before, after)
        out.append(Finding("default", INFO, r.since, subject, what, None, r.why))
    return out


def _applies(key: str, spec, cpu: bool, pins: dict) -> bool:
    if cpu and key not in ("engine", "batch_defaults"):
        return False        # GPU memory rules; the CPU KV cache comes from VLLM_CPU_KVCACHE_SPACE
    if key == "dense_runner":
        return spec.moe is None
    if key == "moe_runner":
        return spec.moe is not None
    if key.startswith("cudagraph"):
        return not pins.get("enforce_eager")
    if key == "fp8_block_moe_hopper":
        from vllm_ops.planning.perf_kernels import block_fp8_moe
        return block_fp8_moe(spec)
    return True


def _effect(flags: tuple[str, ...], before, after) -> str:
    """"; re-planned: --max-num-seqs 128 -> 256" for the flags the default sets."""
    moved = [f"--{f.replace('_', '-')} {before.vllm_args.get(f)} -> {after.vllm_args.get(f)}"
             for f in flags if before.vllm_args.get(f) != after.vllm_args.get(f)]
    return ("; re-planned: " + ", ".join(moved)) if moved else ""


def _memory_rule_findings(spec, before, old: str, new: str) -> list[Finding]:
    """Memory-accounting rows of the version table that take effect between the releases (the
    runner-specific ones only for the runner this model uses)."""
    runner_key = "moe_runner" if spec.moe is not None else "dense_runner"
    runners = {rules_for(old).values.get(runner_key), rules_for(new).values.get(runner_key)}
    tp = int((before.vllm_args or {}).get("tensor_parallel_size") or 1)
    out = []
    if _is_cpu(before):
        return out
    for r in rules_between(old, new):
        if r.key in DEFAULT_KEYS:
            continue
        if "v1_runner" in r.key and "v1" not in runners or "v2_runner" in r.key and "v2" not in runners:
            continue
        if "tp_doubling" in r.key and tp < (2 if "first" in r.key else 4):
            continue        # the step at TP2 / per further doubling: not at this TP
        out.append(Finding("memory-rule", INFO, r.since, r.key, r.why, None, r.why))
    return out


def _fit_finding(before, after, new: str) -> Finding:
    short = -min(after.margin_gib, 0)
    what = (f"does not fit on vLLM {new}: {after.failure_stage} (short by {short:.2f} GiB per GPU)"
            + (f"; fits on {before.vllm_version} with {before.margin_gib:.2f} GiB to spare" if before.fits else ""))
    fix = ("lower --max-model-len or --max-num-seqs, raise --gpu-memory-utilization, or add GPUs "
           f"(`vllm-ops plan --vllm-version {new}` with fewer pins chooses a layout that fits)")
    return Finding("fit", NO_FIT, new, "memory", what, fix, "this version table's memory rules (vllm-ops plan)")


def _is_cpu(p) -> bool:
    return bool(p.cpu)


def _figures(p) -> dict[str, Any]:
    m, va = p.memory, p.vllm_args or {}
    keys = ("tensor_parallel_size", "pipeline_parallel_size", "gpu_memory_utilization", "max_model_len",
            "max_num_seqs", "max_num_batched_tokens")
    return {"vllm_version": p.vllm_version, "fits": p.fits, "failure_stage": p.failure_stage,
            "margin_gib": p.margin_gib, "flags": {k: va.get(k) for k in keys},
            "memory": asdict(m), "runner": next((a.split(": ", 1)[1] for a in p.assumptions
                                                 if a.startswith("model runner for this model")), None)}
