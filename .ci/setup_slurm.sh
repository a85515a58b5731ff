#!/usr/bin/env bash
# Install what tests/test_slurm.py needs to start its private single-node SLURM cluster:
# slurmctld, slurmd and the client commands (Debian package slurm-wlm) plus munge.
# Idempotent: does nothing when everything is already installed. Needs root (or passwordless sudo).
# No daemon is started or enabled here: the test starts its own munged/slurmctld/slurmd in a
# temporary directory and stops them afterwards (tests/slurm_cluster.py).
# No slurmdbd/MariaDB: the test cluster has no accounting storage (see docs/cluster.md).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

required=(munged mungekey slurmctld slurmd sbatch srun squeue sinfo scontrol scancel)

missing() {
  local name
  for name in "${required[@]}"; do
    command -v "$name" >/dev/null 2>&1 || { echo "$name"; return 0; }
  done
  return 1
}

if ! missing >/dev/null; then
  echo "setup_slurm: SLURM and munge already installed ($(slurmd -V))"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo -n); fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup_slurm: apt-get not found; install slurm-wlm and munge with your package manager" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
# policy-rc.d / missing systemd make the packages' service start fail harmlessly in containers.
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends slurm-wlm munge

if name=$(missing); then
  echo "setup_slurm: $name still missing after installing slurm-wlm and munge" >&2
  exit 1
fi
echo "setup_slurm: installed $(slurmd -V)"
