"""The bench report and the saturation analysis (pure).

Saturation: throughput is read level by level; the server is *saturated* at the first level
whose request throughput gains less than ``gain`` (10 %) over the previous level. The bound is
read from the server's own metrics sampled during the levels:

- ``kv_cache``: preemptions happened, or the KV cache was (nearly) full (peak usage ≥ 95 %);
- ``max_num_seqs``: requests waited in vLLM's queue while the running batch was full
  (peak running ≥ max_num_seqs, or waiting > 0 with the KV cache not full);
- ``client_concurrency``: nothing ever waited in vLLM's queue: the load generator's own
  concurrency limited the batch (the server had room for more).

The plan (``plan.memory.kv_cache_tokens``, ``plan.memory.max_concurrency``,
``plan.vllm_args.max_num_seqs``) gives the expected ceiling for this request length:
``min(max_num_seqs, kv_cache_tokens // tokens per running request)``, each request counted as the plan's vLLM
release lets it hold the cache (its whole length, or from 0.25 its mean length: ``perf_sim.running_limit``).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from vllm_ops.errors import BadInput, MalformedFile
from vllm_ops.loadtest.stats import LevelStats
from vllm_ops.output import console as make_console

KV_FULL = 0.95


@dataclass
class PlanLimits:
    max_num_seqs: int | None = None
    kv_cache_tokens: int | None = None
    max_concurrency: float | None = None        # the plan's, at max_model_len
    max_model_len: int | None = None
    source: str = ""
    kv_reserve: str = "whole"                   # what a running request holds (planning/versions.py kv_reserve)

    def expected_concurrency(self, input_len: int, output_len: int) -> float | None:
        """The most requests of this length the server should run at once."""
        from vllm_ops.planning.perf_sim import running_limit

        if self.kv_cache_tokens and input_len + output_len > 0:
            return float(running_limit(input_len, output_len, self.max_num_seqs or self.kv_cache_tokens,
                                       self.kv_cache_tokens, self.kv_reserve))
        return float(self.max_num_seqs) if self.max_num_seqs else None

    @classmethod
    def from_plan_dict(cls, plan: dict, source: str = "") -> "PlanLimits":
        mem = plan.get("memory") or {}
        args = plan.get("vllm_args") or {}

        def num(v: Any) -> Any:
            return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

        mns = num(args.get("max_num_seqs"))
        mml = num(args.get("max_model_len"))
        return cls(max_num_seqs=int(mns) if mns else None,
                   kv_cache_tokens=int(num(mem.get("kv_cache_tokens")) or 0) or None,
                   max_concurrency=num(mem.get("max_concurrency")),
                   max_model_len=int(mml) if mml else None, source=source,
                   kv_reserve=_kv_reserve(plan.get("vllm_version")))

    @classmethod
    def load(cls, path: str | Path) -> "PlanLimits":
        return cls.from_plan_dict(read_plan_file(path), source=str(Path(path)))


def _kv_reserve(version: Any) -> str:
    """What the plan's vLLM release lets a running request hold in the KV cache ("whole" for a plan of no or an
    unknown release)."""
    from vllm_ops.planning.versions import kv_reserve

    try:
        return kv_reserve(version) if version else "whole"
    except (ValueError, KeyError):
        return "whole"


def read_plan_file(path: str | Path) -> dict:
    """The plan document of a `vllm-ops plan --json` file (or the plan a deployment state file
    embeds); BadInput when the file is missing, MalformedFile when it is not a plan."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"plan file not found: {p}") from None
    except (OSError, ValueError) as exc:
        raise MalformedFile(f"{p}: not a JSON plan ({exc})") from None
    if isinstance(doc, dict) and "plan" in doc and isinstance(doc["plan"], dict):
        doc = doc["plan"]  # a deployment state file embeds its plan
    if not isinstance(doc, dict) or ("memory" not in doc and "vllm_args" not in doc):
        raise MalformedFile(f"{p}: not a vllm-ops plan (no memory / vllm_args)")
    return doc


@dataclass
class Saturation:
    saturated_at: str | None                    # label of the last level that still scaled
    peak_request_throughput: float
    peak_output_throughput: float
    bound: str                                  # kv_cache | max_num_seqs | client_concurrency | unknown
    reason: str
    expected_concurrency: float | None = None
    observed_max_running: float | None = None
    plan: PlanLimits | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def analyse(levels: Sequence[LevelStats], *, input_len: int, output_len: int,
            plan: PlanLimits | None = None, gain: float = 0.10) -> Saturation:
    """Where throughput stopped scaling and which bound was hit (see the module doc)."""
    if not levels:
        return Saturation(None, 0.0, 0.0, "unknown", "no levels ran", plan=plan)
    best = max(levels, key=lambda lv: lv.request_throughput)
    saturated_at = None
    for prev, cur in zip(levels, levels[1:]):
        if prev.request_throughput > 0 and cur.request_throughput < prev.request_throughput * (1 + gain):
            saturated_at = prev.label
            break
    srv = [lv.server for lv in levels]
    preempt = sum(s.preemptions or 0 for s in srv)
    kv_peak = max((s.peak_kv_cache_usage for s in srv if s.peak_kv_cache_usage is not None), default=None)
    waiting = max((s.max_waiting for s in srv if s.max_waiting is not None), default=None)
    running = max((s.max_running for s in srv if s.max_running is not None), default=None)
    mns = plan.max_num_seqs if plan else None
    expected = plan.expected_concurrency(input_len, output_len) if plan else None

    if preempt > 0 or (kv_peak is not None and kv_peak >= KV_FULL):
        bound = "kv_cache"
        reason = (f"the KV cache ran full: {preempt:g} preemption(s), peak usage "
                  f"{(kv_peak or 0) * 100:.0f}%")
    elif waiting is not None and waiting > 0:
        bound = "max_num_seqs"
        full = f" = max_num_seqs {mns}" if mns and running is not None and running >= mns else ""
        reason = (f"requests waited in vLLM's queue (up to {waiting:g}) while {running or 0:g} "
                  f"ran{full}; the KV cache peaked at {(kv_peak or 0) * 100:.0f}%")
    elif waiting is None and running is None:
        bound = "unknown"
        reason = "the server's /metrics gave no queue or batch figures"
    else:
        top = max((lv.concurrency or lv.max_in_flight) for lv in levels)
        bound = "client_concurrency"
        reason = (f"nothing waited in vLLM's queue: the load generator's concurrency (up to "
                  f"{top}) limited the batch (peak running {running or 0:g})")
    if expected is not None:
        reason += f"; the plan expects up to {expected:g} concurrent requests of this length"
        if mns:
            reason += f" (max_num_seqs {mns}"
            if plan and plan.kv_cache_tokens:
                held = "mean" if plan.kv_reserve == "mean" else "whole"
                reason += f", KV cache {plan.kv_cache_tokens} tokens, each request at its {held} length"
            reason += ")"
    return Saturation(saturated_at=saturated_at, peak_request_throughput=best.request_throughput,
                      peak_output_throughput=max(lv.output_throughput for lv in levels),
                      bound=bound, reason=reason, expected_concurrency=expected,
                      observed_max_running=running, plan=plan)


@dataclass
class BenchReport:
    url: str
    model: str
    input_len: int
    output_len: int
    num_prompts: int
    mode: str                                   # "concurrency" | "request_rate"
    levels: list[LevelStats] = field(default_factory=list)
    saturation: Saturation | None = None
    dataset: str | None = None
    version: str | None = None
    seed: int | None = None                     # the prompts' seed (each level draws its own from it)
    prompt_pool: int | None = None              # distinct prompts per level (None: every request its own)
    warmup: str | None = None                   # "wave" | "request" | "none" (None: a report from before the choice)

    @property
    def ok(self) -> bool:
        return all(lv.failed == 0 for lv in self.levels)

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "model": self.model, "version": self.version, "mode": self.mode,
                "input_len": self.input_len, "output_len": self.output_len,
                "num_prompts": self.num_prompts, "dataset": self.dataset, "seed": self.seed,
                "prompt_pool": self.prompt_pool, "warmup": self.warmup, "ok": self.ok,
                "levels": [{**lv.to_dict(), **({"warnings": w} if (w := level_warnings(lv)) else {})}
                           for lv in self.levels],
                "saturation": self.saturation.to_dict() if self.saturation else None}

    def print_table(self, console: Any = None) -> None:
        from rich.table import Table

        con = console or make_console()
        t = Table(title=f"vllm-ops bench {self.url} ({self.model}, in {self.input_len} / out "
                        f"{self.output_len} tokens, {self.num_prompts} prompts per level"
                        + (f", warm-up: {self.warmup}" if self.warmup else "") + ")",
                  title_justify="left")
        for col in ("level", "ok", "err", "req/s", "out tok/s", "TTFT p50/p90/p99 ms",
                    "ITL p50/p99 ms", "E2E p50/p90/p99 ms", "KV peak", "cache hit", "max wait", "preempt"):
            t.add_column(col, justify="right" if col != "level" else "left")
        for lv in self.levels:
            s = lv.server
            t.add_row(lv.label, str(lv.completed), str(lv.failed), f"{lv.request_throughput:.2f}",
                      f"{lv.output_throughput:.1f}", _pcts(lv.ttft_ms, 3), _pcts(lv.itl_ms, 2),
                      _pcts(lv.e2e_ms, 3),
                      "-" if s.peak_kv_cache_usage is None else f"{s.peak_kv_cache_usage * 100:.1f}%",
                      "-" if s.prefix_cache_hit_rate is None else f"{s.prefix_cache_hit_rate * 100:.0f}%",
                      "-" if s.max_waiting is None else f"{s.max_waiting:g}",
                      "-" if s.preemptions is None else f"{s.preemptions:g}")
        con.print(t)
        for lv in self.levels:
            split = lv.server.ttft_split()
            if split:
                con.print(f"{lv.label}: {split}")
            for w in level_warnings(lv):
                con.print(f"[yellow]{lv.label}: {w}[/]")
        for lv in self.levels:
            for e in lv.errors:
                con.print(f"[red]{lv.label} error:[/] {e}")
        if self.saturation:
            sat = self.saturation
            where = f"saturated after {sat.saturated_at}" if sat.saturated_at else "still scaling at the last level"
            con.print(f"peak {sat.peak_request_throughput:.2f} req/s, {sat.peak_output_throughput:.1f} "
                      f"output tok/s; {where}; bound: [bold]{sat.bound}[/] — {sat.reason}")


CLIENT_LAG_WARN_MS = 10.0        # p90 of the bench's own event-loop lag above which its latencies are suspect


def client_lag_warning(lv: Any) -> str | None:
    """A line when the bench's own event loop ran late during the level (its TTFT/ITL include that)."""
    lag = lv.client_lag_ms
    if not lag.count or lag.p90 is None or lag.p90 <= CLIENT_LAG_WARN_MS:
        return None
    return (f"the bench's own event loop ran late (p50 {lag.p50:.1f} ms, p90 {lag.p90:.1f} ms, max {lag.max:.0f} ms): "
            f"its TTFT and ITL include that; fewer requests per bench process, or a faster client machine")


# A level whose mean TTFT is ONE_TIME_X times its median, with a slowest first token 3x the median and nothing queued
# in vLLM, paid a one-time cost in a few requests: of the 170 levels stored under tests/data/gpu-runs, exactly the
# three MoE levels whose first wave paid a Triton compile (tests/unit/test_gpu_warmup_runs.py,
# test_bench_first_wave.py), and no other.
ONE_TIME_X = 2.0


# A level whose prompts the prefix cache served in part (--prompt-pool: a pool's first pass misses, later passes
# hit) has two kinds of request, computed and cached, and a spread between its mean and median TTFT for that reason:
# not a one-time cost (vLLM 0.32 CPU build, 4 prompts over 24 requests: mean 2.3-5.6x the median at 0.75-0.83 hit,
# tests/data/gpu-runs/h100x1/hitpath/cpu).
PARTLY_CACHED = 0.05


def one_time_cost_warning(lv: Any) -> str | None:
    """A line when a few of the level's requests paid a one-time cost its median did not (a kernel compiled for a
    batch shape the server had not run): the mean TTFT is then no steady-state figure. Not said of a level the prefix
    cache served in part (PARTLY_CACHED): its misses explain the spread."""
    t, waited = lv.ttft_ms, lv.server.max_waiting
    if t.count < 4 or not t.p50 or t.mean < ONE_TIME_X * t.p50 or t.max < 3 * t.p50 or waited:
        return None
    if (lv.server.prefix_cache_hit_rate or 0.0) >= PARTLY_CACHED:
        return None
    return (f"mean TTFT {t.mean:.0f} ms is {t.mean / t.p50:.1f}x the median ({t.p50:.0f} ms; slowest {t.max:.0f}) "
            f"with nothing queued in vLLM: a few requests paid a one-time cost (on a GPU, usually a kernel compiled "
            f"for a batch shape the server had not run; vLLM's log says \"JIT compilation during inference\"); the "
            f"median is the steady state, or run the level again")


def level_warnings(lv: Any) -> list[str]:
    """What makes a level's latencies suspect (the bench's own lag, a one-time cost), one line each."""
    return [w for w in (client_lag_warning(lv), one_time_cost_warning(lv)) if w]


def _pcts(d: Any, n: int) -> str:
    vals = (d.p50, d.p90, d.p99) if n == 3 else (d.p50, d.p99)
    if d.count == 0:
        return "-"
    return "/".join(f"{v:.1f}" for v in vals)

