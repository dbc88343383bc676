#!/usr/bin/env bash
# Deletes what kuberay/aks/setup.sh created, and nothing else. setup.sh tags what it creates
# created-by=serve-app-setup:
# - the resource group tagged so (setup.sh created it): the whole group goes (cluster, node pools, registry,
#   public IP, disks and the cluster's node resource group MC_*);
# - otherwise (the group existed before setup.sh): only the tagged cluster and the tagged registries in it;
#   the group and everything else in it stay.
# Asks for confirmation unless run with --yes (or YES=1). Same RESOURCE_GROUP and CLUSTER as setup.sh.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: [RESOURCE_GROUP=serve-app-rg] [CLUSTER=serve-app-aks] kuberay/aks/teardown.sh [--yes]
Deletes only the Azure resources kuberay/aks/setup.sh created (tagged created-by=serve-app-setup).
EOF
}

YES="${YES:-0}"
for arg in "$@"; do
  case "${arg}" in
    -y | --yes) YES=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

RESOURCE_GROUP="${RESOURCE_GROUP:-serve-app-rg}"
CLUSTER="${CLUSTER:-serve-app-aks}"
TAG_KEY="created-by"
TAG_VALUE="serve-app-setup"

tag_query="tags.\"${TAG_KEY}\""
if ! group_tag="$(az group show --name "${RESOURCE_GROUP}" --query "${tag_query}" --output tsv 2>/dev/null)"; then
  echo "Resource group ${RESOURCE_GROUP} does not exist (or is not visible to this account); nothing to delete."
  exit 0
fi

delete_group=0
delete_cluster=0
registries=()
if [ "${group_tag}" = "${TAG_VALUE}" ]; then
  delete_group=1
  plan="resource group ${RESOURCE_GROUP} and everything in it (created by setup.sh)"
else
  cluster_tag="$(az aks show --resource-group "${RESOURCE_GROUP}" --name "${CLUSTER}" \
    --query "${tag_query}" --output tsv 2>/dev/null || true)"
  [ "${cluster_tag}" != "${TAG_VALUE}" ] || delete_cluster=1
  while read -r name; do
    [ -z "${name}" ] || registries+=("${name}")
  done < <(az acr list --resource-group "${RESOURCE_GROUP}" \
    --query "[?tags.\"${TAG_KEY}\"=='${TAG_VALUE}'].name" --output tsv)
  plan=""
  [ "${delete_cluster}" = 0 ] || plan="AKS cluster ${CLUSTER} (and its node resource group)"
  for name in ${registries[@]+"${registries[@]}"}; do
    plan="${plan:+${plan}, }container registry ${name} (with its images)"
  done
  if [ -z "${plan}" ]; then
    echo "Resource group ${RESOURCE_GROUP} was not created by setup.sh and holds nothing tagged"
    echo "${TAG_KEY}=${TAG_VALUE}; nothing to delete."
    exit 0
  fi
  plan="${plan}; resource group ${RESOURCE_GROUP} stays (setup.sh did not create it)"
fi

echo "This deletes: ${plan}."
if [ "${YES}" != 1 ]; then
  answer=""
  read -r -p "Proceed? [y/N] " answer || true
  case "${answer}" in
    y | Y | yes | YES) ;;
    *) echo "Aborted; nothing deleted."; exit 1 ;;
  esac
fi

if [ "${delete_group}" = 1 ]; then
  az group delete --name "${RESOURCE_GROUP}" --yes --no-wait
  echo "Deleting resource group ${RESOURCE_GROUP} in the background (about 10 minutes):"
  echo "  az group show --name ${RESOURCE_GROUP}   # ResourceGroupNotFound once done"
  exit 0
fi
for name in ${registries[@]+"${registries[@]}"}; do
  az acr delete --resource-group "${RESOURCE_GROUP}" --name "${name}" --yes
  echo "Deleted container registry ${name}."
done
if [ "${delete_cluster}" = 1 ]; then
  az aks delete --resource-group "${RESOURCE_GROUP}" --name "${CLUSTER}" --yes --no-wait
  echo "Deleting AKS cluster ${CLUSTER} in the background (about 10 minutes):"
  echo "  az aks show --resource-group ${RESOURCE_GROUP} --name ${CLUSTER}   # ResourceNotFound once done"
fi
