"""deploy/k8s/README.md's commands, run in order against what kustomize renders: each partial apply
(`kubectl apply -k DIR -l SELECTOR`) brings every object its workloads need, or an earlier command
made it (the migration Job once stalled on a ServiceAccount the first step did not apply). And the
production overlay's edge on the internet: an Ingress with TLS from cert-manager, WebSocket-friendly
timeouts and only the edge's public paths, with an identity provider's JWKS and origins configured."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chatmesh.config import ENV_VARS, Settings
from chatmesh.service_keys import keyring_env
from tests.test_k8s_support import K8S, ROOT, Doc, by_kind, config_of, render

GUIDE = K8S / "README.md"
Ref = tuple[str, str]  # (kind, name)


def guide_commands(text: str | None = None) -> list[str]:
    """The guide's (or a part of it's) shell commands in reading order: continuation lines joined,
    `for` loops unrolled, comments dropped."""
    commands: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```$", text or GUIDE.read_text(), re.MULTILINE | re.DOTALL):
        text = re.sub(r"\\\n\s*", " ", block)
        for loop in re.finditer(r"^for (\w+) in ([^;]+); do\n(.*?)\ndone$", text, re.MULTILINE | re.DOTALL):
            unrolled = "\n".join(loop.group(3).replace(f"${loop.group(1)}", v) for v in loop.group(2).split())
            text = text.replace(loop.group(0), unrolled)
        commands += [line.split("  #")[0].strip() for line in text.splitlines() if line.strip()]
    return commands


def created_by(command: str) -> list[Ref]:
    """What a `kubectl create` command makes (the platform's part: namespace, Secrets, ConfigMaps)."""
    made = re.search(r"kubectl (?:-n \S+ )?create (namespace|secret generic|configmap) (\S+)", command)
    if not made:
        return []
    kind = {"namespace": "Namespace", "secret generic": "Secret", "configmap": "ConfigMap"}[made.group(1)]
    return [(kind, made.group(2))]


def selected(docs: list[Doc], selector: str) -> list[Doc]:
    """kubectl's equality-based label selector (`a=b,c=d`) over the rendered objects."""
    wanted = dict(term.split("=", 1) for term in selector.split(","))
    return [d for d in docs if wanted.items() <= (d["metadata"].get("labels") or {}).items()]


def needs(doc: Doc) -> set[Ref]:
    """The objects a workload cannot start without: namespace, ServiceAccount, and the Secrets,
    ConfigMaps and claims its pods read (not those marked optional)."""
    spec = doc["spec"]["template"]["spec"]
    refs: set[Ref] = {("Namespace", doc["metadata"]["namespace"])} if doc["metadata"].get("namespace") else set()
    refs.add(("ServiceAccount", spec.get("serviceAccountName", "default")))
    for container in spec.get("initContainers", []) + spec["containers"]:
        for source in container.get("envFrom", []):
            for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                if key in source and not source[key].get("optional"):
                    refs.add((kind, source[key]["name"]))
        for env in container.get("env", []):
            for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                ref = env.get("valueFrom", {}).get(key)
                if ref and not ref.get("optional"):
                    refs.add((kind, ref["name"]))
    for volume in spec.get("volumes", []):
        if "secret" in volume and not volume["secret"].get("optional"):
            refs.add(("Secret", volume["secret"]["secretName"]))
        if "configMap" in volume and not volume["configMap"].get("optional"):
            refs.add(("ConfigMap", volume["configMap"]["name"]))
        if "persistentVolumeClaim" in volume:
            refs.add(("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]))
    refs.discard(("ServiceAccount", "default"))
    return refs


def missing_after(docs: list[Doc], selector: str, existing: set[Ref]) -> dict[str, set[Ref]]:
    """What each workload a partial apply brings still lacks: neither applied with it nor made before."""
    chosen = selected(docs, selector)
    present = existing | {(d["kind"], d["metadata"]["name"]) for d in chosen}
    return {
        d["metadata"]["name"]: needs(d) - present
        for d in chosen
        if d["kind"] in ("Job", "Deployment", "StatefulSet") and needs(d) - present
    }


APPLY = re.compile(r"kubectl apply -k (\S+)(?: -l (\S+))?$")


def test_every_documented_step_finds_what_it_needs() -> None:
    commands = guide_commands()
    existing: set[Ref] = set()
    partial = 0
    for command in commands:
        existing |= set(created_by(command))
        apply = APPLY.search(command)
        if not apply:
            continue
        docs = render(ROOT / apply.group(1))
        if apply.group(2):
            partial += 1
            assert missing_after(docs, apply.group(2), existing) == {}, command
            assert "chatmesh-migrate" in by_kind(selected(docs, apply.group(2)), "Job"), command
        else:
            existing |= {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert partial == 2  # the first deployment and the upgrade both migrate first


def test_the_first_deployment_migrates_then_rolls_out() -> None:
    text = GUIDE.read_text()
    first = text[text.index("## First deployment") : text.index("## How it runs")]
    order = guide_commands(first)
    step = next(i for i, c in enumerate(order) if APPLY.search(c) and APPLY.search(c).group(2))  # type: ignore[union-attr]
    wait = next(i for i, c in enumerate(order) if "wait --for=condition=complete job/chatmesh-migrate" in c)
    everything = next(i for i, c in enumerate(order) if APPLY.search(c) and not APPLY.search(c).group(2))  # type: ignore[union-attr]
    secret = next(i for i, c in enumerate(order) if ("Secret", "chatmesh-secrets") in created_by(c))
    assert secret < step < wait < everything


def test_the_old_first_step_would_have_stalled() -> None:
    """The check has teeth: selecting the Job alone leaves its ServiceAccount out."""
    docs = render(K8S / "overlays" / "prod")
    existing = {("Namespace", "chatmesh"), ("Secret", "chatmesh-secrets")}
    assert missing_after(docs, "app.kubernetes.io/component=migration", existing) == {
        "chatmesh-migrate": {("ServiceAccount", "chatmesh")}
    }


# --- the production edge on the internet --------------------------------------------------------------


@pytest.fixture(scope="module")
def prod() -> list[Doc]:
    return render(K8S / "overlays" / "prod")


def routed(path: str, rules: list[Doc]) -> bool:
    """Would the Ingress send this request path anywhere (Kubernetes' Prefix and Exact semantics)?"""
    for rule in rules:
        for route in rule["http"]["paths"]:
            p = route["path"]
            if path == p or (route["pathType"] == "Prefix" and path.startswith(p.rstrip("/") + "/")):
                return True
    return False


def test_the_ingress_serves_the_edge_over_tls_from_cert_manager(prod: list[Doc]) -> None:
    (ingress,) = by_kind(prod, "Ingress").values()
    assert ingress["apiVersion"] == "networking.k8s.io/v1" and ingress["metadata"]["namespace"] == "chatmesh"
    annotations = ingress["metadata"]["annotations"]
    assert annotations["cert-manager.io/cluster-issuer"]  # cert-manager makes tls[].secretName from it
    hosts = [rule["host"] for rule in ingress["spec"]["rules"]]
    (tls,) = ingress["spec"]["tls"]
    assert tls["hosts"] == hosts and tls["secretName"]
    assert all(host.endswith(".example.com") for host in hosts), "a placeholder, for the platform to replace"
    services = by_kind(prod, "Service")
    for rule in ingress["spec"]["rules"]:
        for route in rule["http"]["paths"]:
            backend = route["backend"]["service"]
            assert backend["name"] == "edge"
            assert backend["port"]["name"] in [p["name"] for p in services["edge"]["spec"]["ports"]]


def test_websockets_outlive_nginx_default_timeouts(prod: list[Doc]) -> None:
    """ingress-nginx closes a proxied connection idle for proxy-read/send-timeout (default 60 s): an
    hour each way, far above the edge's WebSocket ping interval (CHAT_WS_PING_INTERVAL_S as the prod
    overlay sets it, or its default)."""
    annotations = by_kind(prod, "Ingress")["edge"]["metadata"]["annotations"]
    ping = Settings.from_env(config_of(prod)).ws_ping_interval_s
    assert ping > 0
    for key in ("nginx.ingress.kubernetes.io/proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout"):
        assert int(annotations[key]) >= 3600 > 60 * ping


def test_the_ingress_routes_the_public_api_and_nothing_internal(prod: list[Doc], keyring: Path) -> None:
    from services.edge.app import create_app

    rules = by_kind(prod, "Ingress")["edge"]["spec"]["rules"]
    app = create_app(Settings.from_env({"CHAT_JWT_SECRET": "x", **keyring_env(keyring, "edge", verifies=False)}))
    served = {getattr(r, "path", "") for r in app.routes}
    for path in ("/api/conversations", "/api/messages/abc", "/ws", "/openapi.json"):
        assert routed(path, rules), path
    for path in ("/metrics", "/healthz", "/readyz", "/dev/token", "/", "/index.html"):
        assert not routed(path, rules), f"{path} must not be reachable from the internet"
    for rule in rules:
        for route in rule["http"]["paths"]:
            assert any(s == route["path"] or s.startswith(route["path"] + "/") for s in served), route


def test_prod_verifies_users_with_an_identity_provider_not_a_shared_secret(prod: list[Doc]) -> None:
    config = config_of(prod)
    for key in (
        "CHAT_JWT_JWKS_URL",
        "CHAT_JWT_ISSUER",
        "CHAT_JWT_AUDIENCE",
        "CHAT_CORS_ORIGINS",
        "CHAT_WS_ALLOWED_ORIGINS",
    ):
        assert key in ENV_VARS and config[key], key
    for key in ("CHAT_JWT_JWKS_URL", "CHAT_CORS_ORIGINS", "CHAT_WS_ALLOWED_ORIGINS"):
        assert all(o.startswith("https://") and ".example.com" in o for o in config[key].split(",")), key
    settings = Settings.from_env(config)  # starts without CHAT_JWT_SECRET
    assert settings.jwt_secret == "" and settings.jwt_jwks_url == config["CHAT_JWT_JWKS_URL"]
    assert not any(a.upper().startswith("HS") for a in settings.jwt_algorithms), settings.jwt_algorithms
    assert "*" not in settings.cors_origins + settings.ws_allowed_origins and not settings.dev_login
    # and the guide's Secret for prod carries no HS256 key either
    secret = next(c for c in guide_commands() if ("Secret", "chatmesh-secrets") in created_by(c))
    keys = set(re.findall(r"--from-literal=(\w+)=", secret))
    assert keys == {"CHAT_DATABASE_URL", "CHAT_REDIS_URL"}
