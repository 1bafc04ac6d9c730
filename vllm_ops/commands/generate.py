"""`vllm-ops generate PROMPT`: one request through the bundled client; prints the answer.

Constraints (one at most): ``--json-schema FILE``, ``--regex R``, ``--choice a,b``,
``--grammar G`` — sent as vLLM's ``structured_outputs``. Server flags (``--url``, the root;
``--api-key-env``; ``--json``; ``--quiet``; ``--timeout``) are shared with validate and bench
(:mod:`vllm_ops.commands._server`); the key never comes from argv.
"""
from __future__ import annotations

import argparse

from vllm_ops.commands._server import add_server_flags, connect, server_from_args
from vllm_ops.errors import BadInput, MalformedFile
from vllm_ops.output import print_json


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", metavar="PROMPT", help="the prompt (sent as a user message)")
    parser.add_argument("--model", help="served model or LoRA adapter name (default: the server's model)")
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--json-schema", metavar="FILE", help="constrain the answer to this JSON schema")
    g.add_argument("--regex", metavar="R", help="constrain the answer to this regular expression")
    g.add_argument("--choice", metavar="A,B,...", help="constrain the answer to one of these")
    g.add_argument("--grammar", metavar="G", help="constrain the answer to this grammar (GBNF/EBNF)")
    parser.add_argument("--max-tokens", type=int, metavar="N", help="at most N new tokens (default 256)")
    parser.add_argument("--temperature", type=float, help="sampling temperature (0 = greedy)")
    parser.add_argument("--system", metavar="TEXT", help="a system prompt")
    parser.add_argument("--completions", action="store_true",
                        help="use /v1/completions with the raw prompt instead of chat")
    parser.add_argument("--stream", action="store_true", help="print the answer as it arrives")
    add_server_flags(parser, timeout=None, progress=False)


def _schema(path: str):
    import json

    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as exc:
        raise MalformedFile(f"cannot read JSON schema {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise MalformedFile(f"{path} is not JSON: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    import sys

    kw: dict = {}
    if args.json_schema:
        kw["guided_json"] = _schema(args.json_schema)
    elif args.regex:
        kw["guided_regex"] = args.regex
    elif args.choice:
        kw["guided_choice"] = [c.strip() for c in args.choice.split(",") if c.strip()]
        if not kw["guided_choice"]:
            raise BadInput("--choice needs at least one non-empty choice")
    elif args.grammar:
        kw["guided_grammar"] = args.grammar
    if args.max_tokens is not None and args.max_tokens < 1:
        raise BadInput("--max-tokens must be at least 1")
    llm = connect(server_from_args(args))  # unreachable or unhealthy: one line, exit 1, now
    common = dict(model=args.model, max_tokens=args.max_tokens, temperature=args.temperature,
                  system_prompt=args.system, endpoint="completions" if args.completions else "chat", **kw)
    with llm:
        if args.stream and not args.json:
            for delta in llm.stream(args.prompt, **common):
                sys.stdout.write(delta)
                sys.stdout.flush()
            sys.stdout.write("\n")
            return 0
        r = llm.generate(args.prompt, **common)
    if args.json:
        u = r.usage
        print_json({"content": r.content, "model": r.model, "finish_reason": r.finish_reason,
                    "usage": u._asdict() if u else None,
                    "choices": [{"index": c.index, "text": c.text, "finish_reason": c.finish_reason}
                                for c in r.choices]})
    else:
        sys.stdout.write(r.content + "\n")
    return 0
