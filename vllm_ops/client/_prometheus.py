"""A tiny parser for the Prometheus text exposition format (what vLLM's ``/metrics`` serves).

``parse_prometheus(text)`` → :class:`Metrics`: a dict ``name → [Sample(labels, value), ...]``
plus ``.types`` and ``.help`` from the ``# TYPE`` / ``# HELP`` lines. Histogram and summary
series keep their own names (``x_bucket``, ``x_sum``, ``x_count``). Values ``NaN``, ``+Inf``,
``-Inf`` become floats; an optional timestamp is ignored; malformed lines are skipped.
"""
from __future__ import annotations

import math
from typing import NamedTuple

__all__ = ["Sample", "Metrics", "parse_prometheus"]


class Sample(NamedTuple):
    labels: dict[str, str]
    value: float


class Metrics(dict):
    """``name → list[Sample]`` with the metric types and help texts alongside."""

    def __init__(self) -> None:
        super().__init__()
        self.types: dict[str, str] = {}
        self.help: dict[str, str] = {}

    def value(self, name: str, default: float | None = None, **labels: str) -> float | None:
        """Sum of the samples of ``name`` whose labels include ``labels`` (None/default if none)."""
        found = [s.value for s in self.get(name, ()) if all(s.labels.get(k) == v for k, v in labels.items())]
        return math.fsum(found) if found else default


_SPECIAL = {"nan": math.nan, "+inf": math.inf, "inf": math.inf, "-inf": -math.inf}


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        v = _SPECIAL.get(text.lower())
        if v is None:
            raise
        return v


def _labels(text: str, i: int) -> tuple[dict[str, str], int]:
    """Parse ``{a="x",b="y"}`` starting after ``{`` at index i; returns (labels, index after ``}``)."""
    labels: dict[str, str] = {}
    n = len(text)
    while i < n:
        while i < n and text[i] in " ,":
            i += 1
        if i < n and text[i] == "}":
            return labels, i + 1
        eq = text.index("=", i)
        key = text[i:eq].strip()
        i = eq + 1
        while text[i] == " ":
            i += 1
        if text[i] != '"':
            raise ValueError("label value not quoted")
        i += 1
        out = []
        while True:
            c = text[i]
            if c == "\\":
                nxt = text[i + 1]
                out.append("\n" if nxt == "n" else nxt)
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                out.append(c)
                i += 1
        labels[key] = "".join(out)
    raise ValueError("unterminated label set")


def parse_prometheus(text: str) -> Metrics:
    metrics = Metrics()
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line[0] == "#":
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("TYPE", "HELP"):
                target = metrics.types if parts[1] == "TYPE" else metrics.help
                target[parts[2]] = parts[3] if len(parts) > 3 else ""
            continue
        try:
            brace = line.find("{")
            space = line.find(" ")
            if brace >= 0 and (space < 0 or brace < space):
                name = line[:brace]
                labels, end = _labels(line, brace + 1)
                rest = line[end:].split()
            else:
                name, *rest = line.split()
                labels = {}
            value = _float(rest[0])
        except (ValueError, IndexError):
            continue
        metrics.setdefault(name, []).append(Sample(labels, value))
    return metrics
