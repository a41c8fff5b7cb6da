"""The edge's one multiplexed event stream per upstream service.

Every WebSocket of this replica shares one MessageService.StreamEvents call: a socket subscribes
with its resume token and gets a sink; each event comes back once with the subscriptions it goes to
and each one's resume token (`deliveries`; a message replica of the previous version sends
`batches`, per subscription, which are still read). When the stream breaks (a message service
replica restarts), the router reconnects with backoff and resubscribes every socket from the last
resume token it delivered, so nothing is skipped. Each event is parsed once and rendered to its
frame's JSON once (`FrameCache`), however many of this replica's sockets it reaches; each sink gets
the one Event with its own token set in `resume_token` for the length of the call (a sink reads it
then, it does not keep the Event).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from chatmesh.auth import ServiceCredentials
from chatmesh.gen.chat.v1 import common_pb2, message_pb2, message_pb2_grpc
from services.edge.frames import FrameCache, RenderedEvent
from services.edge.streams import ResilientStream
from services.edge.threads import EVENT as THREAD_EVENT
from services.edge.threads import ThreadFrames

Sink = Callable[[common_pb2.Event, RenderedEvent], None]


@dataclass
class _Subscriber:
    user_id: str
    resume_token: str
    sink: Sink


class EventRouter:
    def __init__(self, stub: message_pb2_grpc.MessageServiceStub, credentials: ServiceCredentials) -> None:
        self._subs: dict[str, _Subscriber] = {}
        self._frames = FrameCache()
        self._threads = ThreadFrames()
        self._stream: ResilientStream[message_pb2.StreamEventsRequest, message_pb2.StreamEventsResponse] = (
            ResilientStream(
                "event stream",
                lambda: stub.StreamEvents(metadata=credentials.metadata(), wait_for_ready=True),
                lambda: [self._subscribe_request(subscription_id) for subscription_id in list(self._subs)],
                self._dispatch,
            )
        )
        self.connected = self._stream.connected

    def subscribe(self, subscription_id: str, user_id: str, resume_token: str, sink: Sink) -> None:
        self._subs[subscription_id] = _Subscriber(user_id, resume_token, sink)
        self._stream.send(self._subscribe_request(subscription_id))

    def unsubscribe(self, subscription_id: str) -> None:
        if self._subs.pop(subscription_id, None) is not None:
            self._stream.send(
                message_pb2.StreamEventsRequest(
                    unsubscribe=message_pb2.StreamEventsRequest.Unsubscribe(subscription_id=subscription_id)
                )
            )

    def _subscribe_request(self, subscription_id: str) -> message_pb2.StreamEventsRequest:
        sub = self._subs[subscription_id]
        return message_pb2.StreamEventsRequest(
            subscribe=message_pb2.StreamEventsRequest.Subscribe(
                subscription_id=subscription_id, user_id=sub.user_id, resume_token=sub.resume_token
            )
        )

    async def run(self) -> None:
        await self._stream.run()

    def _dispatch(self, response: message_pb2.StreamEventsResponse) -> None:
        render = self._frames.render
        subs = self._subs
        for delivery in response.deliveries:
            event = delivery.event
            rendered = render(event)
            thread = self._threads.render(event) if event.HasField("thread") else None
            for recipient in delivery.recipients:
                sub = subs.get(recipient.subscription_id)
                if sub is None:
                    continue
                if token := recipient.resume_token:
                    sub.resume_token = token
                event.resume_token = token
                sub.sink(event, rendered)
                if thread is not None:  # a reply sent or deleted: open threads hear of it (threads.py)
                    sub.sink(THREAD_EVENT, thread)
        for batch in response.batches:  # a message replica of the previous version
            sub = subs.get(batch.subscription_id)
            if sub is None:
                continue
            for event in batch.events:
                if event.resume_token:
                    sub.resume_token = event.resume_token
                sub.sink(event, render(event))
                if event.HasField("thread"):
                    sub.sink(THREAD_EVENT, self._threads.render(event))
