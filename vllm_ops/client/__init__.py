"""The bundled vLLM client: ``VLLMProvider`` (sync, async, streaming, structured outputs, LoRA,
beam search) and ``create_llm("vllm", model=...)``.

    from vllm_ops.client import VLLMProvider
    with VLLMProvider("http://localhost:8000/v1") as llm:
        print(llm.generate("Say hi", max_tokens=8).content)

Settings come from ``VLLM_BASE_URL`` / ``VLLM_API_KEY`` unless passed (:mod:`.settings`);
errors are :class:`VLLMError` subclasses (:mod:`.errors`).
"""
from vllm_ops.client._models import Choice, GenerateResponse, ModelInfo, StreamEvent, Tokenized, Usage
from vllm_ops.client._prometheus import Metrics, Sample, parse_prometheus
from vllm_ops.client._sse import SSEDataDecoder, SSEDecoder, SSEEvent
from vllm_ops.client.errors import (AuthenticationError, BadRequestError, ConnectTimeoutError,
                                    InvalidRequestError, NotFoundError, RateLimitError, ResponseError,
                                    ServerError, VLLMConnectionError, VLLMError, VLLMStatusError,
                                    VLLMTimeoutError)
from vllm_ops.client.provider import VLLMProvider, create_llm
from vllm_ops.client.settings import ClientSettings

__all__ = [
    "VLLMProvider", "create_llm", "ClientSettings",
    "GenerateResponse", "Choice", "Usage", "StreamEvent", "ModelInfo", "Tokenized", "Metrics", "Sample",
    "parse_prometheus", "SSEDecoder", "SSEDataDecoder", "SSEEvent",
    "VLLMError", "VLLMConnectionError", "ConnectTimeoutError", "VLLMTimeoutError", "VLLMStatusError",
    "BadRequestError", "AuthenticationError", "NotFoundError", "RateLimitError", "ServerError",
    "ResponseError", "InvalidRequestError",
]
