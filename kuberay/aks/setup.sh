#!/usr/bin/env bash
# Creates (or updates: every step is idempotent) an AKS cluster for serve-app and deploys it:
# resource group, AKS with a system pool, a CPU pool and a GPU pool (cluster autoscaler on both, GPU pool
# tainted and scaling from 0), the NVIDIA device plugin, the KubeRay operator, ingress-nginx with
# cert-manager TLS, the API-key Secret, the RayService and the Ingress; then prints the endpoint.
# Needs: az (logged in), kubectl, helm. Settings come from the environment (defaults below).
set -euo pipefail

RESOURCE_GROUP="${RESOURCE_GROUP:-serve-app-rg}"
LOCATION="${LOCATION:-westeurope}"
CLUSTER="${CLUSTER:-serve-app-aks}"
CPU_VM_SIZE="${CPU_VM_SIZE:-Standard_D8s_v5}"
GPU_VM_SIZE="${GPU_VM_SIZE:-Standard_NC24ads_A100_v4}"
CPU_MAX_NODES="${CPU_MAX_NODES:-10}"
GPU_MAX_NODES="${GPU_MAX_NODES:-4}"
KUBERAY_VERSION="${KUBERAY_VERSION:-1.7.0}"
ACME_EMAIL="${ACME_EMAIL:?set ACME_EMAIL to the e-mail address of the Lets Encrypt account}"
API_KEY_PRIMARY="${API_KEY_PRIMARY:-$(openssl rand -hex 32)}"
API_KEY_SECONDARY="${API_KEY_SECONDARY:-$(openssl rand -hex 32)}"
JWT_SECRET="${JWT_SECRET:-$(openssl rand -hex 32)}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf '\n==> %s\n' "$*"; }

log "resource group ${RESOURCE_GROUP} in ${LOCATION}"
az group create --name "${RESOURCE_GROUP}" --location "${LOCATION}" --output none

if ! az aks show --resource-group "${RESOURCE_GROUP}" --name "${CLUSTER}" --output none 2>/dev/null; then
  log "AKS cluster ${CLUSTER} (system pool)"
  az aks create --resource-group "${RESOURCE_GROUP}" --name "${CLUSTER}" \
    --nodepool-name system --node-count 2 --node-vm-size Standard_D4s_v5 \
    --network-plugin azure --network-policy azure \
    --enable-managed-identity --generate-ssh-keys --output none
fi

add_pool() {  # name vm-size min max [extra az args...]
  local name="$1" size="$2" min="$3" max="$4"
  shift 4
  if ! az aks nodepool show --resource-group "${RESOURCE_GROUP}" --cluster-name "${CLUSTER}" --name "${name}" \
      --output none 2>/dev/null; then
    log "node pool ${name} (${size}, autoscaling ${min}..${max})"
    az aks nodepool add --resource-group "${RESOURCE_GROUP}" --cluster-name "${CLUSTER}" --name "${name}" \
      --node-vm-size "${size}" --enable-cluster-autoscaler --min-count "${min}" --max-count "${max}" \
      --node-count "${min}" "$@" --output none
  fi
}
add_pool cpupool "${CPU_VM_SIZE}" 1 "${CPU_MAX_NODES}"
add_pool gpupool "${GPU_VM_SIZE}" 0 "${GPU_MAX_NODES}" --node-taints sku=gpu:NoSchedule

log "kubectl credentials"
az aks get-credentials --resource-group "${RESOURCE_GROUP}" --name "${CLUSTER}" --overwrite-existing

log "Helm charts: NVIDIA device plugin, KubeRay ${KUBERAY_VERSION}, ingress-nginx, cert-manager"
helm repo add nvdp https://nvidia.github.io/k8s-device-plugin --force-update
helm repo add kuberay https://ray-project.github.io/kuberay-helm/ --force-update
helm repo add ingress-nginx https://kubernetes.github.io/ingress-nginx --force-update
helm repo add jetstack https://charts.jetstack.io --force-update
helm upgrade --install nvdp nvdp/nvidia-device-plugin --namespace nvidia-device-plugin --create-namespace \
  --set-json 'tolerations=[{"key":"sku","operator":"Equal","value":"gpu","effect":"NoSchedule"}]'
helm upgrade --install kuberay-operator kuberay/kuberay-operator --version "${KUBERAY_VERSION}" \
  --namespace kuberay --create-namespace
helm upgrade --install ingress-nginx ingress-nginx/ingress-nginx --namespace ingress-nginx --create-namespace
helm upgrade --install cert-manager jetstack/cert-manager --namespace cert-manager --create-namespace \
  --set crds.enabled=true

log "Let's Encrypt ClusterIssuer"
kubectl apply -f - <<YAML
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata:
  name: letsencrypt
spec:
  acme:
    server: https://acme-v02.api.letsencrypt.org/directory
    email: ${ACME_EMAIL}
    privateKeySecretRef:
      name: letsencrypt-account-key
    solvers:
      - http01:
          ingress:
            ingressClassName: nginx
YAML

log "API keys Secret (primary and secondary, for rotation without downtime; token signing secret)"
# The RayService passes api-keys to the replicas as SERVE_APP_API_KEYS (primary first) and jwt-secret as
# SERVE_APP_JWT_SECRET (`serve-app token` mints tokens with it).
kubectl create secret generic serve-app-api-keys \
  --from-literal=api-keys="${API_KEY_PRIMARY},${API_KEY_SECONDARY}" --from-literal=jwt-secret="${JWT_SECRET}" \
  --dry-run=client --output yaml | kubectl apply -f -

log "RayService, NetworkPolicy and Ingress"
kubectl apply -f "${HERE}/../rayservice.yaml"
kubectl apply -f "${HERE}/../networkpolicy.yaml"
kubectl apply -f "${HERE}/../ingress.yaml"

log "waiting for the public IP of ingress-nginx"
ip=""
for _ in $(seq 1 60); do
  ip="$(kubectl get service ingress-nginx-controller --namespace ingress-nginx \
    --output jsonpath='{.status.loadBalancer.ingress[0].ip}' 2>/dev/null || true)"
  [ -n "${ip}" ] && break
  sleep 10
done
echo "Endpoint: https://<your host in kuberay/ingress.yaml> -> ${ip:-pending} (point its DNS A record here)"
echo "RayService status: kubectl get rayservice serve-app; first GPU node takes ~5-10 minutes to join."
