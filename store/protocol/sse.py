"""The event stream (Server-Sent Events): ``encode_event`` and ``encode_heartbeat`` for the
server (``server/events_stream.py``), the incremental ``EventStreamParser`` for the client
(``boxfs/remote.py``).

It carries head events (``models.Event``) and heartbeats, nothing else; what they mean and
how often they come is in ``docs/protocol.md``. No I/O: the caller sends and receives the
bytes. A parser is owned by one task at a time; the rest is pure.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Final

from pydantic import ValidationError

from store.errors import FormatError
from store.protocol.bounds import MAX_SSE_LINE_CHARS
from store.protocol.models import Event

# --- Server-Sent Events ------------------------------------------------------------------------
#
#   id: <namespace id hex>.<sequence>
#   event: head
#   data: {"namespace_id": "...", "head": "...", "sequence": 7}
#   <blank line>
#
# and, at least every HEARTBEAT_INTERVAL_S, a comment line ": heartbeat" and a blank line.
# Events of a type this build does not know are skipped (newer servers may add some).

EVENT_HEAD: Final = "head"
_LINE_END: Final = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A comment line on the event stream: the connection is alive."""


HEARTBEAT: Final = Heartbeat()


def encode_event(event: Event) -> bytes:
    return (
        f"id: {event.namespace_id.hex()}.{event.sequence}\n"
        f"event: {EVENT_HEAD}\n"
        f"data: {event.model_dump_json()}\n\n"
    ).encode()


def encode_heartbeat() -> bytes:
    return b": heartbeat\n\n"


class EventStreamParser:
    """Incremental SSE parser (the WHATWG rules: CR, LF or CRLF line ends, one optional
    space after the colon, multi-line data joined by LF). Feed it bytes as they arrive,
    split anywhere, even inside a UTF-8 character. Owned by one task."""

    def __init__(self, *, max_line_chars: int = MAX_SSE_LINE_CHARS) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._max_line_chars = max_line_chars
        self._pending = ""
        self._after_cr = False
        self._at_start = True
        self._event_type = ""
        self._data: list[str] = []
        self._data_chars = 0
        self.last_event_id = ""

    def feed(self, data: bytes) -> list[Event | Heartbeat]:
        try:
            text = self._decoder.decode(data)
        except UnicodeDecodeError as exc:
            raise FormatError(f"event stream is not UTF-8: {exc}") from exc
        if self._at_start and text:
            text = text.removeprefix("\ufeff")
            self._at_start = False
        if self._after_cr and text:
            text = text.removeprefix("\n")  # the LF of a CRLF split across pieces
            self._after_cr = False
        buffer = self._pending + text
        out: list[Event | Heartbeat] = []
        start = 0
        for match in _LINE_END.finditer(buffer):
            self._line(buffer[start : match.start()], out)
            start = match.end()
            if match.group() == "\r" and start == len(buffer):
                self._after_cr = True
        self._pending = buffer[start:]
        if len(self._pending) > self._max_line_chars:
            raise FormatError(f"event stream line over {self._max_line_chars} characters")
        return out

    def _line(self, line: str, out: list[Event | Heartbeat]) -> None:
        if not line:
            self._dispatch(out)
            return
        if line.startswith(":"):
            out.append(HEARTBEAT)
            return
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data_chars += len(value) + 1
            if self._data_chars > self._max_line_chars:
                raise FormatError(f"event data over {self._max_line_chars} characters")
            self._data.append(value)
        elif name == "event":
            self._event_type = value
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        # "retry" and unknown fields are ignored, as the standard says.

    def _dispatch(self, out: list[Event | Heartbeat]) -> None:
        event_type, data = self._event_type or "message", "\n".join(self._data)
        has_data = bool(self._data)
        self._event_type, self._data, self._data_chars = "", [], 0
        if not has_data or event_type != EVENT_HEAD:
            return
        try:
            out.append(Event.model_validate_json(data))
        except ValidationError as exc:
            raise FormatError(f"bad head event: {data[:200]!r}") from exc
