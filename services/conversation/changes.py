"""What writes that change who may do what in a conversation share: publishing the new membership
version, and the refusal a block causes."""

from __future__ import annotations

import logging

from chatmesh import errors
from chatmesh.membership import MembershipVersions
from chatmesh.resilience import SampledLog
from services.conversation.store import ConversationView

log = logging.getLogger(__name__)
_publish_log = SampledLog(log)


async def published(versions: MembershipVersions | None, view: ConversationView) -> ConversationView:
    """Publish a committed change's membership version, so every cache drops the old membership
    before the change returns. If Redis is away, the caches cannot read it either and ask this
    service instead; so a failure here is logged, not returned."""
    if versions is not None:
        try:
            await versions.publish(view.row.conversation_id, view.row.membership_version)
        except Exception as exc:  # noqa: BLE001 - the change is committed; see the docstring
            _publish_log.warning(
                "membership-version", "membership version of %s not published: %r", view.row.conversation_id, exc
            )
    return view


def blocked() -> errors.ChatError:
    """The same answer whoever blocked whom: a block is not a secret the other side can avoid learning."""
    return errors.forbidden("BLOCKED", "a block between you and this user allows no new conversation or message")
