#!/usr/bin/env bash
# Installs what the console's browser tests (tests/console_browser.rs) need: Debian's headless
# Chromium and its chromedriver, and certutil (libnss3-tools) to trust the test cluster's CA in
# a scratch NSS database, so the browser verifies the nodes' certificates. Idempotent.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v certutil >/dev/null 2>&1 || missing+=(libnss3-tools)
# Text on the screenshots needs a font.
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
if [ "${#missing[@]}" -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
chromium --version
chromedriver --version
