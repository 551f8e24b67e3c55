"""The purposes an agreement may name: a small controlled vocabulary taken
from the W3C Data Privacy Vocabulary (DPV, https://w3id.org/dpv, namespace
``https://w3id.org/dpv#``). Each is a ``dpv:Purpose`` concept of DPV 2.x;
requests name them by their compact IRI (``dpv:ScientificResearch``).

Source: the DPV specification (W3C Data Privacy Vocabularies and Controls
Community Group, https://w3c.github.io/dpv/), under the W3C Software and
Document License; the names are DPV's, the one-line meanings paraphrase its
definitions."""

from __future__ import annotations

DPV_NAMESPACE = "https://w3id.org/dpv#"

# compact IRI -> what it means (DPV's own definition, shortened).
PURPOSES: dict[str, str] = {
    "dpv:PublicBenefit": "benefit to the public or society (public service mission)",
    "dpv:ImprovePublicServices": "improving the provision of public services",
    "dpv:PublicPolicyMaking": "making, assessing and evaluating public policy",
    "dpv:ProvideOfficialStatistics": "producing official statistics",
    "dpv:ResearchAndDevelopment": "research and development",
    "dpv:ScientificResearch": "scientific research",
    "dpv:AcademicResearch": "research by academic institutions",
    "dpv:NonCommercialResearch": "research in a non-commercial setting",
    "dpv:CommercialPurpose": "purposes of a commercial nature",
    "dpv:ServiceProvision": "providing a service or product",
}


def iri(purpose: str) -> str:
    """The full IRI of a compact ``dpv:`` name."""
    return DPV_NAMESPACE + purpose.removeprefix("dpv:")
