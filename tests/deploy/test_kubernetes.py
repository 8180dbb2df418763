"""deploy/kubernetes: valid against the Kubernetes API schemas, and hardened as the README says."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest
import yaml

from partner_gateway.cli import UVICORN_OPTIONS
from partner_gateway.config import Settings, file_settings
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
    def test_probes_are_healthz_and_readyz_on_the_probe_port(self) -> None:
        pod = _named("Deployment", "partner-gateway")["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "probes"}
        assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "probes"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "probes"}
        assert container["ports"] == [
            {"name": "http", "containerPort": 8000},
            {"name": "probes", "containerPort": 8081},
        ]
        assert {"name": "PORT", "value": "8000"} in container["env"]
        assert {"name": "PROBE_PORT", "value": "8081"} in container["env"]

    def test_probe_timeouts_exceed_the_database_timeout_plus_a_second(self) -> None:
        config = _named("ConfigMap", "partner-gateway")["data"]
        timeout = float(config.get("DB_TIMEOUT_SECONDS", Settings.model_fields["db_timeout_seconds"].default))
        (container,) = _named("Deployment", "partner-gateway")["spec"]["template"]["spec"]["containers"]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert container[probe]["timeoutSeconds"] > timeout + 1, probe

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

    def test_secrets_come_as_files_from_the_secret_never_as_environment_values(self) -> None:
        for pod in _pod_specs():
            (volume,) = [v for v in pod["volumes"] if "secret" in v]
            assert volume["secret"]["secretName"] == "partner-gateway"
            assert volume["secret"]["defaultMode"] == 0o440  # the group of uid 10001 (fsGroup)
            assert pod["securityContext"]["fsGroup"] == 10001
            files = {item["path"] for item in volume["secret"]["items"]}
            for container in pod["containers"]:
                (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
                assert mount["readOnly"] is True
                for variable in container.get("env", []):
                    assert "valueFrom" not in variable, variable  # no secret in the environment
                    if variable["name"].endswith(SECRET_NAMES):
                        assert variable["name"].endswith("_FILE")
                        directory, _, file = variable["value"].rpartition("/")
                        assert directory == mount["mountPath"]
                        assert file in files

    def test_the_api_gets_every_secret_setting_as_a_file_and_not_the_owners_url(self) -> None:
        pod = _named("Deployment", "partner-gateway")["spec"]["template"]["spec"]
        names = {variable["name"] for variable in pod["containers"][0]["env"]}
        assert {f"{name.upper()}_FILE" for name in file_settings(Settings)} <= names
        (volume,) = pod["volumes"]
        assert "MIGRATE_DATABASE_URL" not in {item["key"] for item in volume["secret"]["items"]}

    def test_migrate_runs_as_the_owner_and_purge_loops(self) -> None:
        job = _named("Job", "partner-gateway-migrate")["spec"]["template"]["spec"]
        assert job["containers"][0]["command"] == ["partner-gateway", "migrate"]
        assert job["volumes"][0]["secret"]["items"] == [
            {"key": "MIGRATE_DATABASE_URL", "path": "DATABASE_URL"}
        ]
        purge = _named("Deployment", "partner-gateway-purge")["spec"]["template"]["spec"]
        assert purge["containers"][0]["command"][:3] == ["partner-gateway", "purge", "--every"]
        assert purge["volumes"][0]["secret"]["items"] == [{"key": "DATABASE_URL", "path": "DATABASE_URL"}]
        reconcile = _named("Deployment", "partner-gateway-reconcile")["spec"]["template"]["spec"]
        assert reconcile["containers"][0]["command"][:3] == ["partner-gateway", "reconcile", "--every"]

    def test_migrate_sees_the_services_pooler_and_timeout(self) -> None:
        config = _named("ConfigMap", "partner-gateway")["data"]
        assert "DB_POOLER" in config
        for pod in _pod_specs():
            (container,) = pod["containers"]
            assert {"configMapRef": {"name": "partner-gateway"}} in container["envFrom"]


def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    return bool(policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items())


def _rules(labels: dict[str, str], direction: str) -> list[dict[str, Any]]:
    return [
        rule
        for policy in _of_kind("NetworkPolicy")
        if _selects(policy, labels)
        for rule in policy["spec"].get(direction, [])
    ]


def _ports(rules: list[dict[str, Any]]) -> set[tuple[str, Any]]:
    return {(port.get("protocol", "TCP"), port["port"]) for rule in rules for port in rule.get("ports", [])}


# A pod the wallet task adds (reconcile) is covered by the shared label, with no policy change.
LATER_POD = {"app.kubernetes.io/name": "partner-gateway", "app.kubernetes.io/component": "reconcile"}


class TestNetworkPolicy:
    def _pods(self) -> list[dict[str, str]]:
        templates = [doc["spec"]["template"] for doc in _resources() if doc["kind"] in ("Deployment", "Job")]
        return [template["metadata"]["labels"] for template in templates] + [LATER_POD]

    def test_every_pod_is_isolated_both_ways(self) -> None:
        for labels in self._pods():
            types = {
                t for p in _of_kind("NetworkPolicy") if _selects(p, labels) for t in p["spec"]["policyTypes"]
            }
            assert types == {"Ingress", "Egress"}, labels

    def test_every_pod_reaches_dns_the_database_and_the_wallet(self) -> None:
        for labels in self._pods():
            ports = _ports(_rules(labels, "egress"))
            assert {("UDP", 53), ("TCP", 53), ("TCP", 5432), ("TCP", 6432), ("TCP", 443)} <= ports, labels

    def test_only_the_api_reaches_bidpaw_and_takes_traffic_from_the_proxy(self) -> None:
        api = _named("Deployment", "partner-gateway")["spec"]["template"]["metadata"]["labels"]
        public = [rule for rule in _rules(api, "egress") for peer in rule["to"] if "ipBlock" in peer]
        assert public
        assert all(rule["ports"] == [{"protocol": "TCP", "port": 443}] for rule in public)
        for labels in self._pods():
            if labels != api:
                assert not [
                    peer for rule in _rules(labels, "egress") for peer in rule["to"] if "ipBlock" in peer
                ]
                assert "http" not in {port for _, port in _ports(_rules(labels, "ingress"))}

    def test_the_proxy_may_be_in_any_namespace_as_the_comment_says(self) -> None:
        api = _named("Deployment", "partner-gateway")["spec"]["template"]["metadata"]["labels"]
        peers = [peer for rule in _rules(api, "ingress") for peer in rule["from"]]
        (proxy,) = [peer for peer in peers if "podSelector" in peer]
        assert proxy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "partner-gateway-proxy"}
        assert proxy["namespaceSelector"] == {}


class TestImages:
    def test_the_example_pins_each_image_by_digest(self) -> None:
        images = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["images"]
        assert images
        for image in images:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", image["digest"]), image
            assert "newTag" not in image
        for doc in _resources():
            if doc["kind"] in ("Deployment", "Job"):
                names = {c["image"] for c in doc["spec"]["template"]["spec"]["containers"]}
                assert names <= {image["name"] for image in images}
