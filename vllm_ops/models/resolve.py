"""Find a model's config.json (and model.safetensors.index.json) and build its ModelSpec.

Resolution order for ``load_model_spec(name_or_path)``:

1. an existing local directory (or a path to a config.json) → source ``"dir"``;
   a name that looks like a path (``/``, ``./``, ``../``, ``~``) but does not exist is an error;
2. the Hugging Face cache → ``"hf-cache"``: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
   ``~/.cache/huggingface/hub``; ``models--ORG--NAME/refs/main`` names the snapshot, else the
   newest snapshot that has a config.json;
3. the bundled offline catalog → ``"catalog"`` (keeps planning offline and fast);
4. the Hub over httpx → ``"hub"``: ``$HF_ENDPOINT`` (default https://huggingface.co)
   ``/{repo}/resolve/main/config.json`` and ``model.safetensors.index.json`` only (never weights),
   ``HF_TOKEN`` sent as a Bearer token, short timeouts. Skipped when offline
   (``offline=True`` or ``HF_HUB_OFFLINE=1``).

``prefer_hub=True`` (or ``VLLM_OPS_PREFER_HUB=1``; the CLI's ``--online``) asks the Hub before the
catalog (after the local dir and cache), so a newer upstream config wins; if the Hub fails then,
the catalog still answers.

Unknown names raise ``UnknownModel`` with close matches (difflib) from the catalog and cache.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from vllm_ops.errors import BadInput, MalformedFile, RuntimeFailure, UnknownModel
from vllm_ops.models.config import spec_from_config
from vllm_ops.models.spec import ModelSpec

_MAX_CONFIG_BYTES = 16 << 20
_MAX_INDEX_BYTES = 64 << 20
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_TRUE = ("1", "true", "yes", "on")


class HubError(BadInput):
    """The Hub answered but refused (401/403) or had nothing (404)."""


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


# -- reading files ------------------------------------------------------------------------
def parse_json_text(text: str | bytes, where: str) -> object:
    try:
        return json.loads(text)
    except UnicodeDecodeError:
        raise MalformedFile(f"{where}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise MalformedFile(f"{where}: invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:
        raise MalformedFile(f"{where}: invalid JSON ({type(exc).__name__})") from None


def read_json_file(path: Path, limit: int = _MAX_CONFIG_BYTES) -> object:
    try:
        size = path.stat().st_size
        if size > limit:
            raise MalformedFile(f"{path}: {size} bytes is too large for a JSON config (limit {limit})")
        data = path.read_bytes()
    except OSError as exc:
        raise MalformedFile(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_json_text(data, str(path))


def total_size_from_index(index: object, where: str) -> int | None:
    if not isinstance(index, dict):
        raise MalformedFile(f"{where}: expected a JSON object")
    meta = index.get("metadata")
    if not isinstance(meta, dict) or meta.get("total_size") is None:
        return None
    ts = meta["total_size"]
    if isinstance(ts, float) and ts.is_integer():
        ts = int(ts)
    if isinstance(ts, bool) or not isinstance(ts, int) or ts <= 0 or ts > 1 << 50:
        raise MalformedFile(f"{where}: metadata.total_size must be a positive integer")
    return ts


def spec_from_dir(directory: Path, *, model_id: str | None = None, source: str = "dir") -> ModelSpec:
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise MalformedFile(f"{directory}: no config.json in this directory")
    config = read_json_file(cfg_path)
    if not isinstance(config, dict):
        raise MalformedFile(f"{cfg_path}: expected a JSON object, got {type(config).__name__}")
    idx_path = directory / "model.safetensors.index.json"
    total = None
    if idx_path.is_file():
        total = total_size_from_index(read_json_file(idx_path, _MAX_INDEX_BYTES), str(idx_path))
    elif (directory / "model.safetensors").is_file() and source == "dir":
        total = None  # single-file checkpoint: header parsing is out of scope, computed is used
    hqc_path = directory / "hf_quant_config.json"          # NVIDIA ModelOpt checkpoints (models/quant.py)
    hqc = read_json_file(hqc_path) if hqc_path.is_file() else None
    mid = model_id or str(directory)
    try:
        return spec_from_config(config, model_id=mid, source=source, index_total_size=total,
                                config_path=str(cfg_path), local_dir=str(directory),
                                hf_quant_config=hqc if isinstance(hqc, dict) else None)
    except MalformedFile as exc:
        msg = str(exc).replace(f"config.json of {mid}", str(cfg_path))
        raise MalformedFile(msg, hint=exc.hint) from None


# -- the HF cache -------------------------------------------------------------------------
def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def find_in_hf_cache(repo_id: str) -> Path | None:
    """The snapshot directory holding ``repo_id``'s config.json in the HF cache, or None."""
    if not _REPO_RE.match(repo_id):
        return None
    root = hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    if not _is_dir(root):
        # the cache folder keeps the repo's case; match case-insensitively
        parent = hf_cache_dir()
        want = root.name.lower()
        try:
            root = next((p for p in parent.iterdir() if p.name.lower() == want), None)
        except OSError:
            return None
        if root is None:
            return None
    snaps = root / "snapshots"
    ref = root / "refs" / "main"
    if ref.is_file():
        try:
            rev = ref.read_text(encoding="utf-8").strip()
        except OSError:
            rev = ""
        if rev and "/" not in rev and rev not in (".", ".."):
            cand = snaps / rev
            if (cand / "config.json").is_file():
                return cand
    try:
        cands = [p for p in snaps.iterdir() if (p / "config.json").is_file()]
    except OSError:
        return None
    if not cands:
        return None
    return max(cands, key=lambda p: (p / "config.json").stat().st_mtime)


def cached_repo_ids() -> list[str]:
    try:
        return [p.name[len("models--"):].replace("--", "/", 1)
                for p in hf_cache_dir().iterdir() if p.name.startswith("models--")]
    except OSError:
        return []


# -- the Hub ------------------------------------------------------------------------------
def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _hub_token() -> str | None:
    for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        v = os.environ.get(k, "").strip()
        if v:
            return v
    return None


def fetch_from_hub(repo_id: str, *, timeout: float = 10.0, revision: str = "main") -> tuple[dict, int | None]:
    """GET config.json (and the safetensors index when present) from the Hub.

    Returns (config, index_total_size). Raises HubError (401/403/404), MalformedFile, or
    RuntimeFailure (unreachable). The token is never part of any message.
    """
    import httpx  # only here: keeps the plan path light

    if not _REPO_RE.match(repo_id):
        raise UnknownModel(f"'{repo_id}' is not a Hugging Face repo id (ORG/NAME)")
    base = hub_endpoint()
    headers = {"User-Agent": "vllm-ops"}
    token = _hub_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    to = httpx.Timeout(timeout, connect=min(timeout, 5.0))

    def _get(client, fname: str, limit: int):
        url = f"{base}/{repo_id}/resolve/{revision}/{fname}"
        try:
            with client.stream("GET", url) as resp:
                if resp.status_code != 200:
                    return resp.status_code, None
                chunks, size = [], 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise MalformedFile(f"{repo_id} {fname} on the Hub is larger than {limit} bytes")
                    chunks.append(chunk)
                return 200, b"".join(chunks)
        except httpx.TimeoutException:
            raise RuntimeFailure(f"the Hub ({base}) timed out fetching {repo_id}/{fname}",
                                 hint="set HF_HUB_OFFLINE=1 to use the offline catalog") from None
        except httpx.HTTPError as exc:
            raise RuntimeFailure(f"cannot reach the Hub ({base}) for {repo_id}: {type(exc).__name__}",
                                 hint="set HF_HUB_OFFLINE=1 to use the offline catalog") from None

    with httpx.Client(headers=headers, timeout=to, follow_redirects=True) as client:
        status, body = _get(client, "config.json", _MAX_CONFIG_BYTES)
        if status in (401, 403):
            why = "the token was refused" if token else "no HF_TOKEN is set"
            raise HubError(f"the Hub refused {repo_id} (HTTP {status}): gated or private repo and {why}",
                           hint="accept the model's license on huggingface.co and set HF_TOKEN")
        if status == 404:
            raise _unknown(repo_id, f" (HTTP 404 from the Hub at {base}: no such repo or no config.json)")
        if status != 200:
            raise RuntimeFailure(f"the Hub answered HTTP {status} for {repo_id}/config.json")
        config = parse_json_text(body, f"{repo_id} config.json from the Hub")
        if not isinstance(config, dict):
            raise MalformedFile(f"{repo_id} config.json from the Hub: expected a JSON object")
        total = None
        status, body = _get(client, "model.safetensors.index.json", _MAX_INDEX_BYTES)
        if status == 200:
            total = total_size_from_index(
                parse_json_text(body, f"{repo_id} model.safetensors.index.json from the Hub"),
                f"{repo_id} model.safetensors.index.json from the Hub")
    return config, total


# -- the one entry point ------------------------------------------------------------------
def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name in (".", "..") or os.sep + os.sep in name


def _from_catalog(name: str) -> ModelSpec | None:
    from vllm_ops.models import catalog

    entry = catalog.get_entry(name)
    if entry is None:
        return None
    total = entry.get("safetensors_total_size")
    hqc = entry.get("hf_quant_config")
    return spec_from_config(entry["config"], model_id=entry.get("id") or name, source="catalog",
                            index_total_size=total, catalog_source=catalog.source_line(entry),
                            hf_quant_config=hqc if isinstance(hqc, dict) else None)


def _unknown(name: str, extra: str = "") -> UnknownModel:
    import difflib

    from vllm_ops.models import catalog

    known = catalog.list_models() + cached_repo_ids()
    lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(lower), n=3, cutoff=0.5)
    if not close:  # also try the bare model name (no org)
        tail = name.split("/")[-1].lower()
        tails = {k.split("/")[-1]: k for k in lower}
        close = [tails[t] for t in difflib.get_close_matches(tail, list(tails), n=3, cutoff=0.6)]
    msg = f"unknown model '{name}'{extra}"
    if close:
        msg += "; did you mean: " + ", ".join(lower[c] for c in close) + "?"
    return UnknownModel(msg, hint="see 'vllm-ops models list', or pass a local model directory")


def _is_dir(p: Path) -> bool:
    """``p.is_dir()``, but a name the OS cannot even look up (ENAMETOOLONG, a NUL byte, ELOOP,
    EACCES on a parent) is "not a path" rather than an OSError/ValueError: the name is then tried
    as a catalog/Hub id and ends as UnknownModel (exit 2)."""
    try:
        return p.is_dir()
    except (OSError, ValueError):
        return False


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except (OSError, ValueError):
        return False


def load_model_spec(name_or_path: str, *, offline: bool | None = None,
                    prefer_hub: bool | None = None) -> ModelSpec:
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise BadInput("no model given")
    name = name_or_path.strip()
    p = Path(name).expanduser()
    if _is_dir(p):
        return spec_from_dir(p.resolve())
    if p.name.endswith(".json") and _is_file(p):
        config = read_json_file(p)
        if not isinstance(config, dict):
            raise MalformedFile(f"{p}: expected a JSON object, got {type(config).__name__}")
        try:
            return spec_from_config(config, model_id=str(p), source="dir", config_path=str(p),
                                    local_dir=str(p.parent))
        except MalformedFile as exc:
            raise MalformedFile(str(exc).replace(f"config.json of {p}", str(p))) from None
    if _looks_like_path(name):
        raise UnknownModel(f"no such model directory: {name}")

    if offline is None:
        offline = _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")
    if prefer_hub is None:
        prefer_hub = _env_true("VLLM_OPS_PREFER_HUB")

    snap = find_in_hf_cache(name)
    if snap is not None:
        return spec_from_dir(snap, model_id=name, source="hf-cache")

    hub_error: Exception | None = None
    if prefer_hub and not offline and _REPO_RE.match(name):
        try:
            config, total = fetch_from_hub(name)
            return spec_from_config(config, model_id=name, source="hub", index_total_size=total)
        except (HubError, UnknownModel, RuntimeFailure) as exc:
            hub_error = exc
    spec = _from_catalog(name)
    if spec is not None:
        return spec
    if hub_error is not None:
        raise hub_error
    if offline:
        raise _unknown(name, " (offline: not in a local dir, the HF cache or the catalog)")
    if not _REPO_RE.match(name):
        raise _unknown(name)
    config, total = fetch_from_hub(name)
    return spec_from_config(config, model_id=name, source="hub", index_total_size=total)
