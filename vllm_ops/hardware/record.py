"""Record every raw NVML answer the probe uses, and replay such a record as a fake NVML.

Record on a machine with GPUs (one JSON document on stdout)::

    python3 -m vllm_ops.hardware.record > nvml-record.json

The recorder wraps the backend of the choke point (``_nvml.use_backend``), runs :func:`probe`
and stores each call under a key made of the function name and its arguments, GPU handles
written as ``gpu<index>``::

    {"format": "vllm-ops-nvml-record/1",
     "constants": {"NVML_NVLINK_MAX_LINKS": 36, ...},
     "calls": {"nvmlDeviceGetName(gpu0)": {"value": "NVIDIA H100 80GB HBM3"},
               "nvmlDeviceGetMemoryInfo(gpu0, version=33554472)": {"value": {"total": ..., ...}},
               "nvmlDeviceGetNvLinkState(gpu0, 20)": {"error": 2, "text": "Invalid Argument"},
               "nvmlDeviceGetP2PStatus(gpu0, gpu1, (0,))": {"exception": "ArgumentError", ...}}}

:class:`ReplayNvml` reads that format back and answers the same calls (tests use it with
``_nvml.use_backend``); ``fail=`` injects NVML error codes per function.
"""
from __future__ import annotations

import ctypes
import json
import sys
from types import SimpleNamespace
from typing import Any, Callable

from vllm_ops.errors import NoGPU
from vllm_ops.hardware import _nvml
from vllm_ops.hardware._probe import probe

FORMAT = "vllm-ops-nvml-record/1"


# ---------------------------------------------------------------- keys and values

def call_key(name: str, args: tuple, kwargs: dict, token_of: Callable[[Any], str | None]) -> str:
    def one(a: Any) -> str:
        tok = token_of(a)
        return tok if tok is not None else repr(a)

    parts = [one(a) for a in args] + [f"{k}={one(v)}" for k, v in sorted(kwargs.items())]
    return f"{name}({', '.join(parts)})"


def encode(v: Any) -> Any:
    """A pynvml answer (ctypes struct, friendly object, list, bytes) as plain JSON."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [encode(x) for x in v]
    if isinstance(v, ctypes.Structure):
        return {f[0]: encode(getattr(v, f[0])) for f in v._fields_}
    if isinstance(v, ctypes.Array):
        return [encode(x) for x in v]
    if isinstance(v, ctypes._SimpleCData):
        return encode(v.value)
    if hasattr(v, "__dict__"):
        return {k: encode(x) for k, x in vars(v).items() if not k.startswith("_")}
    return repr(v)


def decode(v: Any) -> Any:
    if isinstance(v, dict):
        return SimpleNamespace(**{k: decode(x) for k, x in v.items()})
    if isinstance(v, list):
        return [decode(x) for x in v]
    return v


def _error_class() -> type:
    try:
        import pynvml

        return pynvml.NVMLError
    except Exception:  # pragma: no cover — nvidia-ml-py is a dependency
        class NVMLError(Exception):
            def __init__(self, value: int):
                super().__init__(f"NVML error {value}")
                self.value = value

        return NVMLError


# ---------------------------------------------------------------- recorder

class RecordingNvml:
    """Passes every call to the real pynvml and records its answer (or error) under its key."""

    def __init__(self, lib: Any):
        self._lib = lib
        self.calls: dict[str, dict] = {}
        self.constants: dict[str, Any] = {}
        self._tokens: dict[int, str] = {}
        self._keep: list[Any] = []

    def _token_of(self, a: Any) -> str | None:
        ptr = _pointer(a)
        return self._tokens.get(ptr) if ptr is not None else None

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._lib, name)
        if not name.startswith("nvml") or not callable(attr):
            if name.startswith(("NVML_", "nvml")):
                self.constants[name] = encode(attr)
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            key = call_key(name, args, kwargs, self._token_of)
            try:
                result = attr(*args, **kwargs)
            except Exception as exc:
                self.calls[key] = encode_error(exc)
                raise
            if name.startswith("nvmlDeviceGetHandleBy"):
                token = f"gpu{args[0]}" if name == "nvmlDeviceGetHandleByIndex" else f"gpu-{args[0]}"
                ptr = _pointer(result)
                if ptr is not None:
                    self._tokens[ptr] = token
                self._keep.append(result)
                self.calls[key] = {"handle": token}
            else:
                self.calls[key] = {"value": encode(result)}
            return result

        return call

    def document(self, **meta: Any) -> dict:
        return {"format": FORMAT, "meta": meta, "constants": self.constants, "calls": self.calls}


def _pointer(a: Any) -> int | None:
    if isinstance(a, (int, float, str, bytes, tuple, list, dict, type(None))):
        return None
    try:
        return ctypes.cast(a, ctypes.c_void_p).value
    except Exception:  # noqa: BLE001
        return None


def encode_error(exc: BaseException) -> dict:
    code = getattr(exc, "value", None)
    if isinstance(code, int):
        try:
            text = str(exc)
        except Exception:  # noqa: BLE001
            text = ""
        return {"error": code, "text": text}
    return {"exception": type(exc).__name__, "message": " ".join(str(exc).split())}


# ---------------------------------------------------------------- replay

class FakeHandle:
    __slots__ = ("token",)

    def __init__(self, token: str):
        self.token = token

    def __repr__(self) -> str:
        return f"FakeHandle({self.token})"


class ReplayNvml:
    """A pynvml stand-in answering from a record. Unrecorded calls raise NOT_SUPPORTED and are
    listed in ``misses``; ``fail={"nvmlDeviceGetName": 15}`` makes every call of that function
    raise NVMLError(15) (``"nvmlInit"`` too)."""

    def __init__(self, record: dict, *, fail: dict[str, int | BaseException] | None = None,
                 constants: dict[str, Any] | None = None):
        if record.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document")
        self._calls: dict[str, dict] = dict(record.get("calls", {}))
        self._constants: dict[str, Any] = dict(record.get("constants", {}))
        self._constants.update(constants or {})
        self._fail = dict(fail or {})
        self.NVMLError = _error_class()
        self.misses: list[str] = []
        self.log: list[str] = []

    @staticmethod
    def _token_of(a: Any) -> str | None:
        return a.token if isinstance(a, FakeHandle) else None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._constants:
            value = self._constants[name]
            return tuple(value) if isinstance(value, list) else value
        if not name.startswith("nvml"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self._answer(name, args, kwargs)

    def _answer(self, name: str, args: tuple, kwargs: dict) -> Any:
        key = call_key(name, args, kwargs, self._token_of)
        self.log.append(key)
        if name in self._fail:
            err = self._fail[name]
            raise self.NVMLError(err) if isinstance(err, int) else err
        if name in ("nvmlInit", "nvmlShutdown") and key not in self._calls:
            return None
        rec = self._calls.get(key)
        if rec is None:
            self.misses.append(key)
            raise self.NVMLError(3)  # NVML_ERROR_NOT_SUPPORTED
        if "handle" in rec:
            return FakeHandle(rec["handle"])
        if "error" in rec:
            raise self.NVMLError(rec["error"])
        if "exception" in rec:
            if rec["exception"] == "ArgumentError":
                raise ctypes.ArgumentError(rec.get("message", ""))
            raise RuntimeError(f"{rec['exception']}: {rec.get('message', '')}")
        return decode(rec.get("value"))


def load_record(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------- main

def record() -> dict:
    """Run the probe against the real pynvml, recording every answer; returns the document."""
    import platform

    lib = _nvml.backend()
    rec = RecordingNvml(lib)
    error = None
    with _nvml.use_backend(rec):
        try:
            inv = probe()
        except NoGPU as exc:
            inv, error = None, exc.one_line()
        if inv is not None and inv.gpu_count >= 2:
            # the raw, unguarded P2P READ index: a tuple in some nvidia-ml-py (records what it does)
            h0 = _nvml.nvml_query("nvmlDeviceGetHandleByIndex", 0)
            h1 = _nvml.nvml_query("nvmlDeviceGetHandleByIndex", 1)
            _nvml.nvml_query("nvmlDeviceGetP2PStatus", h0, h1, getattr(lib, "NVML_P2P_CAPS_INDEX_READ", None))
    try:
        from importlib.metadata import version

        binding = version("nvidia-ml-py")
    except Exception:  # noqa: BLE001
        binding = None
    return rec.document(nvidia_ml_py=binding, python=platform.python_version(), error=error)


def main(argv: list[str] | None = None) -> int:
    try:
        doc = record()
    except Exception as exc:  # noqa: BLE001 — still one JSON document
        doc = {"format": FORMAT, "meta": {"error": f"{type(exc).__name__}: {exc}"}, "constants": {}, "calls": {}}
    sys.stdout.write(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return 0 if not doc["meta"].get("error") else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
