"""Client settings: ``VLLM_BASE_URL`` and ``VLLM_API_KEY`` (no prefix), the rest ``VLLM_OPS_CLIENT_*``.

Precedence: constructor arguments > environment > defaults. Built once per client, never per
request.

=========================  ====================================  ===========================
field                      environment variable                  default
=========================  ====================================  ===========================
base_url                   ``VLLM_BASE_URL``                     ``http://localhost:8000/v1``
api_key                    ``VLLM_API_KEY``                      unset (no Authorization)
model                      ``VLLM_OPS_CLIENT_MODEL``             unset: the server's base model
timeout                    ``VLLM_OPS_CLIENT_TIMEOUT``           600 s (read/write/pool)
connect_timeout            ``VLLM_OPS_CLIENT_CONNECT_TIMEOUT``   5 s
max_retries                ``VLLM_OPS_CLIENT_MAX_RETRIES``       3
retry_backoff              ``VLLM_OPS_CLIENT_RETRY_BACKOFF``     0.5 s (doubles each retry)
retry_max_wait             ``VLLM_OPS_CLIENT_RETRY_MAX_WAIT``    8 s (caps a wait, Retry-After too)
retry_budget               ``VLLM_OPS_CLIENT_RETRY_BUDGET``      30 s (no retry starts after it)
max_tokens                 ``VLLM_OPS_CLIENT_MAX_TOKENS``        256 (generate's default)
max_connections            ``VLLM_OPS_CLIENT_MAX_CONNECTIONS``   100
=========================  ====================================  ===========================
"""
from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_BASE_URL = "http://localhost:8000/v1"


class ClientSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VLLM_OPS_CLIENT_", extra="ignore",
                                      populate_by_name=True, validate_default=True)

    base_url: str = Field(default=DEFAULT_BASE_URL,
                          validation_alias="VLLM_BASE_URL",
                          description="the server's /v1 URL (a root URL is accepted too)")
    api_key: SecretStr | None = Field(default=None,
                                      validation_alias="VLLM_API_KEY",
                                      description="sent as `Authorization: Bearer` when set")
    model: str | None = None
    timeout: float = Field(default=600.0, gt=0)
    connect_timeout: float = Field(default=5.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    retry_backoff: float = Field(default=0.5, ge=0)
    retry_max_wait: float = Field(default=8.0, ge=0)
    retry_budget: float = Field(default=30.0, ge=0)
    max_tokens: int | None = Field(default=256, ge=1)
    max_connections: int = Field(default=100, ge=1)


def load_client_settings(**overrides) -> ClientSettings:
    """Settings with the explicitly passed (not-None) values on top of the environment."""
    return ClientSettings(**{k: v for k, v in overrides.items() if v is not None})
