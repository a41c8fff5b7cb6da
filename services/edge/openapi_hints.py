"""What /openapi.json says beyond the protos' types: each element's text from the proto comments, the
bounds requests must keep to, examples, and one name for path parameters that share a template.

- **Text.** `chatmesh/gen/chat/v1/comments.json` (written by scripts/generate_protos.py from protoc's
  source info) holds every leading comment by full name. An RPC's comment gives its operation's
  summary (its first sentence) and description (all of it); a message's or field's gives its schema's.
- **Bounds and formats** are what the services enforce, which a proto3 type cannot say (ids are
  canonical UUIDs, limits have ranges). They are declared on requests only (parameters and `_Input`
  schemas): a response shows what is stored, and an unset string there prints as "", which a format
  would call invalid. The ranges are the services' (services/conversation/paging.py,
  services/message/messages.py, search.py); tests/test_openapi.py holds a refused limit to its bound.
- **Examples** go on both sides.
- **Shared templates.** `GET /api/messages/{conversation_id}` (history) and `PATCH|DELETE
  /api/messages/{message_id}` are one template to OpenAPI, which allows a template once
  (`no-identical-paths`). The URLs stay as they are; the document names the parameter once, `{id}`
  (the names' common suffix), and each operation's parameter says which id it is.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any

UUID_EXAMPLE = "3f2b8c1e-5d4a-4e6f-9a7b-1c2d3e4f5a6b"
_UUID_FIELDS = frozenset({"conversation_id", "message_id", "attachment_id", "reply_to_id"})
_USER_ID = {"type": "string", "minLength": 1, "maxLength": 128}  # chatmesh.auth.user_id_problem

# Request bounds by (request message, field), as the services enforce them.
_REQUEST_BOUNDS: dict[tuple[str, str], dict[str, Any]] = {
    ("chat.v1.ListConversationsRequest", "limit"): {"minimum": 0, "maximum": 100, "default": 20},
    ("chat.v1.ListAuditEntriesRequest", "limit"): {"minimum": 0, "maximum": 100, "default": 20},
    ("chat.v1.SearchMessagesRequest", "limit"): {"minimum": 0, "maximum": 100, "default": 20},
    ("chat.v1.ListMessagesRequest", "limit"): {"minimum": 0, "maximum": 200, "default": 50},
    ("chat.v1.ListMessagesRequest", "before_seq"): {"pattern": "^[0-9]+$"},
    ("chat.v1.ListMessagesRequest", "after_seq"): {"pattern": "^[0-9]+$"},
    ("chat.v1.SearchMessagesRequest", "q"): {"minLength": 1, "maxLength": 256},
    ("chat.v1.SendMessageRequest", "client_message_id"): {"maxLength": 128},
    ("chat.v1.UpdateConversationRequest", "title"): {"minLength": 1, "maxLength": 200},  # conversation/validate.py
    ("chat.v1.UpdateConversationRequest", "description"): {"maxLength": 1000},
}
# Examples by field name, on requests and responses.
_EXAMPLES: dict[str, Any] = {
    "conversation_id": UUID_EXAMPLE,
    "message_id": "9d1e7a52-0b3c-4f8e-8a6d-5e4f3c2b1a09",
    "attachment_id": "c7a4e2f0-1b9d-4c3e-8f5a-6d2b0e9c8a71",
    "reply_to_id": "9d1e7a52-0b3c-4f8e-8a6d-5e4f3c2b1a09",
    "user_id": "bob",
    "sender_id": "alice",
    "created_by": "alice",
    "display_name": "Bob",
    "seq": "42",
    "unread_count": "3",
    "before_seq": "42",
    "after_seq": "40",
    "content": "hi",
    "client_message_id": "c-1f6e",
    "emoji": "👍",
    "title": "Weekend plans",
    "q": "dinner",
    "description": "Who brings what on Saturday",
    "limit": 50,
    "filename": "cat.png",
    "content_type": "image/png",
    "size_bytes": "48213",
}


@functools.cache
def comments() -> dict[str, str]:
    """Leading comments by full name (empty when the generated file is missing)."""
    try:
        text = (resources.files("chatmesh.gen.chat.v1") / "comments.json").read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError):
        return {}
    loaded: dict[str, str] = json.loads(text)
    return loaded


def prose(comment: str) -> str:
    """A comment as Markdown: a paragraph's lines joined, paragraphs kept apart."""
    return "\n\n".join(" ".join(p.split()) for p in re.split(r"\n\s*\n", comment) if p.strip())


def summary_and_description(comment: str, fallback: str) -> tuple[str, str]:
    """An RPC's summary (its comment's first sentence, without the full stop) and description (the
    rest, maybe empty). Without a comment, the summary is the RPC's name in words."""
    if not comment:
        return re.sub(r"(?<!^)(?=[A-Z])", " ", fallback).capitalize(), ""
    first, *rest = re.split(r"(?<=\.)\s", prose(comment), maxsplit=1)
    return first.removesuffix("."), "".join(rest).strip()


def request_bounds(message: str, field: str) -> dict[str, Any]:
    """What a request's field must keep to, beyond its type."""
    bounds = dict(_REQUEST_BOUNDS.get((message, field), {}))
    if field in _UUID_FIELDS:
        bounds["format"] = "uuid"
    elif field == "user_id" or field.endswith("_user_id"):
        bounds.update({k: v for k, v in _USER_ID.items() if k != "type"})
    return bounds


def example_of(field: str) -> Any:
    return _EXAMPLES.get(field)


def shared_names(templates: list[str]) -> dict[str, dict[str, str]]:
    """For each template, its parameters' names in the document (`{old: new}`, only those renamed).

    Templates that differ only in their parameters' names share names: at each place where they differ,
    the names' common `_`-separated suffix (`conversation_id`, `message_id` -> `id`), else the names
    joined with `_or_`."""
    groups: dict[str, list[str]] = {}
    for template in templates:
        groups.setdefault(re.sub(r"\{[^}]*\}", "{}", template), []).append(template)
    renames: dict[str, dict[str, str]] = {t: {} for t in templates}
    for members in groups.values():
        if len(set(members)) < 2:
            continue
        name_lists = [re.findall(r"\{([^}=]+)[^}]*\}", t) for t in members]
        for place, names in enumerate(zip(*name_lists, strict=True)):
            if len(set(names)) == 1:
                continue
            merged = _common_suffix(names) or "_or_".join(sorted(set(names)))
            for template, own in zip(members, name_lists, strict=True):
                renames[template][own[place]] = merged
    return renames


def _common_suffix(names: tuple[str, ...]) -> str:
    parts = [n.split("_") for n in names]
    suffix: list[str] = []
    while all(len(p) > len(suffix) for p in parts) and len({p[-1 - len(suffix)] for p in parts}) == 1:
        suffix.insert(0, parts[0][-1 - len(suffix)])
    return "_".join(suffix)
