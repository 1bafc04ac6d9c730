"""A pure, incremental Server-Sent-Events decoder (WHATWG rules), shared by sync and async streams.

Feed it text chunks in any split; it returns the complete events. Lines end in LF, CRLF or CR
(a CR at the end of one chunk and an LF at the start of the next are one line end); ``:`` lines
are comments; ``data:`` lines of one event are joined with LF; a space after the colon is dropped;
unknown fields are ignored; a blank line dispatches the event.
"""
from __future__ import annotations

from typing import NamedTuple

__all__ = ["SSEEvent", "SSEDecoder", "SSEDataDecoder"]


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


class SSEDataDecoder:
    """Incremental decoder of raw body bytes → the ``data`` payloads of complete events.

    The fast path works on bytes (LF line ends, the form vLLM sends): events split at
    ``b"\\n\\n"``, a one-line ``data:`` event costs one slice, and the payload stays ``bytes``
    (``json.loads`` takes bytes). Comments, other fields and multi-line data follow the WHATWG
    rules as :class:`SSEDecoder` does; the first CR seen (CRLF or CR line ends) hands the rest of
    the stream to :class:`SSEDecoder` (text). Payloads are ``bytes`` or ``str``.
    """

    __slots__ = ("_buf", "_slow", "_utf8", "_started")

    def __init__(self) -> None:
        self._buf = b""
        self._slow: SSEDecoder | None = None
        self._utf8 = None
        self._started = False

    def feed(self, chunk: bytes) -> list:
        if self._slow is not None:
            return [ev.data for ev in self._slow.feed(self._utf8.decode(chunk))]
        if not self._started:
            if not chunk:
                return []
            self._started = True
            if chunk[:3] == b"\xef\xbb\xbf":
                chunk = chunk[3:]
        if b"\r" in chunk:
            import codecs

            rest, self._buf = self._buf + chunk, b""
            self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
            self._slow = SSEDecoder()
            self._slow._started = True
            return [ev.data for ev in self._slow.feed(self._utf8.decode(rest))]
        buf = self._buf + chunk if self._buf else chunk
        if b"\n\n" not in buf:
            self._buf = buf
            return []
        blocks = buf.split(b"\n\n")
        self._buf = blocks.pop()
        out = []
        for block in blocks:
            if block[:6] == b"data: " and b"\n" not in block:
                out.append(block[6:])
            elif block:
                data = _block_data(block)
                if data is not None:
                    out.append(data)
        return out

    def flush(self) -> list:
        """End of stream: a last unterminated event is dispatched (lenient)."""
        if self._slow is not None:
            self._slow.feed(self._utf8.decode(b"", final=True))
            return [ev.data for ev in self._slow.flush()]
        buf, self._buf = self._buf, b""
        data = _block_data(buf) if buf.strip(b"\n") else None
        return [data] if data is not None else []


def _block_data(block: bytes) -> bytes | None:
    """The data of one event block (LF-separated lines, no blank line inside), or None."""
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line[:1] == b":":
            continue
        field, sep, value = line.partition(b":")
        if field == b"data":
            data.append(value[1:] if value[:1] == b" " else value)
    return b"\n".join(data) if data else None
