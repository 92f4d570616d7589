"""The Kubernetes manifests: valid against the Kubernetes schemas (kubernetes-validate), the CPU and
GPU overlays as kustomize renders them (where kubectl is installed), the restricted security
settings checkov asks for held here too, and checkov itself where it is installed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
BASE = sorted(p for p in (DEPLOY / "base").glob("*.yaml") if p.name != "kustomization.yaml")
KUBECTL = shutil.which("kubectl")
CHECKOV = shutil.which("checkov")


def documents(paths):
    for path in paths:
        yield from yaml.safe_load_all(path.read_text())


def rendered(overlay: str) -> dict[str, dict]:
    """``kubectl kustomize`` of an overlay, by kind; without kubectl, the base (the CPU overlay is it)."""
    if KUBECTL is None:
        if overlay != "cpu":
            pytest.skip("no kubectl here to render the GPU overlay")
        return {d["kind"]: d for d in documents(BASE)}
    text = subprocess.run(
        [KUBECTL, "kustomize", str(DEPLOY / "overlays" / overlay)], check=True, capture_output=True, text=True
    ).stdout
    return {d["kind"]: d for d in yaml.safe_load_all(text)}


@pytest.mark.parametrize("resource", list(documents(BASE)), ids=lambda r: r["kind"])
def test_base_manifests_are_valid_against_the_schema(resource):
    kubernetes_validate.validate(resource, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_each_overlay_renders_a_valid_restricted_deployment(overlay):
    kinds = rendered(overlay)
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    } <= set(kinds)
    for resource in kinds.values():
        kubernetes_validate.validate(resource, kubernetes_validate.latest_version(), strict=True)
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert not container["image"].endswith(":latest") and ":" in container["image"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert {"cpu", "memory"} <= set(limits) and {"cpu", "memory"} <= set(requests)
    device = {e["name"]: e["value"] for e in container["env"]}["DETECTOR_DEVICE"]
    if overlay == "gpu":
        assert limits["nvidia.com/gpu"] == 1 and device == "cuda"
    else:
        assert "nvidia.com/gpu" not in limits and device == "cpu"


def test_probes_shutdown_and_what_points_at_the_deployment():
    kinds = rendered("cpu")
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):  # a busy pod survives a slow answer or two
        assert container[probe]["timeoutSeconds"] >= 2
        assert container[probe]["failureThreshold"] >= 2
    assert pod["terminationGracePeriodSeconds"] >= 30
    name, labels = kinds["Deployment"]["metadata"]["name"], kinds["Deployment"]["spec"]["selector"]
    assert kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == name
    assert kinds["PodDisruptionBudget"]["spec"]["selector"] == labels
    assert kinds["NetworkPolicy"]["spec"]["podSelector"] == labels
    assert (
        kinds["NetworkPolicy"]["spec"]["ingress"][0]["ports"][0]["port"]
        == container["ports"][0]["containerPort"]
    )


@pytest.mark.skipif(CHECKOV is None, reason="no checkov here (pip install checkov, in a venv of its own)")
def test_checkov_passes_every_check_it_runs(tmp_path: Path):
    for overlay in ("cpu", "gpu"):
        if KUBECTL is not None:
            target = tmp_path / f"{overlay}.yaml"
            target.write_text(yaml.safe_dump_all(rendered(overlay).values()))
        else:
            target = DEPLOY / "base"
        where = ["-d" if target.is_dir() else "-f", str(target)]
        command = [CHECKOV, "--quiet", "--compact", "--skip-download", "-o", "json"]
        command += ["--framework", "kubernetes", *where]
        result = subprocess.run(command, capture_output=True, text=True)
        report = json.loads(result.stdout)
        reports = report if isinstance(report, list) else [report]
        failed = [c["check_id"] for r in reports for c in r.get("results", {}).get("failed_checks", [])]
        assert not failed, (overlay, failed)
