"""Logprob fingerprints (validate's LoRA proof): the distance, the noise rule, attribution."""
from __future__ import annotations

import pytest

from vllm_ops.validate import fingerprint as fp
from vllm_ops.validate.lora import _attribute


def ans(*positions, tokens=None):
    """An Answer from per-position {token: logprob}; greedy token = each position's best."""
    top = tuple(dict(p) for p in positions)
    toks = tokens or tuple(max(p, key=p.get) for p in top)
    return fp.Answer(tuple(toks), top)


def test_identical_answers_are_distance_zero():
    a = ans({"1": -0.1, "2": -2.5}, {"3": -0.5, "4": -1.0})
    assert fp.distance(a, a) == 0.0


def test_shared_tokens_count_by_their_logprob_difference():
    a = ans({"1": -0.1, "2": -2.5}, {"3": -0.5, "4": -1.0})
    b = ans({"1": -0.3, "2": -2.4}, {"3": -0.5, "4": -1.7})
    assert fp.distance(a, b) == pytest.approx(0.7)


def test_disjoint_top_lists_still_differ():
    # no shared token: each list's best sits above the other list's floor
    a = ans({"1": -6.238310, "2": -6.238318})
    b = ans({"3": -6.238309, "4": -6.238319})
    assert fp.distance(a, b) == pytest.approx(9e-6, rel=0.05)


def test_positions_after_the_greedy_tokens_part_are_not_compared():
    a = ans({"1": -0.1, "2": -2.0}, {"5": -0.1}, {"7": -0.1})
    b = ans({"1": -0.1, "2": -2.0}, {"6": -0.2}, {"8": -9.0})
    assert fp.distance(a, b) == pytest.approx(0.1)   # position 1 counts, position 2 (other contexts) not


def test_from_completion_reads_vllm_logprobs_and_refuses_none():
    raw = {"choices": [{"text": "x", "logprobs": {
        "tokens": ["token_id:76", "token_id:30"], "token_logprobs": [-6.2, -6.3],
        "top_logprobs": [{"token_id:76": -6.2, "token_id:5": -6.4}, {"token_id:30": -6.3}]}}]}
    a = fp.Answer.from_completion(raw)
    assert a.tokens == ("token_id:76", "token_id:30") and a.top[0]["token_id:5"] == -6.4
    with pytest.raises(ValueError, match="no logprobs"):
        fp.Answer.from_completion({"choices": [{"text": "x", "logprobs": None}]})


def test_threshold_is_a_margin_over_the_measured_noise():
    assert fp.threshold(0.0) == 0.0            # a deterministic server: any difference is real
    assert fp.threshold(0.01) == pytest.approx(fp.NOISE_MARGIN * 0.01)
    alone = [ans({"1": -0.10}), ans({"2": -0.20})]
    batched = [ans({"1": -0.11}), ans({"2": -0.20})]
    assert fp.noise(alone, batched) == pytest.approx(0.01)


def _prints():
    return {"base": [ans({"1": -1.0, "2": -1.5})], "a": [ans({"1": -0.2, "2": -3.0})],
            "b": [ans({"2": -0.1, "1": -4.0})]}


def test_attribution_names_the_adapter_that_answered():
    prints = _prints()
    assert _attribute("a", prints["a"], prints, 0.0) is None
    assert _attribute("a", [ans({"1": -0.21, "2": -3.0})], prints, 0.0) is None    # small noise
    why = _attribute("a", prints["b"], prints, 0.0)
    assert why and "answered like b" in why
    why = _attribute("a", prints["base"], prints, 0.0)
    assert why and "answered like base" in why
    why = _attribute("a", [ans({"1": -0.2, "2": -4.0})], prints, 0.0)   # nearest a, yet far from it
    assert why and "matches no fingerprint" in why
