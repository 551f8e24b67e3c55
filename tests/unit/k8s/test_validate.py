"""`make k8s-validate` refuses manifests that break a policy, naming the
problem, and passes the real overlays.

It runs ``deploy/k8s/validate.sh`` itself (which installs its pinned tools
into a cache folder on first use) on the overlays and on the broken ones of
``tests/fixtures/k8s-broken/``: each is the dev overlay with one thing wrong,
and must be refused with the sentence that says what, while the overlays
pass."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

import pytest

from tests.infra import REPO

# The first run on a machine installs kustomize (go install) and the Python
# tools, which may take minutes; later runs take seconds.
pytestmark = pytest.mark.timeout(900)

VALIDATE = REPO / "deploy/k8s/validate.sh"
BROKEN = REPO / "tests/fixtures/k8s-broken"

# fixture folder -> what the validator must say: (resource refused, problem)
EXPECTED: dict[str, list[tuple[str, str]]] = {
    "image-latest": [
        (
            "Deployment/catalog-api",
            "image 'ghcr.io/datapolis/catalog:latest' has no version tag (never latest)",
        )
    ],
    "image-without-digest": [
        ("Deployment/ingest-worker", "image 'ghcr.io/datapolis/ingest:0.1.0' has no sha256 digest")
    ],
    "deployment-without-probes": [
        ("Deployment/notify-worker", "container app has no livenessProbe"),
        ("Deployment/notify-worker", "container app has no readinessProbe"),
    ],
    "deployment-without-resources": [
        (
            "Deployment/consent-api",
            "container app has no resources requests.cpu, requests.memory, limits.memory",
        )
    ],
    "worker-without-pdb": [
        ("Deployment/catalog-worker", "no PodDisruptionBudget selects its pods"),
    ],
    "worker-without-network-policy": [
        ("Deployment/reports-worker", "no NetworkPolicy of type Egress selects its pods")
    ],
    "pod-runs-as-root": [
        ("Deployment/ingest-api", "container app: runAsNonRoot is not true"),
        ("Deployment/ingest-api", "container app: readOnlyRootFilesystem is not true"),
    ],
    "route-violates-crd": [
        ("HTTPRoute/ingest", "spec.rules.0.timeouts.request: '1 minute' does not match"),
        ("Gateway/datapolis", "spec.listeners.0: Additional properties are not allowed"),
        (
            "BackendTrafficPolicy/ingest-by-api-key",
            "spec.loadBalancer.consistentHash.type: 'Header-Authorization' is not one of",
        ),
    ],
    "route-to-missing-service": [
        ("HTTPRoute/catalog", "backendRef Service 'catalog' is not rendered")
    ],
    "ingest-without-hashing": [
        (
            "HTTPRoute/ingest",
            "backend ingest-api needs a consistent hash on the Authorization header",
        )
    ],
}


@dataclass(frozen=True)
class Run:
    returncode: int
    output: str

    def report(self, overlay: str) -> str:
        """The lines validate.py printed about one overlay."""
        found = re.search(rf"^{re.escape(overlay)}: .*?(?=^\S|\Z)", self.output, re.M | re.S)
        assert found, f"no report for {overlay}:\n{self.output}"
        return found.group(0)


def validate(*overlays: str) -> Run:
    done = subprocess.run(
        [str(VALIDATE), *overlays], capture_output=True, text=True, timeout=900, check=False
    )
    return Run(done.returncode, done.stdout + done.stderr)


OVERLAYS = sorted(p for p in (REPO / "deploy/k8s/overlays").iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def run() -> Run:
    # One run for all (the schemas load once): each overlay is reported on
    # its own, and validate.sh exits 1 if any of them is invalid.
    return validate(*map(str, OVERLAYS), *(str(BROKEN / name) for name in sorted(EXPECTED)))


def test_the_overlays_are_valid(run: Run) -> None:
    assert {p.name for p in OVERLAYS} == {"dev", "prod", "demo"}
    for overlay in OVERLAYS:
        assert "all valid" in run.report(overlay.name), run.output


def test_every_broken_fixture_is_tested() -> None:
    assert {p.name for p in BROKEN.iterdir() if p.is_dir()} == set(EXPECTED)


def test_a_broken_manifest_fails_the_validation(run: Run) -> None:
    assert run.returncode == 1, run.output


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_each_broken_policy_is_named(run: Run, fixture: str) -> None:
    report = run.report(fixture)
    assert "all valid" not in report
    for resource, problem in EXPECTED[fixture]:
        # The problem is listed under its resource's INVALID line.
        found = re.search(rf"^  INVALID {re.escape(resource)}\n((?:    - .*\n?)*)", report, re.M)
        assert found, report
        assert problem in found.group(1), report
