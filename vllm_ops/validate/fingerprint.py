"""Logprob fingerprints: which weights answered a request, told from the logprobs vLLM returns.

A fingerprint is a model's (or adapter's) greedy answers to a few fixed prompts, each with the
top-:data:`TOP_K` logprobs at every generated position (``/v1/completions`` with ``logprobs``,
``temperature 0``, token ids rather than strings so two tokens never share a name).

:func:`distance` compares two answers to the same prompt: the largest logprob difference over
the positions whose contexts are identical (position 0, and every later one while both greedy
token sequences still agree). A token in one top-k list and not in the other counts by how far
it sits above the other list's floor, so a reordered top-k is a difference even when no token is
shared. Identical weights give distance 0 on a deterministic server; the server's own noise
(batching changes the order of floating-point sums on some backends) is MEASURED, not assumed:
:func:`noise` is the largest distance between the same model's answers asked alone and asked
inside a concurrent batch, and a difference counts only when it is more than
:data:`NOISE_MARGIN` times that.

Why measured and not a fixed number of nats: a dummy-weight model (``--load-format dummy``)
answers almost uniformly (every logprob within 1e-5 of -ln(vocab)), so a real adapter moves its
logprobs by only ~1e-6 and any fixed threshold that covers GPU batch noise (~1e-3 to 1e-2 nats
in bf16) would call an applied adapter unused; on the CPU build, repeated and batched requests
gave bit-identical logprobs (noise 0), so the 1e-6 differences are far beyond noise there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

PROMPTS = (
    "The capital of France is",
    "def main():",
    "Hello world! How are you",
    "JSON objects use braces,",
)
MAX_TOKENS = 8
TOP_K = 5
# a difference must exceed NOISE_MARGIN x the measured noise: batch-order noise is a rounding
# effect bounded by a few roundings, so 4x the largest seen leaves room for a batch that was not seen
NOISE_MARGIN = 4.0


@dataclass(frozen=True)
class Answer:
    """One greedy answer: its token ids and, per position, ``{token: logprob}`` of the top-k."""

    tokens: tuple[str, ...]
    top: tuple[Mapping[str, float], ...]

    @classmethod
    def from_completion(cls, raw: Mapping[str, Any]) -> "Answer":
        """From a ``/v1/completions`` answer sent with ``logprobs`` (ValueError when it has none)."""
        choices = raw.get("choices") or []
        lp = (choices[0] or {}).get("logprobs") if choices else None
        if not isinstance(lp, dict) or not lp.get("tokens") or not isinstance(lp.get("top_logprobs"), list):
            raise ValueError("the answer carries no logprobs (was `logprobs` refused or dropped?)")
        top = tuple(dict(t or {}) for t in lp["top_logprobs"])
        return cls(tuple(str(t) for t in lp["tokens"]), top)


def request_args() -> dict[str, Any]:
    """The generate() arguments of one fingerprint request (prompt and model aside)."""
    return {"endpoint": "completions", "max_tokens": MAX_TOKENS, "temperature": 0.0,
            "logprobs": TOP_K, "return_tokens_as_token_ids": True}


def _position_distance(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    if not a or not b:
        return 0.0 if not a and not b else float("inf")
    floor_a, floor_b = min(a.values()), min(b.values())
    d = 0.0
    for t, la in a.items():
        lb = b.get(t)
        d = max(d, abs(la - lb) if lb is not None else max(0.0, la - floor_b))
    for t, lb in b.items():
        if t not in a:
            d = max(d, max(0.0, lb - floor_a))
    return d


def distance(a: Answer, b: Answer) -> float:
    """Largest logprob difference of two answers to the same prompt, over the positions whose
    contexts are identical (up to and including the first position where the greedy tokens part)."""
    d = 0.0
    for i in range(min(len(a.top), len(b.top))):
        d = max(d, _position_distance(a.top[i], b.top[i]))
        if i >= len(a.tokens) or i >= len(b.tokens) or a.tokens[i] != b.tokens[i]:
            break
    return d


def spread(a: Sequence[Answer], b: Sequence[Answer]) -> float:
    """Largest :func:`distance` over the prompts of two fingerprints (same prompt order)."""
    return max((distance(x, y) for x, y in zip(a, b)), default=0.0)


def noise(alone: Sequence[Answer], batched: Sequence[Answer]) -> float:
    """The server's own noise: the same model's answers alone vs inside a concurrent batch."""
    return spread(alone, batched)


def threshold(measured_noise: float) -> float:
    """The distance above which two answers come from different weights."""
    return NOISE_MARGIN * measured_noise


def greedy_differs(a: Sequence[Answer], b: Sequence[Answer]) -> int:
    """On how many prompts the greedy token sequences differ (extra evidence, never proof)."""
    return sum(x.tokens != y.tokens for x, y in zip(a, b))


def nearest(answers: Sequence[Answer], prints: Mapping[str, Sequence[Answer]]) -> list[tuple[str, float]]:
    """``[(name, spread)]`` of every fingerprint against ``answers``, nearest first."""
    return sorted(((n, spread(answers, fp)) for n, fp in prints.items()), key=lambda x: x[1])
