"""Server-sent events parsing (the subset the agent sends: ``event``, ``id``, ``data``)."""

from __future__ import annotations

import json
from typing import Dict, List, Optional

from ._models import Event


class SseParser:
    """Feeds lines, yields an :class:`Event` at each blank line."""

    def __init__(self) -> None:
        self._type = "message"
        self._id: Optional[str] = None
        self._data: List[str] = []

    def line(self, line: str) -> Optional[Event]:
        line = line.rstrip("\r\n")
        if not line:
            if not self._data:
                self._type = "message"
                return None
            text = "\n".join(self._data)
            try:
                data: Dict[str, object] = json.loads(text)
            except ValueError:
                data = {"text": text}
            ev = Event(self._type, self._id, data if isinstance(data, dict) else {"value": data})
            self._type, self._data = "message", []
            return ev
        if line.startswith(":"):
            return None  # keep-alive comment
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._type = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None
