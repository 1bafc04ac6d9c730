"""Reading vLLM's startup log as it streams: which stage it is in, and the figures it prints.

Pure functions over text, no I/O. Every pattern below was checked against real logs (vLLM
0.6 → 0.33 on GPUs, 0.32.0 on CPU; the lines are kept under ``tests/data/logs/``). vLLM prefixes
lines with ``(APIServer pid=N) INFO 11-25 23:41:04 [file.py:123]`` or, from workers,
``(EngineCore_DP0 pid=N)`` / ``(VllmWorker rank=1 pid=N)``: patterns search anywhere in a line.

    StartupLog()            accumulates lines: .stage (the furthest stage reached), .figures
    StartupLog.feed(line)   -> the stage newly reached, or None
    parse_figures(text)     -> StartupFigures of a whole log
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

# Startup stages in the order vLLM passes them. A later stage implies the earlier ones.
STAGES: tuple[str, ...] = (
    "process started",
    "weights loading",
    "memory profiling",
    "KV cache sized",
    "CUDA graph capture",
    "API server up",
)

_NUM = r"([0-9][0-9,]*(?:\.[0-9]+)?)"

# (stage, pattern): the first line matching a pattern marks that stage as reached.
_STAGE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (stage, re.compile(p)) for stage, p in (
        ("process started", r"vLLM API server version|Automatically detected platform|"
                            r"non-default args:|Initializing an? (?:V\d )?LLM engine"),
        ("weights loading", r"Starting to load model|Loading (?:safetensors|pt) checkpoint shards|"
                            r"Loading weights took|Loading model weights took|Model loading took"),
        ("memory profiling", r"Memory profiling (?:takes|results)|Available KV cache memory|"
                             r"(?:Explicitly|Auto) set \([0-9.]+/[0-9.]+\) GiB for KV cache|"
                             r"torch\.compile took|Estimated CUDA graph memory"),
        ("KV cache sized", r"KV cache size: [0-9,]+ tokens|# (?:GPU|CPU|gpu) blocks:"),
        ("CUDA graph capture", r"Capturing (?:CUDA graphs?|cudagraphs)|Graph capturing finished"),
        ("API server up", r"Starting vLLM (?:API )?server(?: \d+)? on|"
                          r"Application startup complete|Uvicorn running on"),
    )
)

# Lines that say the API server is about to answer: poll /health fast from here on.
SERVER_STARTING = re.compile(r"Starting vLLM (?:API )?server|Available routes are|"
                             r"Application startup complete|Uvicorn running on|"
                             r"init engine \(profile, create kv cache, warmup model\) took")


@dataclass
class StartupFigures:
    """What vLLM printed about memory, per GPU (GiB as vLLM prints them; old "GB" labels are GiB)."""
    vllm_version: str | None = None
    device: str | None = None                 # "GPU" / "CPU" / "XPU": the KV cache line's prefix
    total_gib: float | None = None            # device total vLLM saw at startup
    weights_gib: float | None = None
    activation_peak_gib: float | None = None
    non_torch_gib: float | None = None
    non_kv_gib: float | None = None           # "Total non KV cache memory"
    cuda_graph_gib: float | None = None
    kv_cache_gib: float | None = None
    kv_cache_tokens: int | None = None
    gpu_blocks: int | None = None             # older engines
    max_concurrency: float | None = None
    concurrency_tokens: int | None = None     # "Maximum concurrency for N tokens per request"
    init_engine_s: float | None = None
    weights_load_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def known(self) -> dict[str, Any]:
        """Only the figures the log printed."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def _f(s: str) -> float:
    return float(s.replace(",", ""))


def _i(s: str) -> int:
    return int(float(s.replace(",", "")))


# (field, pattern, converter per group → value). The LAST match in a log wins (a retry inside
# one process, or several ranks printing the same figure, ends with the final value).
_FIGURE_PATTERNS: tuple[tuple[str, re.Pattern[str], Any], ...] = tuple(
    (name, re.compile(p), conv) for name, p, conv in (
        ("vllm_version", r"vLLM API server version ([0-9][\w.+-]*)", str),
        ("vllm_version", r"\u2588\s+version ([0-9][\w.+-]*)", str),       # 0.2x+ banner
        ("vllm_version", r"Initializing an? (?:V\d )?LLM engine \(v([0-9][\w.+-]*)\)", str),
        # weights: 0.7+ "Model loading took 14.29 GiB (memory) and 2.1 seconds";
        # ≤0.6 "Loading model weights took 14.9888 GB"; 0.6.5 table "model weights take 14.96GiB"
        ("weights_gib", r"Model loading took " + _NUM + r" ?GiB", _f),
        ("weights_gib", r"Loading model weights took " + _NUM + r" ?GB", _f),
        ("weights_gib", r"model weights take\s+" + _NUM + r" ?GiB", _f),
        ("weights_gib", r"weights memory: " + _NUM + r" ?GiB", _f),
        ("weights_load_s", r"Model loading took [0-9.]+ ?GiB(?: memory)? and " + _NUM + r" ?s", _f),
        # activation peak: ≥0.9 DEBUG "torch peak memory increase: 1.13GiB"; 0.25+ advisory
        # "1.13 GiB for peak activation"; 0.6.5/0.7 "PyTorch activation peak memory( takes) 1.26GiB"
        ("activation_peak_gib", r"torch peak memory increase: " + _NUM + r" ?GiB", _f),
        ("activation_peak_gib", _NUM + r" ?GiB for peak activation", _f),
        ("activation_peak_gib", r"PyTorch activation peak memory(?: takes)?\s+" + _NUM + r" ?GiB", _f),
        # non-torch: 0.25 "non-torch forward increase memory: 0.22GiB"; advisory
        # "0.22 GiB for non-torch memory"; 0.6.5/0.7 "non_torch_memory( takes) 1.79GiB" / "=0.35GiB"
        ("non_torch_gib", r"non-torch forward increase memory: " + _NUM + r" ?GiB", _f),
        ("non_torch_gib", _NUM + r" ?GiB for non-torch memory", _f),
        ("non_torch_gib", r"non_torch_memory(?: takes)?[\s=]+" + _NUM + r" ?GiB", _f),
        ("non_kv_gib", r"Total non KV cache memory: " + _NUM + r" ?GiB", _f),
        # CUDA graphs: "Graph capturing finished in 3 secs, took 0.37 GiB"; advisory
        # "0.37 GiB for CUDAGraph memory"; "CUDA graph pool memory: X GiB (actual)"
        ("cuda_graph_gib", r"Graph capturing finished in [0-9.]+ secs?, took " + _NUM + r" ?GiB", _f),
        ("cuda_graph_gib", _NUM + r" ?GiB for CUDAGraph memory", _f),
        ("cuda_graph_gib", r"CUDA graph pool memory: " + _NUM + r" ?GiB \(actual\)", _f),
        # KV cache: GPU "Available KV cache memory: 55.62 GiB"; CPU "Explicitly set (1.0/19.09)
        # GiB for KV cache" / "Auto set (3.36/16.21) GiB"; 0.6.5 "available_kv_cache_memory 53.29GiB";
        # 0.6.4 "kv_cache_size=3.81GiB"; 0.7 "the rest of the memory reserved for KV Cache is X GiB"
        ("kv_cache_gib", r"Available KV cache memory: " + _NUM + r" ?GiB", _f),
        ("kv_cache_gib", r"(?:Explicitly|Auto) set \(" + _NUM + r"/[0-9.]+\) GiB for KV cache", _f),
        ("total_gib", r"(?:Explicitly|Auto) set \([0-9.]+/" + _NUM + r"\) GiB for KV cache", _f),
        ("kv_cache_gib", r"available_kv_cache_memory\s+" + _NUM + r" ?GiB", _f),
        ("kv_cache_gib", r"kv_cache_size=" + _NUM + r" ?GiB", _f),
        ("kv_cache_gib", r"reserved for KV Cache is " + _NUM + r" ?GiB", _f),
        ("total_gib", r"Free memory on device (?:\S+ )?\([0-9.]+/" + _NUM + r" GiB\) on startup", _f),
        ("total_gib", r"total_gpu_memory[\s=]+" + _NUM + r" ?GiB", _f),
        ("kv_cache_tokens", r"KV cache size: " + _NUM + r" tokens", _i),
        ("gpu_blocks", r"# GPU blocks: " + _NUM, _i),
        ("concurrency_tokens", r"Maximum concurrency for " + _NUM + r" tokens per request", _i),
        ("max_concurrency", r"Maximum concurrency for [0-9,]+ tokens per request: " + _NUM + r"x", _f),
        ("init_engine_s", r"init engine \(profile, create kv cache, warmup model\) took " + _NUM + r" ?s", _f),
    )
)
_DEVICE = re.compile(r"\b([A-Z]{3})(?: \+ host)? KV cache size: [0-9,]+ tokens")


def _apply(figures: StartupFigures, line: str) -> None:
    for name, pat, conv in _FIGURE_PATTERNS:
        m = pat.search(line)
        if m:
            setattr(figures, name, conv(m.group(1)))
    m = _DEVICE.search(line)
    if m:
        figures.device = m.group(1)


def parse_figures(text: str) -> StartupFigures:
    """The figures a whole startup log printed (the last value of each wins)."""
    figures = StartupFigures()
    for line in text.splitlines():
        _apply(figures, line)
    return figures


def stage_of(line: str) -> str | None:
    """The furthest startup stage this one line proves, or None."""
    found = None
    for stage, pat in _STAGE_PATTERNS:
        if pat.search(line):
            found = stage
    return found


@dataclass
class StartupLog:
    """Feed lines as they stream; tracks the furthest stage, the figures and a tail of the log."""
    stage: str | None = None
    figures: StartupFigures = field(default_factory=StartupFigures)
    server_starting: bool = False
    tail: list[str] = field(default_factory=list)
    tail_lines: int = 400

    def feed(self, line: str) -> str | None:
        """Take one line; return the stage it newly reached (stages vLLM skips, such as CUDA graph
        capture on CPU or with --enforce-eager, are never reported), else None."""
        line = line.rstrip("\n")
        self.tail.append(line)
        if len(self.tail) > self.tail_lines:
            del self.tail[: len(self.tail) - self.tail_lines]
        _apply(self.figures, line)
        if not self.server_starting and SERVER_STARTING.search(line):
            self.server_starting = True
        reached = stage_of(line)
        if reached is None:
            return None
        if self.stage is not None and STAGES.index(reached) <= STAGES.index(self.stage):
            return None
        self.stage = reached
        return reached

    def text(self) -> str:
        return "\n".join(self.tail)
