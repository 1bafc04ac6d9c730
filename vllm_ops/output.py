"""Output sinks shared by the commands: one JSON document on stdout, progress and hints on stderr."""
from __future__ import annotations

import json
import sys
import time
from typing import Any


def print_json(doc: Any) -> None:
    """Exactly one valid JSON document on stdout (also when piped)."""
    sys.stdout.write(json.dumps(doc, indent=2, default=_default) + "\n")
    sys.stdout.flush()


def _default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def info(msg: str) -> None:
    """A line for the human on stderr (keeps stdout parseable)."""
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def warn(msg: str) -> None:
    info(f"warning: {msg}")


class Progress:
    """Minimal stage progress on stderr: `[  12.3s] stage: detail`. Silent when quiet."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.t0 = time.monotonic()
        self.stage: str | None = None
        self.stage_t0 = self.t0

    def __call__(self, stage: str, detail: str = "") -> None:
        now = time.monotonic()
        if stage != self.stage:
            self.stage, self.stage_t0 = stage, now
        if not self.quiet:
            info(f"[{now - self.t0:7.1f}s] {stage}{': ' + detail if detail else ''}")

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


def console(stderr: bool = False, pipe_width: int | None = None):
    """A rich Console, imported only when a table is printed. ``pipe_width``: the columns when
    stdout is a pipe or a file (rich would otherwise fall back to 80 and cut columns); the
    terminal's width on a TTY."""
    from rich.console import Console

    width = pipe_width if pipe_width and not sys.stdout.isatty() else None
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def compact_table(**kw: Any):
    """A rich Table with a rule under the header and no outer edge or padding (probe's tables)."""
    from rich import box
    from rich.table import Table

    return Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0), **kw)
