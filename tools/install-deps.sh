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
  libcjson-dev libssl-dev libpcre2-dev libutf8proc-dev \
  clang libclang-rt-14-dev libomp-14-dev \
  slurm-wlm munge > /dev/null
# The tests compare tokenizer.json encodings with a reference from the npm registry: Node.js and
# npm from Debian, unless a Node.js is already installed.
if ! command -v node > /dev/null || ! command -v npm > /dev/null; then
  apt-get install -y -qq --no-install-recommends nodejs npm > /dev/null
fi
echo "install-deps.sh: packages installed"
