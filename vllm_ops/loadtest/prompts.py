"""Prompts for a load test: random token-id prompts of an exact length, or a dataset file.

Random prompts are lists of token ids drawn (seeded) from the ids the server's own tokenizer
produces for a built-in multilingual/code text (``POST /tokenize`` with
``add_special_tokens=false``), so every id is valid for the served model and no special token
(BOS/EOS) is drawn. vLLM's ``/v1/completions`` accepts a token-id list as the prompt, so the
input length is exact.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterable, Sequence, TypeVar

from vllm_ops.errors import BadInput, MalformedFile

T = TypeVar("T")

VOCAB_TEXT = (
    "The quick brown fox jumps over the lazy dog. vLLM serves large language models with paged "
    "attention and continuous batching. Hello world! How are you today? 0123456789 +-*/=<>()[]{} "
    "JSON objects use braces, quotes, colons and commas: {\"key\": [1, 2.5, true, null]}. "
    "def main(): return [x * 2 for x in range(10)]  # Python\n\tSELECT name FROM users WHERE id=1; "
    "Le renard brun saute par-dessus le chien paresseux. Der schnelle braune Fuchs springt. "
    "El zorro marrón salta sobre el perro perezoso. Быстрая коричневая лиса. 敏捷的棕色狐狸. "
    "The capital of France is Paris; the capital of Japan is Tokyo; water boils at 100 degrees. "
    "Once upon a time, in a land far away, there lived a curious engineer who measured latency."
)


def vocabulary_from_tokens(token_lists: Iterable[Sequence[int]]) -> list[int]:
    """Distinct token ids, sorted (deterministic for a seed)."""
    ids = sorted({int(t) for toks in token_lists for t in toks})
    if not ids:
        raise BadInput("the server's tokenizer returned no tokens for the vocabulary text")
    return ids


def random_token_prompts(vocab: Sequence[int], n: int, input_len: int, seed: int = 0) -> list[list[int]]:
    """``n`` prompts of exactly ``input_len`` ids drawn uniformly from ``vocab`` (seeded)."""
    if n < 1 or input_len < 1:
        raise BadInput("num-prompts and input-len must be at least 1")
    rng = random.Random(seed)
    return [[rng.choice(vocab) for _ in range(input_len)] for _ in range(n)]


def pooled_prompts(vocab: Sequence[int], n: int, input_len: int, pool: int, seed: int = 0) -> list[list[int]]:
    """``n`` requests over ``pool`` distinct prompts: each pass over the pool in a fresh seeded order (as
    aiperf sends its dataset entries, 100 by default), so a prompt comes back after about ``pool``
    other requests and vLLM's prefix cache serves it if it still holds it."""
    if pool < 1:
        raise BadInput("--prompt-pool must be at least 1")
    return in_passes(random_token_prompts(vocab, min(pool, n), input_len, seed), n, seed)


def in_passes(base: Sequence[T], n: int, seed: int = 0) -> list[T]:
    """``n`` items as passes over ``base``, each pass in a fresh seeded order (the last one cut short)."""
    rng = random.Random(seed + 1)
    out: list[T] = []
    while len(out) < n:
        order = list(range(len(base)))
        rng.shuffle(order)
        out.extend(base[i] for i in order[: n - len(out)])
    return out


def load_dataset(path: str | Path, n: int, seed: int = 0) -> list[str]:
    """Prompts from a file, cycled/sampled to ``n``.

    Accepted: JSON Lines or a JSON array of records with ``prompt`` or ``text`` (or ShareGPT
    ``conversations[0].value``), or plain text (one prompt per non-empty line).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"dataset not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MalformedFile(f"{p}: cannot read the dataset ({exc})") from None
    records: list = []
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except ValueError as exc:
            raise MalformedFile(f"{p}: not a JSON array ({exc})") from None
    elif stripped.startswith("{"):
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError:
                    raise MalformedFile(f"{p}:{i}: not a JSON line") from None
    else:
        records = [line for line in text.splitlines() if line.strip()]
    prompts = [s for s in (_prompt_of(r) for r in records) if s]
    if not prompts:
        raise MalformedFile(f"{p}: no prompts found (want 'prompt'/'text' fields or text lines)")
    rng = random.Random(seed)
    if len(prompts) >= n:
        return rng.sample(prompts, n)
    return [prompts[i % len(prompts)] for i in range(n)]


def _prompt_of(record: object) -> str | None:
    if isinstance(record, str):
        return record
    if isinstance(record, dict):
        for key in ("prompt", "text", "input"):
            if isinstance(record.get(key), str):
                return record[key]
        conv = record.get("conversations") or record.get("messages")
        if isinstance(conv, list) and conv and isinstance(conv[0], dict):
            return conv[0].get("value") or conv[0].get("content")
    return None
