#!/usr/bin/env bash
# Debian packages for the browser and SLURM tests (idempotent).
set -euo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium chromium-driver)
command -v slurmctld >/dev/null || need+=(slurm-wlm munge)
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [[ -x .ci/setup_slurm.sh ]]; then bash .ci/setup_slurm.sh; fi
