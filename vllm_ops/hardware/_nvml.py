"""The one choke point for NVML: every pynvml call of vllm-ops goes through :func:`nvml_query`.

Two failure classes (as nvitop does it):

* library / driver failures (nvidia-ml-py not installed, ``libnvidia-ml.so.1`` not found, driver
  not loaded, library/driver version mismatch) happen in the lazy, locked :func:`init` that runs
  *before* a query and raise :class:`vllm_ops.errors.NoGPU` with a hint: "no driver" is never
  read as "zero GPUs";
* a per-query failure (``NVML_ERROR_NOT_SUPPORTED``, ``NVML_ERROR_GPU_IS_LOST``, ...; but also
  non-NVML errors such as ``ctypes.ArgumentError`` from a broken binding) returns ``default``.
  ``NVML_ERROR_FUNCTION_NOT_FOUND`` (an older driver) is logged once per function.

The backend is the ``pynvml`` module; :func:`use_backend` swaps in a stand-in with the same
names (the recorder in :mod:`vllm_ops.hardware.record` and the replaying fake in tests).
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import threading
from typing import Any, Callable, Iterator

from vllm_ops.errors import NoGPU

logger = logging.getLogger("vllm_ops.hardware")

# NVML return codes (nvml.h); fixed by the C API, so they are spelled out here.
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18

_NO_DRIVER_HINT = ("install the NVIDIA driver, or plan for a box you don't have with a GPU spec "
                   "such as --gpus 4xL4")

_lock = threading.RLock()
_backend: Any = None          # the pynvml module, or a stand-in
_initialized = False
_atexit_registered = False
_missing_functions: set[str] = set()


def _import_pynvml() -> Any:
    try:
        import pynvml  # nvidia-ml-py
    except ImportError as exc:
        raise NoGPU("nvidia-ml-py (pynvml) is not installed, so GPUs cannot be read",
                    hint="pip install nvidia-ml-py") from exc
    except Exception as exc:  # a broken install fails at import
        raise NoGPU(f"nvidia-ml-py (pynvml) failed to import: {type(exc).__name__}: {exc}",
                    hint="pip install --force-reinstall nvidia-ml-py") from exc
    return pynvml


def backend() -> Any:
    """The module NVML calls go to (imports pynvml on first use)."""
    global _backend
    with _lock:
        if _backend is None:
            _backend = _import_pynvml()
        return _backend


def _init_error(exc: BaseException) -> NoGPU:
    code = getattr(exc, "value", None)
    if code == NVML_ERROR_LIBRARY_NOT_FOUND:
        return NoGPU("no NVIDIA driver: the NVML library (libnvidia-ml.so.1) was not found",
                     hint=_NO_DRIVER_HINT)
    if code == NVML_ERROR_DRIVER_NOT_LOADED:
        return NoGPU("the NVIDIA driver is not loaded (NVML: Driver Not Loaded)", hint=_NO_DRIVER_HINT)
    if code == NVML_ERROR_LIB_RM_VERSION_MISMATCH:
        return NoGPU("the NVIDIA driver and its NVML library differ in version",
                     hint="reboot, or reload the nvidia kernel modules, after a driver update")
    if code == NVML_ERROR_NO_PERMISSION:
        return NoGPU("no permission to open the NVIDIA devices (NVML: Insufficient Permissions)",
                     hint="check access to /dev/nvidia*")
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return NoGPU(f"NVML failed to initialise: {msg}", hint=_NO_DRIVER_HINT)


def init() -> Any:
    """Initialise NVML once (thread-safe); return the backend. Raises NoGPU on library/driver failure."""
    global _initialized, _atexit_registered
    lib = backend()
    if _initialized:
        return lib
    with _lock:
        if not _initialized:
            try:
                lib.nvmlInit()
            except Exception as exc:  # NVMLError or OSError from the loader: all fatal here
                raise _init_error(exc) from exc
            _initialized = True
            if not _atexit_registered:
                atexit.register(shutdown)
                _atexit_registered = True
    return lib


def shutdown() -> None:
    """Shut NVML down (registered with atexit after a successful init)."""
    global _initialized
    with _lock:
        if _initialized and _backend is not None:
            with contextlib.suppress(Exception):
                _backend.nvmlShutdown()
        _initialized = False


def _to_str(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def nvml_query(fn: str | Callable[..., Any], *args: Any, default: Any = None, **kwargs: Any) -> Any:
    """Call an NVML function by name (``"nvmlDeviceGetName"``) or as a callable.

    Init failures raise NoGPU (before the try); any failure of the call itself returns
    ``default``. bytes results are decoded to str.
    """
    lib = init()
    name = fn if isinstance(fn, str) else getattr(fn, "__name__", repr(fn))
    try:
        func = getattr(lib, fn) if isinstance(fn, str) else fn
        return _to_str(func(*args, **kwargs))
    except AttributeError:
        _note_missing(name, "not in this nvidia-ml-py")
        return default
    except Exception as exc:  # noqa: BLE001 — NVMLError and non-NVML errors (ctypes.ArgumentError) alike
        code = getattr(exc, "value", None)
        if code == NVML_ERROR_FUNCTION_NOT_FOUND:
            _note_missing(name, "not in this driver's NVML")
        else:
            logger.debug("NVML %s%r failed: %s: %s", name, args, type(exc).__name__, exc)
        return default


def _note_missing(name: str, why: str) -> None:
    with _lock:
        if name in _missing_functions:
            return
        _missing_functions.add(name)
    logger.info("NVML function %s is %s; reading it as unknown", name, why)


def missing_functions() -> frozenset[str]:
    """NVML functions found missing so far (each logged once)."""
    return frozenset(_missing_functions)


def device_count() -> int:
    """Number of GPUs NVML sees. Raises NoGPU when NVML is unusable; 0 when the count fails."""
    return int(nvml_query("nvmlDeviceGetCount", default=0) or 0)


def constant(name: str, default: Any = None) -> Any:
    """A pynvml constant (e.g. NVML_NVLINK_MAX_LINKS), or ``default`` if this version lacks it."""
    return getattr(backend(), name, default)


@contextlib.contextmanager
def use_backend(lib: Any) -> Iterator[Any]:
    """Route NVML calls to ``lib`` (a module-like stand-in) for the duration; resets init state."""
    global _backend, _initialized
    with _lock:
        saved = (_backend, _initialized, set(_missing_functions))
        _backend, _initialized = lib, False
        _missing_functions.clear()
    try:
        yield lib
    finally:
        with _lock:
            if _initialized and _backend is lib:
                with contextlib.suppress(Exception):
                    lib.nvmlShutdown()
            _backend, _initialized = saved[0], saved[1]
            _missing_functions.clear()
            _missing_functions.update(saved[2])
