"""The `vllm-ops` command line: thin. Parses flags, calls one library stage, prints.

Each command lives in ``vllm_ops/commands/<name>.py`` with two functions:
``configure(parser)`` (declares its flags) and ``run(args) -> int`` (does the work, imports
what it needs lazily). Errors are mapped to exit statuses once, here:
0 ok · 1 runtime failure · 2 bad input · 3 the plan does not fit memory.
One clear line on stderr, never a traceback (``VLLM_OPS_DEBUG=1`` shows it).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from vllm_ops import __version__
from vllm_ops.errors import VllmOpsError, shorten

# command name → (module under vllm_ops.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "probe": ("probe", "read the GPUs through NVML"),
    "models": ("models", "list or show model facts"),
    "plan": ("plan", "plan a vLLM deployment (TP, max-num-seqs, memory, ...)"),
    "profiles": ("profiles", "list or show hardware profiles"),
    "render": ("render", "render launch command, compose, systemd, k8s or Ray files"),
    "launch": ("launch", "start vLLM and wait until it is ready"),
    "status": ("status", "show running deployments"),
    "logs": ("logs", "show a deployment's log"),
    "stop": ("stop", "stop a deployment"),
    "validate": ("validate", "check a running server's features"),
    "bench": ("bench", "load-test a running server"),
    "tune": ("tune", "measure the top `plan --slo` candidates on this box, keep the best as a profile"),
    "generate": ("generate", "send one request through the bundled client"),
    "upgrade-check": ("upgrade_check", "does a deployment still work on another vLLM release?"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors: one line, exit 2

        sys.stderr.write(f"vllm-ops: error: {shorten(message)} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def _available() -> dict[str, tuple[str, str]]:
    pkg = os.path.join(os.path.dirname(__file__), "commands")
    return {k: v for k, v in COMMANDS.items() if os.path.exists(os.path.join(pkg, v[0] + ".py"))}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="vllm-ops", description="Get vLLM serving right the first time.")
    parser.add_argument("--version", action="version", version=f"vllm-ops {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (mod, help_) in _available().items():
        p = sub.add_parser(name, help=help_, description=help_)
        if only is None or only == name:
            module = importlib.import_module(f"vllm_ops.commands.{mod}")
            module.configure(p)
            p.set_defaults(_run=module.run)
    return parser


def _split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return actions[0].choices.get(name) if actions else None


def _misplaced_own_flags(sub: argparse.ArgumentParser | None, passthrough: list[str]) -> str | None:
    """The first ``--flag`` after ``--`` that is this command's own and not one of vLLM's (``plan ... -- --json``
    renders a command vLLM refuses and prints no JSON), or None."""
    if sub is None:
        return None
    own = {o for a in sub._actions for o in a.option_strings if o.startswith("--")}
    mine = [name for name in (t.partition("=")[0] for t in passthrough) if name in own]
    if not mine:
        return None
    from vllm_ops.planning.vllm_flags import known_flags       # read only when one of ours is there

    return next((name for name in mine if name not in known_flags()), None)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv, passthrough = _split_passthrough(argv)
    # configure only the command being run: importing every command module would slow `plan`
    only = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only if only in COMMANDS else None)
    args = parser.parse_args(argv)
    args.passthrough = passthrough
    if passthrough and getattr(args, "command", None):
        sub = _subparser(parser, args.command)
        misplaced = _misplaced_own_flags(sub, passthrough)
        if misplaced:
            sub.error(f"{misplaced} comes after '--', so it would go to vLLM, whose parser has no such flag; "
                         f"vllm-ops's own flags go before '--'")
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    return run_command(args)


def run_command(args: argparse.Namespace) -> int:
    debug = os.environ.get("VLLM_OPS_DEBUG") not in (None, "", "0")
    try:
        rc = args._run(args)
        return int(rc or 0)
    except VllmOpsError as exc:
        if debug:
            raise
        sys.stderr.write(f"vllm-ops: error: {exc.one_line()}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("vllm-ops: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 — the last line of defence: still one line, exit 1
        if debug:
            raise
        mapped = _map_foreign(exc)
        if mapped is not None:
            sys.stderr.write(f"vllm-ops: error: {mapped[1]}\n")
            return mapped[0]
        from vllm_ops.errors import shorten

        sys.stderr.write(f"vllm-ops: error: {type(exc).__name__}: {shorten(str(exc))} "
                         f"(set VLLM_OPS_DEBUG=1 for the traceback)\n")
        return 1


def _map_foreign(exc: Exception) -> tuple[int, str] | None:
    """Errors of the client hierarchy → exit 1 with vLLM's own message."""
    try:
        from vllm_ops.client.errors import VLLMError
    except Exception:  # pragma: no cover
        return None
    if isinstance(exc, VLLMError):
        from vllm_ops.errors import shorten

        return 1, shorten(str(exc))
    return None


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
