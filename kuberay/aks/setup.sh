#!/usr/bin/env bash
# Creates (or, re-run, leaves as it is) everything serve-app needs on Azure Kubernetes Service and deploys it:
# resource group, container registry (the image is built in Azure with `az acr build`: no local Docker), AKS
# with a system pool, a CPU pool and a GPU pool (cluster autoscaler on both, GPU pool tainted sku=gpu:NoSchedule
# and scaling from 0) with the registry attached, the NVIDIA device plugin on the GPU nodes, the KubeRay
# operator, ingress-nginx behind the Azure load balancer, cert-manager with a Let's Encrypt issuer, the API-key
# Secret, the RayService, the NetworkPolicy and the Ingress. Then it prints the public IP and the next steps.
#
# Every step is idempotent: Azure resources and the Secret are created only when absent (the Secret is never
# overwritten, so a re-run keeps the keys), Helm charts are pinned and upgraded in place, manifests are applied.
# Azure resources this script creates are tagged created-by=serve-app-setup; teardown.sh deletes only those.
#
# Needs: az (logged in, subscription selected), kubectl, helm (3.10+), openssl, tar. Guide: docs/kubernetes.md.
#   ACR_NAME=myserveappacr HOST=serve.example.org ACME_EMAIL=ops@example.org kuberay/aks/setup.sh
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ACR_NAME=<registry> HOST=<dns name> ACME_EMAIL=<e-mail> kuberay/aks/setup.sh

Required: ACR_NAME (globally unique, 5-50 lowercase letters/digits), HOST (the public DNS name of the
endpoint), ACME_EMAIL (Let's Encrypt account e-mail). Optional variables and their defaults: docs/kubernetes.md.
EOF
}
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

die() { printf 'setup.sh: %s\n' "$*" >&2; exit 1; }
log() { printf '\n==> %s\n' "$*"; }

# --- parameters ---------------------------------------------------------------------------------------------
ACR_NAME="${ACR_NAME:-}"
HOST="${HOST:-}"
ACME_EMAIL="${ACME_EMAIL:-}"
RESOURCE_GROUP="${RESOURCE_GROUP:-serve-app-rg}"
LOCATION="${LOCATION:-westeurope}"
CLUSTER="${CLUSTER:-serve-app-aks}"
NAMESPACE="${NAMESPACE:-default}"
ACR_SKU="${ACR_SKU:-Standard}"
SYSTEM_VM_SIZE="${SYSTEM_VM_SIZE:-Standard_D4s_v5}"
SYSTEM_NODES="${SYSTEM_NODES:-2}"
CPU_VM_SIZE="${CPU_VM_SIZE:-Standard_D8s_v5}"
CPU_MIN_NODES="${CPU_MIN_NODES:-2}"
CPU_MAX_NODES="${CPU_MAX_NODES:-10}"
GPU_VM_SIZE="${GPU_VM_SIZE:-Standard_NC24ads_A100_v4}"
GPU_MAX_NODES="${GPU_MAX_NODES:-4}"
# Pinned chart versions (override to upgrade; a re-run with other versions upgrades the releases in place).
KUBERAY_VERSION="${KUBERAY_VERSION:-1.7.0}"
INGRESS_NGINX_VERSION="${INGRESS_NGINX_VERSION:-4.15.1}"
CERT_MANAGER_VERSION="${CERT_MANAGER_VERSION:-v1.21.1}"
NVIDIA_DEVICE_PLUGIN_VERSION="${NVIDIA_DEVICE_PLUGIN_VERSION:-0.18.0}"
HELM_TIMEOUT="${HELM_TIMEOUT:-10m}"
BUILD_TIMEOUT_S="${BUILD_TIMEOUT_S:-7200}"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KUBERAY_DIR="$(cd "${HERE}/.." && pwd)"
ROOT="$(cd "${KUBERAY_DIR}/.." && pwd)"
IMAGE_TAG="${IMAGE_TAG:-$(awk -F'"' '/^version = "/ {print $2; exit}' "${ROOT}/pyproject.toml")}"

TAG_KEY="created-by"
TAG_VALUE="serve-app-setup"
CREATED_TAG="${TAG_KEY}=${TAG_VALUE}"
SECRET_NAME="serve-app-api-keys"
REDIS_SECRET_NAME="serve-app-redis"  # kuberay/redis.yaml and the RayService read it by this name
REPOSITORY="serve-app"
# The placeholders in the committed manifests, replaced when applying.
EXAMPLE_HOST="serve-app.example.com"

[ -n "${ACR_NAME}" ] || { usage >&2; die "set ACR_NAME to the container registry name (globally unique)"; }
[ -n "${HOST}" ] || { usage >&2; die "set HOST to the public DNS name of the endpoint (e.g. serve.example.org)"; }
[ -n "${ACME_EMAIL}" ] || { usage >&2; die "set ACME_EMAIL to the e-mail address of the Let's Encrypt account"; }
acr_re='^[a-z0-9]{5,50}$'
host_re='^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$'
email_re='^[^[:space:]@"]+@[^[:space:]@"]+\.[^[:space:]@"]+$'
tag_re='^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'
[[ "${ACR_NAME}" =~ ${acr_re} ]] || die "ACR_NAME must be 5-50 lowercase letters or digits: ${ACR_NAME}"
[[ "${HOST}" =~ ${host_re} ]] || die "HOST must be a lowercase DNS name with a dot (e.g. serve.example.org): ${HOST}"
[ "${HOST}" != "${EXAMPLE_HOST}" ] || die "HOST must be your own DNS name, not ${EXAMPLE_HOST}"
[[ "${ACME_EMAIL}" =~ ${email_re} ]] || die "ACME_EMAIL is not an e-mail address: ${ACME_EMAIL}"
[[ "${IMAGE_TAG}" =~ ${tag_re} ]] || die "IMAGE_TAG is not a valid image tag: ${IMAGE_TAG}"
for tool in az kubectl helm openssl tar; do
  command -v "${tool}" >/dev/null || die "${tool} not found on PATH"
done

IMAGE="${ACR_NAME}.azurecr.io/${REPOSITORY}:${IMAGE_TAG}"

# Key material, the build context and the rendered manifests live only in this private directory (mktemp -d
# makes it 0700), removed on exit.
WORK="$(mktemp -d)"
trap 'rm -rf -- "${WORK}"' EXIT
trap 'exit 130' INT TERM

# --- Azure: resource group, registry, cluster, node pools ---------------------------------------------------
log "resource group ${RESOURCE_GROUP}"
if az group show --name "${RESOURCE_GROUP}" --output none 2>/dev/null; then
  echo "exists; left as it is"
else
  az group create --name "${RESOURCE_GROUP}" --location "${LOCATION}" --tags "${CREATED_TAG}" --output none
  echo "created in ${LOCATION}"
fi

log "container registry ${ACR_NAME} (${ACR_SKU})"
if az acr show --name "${ACR_NAME}" --output none 2>/dev/null; then
  echo "exists; left as it is"
else
  available="$(az acr check-name --name "${ACR_NAME}" --query nameAvailable --output tsv)"
  [ "${available}" = "true" ] \
    || die "registry name ${ACR_NAME} is taken (names are global; or it is in another subscription): choose another"
  az acr create --resource-group "${RESOURCE_GROUP}" --name "${ACR_NAME}" --sku "${ACR_SKU}" \
    --location "${LOCATION}" --tags "${CREATED_TAG}" --output none
  echo "created"
fi

log "AKS cluster ${CLUSTER} (system pool: ${SYSTEM_NODES} x ${SYSTEM_VM_SIZE})"
if az aks show --resource-group "${RESOURCE_GROUP}" --name "${CLUSTER}" --output none 2>/dev/null; then
  echo "exists; left as it is"
else
  echo "creating (about 5-10 minutes)"
  az aks create --resource-group "${RESOURCE_GROUP}" --name "${CLUSTER}" --location "${LOCATION}" \
    --nodepool-name system --node-count "${SYSTEM_NODES}" --node-vm-size "${SYSTEM_VM_SIZE}" \
    --network-plugin azure --network-policy azure \
    --enable-managed-identity --generate-ssh-keys --tags "${CREATED_TAG}" --output none
fi

add_pool() {  # name vm-size min max [extra az args...]
  local name="$1" size="$2" min="$3" max="$4"
  shift 4
  log "node pool ${name} (${size}, autoscaling ${min}..${max})"
  if az aks nodepool show --resource-group "${RESOURCE_GROUP}" --cluster-name "${CLUSTER}" --name "${name}" \
      --output none 2>/dev/null; then
    echo "exists; left as it is"
  else
    az aks nodepool add --resource-group "${RESOURCE_GROUP}" --cluster-name "${CLUSTER}" --name "${name}" \
      --node-vm-size "${size}" --enable-cluster-autoscaler --min-count "${min}" --max-count "${max}" \
      --node-count "${min}" "$@" --output none
    echo "created"
  fi
}
add_pool cpupool "${CPU_VM_SIZE}" "${CPU_MIN_NODES}" "${CPU_MAX_NODES}"
# The taint keeps everything but GPU pods off the A100 nodes; the RayService's GPU group and the device plugin
# tolerate it.
add_pool gpupool "${GPU_VM_SIZE}" 0 "${GPU_MAX_NODES}" --node-taints sku=gpu:NoSchedule

log "registry ${ACR_NAME} attached to ${CLUSTER} (AcrPull for the kubelet identity)"
acr_id="$(az acr show --name "${ACR_NAME}" --query id --output tsv)"
kubelet_id="$(az aks show --resource-group "${RESOURCE_GROUP}" --name "${CLUSTER}" \
  --query identityProfile.kubeletidentity.objectId --output tsv)"
attached="$(az role assignment list --scope "${acr_id}" --role AcrPull \
  --query "[?principalId=='${kubelet_id}'].id | [0]" --output tsv)"
if [ -n "${attached}" ]; then
  echo "already attached"
else
  az aks update --resource-group "${RESOURCE_GROUP}" --name "${CLUSTER}" --attach-acr "${acr_id}" --output none
  echo "attached"
fi

# --- the image, built in Azure ------------------------------------------------------------------------------
log "image ${IMAGE}"
if az acr repository show --name "${ACR_NAME}" --image "${REPOSITORY}:${IMAGE_TAG}" --output none 2>/dev/null; then
  echo "tag exists in the registry; not rebuilt (set IMAGE_TAG to build and deploy changed code)"
else
  # The build context holds only what kuberay/Dockerfile copies (and the .dockerignore): az acr build walks its
  # whole source directory, and the repository root also holds local state (a virtualenv of several GB).
  context="${WORK}/context"
  mkdir -p "${context}"
  [ ! -f "${ROOT}/.dockerignore" ] || cp "${ROOT}/.dockerignore" "${context}/"
  sources=()
  while read -r line; do
    read -r -a words <<<"${line}"
    sources+=("${words[@]}")
  done < <(sed -n -E 's/^COPY[[:space:]]+(--[^[:space:]]+[[:space:]]+)*(.+)[[:space:]]+[^[:space:]]+$/\2/p' \
    "${KUBERAY_DIR}/Dockerfile")
  [ "${#sources[@]}" -gt 0 ] || die "found no COPY sources in kuberay/Dockerfile"
  tar -C "${ROOT}" --exclude=__pycache__ --exclude='*.pyc' -cf - "${sources[@]}" | tar -C "${context}" -xf -
  echo "building in ACR Tasks (about 15-30 minutes: the Ray GPU base image is large)"
  az acr build --registry "${ACR_NAME}" --image "${REPOSITORY}:${IMAGE_TAG}" \
    --file "${KUBERAY_DIR}/Dockerfile" --timeout "${BUILD_TIMEOUT_S}" "${context}"
fi

# --- cluster add-ons ----------------------------------------------------------------------------------------
log "kubectl credentials"
az aks get-credentials --resource-group "${RESOURCE_GROUP}" --name "${CLUSTER}" --overwrite-existing

log "Helm repositories"
helm repo add kuberay https://ray-project.github.io/kuberay-helm/ --force-update
helm repo add ingress-nginx https://kubernetes.github.io/ingress-nginx --force-update
helm repo add nvdp https://nvidia.github.io/k8s-device-plugin --force-update

# The chart's default node affinity wants Node Feature Discovery labels that AKS GPU nodes do not carry, so it
# is replaced by the label AKS puts on its GPU nodes; the tolerations match the gpupool taint.
log "NVIDIA device plugin ${NVIDIA_DEVICE_PLUGIN_VERSION} (AKS GPU nodes: kubernetes.azure.com/accelerator=nvidia)"
gpu_nodes='{"key":"kubernetes.azure.com/accelerator","operator":"In","values":["nvidia"]}'
gpu_affinity='{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":['"${gpu_nodes}"']}]}}}'
gpu_tolerations='[{"key":"sku","operator":"Equal","value":"gpu","effect":"NoSchedule"},'
gpu_tolerations+='{"key":"nvidia.com/gpu","operator":"Exists","effect":"NoSchedule"},{"key":"CriticalAddonsOnly","operator":"Exists"}]'
helm upgrade --install nvdp nvdp/nvidia-device-plugin --version "${NVIDIA_DEVICE_PLUGIN_VERSION}" \
  --namespace nvidia-device-plugin --create-namespace \
  --set-json "affinity=${gpu_affinity}" --set-json "tolerations=${gpu_tolerations}" \
  --wait --timeout "${HELM_TIMEOUT}"

log "KubeRay operator ${KUBERAY_VERSION}"
helm upgrade --install kuberay-operator kuberay/kuberay-operator --version "${KUBERAY_VERSION}" \
  --namespace kuberay --create-namespace --wait --timeout "${HELM_TIMEOUT}"

# The Azure load balancer probes the controller's HTTP node port; without a request path it probes with TCP
# or a path nginx answers 404 to, marks every backend down, and neither clients nor Let's Encrypt get through.
log "ingress-nginx ${INGRESS_NGINX_VERSION} (waits for the public IP)"
health_probe_annotation="azure-load-balancer-health-probe-request-path"
helm upgrade --install ingress-nginx ingress-nginx/ingress-nginx --version "${INGRESS_NGINX_VERSION}" \
  --namespace ingress-nginx --create-namespace \
  --set "controller.service.annotations.service\\.beta\\.kubernetes\\.io/${health_probe_annotation}=/healthz" \
  --wait --timeout "${HELM_TIMEOUT}"

log "cert-manager ${CERT_MANAGER_VERSION}"
helm upgrade --install cert-manager oci://quay.io/jetstack/charts/cert-manager --version "${CERT_MANAGER_VERSION}" \
  --namespace cert-manager --create-namespace --set crds.enabled=true --wait --timeout "${HELM_TIMEOUT}"

cluster_issuer() {
  cat <<YAML
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata:
  name: letsencrypt
spec:
  acme:
    server: https://acme-v02.api.letsencrypt.org/directory
    email: "${ACME_EMAIL}"
    privateKeySecretRef:
      name: letsencrypt-account-key
    solvers:
      - http01:
          ingress:
            ingressClassName: nginx
YAML
}
apply_cluster_issuer() { cluster_issuer | kubectl apply -f -; }

log "Let's Encrypt ClusterIssuer"
# cert-manager's webhook may take a few seconds more than its Deployment to accept requests.
for attempt in 1 2 3 4 5 6 7 8 9 10 11 12; do
  if apply_cluster_issuer; then
    break
  fi
  [ "${attempt}" -lt 12 ] || die "cert-manager did not accept the ClusterIssuer"
  sleep 10
done

# --- the application ----------------------------------------------------------------------------------------
if [ "${NAMESPACE}" != "default" ]; then
  log "namespace ${NAMESPACE}"
  if kubectl get namespace "${NAMESPACE}" --output name >/dev/null 2>&1; then
    echo "exists"
  else
    kubectl create namespace "${NAMESPACE}"
  fi
fi

secret_exists() { kubectl get secret "$1" --namespace "${NAMESPACE}" --output name >/dev/null 2>&1; }
# Fresh random values (32 bytes, hex) in private files under ${WORK}, one per name: never on a command line.
random_files() { (
  umask 077
  for name in "$@"; do openssl rand -hex 32 | tr -d '\n' >"${WORK}/${name}"; done
); }

log "Secret ${SECRET_NAME} (API keys, primary and secondary; token signing secret)"
# The RayService mounts it in the CPU group as files: api-keys (primary first, read through
# SERVE_APP_API_KEYS_FILE) and jwt-secret (SERVE_APP_JWT_SECRET_FILE). Created once and never overwritten: rotation is a deliberate step (docs/kubernetes.md).
if secret_exists "${SECRET_NAME}"; then
  echo "exists; left unchanged (the keys are kept)"
else
  random_files primary secondary jwt-secret
  (
    umask 077
    { cat "${WORK}/primary"; printf ','; cat "${WORK}/secondary"; } >"${WORK}/api-keys"
  )
  kubectl create secret generic "${SECRET_NAME}" --namespace "${NAMESPACE}" \
    --from-file=api-keys="${WORK}/api-keys" --from-file=jwt-secret="${WORK}/jwt-secret"
  rm -f -- "${WORK}/primary" "${WORK}/secondary" "${WORK}/api-keys" "${WORK}/jwt-secret"
fi

log "Secret ${REDIS_SECRET_NAME} and Redis (the GCS's state: the cluster survives its head pod's death)"
# The password of kuberay/redis.yaml's Redis, which the RayService's gcsFaultToleranceOptions names. Created once:
# a new password would lock the running GCS out of the state it keeps there.
if secret_exists "${REDIS_SECRET_NAME}"; then
  echo "exists; left unchanged"
else
  random_files redis-password
  kubectl create secret generic "${REDIS_SECRET_NAME}" --namespace "${NAMESPACE}" \
    --from-file=password="${WORK}/redis-password"
  rm -f -- "${WORK}/redis-password"
fi
kubectl apply --namespace "${NAMESPACE}" -f "${KUBERAY_DIR}/redis.yaml"
# The head's GCS connects at start and exits while Redis does not answer: Redis first.
kubectl rollout status deployment/serve-app-redis --namespace "${NAMESPACE}" --timeout=10m

log "RayService (image ${IMAGE}), NetworkPolicy, PodDisruptionBudget and Ingress (host ${HOST})"
sed -E "s#^([[:space:]]*image:[[:space:]]*)[^[:space:]]+/${REPOSITORY}:[^[:space:]]+#\\1${IMAGE}#" \
  "${KUBERAY_DIR}/rayservice.yaml" >"${WORK}/rayservice.yaml"
grep -q -F "image: ${IMAGE}" "${WORK}/rayservice.yaml" || die "no serve-app image in kuberay/rayservice.yaml"
other_images="$(grep -E '^[[:space:]]*image:' "${WORK}/rayservice.yaml" | grep -v -F "${IMAGE}" || true)"
[ -z "${other_images}" ] || die "kuberay/rayservice.yaml names another image, not pointed at ${ACR_NAME}: ${other_images}"
sed "s/serve-app\\.example\\.com/${HOST}/g" "${KUBERAY_DIR}/ingress.yaml" >"${WORK}/ingress.yaml"
grep -q -F "host: ${HOST}" "${WORK}/ingress.yaml" || die "no ${EXAMPLE_HOST} host in kuberay/ingress.yaml"
kubectl apply --namespace "${NAMESPACE}" -f - <"${WORK}/rayservice.yaml"
kubectl apply --namespace "${NAMESPACE}" -f "${KUBERAY_DIR}/networkpolicy.yaml"
kubectl apply --namespace "${NAMESPACE}" -f "${KUBERAY_DIR}/disruption-budget.yaml"
kubectl apply --namespace "${NAMESPACE}" -f - <"${WORK}/ingress.yaml"

log "public IP of ingress-nginx"
ip=""
for _ in $(seq 1 30); do
  ip="$(kubectl get service ingress-nginx-controller --namespace ingress-nginx \
    --output jsonpath='{.status.loadBalancer.ingress[0].ip}' 2>/dev/null || true)"
  [ -n "${ip}" ] && break
  sleep 10
done

cat <<EOF

Done. Endpoint: https://${HOST} -> ${ip:-<pending: kubectl get service ingress-nginx-controller -n ingress-nginx>}

Next steps (details: docs/kubernetes.md):
  1. Point the DNS A record of ${HOST} at ${ip:-the IP above}. cert-manager then gets the certificate
     (minutes): kubectl get certificate serve-app-tls --namespace ${NAMESPACE}   (READY True)
  2. Wait for the application: kubectl get rayservice serve-app --namespace ${NAMESPACE}
     (SERVICE STATUS Running). The first GPU node joins 5-10 minutes after the GPU replica is pending,
     and pulling the image takes a few minutes more.
  3. Read the API keys (primary first, comma-separated); they are not printed here:
     kubectl get secret ${SECRET_NAME} --namespace ${NAMESPACE} -o jsonpath='{.data.api-keys}' | base64 -d
  4. Call it: curl -H "Authorization: Bearer \$KEY" https://${HOST}/faq/match \\
       -H 'content-type: application/json' -d '{"question": "clone an object", "top_k": 3}'
  Delete what this script created: kuberay/aks/teardown.sh
EOF
