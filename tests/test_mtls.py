"""mTLS between services (issue 15, item 4): with CHAT_TLS_* set, a whole mesh of real processes runs
over TLS with client certificates (a message sent over REST reaches a WebSocket: edge → message →
conversation, all encrypted), while a plaintext client, a client without a certificate and one with
a certificate from another CA cannot even connect. Kubelet-style probes use the plaintext health
port, which serves health and nothing else. Certificates are made here with `cryptography`."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chatmesh.config import ConfigError, Settings
from chatmesh.gen.chat.v1 import conversation_pb2, conversation_pb2_grpc
from chatmesh_tools.embedded import free_port
from chatmesh_tools.launcher import SERVICES, Mesh, kind_of
from tests.conftest import dump_logs
from tests.helpers import Socket, direct_conversation, new_user_id, register, send

GRPC_SERVICES = ("conversation", "message", "presence")


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class Authority:
    """A CA and the leaf certificates it signs (server and client usage, `localhost` and 127.0.0.1)."""

    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, folder: Path, name: str) -> dict[str, str]:
        """A leaf's files in `folder`, as the CHAT_TLS_* settings."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        folder.mkdir(parents=True, exist_ok=True)
        files = {
            "CHAT_TLS_CERT_FILE": folder / f"{name}.crt",
            "CHAT_TLS_KEY_FILE": folder / f"{name}.key",
            "CHAT_TLS_CA_FILE": folder / "ca.crt",
        }
        files["CHAT_TLS_CERT_FILE"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files["CHAT_TLS_KEY_FILE"].write_bytes(_pem(key))
        files["CHAT_TLS_CA_FILE"].write_bytes(self.pem)
        return {k: str(v) for k, v in files.items()}

    def credentials(self, folder: Path, name: str) -> grpc.ChannelCredentials:
        files = self.issue(folder, name)
        return grpc.ssl_channel_credentials(
            Path(files["CHAT_TLS_CA_FILE"]).read_bytes(),
            Path(files["CHAT_TLS_KEY_FILE"]).read_bytes(),
            Path(files["CHAT_TLS_CERT_FILE"]).read_bytes(),
        )


class TlsMesh(Mesh):
    """Each process its own certificate (as cert-manager issues them) and, for the gRPC services, a
    plaintext health port."""

    tls: dict[str, dict[str, str]]
    health_ports: dict[str, int]

    def service_env(self, name: str) -> dict[str, str]:
        env = {**super().service_env(name), **self.tls[kind_of(name)], "CHAT_TLS_SERVER_NAME": "localhost"}
        if name in self.health_ports:
            env["CHAT_HEALTH_PORT"] = str(self.health_ports[name])
        return env


@pytest.fixture(scope="module")
def authority() -> Authority:
    return Authority("chatmesh test CA")


@pytest.fixture(scope="module")
def tls_mesh(
    request: pytest.FixtureRequest, mesh_env: dict[str, str], make_database, authority: Authority, workdir: Path
) -> Iterator[TlsMesh]:  # type: ignore[no-untyped-def]
    folder = workdir / "mtls"
    env = {**mesh_env, "CHAT_DATABASE_URL": make_database(), "CHAT_REDIS_PREFIX": "mtls-" + folder.name}
    mesh = TlsMesh(env=env, ports={name: free_port() for name in SERVICES}, log_dir=folder / "logs")
    mesh.tls = {name: authority.issue(folder / "certs", name) for name in SERVICES}
    mesh.health_ports = {name: free_port() for name in GRPC_SERVICES}
    mesh.start()  # the launcher's health checks themselves go over mTLS
    yield mesh
    mesh.stop()
    if request.session.testsfailed:
        dump_logs(mesh.log_dir)


async def test_the_mesh_runs_over_mtls(tls_mesh: TlsMesh, make_token) -> None:  # type: ignore[no-untyped-def]
    alice, bob = new_user_id("alice"), new_user_id("bob")
    async with httpx.AsyncClient(base_url=tls_mesh.edge_url, timeout=10) as http:
        await register(http, make_token(bob))
        conversation_id = await direct_conversation(http, make_token(alice), bob)
        socket = await Socket.open(tls_mesh.edge_url, make_token(bob))
        await send(http, make_token(alice), conversation_id, "over tls")
        frame = await socket.next_of("chat:message_received")
        assert frame["data"]["content"] == "over tls"
        ready = (await http.get("/readyz")).json()
        assert all(ready["upstreams"].values()) and ready["event_stream"] and ready["presence_stream"], ready


def _check(target: str, credentials: grpc.ChannelCredentials | None, service: str = "") -> int:
    options = [("grpc.ssl_target_name_override", "localhost")] if credentials else []
    with (
        grpc.secure_channel(target, credentials, options=options) if credentials else grpc.insecure_channel(target)
    ) as channel:
        return int(
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=3).status
        )


@pytest.mark.parametrize("name", GRPC_SERVICES)
def test_only_a_client_with_a_mesh_certificate_connects(
    tls_mesh: TlsMesh, authority: Authority, tmp_path: Path, name: str
) -> None:
    target = f"127.0.0.1:{tls_mesh.ports[name]}"
    assert _check(target, authority.credentials(tmp_path, "client")) == health_pb2.HealthCheckResponse.SERVING
    refused = {
        "plaintext": None,
        "no client certificate": grpc.ssl_channel_credentials(authority.pem),
        "a certificate from another CA": Authority("stranger").credentials(tmp_path / "other", "client"),
    }
    for kind, credentials in refused.items():
        with pytest.raises(grpc.RpcError) as failed:
            _check(target, credentials)
            pytest.fail(kind)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, (kind, failed.value)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", GRPC_SERVICES)
def test_the_plaintext_health_port_serves_health_only(tls_mesh: TlsMesh, name: str, make_token) -> None:  # type: ignore[no-untyped-def]
    target = f"127.0.0.1:{tls_mesh.health_ports[name]}"
    assert _check(target, None) == health_pb2.HealthCheckResponse.SERVING
    assert _check(target, None, "liveness") == health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as failed:
        conversation_pb2_grpc.ConversationServiceStub(channel).ListConversations(
            conversation_pb2.ListConversationsRequest(),
            metadata=(("authorization", f"Bearer {make_token('x')}"),),
            timeout=3,
        )
    assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]


def test_half_a_tls_setup_is_a_start_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CHAT_TLS_CA_FILE"):
        Settings.from_env({"CHAT_JWT_SECRET": "x", "CHAT_TLS_CERT_FILE": "/c.crt", "CHAT_TLS_KEY_FILE": "/c.key"})
