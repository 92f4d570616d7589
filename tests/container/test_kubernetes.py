"""The Kubernetes manifests, validated offline against the Kubernetes schemas (kubernetes-validate)."""

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

MANIFESTS = sorted((Path(__file__).resolve().parents[2] / "deploy" / "kubernetes").glob("*.yaml"))


def resources():
    for path in MANIFESTS:
        for document in yaml.safe_load_all(path.read_text()):
            yield path.name, document


@pytest.mark.parametrize(("name", "resource"), list(resources()))
def test_manifest_is_valid_against_the_schema(name, resource):
    kubernetes_validate.validate(resource, kubernetes_validate.latest_version(), strict=True)


def test_deployment_probes_and_shutdown():
    kinds = {resource["kind"]: resource for _, resource in resources()}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= set(kinds)
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):  # a busy pod survives a slow answer or two
        assert container[probe]["timeoutSeconds"] >= 2
        assert container[probe]["failureThreshold"] >= 2
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (
        kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"]
        == kinds["Deployment"]["metadata"]["name"]
    )
