"""Client overhead: vllm-ops' VLLMProvider vs the official `openai` SDK vs bare httpx.

Sequential chat requests with ``max_tokens=1`` against a real vLLM server, in alternating rounds
(each round runs every client once, in rotating order); reports the median requests/second and
process CPU milliseconds per request (``time.process_time`` around the loop: client-side CPU only;
the server is another process).

    python benchmarks/client_overhead.py                 # starts a vLLM CPU test server
    python benchmarks/client_overhead.py --url http://127.0.0.1:8000 --model tiny

Targets (issue 3): req/s within 5 % of bare httpx; CPU per request ≤ half the openai SDK's.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT = "Say hi"


def make_clients(base_url: str, model: str) -> dict[str, tuple[Callable[[], object], Callable[[], None]]]:
    import httpx
    import openai

    from vllm_ops.client import VLLMProvider

    clients: dict[str, tuple[Callable[[], object], Callable[[], None]]] = {}

    llm = VLLMProvider(base_url, model=model, api_key=None)

    def vllm_ops_call():
        return llm.generate(PROMPT, max_tokens=1).content
    clients["vllm-ops"] = (vllm_ops_call, llm.close)

    oa = openai.OpenAI(base_url=base_url, api_key="EMPTY", max_retries=0)

    def openai_call():
        return oa.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}],
                                          max_tokens=1).choices[0].message.content
    clients["openai SDK"] = (openai_call, oa.close)

    hx = httpx.Client(timeout=60)
    url = base_url.rstrip("/") + "/chat/completions"

    def httpx_call():
        r = hx.post(url, json={"model": model, "messages": [{"role": "user", "content": PROMPT}],
                               "max_tokens": 1})
        r.raise_for_status()
        return r.json()["choices"][0]["message"]["content"]
    clients["bare httpx"] = (httpx_call, hx.close)
    return clients


def measure(call: Callable[[], object], n: int) -> tuple[float, float]:
    """(requests/second, CPU ms per request) of n sequential calls."""
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        call()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return n / wall, cpu / n * 1000


def run(base_url: str, model: str, n: int, rounds: int, warmup: int) -> dict[str, dict[str, float]]:
    clients = make_clients(base_url, model)
    names = list(clients)
    try:
        for name in names:
            for _ in range(warmup):
                clients[name][0]()
        samples: dict[str, list[tuple[float, float]]] = {k: [] for k in names}
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                samples[name].append(measure(clients[name][0], n))
            sys.stderr.write(f"round {r + 1}/{rounds}: " + ", ".join(
                f"{k} {samples[k][-1][0]:.1f} req/s {samples[k][-1][1]:.2f} ms" for k in names) + "\n")
    finally:
        for _, close in clients.values():
            close()
    return {k: {"req_s": statistics.median(s[0] for s in v), "cpu_ms": statistics.median(s[1] for s in v)}
            for k, v in samples.items()}


def table(res: dict[str, dict[str, float]]) -> str:
    base = res["bare httpx"]
    sdk = res["openai SDK"]
    lines = [f"{'client':<12} {'req/s':>8} {'vs httpx':>9} {'CPU ms/req':>11} {'vs openai':>10}",
             "-" * 54]
    for k, v in res.items():
        lines.append(f"{k:<12} {v['req_s']:>8.1f} {v['req_s'] / base['req_s'] * 100:>8.1f}% "
                     f"{v['cpu_ms']:>11.2f} {v['cpu_ms'] / sdk['cpu_ms'] * 100:>9.1f}%")
    ours = res["vllm-ops"]
    ok_rps = ours["req_s"] >= 0.95 * base["req_s"]
    ok_cpu = ours["cpu_ms"] <= 0.5 * sdk["cpu_ms"]
    lines.append("")
    lines.append(f"target req/s ≥ 95% of bare httpx: {'PASS' if ok_rps else 'FAIL'}; "
                 f"target CPU/req ≤ 50% of openai SDK: {'PASS' if ok_cpu else 'FAIL'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="server root (default: start a vLLM CPU test server)")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--requests", type=int, default=200, help="requests per client per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=20)
    args = ap.parse_args(argv)

    with contextlib.ExitStack() as stack:
        url = args.url
        if not url:
            from tests.support import testbed

            work = stack.enter_context(tempfile.TemporaryDirectory(prefix="client-bench-"))
            sys.stderr.write("starting a vLLM CPU test server (30-60 s)...\n")
            server = stack.enter_context(testbed.start_test_server(work, adapters=(), enable_lora=False))
            url, args.model = server.root_url, server.model
        base_url = url.rstrip("/").removesuffix("/v1") + "/v1"
        res = run(base_url, args.model, args.requests, args.rounds, args.warmup)
    print(f"sequential chat requests, max_tokens=1, {args.requests} per client x {args.rounds} "
          f"alternating rounds, medians")
    print(table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
