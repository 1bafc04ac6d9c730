"""A pure, incremental Server-Sent-Events decoder (WHATWG rules), shared by sync and async streams.

Feed it text chunks in any split; it returns the complete events. Lines end in LF, CRLF or CR
(a CR at the end of one chunk and an LF at the start of the next are one line end); ``:`` lines
are comments; ``data:`` lines of one event are joined with LF; a space after the colon is dropped;
unknown fields are ignored; a blank line dispatches the event.
"""
from __future__ import annotations

from typing import NamedTuple

__all__ = ["SSEEvent", "SSEDecoder"]


class SSEEvent(NamedTuple):
    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    __slots__ = ("_buf", "_data", "_event", "_id", "_retry", "_cr", "_started")

    def __init__(self) -> None:
        self._buf = ""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None
        self._cr = False  # the last chunk ended in CR: a leading LF of the next one is its pair
        self._started = False

    def feed(self, chunk: str) -> list[SSEEvent]:
        if not self._started and chunk:
            self._started = True
            if chunk[0] == "\ufeff":
                chunk = chunk[1:]
        if self._cr:
            self._cr = False
            if chunk[:1] == "\n":
                chunk = chunk[1:]
        buf = self._buf + chunk
        events: list[SSEEvent] = []
        if "\r" not in buf:  # the common case: LF only
            lines = buf.split("\n")
            self._buf = lines.pop()
            for line in lines:
                ev = self._line(line)
                if ev is not None:
                    events.append(ev)
            return events
        start, n = 0, len(buf)
        while start < n:
            i_lf = buf.find("\n", start)
            i_cr = buf.find("\r", start)
            if i_lf < 0 and i_cr < 0:
                break
            if i_cr < 0 or 0 <= i_lf < i_cr:
                end, nxt = i_lf, i_lf + 1
            else:
                end = i_cr
                if i_cr + 1 < n:
                    nxt = i_cr + 2 if buf[i_cr + 1] == "\n" else i_cr + 1
                else:
                    nxt = i_cr + 1
                    self._cr = True
            ev = self._line(buf[start:end])
            if ev is not None:
                events.append(ev)
            start = nxt
        self._buf = buf[start:]
        return events

    def flush(self) -> list[SSEEvent]:
        """End of stream: a last unterminated line and event are dispatched (lenient)."""
        events: list[SSEEvent] = []
        if self._buf:
            ev = self._line(self._buf)
            self._buf = ""
            if ev is not None:
                events.append(ev)
        ev = self._line("")
        if ev is not None:
            events.append(ev)
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            ev = SSEEvent("\n".join(self._data), self._event or "message", self._id, self._retry)
            self._data = []
            self._event = ""
            return ev
        if line[0] == ":":
            return None
        field, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._id = value
        elif field == "retry":
            if value.isdigit():
                self._retry = int(value)
        return None
