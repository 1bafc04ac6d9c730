"""``vllm-ops validate``: check a running vLLM server's features end to end.

    from vllm_ops.validate import run_validation
    report = run_validation("http://127.0.0.1:8000", model="tiny", concurrency=8)
    report.ok          # nothing failed (skips allowed)

Modules: :mod:`.report` (CheckResult, ValidationReport: JSON, JUnit XML, table),
:mod:`.constraints` (structured-output constraints and their verifiers), :mod:`.checks`
(one async function per check), :mod:`.lora` (the LoRA checks) over :mod:`.fingerprint`
(logprob fingerprints and the noise rule), :mod:`.adapters` (writes a PEFT adapter; extra
``[lora]``), :mod:`.runner` (order and wiring).
"""
from __future__ import annotations

from typing import Any

from vllm_ops.validate.report import FAIL, PASS, SKIP, CheckResult, ValidationReport

__all__ = ["run_validation", "arun_validation", "parse_lora_specs", "CheckResult",
           "ValidationReport", "PASS", "FAIL", "SKIP"]


def __getattr__(name: str) -> Any:  # lazy: the client (httpx) loads only when validating
    if name in ("run_validation", "arun_validation", "parse_lora_specs"):
        from vllm_ops.validate import runner

        return getattr(runner, name)
    raise AttributeError(name)
