#!/usr/bin/env bash
# Installs what tests/packaging.rs needs: cargo-deb (makes the .deb), dpkg (inspects and
# installs it into a scratch root), systemd (systemd-analyze, systemd-sysusers,
# systemd-tmpfiles), systemd-container (systemd-nspawn boots this machine's own system in a
# throw-away container, where the .deb's service runs under a real systemd), util-linux
# (setpriv, unshare, nsenter) and podman (builds the FROM scratch image with no network).
# Idempotent: installs only what is missing.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

# The .deb's user and data dir come from cargo-deb's sysusers/tmpfiles support (3.8.0).
CARGO_DEB_VERSION=3.8.0
if [ "$(cargo deb --version 2>/dev/null | awk '{print $2}')" != "$CARGO_DEB_VERSION" ]; then
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi

missing=()
command -v dpkg-deb >/dev/null 2>&1 || missing+=(dpkg)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v systemd-nspawn >/dev/null 2>&1 || missing+=(systemd-container)
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
command -v userdel >/dev/null 2>&1 || missing+=(passwd)
command -v podman >/dev/null 2>&1 || missing+=(podman)
if [ "${#missing[@]}" -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
cargo deb --version
systemd-analyze --version | head -1
podman --version
