"""Start the mesh's four services as separate processes and wait until each answers its health check.

Used by `chatmesh up` and by the end-to-end tests, so both run the services exactly the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chatmesh.config import Settings
from chatmesh.service_keys import ensure_keyring, keyring_env
from chatmesh.tls import ClientTls, client_tls

SERVICES = ("conversation", "message", "presence", "edge")
# Every identity the keyring holds a key pair for: the services, and the push workers (internal
# callers of NotificationService that serve nothing: `chatmesh push-worker`).
IDENTITIES = (*SERVICES, "push")


def kind_of(name: str) -> str:
    """Instance names are a service name, or a replica of one: `message`, `message-2`, `edge-2`."""
    return name.split("-", 1)[0]


@dataclass
class Mesh:
    """Service processes sharing one environment; ports[name] is where each instance listens.

    Several replicas of a service get names like `message-2`; callers reach all replicas of a service
    through one round-robin target (`ipv4:127.0.0.1:p1,127.0.0.1:p2`).
    """

    env: dict[str, str]
    ports: dict[str, int]
    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # With a base port, each gRPC service process serves /metrics on a port of its own (service_metrics_ports);
    # one CHAT_METRICS_PORT shared by processes on one host would make all but the first fail to bind.
    metrics_base: int | None = None
    # Or explicit ports per gRPC instance (free ports picked by the caller, e.g. `chatmesh bench`, which
    # scrapes each message replica's share of the work); they take precedence over metrics_base.
    metrics_ports: dict[str, int] = field(default_factory=dict)

    @property
    def edge_url(self) -> str:
        return self.url_of("edge")

    def url_of(self, edge: str) -> str:
        return f"http://127.0.0.1:{self.ports[edge]}"

    def _target(self, kind: str) -> str:
        ports = [port for name, port in sorted(self.ports.items()) if kind_of(name) == kind]
        return "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)

    @property
    def service_metrics_ports(self) -> dict[str, int]:
        """The base port plus each gRPC instance's place in `ports` (the edge serves /metrics itself)."""
        if self.metrics_ports:
            return dict(self.metrics_ports)
        if self.metrics_base is None:
            return {}
        names = [name for name in self.ports if kind_of(name) != "edge"]
        return {name: self.metrics_base + offset for offset, name in enumerate(names)}

    @property
    def keyring(self) -> Path:
        """The development key pairs (CHAT_SERVICE_KEYRING, or `service-keys` beside the logs): meshes
        that share an environment share them, so their services accept each other's calls."""
        return Path(
            self.env.get("CHAT_SERVICE_KEYRING")
            or os.environ.get("CHAT_SERVICE_KEYRING")
            or self.log_dir.parent / "service-keys"
        )

    def service_env(self, name: str) -> dict[str, str]:
        """Each process gets its own service key only; the edge, which answers no service, no public keys."""
        kind = kind_of(name)
        env = {
            **os.environ,
            **self.env,
            "CHAT_CONVERSATION_TARGET": self._target("conversation"),
            "CHAT_MESSAGE_TARGET": self._target("message"),
            "CHAT_PRESENCE_TARGET": self._target("presence"),
            **keyring_env(ensure_keyring(self.keyring, IDENTITIES), kind, verifies=kind != "edge"),
        }
        if kind == "edge":
            env.pop("CHAT_SERVICE_PUBLIC_KEYS", None)
            env["CHAT_EDGE_PORT"] = str(self.ports[name])
        else:
            env["CHAT_LISTEN_ADDR"] = f"127.0.0.1:{self.ports[name]}"
        if self.metrics_base is not None or self.metrics_ports:
            env.pop("CHAT_METRICS_PORT", None)
            if name in self.service_metrics_ports:
                env["CHAT_METRICS_PORT"] = str(self.service_metrics_ports[name])
        return env

    def start(self, *names: str, timeout_s: float = 60) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        chosen = names or tuple(self.ports)
        # Upstreams first, together; edges once they answer, so their first calls find them.
        try:
            for group in ([n for n in chosen if kind_of(n) != "edge"], [n for n in chosen if kind_of(n) == "edge"]):
                for name in group:
                    self.spawn(name)
                for name in group:
                    self.wait_ready(name, timeout_s)
        except BaseException:
            self.stop(*chosen)  # leave nothing running behind a failed start
            raise

    def spawn(self, name: str, extra_env: dict[str, str] | None = None) -> None:
        """Start `name` (again: a replacement replica takes over its entry in `processes`)."""
        with open(self.log_dir / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", f"services.{kind_of(name)}"],
                env={**self.service_env(name), **(extra_env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, name: str, timeout_s: float, health_port: int | None = None) -> None:
        """Until `name` answers SERVING: on its own port, or on `health_port` (CHAT_HEALTH_PORT), which a
        replacement replica sharing the port needs, lest the old replica's answer be taken for its own."""
        deadline = time.monotonic() + timeout_s
        tls = client_tls(Settings.from_env(self.service_env(name)))  # the service's own certificate, if any
        while time.monotonic() < deadline:
            process = self.processes[name]
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode}; see {self.log_dir / (name + '.log')}\n"
                    + (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                )
            if self._healthy(name, tls, health_port):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} was not healthy within {timeout_s:.0f}s; see {self.log_dir / (name + '.log')}")

    def _healthy(self, name: str, tls: ClientTls | None = None, health_port: int | None = None) -> bool:
        if kind_of(name) == "edge":
            try:
                with urllib.request.urlopen(f"{self.url_of(name)}/healthz", timeout=1) as reply:
                    return bool(reply.status == 200)
            except OSError:
                return False
        target = f"127.0.0.1:{health_port or self.ports[name]}"
        with (
            grpc.secure_channel(target, tls.credentials, options=tls.options())
            if tls and not health_port  # the health-only port is plaintext
            else grpc.insecure_channel(target)
        ) as channel:
            try:
                # types-grpcio-health-checking's HealthStub declares no methods (grpc adds them at run time).
                stub = health_pb2_grpc.HealthStub(channel)
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)  # type: ignore[attr-defined]
            except grpc.RpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def stop(self, *names: str, sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
        """Signal the named services (default all, edge first) and wait for them to exit."""
        everything = sorted(self.processes, key=lambda n: kind_of(n) != "edge")  # edges first
        chosen = [n for n in (names or everything) if n in self.processes]
        for name in chosen:
            if self.processes[name].poll() is None:
                self.processes[name].send_signal(sig)
        for name in chosen:
            process = self.processes.pop(name)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def wait(self) -> str | None:
        """Block until a service exits on its own; returns its name (None if all were stopped)."""
        while self.processes:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    return name
            time.sleep(0.5)
        return None
