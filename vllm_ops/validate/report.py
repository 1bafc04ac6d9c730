"""Result types of ``vllm-ops validate``: one :class:`CheckResult` per check, one report.

A check is ``pass``, ``fail`` or ``skip``; a skip always states why (e.g. the server runs without
runtime LoRA updating). :attr:`ValidationReport.ok` is True when nothing failed: skips are allowed.
Output faces: ``to_dict()`` (``--json``), ``to_junit_xml()`` (``--junit FILE``) and
``print_table()`` (rich, imported only there).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any
from xml.etree import ElementTree as ET

from vllm_ops.output import console as make_console

PASS, FAIL, SKIP = "pass", "fail", "skip"
STATUSES = (PASS, FAIL, SKIP)


@dataclass
class CheckResult:
    name: str                                   # e.g. "structured.json"
    status: str                                 # pass | fail | skip
    detail: str = ""                            # one line: what was seen, or why it failed/skipped
    duration_ms: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)   # figures (latencies, counts, ...)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")
        if self.status == SKIP and not self.detail:
            raise ValueError(f"check {self.name}: a skip needs a reason")

    @property
    def passed(self) -> bool:
        return self.status == PASS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ValidationReport:
    url: str
    model: str | None
    version: str | None = None
    checks: list[CheckResult] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(c.status == FAIL for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for c in self.checks if c.status == s) for s in STATUSES}

    def get(self, name: str) -> CheckResult | None:
        return next((c for c in self.checks if c.name == name), None)

    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == FAIL]

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "model": self.model, "version": self.version, "ok": self.ok,
                "counts": self.counts(), "duration_s": round(self.duration_s, 3),
                "checks": [c.to_dict() for c in self.checks]}

    # -- JUnit XML ---------------------------------------------------------------------------
    def to_junit_xml(self, suite: str = "vllm-ops validate") -> str:
        """JUnit XML (one ``testsuite``; a check is a ``testcase``; fail → ``failure``, skip →
        ``skipped``), the dialect Jenkins, GitLab and GitHub reporters read."""
        c = self.counts()
        root = ET.Element("testsuites", name=suite, tests=str(len(self.checks)),
                          failures=str(c[FAIL]), errors="0", skipped=str(c[SKIP]),
                          time=f"{self.duration_s:.3f}")
        ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(self.checks)),
                           failures=str(c[FAIL]), errors="0", skipped=str(c[SKIP]),
                           time=f"{self.duration_s:.3f}")
        props = ET.SubElement(ts, "properties")
        for k, v in (("url", self.url), ("model", self.model), ("version", self.version)):
            if v:
                ET.SubElement(props, "property", name=k, value=str(v))
        for chk in self.checks:
            tc = ET.SubElement(ts, "testcase", classname=f"vllm.{chk.name.split('.')[0]}",
                               name=chk.name, time=f"{chk.duration_ms / 1000:.3f}")
            if chk.status == FAIL:
                f = ET.SubElement(tc, "failure", message=chk.detail, type="CheckFailed")
                f.text = chk.detail
            elif chk.status == SKIP:
                ET.SubElement(tc, "skipped", message=chk.detail)
            elif chk.detail:
                out = ET.SubElement(tc, "system-out")
                out.text = chk.detail
        ET.indent(root)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"

    # -- human table -------------------------------------------------------------------------
    def print_table(self, console: Any = None) -> None:
        from rich.table import Table

        con = console or make_console()
        title = f"vllm-ops validate {self.url} (model {self.model or '?'}, vLLM {self.version or '?'})"
        t = Table(title=title, title_justify="left")
        t.add_column("check")
        t.add_column("status")
        t.add_column("ms", justify="right")
        t.add_column("detail", overflow="fold")
        style = {PASS: "green", FAIL: "bold red", SKIP: "yellow"}
        for chk in self.checks:
            t.add_row(chk.name, f"[{style[chk.status]}]{chk.status}[/]",
                      f"{chk.duration_ms:.0f}", chk.detail)
        con.print(t)
        c = self.counts()
        verdict = "[green]OK[/]" if self.ok else "[bold red]FAILED[/]"
        con.print(f"{verdict}: {c[PASS]} passed, {c[FAIL]} failed, {c[SKIP]} skipped "
                  f"in {self.duration_s:.1f} s")
