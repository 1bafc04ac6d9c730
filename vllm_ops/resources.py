"""Where bundled data lives: templates/ and profiles/ (top of the repo, packaged into the wheel
as vllm_ops._templates / vllm_ops._profiles) and vllm_ops/data/."""
from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent
_REPO = _PKG.parent


def _first(*candidates: Path) -> Path:
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[0]


def templates_dir() -> Path:
    return _first(_PKG / "_templates", _REPO / "templates")


def profiles_dir() -> Path:
    return _first(_PKG / "_profiles", _REPO / "profiles")


def data_dir() -> Path:
    return _PKG / "data"
