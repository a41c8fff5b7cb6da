"""The conversation service's gRPC face: translate, authorize, call, translate back."""

from __future__ import annotations

from chatmesh import errors
from chatmesh.gen.chat.v1 import conversation_pb2 as pb
from chatmesh.gen.chat.v1 import conversation_pb2_grpc
from chatmesh.grpc_server import Context, current_identity, require_service
from chatmesh.roles import Role
from services.conversation import convert, validate
from services.conversation.audit import AuditTrail
from services.conversation.conversations import Conversations
from services.conversation.direct_requests import DirectRequests
from services.conversation.participants import Participants
from services.conversation.privacy import Privacy
from services.conversation.settings import ConversationSettings
from services.conversation.states import RequestState


class ConversationServicer(conversation_pb2_grpc.ConversationServiceServicer):
    def __init__(
        self,
        conversations: Conversations,
        participants: Participants,
        audit: AuditTrail,
        requests: DirectRequests,
        privacy: Privacy,
        settings: ConversationSettings,
    ) -> None:
        self._conversations = conversations
        self._participants = participants
        self._audit = audit
        self._requests = requests
        self._privacy = privacy
        self._settings = settings

    async def UpsertUser(self, request: pb.UpsertUserRequest, context: Context) -> pb.UpsertUserResponse:
        """Users record themselves; only services may name another user (and must name one)."""
        me = current_identity()
        if request.user_id and request.user_id != me.user_id:
            require_service()
        elif me.is_service:
            raise errors.invalid("INVALID_USER_ID", "service callers name the user_id to record")
        user = await self._conversations.upsert_user(
            request.user_id or me.user_id, request.display_name or me.display_name
        )
        return pb.UpsertUserResponse(user=convert.user(user))

    async def GetUser(self, request: pb.GetUserRequest, context: Context) -> pb.GetUserResponse:
        current_identity()
        return pb.GetUserResponse(user=convert.user(await self._conversations.get_user(request.user_id)))

    async def CreateDirectConversation(
        self, request: pb.CreateDirectConversationRequest, context: Context
    ) -> pb.CreateDirectConversationResponse:
        view, created = await self._conversations.create_direct(current_identity().user_id, request.user_id)
        return pb.CreateDirectConversationResponse(conversation=convert.conversation(view), created=created)

    async def CreateGroupConversation(
        self, request: pb.CreateGroupConversationRequest, context: Context
    ) -> pb.CreateGroupConversationResponse:
        view = await self._conversations.create_group(
            current_identity().user_id, request.title, list(request.participant_ids)
        )
        return pb.CreateGroupConversationResponse(conversation=convert.conversation(view))

    async def ListConversations(
        self, request: pb.ListConversationsRequest, context: Context
    ) -> pb.ListConversationsResponse:
        views, next_cursor = await self._conversations.list_for(
            current_identity().user_id, request.limit, request.cursor
        )
        return pb.ListConversationsResponse(
            conversations=[convert.conversation(v) for v in views], next_cursor=next_cursor
        )

    async def GetConversation(self, request: pb.GetConversationRequest, context: Context) -> pb.GetConversationResponse:
        view = await self._conversations.get_for(current_identity().user_id, request.conversation_id)
        return pb.GetConversationResponse(conversation=convert.conversation(view))

    async def AddParticipant(self, request: pb.AddParticipantRequest, context: Context) -> pb.AddParticipantResponse:
        view = await self._participants.add(
            current_identity().user_id,
            request.conversation_id,
            request.user_id,
            validate.role(request.role, default=Role.MEMBER),
        )
        return pb.AddParticipantResponse(conversation=convert.conversation(view))

    async def RemoveParticipant(
        self, request: pb.RemoveParticipantRequest, context: Context
    ) -> pb.RemoveParticipantResponse:
        view = await self._participants.remove(current_identity().user_id, request.conversation_id, request.user_id)
        return pb.RemoveParticipantResponse(conversation=convert.conversation(view))

    async def ChangeParticipantRole(
        self, request: pb.ChangeParticipantRoleRequest, context: Context
    ) -> pb.ChangeParticipantRoleResponse:
        view = await self._participants.change_role(
            current_identity().user_id, request.conversation_id, request.user_id, validate.role(request.role)
        )
        return pb.ChangeParticipantRoleResponse(conversation=convert.conversation(view))

    async def ListAuditEntries(
        self, request: pb.ListAuditEntriesRequest, context: Context
    ) -> pb.ListAuditEntriesResponse:
        entries, next_cursor = await self._audit.read(
            current_identity().user_id, request.conversation_id, request.limit, request.cursor
        )
        return pb.ListAuditEntriesResponse(entries=entries, next_cursor=next_cursor)

    async def AcceptConversation(
        self, request: pb.AcceptConversationRequest, context: Context
    ) -> pb.AcceptConversationResponse:
        view = await self._requests.accept(current_identity().user_id, request.conversation_id)
        return pb.AcceptConversationResponse(conversation=convert.conversation(view))

    async def DeclineConversation(
        self, request: pb.DeclineConversationRequest, context: Context
    ) -> pb.DeclineConversationResponse:
        view = await self._requests.decline(current_identity().user_id, request.conversation_id)
        return pb.DeclineConversationResponse(conversation=convert.conversation(view))

    async def BlockConversation(
        self, request: pb.BlockConversationRequest, context: Context
    ) -> pb.BlockConversationResponse:
        view = await self._requests.block(current_identity().user_id, request.conversation_id)
        return pb.BlockConversationResponse(conversation=convert.conversation(view))

    async def GetUserSettings(self, request: pb.GetUserSettingsRequest, context: Context) -> pb.GetUserSettingsResponse:
        hide = await self._privacy.hide_last_seen(current_identity().user_id)
        return pb.GetUserSettingsResponse(settings=pb.UserSettings(hide_last_seen=hide))

    async def UpdateUserSettings(
        self, request: pb.UpdateUserSettingsRequest, context: Context
    ) -> pb.UpdateUserSettingsResponse:
        hide = await self._privacy.update(
            current_identity().user_id, request.hide_last_seen if request.HasField("hide_last_seen") else None
        )
        return pb.UpdateUserSettingsResponse(settings=pb.UserSettings(hide_last_seen=hide))

    async def GetMembership(self, request: pb.GetMembershipRequest, context: Context) -> pb.GetMembershipResponse:
        require_service()
        view = await self._conversations.membership(request.conversation_id)
        conversation = convert.conversation(view)
        return pb.GetMembershipResponse(
            conversation_id=conversation.conversation_id,
            type=conversation.type,
            active=view.row.active,
            participants=conversation.participants,
            version=view.row.membership_version,
            blocked=view.row.request_state == RequestState.BLOCKED,
            archived=conversation.archived,
            muted_user_ids=[p.user_id for p in view.participants if p.muted],
        )

    async def ListContacts(self, request: pb.ListContactsRequest, context: Context) -> pb.ListContactsResponse:
        require_service()
        contacts = await self._privacy.contacts(request.user_id)
        return pb.ListContactsResponse(
            user_ids=contacts.audience,
            visible_user_ids=contacts.visible,
            last_seen_hidden_user_ids=contacts.last_seen_hidden,
            hide_last_seen=contacts.hide_last_seen,
        )

    async def ListConversationIds(
        self, request: pb.ListConversationIdsRequest, context: Context
    ) -> pb.ListConversationIdsResponse:
        require_service()
        return pb.ListConversationIdsResponse(
            conversation_ids=await self._conversations.conversation_ids(request.user_id)
        )

    # settings (settings.py)

    async def UpdateConversation(
        self, request: pb.UpdateConversationRequest, context: Context
    ) -> pb.UpdateConversationResponse:
        view = await self._settings.update(
            current_identity().user_id,
            request.conversation_id,
            request.title if request.HasField("title") else None,
            request.description if request.HasField("description") else None,
        )
        return pb.UpdateConversationResponse(conversation=convert.conversation(view))

    async def LeaveConversation(
        self, request: pb.LeaveConversationRequest, context: Context
    ) -> pb.LeaveConversationResponse:
        view = await self._settings.leave(current_identity().user_id, request.conversation_id, request.close_group)
        return pb.LeaveConversationResponse(conversation=convert.conversation(view))

    async def ArchiveConversation(
        self, request: pb.ArchiveConversationRequest, context: Context
    ) -> pb.ArchiveConversationResponse:
        view = await self._settings.set_archived(current_identity().user_id, request.conversation_id, True)
        return pb.ArchiveConversationResponse(conversation=convert.conversation(view))

    async def UnarchiveConversation(
        self, request: pb.UnarchiveConversationRequest, context: Context
    ) -> pb.UnarchiveConversationResponse:
        view = await self._settings.set_archived(current_identity().user_id, request.conversation_id, False)
        return pb.UnarchiveConversationResponse(conversation=convert.conversation(view))

    async def UpdateConversationPreferences(
        self, request: pb.UpdateConversationPreferencesRequest, context: Context
    ) -> pb.UpdateConversationPreferencesResponse:
        view = await self._settings.update_preferences(
            current_identity().user_id,
            request.conversation_id,
            request.muted if request.HasField("muted") else None,
            request.pinned if request.HasField("pinned") else None,
        )
        return pb.UpdateConversationPreferencesResponse(conversation=convert.conversation(view))
