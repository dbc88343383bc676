#!/usr/bin/env bash
# Deletes everything setup.sh created: the whole resource group (cluster, node pools, public IPs, disks).
set -euo pipefail

RESOURCE_GROUP="${RESOURCE_GROUP:-serve-app-rg}"

if az group show --name "${RESOURCE_GROUP}" --output none 2>/dev/null; then
  az group delete --name "${RESOURCE_GROUP}" --yes --no-wait
  echo "Deleting resource group ${RESOURCE_GROUP} (runs in the background for ~10 minutes)."
else
  echo "Resource group ${RESOURCE_GROUP} does not exist; nothing to delete."
fi
