"""The Kubernetes manifests give each service the Kafka settings its code
reads: every ``<PREFIX>_KAFKA__*`` name they set is a field of
``KafkaSettings`` (pydantic-settings ignores unknown names, so a typo would
silently leave a client on PLAINTEXT), and the settings they add up to reach
the SASL_SSL listener as the service's KafkaUser, over TLS, in every client:
aiokafka's options and faust's credentials alike."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import yaml

from datapolis_catalog.settings import CatalogSettings
from datapolis_consent.settings import ConsentSettings
from datapolis_ingest.settings import IngestSettings
from datapolis_notify.settings import NotifySettings
from datapolis_shared.kafka.options import client_options
from datapolis_shared.settings import KafkaSettings, ServiceSettings
from datapolis_shared.streams import broker_options
from tests.infra import REPO

K8S = REPO / "deploy/k8s"
SERVICES: dict[str, type[ServiceSettings]] = {
    "catalog": CatalogSettings,
    "consent": ConsentSettings,
    "ingest": IngestSettings,
    "notify": NotifySettings,
}


def _config_env(service: str) -> dict[str, str]:
    pairs = {}
    for line in (K8S / f"base/apps/{service}/config.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            pairs[name] = value
    return pairs


def _containers(doc: Any) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    pod = spec.get("template", spec.get("jobTemplate", {}).get("spec", {}).get("template", {}))
    containers = pod.get("spec", {}).get("containers", [])
    return list(containers) + list(pod.get("spec", {}).get("initContainers", []))


def _workload_env(service: str) -> dict[str, str]:
    """Env of the service's containers; a value from a Secret becomes a
    placeholder long and unusual enough to pass the production checks."""
    env = {}
    for path in sorted((K8S / f"base/apps/{service}").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            for container in _containers(doc or {}):
                for var in container.get("env", []):
                    if var.get("valueFrom", {}).get("secretKeyRef", {}).get("optional"):
                        continue  # an optional key may be absent: the default applies
                    env[var["name"]] = var.get("value", "from-a-secret-" + "x" * 32)
    return env


def _overlay_literals() -> list[str]:
    names = []
    for path in sorted((K8S / "overlays").glob("*/kustomization.yaml")):
        doc = yaml.safe_load(path.read_text())
        for generator in doc.get("configMapGenerator", []):
            names += [literal.partition("=")[0] for literal in generator.get("literals", [])]
    return names


def _kafka_names(names: list[str]) -> list[str]:
    return [n.partition("_KAFKA__")[2].lower() for n in names if "_KAFKA__" in n]


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_kafka_name_in_the_manifests_is_a_setting(service: str) -> None:
    names = [*_config_env(service), *_workload_env(service)]
    names += [n for n in _overlay_literals() if n.startswith(f"{service.upper()}_")]
    unknown = set(_kafka_names(names)) - set(KafkaSettings.model_fields)
    assert not unknown, f"{service}: not KafkaSettings fields: {sorted(unknown)}"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_the_manifests_settings_reach_the_sasl_ssl_listener_in_every_client(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {**_config_env(service), **_workload_env(service)}.items():
        monkeypatch.setenv(name, value)
    kafka = SERVICES[service]().kafka

    listener = _strimzi_listener()
    assert kafka.bootstrap_servers == f"datapolis-kafka-bootstrap:{listener['port']}"
    assert kafka.security_protocol == "SASL_SSL"
    assert kafka.sasl_mechanism == listener["authentication"]["type"].upper()
    assert kafka.sasl_username in _kafka_users()
    assert kafka.sasl_password is not None

    options = client_options(kafka)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == kafka.sasl_username
    assert isinstance(options["ssl_context"], ssl.SSLContext)

    faust = broker_options(kafka)
    credentials = faust["broker_credentials"]
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.username == kafka.sasl_username
    assert credentials.password == kafka.sasl_password.get_secret_value()
    assert credentials.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert faust["broker"] == f"kafka://{kafka.bootstrap_servers}"


def test_every_deployment_trusts_the_cluster_ca() -> None:
    """No ``KAFKA__SSL_CAFILE`` is set: the TLS context comes from the system
    trust store, which the kafka-client patch extends with the cluster CA
    through SSL_CERT_FILE."""
    patch = yaml.safe_load((K8S / "base/patches/kafka-client.yaml").read_text())
    (app,) = [c for c in patch["spec"]["template"]["spec"]["containers"] if c["name"] == "app"]
    env = {e["name"]: e.get("value") for e in app["env"]}
    mounts = {m["name"]: m["mountPath"] for m in app["volumeMounts"]}
    assert Path(env["SSL_CERT_FILE"]).parent == Path(mounts["ca-bundle"])
    volumes = {v["name"]: v for v in patch["spec"]["template"]["spec"]["volumes"]}
    assert volumes["kafka-ca"]["secret"]["secretName"] == "datapolis-cluster-ca-cert"


def _strimzi_listener() -> dict[str, Any]:
    doc = yaml.safe_load((K8S / "base/kafka/kafka.yaml").read_text())
    (listener,) = doc["spec"]["kafka"]["listeners"]
    return dict(listener)


def _kafka_users() -> set[str]:
    docs = yaml.safe_load_all((K8S / "base/kafka/users.yaml").read_text())
    return {d["metadata"]["name"] for d in docs if d and d.get("kind") == "KafkaUser"}
