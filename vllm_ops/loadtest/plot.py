"""Charts of a bench report: throughput against load and latency percentiles.

``save_png(report, path)`` uses matplotlib (Agg backend, no display) when it is installed;
``terminal_chart(report)`` draws the same figures with text bars otherwise.
"""
from __future__ import annotations

from typing import Any

from vllm_ops.loadtest.report import BenchReport


def _x(report: BenchReport) -> tuple[list[float], str]:
    if report.mode == "concurrency":
        return [float(lv.concurrency or 0) for lv in report.levels], "concurrency"
    return [float(lv.request_rate or 0) for lv in report.levels], "request rate (req/s)"


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def save_png(report: BenchReport, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, xlabel = _x(report)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax1.plot(xs, [lv.output_throughput for lv in report.levels], "o-", label="output tok/s")
    ax1.set_xlabel(xlabel)
    ax1.set_ylabel("output tokens/s")
    ax1b = ax1.twinx()
    ax1b.plot(xs, [lv.request_throughput for lv in report.levels], "s--", color="tab:orange",
              label="requests/s")
    ax1b.set_ylabel("requests/s")
    ax1.set_title("throughput")
    lines = ax1.get_lines() + ax1b.get_lines()
    ax1.legend(lines, [ln.get_label() for ln in lines], loc="upper left")
    for name, attr in (("TTFT", "ttft_ms"), ("E2E", "e2e_ms")):
        for p, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
            ys = [getattr(getattr(lv, attr), p) for lv in report.levels]
            ax2.plot(xs, [y if y is not None else float("nan") for y in ys], style, marker="o",
                     label=f"{name} {p}")
    ax2.set_xlabel(xlabel)
    ax2.set_ylabel("ms")
    ax2.set_yscale("log")
    ax2.set_title("latency percentiles")
    ax2.legend(fontsize=8)
    if report.mode == "concurrency" and len(xs) > 1 and min(xs) > 0:
        ax1.set_xscale("log", base=2)
        ax2.set_xscale("log", base=2)
    fig.suptitle(f"{report.model}: in {report.input_len} / out {report.output_len} tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def terminal_chart(report: BenchReport, width: int = 40) -> str:
    """Text bars: output tok/s and TTFT/E2E p50 · p99 per level."""
    if not report.levels:
        return "(no levels)"
    top = max(lv.output_throughput for lv in report.levels) or 1.0
    rows = ["throughput (output tok/s) and latency p50 / p99:"]
    for lv in report.levels:
        bar = "█" * max(1, round(width * lv.output_throughput / top)) if lv.output_throughput else ""
        rows.append(f"{lv.label:>12} │{bar:<{width}}│ {lv.output_throughput:8.1f} tok/s  "
                    f"TTFT {_ms(lv.ttft_ms.p50)}/{_ms(lv.ttft_ms.p99)}  "
                    f"E2E {_ms(lv.e2e_ms.p50)}/{_ms(lv.e2e_ms.p99)} ms")
    return "\n".join(rows)


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:.0f}"
