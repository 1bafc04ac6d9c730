"""The one error table of vllm-ops.

Every error a user can cause or meet is a subclass of :class:`VllmOpsError` and carries the exit
status the CLI uses:

    VllmOpsError
    ├── BadInput            exit 2  usage, unknown GPU/model/profile, malformed file, impossible pin
    │   ├── UnknownGPU
    │   ├── UnknownModel
    │   ├── MalformedFile
    │   └── ImpossiblePin
    ├── RuntimeFailure      exit 1  server not ready, a check failed, no GPU to probe, launch failed
    │   └── NoGPU
    └── DoesNotFit          exit 3  the plan does not fit memory

The CLI prints ``error.one_line()`` on stderr: ``str(error)`` with its whitespace collapsed to
one line, plus ``error.hint`` when set, never a traceback (``VLLM_OPS_DEBUG=1`` shows it).
Messages quote what the user gave; :func:`shorten` (applied once, in ``one_line``) cuts any
echoed run longer than :data:`MAX_ECHO` characters, so a 5000-character ``--gpus`` or model name
gives a readable line, not a 10 kB one. The client has its own hierarchy
(:mod:`vllm_ops.client.errors`), mapped to exit 1 by the CLI.
"""
from __future__ import annotations


MAX_ECHO = 200          # longest run of echoed input kept in an error line
MAX_LINE = 1000         # longest message (and hint) kept in an error line


def shorten(text: str, max_echo: int = MAX_ECHO, max_line: int = MAX_LINE) -> str:
    """``text`` on one line (whitespace collapsed), every word longer than ``max_echo``
    characters cut to its start plus ``…(N chars)``, the whole cut at ``max_line``."""
    words = []
    for w in str(text).split():
        if len(w) > max_echo:
            w = f"{w[:max_echo]}…({len(w)} chars)"
        words.append(w)
    line = " ".join(words)
    if len(line) > max_line:
        line = line[:max_line] + f"…(+{len(line) - max_line} chars)"
    return line


class VllmOpsError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def one_line(self) -> str:
        """The message (and hint) as the one line the CLI prints; long echoed input is cut
        (:func:`shorten`)."""
        msg = shorten(str(self))
        return f"{msg} ({shorten(self.hint)})" if self.hint else msg


class BadInput(VllmOpsError):
    exit_code = 2


class UnknownGPU(BadInput):
    pass


class UnknownModel(BadInput):
    pass


class MalformedFile(BadInput):
    pass


class ImpossiblePin(BadInput):
    pass


class RuntimeFailure(VllmOpsError):
    exit_code = 1


class NoGPU(RuntimeFailure):
    pass


class DoesNotFit(VllmOpsError):
    exit_code = 3
