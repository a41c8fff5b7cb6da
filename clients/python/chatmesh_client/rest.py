"""The edge's REST API over httpx: one method per endpoint the client uses, JSON in, JSON out."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from chatmesh_client.errors import ChatError, Unauthenticated


class Rest:
    def __init__(self, base_url: str, timeout: float = 10.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)
        self.token = ""

    async def close(self) -> None:
        await self._http.aclose()

    async def call(self, method: str, path: str, *, json: Any = None, params: Any = None) -> dict[str, Any]:
        try:
            reply = await self._http.request(
                method, path, json=json, params=params, headers={"Authorization": f"Bearer {self.token}"}
            )
        except httpx.TransportError as exc:  # refused, reset or timed out: retryable like a 503
            raise ChatError("UNAVAILABLE", f"the edge did not answer: {exc!r}", 503) from exc
        if reply.status_code >= 400:
            try:
                error = reply.json()["error"]
                code, message = str(error.get("code", "")), str(error.get("message", ""))
            except (ValueError, KeyError, TypeError):
                code, message = "HTTP_ERROR", reply.text[:200]
            if reply.status_code == 401:
                raise Unauthenticated(message)
            raise ChatError(code or "HTTP_ERROR", message, reply.status_code, _retry_after(reply))
        return dict(reply.json())

    async def transfer(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Attachment bytes to or from a link (relative: the edge; absolute: object storage). No bearer
        token goes with them: the link carries its own authority, and a store must never see the token."""
        try:
            reply = await self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise ChatError("UNAVAILABLE", f"the transfer did not complete: {exc!r}", 503) from exc
        if reply.status_code >= 400:
            try:
                error = reply.json()["error"]
                code, message = str(error.get("code", "")), str(error.get("message", ""))
            except (ValueError, KeyError, TypeError):
                code, message = "HTTP_ERROR", reply.text[:200]
            raise ChatError(code or "HTTP_ERROR", message, reply.status_code, _retry_after(reply))
        return reply

    # users and conversations

    async def upsert_me(self, display_name: str = "") -> dict[str, Any]:
        return await self.call("PUT", "/api/users/me", json={"display_name": display_name} if display_name else {})

    async def list_conversations(self, limit: int = 50, cursor: str = "") -> dict[str, Any]:
        return await self.call(
            "GET", "/api/conversations", params={"limit": limit} | ({"cursor": cursor} if cursor else {})
        )

    async def get_conversation(self, conversation_id: str) -> dict[str, Any]:
        return await self.call("GET", f"/api/conversations/{quote(conversation_id, safe='')}")

    async def create_direct(self, user_id: str) -> dict[str, Any]:
        return await self.call("POST", "/api/conversations/direct", json={"user_id": user_id})

    async def create_group(self, title: str, participant_ids: list[str]) -> dict[str, Any]:
        return await self.call(
            "POST", "/api/conversations/group", json={"title": title, "participant_ids": participant_ids}
        )

    async def answer_request(self, conversation_id: str, answer: str) -> dict[str, Any]:
        """`accept`, `decline` or `block` a direct conversation request."""
        return await self.call("POST", f"/api/conversations/{quote(conversation_id, safe='')}/{answer}", json={})

    async def change_conversation(
        self, method: str, conversation_id: str, suffix: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """A conversation setting: PATCH "" (title, description), POST /leave, /archive, /unarchive,
        PATCH /preferences (muted, pinned)."""
        return await self.call(method, f"/api/conversations/{quote(conversation_id, safe='')}{suffix}", json=body)

    async def settings(self) -> dict[str, Any]:
        return await self.call("GET", "/api/users/me/settings")

    async def update_settings(self, changes: dict[str, Any]) -> dict[str, Any]:
        return await self.call("PATCH", "/api/users/me/settings", json=changes)

    # messages

    async def send(
        self,
        conversation_id: str,
        content: str,
        client_message_id: str,
        reply_to_id: str = "",
        attachment_ids: list[str] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "conversation_id": conversation_id,
            "content": content,
            "client_message_id": client_message_id,
        }
        if reply_to_id:
            body["reply_to_id"] = reply_to_id
        if attachment_ids:
            body["attachment_ids"] = attachment_ids
        return await self.call("POST", "/api/messages", json=body)

    async def history(
        self, conversation_id: str, *, limit: int = 50, before_seq: int = 0, after_seq: int = 0
    ) -> dict[str, Any]:
        params = _page(limit, before_seq, after_seq)
        return await self.call("GET", f"/api/messages/{quote(conversation_id, safe='')}", params=params)

    async def thread(
        self, message_id: str, *, limit: int = 50, before_seq: int = 0, after_seq: int = 0
    ) -> dict[str, Any]:
        params = _page(limit, before_seq, after_seq)
        return await self.call("GET", f"/api/threads/{quote(message_id, safe='')}", params=params)

    async def edit(self, message_id: str, content: str) -> dict[str, Any]:
        return await self.call("PATCH", f"/api/messages/{quote(message_id, safe='')}", json={"content": content})

    async def delete(self, message_id: str) -> dict[str, Any]:
        return await self.call("DELETE", f"/api/messages/{quote(message_id, safe='')}")

    async def mark(self, message_id: str, status: str) -> dict[str, Any]:
        return await self.call(
            "POST",
            f"/api/messages/{quote(message_id, safe='')}/status",
            json={"status": f"MESSAGE_STATUS_{status.upper()}"},
        )

    async def react(self, message_id: str, emoji: str) -> dict[str, Any]:
        return await self.call("POST", f"/api/messages/{quote(message_id, safe='')}/reactions", json={"emoji": emoji})

    async def unreact(self, message_id: str, emoji: str) -> dict[str, Any]:
        return await self.call(
            "DELETE", f"/api/messages/{quote(message_id, safe='')}/reactions/{quote(emoji, safe='')}"
        )

    # presence

    async def presence(self, user_ids: list[str]) -> dict[str, Any]:
        return await self.call("GET", "/api/presence", params=[("user_ids", u) for u in user_ids])


def _retry_after(reply: httpx.Response) -> float:
    """`Retry-After` in seconds (the edge sends whole seconds; an HTTP date is not honoured: 0)."""
    try:
        return max(0.0, float(reply.headers.get("retry-after", "0")))
    except ValueError:
        return 0.0


def _page(limit: int, before_seq: int, after_seq: int) -> dict[str, Any]:
    """A seq page's query: history and threads page the same way (0 means not given)."""
    params: dict[str, Any] = {"limit": limit}
    if before_seq:
        params["before_seq"] = before_seq
    if after_seq:
        params["after_seq"] = after_seq
    return params
