"""Quoting for each target format: every user-controlled string goes through one of these.

    sh(s)            POSIX shell word (shlex.quote)
    yaml_str(s)      a YAML double-quoted scalar (JSON string syntax is valid YAML)
    compose_str(s)   yaml_str after Compose interpolation escaping ($ → $$)
    k8s_str(s)       yaml_str after kubelet $(VAR) expansion escaping ($ → $$) for command/args/env
    systemd_arg(s)   one ExecStart= word: C-escaped, double-quoted, % → %%, $ → $$
    systemd_env(k,v) one Environment= assignment, double-quoted, % → %%
    systemd_text(s)  free text in a unit (Description=): % → %%

``check_text`` refuses strings no target can carry (newlines, other control characters).
``systemd_split`` parses an ExecStart= line back (used to check rendered units).
"""
from __future__ import annotations

import json
import re
import shlex

from vllm_ops.planning.argv import check_text  # noqa: F401  (the rule lives with argv)

_SYSTEMD_BARE = re.compile(r"^[A-Za-z0-9_./:=,+@-]+$")


def sh(value: object) -> str:
    return shlex.quote(str(value))


def _yaml_escape(c: str) -> str:
    o = ord(c)
    return c if o < 0x7F else (f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}")


def yaml_str(value: object) -> str:
    """A YAML double-quoted scalar in plain ASCII: JSON string syntax (``\\"``, ``\\\\``, C0 escapes)
    with every non-ASCII character escaped the YAML way: ``\\uXXXX`` in the BMP, ``\\UXXXXXXXX``
    above it. (JSON's surrogate pairs — ``\\ud83d\\ude42`` for 🙂 — are not YAML: they decode as
    two lone surrogates, which YAML refuses.)"""
    return "".join(_yaml_escape(c) for c in json.dumps(str(value), ensure_ascii=False))


def compose_str(value: object) -> str:
    return yaml_str(str(value).replace("$", "$$"))


def k8s_str(value: object) -> str:
    return yaml_str(str(value).replace("$", "$$"))


def _systemd_escape(s: str) -> str:
    s = s.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t")
    return s.replace("%", "%%")


def systemd_arg(value: object) -> str:
    s = str(value)
    if s == ";":
        return "\\;"
    if s and _SYSTEMD_BARE.match(s):
        return s
    return '"' + _systemd_escape(s).replace("$", "$$") + '"'


def systemd_env(key: str, value: object) -> str:
    return '"' + _systemd_escape(f"{key}={value}") + '"'


def systemd_text(value: object) -> str:
    return str(value).replace("%", "%%")


_C_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
              "\\": "\\", '"': '"', "'": "'", "s": " ", ";": ";"}


def systemd_split(line: str) -> list[str]:
    """Split an ExecStart= value the way systemd does (quotes, C escapes, %% and $$).

    Only what our renderer emits needs to round-trip; unknown escapes raise ValueError.
    """
    words: list[str] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            break
        buf: list[str] = []
        quote: str | None = None
        while i < n:
            c = line[i]
            if quote is None and c in " \t":
                break
            if quote is None and c in "\"'":
                quote = c
            elif quote is not None and c == quote:
                quote = None
            elif c == "\\":
                i += 1
                esc = line[i] if i < n else ""
                if esc not in _C_ESCAPES:
                    raise ValueError(f"unknown escape \\{esc}")
                buf.append(_C_ESCAPES[esc])
            elif c == "%":
                i += 1
                if i >= n or line[i] != "%":
                    raise ValueError("unescaped % (a specifier)")
                buf.append("%")
            elif c == "$":
                i += 1
                if i >= n or line[i] != "$":
                    raise ValueError("unescaped $ (a variable)")
                buf.append("$")
            else:
                buf.append(c)
            i += 1
        if quote is not None:
            raise ValueError("unterminated quote")
        words.append("".join(buf))
    return words
