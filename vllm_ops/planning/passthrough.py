"""Flags after ``--`` that the planner itself writes: lifted into the plan, so the plan's figures, its command and
every file and process built from it carry one value, the one vLLM will use (vLLM takes the last of a repeated
flag, so the command would otherwise carry both and the figures the first).

    lift(pins, port, served_name, rest, warnings) -> Lifted

Pins (``--max-num-seqs 64``, ``--enforce-eager``, ``-tp 2`` once argv.canonical_args has spelled it long), the port,
the served names and the block size. A value given both ways keeps the one given to vllm-ops and says so (``flag-overridden``).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from vllm_ops.errors import BadInput, ImpossiblePin
from vllm_ops.planning.argv import parse_flags, strip_flags, value_of
from vllm_ops.planning.pins import PIN_KEYS, check_port, normalize_pins
from vllm_ops.planning.plan import PlanWarning

DEFAULT_PORT = 8000


def positive_int(value: str, flag: str) -> int:
    """An integer >= 1 given on vLLM's command line (BadInput / ImpossiblePin otherwise)."""
    try:
        n = int(value)
    except ValueError:
        raise BadInput(f"{flag} must be an integer, not {value[:40]!r}") from None
    if n < 1:
        raise ImpossiblePin(f"{flag} must be >= 1, not {n}")
    return n


@dataclass
class Lifted:
    pins: dict
    port: int
    names: list[str]               # served names, the first the one clients ask for ([]: the model's id)
    block: int | None              # --block-size given (None: the planner's default)
    rest: list[str]                # the flags that pass through


def lift(pins: dict, port: int, served_name: str | None, rest: list[str], warnings: list) -> Lifted:
    """The planner's own flags taken out of ``rest``, merged with what vllm-ops was given."""
    pins, rest = _pins(pins, rest, warnings)
    port, rest = _port(port, rest, warnings)
    names, rest = _served(served_name, rest, warnings)
    block = value_of(rest, "--block-size")
    if block is not None:
        rest = strip_flags(rest, {"block_size"})
    return Lifted(pins, port, names, positive_int(block, "--block-size") if block is not None else None, rest)


def _pins(pins: dict, rest: list[str], warnings: list) -> tuple[dict, list[str]]:
    """Flags after ``--`` that the planner pins (``--max-num-seqs 64``, ``--enforce-eager``, ...) become pins,
    so the plan's memory, performance and command are for what vLLM will run (vLLM takes the last of a
    repeated flag: the command would otherwise carry both and the figures the first). A pin given both ways
    with different values keeps the pinned flag's and says so (``flag-overridden``)."""
    given = {k: v for k, v in parse_flags(rest).items() if k in PIN_KEYS}
    lifted = normalize_pins(given)             # --max-model-len auto: no pin, the planner's own longest that fits
    if not given:
        return pins, rest
    for k, v in lifted.items():
        if k in pins and pins[k] != v:
            flag = "--" + k.replace("_", "-")
            warnings.append(PlanWarning("flag-overridden", f"{flag} {v} after `--` differs from the pinned {flag} "
                                                          f"{pins[k]}: planned and started with {pins[k]}"))
    return {**lifted, **pins}, strip_flags(rest, set(given))


def _port(port: int, rest: list[str], warnings: list) -> tuple[int, list[str]]:
    """``--port P`` after ``--`` is the plan's port (vLLM would listen there while launch and the rendered files
    looked at the plan's); a different port given to vllm-ops itself (not its default 8000) wins, said so."""
    given = value_of(rest, "--port")
    if given is None:
        return port, rest
    p = check_port(positive_int(given, "--port"))
    rest = strip_flags(rest, {"port"})
    if port not in (DEFAULT_PORT, p):
        warnings.append(PlanWarning("flag-overridden", f"--port {p} after `--` differs from --port {port}: planned "
                                                       f"and started on {port}"))
        return port, rest
    return p, rest


def _served(served_name: str | None, rest: list[str], warnings: list) -> tuple[list[str], list[str]]:
    """``--served-model-name A [B ...]`` after ``--``: the plan's served names (clients, launch's readiness check and
    validate ask for the first); a different name given to vllm-ops itself wins, said so."""
    i = next((k for k, tok in enumerate(rest) if str(tok).split("=", 1)[0] == "--served-model-name"), None)
    if i is None:
        return ([served_name] if served_name else []), rest
    tok = str(rest[i])
    names = [tok.split("=", 1)[1]] if "=" in tok else \
        [str(t) for t in itertools.takewhile(lambda t: not str(t).startswith("-"), rest[i + 1:])]
    rest = strip_flags(rest, {"served_model_name"})
    if not names:
        raise BadInput("--served-model-name after `--` has no name")
    if served_name and served_name != names[0]:
        warnings.append(PlanWarning("flag-overridden", f"--served-model-name {names[0]} after `--` differs from "
                                                       f"--served-model-name {served_name}: served as {served_name}"))
        return [served_name], rest
    return names, rest
