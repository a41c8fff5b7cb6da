"""chatmesh's Python client: `Client(base_url)`, `await client.connect(token)`,
`await client.send(conversation_id, content)`, `async for event in client.events()`, `await client.close()`."""

from chatmesh_client.attachments import Attachment, Attachments
from chatmesh_client.client import Client, Page, PendingSend
from chatmesh_client.devices import Device, Devices
from chatmesh_client.errors import (
    RETRYABLE,
    ChatError,
    ConnectionLost,
    RequestTimeout,
    SendTimeout,
    Unauthenticated,
)
from chatmesh_client.models import (
                                    Conversation,
                                    ConversationEvent,
                                    Event,
                                    Message,
                                    MessageEvent,
                                    Participant,
                                    Presence,
                                    PresenceEvent,
                                    Preview,
                                    Reaction,
                                    ReactionEvent,
                                    ReceiptEvent,
                                    ResyncEvent,
                                    StateEvent,
                                    TypingEvent,
                                    UserSettings,
)
from chatmesh_client.store import Position, Store

__all__ = [
                                    "RETRYABLE",
                                    "Attachment",
                                    "Attachments",
                                    "ChatError",
                                    "Client",
                                    "ConnectionLost",
                                    "Conversation",
                                    "ConversationEvent",
                                    "Device",
                                    "Devices",
                                    "Event",
                                    "Message",
                                    "MessageEvent",
                                    "Page",
                                    "Participant",
                                    "PendingSend",
                                    "Position",
                                    "Presence",
                                    "PresenceEvent",
                                    "Preview",
                                    "Reaction",
                                    "ReactionEvent",
                                    "ReceiptEvent",
                                    "RequestTimeout",
                                    "ResyncEvent",
                                    "SendTimeout",
                                    "StateEvent",
                                    "Store",
                                    "TypingEvent",
                                    "Unauthenticated",
                                    "UserSettings",
]
