"""Tune on the box: launch the top ``plan --slo`` candidates one after another, bench each with the
workload, keep the best measured, write a profile and calibration records.

    trials = pick_trials(search_result, max_starts)
    tune(search_result, TuneOptions(...), progress) -> TuneResult
    write_profile(result, search_result, directory, name, base=profile) -> Path

One start per candidate (``max_starts``, default 3) and never a restart: memory is planned, not
probed (``auto_retry`` off; a start that fails is recorded and the next candidate runs). Each
candidate's replica 0 is started alone and benched with the load ONE replica sees (the busiest
replica of the split); the box's figure is that replica's times the replicas (closed loop: scaled
by the box's concurrency over the benched one). Every server is stopped in ``finally`` (Ctrl-C
included). Each bench writes a calibration record of kind ``perf`` (predicted beside
measured, the format of ``vllm-ops bench --plan``) to ``calibration.jsonl``; the memory records are written by the launch itself.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from vllm_ops.errors import VllmOpsError
from vllm_ops.launch import calibration, launcher, lifecycle
from vllm_ops.loadtest.bench import run_bench
from vllm_ops.loadtest.predicted import measured_of
from vllm_ops.loadtest.report import one_time_cost_warning
from vllm_ops.profiles import load_profile

Progress = Callable[[str, str], None]
DEFAULT_MAX_STARTS = 3


@dataclass
class TuneOptions:
    vllm: Any                                   # VllmCommand (locate.find_vllm)
    store: Any                                  # StateStore
    backend: Any = None                         # LaunchBackend (default: process)
    max_starts: int = DEFAULT_MAX_STARTS
    num_prompts: int = 50
    port: int | None = None
    ready_timeout: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    vllm_version: str | None = None
    api_key: str | None = None
    name: str = "vllm-ops-tune"
    keep_dir: str | None = None                 # each trial's plan.json + bench JSON kept under <keep_dir>/<name>-<rank>/


@dataclass
class Trial:
    candidate: Any                              # slo.Candidate
    started: bool = False
    ready_s: float | None = None
    error: str | None = None
    measured: dict[str, Any] = field(default_factory=dict)   # one replica at its load
    box_output_tokens_per_s: float | None = None
    goodput_per_gpu: float | None = None        # measured output tok/s per GPU (0 if it misses)
    meets: bool = False
    misses: list[str] = field(default_factory=list)
    deployment: str | None = None

    def to_dict(self) -> dict[str, Any]:
        c = self.candidate
        return {"layout": c.layout, "flags": c.flags(), "env": dict(c.env), "predicted_rank": c.rank,
                "predicted": c.performance,
                "predicted_output_tokens_per_s_per_gpu": c.output_tokens_per_s_per_gpu, "load": c.load,
                "started": self.started, "ready_s": self.ready_s, "error": self.error,
                "measured": self.measured, "box_output_tokens_per_s": self.box_output_tokens_per_s,
                "goodput_per_gpu": self.goodput_per_gpu, "meets": self.meets, "misses": self.misses}


@dataclass
class TuneResult:
    trials: list[Trial]
    best: Trial | None
    interrupted: bool = False
    profile_path: str | None = None
    calibration_path: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def starts(self) -> int:
        return sum(1 for t in self.trials if t.started or t.error)

    def to_dict(self) -> dict[str, Any]:
        return {"best": self.best.to_dict() if self.best else None, "starts": self.starts,
                "trials": [t.to_dict() for t in self.trials], "interrupted": self.interrupted,
                "profile": self.profile_path, "calibration": self.calibration_path, "notes": self.notes}


def pick_trials(result: Any, max_starts: int) -> list[Any]:
    """Up to ``max_starts`` candidates that fit: the best of each layout first (rank order), then
    the next ranked variants. Candidates predicted to meet the SLO come before those that miss."""
    fitting = [c for c in result.candidates if c.fits]
    firsts: dict[tuple, Any] = {}
    for c in fitting:
        firsts.setdefault(c.layout_key, c)
    order = sorted(firsts.values(), key=lambda c: (not c.meets, c.rank))
    order += [c for c in fitting if c not in order and c.meets]
    order += [c for c in fitting if c not in order]
    return order[:max(max_starts, 0)]


def tune(result: Any, opts: TuneOptions, progress: Progress | None = None) -> TuneResult:
    """Launch, bench and stop each picked candidate in turn (see the module doc)."""
    say = progress or (lambda stage, detail="": None)
    picked = pick_trials(result, opts.max_starts)
    trials: list[Trial] = []
    out = TuneResult(trials=trials, best=None)
    try:
        for i, cand in enumerate(picked, 1):
            say("tune", f"[{i}/{len(picked)}] {cand.layout}, max-num-seqs {cand.max_num_seqs}, "
                        f"max-num-batched-tokens {cand.max_num_batched_tokens}, KV {cand.kv_cache_dtype}"
                        + (f", weights {cand.quantization}" if cand.quantization else ""))
            trial = Trial(candidate=cand)
            trials.append(trial)
            _run_trial(trial, result, opts, say)
            if trial.measured:
                out.calibration_path = _record(trial, result, opts) or out.calibration_path
    except KeyboardInterrupt:
        out.interrupted = True
        say("tune", "interrupted: every server started is stopped")
    out.best = best_trial(trials, result.slo)
    return out


def _run_trial(trial: Trial, result: Any, opts: TuneOptions, say: Progress) -> None:
    """Start replica 0 of the candidate, bench it, stop it (always)."""
    from vllm_ops.client import VLLMError
    cand = trial.candidate
    lopts = launcher.LaunchOptions(
        vllm=opts.vllm, vllm_version=opts.vllm_version, name=f"{opts.name}-{cand.rank}",
        port=opts.port, env=dict(opts.env), extra_args=list(opts.extra_args), ready_timeout=opts.ready_timeout,
        validate=False, auto_retry=False, store=opts.store, replica=0,
        **({"backend": opts.backend} if opts.backend is not None else {}))
    dep = None
    try:
        try:
            res = launcher.launch(cand.plan, lopts, progress=lambda stage, detail="": say(stage, detail))
        except launcher.LaunchFailed as exc:
            trial.error = exc.one_line()
            say("tune", f"start failed: {trial.error}")
            return
        dep, trial.started, trial.ready_s = res.deployment, True, round(res.ready_s, 1)
        trial.deployment = dep.name
        try:
            _bench(trial, result, opts, dep.url, say)
        except (VllmOpsError, VLLMError, OSError) as exc:     # the next candidate still runs
            trial.error = f"bench failed: {getattr(exc, 'one_line', lambda: str(exc))()}"
            say("tune", trial.error)
    finally:
        if dep is not None:
            lifecycle.stop(dep, opts.store, lopts.backend)
            say("tune", f"stopped {dep.name}")


def _bench(trial: Trial, result: Any, opts: TuneOptions, url: str, say: Progress) -> None:
    cand, w = trial.candidate, result.workload
    load = cand.load or ({"concurrency": w.concurrency} if w.concurrency is not None else {"rate": w.rate})
    conc, rate = load.get("concurrency"), load.get("rate")
    served = cand.plan.model.get("served_name") if isinstance(cand.plan.model, dict) else None
    report = run_bench(url, model=served, concurrency=[int(conc)] if conc is not None else None,
                       request_rates=[float(rate)] if rate is not None else None,
                       num_prompts=opts.num_prompts, input_len=w.input_len, output_len=w.output_len,
                       api_key=opts.api_key, progress=say, sample_interval=0.5)
    _keep(trial, report, opts)
    lv = report.levels[0]
    trial.measured = {k: _r(v, 4 if k == "requests_per_s" else 2) for k, v in measured_of(lv).items()}
    trial.measured |= {"completed": lv.completed, "failed": lv.failed, "load": load,
                      "preemptions": lv.server.preemptions}
    one_time = one_time_cost_warning(lv)
    if one_time:        # a compile's spike is no property of the layout: the SLO reads the median, said so
        trial.measured |= {"ttft_ms_median": _r(lv.ttft_ms.p50), "ttft_note": one_time}
        say("tune", f"{cand.layout}: {one_time}")
    _judge(trial, result)
    say("tune", f"{cand.layout}: TTFT {trial.measured['ttft_ms']} ms, TPOT {trial.measured['tpot_ms']} ms, "
                f"{trial.box_output_tokens_per_s} output tok/s for the box"
                + ("" if trial.meets else f" (misses: {'; '.join(trial.misses)})"))


def _keep(trial: Trial, report: Any, opts: TuneOptions) -> None:
    """The trial's plan and bench report as ``vllm-ops plan --json`` / ``bench --json`` write them (the
    layout scripts/gpu_bench_matrix.sh keeps: regression data for the performance model)."""
    if not opts.keep_dir:
        return
    import json

    d = Path(opts.keep_dir).expanduser() / f"{opts.name}-{trial.candidate.rank}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "plan.json").write_text(trial.candidate.plan.to_json(indent=1), encoding="utf-8")
    conc = report.levels[0].concurrency if report.levels else None
    (d / f"bench-{report.input_len}-{report.output_len}-c{conc}.json").write_text(
        json.dumps(report.to_dict(), indent=1), encoding="utf-8")


def _judge(trial: Trial, result: Any) -> None:
    """Box throughput and goodput per GPU from one replica's measurement; the SLO check."""
    cand, w, slo, m = trial.candidate, result.workload, result.slo, trial.measured
    per_replica = float(m.get("output_tokens_per_s") or 0.0)
    load_c = (cand.load or {}).get("concurrency")
    if w.concurrency is not None and result.split and load_c:
        box = per_replica * w.concurrency / load_c       # closed loop: throughput per request in flight
    else:
        box = per_replica * (cand.replicas if result.split else 1)
    denom = cand.gpus_used if (w.rate is not None or not result.split) else (cand.per_gpu_of or cand.gpus_used)
    trial.box_output_tokens_per_s = _r(box)
    misses = []
    if m.get("failed"):
        misses.append(f"{m['failed']} request(s) failed")
    if m.get("tpot_ms") is None or m["tpot_ms"] > slo.tpot_ms:
        misses.append(f"TPOT {m.get('tpot_ms')} ms > {slo.tpot_ms:g} ms")
    ttft, which = (m["ttft_ms_median"], "median TTFT") if m.get("ttft_note") else (m.get("ttft_ms"), "TTFT")
    if slo.ttft_ms is not None and (ttft is None or ttft > slo.ttft_ms):
        misses.append(f"{which} {ttft} ms > {slo.ttft_ms:g} ms")
    trial.misses, trial.meets = misses, not misses
    trial.goodput_per_gpu = _r(box / max(denom, 1))


def best_trial(trials: list[Trial], slo: Any) -> Trial | None:
    """The measured best: meeting the SLO, most goodput per GPU; else the closest to the targets."""
    measured = [t for t in trials if t.measured]
    if not measured:
        return None
    meeting = [t for t in measured if t.meets]
    if meeting:
        return max(meeting, key=lambda t: (t.goodput_per_gpu or 0.0, -t.candidate.rank))
    return min(measured, key=lambda t: float(t.measured.get("tpot_ms") or math.inf) / slo.tpot_ms)


def _r(x: Any, nd: int = 2) -> float | None:
    return None if x is None else round(float(x), nd)


# -- records ---------------------------------------------------------------------------------------
def perf_record(trial: Trial, result: Any) -> dict[str, Any]:
    """A calibration record of kind ``perf`` (:func:`calibration.make_perf_record`): the prediction
    beside the measurement of one replica at the load it was benched with."""
    w = result.workload
    load = trial.measured.get("load") or {}
    workload = {"input_len": w.input_len, "output_len": w.output_len, **load,
                "num_requests": trial.measured.get("completed")}
    return calibration.make_perf_record(trial.candidate.plan, workload, trial.candidate.performance, trial.measured,
                                        ttft_paid_once=bool(trial.measured.get("ttft_note")))


def _record(trial: Trial, result: Any, opts: TuneOptions) -> str | None:
    try:
        return str(calibration.append(perf_record(trial, result), opts.store.root))
    except OSError:
        return None


# -- the profile -----------------------------------------------------------------------------------
def profile_name_for(base: str | None, model_id: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", model_id.lower().split("/")[-1]).strip("-._")
    name = f"{base or 'tuned'}-{slug}"[:64].rstrip("-._")
    return name if re.match(r"^[a-z0-9]", name) else f"t{name}"[:64]


def write_profile(out: TuneResult, result: Any, directory: str | Path, name: str | None = None,
                  base: Any = None) -> Path:
    """``<directory>/<name>.yaml`` in the profiles format: the box of ``base`` (or of the plan) with
    the best measured flags as ``vllm_defaults``; loaded back to check it."""
    import yaml

    t = out.best
    if t is None:
        raise ValueError("no candidate was measured: no profile to write")
    plan, c = t.candidate.plan, t.candidate
    model_id = str(plan.model.get("id"))
    name = name or profile_name_for(getattr(base, "name", None), model_id)
    doc = _profile_doc(plan, base)
    doc["name"] = name
    defaults = dict(doc.get("vllm_defaults") or {})
    va = plan.vllm_args
    defaults.update({"tensor_parallel_size": c.tensor_parallel_size, "max_num_seqs": c.max_num_seqs,
                     "max_num_batched_tokens": c.max_num_batched_tokens})
    if c.pipeline_parallel_size > 1:
        defaults["pipeline_parallel_size"] = c.pipeline_parallel_size
    if c.kv_cache_dtype and c.kv_cache_dtype != "auto":
        defaults["kv_cache_dtype"] = c.kv_cache_dtype
    if c.quantization:
        defaults["quantization"] = c.quantization
    if va.get("gpu_memory_utilization") is not None and doc.get("kind") != "cpu":
        defaults["gpu_memory_utilization"] = va["gpu_memory_utilization"]
    doc["vllm_defaults"] = defaults
    if c.env:                         # the search's environment (--slo: DeepGEMM's MoE turned off)
        doc["env"] = {**(doc.get("env") or {}), **c.env}
    w, m = result.workload, t.measured
    load = f"concurrency {w.concurrency}" if w.concurrency is not None else f"rate {w.rate:g}/s"
    doc["description"] = (f"{doc.get('description') or name}; tuned by vllm-ops tune for {model_id}"
                          f"{' (vLLM ' + plan.vllm_version + ')' if plan.vllm_version else ''}")[:300]
    doc["notes"] = list(doc.get("notes") or []) + [
        f"vllm-ops tune {time.strftime('%Y-%m-%d', time.gmtime())}: {model_id}, in {w.input_len} / out "
        f"{w.output_len} tokens, {load}; SLO TPOT <= {result.slo.tpot_ms:g} ms"
        + (f", TTFT <= {result.slo.ttft_ms:g} ms" if result.slo.ttft_ms else "")
        + f"; best of {len([x for x in out.trials if x.measured])} measured: {c.layout}, TTFT {m.get('ttft_ms')} ms, "
          f"TPOT {m.get('tpot_ms')} ms, {t.goodput_per_gpu} output tok/s per GPU"]
    path = Path(directory).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    f = path / f"{name}.yaml"
    f.write_text("# written by `vllm-ops tune` (the flags it measured best for one model and workload)\n"
                 + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    load_profile(name, path)          # it must read back (MalformedFile otherwise)
    return f


def _profile_doc(plan: Any, base: Any) -> dict[str, Any]:
    if base is not None:
        d = base.to_dict() if hasattr(base, "to_dict") else dict(base)
        keep = ("name", "description", "kind", "gpu", "count", "interconnect", "vllm_defaults", "limits", "env",
                "notes", "cpu")
        return {k: v for k, v in d.items() if k in keep and v not in (None, {}, [], ())}
    hw = plan.hardware or {}
    gpus = [g for n in hw.get("nodes") or [] for g in n.get("gpus") or []]
    if not gpus:
        return {"kind": "cpu"}
    key = gpus[0].get("catalog_key") or gpus[0].get("name")
    return {"kind": "gpu", "gpu": key, "count": len(gpus), "interconnect": hw.get("interconnect") or "pcie",
            "description": f"{len(gpus)}x {gpus[0].get('name') or key}"}
