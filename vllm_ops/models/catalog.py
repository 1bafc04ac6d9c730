"""The bundled offline model catalog: ``vllm_ops/data/models/<org>__<name>.json``.

Each entry is a JSON object::

    {"id": "Qwen/Qwen2.5-7B-Instruct",
     "_source": {"status": "verbatim", "from": "...", "notes": "..."},
     "safetensors_total_size": 15231233024,          # or null: index metadata.total_size
     "config": { ... the model's real config.json ... }}

Only the files are read (json, no network): planning stays offline and fast.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from vllm_ops.errors import MalformedFile


def catalog_dir() -> Path:
    from vllm_ops.resources import data_dir

    return data_dir() / "models"


def _file_for(model_id: str) -> Path:
    return catalog_dir() / (model_id.replace("/", "__") + ".json")


@lru_cache(maxsize=1)
def _index() -> dict[str, str]:
    """lower-case id → file stem, from the file names (no file is parsed)."""
    d = catalog_dir()
    if not d.is_dir():
        return {}
    return {p.stem.replace("__", "/", 1).lower(): p.stem for p in d.glob("*.json")}


def list_models() -> list[str]:
    """Model ids in the catalog, sorted case-insensitively."""
    return sorted((stem.replace("__", "/", 1) for stem in _index().values()), key=str.lower)


def has_model(model_id: str) -> bool:
    return model_id.lower() in _index()


def get_entry(model_id: str) -> dict | None:
    """The catalog entry for ``model_id`` (case-insensitive), or None."""
    stem = _index().get(model_id.lower())
    if stem is None:
        return None
    path = catalog_dir() / f"{stem}.json"
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MalformedFile(f"catalog entry {path.name}: {exc}") from None
    if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        raise MalformedFile(f"catalog entry {path.name}: expected an object with a 'config' object")
    return entry


def source_line(entry: dict) -> str:
    src = entry.get("_source") or {}
    if isinstance(src, str):
        return src
    status = src.get("status", "")
    frm = src.get("from", "")
    return f"{status}: {frm}" if status else str(frm)
