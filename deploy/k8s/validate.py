"""Validate rendered Kubernetes manifests offline; run by validate.sh.

Four checks, all without a cluster:

1. Schema. Core kinds against the Kubernetes JSON schemas shipped by the
   kubernetes-validate package (strict variant: an unknown field is an error);
   custom resources against the openAPIV3Schema of their CRD, made strict the
   same way. The API server would silently prune an unknown field of a custom
   resource, so a typo there must fail here.
2. References the schemas cannot express: selectors that match pods, and
   Services, ports, ConfigMaps and Secrets (including those Strimzi and
   CloudNativePG create from the rendered resources) that exist.
3. PrometheusRule expressions parse as PromQL.
4. Policies of the project: every image pinned by a version tag (never
   `latest`) and a digest; every container with resource requests and a
   memory limit, every Deployment's with liveness and readiness probes;
   every pod hardened (non-root, read-only root filesystem, no capabilities,
   RuntimeDefault seccomp); every Deployment's pods covered by a
   PodDisruptionBudget and by NetworkPolicies for ingress and egress; every
   API Service routed by an HTTPRoute, whose Gateway, listener, backends and
   policies exist; ingest's route hashed on the Authorization header.

Usage: validate.py --crds DIR... --k8s-version 1.30 [--k8s-version 1.37] NAME=FILE...
Exits 1 when any resource is invalid.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import promql_parser
import yaml
from referencing import Registry, Resource

Doc = dict[str, Any]

# Kinds deployed here whose CRD is not among the validated ones, with why.
UNVALIDATED_KINDS = {
    ("barmancloud.cnpg.io", "ObjectStore"): (
        "CRD of the Barman Cloud plugin is not in the CRD folders; "
        "the ObjectStore is checked by the plugin's admission at apply time"
    ),
}

# Secrets created by hand before deploying (README, "Secrets"), with their keys.
MANUAL_SECRETS = {
    "datapolis-operator": {"operator-key"},
    "datapolis-consent-receipts": {"signing-key", "retired-keys"},
    "datapolis-pg-backup-s3": {"ACCESS_KEY_ID", "ACCESS_SECRET_KEY"},
}

# Backends the gateway must reach through a consistent hash on a request
# header, and why. ingest deduplicates record ids in each replica's memory,
# so a producer's retry must reach the replica of its first attempt.
HASHED_BACKENDS = {
    "ingest-api": (
        "Authorization",
        "ingest deduplicates record ids per replica (services/ingest/README.md, Idempotency)",
    ),
}

# cert-manager issues the Secrets of a Gateway's listeners with one of these.
CERT_MANAGER_ANNOTATIONS = ("cert-manager.io/cluster-issuer", "cert-manager.io/issuer")

IMAGE = re.compile(r"^(?P<name>[^@]+?)(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>[^@]+))?$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
OBJECT_META = "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


# --- schemas -----------------------------------------------------------------


def k8s_schema_dir(version: str) -> Path:
    root = Path(str(importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"))
    folder = root / f"v{version}.0-local-strict"
    if not folder.is_dir():
        available = sorted(p.name for p in root.iterdir() if p.name.endswith("-strict"))
        raise SystemExit(f"no Kubernetes {version} schemas; available: {', '.join(available)}")
    return folder


def core_schema_name(api_version: str, kind: str) -> str:
    # apps/v1 -> apps-v1, networking.k8s.io/v1 -> networking-v1, v1 -> v1
    group, _, version = api_version.rpartition("/")
    prefix = f"{group.split('.')[0]}-" if group else ""
    return f"{kind.lower()}-{prefix}{version}.json"


def crd_to_json_schema(node: Any) -> Any:
    """OpenAPI v3, as Kubernetes uses it, to a strict JSON Schema 2020-12."""
    if isinstance(node, list):
        return [crd_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: convert_keyword(key, value) for key, value in node.items()}
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(bound) is True:  # OpenAPI 3.0's boolean form
            out[bound] = out.pop(limit)
    if node.get("x-kubernetes-embedded-resource"):
        for implicit in ("apiVersion", "kind", "metadata"):
            out.setdefault("properties", {}).setdefault(implicit, {})
    strict = not node.get("x-kubernetes-preserve-unknown-fields")
    if strict and out.get("type") == "object" and "properties" in out:
        out.setdefault("additionalProperties", False)
    return out


def convert_keyword(key: str, value: Any) -> Any:
    if key == "properties":
        return {name: crd_to_json_schema(sub) for name, sub in value.items()}
    if key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
        return crd_to_json_schema(value)
    return value


def check(doc: Doc, schema: Doc, registry: Registry[Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    found = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {short(e)}" for e in found]


def short(error: jsonschema.ValidationError) -> str:
    # A oneOf/anyOf failure's own message dumps the whole instance; its best
    # sub-error says what is actually wrong.
    best = jsonschema.exceptions.best_match([error, *error.context]) if error.context else error
    return best.message if len(best.message) < 300 else best.message[:300] + "..."


@dataclass
class Schemas:
    # Kubernetes version -> (schema folder, registry holding its _definitions.json)
    k8s: dict[str, tuple[Path, Registry[Any]]]
    # (group, version, kind) -> JSON schema of a custom resource
    crds: dict[tuple[str, str, str], Doc] = field(default_factory=dict)
    cel_rules: int = 0

    @classmethod
    def load(cls, k8s_versions: list[str], crd_dirs: list[Path]) -> Schemas:
        schemas = cls({})
        for k8s_version in k8s_versions:
            folder = k8s_schema_dir(k8s_version)
            definitions = json.loads((folder / "_definitions.json").read_text())
            registry = Registry().with_resource(
                definitions["$id"], Resource.from_contents(definitions)
            )
            schemas.k8s[k8s_version] = (folder, registry)
        # A custom resource's metadata is checked as the ObjectMeta of the last version.
        object_meta = {"$ref": definitions["$id"] + OBJECT_META}
        for crd_dir in crd_dirs:
            for path in sorted(crd_dir.rglob("*.y*ml")):
                for crd in yaml.safe_load_all(path.read_text()):
                    if crd and crd.get("kind") == "CustomResourceDefinition":
                        schemas.add_crd(crd["spec"], object_meta)
        return schemas

    def add_crd(self, spec: Doc, object_meta: Doc) -> None:
        kind = spec["names"]["kind"]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            raw = version["schema"]["openAPIV3Schema"]
            self.cel_rules += json.dumps(raw).count('"x-kubernetes-validations"')
            schema = crd_to_json_schema(raw)
            schema["properties"]["metadata"] = object_meta
            schema["properties"]["apiVersion"] = {"const": f"{spec['group']}/{version['name']}"}
            schema["properties"]["kind"] = {"const": kind}
            schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind"})
            schema["required"].append("metadata")
            self.crds[(spec["group"], version["name"], kind)] = schema

    def is_custom(self, doc: Doc) -> bool:
        group, _, version = doc["apiVersion"].rpartition("/")
        return (group, version, doc["kind"]) in self.crds

    def errors(self, doc: Doc) -> list[str] | None:
        """Schema errors of ``doc``, or None when no schema knows its kind."""
        group, _, version = doc["apiVersion"].rpartition("/")
        if self.is_custom(doc):
            registry = next(reversed(self.k8s.values()))[1]
            return check(doc, self.crds[(group, version, doc["kind"])], registry)
        errors: list[str] = []
        for k8s_version, (folder, registry) in self.k8s.items():
            path = folder / core_schema_name(doc["apiVersion"], doc["kind"])
            if not path.is_file():
                return None
            schema = json.loads(path.read_text())
            errors += [f"[Kubernetes {k8s_version}] {e}" for e in check(doc, schema, registry)]
        return errors


# --- references --------------------------------------------------------------


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against labels."""
    if not matches(selector.get("matchLabels") or {}, labels):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        if operator == "In" and labels.get(key) not in (values or []):
            return False
        if operator == "NotIn" and present and labels[key] in (values or []):
            return False
        if (operator == "Exists") != present and operator in ("Exists", "DoesNotExist"):
            return False
    return True


def labels_of(doc: Doc) -> dict[str, str]:
    return doc["metadata"].get("labels") or {}


def operator_secrets(docs: list[Doc]) -> dict[str, set[str]]:
    """Secrets Strimzi and CloudNativePG create from the rendered resources."""
    made: dict[str, set[str]] = {}
    for doc in docs:
        name, kind = doc["metadata"]["name"], doc["kind"]
        if kind == "KafkaUser":
            made[name] = {"password", "sasl.jaas.config"}
        elif kind == "Kafka":
            made[f"{name}-cluster-ca-cert"] = {"ca.crt", "ca.p12", "ca.password"}
        elif kind == "Cluster" and doc["apiVersion"].startswith("postgresql.cnpg.io/"):
            made[f"{name}-app"] = {
                *("username", "user", "password", "host", "port", "dbname", "pgpass"),
                *("uri", "fqdn-uri", "jdbc-uri", "fqdn-jdbc-uri"),
            }
            made[f"{name}-ca"] = {"ca.crt", "ca.key"}
        elif kind == "Gateway" and any(
            a in (doc["metadata"].get("annotations") or {}) for a in CERT_MANAGER_ANNOTATIONS
        ):
            for listener in doc["spec"].get("listeners", []):
                for ref in (listener.get("tls") or {}).get("certificateRefs", []):
                    made[ref["name"]] = {"tls.crt", "tls.key"}
    return made


@dataclass
class Rendered:
    """One rendered overlay, indexed for the reference checks."""

    docs: list[Doc]
    by_kind: dict[str, dict[str, Doc]] = field(default_factory=dict)
    configmaps: dict[str, set[str]] = field(default_factory=dict)
    secrets: dict[str, set[str]] = field(default_factory=dict)
    pod_templates: list[Doc] = field(default_factory=list)
    # HTTPRoute name -> the Service names of its backends
    route_backends: dict[str, set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for doc in self.docs:
            self.by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
            data = {**(doc.get("data") or {}), **(doc.get("stringData") or {})}
            if doc["kind"] == "ConfigMap":
                self.configmaps[doc["metadata"]["name"]] = set(data)
            elif doc["kind"] == "Secret":
                self.secrets[doc["metadata"]["name"]] = set(data)
            elif doc["kind"] in WORKLOAD_KINDS:
                self.pod_templates.append(doc["spec"]["template"])
            elif doc["kind"] == "HTTPRoute":
                self.route_backends[doc["metadata"]["name"]] = {
                    ref["name"]
                    for rule in doc["spec"].get("rules", [])
                    for ref in rule.get("backendRefs", [])
                    if ref.get("kind", "Service") == "Service" and not ref.get("group")
                }
        self.secrets |= operator_secrets(self.docs) | MANUAL_SECRETS

    def services(self) -> dict[str, Doc]:
        return self.by_kind.get("Service", {})

    def of_kind(self, kind: str) -> list[Doc]:
        return list(self.by_kind.get(kind, {}).values())

    def selects_pods(self, selector: dict[str, str]) -> bool:
        return any(matches(selector, labels_of(t)) for t in self.pod_templates)

    def container_ports(self, selector: dict[str, str]) -> set[str]:
        return {
            port.get("name", "")
            for template in self.pod_templates
            if matches(selector, labels_of(template))
            for container in template["spec"]["containers"]
            for port in container.get("ports", [])
        }


Check = Callable[[Doc, Rendered], Iterator[str]]


def check_name(doc: Doc, _: Rendered) -> Iterator[str]:
    name, kind = doc["metadata"]["name"], doc["kind"]
    pattern, limit = (DNS_LABEL, 63) if kind in ("Service", "Namespace") else (DNS_SUBDOMAIN, 253)
    if not pattern.match(name) or len(name) > limit:
        yield f"metadata.name {name!r} is not a valid {kind} name"


def check_workload(doc: Doc, rendered: Rendered) -> Iterator[str]:
    template = doc["spec"]["template"]
    selector = doc["spec"].get("selector", {}).get("matchLabels", {})
    if doc["kind"] == "Deployment" and not matches(selector, labels_of(template)):
        yield "spec.selector does not match the pod template's labels"
    pod = template["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for container in pod.get("initContainers", []) + pod["containers"]:
        yield from check_container(container, set(volumes), rendered)
        yield from check_image(container)
        yield from check_resources(container)
        yield from check_hardening(pod, container)
    if doc["kind"] == "Deployment":
        for container in pod["containers"]:
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in container:
                    yield f"container {container['name']} has no {probe}"
        yield from check_coverage(labels_of(template), rendered)
    for volume in volumes.values():
        if "secret" in volume:
            name = volume["secret"]["secretName"]
            if name not in rendered.secrets:
                yield f"volume {volume['name']}: secret {name!r} is neither rendered nor made"
            for item in volume["secret"].get("items", []):
                if item["key"] not in rendered.secrets.get(name, set()):
                    yield f"volume {volume['name']}: secret {name!r} has no key {item['key']!r}"


def check_image(container: Doc) -> Iterator[str]:
    """Pinned: a version tag (the release, readable) and a digest (the one
    image that tag meant when it was pushed). kustomize renders both from an
    overlay's `images:` as name:tag@sha256:..."""
    image = container.get("image", "")
    found = IMAGE.match(image)
    where = f"container {container['name']}: image {image!r}"
    if not found or not found["tag"] or found["tag"] == "latest":
        yield f"{where} has no version tag (never latest): set newTag in the overlay's images"
    if not found or not found["digest"] or not DIGEST.match(found["digest"]):
        yield f"{where} has no sha256 digest: set digest in the overlay's images"


def check_resources(container: Doc) -> Iterator[str]:
    resources = container.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    missing = [f"requests.{r}" for r in ("cpu", "memory") if r not in requests]
    missing += ["limits.memory"] if "memory" not in limits else []
    if missing:
        yield f"container {container['name']} has no resources {', '.join(missing)}"


def check_hardening(pod: Doc, container: Doc) -> Iterator[str]:
    """The pod meets Pod Security `restricted`, and the image's read-only
    root filesystem is enforced (writes go to emptyDir volumes)."""
    pod_context = pod.get("securityContext") or {}
    context = container.get("securityContext") or {}

    def setting(key: str) -> Any:
        return context.get(key, pod_context.get(key))

    where = f"container {container['name']}"
    if setting("runAsNonRoot") is not True:
        yield f"{where}: runAsNonRoot is not true"
    if setting("runAsUser") == 0:
        yield f"{where}: runs as uid 0"
    if (setting("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        yield f"{where}: seccompProfile is not RuntimeDefault"
    if context.get("allowPrivilegeEscalation") is not False:
        yield f"{where}: allowPrivilegeEscalation is not false"
    if context.get("readOnlyRootFilesystem") is not True:
        yield f"{where}: readOnlyRootFilesystem is not true"
    if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
        yield f"{where}: capabilities do not drop ALL"


def check_coverage(labels: dict[str, str], rendered: Rendered) -> Iterator[str]:
    """A Deployment's pods keep a replica through node drains (a PDB) and are
    inside the network policies, both ways."""
    budgets = rendered.of_kind("PodDisruptionBudget")
    if not any(selects(budget["spec"]["selector"], labels) for budget in budgets):
        yield "no PodDisruptionBudget selects its pods"
    policies = [
        policy
        for policy in rendered.of_kind("NetworkPolicy")
        if selects(policy["spec"]["podSelector"], labels)
    ]
    for direction in ("Ingress", "Egress"):
        if not any(direction in p["spec"].get("policyTypes", ["Ingress"]) for p in policies):
            yield f"no NetworkPolicy of type {direction} selects its pods"


def check_container(container: Doc, volumes: set[str], rendered: Rendered) -> Iterator[str]:
    where = f"container {container['name']}"
    if not container.get("image"):
        yield f"{where} has no image"
    for source in container.get("envFrom", []):
        is_configmap = "configMapRef" in source
        ref = source["configMapRef"] if is_configmap else source["secretRef"]
        known = rendered.configmaps if is_configmap else rendered.secrets
        if ref["name"] not in known and not ref.get("optional"):
            yield f"{where}: envFrom {ref['name']!r} is neither rendered nor made by operators"
    for env in container.get("env", []):
        yield from check_env_ref(env, rendered, where)
    for mount in container.get("volumeMounts", []):
        if mount["name"] not in volumes:
            yield f"{where} mounts undeclared volume {mount['name']!r}"


def check_env_ref(env: Doc, rendered: Rendered, where: str) -> Iterator[str]:
    value_from = env.get("valueFrom") or {}
    for ref_kind, known in (
        ("configMapKeyRef", rendered.configmaps),
        ("secretKeyRef", rendered.secrets),
    ):
        ref = value_from.get(ref_kind)
        if ref and not ref.get("optional") and ref["key"] not in known.get(ref["name"], set()):
            yield f"{where}: env {env['name']}: {ref['name']!r} has no key {ref['key']!r}"


def check_service(doc: Doc, rendered: Rendered) -> Iterator[str]:
    selector = doc["spec"].get("selector")
    if not selector:
        return
    if not rendered.selects_pods(selector):
        yield f"selector {selector} matches no pod template"
    ports = rendered.container_ports(selector)
    for port in doc["spec"]["ports"]:
        target = port.get("targetPort")
        if isinstance(target, str) and target not in ports:
            yield f"targetPort {target!r} is no container port of the selected pods"


def check_pdb(doc: Doc, rendered: Rendered) -> Iterator[str]:
    selector = doc["spec"]["selector"]
    if not any(selects(selector, labels_of(t)) for t in rendered.pod_templates):
        yield f"selector {selector} matches no pod template"


def check_hpa(doc: Doc, rendered: Rendered) -> Iterator[str]:
    target = doc["spec"]["scaleTargetRef"]
    workload = rendered.by_kind.get(target["kind"], {}).get(target["name"])
    if workload is None:
        yield f"scaleTargetRef {target['kind']}/{target['name']} is not rendered"
    elif "replicas" in workload["spec"]:
        yield f"{target['name']} sets replicas: every apply would undo the autoscaler's scaling"


def check_gateway(doc: Doc, rendered: Rendered) -> Iterator[str]:
    for listener in doc["spec"]["listeners"]:
        tls = listener.get("tls") or {}
        for ref in tls.get("certificateRefs", []):
            if ref.get("kind", "Secret") == "Secret" and ref["name"] not in rendered.secrets:
                yield (
                    f"listener {listener['name']}: certificate Secret {ref['name']!r} is neither "
                    "rendered nor issued by cert-manager (annotate the Gateway with an issuer)"
                )
        if listener["protocol"] == "HTTPS" and not tls.get("certificateRefs"):
            yield f"listener {listener['name']}: HTTPS without a certificate"


def check_http_route(doc: Doc, rendered: Rendered) -> Iterator[str]:
    gateways = rendered.by_kind.get("Gateway", {})
    for parent in doc["spec"].get("parentRefs", []):
        if parent.get("kind", "Gateway") != "Gateway":
            continue
        gateway = gateways.get(parent["name"])
        if gateway is None:
            yield f"parentRef Gateway {parent['name']!r} is not rendered"
            continue
        listeners = {listener["name"] for listener in gateway["spec"]["listeners"]}
        if parent.get("sectionName") and parent["sectionName"] not in listeners:
            yield f"parentRef: Gateway {parent['name']!r} has no listener {parent['sectionName']!r}"
    for rule in doc["spec"].get("rules", []):
        for ref in rule.get("backendRefs", []):
            if ref.get("kind", "Service") != "Service" or ref.get("group"):
                continue
            service = rendered.services().get(ref["name"])
            if service is None:
                yield f"backendRef Service {ref['name']!r} is not rendered"
            elif ref.get("port") not in {p["port"] for p in service["spec"]["ports"]}:
                yield f"backendRef {ref['name']}:{ref.get('port')} is no port of the Service"
    yield from check_hashing(doc, rendered)


def check_hashing(route: Doc, rendered: Rendered) -> Iterator[str]:
    """HASHED_BACKENDS need a consistent hash on their header at the gateway:
    for Envoy Gateway, a BackendTrafficPolicy on the route. (Another Gateway
    implementation has its own resource for it: README, "Gateway
    implementations"; teach this check that resource when you switch.)"""
    name = route["metadata"]["name"]
    for backend in sorted(rendered.route_backends.get(name, set()) & HASHED_BACKENDS.keys()):
        header, why = HASHED_BACKENDS[backend]
        policies = [
            policy
            for policy in rendered.of_kind("BackendTrafficPolicy")
            if any(
                t.get("kind") == "HTTPRoute" and t.get("name") == name
                for t in policy["spec"].get("targetRefs", [])
            )
        ]
        if not any(hashes_header(policy, header) for policy in policies):
            yield (
                f"backend {backend} needs a consistent hash on the {header} header, as {why}: "
                "no BackendTrafficPolicy targets this route with one"
            )


def hashes_header(policy: Doc, header: str) -> bool:
    balancer = policy["spec"].get("loadBalancer") or {}
    hashing = balancer.get("consistentHash") or {}
    headers = [h.get("name", "") for h in hashing.get("headers") or []]
    headers += [(hashing.get("header") or {}).get("name", "")]
    return balancer.get("type") == "ConsistentHash" and header.lower() in map(str.lower, headers)


def check_policy_targets(doc: Doc, rendered: Rendered) -> Iterator[str]:
    for target in doc["spec"].get("targetRefs", []):
        if target["name"] not in rendered.by_kind.get(target["kind"], {}):
            yield f"targetRef {target['kind']}/{target['name']} is not rendered"


def check_api_routed(doc: Doc, rendered: Rendered) -> Iterator[str]:
    """Every API Service is public through some HTTPRoute."""
    if labels_of(doc).get("app.kubernetes.io/component") != "api":
        return
    name = doc["metadata"]["name"]
    if not any(name in backends for backends in rendered.route_backends.values()):
        yield "an API Service that no HTTPRoute routes to"


def check_service_monitor(doc: Doc, rendered: Rendered) -> Iterator[str]:
    selector = doc["spec"]["selector"].get("matchLabels", {})
    selected = [s for s in rendered.services().values() if matches(selector, labels_of(s))]
    if not selected:
        yield f"selector {selector} matches no Service"
    ports = {p.get("name") for s in selected for p in s["spec"]["ports"]}
    for endpoint in doc["spec"]["endpoints"]:
        if endpoint.get("port") and endpoint["port"] not in ports:
            yield f"endpoint port {endpoint['port']!r} is on none of the selected Services"


def check_prometheus_rule(doc: Doc, _: Rendered) -> Iterator[str]:
    for group in doc["spec"]["groups"]:
        for rule in group["rules"]:
            try:
                promql_parser.parse(rule["expr"])
            except ValueError as exc:
                yield f"rule {rule.get('alert') or rule.get('record')}: bad PromQL: {exc}"


CHECKS: dict[str, list[Check]] = {
    "Deployment": [check_workload],
    "Job": [check_workload],
    "Service": [check_service, check_api_routed],
    "PodDisruptionBudget": [check_pdb],
    "HorizontalPodAutoscaler": [check_hpa],
    "Gateway": [check_gateway],
    "HTTPRoute": [check_http_route],
    "BackendTrafficPolicy": [check_policy_targets],
    "ServiceMonitor": [check_service_monitor],
    "PrometheusRule": [check_prometheus_rule],
}


# --- main --------------------------------------------------------------------


def ident(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata'].get('name', '?')}"


def validate(name: str, path: Path, schemas: Schemas) -> bool:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    rendered = Rendered(docs)
    failures: dict[str, list[str]] = {}
    skipped: list[str] = []
    counts = {"core": 0, "custom": 0}
    for doc in docs:
        unvalidated = UNVALIDATED_KINDS.get((doc["apiVersion"].rpartition("/")[0], doc["kind"]))
        if unvalidated:
            skipped.append(f"{ident(doc)}: {unvalidated}")
            errors: list[str] | None = []
        else:
            errors = schemas.errors(doc)
            counts["custom" if schemas.is_custom(doc) else "core"] += errors is not None
        if errors is None:
            errors = [f"no schema for {doc['apiVersion']} {doc['kind']}"]
        for checker in [check_name, *CHECKS.get(doc["kind"], [])]:
            errors += checker(doc, rendered)
        if errors:
            failures[ident(doc)] = errors

    checked = f"{counts['core']} core + {counts['custom']} custom"
    print(f"{name}: {len(docs)} resources; schema-checked {checked}")
    for line in skipped:
        print(f"  not schema-checked: {line}")
    for resource, problems in sorted(failures.items()):
        print(f"  INVALID {resource}")
        for problem in problems:
            print(f"    - {problem}")
    if not failures:
        print("  all valid")
    return not failures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--crds", type=Path, action="append", required=True, help="CRD folder")
    parser.add_argument("--k8s-version", action="append", required=True, help="e.g. 1.30")
    parser.add_argument("rendered", nargs="+", help="NAME=FILE of a rendered overlay")
    args = parser.parse_args()
    schemas = Schemas.load(args.k8s_version, args.crds)
    kinds = ", ".join(sorted(kind for _, _, kind in schemas.crds))
    print(f"schemas: Kubernetes {', '.join(args.k8s_version)} (strict); CRDs: {kinds}")
    ok = True
    for item in args.rendered:
        name, _, file = item.partition("=")
        ok = validate(name, Path(file), schemas) and ok
    print(f"not checked: {schemas.cel_rules} CEL rules of the CRDs, string formats")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
