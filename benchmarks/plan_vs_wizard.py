"""vllm-ops plan vs vllm-wizard 0.2.0: accuracy against measured vLLM startups, and wall time.

    python benchmarks/plan_vs_wizard.py [--runs 5]

vllm-wizard is installed into a throwaway venv under ~/.cache/vllm-ops/vllm-wizard-0.2.0 (pip,
PyPI) when missing. Both tools run as whole processes on the same configs in the same run; the
configs are the measured H100 runs (tests/data/reference/vllm-h100-runs.csv), each model given to
both as a local directory holding its config.json (from the model catalog, vllm_ops/data/models/).
Prints both side by side. vllm-ops' KV errors here are in-sample (its planner was fitted on these
runs), so they are not a fair accuracy comparison; the wall times are.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "tests" / "data" / "reference"
sys.path.insert(0, str(REPO))
from vllm_ops.models import catalog  # noqa: E402

VENV = Path.home() / ".cache" / "vllm-ops" / "vllm-wizard-0.2.0"


def wizard_exe() -> Path:
    exe = VENV / "bin" / "vllm-wizard"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "vllm-wizard==0.2.0"], check=True)
    return exe


def timed(cmd: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    return time.perf_counter() - t0, res


def find_kv(doc, path="") -> float | None:
    """vllm-wizard's KV pool: its feasibility.kv_cache_gb is the KV its workload needs, and
    headroom_gb what is left of the budget, so the pool vLLM would allocate is their sum."""
    feas = doc.get("feasibility") if isinstance(doc, dict) else None
    if isinstance(feas, dict) and "kv_cache_gb" in feas and "headroom_gb" in feas:
        return float(feas["kv_cache_gb"]) + float(feas["headroom_gb"])
    if isinstance(doc, dict):
        for k, v in doc.items():
            kl = k.lower()
            if isinstance(v, (int, float)) and "kv" in kl and ("gb" in kl or "gib" in kl) and "per" not in kl:
                return float(v)
        for k, v in doc.items():
            got = find_kv(v, path + "/" + k)
            if got is not None:
                return got
    return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    wiz = wizard_exe()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    ops = [sys.executable, "-m", "vllm_ops"]
    rows = [r for r in csv.DictReader(open(REFERENCE / "vllm-h100-runs.csv")) if r["run"].startswith("r")]
    tmp = Path(tempfile.mkdtemp(prefix="plan-vs-wizard-"))
    print(f"{'run':22} {'measured KV':>11} {'vllm-ops':>9} {'err%':>6} {'wizard':>9} {'err%':>6}")
    t_ops, t_wiz, e_ops, e_wiz = [], [], [], []
    for r in rows:
        local = tmp / r["model"].replace("/", "__")
        local.mkdir(exist_ok=True)
        (local / "config.json").write_text(json.dumps(catalog.get_entry(r["model"])["config"], indent=2))
        seqs = [] if "default" in r["max_num_seqs"] else ["--max-num-seqs", r["max_num_seqs"]]
        ops_cmd = ops + ["plan", "--model", r["model"], "--gpus", f"1x{r['total_gpu_memory_gib']}GiB",
                         "--vllm-version", "0.25.0", "--tensor-parallel-size", r["tp"],
                         "--max-model-len", r["max_model_len"], "--gpu-memory-utilization",
                         r["gpu_memory_utilization"], *seqs, "--json"]
        if r["enforce_eager"] == "true":
            ops_cmd.append("--enforce-eager")
        wiz_cmd = [str(wiz), "plan", "--model", str(local), "--gpu", "H100", "--gpus", "1",
                   "--tensor-parallel-size", r["tp"], "--max-model-len", r["max_model_len"],
                   "--gpu-memory-utilization", r["gpu_memory_utilization"], "--json"]
        for _ in range(a.runs):
            dt, res_o = timed(ops_cmd, env)
            t_ops.append(dt)
            dt, res_w = timed(wiz_cmd, env)
            t_wiz.append(dt)
        kv_o = json.loads(res_o.stdout)["memory"]["kv_cache_gib"]
        try:
            kv_w = find_kv(json.loads(res_w.stdout, strict=False))  # rich wraps long strings
        except ValueError:
            kv_w = None
        meas = float(r["kv_cache_gib"])
        eo = abs(kv_o - meas) / meas * 100
        e_ops.append(eo)
        ew = abs(kv_w - meas) / meas * 100 if kv_w is not None else float("nan")
        e_wiz.append(ew)
        print(f"{r['run']:22} {meas:11.2f} {kv_o:9.2f} {eo:6.1f} {kv_w if kv_w is not None else float('nan'):9.2f} "
              f"{ew:6.1f}" + ("" if res_w.returncode == 0 else f"  (wizard rc {res_w.returncode}: "
                                                              f"{res_w.stderr.strip().splitlines()[-1:]} )"))
    mo, mw = statistics.median(t_ops), statistics.median(t_wiz)
    print(f"median wall time: vllm-ops plan {mo:.3f} s, vllm-wizard plan {mw:.3f} s, ratio {mo / mw:.2f} "
          f"(target <= 0.70) over {len(t_ops)} runs each")
    print(f"median KV error: vllm-ops {statistics.median(e_ops):.1f}% (in-sample), vllm-wizard "
          f"{statistics.median(e_wiz):.1f}% (wizard figures in its own units, GB as printed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
