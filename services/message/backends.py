"""The attachment backend a message replica runs with, from its settings (CHAT_ATTACHMENT_BACKEND)."""

from __future__ import annotations

from chatmesh.config import Settings
from services.message.blobstore import BlobStore, FileBlobStore
from services.message.links import Links, secret_of


def open_blobs(settings: Settings) -> tuple[BlobStore, Links | None]:
    """(the store, the mesh's link signer): object storage presigns its own links, so it needs none."""
    if settings.attachment_backend == "s3":
        from services.message.s3store import S3BlobStore  # boto3 is imported only by replicas that use it

        return S3BlobStore.from_settings(settings), None
    return FileBlobStore(settings.attachment_dir), Links(secret_of(settings))
