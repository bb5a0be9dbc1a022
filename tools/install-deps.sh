#!/usr/bin/env bash
# Install the Debian 12 packages TQP builds and tests with (run as root).
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
  echo "install-deps.sh: run as root (apt-get needs it)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  build-essential cmake pkg-config ca-certificates \
  openmpi-bin libopenmpi-dev \
  libopenblas-dev libscalapack-openmpi-dev \
  libhdf5-openmpi-dev hdf5-tools \
  libcjson-dev libssl-dev \
  clang libclang-rt-14-dev libomp-14-dev \
  slurm-wlm munge > /dev/null
echo "install-deps.sh: packages installed"
