#!/usr/bin/env bash
# Installs what the discovery tests need: iproute2 (`ip netns`, bridges, veths) and
# python-zeroconf (an mDNS stack nobody here wrote, for the interop test). Idempotent.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

if ! command -v ip >/dev/null 2>&1 || ! command -v sysctl >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq iproute2 procps
fi

PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-pip
fi
if ! "$PY" -c 'import zeroconf' >/dev/null 2>&1; then
    # Debian's system python refuses plain pip installs (PEP 668); fall back to the flag.
    "$PY" -m pip install --quiet zeroconf \
        || "$PY" -m pip install --quiet --break-system-packages zeroconf
fi
"$PY" -c 'import zeroconf; print("python-zeroconf", zeroconf.__version__)'
ip -V
