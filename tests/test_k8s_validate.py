"""deploy/k8s as CI builds it: every kustomization found there (the base, each overlay, and each overlay
with each component, as an operator composes them) renders with kustomize, and every object it
renders validates strictly (unknown fields refused) against the Kubernetes schemas that the PyPI
package `kubernetes-validate` bundles, so the check runs offline. Objects of kinds Kubernetes itself
does not define (cert-manager's) are skipped by name, each with the reason, and anything else without
a schema fails. And one image tag everywhere: the version in pyproject.toml."""

from __future__ import annotations

import copy
import os
import re
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.test_k8s_support import K8S, ROOT, Doc, by_kind, render

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
        namespace = yaml.safe_load((base / "kustomization.yaml").read_text()).get("namespace")
        (folder / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    **({"namespace": namespace} if namespace else {}),
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
