"""deploy/kubernetes: valid against the Kubernetes API schemas, and hardened as the README says."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from partner_gateway.cli import UVICORN_OPTIONS
from tests.deploy.containers import ROOT

MANIFESTS = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes still supported upstream when this was written, and the newest schemas
# the library ships.
VERSIONS = ["1.32.0", kubernetes_validate.latest_version()]
DRAIN_SECONDS = UVICORN_OPTIONS["timeout_graceful_shutdown"]
SECRET_NAMES = (
    "DATABASE_URL",
    "API_KEYS",
    "ENCRYPTION_KEY",
    "USER_ID_KEY",
    "SECRET_KEY",
    "PASSWORD",
    "_SECRET",
)


def _resources() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    documents: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        documents.extend(doc for doc in yaml.safe_load_all((MANIFESTS / name).read_text()) if doc)
    return documents


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in _resources() if doc["kind"] == kind]


def _named(kind: str, name: str) -> dict[str, Any]:
    (found,) = [doc for doc in _of_kind(kind) if doc["metadata"]["name"] == name]
    return found


def _pod_specs() -> list[dict[str, Any]]:
    return [doc["spec"]["template"]["spec"] for doc in _resources() if doc["kind"] in ("Deployment", "Job")]


class TestSchemas:
    def test_the_kustomization_lists_every_manifest(self) -> None:
        listed = set(yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"])
        present = {path.name for path in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
        assert listed == present

    @pytest.mark.parametrize("version", VERSIONS)
    def test_every_manifest_is_valid_in_strict_mode(self, version: str) -> None:
        resources = _resources()
        assert {doc["kind"] for doc in resources} >= {
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "Job",
            "ConfigMap",
            "ServiceAccount",
            "NetworkPolicy",
        }
        for doc in resources:
            kubernetes_validate.validate(doc, version, strict=True)

    def test_a_broken_manifest_is_caught(self) -> None:
        broken = _named("Deployment", "partner-gateway")
        broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/x"
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


class TestApiDeployment:
    def test_probes_are_healthz_and_readyz_on_the_serving_port(self) -> None:
        pod = _named("Deployment", "partner-gateway")["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["ports"] == [{"name": "http", "containerPort": 8000}]
        assert {"name": "PORT", "value": "8000"} in container["env"]

    def test_the_grace_period_covers_pre_stop_and_drain(self) -> None:
        pod = _named("Deployment", "partner-gateway")["spec"]["template"]["spec"]
        pre_stop = int(pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][1])
        assert pod["terminationGracePeriodSeconds"] > pre_stop + DRAIN_SECONDS

    def test_resources_are_requested_and_memory_is_limited(self) -> None:
        for pod in _pod_specs():
            for container in pod["containers"]:
                assert set(container["resources"]["requests"]) == {"cpu", "memory"}
                assert "memory" in container["resources"]["limits"]

    def test_the_service_and_the_budget_select_the_api_pods(self) -> None:
        labels = _named("Deployment", "partner-gateway")["spec"]["template"]["metadata"]["labels"]
        service = _named("Service", "partner-gateway")["spec"]
        budget = _named("PodDisruptionBudget", "partner-gateway")["spec"]
        assert service["selector"].items() <= labels.items()
        assert budget["selector"]["matchLabels"].items() <= labels.items()
        assert service["ports"][0]["targetPort"] == "http"
        assert _named("Deployment", "partner-gateway")["spec"]["replicas"] > budget["maxUnavailable"]


class TestEveryPod:
    def test_runs_as_non_root_with_a_read_only_root_and_no_capabilities(self) -> None:
        for pod in _pod_specs():
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER
            assert pod["automountServiceAccountToken"] is False
            for container in pod["containers"]:
                context = container["securityContext"]
                assert context["readOnlyRootFilesystem"] is True
                assert context["allowPrivilegeEscalation"] is False
                assert context["capabilities"] == {"drop": ["ALL"]}

    def test_secrets_are_referenced_never_inlined(self) -> None:
        assert _of_kind("Secret") == []
        config = _named("ConfigMap", "partner-gateway")["data"]
        assert not [name for name in config if name.endswith(SECRET_NAMES)]
        for pod in _pod_specs():
            for container in pod["containers"]:
                for variable in container.get("env", []):
                    if variable["name"].endswith(SECRET_NAMES):
                        assert variable["valueFrom"]["secretKeyRef"]["name"] == "partner-gateway"

    def test_migrate_runs_as_the_owner_and_purge_loops(self) -> None:
        job = _named("Job", "partner-gateway-migrate")["spec"]["template"]["spec"]
        assert job["containers"][0]["command"] == ["partner-gateway", "migrate"]
        owner = job["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["key"]
        assert owner == "MIGRATE_DATABASE_URL"
        purge = _named("Deployment", "partner-gateway-purge")["spec"]["template"]["spec"]
        assert purge["containers"][0]["command"][:3] == ["partner-gateway", "purge", "--every"]
        reconcile = _named("Deployment", "partner-gateway-reconcile")["spec"]["template"]["spec"]
        assert reconcile["containers"][0]["command"][:3] == ["partner-gateway", "reconcile", "--every"]
