"""deploy/k8s as CI builds it: every kustomization found there (the base, each overlay, and each overlay
with each component, as an operator composes them) renders with kustomize, and every object it
renders validates strictly (unknown fields refused) against the Kubernetes schemas that the PyPI
package `kubernetes-validate` bundles, so the check runs offline. Objects of kinds Kubernetes itself
does not define (cert-manager's) are skipped by name, each with the reason, and anything else without
a schema fails. And one image tag everywhere: the version in pyproject.toml."""

from __future__ import annotations

import base64
import copy
import os
import re
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from chatmesh.config import Settings
from chatmesh_tools.push_worker import WorkerOptions
from tests.test_k8s_deploy import created_by, guide_commands, needs
from tests.test_k8s_support import K8S, ROOT, Doc, by_kind, env_of, main_container, render

# The Kubernetes versions the manifests must be valid for: the newest the validator knows, and the
# oldest minor still commonly offered by managed clusters.
K8S_VERSIONS = (kubernetes_validate.utils.latest_version(), "1.33.0")

# Kinds from CRDs: kubernetes-validate has no schema for them (SchemaNotFoundError). Skipped here on
# purpose; tests/test_k8s_security.py checks what the mTLS component's ones say.
NOT_KUBERNETES = {
    ("cert-manager.io/v1", "Issuer"): "a cert-manager CRD (components/mtls), not a Kubernetes API kind",
    ("cert-manager.io/v1", "Certificate"): "a cert-manager CRD (components/mtls), not a Kubernetes API kind",
}


def _kind_of(folder: Path) -> str:
    return str(yaml.safe_load((folder / "kustomization.yaml").read_text())["kind"])


def kustomizations() -> dict[str, Path]:
    return {
        p.parent.relative_to(K8S).as_posix(): p.parent
        for p in sorted(K8S.rglob("kustomization.yaml"))
        if _kind_of(p.parent) == "Kustomization"
    }


def components() -> dict[str, Path]:
    return {
        p.parent.relative_to(K8S).as_posix(): p.parent
        for p in sorted(K8S.rglob("kustomization.yaml"))
        if _kind_of(p.parent) == "Component"
    }


def compositions() -> list[str]:
    """Every kustomization alone, and every overlay with every component."""
    overlays = [name for name in kustomizations() if name.startswith("overlays/")]
    return [*kustomizations(), *(f"{o}+{c}" for o in overlays for c in components())]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Doc]]:
    out: dict[str, list[Doc]] = {}
    for name in compositions():
        overlay, _, component = name.partition("+")
        if not component:
            out[name] = render(kustomizations()[name])
            continue
        folder = tmp_path_factory.mktemp(name.replace("/", "-").replace("+", "-"))
        base = kustomizations()[overlay]
        # In the overlay's own `components:`, the overlay's namespace and images apply to the
        # component's objects too (a component's Deployment names the image `chatmesh`): so here.
        own = yaml.safe_load((base / "kustomization.yaml").read_text())
        (folder / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    **{key: own[key] for key in ("namespace", "images") if key in own},
                    "resources": [os.path.relpath(base, folder)],
                    "components": [os.path.relpath(components()[component], folder)],
                }
            )
        )
        out[name] = render(folder)
    return out


def test_what_ci_builds_is_every_overlay_and_component() -> None:
    assert {"base", "overlays/dev", "overlays/prod"} <= set(kustomizations())
    assert "components/mtls" in components()
    assert "overlays/prod+components/mtls" in compositions()
    assert {"overlays/dev+components/push-worker", "overlays/prod+components/push-worker"} <= set(compositions())


@pytest.mark.parametrize("name", compositions())
def test_every_rendered_object_validates_strictly(rendered: dict[str, list[Doc]], name: str) -> None:
    skipped = set()
    for doc in rendered[name]:
        what = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
        if (doc["apiVersion"], doc["kind"]) in NOT_KUBERNETES:
            skipped.add((doc["apiVersion"], doc["kind"]))
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.utils.SchemaNotFoundError:
                pytest.fail(
                    f"{what}: no Kubernetes {version} schema for {doc['apiVersion']} {doc['kind']}; "
                    "if it is a CRD's, name it in NOT_KUBERNETES with the reason"
                )
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{what} is invalid for Kubernetes {version}: {exc.message}")
    assert bool(skipped) == name.endswith("components/mtls"), (name, skipped)


def test_strict_validation_refuses_an_unknown_field(rendered: dict[str, list[Doc]]) -> None:
    """The check above has teeth: a misspelt field (in a Deployment, and in the Ingress) fails it."""
    deployment = copy.deepcopy(by_kind(rendered["base"], "Deployment")["edge"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    ingress = copy.deepcopy(by_kind(rendered["overlays/prod"], "Ingress")["edge"])
    ingress["spec"]["rules"][0]["http"]["paths"][0]["pathtype"] = "Prefix"
    for doc in (deployment, ingress):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(doc, K8S_VERSIONS[0], strict=True)
    with pytest.raises(kubernetes_validate.utils.SchemaNotFoundError):  # and a CRD kind is not silently valid
        kubernetes_validate.validate(
            {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "x"}, "spec": {}},
            K8S_VERSIONS[0],
            strict=True,
        )


# --- the push-worker component -------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/prod"])
def test_the_push_worker_runs_as_push_with_what_it_reads(rendered: dict[str, list[Doc]], overlay: str) -> None:
    """`chatmesh push-worker --webhook URL` as the identity `push`: its own key Secret, the webhook
    secret and URL, each object it reads rendered or made by a documented command (prod's Secrets),
    message admitting it on gRPC; and the settings it renders to start the worker."""
    docs = rendered[f"{overlay}+components/push-worker"]
    deployment = by_kind(docs, "Deployment")["push-worker"]
    container = main_container(deployment)
    env = env_of(container)
    args = container["args"]
    assert args[0] == "push-worker" and args[args.index("--webhook") + 1] == "$(CHAT_PUSH_WEBHOOK_URL)"
    assert all(var in env for var in re.findall(r"\$\((\w+)\)", " ".join(args))), args
    assert "ports" not in container and not {"readinessProbe", "livenessProbe", "startupProbe"} & set(container)
    present = {(d["kind"], d["metadata"]["name"]) for d in docs}
    documented = {ref for command in guide_commands() for ref in created_by(command)}
    assert needs(deployment) - present - documented == set(), overlay
    names = {ref[1] if ref in documented else ref[1].rsplit("-", 1)[0] for ref in needs(deployment)}
    assert {"chatmesh-service-key-push", "chatmesh-push-webhook", "chatmesh-push-worker"} <= names, names
    spec = deployment["spec"]["template"]["spec"]
    (key,) = [v for v in spec["volumes"] if "secret" in v]
    assert key["secret"]["secretName"].startswith("chatmesh-service-key-push")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["CHAT_SERVICE_KEY_FILE"]["value"] == f"{mounts[key['name']]}/service.key"
    assert "CHAT_SERVICE_PUBLIC_KEYS" not in env  # it answers no calls
    grpc_rule = by_kind(docs, "NetworkPolicy")["chatmesh-message"]["spec"]["ingress"][0]
    assert grpc_rule["ports"][0]["port"] == "grpc"
    assert "push-worker" in grpc_rule["from"][0]["podSelector"]["matchExpressions"][0]["values"]
    assert deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "chatmesh"
    if overlay == "overlays/dev":  # the dev overlay renders all it reads: the worker starts on it
        values = _resolved_env(docs, container)
        settings = Settings.from_env({"CHAT_JWT_SECRET": "-", **values})  # as `chatmesh push-worker` does
        assert settings.message_target.startswith("dns:///message-headless:") and settings.push_webhook_secret
        url = values["CHAT_PUSH_WEBHOOK_URL"]
        assert WorkerOptions.of(settings, url, group="push", consumer="p", concurrency=1, timeout_s=1).webhook == url


def _resolved_env(docs: list[Doc], container: Doc) -> dict[str, str]:
    """The container's environment as kubelet builds it from the rendered ConfigMaps and Secrets."""
    data = {(d["kind"], d["metadata"]["name"]): d.get("data", {}) for d in docs if d["kind"] in ("ConfigMap", "Secret")}
    decode = {"ConfigMap": lambda v: v, "Secret": lambda v: base64.b64decode(v).decode()}
    out: dict[str, str] = {}
    for source in container.get("envFrom", []):
        out.update(data[("ConfigMap", source["configMapRef"]["name"])])
    for env in container.get("env", []):
        if "value" in env:
            out[env["name"]] = env["value"]
        for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
            if ref := env.get("valueFrom", {}).get(key):
                out[env["name"]] = decode[kind](data[(kind, ref["name"])][ref["key"]])
    return out


# --- one image tag --------------------------------------------------------------------------------

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# An image reference to chatmesh with a literal tag (`chatmesh:0.1.0`, `registry.example.com/chatmesh:dev`);
# not `chatmesh:<service>` (a token subject), nor `//chatmesh:password@host` (a URL's credentials).
IMAGE = re.compile(r"(?<![\w/-])((?:[\w.-]+(?::\d+)?/)*)chatmesh:(\w[\w.-]*)(?![\w.@-])")


def image_text_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "Dockerfile", *(ROOT / "docs").glob("*.md")]
    files += [p for p in (ROOT / "deploy").rglob("*") if p.suffix in (".md", ".yaml", ".yml")]
    return files


def test_every_image_tag_is_the_release_version(rendered: dict[str, list[Doc]]) -> None:
    for name, docs in rendered.items():
        for doc in docs:
            spec = doc.get("spec", {}).get("template", {}).get("spec", {})
            for container in spec.get("initContainers", []) + spec.get("containers", []):
                image = container["image"]
                if image.rsplit(":", 1)[0].endswith("chatmesh"):
                    assert image.rsplit(":", 1)[1] == VERSION, f"{name}: {doc['metadata']['name']} runs {image}"
    for folder in kustomizations().values():
        for entry in yaml.safe_load((folder / "kustomization.yaml").read_text()).get("images", []):
            if entry["name"] == "chatmesh":
                assert str(entry["newTag"]) == VERSION, folder
    found = 0
    for path in image_text_files():
        for match in IMAGE.finditer(path.read_text()):
            found += 1
            assert match.group(2) == VERSION, f"{path.relative_to(ROOT)}: {match.group(0)} (the version is {VERSION})"
    assert found >= 4  # the deploy README's build, push and laptop commands, the Dockerfile's example


def test_the_image_pattern_finds_tags_and_nothing_else() -> None:
    found = [
        m.group(0)
        for m in IMAGE.finditer(
            "docker build -t registry.example.com/chatmesh:0.2.0 . kind load docker-image chatmesh:dev\n"
            "postgresql://chatmesh:secret@postgres:5432/chatmesh sub chatmesh:<service> `chatmesh:0.1.0`"
        )
    ]
    assert found == ["registry.example.com/chatmesh:0.2.0", "chatmesh:dev", "chatmesh:0.1.0"]
