"""S3-compatible object storage for attachment bytes (CHAT_ATTACHMENT_BACKEND=s3): production's backend.

Clients send and fetch the bytes themselves, at presigned URLs (SigV4, expiring after
CHAT_ATTACHMENT_URL_TTL_S), so no attachment byte passes through the edge. The message service
touches an object only to check it once (CompleteUpload reads it into a temporary file for the
sniffing, sha256, thumbnail and duration), to store its thumbnail, and to delete what is refused or
collected. The upload URL signs the declared Content-Length, so S3 itself refuses a body of another
size; CompleteUpload checks the size again (and deletes the object) for stores that do not.

boto3 is blocking: every call runs in a thread (asyncio.to_thread). Tests run against moto's
standalone server, a stand-in that speaks the S3 protocol locally (it checks neither signatures nor
expiry: those are S3's, and the tests check what the URLs state).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from chatmesh.config import ConfigError, Settings

_CONFIG = Config(
    signature_version="s3v4",
    s3={"addressing_style": "path"},
    retries={"max_attempts": 3},
    connect_timeout=5,
    read_timeout=30,
)


class S3BlobStore:
    def __init__(self, client: Any, presigner: Any, bucket: str) -> None:
        self._client = client
        self._presigner = presigner  # the same credentials, with the endpoint clients reach
        self._bucket = bucket

    @classmethod
    def from_settings(cls, settings: Settings) -> S3BlobStore:
        if not settings.s3_bucket:
            raise ConfigError("CHAT_S3_BUCKET is not set: the s3 attachment backend needs a bucket")

        def client(endpoint: str | None) -> Any:
            return boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name=settings.s3_region,
                config=_CONFIG,
                aws_access_key_id=settings.s3_access_key_id,
                aws_secret_access_key=settings.s3_secret_access_key,
            )

        return cls(
            client(settings.s3_endpoint_url),
            client(settings.s3_public_endpoint_url or settings.s3_endpoint_url),
            settings.s3_bucket,
        )

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(
            self._client.put_object, Bucket=self._bucket, Key=key, Body=data, ContentType=content_type
        )

    async def size(self, key: str) -> int | None:
        try:
            head = await asyncio.to_thread(self._client.head_object, Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return int(head["ContentLength"])

    @contextlib.asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[Path]:
        handle, name = tempfile.mkstemp(prefix="chatmesh-attachment-")
        os.close(handle)
        path = Path(name)
        try:
            await asyncio.to_thread(self._client.download_file, self._bucket, key, name)
            yield path
        finally:
            await asyncio.shield(asyncio.to_thread(path.unlink, missing_ok=True))

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._client.delete_object, Bucket=self._bucket, Key=key)

    async def presign_upload(self, key: str, size: int, expires_s: int) -> tuple[str, dict[str, str]] | None:
        url = await asyncio.to_thread(
            self._presigner.generate_presigned_url,
            "put_object",
            Params={"Bucket": self._bucket, "Key": key, "ContentLength": size},
            ExpiresIn=expires_s,
        )
        return str(url), {}

    async def presign_download(self, key: str, disposition: str, content_type: str, expires_s: int) -> str | None:
        """S3 sends the headers the URL names, so the object is presented as the edge would."""
        url = await asyncio.to_thread(
            self._presigner.generate_presigned_url,
            "get_object",
            Params={
                "Bucket": self._bucket,
                "Key": key,
                "ResponseContentDisposition": disposition,
                "ResponseContentType": content_type,
            },
            ExpiresIn=expires_s,
        )
        return str(url)
