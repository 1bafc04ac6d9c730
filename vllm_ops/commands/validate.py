"""`vllm-ops validate`: check a running server's features (exit 0 only when nothing failed)."""
from __future__ import annotations

import argparse
import os


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None,
                   help="server root, http://host:port (default: VLLM_BASE_URL without /v1, "
                        "else http://localhost:8000)")
    p.add_argument("--model", default=None, help="the served model to expect (default: the listed base model)")
    p.add_argument("--lora", action="append", default=[], metavar="NAME=PATH",
                   help="an adapter to load, exercise and unload (PATH on the server's machine); repeatable")
    p.add_argument("--concurrency", type=int, default=8, help="parallel requests of the concurrency check (default 8)")
    p.add_argument("--repeats", type=int, default=3, help="answers per structured-output check (default 3)")
    p.add_argument("--only", default=None, metavar="CHECK,...",
                   help="run only these checks or groups (e.g. structured,lora,stream)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default 120)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("--junit", default=None, metavar="FILE", help="also write JUnit XML for CI")
    p.add_argument("--api-key-env", default="VLLM_API_KEY", metavar="VAR",
                   help="environment variable holding the API key (default VLLM_API_KEY)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def check_root_url(url: str, what: str = "--url") -> str:
    """``url`` when it is a server root vLLM could answer on (``http``/``https``, a host, a valid
    port, no spaces); BadInput (exit 2) otherwise, before any check runs."""
    from urllib.parse import urlsplit

    from vllm_ops.errors import BadInput

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


def report_console():
    """The console the human tables print on: the terminal's width on a TTY; 132 columns when
    stdout is a pipe or a file (rich would otherwise fall back to 80 and cut columns), as `plan`."""
    import sys

    from rich.console import Console

    return Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 132)


def run(args: argparse.Namespace) -> int:
    from vllm_ops import output
    from vllm_ops.commands.bench import default_root_url
    from vllm_ops.errors import BadInput
    from vllm_ops.validate.runner import parse_lora_specs, run_validation

    if args.concurrency < 1 or args.repeats < 1:
        raise BadInput("--concurrency and --repeats must be at least 1")
    loras = parse_lora_specs(args.lora)
    url = check_root_url(default_root_url(args.url), "--url" if args.url else "VLLM_BASE_URL")
    report = run_validation(url, args.model, loras=loras, concurrency=args.concurrency,
                            api_key=os.environ.get(args.api_key_env) or None,
                            timeout=args.timeout, repeats=args.repeats,
                            only=[x.strip() for x in args.only.split(",") if x.strip()] if args.only else None,
                            progress=output.Progress(quiet=args.quiet or args.json))
    if args.junit:
        try:
            with open(args.junit, "w", encoding="utf-8") as f:
                f.write(report.to_junit_xml())
        except OSError as exc:
            raise BadInput(f"cannot write {args.junit}: {exc.strerror}") from None
    if args.json:
        output.print_json(report.to_dict())
    else:
        report.print_table(report_console())
    return 0 if report.ok else 1
