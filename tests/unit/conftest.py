"""Fixtures shared by the unit tests."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    """benchmarks/perf_model_accuracy.py, imported as a module (the benchmark is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("perf_model_accuracy", ROOT / "benchmarks" / "perf_model_accuracy.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["perf_model_accuracy"] = mod
    spec.loader.exec_module(mod)
    return mod
