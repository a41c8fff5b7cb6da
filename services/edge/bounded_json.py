"""JSON from clients, parsed with a nesting limit: REST bodies and WebSocket frames alike.

Python's `json` parser recurses once per `[` or `{`: a body of 30,000 `[` ends in RecursionError, which
is no ValueError, so it escaped every handler as a 500 (REST) or a dropped socket (WebSocket). The
depth is measured before parsing, in linear time, so nothing deep ever reaches the parser (nor
`json_format`, nor the enum normalizer, which recurse too). No request the API defines nests deeper
than a few levels; MAX_JSON_DEPTH leaves room for clients that wrap theirs.

Sizes are bounded where the bytes arrive (REST bodies by `app.MAX_BODY`, frames by
`CHAT_WS_MAX_FRAME_BYTES`), so the scan here never sees more than those.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_JSON_DEPTH = 32

# What changes the nesting: brackets outside strings. Escapes are one token, so `\"` never ends a
# string; every alternative has a fixed length, so the scan cannot backtrack.
_TOKENS = re.compile(r'\\.|["\[\]{}]', re.DOTALL)


class JsonTooDeep(ValueError):
    """The document nests arrays and objects deeper than MAX_JSON_DEPTH."""


def too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `text` opens more than `limit` arrays or objects at once (outside strings)."""
    if text.count("[") + text.count("{") <= limit:  # the common case, at C speed
        return False
    depth, in_string = 0, False
    for token in _TOKENS.finditer(text):
        char = token.group()
        if char == '"':
            in_string = not in_string
        elif in_string or len(char) == 2:
            continue
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def loads(raw: str | bytes) -> Any:
    """`json.loads` for untrusted input: ValueError (JsonTooDeep, or the parser's own) for anything
    but a JSON document in UTF-8 nested at most MAX_JSON_DEPTH deep."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw  # UnicodeDecodeError is a ValueError
    if too_deep(text):
        raise JsonTooDeep(f"JSON nests deeper than {MAX_JSON_DEPTH} levels")
    return json.loads(text)
