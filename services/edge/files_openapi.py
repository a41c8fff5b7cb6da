"""The OpenAPI description of the attachment byte endpoints (services/edge/uploads.py), which are
plain HTTP routes rather than transcoded RPCs; build_openapi merges it into /openapi.json."""

from __future__ import annotations

from typing import Any

PATH = "/files/{attachment_id}"
FILE_TAG = {
    "name": "Files",
    "description": "An attachment's bytes at the signed links CreateUpload and GetAttachment "
    "return (the filesystem backend; object storage presigns its own).",
}


FILE_PATHS: dict[str, Any] = {
    PATH: {
        "parameters": [
            {"name": "attachment_id", "in": "path", "required": True, "schema": {"type": "string"}},
            {
                "name": "v",
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": "Variant: file, thumbnail or upload (signed).",
            },
            {
                "name": "u",
                "in": "query",
                "required": True,
                "schema": {"type": "string"},
                "description": "The user the link was issued to (signed).",
            },
            {
                "name": "e",
                "in": "query",
                "required": True,
                "schema": {"type": "string"},
                "description": "Expiry, Unix seconds (signed).",
            },
            {
                "name": "s",
                "in": "query",
                "required": True,
                "schema": {"type": "string"},
                "description": "The signature.",
            },
        ],
        "put": {
            "summary": "Upload an attachment's bytes to the upload_url CreateUpload returned (filesystem backend)",
            "operationId": "UploadAttachmentContent",
            "tags": [FILE_TAG["name"]],
            "security": [],
            "requestBody": {
                "required": True,
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            },
            "responses": {
                "200": {
                    "description": "The checked upload, ready to attach",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"attachment": {"$ref": "#/components/schemas/Attachment"}},
                            }
                        }
                    },
                },
                **{
                    code: {"$ref": "#/components/responses/Error"}
                    for code in ("400", "403", "404", "409", "413", "503")
                },
            },
        },
        "get": {
            "summary": (
                "Download an attachment (or its thumbnail) at a link GetAttachment returned (filesystem backend)"
            ),
            "operationId": "DownloadAttachmentContent",
            "tags": [FILE_TAG["name"]],
            "security": [],
            "parameters": [{"name": "Range", "in": "header", "required": False, "schema": {"type": "string"}}],
            "responses": {
                "200": {
                    "description": "The bytes",
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                },
                "206": {
                    "description": "A range of the bytes",
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                },
                "304": {"description": "Not modified (If-None-Match)"},
                **{code: {"$ref": "#/components/responses/Error"} for code in ("403", "404", "416", "503")},
            },
        },
    },
}
