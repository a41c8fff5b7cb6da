"""NotificationService's gRPC face, hosted by the message service: devices for users, the
notification stream for push workers (internal callers, SERVICE_CALLERS)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from chatmesh.gen.chat.v1 import notification_pb2 as pb
from chatmesh.gen.chat.v1 import notification_pb2_grpc
from chatmesh.grpc_server import Context, current_identity, require_service
from services.message.devices import Devices
from services.message.notification_stream import NotificationStreams


class NotificationServicer(notification_pb2_grpc.NotificationServiceServicer):
    def __init__(self, devices: Devices, streams: NotificationStreams) -> None:
        self._devices = devices
        self._streams = streams

    async def RegisterDevice(self, request: pb.RegisterDeviceRequest, context: Context) -> pb.RegisterDeviceResponse:
        device, created = await self._devices.register(current_identity().user_id, request.platform, request.push_token)
        return pb.RegisterDeviceResponse(device=device, created=created)

    async def ListDevices(self, request: pb.ListDevicesRequest, context: Context) -> pb.ListDevicesResponse:
        return pb.ListDevicesResponse(devices=await self._devices.list(current_identity().user_id))

    async def DeleteDevice(self, request: pb.DeleteDeviceRequest, context: Context) -> pb.DeleteDeviceResponse:
        await self._devices.delete(current_identity().user_id, request.device_id)
        return pb.DeleteDeviceResponse()

    async def StreamNotifications(
        self, request: pb.StreamNotificationsRequest, context: Context
    ) -> AsyncIterator[pb.StreamNotificationsResponse]:
        require_service()
        async for batch in self._streams.stream(request):
            yield pb.StreamNotificationsResponse(notifications=batch)

    async def AckNotifications(
        self, request: pb.AckNotificationsRequest, context: Context
    ) -> pb.AckNotificationsResponse:
        require_service()
        return pb.AckNotificationsResponse(
            acknowledged=await self._streams.ack(request.group, list(request.notification_ids))
        )

    async def DeadLetterNotifications(
        self, request: pb.DeadLetterNotificationsRequest, context: Context
    ) -> pb.DeadLetterNotificationsResponse:
        require_service()
        return pb.DeadLetterNotificationsResponse(
            dead_lettered=await self._streams.dead_letter(request.group, list(request.notification_ids), request.reason)
        )
