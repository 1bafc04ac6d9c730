"""Response types, shared by the sync and async faces.

Plain ``__slots__`` classes over the decoded JSON: building one costs a few attribute stores;
choices and usage are only materialised when read (the hot path never constructs pydantic models).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["Usage", "Choice", "GenerateResponse", "ModelInfo", "Tokenized", "StreamEvent"]


class Usage(NamedTuple):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def _choice_text(c: dict, chat: bool) -> str:
    if chat:
        msg = c.get("message") or {}
        return msg.get("content") or ""
    return c.get("text") or ""


class Choice:
    """One choice (or beam) of a completion."""

    __slots__ = ("index", "text", "finish_reason", "raw", "parsed")

    def __init__(self, raw: dict, chat: bool, parsed: Any = None):
        self.raw = raw
        self.index: int = raw.get("index", 0)
        self.text: str = _choice_text(raw, chat)
        self.finish_reason: str | None = raw.get("finish_reason")
        self.parsed = parsed

    @property
    def content(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Choice(index={self.index}, text={self.text!r}, finish_reason={self.finish_reason!r})"


class GenerateResponse:
    """What :meth:`VLLMProvider.generate` returns.

    ``content`` (first choice's text), ``choices`` (every choice or beam), ``model`` (the name the
    server echoes: an adapter's name when routed to one), ``usage``, ``finish_reason``, ``raw``
    (the decoded JSON) and ``parsed`` (the ``response_model`` instance, else None).
    """

    __slots__ = ("raw", "endpoint", "parsed", "_parsed_all", "_choices")

    def __init__(self, raw: dict, endpoint: str = "chat", parsed: Any = None,
                 parsed_all: list | None = None):
        self.raw = raw
        self.endpoint = endpoint
        self.parsed = parsed
        self._parsed_all = parsed_all
        self._choices: list[Choice] | None = None

    @property
    def content(self) -> str:
        choices = self.raw.get("choices")
        return _choice_text(choices[0], self.endpoint == "chat") if choices else ""

    text = content

    @property
    def choices(self) -> list[Choice]:
        if self._choices is None:
            chat = self.endpoint == "chat"
            parsed = self._parsed_all or []
            self._choices = [Choice(c, chat, parsed[i] if i < len(parsed) else None)
                             for i, c in enumerate(self.raw.get("choices") or ())]
        return self._choices

    @property
    def model(self) -> str | None:
        return self.raw.get("model")

    @property
    def id(self) -> str | None:
        return self.raw.get("id")

    @property
    def finish_reason(self) -> str | None:
        choices = self.raw.get("choices")
        return choices[0].get("finish_reason") if choices else None

    @property
    def usage(self) -> Usage | None:
        u = self.raw.get("usage")
        if not u:
            return None
        return Usage(u.get("prompt_tokens") or 0, u.get("completion_tokens") or 0, u.get("total_tokens") or 0)

    def __str__(self) -> str:
        return self.content

    def __repr__(self) -> str:
        return (f"GenerateResponse(model={self.model!r}, content={self.content!r}, "
                f"choices={len(self.raw.get('choices') or ())}, finish_reason={self.finish_reason!r})")


@dataclass(frozen=True)
class ModelInfo:
    """One ``/v1/models`` entry: a base model (``parent`` None) or a LoRA adapter."""

    id: str
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None
    owned_by: str | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_adapter(self) -> bool:
        return self.parent is not None

    @classmethod
    def from_dict(cls, d: dict) -> "ModelInfo":
        return cls(id=d["id"], root=d.get("root"), parent=d.get("parent"),
                   max_model_len=d.get("max_model_len"), owned_by=d.get("owned_by"), raw=d)


@dataclass(frozen=True)
class Tokenized:
    """``POST /tokenize``'s answer."""

    tokens: list[int]
    count: int
    max_model_len: int | None = None
    token_strs: list[str] | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)


class StreamEvent:
    """One decoded event of a streamed completion (:meth:`VLLMProvider.astream_events`).

    ``data``: the chunk's decoded JSON (None on the final marker); ``time``: when its bytes
    arrived (``time.perf_counter()``, taken once per network read); ``text``: choice 0's text
    delta (None when the chunk has no choice 0, e.g. the usage chunk); ``usage``: a
    :class:`Usage` when the chunk carries one; ``done``: True only on the final marker, yielded
    once ``data: [DONE]`` arrived (a stream that ends without it yields no marker).
    """

    __slots__ = ("data", "time", "text", "usage", "done")

    def __init__(self, data: dict | None, time: float, text: str | None = None,
                 usage: Usage | None = None, done: bool = False):
        self.data = data
        self.time = time
        self.text = text
        self.usage = usage
        self.done = done

    @property
    def choices(self) -> list:
        """The chunk's ``choices`` list (empty for the usage chunk and the final marker)."""
        return (self.data or {}).get("choices") or []

    def __repr__(self) -> str:
        if self.done:
            return f"StreamEvent(done, time={self.time:.6f})"
        return f"StreamEvent(text={self.text!r}, usage={self.usage!r}, time={self.time:.6f})"
