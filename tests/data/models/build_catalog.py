"""Add or refresh vllm_ops/data/models/*.json entries from a folder of model configs and from
tests/data/models/extra/*.json (entries written by hand, each with its own _source).

    python tests/data/models/build_catalog.py CONFIGS_DIR

CONFIGS_DIR holds one folder per model, named ORG__NAME, with the model's `config.json`, a
`SOURCE.txt` (first line `Model: ORG/NAME`, then `Status: ...` and where the file came from) and,
when known, `safetensors_total_size.txt` (the index's metadata.total_size); a verbatim
quantized config's one-line SOURCE.txt takes the id from the folder name. The SOURCE.txt text is
kept in the entry as `_source.source_txt`; the catalog files are the repository's copy.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
OUT = REPO / "vllm_ops" / "data" / "models"


def entry_from_folder(folder: Path) -> dict:
    src = (folder / "SOURCE.txt").read_text(encoding="utf-8")
    m = re.search(r"^Model:\s*(\S+)", src, re.M)
    # the verbatim quantized configs' SOURCE.txt is one line (no Model:/Status:): id from the folder
    model = m.group(1) if m else folder.name.replace("__", "/", 1)
    status = (re.search(r"^Status:\s*(.+)$", src, re.M) or [None, "verbatim" if not m else ""])[1].strip()
    first = next((ln.strip() for ln in src.splitlines()[(2 if m else 0):] if ln.strip()), "")
    first = re.sub(r"^(Source|Primary|Base text|Architecture):\s*", "", first)
    total = None
    ts = folder / "safetensors_total_size.txt"
    if ts.is_file():
        total = int(ts.read_text().split()[0])
    hqc = folder / "hf_quant_config.json"
    extra = {"hf_quant_config": json.loads(hqc.read_text(encoding="utf-8"))} if hqc.is_file() else {}
    return {
        "id": model,
        "_source": {"status": status, "from": first,
                    "provenance": "model-configs/" + folder.name + "/SOURCE.txt",
                    "source_txt": src},
        "safetensors_total_size": total,
        "config": json.loads((folder / "config.json").read_text(encoding="utf-8")),
        **extra,
    }


def main(configs_dir: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    entries = [entry_from_folder(d) for d in sorted(Path(configs_dir).iterdir()) if (d / "config.json").is_file()]
    for f in sorted((Path(__file__).parent / "extra").glob("*.json")):
        entries.append(json.loads(f.read_text(encoding="utf-8")))
    for e in entries:
        (OUT / (e["id"].replace("/", "__") + ".json")).write_text(json.dumps(e, indent=2) + "\n", encoding="utf-8")
    print(f"{len(entries)} entries → {OUT}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: build_catalog.py MODEL_CONFIGS_DIR  (folders of config.json + SOURCE.txt)")
    main(sys.argv[1])
