"""deploy/k8s, the identity and network side (issue 15, item 4): each pod mounts only its own service
key; each gRPC service admits on its port only the pods of its real callers, as the code has them;
only the edge is reachable from outside; and the mTLS component (cert-manager) gives each process its
own certificate, the settings chatmesh/tls.py reads, and probes kubelet can still make."""

from __future__ import annotations

import os
import re
from pathlib import Path

import kubernetes_validate
import pytest

from chatmesh.config import Settings
from chatmesh_tools.launcher import IDENTITIES, SERVICES
from tests.test_k8s_support import (
    K8S,
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
MTLS = K8S / "components" / "mtls"


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Doc]]:
    return {name: render(path) for name, path in TREES.items()}


@pytest.fixture(scope="module")
def with_mtls(tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    """The production overlay with the mTLS component, as an operator would compose it (in the
    namespace: the component's Issuers and Certificates are namespaced, next to the pods)."""
    folder = tmp_path_factory.mktemp("prod-mtls")
    (folder / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: chatmesh\n"
        f"resources:\n  - {os.path.relpath(TREES['prod'], folder)}\n"
        f"components:\n  - {os.path.relpath(MTLS, folder)}\n"
    )
    return render(folder)


def _volume_of(spec: Doc, path: str) -> Doc:
    """The pod volume mounted at the folder holding `path`."""
    (mount,) = [m for m in spec["containers"][0].get("volumeMounts", []) if m["mountPath"] == str(Path(path).parent)]
    return next(v for v in spec["volumes"] if v["name"] == mount["name"])


# --- keys -------------------------------------------------------------------------------------------


def test_each_pod_mounts_its_own_service_key_and_the_edge_no_public_keys(rendered: dict[str, list[Doc]]) -> None:
    """Separate keys: a pod holds only the private key that speaks as itself (the edge's pod cannot
    mint another service's token), and only the gRPC services hold the callers' public keys."""
    for tree, docs in rendered.items():
        for name, spec in chatmesh_workloads(docs):
            env = env_of(spec["containers"][0])
            secrets_used = {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
            if name == "chatmesh-migrate":
                assert not secrets_used and "CHAT_SERVICE_KEY_FILE" not in env
                continue
            key = _volume_of(spec, env["CHAT_SERVICE_KEY_FILE"]["value"])
            assert key["secret"]["secretName"].startswith(f"chatmesh-service-key-{name}"), (tree, name)
            assert env["CHAT_SERVICE_KEY_FILE"]["value"].endswith("/service.key")
            assert {s for s in secrets_used if s.startswith("chatmesh-service-key-")} == {
                key["secret"]["secretName"]
            }, (tree, name, secrets_used)
            if name == "edge":
                assert "CHAT_SERVICE_PUBLIC_KEYS" not in env
            else:
                public = _volume_of(spec, env["CHAT_SERVICE_PUBLIC_KEYS"]["value"] + "/x.pub")
                assert public["configMap"]["name"].startswith("chatmesh-service-public-keys")
    dev = rendered["dev"]
    public_keys = next(
        d for d in dev if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("chatmesh-service-public-keys")
    )
    # Every identity the code has a key pair for (the services and the push workers, `push`).
    assert set(public_keys["data"]) == {f"{name}.pub" for name in IDENTITIES}
    for name in IDENTITIES:
        (secret,) = [
            d
            for d in dev
            if d["kind"] == "Secret" and d["metadata"]["name"].startswith(f"chatmesh-service-key-{name}-")
        ]
        assert set(secret["data"]) == {"service.key"}


# --- network ----------------------------------------------------------------------------------------


def _callers_in_code() -> dict[str, set[str]]:
    """callee -> the services whose code makes a stub of it (`<Callee>ServiceStub(`)."""
    callers: dict[str, set[str]] = {name: set() for name in GRPC_SERVICES}
    for caller in SERVICES:
        for source in (ROOT / "services" / caller).glob("*.py"):
            for callee in re.findall(r"(\w+)ServiceStub\(", source.read_text()):
                callers[callee.lower()].add(caller)
    return callers


def _admitted(rule: Doc) -> set[str]:
    """The chatmesh service names whose pods a rule's peers select (names only by In or matchLabels)."""
    names: set[str] = set()
    for peer in rule["from"]:
        selector = peer["podSelector"]
        assert selector.get("matchLabels", {}).get("app.kubernetes.io/part-of") == "chatmesh", peer
        assert "namespaceSelector" not in peer and "ipBlock" not in peer, peer
        for expression in selector.get("matchExpressions", []):
            assert expression["key"] == "app.kubernetes.io/name" and expression["operator"] == "In", expression
            names |= set(expression["values"])
        if name := selector.get("matchLabels", {}).get("app.kubernetes.io/name"):
            names.add(name)
    return names


def test_each_grpc_service_admits_only_its_real_callers(rendered: dict[str, list[Doc]]) -> None:
    callers = _callers_in_code()
    assert callers == {
        "conversation": {"edge", "message", "presence"},
        "message": {"edge", "conversation"},
        "presence": {"edge"},
    }, "the code's calls changed: update networkpolicy.yaml and this"
    for tree, docs in rendered.items():
        policies = by_kind(docs, "NetworkPolicy")
        for name in GRPC_SERVICES:
            spec = policies[f"chatmesh-{name}"]["spec"]
            assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": name}}
            grpc_rules = [r for r in spec["ingress"] if any(p["port"] == "grpc" for p in r["ports"])]
            assert len(grpc_rules) == 1 and _admitted(grpc_rules[0]) == callers[name], (tree, name)
            for rule in spec["ingress"]:
                if rule not in grpc_rules:
                    assert [p["port"] for p in rule["ports"]] == ["metrics"]
                    assert rule["from"] == [
                        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
                    ]
            # Policies add up: no other policy may admit anything more to this service's pods.
            labels = by_kind(docs, "Deployment")[name]["spec"]["template"]["metadata"]["labels"]
            others = [
                n
                for n, p in policies.items()
                if n != f"chatmesh-{name}"
                and p["spec"].get("ingress")
                and p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()
            ]
            assert not others, (tree, name, others)


def test_only_the_edge_is_reachable_from_outside_the_mesh(rendered: dict[str, list[Doc]]) -> None:
    for tree, docs in rendered.items():
        policies = by_kind(docs, "NetworkPolicy")
        deny = policies["chatmesh-default-deny-ingress"]["spec"]
        assert deny["podSelector"]["matchLabels"] == {"app.kubernetes.io/part-of": "chatmesh"}
        assert deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
        for name, _ in chatmesh_workloads(docs):
            labels = next(d for d in docs if d["metadata"]["name"] == name and d["kind"] in ("Deployment", "Job"))[
                "spec"
            ]["template"]["metadata"]["labels"]
            assert labels["app.kubernetes.io/part-of"] == "chatmesh", (tree, name)
        assert policies["chatmesh-edge"]["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": "http"}]}]


# --- mTLS (deploy/k8s/components/mtls) --------------------------------------------------------------

CERT_MANAGER = "cert-manager.io/v1"


def test_the_mtls_component_renders_valid_kubernetes(with_mtls: list[Doc]) -> None:
    for doc in with_mtls:
        if doc["apiVersion"] == CERT_MANAGER:  # not in the validator's schemas: checked below
            assert doc["kind"] in ("Issuer", "Certificate") and doc["metadata"]["namespace"] == "chatmesh"
            continue
        kubernetes_validate.validate(doc, kubernetes_validate.utils.latest_version(), strict=True)


def test_each_process_gets_its_own_certificate_and_the_settings_to_use_it(with_mtls: list[Doc]) -> None:
    certificates = by_kind(with_mtls, "Certificate")
    issuers = by_kind(with_mtls, "Issuer")
    config = config_of(with_mtls)
    for name, deployment in by_kind(with_mtls, "Deployment").items():
        spec = deployment["spec"]["template"]["spec"]
        env = {k: v["value"] for k, v in env_of(main_container(deployment)).items() if "value" in v}
        volume = _volume_of(spec, env["CHAT_TLS_CERT_FILE"])
        assert _volume_of(spec, env["CHAT_TLS_KEY_FILE"]) == volume == _volume_of(spec, env["CHAT_TLS_CA_FILE"])
        (certificate,) = [c for c in certificates.values() if c["spec"]["secretName"] == volume["secret"]["secretName"]]
        assert certificate["metadata"]["name"] == f"chatmesh-tls-{name}"
        assert [Path(env[k]).name for k in ("CHAT_TLS_CERT_FILE", "CHAT_TLS_KEY_FILE", "CHAT_TLS_CA_FILE")] == [
            "tls.crt",
            "tls.key",
            "ca.crt",
        ]  # the keys cert-manager writes
        assert certificate["spec"]["issuerRef"]["name"] in issuers
        usages = set(certificate["spec"]["usages"])
        assert "client auth" in usages, name
        if name in GRPC_SERVICES:
            assert "server auth" in usages
            host = re.fullmatch(r"dns:///([a-z0-9-]+):\d+", config[f"CHAT_{name.upper()}_TARGET"])
            assert host and host.group(1) in certificate["spec"]["dnsNames"], "clients check this name"
        else:
            assert "server auth" not in usages  # the edge serves HTTP behind the ingress, no gRPC
        settings = Settings.from_env({"CHAT_JWT_SECRET": "x", **config, **env})
        assert settings.tls_cert_file and settings.tls_server_name is None


def test_grpc_probes_move_to_the_plaintext_health_port(with_mtls: list[Doc]) -> None:
    """Kubelet gRPC probes cannot present a certificate: they ask the health-only plaintext port."""
    for name in GRPC_SERVICES:
        container = main_container(by_kind(with_mtls, "Deployment")[name])
        health_port = int(env_of(container)["CHAT_HEALTH_PORT"]["value"])
        assert {p["name"]: p["containerPort"] for p in container["ports"]}["health"] == health_port
        assert container["readinessProbe"]["grpc"] == {"port": health_port}
        for probe in ("livenessProbe", "startupProbe"):
            assert container[probe]["grpc"] == {"port": health_port, "service": "liveness"}
    issuer_chain = by_kind(with_mtls, "Certificate")["chatmesh-ca"]
    assert issuer_chain["spec"]["isCA"] is True
    assert by_kind(with_mtls, "Issuer")["chatmesh-ca"]["spec"]["ca"]["secretName"] == issuer_chain["spec"]["secretName"]
