"""The flags of the commands that talk to a running server (validate, bench, generate), declared once.

``--url`` (the server root), ``--api-key-env VAR``, ``--json``, ``--quiet``, ``--timeout``.
:func:`server_from_args` turns them into a :class:`Server` (URL checked, key read) and
:func:`connect` gives a client that has already seen the server answer ``GET /health``: an
unreachable or unhealthy server is one line naming the URL and the error (exit 1), before
anything else runs.

``--api-key-env VAR`` means exactly ``VAR``: unset or empty, it is bad input (exit 2), never a
silent fall-back to ``VLLM_API_KEY``. Without the flag the key is ``VLLM_API_KEY`` when set.
"""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from typing import Any

from vllm_ops.errors import BadInput

DEFAULT_KEY_ENV = "VLLM_API_KEY"
DEFAULT_ROOT = "http://localhost:8000"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class Server:
    url: str                                   # the server root, http://host:port
    api_key: str | None = field(default=None, repr=False)
    timeout: float | None = 120.0              # seconds per request (None: the client's setting)


def add_server_flags(p: argparse.ArgumentParser, *, timeout: float | None = 120.0,
                     progress: bool = True) -> None:
    """Declare ``--url --api-key-env --json --quiet --timeout`` on ``p`` (``timeout`` None: the
    client's own setting, ``VLLM_OPS_CLIENT_TIMEOUT``, 600 s)."""
    p.add_argument("--url", default=None,
                   help=f"server root, http://host:port (default: VLLM_BASE_URL without /v1, else {DEFAULT_ROOT})")
    p.add_argument("--api-key-env", default=None, metavar="VAR",
                   help=f"environment variable holding the API key; exactly VAR, which must be set "
                        f"(default: {DEFAULT_KEY_ENV} when set, else no key)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("--quiet", action="store_true",
                   help="no progress on stderr" if progress else "print nothing but the answer (the default)")
    p.add_argument("--timeout", type=float, default=timeout, metavar="S",
                   help=f"seconds per request (default {timeout:g})" if timeout is not None else
                   "seconds per request (default VLLM_OPS_CLIENT_TIMEOUT, else 600)")


def default_root_url(url: str | None) -> str:
    """``url`` without a trailing slash, else ``VLLM_BASE_URL``'s root, else localhost:8000."""
    if url:
        return url.rstrip("/")
    env = os.environ.get("VLLM_BASE_URL")
    if env:
        from vllm_ops.client._base import split_urls

        return split_urls(env)[0]
    return DEFAULT_ROOT


def check_root_url(url: str, what: str = "--url") -> str:
    """``url`` when it is a server root vLLM could answer on (``http``/``https``, a host, a valid
    port, no spaces); BadInput (exit 2) otherwise, before any request."""
    from urllib.parse import urlsplit

    bad = BadInput(f"{what} {url!r} is not an http(s) server URL",
                   hint="give the server root, e.g. http://localhost:8000")
    if not url or any(c.isspace() for c in url):
        raise bad
    try:
        u = urlsplit(url)
        u.port  # noqa: B018 — raises ValueError for a port out of range or not a number
    except ValueError:
        raise bad from None
    if u.scheme not in ("http", "https") or not u.hostname:
        raise bad
    return url


def api_key_from(var: str | None) -> str | None:
    """The API key: from exactly ``var`` when given (unset or empty → BadInput), else from
    ``VLLM_API_KEY`` when set, else None."""
    if var is None:
        return os.environ.get(DEFAULT_KEY_ENV) or None
    if not _ENV_NAME.match(var):
        raise BadInput(f"--api-key-env wants an environment variable name, not {var!r}")
    value = os.environ.get(var)
    if not value:
        raise BadInput(f"--api-key-env {var}: the environment variable {var} is "
                       f"{'empty' if value == '' else 'not set'}",
                       hint=f"export {var}=... or leave --api-key-env out to use {DEFAULT_KEY_ENV}")
    return value


def server_from_args(args: argparse.Namespace) -> Server:
    """The checked :class:`Server` of the shared flags (BadInput, exit 2, on a bad one)."""
    url = check_root_url(default_root_url(args.url), "--url" if args.url else "VLLM_BASE_URL")
    if args.timeout is not None and not args.timeout > 0:
        raise BadInput(f"--timeout must be > 0 seconds, not {args.timeout:g}")
    return Server(url=url, api_key=api_key_from(args.api_key_env), timeout=args.timeout)


def connect(server: Server, **client_kwargs: Any):
    """A client for ``server`` that has seen ``GET /health`` answer; otherwise the client's one-line
    error naming the URL (exit 1). Close it (``with``) when done."""
    from vllm_ops.client import VLLMProvider

    llm = VLLMProvider.from_root_url(server.url, api_key=server.api_key, timeout=server.timeout,
                                     **client_kwargs)
    try:
        llm.require_healthy()
    except BaseException:
        llm.close()
        raise
    return llm


def report_console():
    """The console the human tables print on: the terminal's width on a TTY; 132 columns when
    stdout is a pipe or a file, as `plan`."""
    from vllm_ops import output

    return output.console(pipe_width=132)
