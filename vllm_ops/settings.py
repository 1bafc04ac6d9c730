"""The toolkit's own settings: one typed object, env prefix ``VLLM_OPS_``.

Imported lazily (pydantic-settings costs ~0.2 s to import; the plan path avoids it).
Precedence: explicit keyword arguments (CLI flags the user set) > environment > defaults.
The client's settings (``VLLM_BASE_URL``, ``VLLM_API_KEY``) are separate: :mod:`vllm_ops.client.settings`.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_state_dir() -> Path:
    return Path.home() / ".local" / "state" / "vllm-ops"


class OpsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VLLM_OPS_", env_nested_delimiter="__",
                                      extra="ignore", validate_default=True)

    state_dir: Path = Field(default_factory=_default_state_dir,
                            description="deployments' state, logs and calibration records")
    vllm: str | None = Field(default=None, description="a `vllm` executable or a Python that imports vllm")
    profiles_dir: Path | None = Field(default=None, description="user profiles overriding the bundled ones")
    vllm_version: str | None = Field(default=None, description="default --vllm-version")
    debug: bool = False


def load_settings(**overrides) -> OpsSettings:
    """Settings with the CLI's explicitly-set flags on top (``None`` values are ignored)."""
    return OpsSettings(**{k: v for k, v in overrides.items() if v is not None})
