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

The CLI prints ``str(error)`` as one line on stderr (plus ``error.hint`` when set), never a
traceback (``VLLM_OPS_DEBUG=1`` shows it). The client has its own hierarchy
(:mod:`vllm_ops.client.errors`), mapped to exit 1 by the CLI.
"""
from __future__ import annotations


class VllmOpsError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def one_line(self) -> str:
        msg = " ".join(str(self).split())
        return f"{msg} ({self.hint})" if self.hint else msg


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
