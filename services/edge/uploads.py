"""Attachment bytes over HTTP for the filesystem backend: `PUT /files/<id>` takes an upload and
`GET|HEAD /files/<id>` serves a download, both at links the message service signed
(`?v=&u=&e=&s=`, see services/message/links.py). The edge holds no key and no bytes: it passes the
link's parameters to the message service, which checks them (and the user's access, again) before
a byte moves, and streams the bytes through in chunks, never buffering a whole file.

Uploads: a declared Content-Length over the limit is 413 before anything else; the link is checked
before the body is read; the body is read in chunks and the upload refused (413) as soon as it
passes the size the upload was created with, so no more than the limit is ever read. A client
that goes away mid-upload cancels the call, and the service keeps nothing of it.

Downloads: one byte range (RFC 9110: `bytes=a-b`, `a-`, `-n`; several ranges or a malformed header
get the whole file, as the RFC allows; `If-Range` is honoured by serving the whole file), 206 with
Content-Range, 416 outside the file, an ETag (the sha256) with If-None-Match -> 304, and
`Cache-Control: private` for as long as the link is valid (the link is the cache key and carries
its expiry). A safe `Content-Disposition` (chatmesh/disposition.py), `nosniff` and a sandboxing CSP
keep an uploaded file from ever running as a page of the mesh's origin.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

import grpc
from google.protobuf import json_format
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from chatmesh.disposition import content_disposition
from chatmesh.gen.chat.v1 import message_pb2
from services.edge.calls import reachable
from services.edge.context import EdgeContext
from services.edge.errors import error_response, from_rpc_error
from services.edge.files_openapi import PATH as FILE_PATH

log = logging.getLogger(__name__)

PATH = FILE_PATH
CHUNK = 256 * 1024  # bytes per gRPC message towards the service
TRANSFER_TIMEOUT_S = 600.0  # a whole transfer of one file, a slow client's included
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _link(request: Request, default_variant: str) -> message_pb2.SignedLink:
    query = request.query_params
    expires = query.get("e", "")
    if not expires.isdigit() or len(expires) > 12:
        raise _Refused(error_response(403, "LINK_INVALID", "this link is not valid"))
    return message_pb2.SignedLink(
        attachment_id=request.path_params["attachment_id"],
        variant=query.get("v", default_variant),
        user_id=query.get("u", ""),
        expires=int(expires),
        signature=query.get("s", ""),
    )


async def _failure(call: Any) -> Response:
    """The error response for a call that ended badly (a write to it failed, or a read raised)."""
    code = await call.code()
    details = await call.details()
    trailing = await call.trailing_metadata()
    status, error_code, message = from_rpc_error(
        grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing or grpc.aio.Metadata(), details)
    )
    return error_response(status, error_code, message)


def _too_large(limit: int) -> Response:
    return error_response(413, "ATTACHMENT_TOO_LARGE", f"this upload takes at most {limit} bytes")


def upload_routes(ctx: EdgeContext) -> list[BaseRoute]:
    max_bytes = ctx.settings.attachment_max_bytes

    async def upload(request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            return _too_large(max_bytes)  # refused before a byte of the body is read
        try:
            link = _link(request, "upload")
            await reachable(ctx.channels["message"], "message")
        except _Refused as exc:
            return exc.response
        except grpc.aio.AioRpcError as exc:
            return error_response(*from_rpc_error(exc))
        call = ctx.message.WriteAttachmentContent(metadata=ctx.credentials.metadata(), timeout=TRANSFER_TIMEOUT_S)
        try:
            return await _stream_upload(request, call, link, declared)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            return await _failure(call)
        finally:
            call.cancel()  # a no-op once the call is done; otherwise the service discards the bytes

    async def _stream_upload(request: Request, call: Any, link: message_pb2.SignedLink, declared: str) -> Response:
        await call.write(message_pb2.WriteAttachmentContentRequest(link=link))
        accepted = await call.read()
        if accepted is grpc.aio.EOF:
            return await _failure(call)
        limit = accepted.size_bytes
        if declared.isdigit() and int(declared) > limit:
            return _too_large(limit)
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    return _too_large(limit)  # stop reading here: the cancelled call keeps nothing
                for at in range(0, len(chunk), CHUNK):
                    await call.write(message_pb2.WriteAttachmentContentRequest(chunk=chunk[at : at + CHUNK]))
        except ClientDisconnect:
            return error_response(400, "CLIENT_DISCONNECTED", "the upload was interrupted; nothing was kept")
        await call.done_writing()
        done = await call.read()
        if done is grpc.aio.EOF:
            return await _failure(call)
        return JSONResponse(
            {
                "attachment": json_format.MessageToDict(
                    done.attachment, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
                )
            }
        )

    async def download(request: Request) -> Response:
        try:
            link = _link(request, "file")
            await reachable(ctx.channels["message"], "message")
        except _Refused as exc:
            return exc.response
        except grpc.aio.AioRpcError as exc:
            return error_response(*from_rpc_error(exc))
        ranged = _range_of(request)
        read = message_pb2.ReadAttachmentContentRequest(link=link, first=0, last=-1)
        if ranged is not None:
            read.first, read.last, read.suffix = ranged
        call = ctx.message.ReadAttachmentContent(read, metadata=ctx.credentials.metadata(), timeout=TRANSFER_TIMEOUT_S)
        try:
            first = await call.read()
        except grpc.aio.AioRpcError as exc:
            return error_response(*from_rpc_error(exc))
        if first is grpc.aio.EOF or first.WhichOneof("part") != "head":
            call.cancel()
            return await _failure(call)
        head = first.head
        headers = _headers(head, link)
        if request.headers.get("if-none-match", "") in (headers["ETag"], "*"):
            call.cancel()
            return Response(status_code=304, headers={k: headers[k] for k in ("ETag", "Cache-Control")})
        if not head.satisfiable:
            call.cancel()
            return error_response(
                416,
                "RANGE_NOT_SATISFIABLE",
                "the range lies outside the file",
                {"Content-Range": f"bytes */{head.total_bytes}"},
            )
        headers["Content-Length"] = str(head.length)
        status = 200
        if ranged is not None:
            status = 206
            headers["Content-Range"] = f"bytes {head.first}-{head.first + head.length - 1}/{head.total_bytes}"
        if request.method == "HEAD":
            call.cancel()
            return Response(status_code=status, headers=headers)
        return StreamingResponse(_body(call), status_code=status, headers=headers, media_type=head.content_type)

    return [Route(PATH, upload, methods=["PUT"]), Route(PATH, download, methods=["GET", "HEAD"])]


async def _body(call: Any) -> AsyncIterator[bytes]:
    """The chunks after the head (read() again: a call read once cannot be iterated as well)."""
    try:
        while (message := await call.read()) is not grpc.aio.EOF:
            yield message.chunk
    finally:
        call.cancel()


def _range_of(request: Request) -> tuple[int, int, int] | None:
    """(first, last, suffix) of a single byte range; None for no range, several, or one malformed."""
    header = request.headers.get("range")
    if not header or "if-range" in request.headers:
        return None
    match = _RANGE.match(header.strip())
    if match is None or len(header) > 64:
        return None
    start, end = match.groups()
    if not start and not end:
        return None
    if not start:
        return 0, -1, int(end) or -1  # `bytes=-0` is unsatisfiable: suffix -1 -> first out of range
    return int(start), int(end) if end else -1, 0


def _headers(head: message_pb2.ContentHead, link: message_pb2.SignedLink) -> dict[str, str]:
    max_age = max(0, int(link.expires - time.time()))
    return {
        "Content-Type": head.content_type,
        "Content-Disposition": content_disposition(head.filename, head.content_type),
        "ETag": f'"{head.sha256}"',
        "Last-Modified": formatdate(head.created_at.seconds, usegmt=True),
        "Cache-Control": f"private, max-age={max_age}, immutable",
        "Accept-Ranges": "bytes",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; media-src 'self'; style-src 'unsafe-inline'; sandbox",
    }
