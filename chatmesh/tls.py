"""mTLS between the mesh's processes, from mounted files (CHAT_TLS_CERT_FILE, CHAT_TLS_KEY_FILE,
CHAT_TLS_CA_FILE; all three or none, chatmesh/config.py). Off when unset: gRPC is then plaintext.

Why, beside the service tokens: without TLS, every bearer token (the users' forwarded ones and the
services' own) crosses the pod network in clear, for anyone who can sniff it to replay. With it, a
server requires a client certificate from the mesh's CA, so a pod without one (or a plaintext
client) cannot even open a connection, and tokens are encrypted on the wire.

Servers and clients present the same certificate (cert-manager issues one per service with both
usages, deploy/k8s/components/mtls). Clients check the server's name against the target's host
(`conversation-headless`), or against CHAT_TLS_SERVER_NAME when set (the launcher's targets list
addresses, whose certificates say `localhost`). Files are read at start: a renewed certificate is
picked up by a restart (docs/security.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from chatmesh.config import ConfigError, Settings


@dataclass(frozen=True)
class ClientTls:
    """What a channel needs: credentials with this process's client certificate, and the name to
    check the server's certificate against (None: the target's host)."""

    credentials: grpc.ChannelCredentials
    server_name: str | None = None

    def options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def _files(settings: Settings) -> tuple[bytes, bytes, bytes] | None:
    """(certificate chain, private key, CA bundle), or None without TLS."""
    if not settings.tls_cert_file or not settings.tls_key_file or not settings.tls_ca_file:
        return None
    read = {}
    for key, path in (
        ("CHAT_TLS_CERT_FILE", settings.tls_cert_file),
        ("CHAT_TLS_KEY_FILE", settings.tls_key_file),
        ("CHAT_TLS_CA_FILE", settings.tls_ca_file),
    ):
        try:
            read[key] = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{key}={path!r} cannot be read: {exc}") from exc
    return read["CHAT_TLS_CERT_FILE"], read["CHAT_TLS_KEY_FILE"], read["CHAT_TLS_CA_FILE"]


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """A server's TLS that requires a client certificate signed by the CA; None without TLS."""
    files = _files(settings)
    if files is None:
        return None
    chain, key, ca = files
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=ca, require_client_auth=True)


def client_tls(settings: Settings) -> ClientTls | None:
    """A client's TLS with this process's certificate; None without TLS."""
    files = _files(settings)
    if files is None:
        return None
    chain, key, ca = files
    return ClientTls(
        grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=chain),
        settings.tls_server_name,
    )
